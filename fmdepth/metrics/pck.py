"""PCK@alpha: the percentage of correct keypoints, for matches between two images.

A keypoint's predicted position is correct when it lies within ``alpha * max(H, W)`` pixels of
the true one (``size`` = (H, W) of the image the points live in). Used by the semantic task's
validation and by ``bench/correspondence.py``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def pck(pred: torch.Tensor, target: torch.Tensor, alpha: float, size: Tuple[int, int],
        mask: Optional[torch.Tensor] = None) -> float:
    """Percentage of correct keypoints: fraction with ``|pred - target| <= alpha * max(H, W)``.

    Args:
        pred, target: (..., 2) (x, y) pixels; size: (H, W) of the image the points live in;
        mask: (...) bool, which keypoints count (default all).

    Example:
        >>> pck(torch.tensor([[0., 0], [10, 0]]), torch.zeros(2, 2), 0.05, (100, 100))
        0.5
    """
    if pred.shape != target.shape or pred.shape[-1] != 2:
        raise ValueError(f"pred and target must both be (..., 2), got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    ok = (pred - target).norm(dim=-1) <= alpha * max(size)
    if mask is not None:
        if mask.shape != ok.shape:
            raise ValueError(f"mask: expected shape {tuple(ok.shape)}, got {tuple(mask.shape)}")
        ok = ok[mask.bool()]
    if ok.numel() == 0:
        raise ValueError("pck: no keypoints to evaluate (empty or fully masked)")
    return float(ok.float().mean())
