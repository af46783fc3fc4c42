"""Import a Monodepth2 model folder (``encoder.pth``, ``depth.pth``, optional ``pose_encoder.pth`` +
``pose.pth``) as an fmdepth checkpoint.

The layout of the released folders (facts about the files, used to map names):

* ``encoder.pth``: a torchvision ResNet under ``encoder.`` (its ImageNet classifier ``encoder.fc.*``
  included, never used by Monodepth2's forward pass) plus ``height``, ``width`` (the training input
  size) and ``use_stereo``. The encoder normalises the image as ``(x - 0.45) / 0.225``.
* ``depth.pth``: the decoder's convolutions in one list, ``decoder.<n>.``, in the order
  upconv(4,0), upconv(4,1), upconv(3,0), ... upconv(0,1) (``n`` = 0..9, each a ``conv.conv``
  reflection-padded 3x3 conv), then the disparity convs of scales 0..3 (``n`` = 10..13, ``conv``).
  fmdepth's :class:`~fmdepth.networks.DepthDecoder` computes the same thing (conv + ELU, x2
  nearest, skip concatenation, conv + ELU, 3x3 conv + sigmoid).
* ``pose_encoder.pth``: a ResNet with a 6-channel ``conv1`` (two stacked frames), ``encoder.``.
* ``pose.pth``: ``net.0`` squeeze 1x1, ``net.1``/``net.2`` 3x3 convs, ``net.3`` a 1x1 conv with
  6 x 2 outputs (Monodepth2 predicts for ``num_frames_to_predict_for=2`` and reads only the first
  6-vector, ``axisangle[:, 0]``), x0.01. Rows 0..5 of ``net.3`` are that first prediction.
"""
from __future__ import annotations

import os
import re
from typing import Optional

from .common import (ImportReport, ImportWeightsError, check_size, depth_config, map_state,
                     raise_problems, read_torch_file, resnet_layers, sha256, tensor_items)

FC_UNUSED = (r"fc\.(weight|bias)", "the ResNet's ImageNet classifier, unused by Monodepth2's forward pass")
_DECODER = re.compile(r"^decoder\.(\d+)\.(conv\.conv|conv)\.(weight|bias)$")


def _depth_rename(num_heads: int):
    def rename(name: str) -> Optional[str]:
        m = _DECODER.match(name)
        if not m:
            return None
        n, inner, kind = int(m.group(1)), m.group(2), m.group(3)
        if n < 10 and inner == "conv.conv":
            step, j = divmod(n, 2)  # step 0 = level 4; j 0 = before upsampling
            return f"decoder.upconv{j}.{step}.conv.conv.{kind}"
        if 10 <= n < 10 + num_heads and inner == "conv":
            return f"decoder.heads.{n - 10}.conv.{kind}"
        return None

    return rename


def import_monodepth2(folder: str, height: Optional[int] = None,
                      width: Optional[int] = None) -> ImportReport:
    """Read a Monodepth2 model folder into fmdepth DepthNet (+ PoseNet) state_dicts and a config.

    Args:
        folder: holds ``encoder.pth`` and ``depth.pth``, and optionally ``pose_encoder.pth`` and
            ``pose.pth`` (both or neither).
        height, width: override the input size stored in ``encoder.pth``.

    Raises:
        FileNotFoundError / NotADirectoryError: the folder or a required file is missing.
        ImportWeightsError: unreadable files, pickle payloads, another architecture (the message
            lists the unknown, missing or mis-shaped tensors).
    """
    from fmdepth.networks import DepthNet, PoseNet

    if not os.path.isdir(folder):
        raise NotADirectoryError(f"{folder}: not a folder (a Monodepth2 model folder holds "
                                 f"encoder.pth and depth.pth)")
    paths = {n: os.path.join(folder, f"{n}.pth") for n in ("encoder", "depth", "pose_encoder", "pose")}
    missing = [os.path.basename(paths[n]) for n in ("encoder", "depth") if not os.path.isfile(paths[n])]
    if missing:
        raise FileNotFoundError(f"{folder}: not a Monodepth2 model folder: {' and '.join(missing)} "
                                f"missing (it needs encoder.pth and depth.pth)")
    has_pose = [os.path.isfile(paths[n]) for n in ("pose_encoder", "pose")]
    if any(has_pose) and not all(has_pose):
        only, lacking = ("pose_encoder.pth", "pose.pth") if has_pose[0] else ("pose.pth", "pose_encoder.pth")
        raise FileNotFoundError(f"{folder}: has {only} but not {lacking} (the pose network needs both)")
    report = ImportReport()

    enc_raw = read_torch_file(paths["encoder"])
    enc = tensor_items(enc_raw, paths["encoder"], "Monodepth2 encoder file")
    try:
        h = int(enc_raw["height"]) if height is None else int(height)
        w = int(enc_raw["width"]) if width is None else int(width)
    except (KeyError, TypeError, ValueError):
        raise ImportWeightsError(f"{paths['encoder']}: no 'height'/'width' entries (a Monodepth2 "
                                 f"encoder.pth stores its input size); pass --height and --width") from None
    use_stereo = bool(enc_raw.get("use_stereo", False))
    check_size(h, w, paths["encoder"])
    extra = sorted(k for k, v in enc_raw.items() if not hasattr(v, "shape")
                   and k not in ("height", "width", "use_stereo"))
    if extra:
        raise ImportWeightsError(f"{paths['encoder']}: unknown entries {', '.join(map(str, extra))}")
    depth_layers = resnet_layers(enc, "encoder.", paths["encoder"])

    dec = tensor_items(read_torch_file(paths["depth"]), paths["depth"], "Monodepth2 depth decoder file")
    heads = sorted({int(m.group(1)) for k in dec if (m := _DECODER.match(k)) and int(m.group(1)) >= 10})
    num_scales = len(heads)
    if not 1 <= num_scales <= 4 or heads != list(range(10, 10 + num_scales)):
        raise ImportWeightsError(f"{paths['depth']}: not a Monodepth2 depth decoder (expected "
                                 f"decoder.0 ... decoder.13; disparity convs found: {heads or 'none'})")

    depth = DepthNet(depth_layers, "none", num_scales, input_norm="monodepth2")
    problems, bad = [], set()
    state_e, p, d = map_state(enc, depth, lambda k: "encoder." + k, "encoder.pth",
                              unused=[(r"encoder\." + FC_UNUSED[0], FC_UNUSED[1])], misshaped=bad)
    problems += p
    report.dropped += d
    state_d, p, d = map_state(dec, depth, _depth_rename(num_scales), "depth.pth", misshaped=bad)
    problems += p
    report.dropped += d
    # each file covers half of the network: a name missing from one is the other's
    problems = [q for q in problems if "missing" not in q]
    state = {**state_e, **state_d}
    lacking = [k for k in depth.state_dict() if k not in state and k not in bad]
    if lacking:
        problems.append(f"{len(lacking)} DepthNet tensor(s) not in encoder.pth/depth.pth: {', '.join(lacking[:4])}")
    raise_problems(problems, folder, f"Monodepth2's ResNet{depth_layers} depth network")
    report.models["depth"] = state
    report.files = {os.path.basename(paths[n]): sha256(paths[n]) for n in ("encoder", "depth")}

    pose_layers = 18
    if all(has_pose):
        penc = tensor_items(read_torch_file(paths["pose_encoder"]), paths["pose_encoder"],
                            "Monodepth2 pose encoder file")
        pdec = tensor_items(read_torch_file(paths["pose"]), paths["pose"], "Monodepth2 pose decoder file")
        pose_layers = resnet_layers(penc, "encoder.", paths["pose_encoder"])
        pose = PoseNet(pose_layers, "none", num_frames=2, output_scale=0.01, input_norm="monodepth2")
        last = pdec.get("net.3.weight")
        if last is not None and last.shape[0] not in (6, 12):
            raise ImportWeightsError(f"{paths['pose']}: net.3 predicts {last.shape[0]} values, expected 6 "
                                     f"or 12 (one or two 6-DoF poses)")
        first6 = {"decoder.net.6.weight": lambda t: t[:6], "decoder.net.6.bias": lambda t: t[:6]}
        bad = set()
        state_pe, p1, d1 = map_state(penc, pose, lambda k: "encoder." + k, "pose_encoder.pth",
                                     unused=[(r"encoder\." + FC_UNUSED[0], FC_UNUSED[1])], misshaped=bad)
        index = {"0": "0", "1": "2", "2": "4", "3": "6"}
        state_pd, p2, d2 = map_state(
            pdec, pose, lambda k: (f"decoder.net.{index[m.group(1)]}.{m.group(2)}"
                                   if (m := re.match(r"^net\.([0-3])\.(weight|bias)$", k)) else None),
            "pose.pth", transforms=first6, misshaped=bad)
        problems = [q for q in p1 + p2 if "missing" not in q]
        pstate = {**state_pe, **state_pd}
        lacking = [k for k in pose.state_dict() if k not in pstate and k not in bad]
        if lacking:
            problems.append(f"{len(lacking)} PoseNet tensor(s) not in pose_encoder.pth/pose.pth: "
                            f"{', '.join(lacking[:4])}")
        raise_problems(problems, folder, f"Monodepth2's ResNet{pose_layers} pose network")
        if last is not None and last.shape[0] == 12:
            report.dropped.append("pose.pth: net.3 rows 6..11 (the second pose of "
                                  "num_frames_to_predict_for=2, never read by Monodepth2)")
        report.dropped += d1 + d2
        report.models["pose"] = pstate
        report.files.update({os.path.basename(paths[n]): sha256(paths[n]) for n in ("pose_encoder", "pose")})
    elif not use_stereo:
        report.notes.append("no pose_encoder.pth/pose.pth: depth only (`evaluate pose` needs them)")

    frame_ids = [0, -1, 1] if all(has_pose) or not use_stereo else [0]
    report.config = depth_config({
        "data": {"dataset": "kitti_raw", "height": h, "width": w, "frame_ids": frame_ids,
                 "stereo": use_stereo},
        "model": {"depth_layers": depth_layers, "pose_layers": pose_layers, "num_scales": num_scales,
                  "pose_scale": 0.01, "min_depth": 0.1, "max_depth": 100.0, "input_norm": "monodepth2",
                  "pretrained": "none"},
        # Monodepth2 is the photometric-only method: no FeatureNet, first-order smoothness 1e-3
        "loss": {"feature_metric": 0.0, "smoothness": 1e-3, "smoothness2": 0.0,
                 "scales": list(range(num_scales))},
    })
    if use_stereo:
        report.notes.append("trained with stereo: metric depth after x5.4 (Monodepth2's 0.1 stereo baseline): "
                            "evaluate with --fixed-scale 5.4; to fine-tune with fmdepth's metric stereo pose set "
                            "model.min_depth=0.54 model.max_depth=540 (the same network output in metres)")
    return report
