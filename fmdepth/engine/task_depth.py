"""The depth task: the self-supervised depth/pose system on KITTI raw (or synthetic) sequences.

``build(cfg)`` wires :func:`fmdepth.models.depth.build_depth_system` to the KITTI raw readers of
:mod:`fmdepth.data` and validates with the one metrics implementation of :mod:`fmdepth.metrics`
(Eigen protocol: Garg crop, depth capped to 80 m, per-image median scaling).

Split files: ``data.split`` is a folder holding ``train_files.txt`` (and optionally
``val_files.txt``), either as given, or relative to ``data.path`` (the synthetic renderer writes
``<data>/splits/``), or a public split name fetched by :func:`fmdepth.data.splits.fetch_split`.
For ``data.dataset: synthetic`` an empty ``data.split`` means ``<data.path>/splits``.
"""
from __future__ import annotations

import inspect
import os
from typing import Dict

import torch

from fmdepth.engine.tasks import Task


def resolve_split_dir(cfg) -> str:
    """The folder holding ``train_files.txt`` / ``val_files.txt`` for ``cfg.data``."""
    split = cfg.data.split
    root = cfg.data.path
    if cfg.data.dataset == "synthetic" and split in ("", "synthetic"):
        split = "splits"
    candidates = [split] if os.path.isabs(split) else [split, os.path.join(root, split)]
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


def _dataset_kwargs(cls, wanted: Dict) -> Dict:
    """Keep only the keyword arguments ``cls`` accepts (augmentation knobs are optional)."""
    params = inspect.signature(cls).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return wanted
    return {k: v for k, v in wanted.items() if k in params}


def make_depth_validate(min_depth: float, max_depth: float):
    """``validate(system, loader, device)`` -> the seven depth metrics (Eigen protocol).

    Predicts full-resolution disparity for frame 0 of every batch, converts it with
    ``disp_to_depth`` to a scaled disparity and evaluates it against ``batch.depth_gt`` with
    :class:`fmdepth.metrics.DepthEvaluator` (Garg crop, 80 m cap, median scaling).
    """

    def validate(system, loader, device) -> Dict[str, float]:
        from fmdepth.geometry import disp_to_depth
        from fmdepth.metrics import DepthEvaluator

        evaluator = DepthEvaluator(protocol="eigen", median_scaling=True, source="validation")
        for batch in loader:
            if batch.depth_gt is None:
                raise ValueError("the validation set has no ground-truth depth (depth_gt is None)")
            image = batch.net_frames[0].to(device)
            disp = system.predict_disparity(image)
            scaled, _ = disp_to_depth(disp, min_depth, max_depth)
            evaluator.add(batch.depth_gt.float().cpu(), scaled.float().cpu())
        return evaluator.result().metrics

    return validate


def build(cfg) -> Task:
    """Depth system + KITTI raw train/val sets + Eigen-protocol validation for ``cfg``."""
    from fmdepth.data import KittiRawDataset, collate_depth
    from fmdepth.models.depth import build_depth_system

    d = cfg.data
    if d.dataset not in ("kitti_raw", "synthetic"):
        raise ValueError(f"config key 'data.dataset': the depth task reads KITTI raw layouts "
                         f"('kitti_raw' or 'synthetic'), got '{d.dataset}'")
    if not d.path or not os.path.isdir(d.path):
        raise FileNotFoundError(f"data.path: dataset folder not found: '{d.path}' (pass --data DIR)")
    split_dir = resolve_split_dir(cfg)
    train_file = os.path.join(split_dir, "train_files.txt")
    if not os.path.isfile(train_file):
        raise FileNotFoundError(f"data.split: {train_file} not found")
    val_file = os.path.join(split_dir, "val_files.txt")

    system = build_depth_system(cfg)
    common = dict(height=d.height, width=d.width, num_scales=d.num_scales, img_ext=d.img_ext,
                  skip_missing=d.skip_missing)
    train_kwargs = _dataset_kwargs(KittiRawDataset, dict(
        common, frame_ids=tuple(d.frame_ids), is_train=True, stereo=d.stereo, load_gt=False,
        flip_prob=d.flip_prob, jitter_prob=d.jitter_prob))
    train_set = KittiRawDataset(d.path, train_file, **train_kwargs)
    val_set = None
    validate = None
    if os.path.isfile(val_file) and os.path.getsize(val_file) > 0:
        val_kwargs = _dataset_kwargs(KittiRawDataset, dict(
            common, frame_ids=(0,), is_train=False, stereo=False, load_gt=True))
        val_set = KittiRawDataset(d.path, val_file, **val_kwargs)
        validate = make_depth_validate(cfg.model.min_depth, cfg.model.max_depth)
    return Task(system=system, train_set=train_set, val_set=val_set, collate_fn=collate_depth,
                validate=validate, best_metric="abs_rel", best_mode="min")


@torch.no_grad()
def predict_disparity_batches(system, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 1, H, W) sigmoid disparity, in batches (eval mode)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
    outs = [system.predict_disparity(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat(outs)
