"""Registration metrics: landmark registration error and folding fraction (one implementation,
used by training-time validation, ``fmdepth register``, ``fmdepth evaluate registration`` and the
benchmark).

Definition of the landmark error. A flow is ``(2, H, W)`` in pixels on the **fixed** grid
(``flow[0]`` = dx) and the registered image is ``warped(p) = moving(p + flow(p))``. A fixed landmark
``p_i`` is therefore mapped to the moving-image position ``q̂_i = p_i + flow(p_i)`` (flow sampled
bilinearly at the sub-pixel landmark), and the error of landmark ``i`` is the Euclidean distance
``|| q̂_i - q_i ||`` to the corresponding moving landmark ``q_i``, in pixels of the moving image.
With ``flow=None`` (identity) it is the initial misalignment ``|| p_i - q_i ||``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]

LANDMARK_KEYS = ("lre_mean", "lre_median", "lre_max")


@dataclass
class RegistrationResult:
    """What a registration returns: the per-pair solver (:func:`fmdepth.registration.register_pair`)
    and the learned systems' ``register`` (:mod:`fmdepth.models.registration`); what is measured here.

    Attributes:
        flow: (B, 2, H, W) pixels on the fixed grid (``warped(p) = moving(p + flow(p))``).
        warped: (B, C, H, W) the moving image (all its channels) warped onto the fixed grid.
        affine: (3, 3) pixel affine fixed -> moving (per pair: affine method / affine start), (B, 3, 3)
            (learned affine system) or None.
        translated: (B, 1, H, W) the translator's output T(warped moving) (translation method) or None.
        seconds: wall-clock time of the registration.
        losses: final similarity loss per pyramid level (per-pair solver).
        kept: which candidate the never-worse check returned: ``identity``, ``affine`` (the
            affine stage / initial affine) or ``final`` (the optimised transform); None when unchecked.
        scores: per candidate, its loss (lower = better) on the chosen and on the check similarity.
        notes: human-readable sentences on what was kept and why.
        consistency: per dense-field candidate, its mean forward-backward error in pixels against
            the field registered from moving to fixed (per-pair solver; empty when not checked).
        correlation_ratio: per-pair MIND-SSC field with ``mind_mi_weight="auto"``: eta^2 of the
            registered moving image given the fixed one after the first solve; else None.
        mind_mi_weight: the weight of MI in the per-pair MIND-SSC objective that was used (0 = none).
    """

    flow: torch.Tensor
    warped: torch.Tensor
    affine: Optional[torch.Tensor] = None
    translated: Optional[torch.Tensor] = None
    seconds: float = 0.0
    losses: List[float] = field(default_factory=list)
    kept: Optional[str] = None
    scores: Dict[str, Dict[str, float]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    consistency: Dict[str, float] = field(default_factory=dict)
    correlation_ratio: Optional[float] = None
    mind_mi_weight: float = 0.0


def _np(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def sample_flow_at(flow: ArrayLike, points: ArrayLike) -> np.ndarray:
    """Bilinearly sample a ``(2, H, W)`` flow at ``(N, 2)`` (x, y) points -> ``(N, 2)`` (dx, dy).

    Points are clamped to the image (the flow's border value is used outside).
    """
    f, pts = _np(flow), _np(points)
    if f.ndim == 4 and f.shape[0] == 1:
        f = f[0]
    if f.ndim != 3 or f.shape[0] != 2:
        raise ValueError(f"flow: expected (2, H, W), got {f.shape}")
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points: expected (N, 2) x, y, got {pts.shape}")
    _, h, w = f.shape
    x = np.clip(pts[:, 0], 0, w - 1)
    y = np.clip(pts[:, 1], 0, h - 1)
    x0 = np.clip(np.floor(x).astype(int), 0, max(w - 2, 0))
    y0 = np.clip(np.floor(y).astype(int), 0, max(h - 2, 0))
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    ax, ay = x - x0, y - y0
    out = (f[:, y0, x0] * (1 - ax) * (1 - ay) + f[:, y0, x1] * ax * (1 - ay)
           + f[:, y1, x0] * (1 - ax) * ay + f[:, y1, x1] * ax * ay)
    return out.T


def landmark_errors(landmarks_fixed: ArrayLike, landmarks_moving: ArrayLike,
                    flow: Optional[ArrayLike] = None) -> np.ndarray:
    """Per-landmark registration error in pixels, ``(N,)``.

    Args:
        landmarks_fixed: (N, 2) x, y on the fixed image.
        landmarks_moving: (N, 2) x, y of the same points on the moving image.
        flow: (2, H, W) fixed-grid displacement (``warped(p) = moving(p + flow(p))``), or None for
            the identity (the error before registration).

    Raises:
        ValueError: shapes differ or are not (N, 2).
    """
    lf, lm = _np(landmarks_fixed), _np(landmarks_moving)
    if lf.ndim != 2 or lf.shape[1] != 2:
        raise ValueError(f"landmarks_fixed: expected (N, 2), got {lf.shape}")
    if lm.shape != lf.shape:
        raise ValueError(f"landmarks_moving: expected the same shape as landmarks_fixed {lf.shape} "
                         f"(one moving landmark per fixed landmark), got {lm.shape}")
    mapped = lf if flow is None else lf + sample_flow_at(flow, lf)
    return np.sqrt(np.sum((mapped - lm) ** 2, axis=1))


def landmark_error(landmarks_fixed: ArrayLike, landmarks_moving: ArrayLike,
                   flow: Optional[ArrayLike] = None) -> Dict[str, float]:
    """Mean, median and max landmark registration error (pixels).

    Returns:
        ``{"lre_mean", "lre_median", "lre_max", "num_landmarks"}``.

    Example:
        >>> lf = np.array([[10.0, 10.0], [20.0, 5.0]]); lm = lf + [3.0, 4.0]
        >>> landmark_error(lf, lm)["lre_mean"]
        5.0
    """
    e = landmark_errors(landmarks_fixed, landmarks_moving, flow)
    if e.size == 0:
        raise ValueError("landmark_error: no landmarks")
    return {"lre_mean": float(e.mean()), "lre_median": float(np.median(e)), "lre_max": float(e.max()),
            "num_landmarks": int(e.size)}


def folding_fraction(flow: ArrayLike) -> float:
    """Fraction of pixels where the map ``p -> p + flow(p)`` folds (Jacobian determinant <= 0).

    Args:
        flow: (B, 2, H, W) or (2, H, W) displacement in pixels.

    Uses :func:`fmdepth.geometry.jacobian_determinant`.
    """
    from fmdepth.geometry import jacobian_determinant

    f = flow if isinstance(flow, torch.Tensor) else torch.as_tensor(np.asarray(flow))
    f = f.detach().to(torch.float64)
    if f.dim() == 3:
        f = f[None]
    if f.dim() != 4 or f.shape[1] != 2:
        raise ValueError(f"flow: expected (B, 2, H, W) or (2, H, W), got {tuple(f.shape)}")
    jac = jacobian_determinant(f)
    return float((jac <= 0).double().mean())


def mean_corner_error(affine_est: ArrayLike, affine_true: ArrayLike, height: int, width: int) -> float:
    """Mean distance (pixels) between the four image corners mapped by two (2,3)/(3,3) affines."""
    a, b = _np(affine_est)[:2], _np(affine_true)[:2]
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]], float)
    return float(np.linalg.norm(corners @ a.T - corners @ b.T, axis=1).mean())


def flow_epe(flow_est: ArrayLike, flow_true: ArrayLike) -> float:
    """Mean end-point error (pixels) between two (2, H, W) flows."""
    a, b = _np(flow_est), _np(flow_true)
    if a.shape != b.shape:
        raise ValueError(f"flow_est {a.shape} and flow_true {b.shape} differ")
    return float(np.sqrt(((a - b) ** 2).sum(axis=-3)).mean())


class RegistrationEvaluator:
    """Accumulates per-pair results; :meth:`summary` averages them over pairs.

    Per pair: landmark error before/after (if landmarks), folding fraction, end-point error
    against a true flow (if given), run time.
    """

    def __init__(self) -> None:
        self.rows: List[Dict[str, object]] = []

    def add(self, name: str, flow: ArrayLike, landmarks_fixed: Optional[ArrayLike] = None,
            landmarks_moving: Optional[ArrayLike] = None, flow_true: Optional[ArrayLike] = None,
            seconds: Optional[float] = None) -> Dict[str, object]:
        f = _np(flow)
        if f.ndim == 4:
            f = f[0]
        row: Dict[str, object] = {"name": name, "folding_fraction": folding_fraction(f)}
        if landmarks_fixed is not None and landmarks_moving is not None:
            before = landmark_error(landmarks_fixed, landmarks_moving, None)
            after = landmark_error(landmarks_fixed, landmarks_moving, f)
            row.update({k: after[k] for k in LANDMARK_KEYS})
            row.update({f"{k}_before": before[k] for k in LANDMARK_KEYS})
            row["num_landmarks"] = after["num_landmarks"]
        if flow_true is not None:
            row["epe"] = flow_epe(f, flow_true)
        if seconds is not None:
            row["seconds"] = float(seconds)
        self.rows.append(row)
        return row

    def summary(self) -> Dict[str, float]:
        """Mean over pairs of every numeric column (``lre_*`` averaged per pair), plus ``num_pairs``."""
        out: Dict[str, float] = {"num_pairs": float(len(self.rows))}
        keys = sorted({k for r in self.rows for k, v in r.items() if isinstance(v, (int, float)) and k != "num_landmarks"})
        for k in keys:
            vals = [float(r[k]) for r in self.rows if k in r]
            out[k] = float(np.mean(vals))
        for k in ("lre_max", "lre_max_before"):  # maxima over pairs, not means
            if any(k in r for r in self.rows):
                out[k] = float(max(float(r[k]) for r in self.rows if k in r))
        return out
