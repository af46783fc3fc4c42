"""Pinhole intrinsics: scaling to a pyramid level, closed-form batched inverse, disp -> depth."""
from typing import List, Optional, Tuple

import torch

from fmdepth.core.checks import check_tensor

__all__ = ["scale_intrinsics", "intrinsics_pyramid", "invert_intrinsics", "disp_to_depth",
           "check_intrinsics"]


def _check_K(K, name: str = "K") -> None:
    if isinstance(K, torch.Tensor) and K.dim() == 2:
        check_tensor(K, name, (3, 3))
    else:
        check_tensor(K, name, ("B", 3, 3))


def scale_intrinsics(K: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Intrinsics of the same camera after resizing the image by (sx, sy).

    Pixel-centre convention: pixel centres sit at integer coordinates, so the image edge is at
    -0.5 and resizing maps ``u -> (u + 0.5) * sx - 0.5``. Hence ``fx' = fx * sx``,
    ``cx' = (cx + 0.5) * sx - 0.5`` (same for y; skew scales with sx).

    Args:
        K: (B, 3, 3) or (3, 3) intrinsics in pixels, last row (0, 0, 1).
        sx, sy: new_width / width and new_height / height.

    Returns:
        K' with the shape, dtype and device of ``K``.

    Example:
        >>> K = torch.tensor([[100., 0., 31.5], [0., 100., 15.5], [0., 0., 1.]])
        >>> scale_intrinsics(K, 0.5, 0.5)[:2]
        tensor([[50.0000,  0.0000, 15.5000],
                [ 0.0000, 50.0000,  7.5000]])
    """
    _check_K(K)
    if not (sx > 0 and sy > 0):
        raise ValueError(f"sx, sy: expected positive scale factors, got {sx!r}, {sy!r}")
    S = K.new_tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return torch.matmul(S, K)


def intrinsics_pyramid(K: torch.Tensor, num_scales: int, height: Optional[int] = None,
                       width: Optional[int] = None) -> List[torch.Tensor]:
    """Intrinsics for pyramid levels ``s = 0 .. num_scales-1`` (level s: 1/2**s resolution).

    Args:
        K: (B, 3, 3) or (3, 3) intrinsics of level 0.
        num_scales: number of levels (>= 1).
        height, width: optional level-0 size; when given, level s uses the exact factor
            ``(width // 2**s) / width`` (and likewise for height), matching integer resizes.

    Returns:
        list of ``num_scales`` tensors shaped like ``K``; element 0 is ``K`` itself.
    """
    if not isinstance(num_scales, int) or num_scales < 1:
        raise ValueError(f"num_scales: expected a positive int, got {num_scales!r}")
    if (height is None) != (width is None):
        raise ValueError("height, width: give both or neither")
    out = []
    for s in range(num_scales):
        if height is None:
            sx = sy = 1.0 / 2 ** s
        else:
            sx, sy = (width // 2 ** s) / width, (height // 2 ** s) / height
        out.append(K if s == 0 else scale_intrinsics(K, sx, sy))
    return out


def inverse_and_det(K: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Adjugate inverse of (..., 3, 3) and its determinant; no checks, no sync."""
    a, b, c = K[..., 0, 0], K[..., 0, 1], K[..., 0, 2]
    d, e, f = K[..., 1, 0], K[..., 1, 1], K[..., 1, 2]
    g, h, i = K[..., 2, 0], K[..., 2, 1], K[..., 2, 2]
    A, B, C = e * i - f * h, f * g - d * i, d * h - e * g
    det = a * A + b * B + c * C
    adj = torch.stack([
        A, c * h - b * i, b * f - c * e,
        B, a * i - c * g, c * d - a * f,
        C, b * g - a * h, a * e - b * d,
    ], dim=-1).reshape(K.shape)
    return adj / det[..., None, None], det


def is_singular(K: torch.Tensor, det: torch.Tensor) -> torch.Tensor:
    """Bool tensor (no sync): any K non-finite or numerically singular.

    Scale-free test (Hadamard's ratio): ``|det K| <= 8 eps * prod(row norms)``; the ratio is 1
    for orthogonal rows and 0 for a singular matrix, whatever the units of K.
    """
    rows = torch.linalg.vector_norm(K.detach(), dim=-1).prod(dim=-1)  # (...)
    bad = ~(det.detach().abs() > 8 * torch.finfo(K.dtype).eps * rows)
    return bad.any() | ~torch.isfinite(K.detach()).all()


def check_intrinsics(K: torch.Tensor, name: str = "K") -> None:
    """Raise ``ValueError`` if ``K`` is non-finite or singular (syncs with the device once)."""
    _check_K(K, name)
    _, det = inverse_and_det(K)
    if bool(is_singular(K, det)):
        raise ValueError(f"{name}: expected invertible, finite (B, 3, 3) intrinsics; got a singular "
                         "or non-finite matrix")


def invert_intrinsics(K: torch.Tensor) -> torch.Tensor:
    """Closed-form (adjugate) inverse of batched intrinsics; differentiable.

    Args:
        K: (B, 3, 3) or (3, 3), any invertible 3x3 (skew allowed).

    Returns:
        K_inv shaped like ``K``.

    Raises:
        ValueError: ``K`` has the wrong shape, is non-finite or singular.

    Example:
        >>> K = torch.tensor([[[100., 0., 32.], [0., 50., 16.], [0., 0., 1.]]])
        >>> invert_intrinsics(K)[0, 0]
        tensor([ 0.0100,  0.0000, -0.3200])
    """
    _check_K(K)
    K_inv, det = inverse_and_det(K)
    if bool(is_singular(K, det)):
        raise ValueError("K: expected invertible, finite (B, 3, 3) intrinsics; got a singular "
                         "or non-finite matrix")
    return K_inv


def disp_to_depth(disp: torch.Tensor, min_depth: float, max_depth: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Monodepth2's mapping of a sigmoid output to depth.

    ``scaled_disp = 1/max_depth + (1/min_depth - 1/max_depth) * disp`` and
    ``depth = 1 / scaled_disp``, so disp=0 gives ``max_depth`` and disp=1 gives ``min_depth``.

    Args:
        disp: (B, 1, H, W) (any shape works) network output in [0, 1].
        min_depth, max_depth: 0 < min_depth < max_depth.

    Returns:
        (scaled_disp, depth), both shaped like ``disp``.

    Example:
        >>> disp_to_depth(torch.tensor([0.0, 1.0]), 0.1, 100.0)[1]
        tensor([100.0000,   0.1000])
    """
    if not isinstance(disp, torch.Tensor) or not disp.is_floating_point():
        raise ValueError("disp: expected a floating-point tensor (B, 1, H, W)")
    if not (0 < min_depth < max_depth):
        raise ValueError(f"min_depth, max_depth: expected 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    scaled = min_disp + (max_disp - min_disp) * disp
    return scaled, 1.0 / scaled
