"""Task builder for ``fmdepth train`` with ``task: registration`` (learned registration).

Data, in order of precedence:

1. ``registration.fixed_video`` + ``registration.moving_video``: two videos or frame folders
   (e.g. RGB and infrared) paired frame by frame (unsupervised; no validation landmarks);
2. ``data.path``: a pair folder (``fixed/``, ``moving/``, optional ``landmarks_fixed/``,
   ``landmarks_moving/``, ``flow/``; see :mod:`fmdepth.data.pairs`); the last
   ``registration.val_pairs`` pairs are held out for validation;
3. nothing: synthetic multimodal pairs from scikit-image images with known displacement
   (``registration.synthetic_pairs`` training pairs, ``val_pairs`` validation pairs with a different seed);
   ``registration.synthetic_generator: torch`` draws the training pairs with the fast torch
   synthesiser (:class:`fmdepth.data.pairs.FastSyntheticPairDataset`).

Validation reports the landmark error (``lre_mean``, selects best.pt) and the folding fraction.
:func:`load_registration_checkpoint` rebuilds a trained system from its checkpoint.
"""
from __future__ import annotations

import os
from typing import Dict

from torch.utils.data import Subset

from fmdepth.core.task import Task


def validate_registration(system, loader, device) -> Dict[str, float]:
    """Mean landmark error / end-point error / folding over a validation loader of PairBatch."""
    from fmdepth.metrics.registration import RegistrationEvaluator

    ev = RegistrationEvaluator()
    losses = []
    for batch in loader:
        batch = batch.to(device)
        result = system.register(batch.fixed, batch.moving)
        out = system.training_step(batch, step=0, want_images=False)
        losses.append(float(out.loss))
        for i in range(batch.fixed.shape[0]):
            ev.add(batch.names[i] if batch.names else str(i), result.flow[i].float().cpu(),
                   None if batch.landmarks_fixed is None else batch.landmarks_fixed[i].cpu(),
                   None if batch.landmarks_moving is None else batch.landmarks_moving[i].cpu(),
                   None if batch.flow is None else batch.flow[i].float().cpu())
    summary = ev.summary()
    summary["loss"] = float(sum(losses) / max(len(losses), 1))
    return summary


def load_registration_checkpoint(path: str, map_location="cpu"):
    """Rebuild a learned registration system (eval mode, on ``map_location``) from an engine checkpoint.

    Reads through :func:`fmdepth.tasks.loading.load_system` (the one checkpoint loader).

    Returns:
        the :class:`fmdepth.models.registration.LearnedRegistration` of the checkpoint's config,
        with its weights.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not an fmdepth checkpoint, not a registration checkpoint, or weights missing.
    """
    from fmdepth.tasks.loading import load_system

    return load_system(path, device=map_location, task="registration").system


def build(cfg) -> Task:
    """Registration system + pair datasets + landmark validation for ``cfg``."""
    from fmdepth.data.warps import RandomFlipAugment, RandomWarpAugment
    from fmdepth.data.pairs import (FastSyntheticPairDataset, FramePairDataset, PairFolderDataset,
                                    SyntheticPairDataset, collate_pairs)
    from fmdepth.models.registration import build_registration_system

    d, r = cfg.data, cfg.registration
    if d.dataset != "registration_pairs":
        raise ValueError(f"config key 'data.dataset': the registration task reads 'registration_pairs' "
                         f"(a pair folder, two videos, or synthetic pairs when data.path is empty), got '{d.dataset}'")
    size = (d.height, d.width)
    system = build_registration_system(cfg)
    val_set = None
    if r.fixed_video:
        train_set = FramePairDataset(r.fixed_video, r.moving_video, height=d.height, width=d.width)
        for note in train_set.notes:
            print(f"registration data: {note}")
    elif d.path:
        if not os.path.isdir(d.path):
            raise FileNotFoundError(f"data.path: pair folder not found: '{d.path}'")
        full = PairFolderDataset(d.path, height=d.height, width=d.width)
        n_val = min(r.val_pairs, len(full) - 1)
        if n_val > 0:
            train_set = Subset(full, list(range(len(full) - n_val)))
            val_set = Subset(full, list(range(len(full) - n_val, len(full))))
        else:
            train_set = full
    else:
        common = dict(size=size, modalities=tuple(r.modalities), affine=r.synthetic_affine, rms=r.synthetic_rms)
        if r.synthetic_generator == "torch":  # fast torch synthesis, a new pair at every index
            train_set = FastSyntheticPairDataset(r.synthetic_pairs, size=size, seed=cfg.seed,
                                                 modalities=tuple(r.modalities), rms=r.synthetic_rms)
        else:
            train_set = SyntheticPairDataset(r.synthetic_pairs, seed=cfg.seed, **common)
        if r.val_pairs > 0:  # validation keeps make_pair's pairs (landmarks on Harris corners)
            val_set = SyntheticPairDataset(r.val_pairs, seed=cfg.seed + 7919, **common)
    if r.augment_rms > 0 and (d.path or r.fixed_video):  # real pairs: new misalignments every epoch
        train_set = RandomWarpAugment(train_set, r.augment_rms)
    if r.augment_flip and (d.path or r.fixed_video):  # real pairs: other orientations of their content
        train_set = RandomFlipAugment(train_set)
    has_landmarks = val_set is not None and (not d.path or r.fixed_video
                                             or os.path.isdir(os.path.join(d.path, "landmarks_fixed")))
    return Task(system=system, train_set=train_set, val_set=val_set, collate_fn=collate_pairs,
                validate=validate_registration if val_set is not None else None,
                best_metric="lre_mean" if has_landmarks else "loss", best_mode="min")


__all__ = ["build", "validate_registration", "load_registration_checkpoint"]
