"""Import FeatDepth's released checkpoints (mmcv-style ``{"state_dict": ..., "meta": ...}``).

Names in the files (facts about the files, used to map them):

* ``DepthEncoder.encoder.*``: a ResNet (torchvision names, ``fc.*`` included but unused); input
  normalised as ``(x - 0.45) / 0.225``.
* ``DepthDecoder.*``: the chained-residual-pooling decoder, stage ``k`` = 4..1:
  ``reduce{k}.conv.weight`` (1x1, no bias), ``iconv{k}.conv.*``, ``crp{k}.0.{i}_pointwise.conv.weight``
  (i = 1..4), ``merge{k}.conv.*``, ``disp{k}.0.conv.*`` -> :class:`~fmdepth.networks.CRPDepthDecoder`.
* ``PoseEncoder.encoder.*``: a ResNet with a 6-channel ``conv1``, same normalisation;
  ``PoseDecoder.{reduce,conv1,conv2,conv3}.*`` (1x1, 3x3, 3x3, 1x1 to 6 values, x0.01).
* the auto-encoder (FeatureNet): ``Encoder.encoder.*`` (no input normalisation) and
  ``Decoder.{upconv5..1, iconv5..1}.conv.conv.*``, ``Decoder.disp{4..1}.conv.*`` (3 channels) in the
  auto-encoder and joint files; the depth file of the two-stage method (``mono_fm``) holds only
  the frozen encoder, as ``extractor.encoder.*``.
"""
from __future__ import annotations

import os
import re
from typing import Dict, Optional

import torch

from .common import (ImportReport, ImportWeightsError, check_size, depth_config, map_state,
                     raise_problems, read_torch_file, resnet_layers, sha256, strip_prefix,
                     tensor_items)

FC_UNUSED = r"encoder\.fc\.(weight|bias)"
FC_WHY = "the ResNet's ImageNet classifier, unused by FeatDepth's forward pass"
GROUPS = ("DepthEncoder.", "DepthDecoder.", "PoseEncoder.", "PoseDecoder.", "extractor.", "Encoder.", "Decoder.")
DEFAULT_SIZE = (320, 1024)  # the released KITTI model's cfg_kitti_fm.py: HEIGHT 320, WIDTH 1024


def read_featdepth_state(path: str) -> Dict[str, torch.Tensor]:
    """The ``state_dict`` of a FeatDepth checkpoint (``module.`` prefixes removed)."""
    data = read_torch_file(path)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    state = tensor_items(data, path, "FeatDepth checkpoint")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    other = sorted({k.split(".", 1)[0] + "." for k in state} - set(GROUPS))
    if other:
        raise ImportWeightsError(f"{path}: not a FeatDepth checkpoint: unknown parameter groups "
                                 f"{', '.join(g[:-1] for g in other[:6])} (expected "
                                 f"{', '.join(g[:-1] for g in GROUPS)})")
    return state


def _depth_decoder_rename(name: str) -> Optional[str]:
    patterns = (
        (r"reduce([1-4])\.conv\.weight", lambda k, m: f"decoder.reduce.{k}.weight"),
        (r"iconv([1-4])\.conv\.(weight|bias)", lambda k, m: f"decoder.iconv.{k}.conv.{m.group(2)}"),
        (r"crp([1-4])\.0\.([1-9])_pointwise\.conv\.weight",
         lambda k, m: f"decoder.crp.{k}.pointwise.{int(m.group(2)) - 1}.weight"),
        (r"merge([1-4])\.conv\.(weight|bias)", lambda k, m: f"decoder.merge.{k}.conv.{m.group(2)}"),
        (r"disp([1-4])\.0\.conv\.(weight|bias)", lambda k, m: f"decoder.heads.{k}.conv.{m.group(2)}"),
    )
    for pat, make in patterns:
        m = re.fullmatch(pat, name)
        if m:
            return make(4 - int(m.group(1)), m)  # stage k -> index 4 - k (coarse first)
    return None


def _pose_decoder_rename(name: str) -> Optional[str]:
    m = re.fullmatch(r"(reduce|conv1|conv2|conv3)\.(weight|bias)", name)
    index = {"reduce": 0, "conv1": 2, "conv2": 4, "conv3": 6}
    return f"decoder.net.{index[m.group(1)]}.{m.group(2)}" if m else None


def _feature_decoder_rename(name: str) -> Optional[str]:
    m = re.fullmatch(r"(upconv|iconv)([1-5])\.conv\.conv\.(weight|bias)", name)
    if m:
        j = 0 if m.group(1) == "upconv" else 1
        return f"decoder.upconv{j}.{5 - int(m.group(2))}.conv.conv.{m.group(3)}"
    m = re.fullmatch(r"disp([1-4])\.conv\.(weight|bias)", name)
    return f"decoder.heads.{int(m.group(1)) - 1}.conv.{m.group(2)}" if m else None


def _net(state, prefix_enc, prefix_dec, net, dec_rename, label, report, what):
    enc = {k: v for k, v in state.items() if k.startswith(prefix_enc)}
    dec = {k: v for k, v in state.items() if k.startswith(prefix_dec)}
    bad = set()
    s1, p1, d1 = map_state(enc, net, lambda k: "encoder." + k[len(prefix_enc):], label,
                           unused=[(re.escape(prefix_enc) + FC_UNUSED, FC_WHY)], misshaped=bad)
    s2, p2, d2 = map_state(dec, net, lambda k: dec_rename(k[len(prefix_dec):]), label, misshaped=bad)
    problems = [q for q in p1 + p2 if "missing" not in q]
    merged = {**s1, **s2}
    lacking = [k for k in net.state_dict() if k not in merged and k not in bad]
    if lacking:
        problems.append(f"{len(lacking)} tensor(s) of {what} not in the file: {', '.join(lacking[:4])}")
    raise_problems(problems, label, what)
    report.dropped += d1 + d2
    return merged


def import_featdepth(path: str, height: Optional[int] = None, width: Optional[int] = None,
                     autoencoder: Optional[str] = None, without_feature: bool = False) -> ImportReport:
    """Read a FeatDepth checkpoint into fmdepth DepthNet / PoseNet / FeatureNet state_dicts.

    Args:
        path: a FeatDepth ``.pth`` (depth model, joint model or auto-encoder).
        height, width: network input size (not stored in the files; default 320x1024, the
            released KITTI model's).
        autoencoder: FeatDepth's auto-encoder ``.pth``, for a depth file that holds only the frozen
            FeatureNet encoder (``extractor.*``): its decoder completes FeatureNet, and its encoder
            must equal the extractor.
        without_feature: leave the ``extractor.*`` tensors out instead (reported).

    Raises:
        FileNotFoundError / ImportWeightsError: unreadable file, pickle payload, another
            architecture (unknown, missing or mis-shaped tensors are listed).
    """
    from fmdepth.networks import DepthNet, FeatureNet, PoseNet

    state = read_featdepth_state(path)
    h, w = (height or DEFAULT_SIZE[0]), (width or DEFAULT_SIZE[1])
    check_size(h, w, path)
    label = os.path.basename(path)
    groups = {g for g in GROUPS if any(k.startswith(g) for k in state)}
    report = ImportReport(files={label: sha256(path)})
    if height is None and width is None and "DepthEncoder." in groups:
        report.notes.append(f"input size {h}x{w} (FeatDepth files do not store it; --height/--width)")
    if ("DepthEncoder." in groups) != ("DepthDecoder." in groups):
        raise ImportWeightsError(f"{path}: has only one of DepthEncoder/DepthDecoder")
    if ("PoseEncoder." in groups) != ("PoseDecoder." in groups):
        raise ImportWeightsError(f"{path}: has only one of PoseEncoder/PoseDecoder")
    depth_layers = pose_layers = feature_layers = None
    if "DepthEncoder." in groups:
        depth_layers = resnet_layers(state, "DepthEncoder.encoder.", path)
        net = DepthNet(depth_layers, "none", 4, input_norm="monodepth2", decoder="featdepth")
        report.models["depth"] = _net(state, "DepthEncoder.", "DepthDecoder.", net, _depth_decoder_rename,
                                      label, report, f"FeatDepth's ResNet{depth_layers} depth network")
    if "PoseEncoder." in groups:
        pose_layers = resnet_layers(state, "PoseEncoder.encoder.", path)
        net = PoseNet(pose_layers, "none", num_frames=2, output_scale=0.01, input_norm="monodepth2")
        report.models["pose"] = _net(state, "PoseEncoder.", "PoseDecoder.", net, _pose_decoder_rename,
                                     label, report, f"FeatDepth's ResNet{pose_layers} pose network")

    feature_src, feature_label = None, label
    if "Encoder." in groups or "Decoder." in groups:
        if "extractor." in groups:
            raise ImportWeightsError(f"{path}: holds both an auto-encoder and an extractor")
        if autoencoder:
            raise ImportWeightsError(f"{path}: already holds the auto-encoder; --autoencoder is for a "
                                     f"depth file with only its encoder (extractor.*)")
        feature_src = state
    elif "extractor." in groups:
        if autoencoder:
            ae = read_featdepth_state(autoencoder)
            ext, enc = strip_prefix(state, "extractor."), strip_prefix(ae, "Encoder.")
            if set(ext) != set(enc) or any(not torch.equal(ext[k], enc[k]) for k in ext):
                diff = max((float((ext[k].float() - enc[k].float()).abs().max())
                            for k in set(ext) & set(enc) if ext[k].shape == enc[k].shape), default=float("nan"))
                raise ImportWeightsError(
                    f"{autoencoder}: its Encoder differs from the extractor of {path} (max |diff| "
                    f"{diff:.3g}, names in common {len(set(ext) & set(enc))}/{len(ext)}): not the "
                    f"auto-encoder this depth model was trained with")
            feature_src, feature_label = ae, os.path.basename(autoencoder)
            report.files[feature_label] = sha256(autoencoder)
            report.dropped.append(f"{label}: extractor.* ({len(ext)} tensors, identical to "
                                  f"{feature_label}'s Encoder, imported from there)")
        elif without_feature:
            n = sum(k.startswith("extractor.") for k in state)
            report.dropped.append(f"{label}: extractor.* ({n} tensors: FeatureNet's encoder, left out "
                                  f"by --without-feature)")
        else:
            raise ImportWeightsError(
                f"{path}: holds FeatureNet's encoder (extractor.*) without its decoder: pass FeatDepth's "
                f"auto-encoder file with --autoencoder AE.pth to import FeatureNet, or --without-feature")
    elif autoencoder:
        raise ImportWeightsError(f"{path}: --autoencoder given but the file has no extractor.*")
    if feature_src is not None:
        if not any(k.startswith("Decoder.") for k in feature_src):
            raise ImportWeightsError(f"{feature_label}: the auto-encoder has no Decoder.* tensors")
        feature_layers = resnet_layers(feature_src, "Encoder.encoder.", feature_label)
        net = FeatureNet(feature_layers, "none", num_scales=4, input_norm="none")
        report.models["feature"] = _net(feature_src, "Encoder.", "Decoder.", net, _feature_decoder_rename,
                                        feature_label, report, f"FeatDepth's ResNet{feature_layers} auto-encoder")
    if not report.models:
        raise ImportWeightsError(f"{path}: no FeatDepth network in it")

    has_depth = "depth" in report.models
    model = {"pose_scale": 0.01, "min_depth": 0.1, "max_depth": 100.0, "input_norm": "monodepth2",
             "feature_input_norm": "none", "depth_decoder": "featdepth", "num_scales": 4, "pretrained": "none"}
    model.update({k: v for k, v in (("depth_layers", depth_layers), ("pose_layers", pose_layers),
                                    ("feature_layers", feature_layers)) if v is not None})
    loss = {"mode": "joint" if has_depth else "featurenet",
            "feature_metric": 1e-3 if "feature" in report.models else 0.0}
    report.config = depth_config({
        "data": {"dataset": "kitti_raw", "height": h, "width": w,
                 "frame_ids": [0, -1, 1] if "pose" in report.models or not has_depth else [0],
                 "stereo": has_depth and "pose" not in report.models},
        "model": model, "loss": loss})
    if "pose" in report.models:
        report.notes.append("FeatDepth runs its pose network at 192x640 whatever the depth size; fmdepth "
                            f"runs it at the checkpoint's {h}x{w}")
    if has_depth:
        report.notes.append("if trained with the stereo frame (the released KITTI model was, cfg_kitti_fm.py), "
                            "depth is metric after x36 (FeatDepth's 0.015 stereo baseline): evaluate with "
                            "--fixed-scale 36; to fine-tune with fmdepth's metric stereo pose set "
                            "model.min_depth=3.6 model.max_depth=3600 (the same network output in metres)")
    else:
        report.notes.append("FeatureNet only: use it as model.feature_weights for loss.mode=depth")
    return report
