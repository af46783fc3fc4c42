"""The depth task: the self-supervised depth/pose system on KITTI raw, KITTI odometry, synthetic
or own-video / image-folder sequences.

``build(cfg)`` wires :func:`build_system` (:func:`fmdepth.models.depth.build_depth_system` with
``model.feature_weights`` read from disk) to the readers of
:mod:`fmdepth.data` chosen by ``data.dataset`` -- ``kitti_raw`` and ``synthetic``
(:class:`~fmdepth.data.KittiRawDataset`), ``kitti_odom``
(:class:`~fmdepth.data.KittiOdometryDataset`, calibration from each sequence's ``calib.txt``) and
``folder`` (videos / frame folders, :func:`fmdepth.data.folder.build_folder_datasets`) -- and
validates with the one metrics implementation of :mod:`fmdepth.metrics` (Eigen protocol: Garg
crop, depth capped to 80 m, per-image median scaling) where ground truth exists.

Split files: ``data.split`` is a folder holding ``train_files.txt`` (and optionally
``val_files.txt``), either as given, or relative to ``data.path`` or ``data.path/splits`` (the
synthetic renderer writes ``<data>/splits/`` and ``<data>/splits/odom/``), or a public split name
fetched by :func:`fmdepth.data.splits.fetch_split` (``odom``: sequences 00-08 for training, as
Zhou et al. and Monodepth2). For ``data.dataset: synthetic`` an empty ``data.split`` means
``<data.path>/splits``.
"""
from __future__ import annotations

import os
import sys
from typing import Dict

from fmdepth.core.task import Task


def resolve_split_dir(cfg) -> str:
    """The folder holding ``train_files.txt`` / ``val_files.txt`` for ``cfg.data``."""
    split = cfg.data.split
    root = cfg.data.path
    if cfg.data.dataset == "synthetic" and split in ("", "synthetic"):
        split = "splits"
    candidates = [split] if os.path.isabs(split) else [split, os.path.join(root, split),
                                                       os.path.join(root, "splits", split)]
    for cand in candidates:
        if os.path.isdir(cand):
            return cand
        if os.path.isfile(cand):  # a single train file: its folder
            return os.path.dirname(os.path.abspath(cand))
    if cfg.data.dataset == "synthetic":
        raise FileNotFoundError(
            f"data.split: no split folder '{split}' (looked in {', '.join(candidates)}); a synthetic "
            f"dataset written by `fmdepth synth` has its splits in <data>/splits")
    from fmdepth.data.splits import fetch_split

    path = fetch_split(split)
    return path if os.path.isdir(path) else os.path.dirname(path)


def make_depth_validate(min_depth: float, max_depth: float):
    """``validate(system, loader, device)`` -> the seven depth metrics (Eigen protocol).

    Predicts full-resolution disparity for frame 0 of every batch, converts it with
    ``disp_to_depth`` to a scaled disparity and evaluates it against ``batch.depth_gt`` with
    :class:`fmdepth.metrics.DepthEvaluator` (Garg crop, 80 m cap, median scaling), through
    :func:`fmdepth.tasks.evaluate.evaluate_split`.
    """

    def validate(system, loader, device) -> Dict[str, float]:
        from fmdepth.metrics import DepthEvaluator
        from fmdepth.tasks.evaluate import evaluate_split

        evaluator = DepthEvaluator(protocol="eigen", median_scaling=True, source="validation")
        evaluate_split(system.predict_disparity, loader, min_depth, max_depth, device, [evaluator])
        return evaluator.result().metrics

    return validate


def make_loss_validate():
    """``validate(system, loader, device)`` -> ``{"val_loss": mean training loss}`` on held-out
    frames (data without ground truth: videos, image folders); the system is in eval mode."""

    def validate(system, loader, device) -> Dict[str, float]:
        total, count = 0.0, 0
        for batch in loader:
            batch = batch.to(device)
            n = batch.net_frames[0].shape[0]
            total += float(system.training_step(batch, None).loss) * n  # the full objective, warm-up ignored
            count += n
        if count == 0:
            raise ValueError("the validation set is empty")
        return {"val_loss": total / count}

    return validate


# model.* keys that must agree between model.init_checkpoint and the run, per network
# (key, default for checkpoints written before the key existed)
_INIT_KEYS = {
    "depth": (("depth_layers", None), ("num_scales", 4), ("input_norm", "imagenet"),
              ("depth_decoder", "monodepth2")),
    "pose": (("pose_layers", None), ("pose_scale", 0.01), ("input_norm", "imagenet")),
    "feature": (("feature_layers", None), ("feature_input_norm", "imagenet")),
}


def init_from_checkpoint(system, cfg) -> list:
    """Load ``model.init_checkpoint`` into the networks of ``system`` that the checkpoint holds.

    Every network of the system found in the checkpoint is loaded strictly; the architecture
    keys of ``_INIT_KEYS`` must match the run's (else the error names the key to ``--set``).
    Networks the checkpoint lacks keep their initialisation (``model.pretrained``,
    ``model.feature_weights``). Returns the names loaded.

    Raises:
        FileNotFoundError / ValueError: unreadable file, not a depth checkpoint, no network in
            common, or an architecture mismatch.
    """
    from fmdepth.core.checkpoint import load_checkpoint

    path = cfg.model.init_checkpoint
    ckpt = load_checkpoint(path)
    old = ckpt.get("config") or {}
    if old.get("task") != "depth" or not isinstance(old.get("model"), dict):
        raise ValueError(f"model.init_checkpoint: {path} is a '{old.get('task')}' checkpoint, "
                         f"not a depth one")
    nets = system.trainable_models()
    differ = {}
    for name in nets:
        if name in ckpt["models"]:
            for key, default in _INIT_KEYS[name]:
                theirs, ours = old["model"].get(key, default), getattr(cfg.model, key)
                if theirs != ours:
                    differ[key] = (theirs, ours)
    if differ:
        keys = ", ".join(f"'model.{k}'" for k in differ)
        detail = "; ".join(f"{k}: {path} has {t!r}, this run {o!r}" for k, (t, o) in differ.items())
        fix = " ".join(f"--set model.{k}={t}" for k, (t, _) in differ.items())
        raise ValueError(f"config key{'s' if len(differ) > 1 else ''} {keys}: {detail} (add {fix})")
    loaded = []
    for name, net in nets.items():
        if name not in ckpt["models"]:
            continue
        try:
            result = net.load_state_dict(ckpt["models"][name], strict=False)
        except RuntimeError as exc:  # a tensor of another shape
            raise ValueError(f"model.init_checkpoint: the '{name}' weights of {path} do not fit: "
                             f"{' '.join(str(exc).split())[:300]}") from None
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(f"model.init_checkpoint: the '{name}' weights of {path} do not fit "
                             f"(missing {result.missing_keys[:4]}, unexpected {result.unexpected_keys[:4]})")
        loaded.append(name)
    if not loaded:
        raise ValueError(f"model.init_checkpoint: {path} holds {', '.join(ckpt['models'])}; this run "
                         f"builds {', '.join(nets)}: no network in common")
    return loaded


def _odometry_has_gt(root: str, val_file: str) -> bool:
    """Whether the first validation entry has a velodyne scan (often not downloaded for odometry)."""
    from fmdepth.data.splits import read_split

    folder, frame, _ = read_split(val_file)[0]
    seq = f"{int(folder):02d}" if folder.isdigit() else folder
    return os.path.isfile(os.path.join(root, "sequences", seq, "velodyne", f"{frame:06d}.bin"))


def build_system(cfg):
    """The :class:`~fmdepth.models.depth.DepthSystem` of ``cfg``, FeatureNet loaded from
    ``model.feature_weights`` when given and built (read by
    :func:`fmdepth.tasks.loading.load_feature_weights`).

    Raises:
        ConfigError: inconsistent keys; FileNotFoundError / ValueError: unreadable or
            mismatching ``model.feature_weights``.
    """
    from fmdepth.models.depth import build_depth_system
    from fmdepth.tasks.loading import load_feature_weights

    state = None
    if cfg.model.feature_weights and (cfg.loss.mode == "featurenet" or cfg.loss.feature_metric > 0):
        state = load_feature_weights(cfg.model.feature_weights)
    return build_depth_system(cfg, feature_state=state)


def build(cfg) -> Task:
    """Depth system + train/val sets of ``data.dataset`` + Eigen-protocol validation for ``cfg``."""
    from fmdepth.data import KittiOdometryDataset, KittiRawDataset, collate_depth

    d = cfg.data
    if d.dataset not in ("kitti_raw", "synthetic", "kitti_odom", "folder"):
        raise ValueError(f"config key 'data.dataset': the depth task reads 'kitti_raw', 'synthetic', "
                         f"'kitti_odom' or 'folder', got '{d.dataset}'")
    if not d.path or not os.path.exists(d.path):
        raise FileNotFoundError(f"data.path: dataset not found: '{d.path}' (pass --data DIR)")
    if d.dataset == "folder":
        train_set, val_set = _folder_sets(cfg)
    else:
        if not os.path.isdir(d.path):
            raise FileNotFoundError(f"data.path: dataset folder not found: '{d.path}' (pass --data DIR)")
        train_set, val_set = _kitti_sets(cfg, KittiOdometryDataset if d.dataset == "kitti_odom" else KittiRawDataset)

    system = build_system(cfg)
    if cfg.model.init_checkpoint:
        loaded = init_from_checkpoint(system, cfg)
        print(f"model.init_checkpoint: {', '.join(loaded)} from {cfg.model.init_checkpoint}")
    if d.dataset == "folder" or cfg.loss.mode == "featurenet":
        # no ground truth (folder: the validation frames' photometric loss), or no DepthNet to
        # evaluate (stage 1: FeatureNet's own objective on the validation frames)
        validate = make_loss_validate() if val_set is not None else None
        return Task(system=system, train_set=train_set, val_set=val_set, collate_fn=collate_depth,
                    validate=validate, best_metric="val_loss", best_mode="min")
    validate = make_depth_validate(cfg.model.min_depth, cfg.model.max_depth) if val_set is not None else None
    return Task(system=system, train_set=train_set, val_set=val_set, collate_fn=collate_depth,
                validate=validate, best_metric="abs_rel", best_mode="min")


def _kitti_sets(cfg, cls):
    from fmdepth.data import KittiOdometryDataset

    d = cfg.data
    split_dir = resolve_split_dir(cfg)
    train_file = os.path.join(split_dir, "train_files.txt")
    if not os.path.isfile(train_file):
        raise FileNotFoundError(f"data.split: {train_file} not found")
    val_file = os.path.join(split_dir, "val_files.txt")
    common = dict(height=d.height, width=d.width, num_scales=d.num_scales, img_ext=d.img_ext,
                  skip_missing=d.skip_missing)
    train_set = cls(d.path, train_file, frame_ids=tuple(d.frame_ids), is_train=True, stereo=d.stereo,
                    load_gt=False, flip_prob=d.flip_prob, jitter_prob=d.jitter_prob, **common)
    if train_set.stereo:
        check_stereo_depth_range(cfg, train_set)
    val_set = None
    if os.path.isfile(val_file) and os.path.getsize(val_file) > 0:
        if cls is not KittiOdometryDataset or _odometry_has_gt(d.path, val_file):
            val_set = cls(d.path, val_file, frame_ids=(0,), is_train=False, stereo=False, load_gt=True,
                          **common)
        else:
            print(f"validation: {val_file} has no ground truth under {d.path} (no velodyne scans); "
                  "training without depth validation")
    return train_set, val_set


#: largest stereo disparity of the untrained network, in image widths, that still trains
STEREO_START_MAX = 0.5
#: above this (and from random initialisation) CPU-sized runs were seen to collapse
STEREO_START_WARN = 0.25


def stereo_start_disparity(fx_over_width: float, baseline: float, min_depth: float, max_depth: float) -> float:
    """Stereo disparity, in image widths, of the untrained network (sigmoid 0.5 everywhere).

    ``disp_to_depth(0.5)`` is ``z0 = 2 / (1/min_depth + 1/max_depth)`` (about twice
    ``min_depth``) and the stereo source then sits ``fx * baseline / z0`` pixels away. The
    stereo pose is metric (``baseline`` in metres, from the calibration), so ``min_depth`` /
    ``max_depth`` are metres too.
    """
    z0 = 2.0 / (1.0 / min_depth + 1.0 / max_depth)
    return fx_over_width * abs(baseline) / z0


def check_stereo_depth_range(cfg, dataset) -> float:
    """Refuse a depth range that puts the stereo source outside the image at the start.

    With Monodepth2's ``min_depth`` 0.1 and a metric 0.54 m KITTI baseline the untrained
    network's depth (~0.2 m) puts the stereo source 1.6 image widths away: the border-padded
    warp has no gradient there, the depth collapses onto ``min_depth`` and never recovers
    (with temporal frames too, PoseNet's tiny initial translation then sets the scale: the
    depth came out ~60x too small). Monodepth2 and FeatDepth avoid it by a stereo baseline in
    their own units (0.1 and 0.015 on KITTI): their range [0.1, 100] units is [0.54, 540] m and
    [3.6, 3600] m here, and their x5.4 / x36 evaluation factors are 1 here. Returns the start
    disparity (image widths).

    Raises:
        ValueError: no stereo baseline in the calibration, or a start disparity above
            :data:`STEREO_START_MAX` (the message names ``model.min_depth`` and a value).
    """
    import math
    import warnings

    folder, frame, side = dataset.entries[0]
    calib = dataset.calibration(folder)
    cam = dataset.SIDES[side]
    if not abs(calib.baseline) > 0:
        raise ValueError(f"{calib.source}: stereo baseline is {calib.baseline:g}; data.stereo needs a "
                         "rectified second camera (P_rect_03 / P3 with a baseline)")
    size = calib.size.get(cam)
    if size is None:
        from PIL import Image

        with Image.open(dataset.image_path(folder, frame, side)) as img:
            size = (img.height, img.width)
    fx_w = float(calib.K[cam][0, 0]) / size[1]
    m, M = cfg.model.min_depth, cfg.model.max_depth
    start = stereo_start_disparity(fx_w, calib.baseline, m, M)
    need = 1.0 / (2.0 * STEREO_START_MAX / (fx_w * abs(calib.baseline)) - 1.0 / M)  # start = STEREO_START_MAX
    if start > STEREO_START_MAX:
        raise ValueError(
            f"config key 'model.min_depth': with the stereo frame (baseline {abs(calib.baseline):.3f} m, "
            f"fx = {fx_w:.2f} x width) the untrained depth ({2 / (1 / m + 1 / M):.2f} m) puts the stereo "
            f"source {start:.2f} image widths away, where the loss has no gradient and depth collapses onto "
            f"min_depth; depths are metric with a stereo frame: set model.min_depth >= {math.ceil(need * 100) / 100:.2f} "
            f"(Monodepth2's 0.1..100 in units of its 0.1 baseline is "
            f"{abs(calib.baseline):.2f}..{1000 * abs(calib.baseline):g} m here, FeatDepth's in units of its "
            f"0.015 baseline {abs(calib.baseline) / 0.15:.2f}..{abs(calib.baseline) / 0.15 * 1000:g} m)")
    if start > STEREO_START_WARN and cfg.model.pretrained == "none":
        warnings.warn(f"stereo frame: the untrained depth puts the stereo source {start:.2f} image widths "
                      f"away; from random initialisation CPU-sized runs collapsed above {STEREO_START_WARN} "
                      f"(raise model.min_depth)", stacklevel=2)
    return start


def _folder_sets(cfg):
    from fmdepth.data.folder import build_folder_datasets

    d = cfg.data
    if d.stereo or "s" in d.frame_ids:
        raise ValueError(f"data.stereo: {d.path} is a video / image folder with one camera; stereo "
                         "training needs a rectified second camera (KITTI raw or odometry layout)")
    return build_folder_datasets(d.path, d.split, height=d.height, width=d.width,
                                 frame_ids=tuple(int(f) for f in d.frame_ids), num_scales=d.num_scales,
                                 fov_deg=d.fov_deg, val_fraction=d.val_fraction,
                                 flip_prob=d.flip_prob, jitter_prob=d.jitter_prob,
                                 progress=sys.stderr.isatty())  # the video-decoding bar
