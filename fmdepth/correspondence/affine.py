"""Robust affine fitting from point correspondences (used by ``fmdepth register --init nbb``).

Method: RANSAC over minimal 3-point samples (seeded, so repeatable), scoring each hypothesis by
its inliers (transfer error <= ``threshold`` pixels), then an ordinary least-squares refit on the
largest inlier set, repeated once with the inliers of the refit. Without ``robust`` it is plain
least squares on all points.

The result maps *source* points to *destination* points: ``dst ~= A @ [x, y, 1]``. For
:func:`fmdepth.geometry.affine_warp`, which needs ``src_A_tgt`` mapping target pixels to source
pixels, fit from the target's points to the source's points: to warp a moving image onto a
fixed one, ``moving_A_fixed = fit_affine(points_fixed, points_moving)``.
"""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch

Points = Union[torch.Tensor, np.ndarray]


def _as_points(p: Points, name: str) -> np.ndarray:
    arr = p.detach().cpu().double().numpy() if isinstance(p, torch.Tensor) else np.asarray(p, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name}: expected shape (N, 2) (x, y) pixels, got {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return arr


def _lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    X = np.concatenate([src, np.ones((src.shape[0], 1))], 1)  # (N, 3)
    sol, *_ = np.linalg.lstsq(X, dst, rcond=None)  # (3, 2)
    return sol.T  # (2, 3)


def _residuals(A: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    return np.linalg.norm(src @ A[:, :2].T + A[:, 2] - dst, axis=1)


def fit_affine_with_inliers(points_src: Points, points_dst: Points, robust: bool = True,
                            threshold: float = 3.0, iterations: int = 500, seed: int = 0
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`fit_affine`, also returning the (N,) bool inlier mask (all True if not robust)."""
    src, dst = _as_points(points_src, "points_src"), _as_points(points_dst, "points_dst")
    if src.shape[0] != dst.shape[0]:
        raise ValueError(f"points_src and points_dst must have the same length, got {src.shape[0]} "
                         f"and {dst.shape[0]}")
    n = src.shape[0]
    if n < 3:
        raise ValueError(f"an affine needs at least 3 point pairs, got {n}")
    if threshold <= 0 or iterations < 1:
        raise ValueError(f"threshold must be > 0 and iterations >= 1, got {threshold}, {iterations}")
    inliers = np.ones(n, dtype=bool)
    if robust and n > 3:
        rng = np.random.default_rng(seed)
        samples = np.stack([rng.choice(n, 3, replace=False) for _ in range(iterations)])  # (I, 3)
        S, D = src[samples], dst[samples]  # (I, 3, 2)
        X = np.concatenate([S, np.ones((iterations, 3, 1))], 2)  # (I, 3, 3)
        det = np.linalg.det(X)
        ok = np.abs(det) > 1e-6  # skip collinear samples
        best = -1
        if ok.any():
            sol = np.linalg.solve(X[ok], D[ok])  # (I', 3, 2): all hypotheses at once
            pred = np.einsum("nk,ikj->inj", np.concatenate([src, np.ones((n, 1))], 1), sol)
            err = np.linalg.norm(pred - dst[None], axis=2)  # (I', N)
            counts = (err <= threshold).sum(1)
            best = int(np.argmax(counts))
            if counts[best] >= 3:
                inliers = err[best] <= threshold
        for _ in range(2):  # least squares on the consensus set, then on its own inliers
            A = _lstsq(src[inliers], dst[inliers])
            new = _residuals(A, src, dst) <= threshold
            if new.sum() < 3 or (new == inliers).all():
                break
            inliers = new
    A = _lstsq(src[inliers], dst[inliers])
    dtype = points_src.dtype if isinstance(points_src, torch.Tensor) and points_src.dtype == torch.float64 \
        else torch.float32
    return torch.from_numpy(A).to(dtype), torch.from_numpy(inliers)


def fit_affine(points_src: Points, points_dst: Points, robust: bool = True,
               threshold: float = 3.0, iterations: int = 500, seed: int = 0) -> torch.Tensor:
    """Affine ``A`` (2, 3) with ``points_dst ~= points_src @ A[:, :2].T + A[:, 2]``.

    Args:
        points_src: (N, 2) (x, y) pixels, N >= 3 (tensor or array).
        points_dst: (N, 2) matching points.
        robust: RANSAC (3-point samples, ``iterations`` hypotheses, inlier ``threshold`` in
            pixels, seeded by ``seed``) followed by least squares on the inliers; False = plain
            least squares on every pair.

    Returns:
        (2, 3) float32 tensor (float64 if ``points_src`` is a float64 tensor).

    Example:
        >>> src = torch.tensor([[0., 0], [10, 0], [0, 10], [10, 10]])
        >>> A = fit_affine(src, src + torch.tensor([2., -1]))
        >>> torch.allclose(A, torch.tensor([[1., 0, 2], [0, 1, -1]]), atol=1e-6)
        True
    """
    return fit_affine_with_inliers(points_src, points_dst, robust, threshold, iterations, seed)[0]
