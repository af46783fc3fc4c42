"""Photometric losses: SSIM, (robust) L1, the per-pixel photometric error, the per-pixel minimum
over source frames and Monodepth2's auto-mask.

All functions are pure and work on any batch size and resolution, float32/float64, and under
autocast (half-precision inputs are computed in float32: the SSIM variances ``E[x^2] - E[x]^2``
cancel catastrophically in half precision).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ._checks import as_compute, check_dims, check_min_size, check_same_shape, check_tensor

__all__ = [
    "SSIM_C1", "SSIM_C2", "ssim", "robust_l1", "photometric_error", "min_reprojection", "automask",
    "SSIM", "PhotometricError",
]

SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2


def _box3_valid(z: torch.Tensor) -> torch.Tensor:
    """Sum of each 3x3 neighbourhood divided by 9, 'valid' region: (..., H+2, W+2) -> (..., H, W)."""
    h = z[..., :-2] + z[..., 1:-1] + z[..., 2:]  # (..., H+2, W)
    return (h[..., :-2, :] + h[..., 1:-1, :] + h[..., 2:, :]) / 9.0  # (..., H, W)


class _SSIMFunction(torch.autograd.Function):
    """SSIM map with a hand-written backward (first-order only).

    Forward: one reflection pad of ``[x, y]``, one separable 3x3 box filter over the stacked
    ``[x, y, x^2, y^2, xy]``. Backward: the chain rule through ``S = A B / (C D)`` to the five local
    means, one 'full' box filter (the adjoint of the valid one: zero-pad by 2, same sums), the
    products' rule back to the padded inputs, and the reflection pad's adjoint. It saves only the
    padded inputs and the local means (autograd's graph of ~30 elementwise ops would save many
    more full-size tensors and build a zero-filled gradient for every shifted view).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        padded = F.pad(torch.cat([x, y], dim=1), (1, 1, 1, 1), mode="reflect")  # (B, 2C, H+2, W+2)
        xp, yp = padded[:, :c], padded[:, c:]
        stats = _box3_valid(torch.cat([padded, padded * padded, xp * yp], dim=1))  # (B, 5C, H, W)
        ctx.save_for_backward(x, y, padded, stats)
        return _ssim_from_stats(stats, c)[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, y, padded, stats = ctx.saved_tensors
        c = x.shape[1]
        s, mu_x, mu_y, a, b, cc, d, den = _ssim_from_stats(stats, c)
        g_den = grad / den
        d_a = g_den * b
        d_b = g_den * a
        gs = grad * s
        d_d = -gs / d
        t1 = d_a - d_b
        t2 = -gs / cc - d_d
        g_stats = torch.cat([2.0 * (mu_y * t1 + mu_x * t2),  # d/d mu_x
                             2.0 * (mu_x * t1 + mu_y * t2),  # d/d mu_y
                             d_d, d_d,  # d/d E[x^2], d/d E[y^2]
                             2.0 * d_b], dim=1)  # d/d E[xy]
        g = _box3_valid(F.pad(g_stats, (2, 2, 2, 2)))  # (B, 5C, H+2, W+2)
        g_x, g_y, g_xx, g_yy, g_xy = g.split(c, dim=1)
        xp, yp = padded[:, :c], padded[:, c:]
        grad_x = grad_y = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.reflection_pad2d_backward(g_x + 2.0 * xp * g_xx + yp * g_xy, x, [1, 1, 1, 1])
        if ctx.needs_input_grad[1]:
            grad_y = torch.ops.aten.reflection_pad2d_backward(g_y + 2.0 * yp * g_yy + xp * g_xy, y, [1, 1, 1, 1])
        return grad_x, grad_y


def _ssim_from_stats(stats: torch.Tensor, c: int):
    """SSIM and its factors from the (B, 5C, H, W) local means [mu_x, mu_y, E[x^2], E[y^2], E[xy]]."""
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(c, dim=1)
    mu_xy = mu_x * mu_y
    mu_xx = mu_x * mu_x
    mu_yy = mu_y * mu_y
    a = 2.0 * mu_xy + SSIM_C1
    b = 2.0 * (e_xy - mu_xy) + SSIM_C2
    cc = mu_xx + mu_yy + SSIM_C1
    d = (e_xx - mu_xx) + (e_yy - mu_yy) + SSIM_C2
    den = cc * d
    return a * b / den, mu_x, mu_y, a, b, cc, d, den


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Structural similarity map over 3x3 windows with reflection padding.

    ``SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))``
    with ``C1 = 0.01**2``, ``C2 = 0.03**2`` and local (biased) statistics over the 3x3 window.
    The inputs are reflection-padded once and all five local means (x, y, x^2, y^2, xy) come from
    one separable box filter over the channel-stacked tensor; the backward is hand-written (fewer
    passes and saved tensors than autograd's graph) and supports first-order gradients only.

    Args:
        x: (B, C, H, W) image, nominally in [0, 1]. H, W >= 2 (reflection padding).
        y: (B, C, H, W) image of the same shape.

    Returns:
        (B, C, H, W) SSIM map (1 where the windows are identical), in the common dtype of the
        inputs, at least float32.

    Example:
        >>> x = torch.rand(2, 3, 8, 10)
        >>> ssim(x, x).shape, bool(torch.allclose(ssim(x, x), torch.ones(1)))
        (torch.Size([2, 3, 8, 10]), True)
    """
    check_tensor("x", x, "(B, C, H, W)")
    check_tensor("y", y, "(B, C, H, W)")
    check_same_shape("x", x, "y", y, "(B, C, H, W)")
    check_min_size("x", x, 2, 2, "3x3 window with reflection padding")
    x, y = as_compute(x, y)
    return _SSIMFunction.apply(x, y)


def robust_l1(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Element-wise robust (Charbonnier) L1 ``sqrt((x - y)^2 + eps)``; smooth at x == y.

    Args:
        x: tensor of any shape.
        y: tensor broadcastable to ``x``.
        eps: positive regulariser (the value at x == y is ``sqrt(eps)``).

    Returns:
        tensor of the broadcast shape.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError("robust_l1: x and y must be tensors")
    if eps <= 0:
        raise ValueError(f"eps: expected a positive value, got {eps}")
    diff = x - y
    return torch.sqrt(diff * diff + eps)


def photometric_error(pred: torch.Tensor, target: torch.Tensor, ssim_weight: float = 0.85,
                      robust: bool = False) -> torch.Tensor:
    """Per-pixel photometric error ``w * clamp((1 - SSIM) / 2, 0, 1) + (1 - w) * L1``.

    Both terms are averaged over channels. ``robust=True`` replaces ``|pred - target|`` by
    ``sqrt((pred - target)^2 + 1e-6)``. ``ssim_weight=0`` skips the SSIM computation.

    Args:
        pred: (B, C, H, W) reconstructed (warped) image in [0, 1].
        target: (B, C, H, W) target image.
        ssim_weight: weight ``w`` of the SSIM term in [0, 1] (0.85 in Monodepth2).
        robust: use the robust L1.

    Returns:
        (B, 1, H, W) error, 0 for identical images.

    Example:
        >>> img = torch.rand(2, 3, 6, 8)
        >>> photometric_error(img, img).abs().max().item()
        0.0
    """
    check_tensor("pred", pred, "(B, C, H, W)")
    check_tensor("target", target, "(B, C, H, W)")
    check_same_shape("pred", pred, "target", target, "(B, C, H, W)")
    if not 0.0 <= ssim_weight <= 1.0:
        raise ValueError(f"ssim_weight: expected a value in [0, 1], got {ssim_weight}")
    pred, target = as_compute(pred, target)
    if robust:
        l1 = robust_l1(pred, target).mean(dim=1, keepdim=True)  # (B, 1, H, W)
    else:
        l1 = (pred - target).abs().mean(dim=1, keepdim=True)  # (B, 1, H, W)
    if ssim_weight == 0.0:
        return l1
    dssim = torch.clamp((1.0 - ssim(pred, target)) * 0.5, 0.0, 1.0).mean(dim=1, keepdim=True)
    return ssim_weight * dssim + (1.0 - ssim_weight) * l1


def min_reprojection(errors: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel minimum over source frames (Monodepth2's occlusion handling).

    Args:
        errors: (B, S, H, W) per-pixel errors of S >= 1 source frames (e.g. ``photometric_error``
            outputs concatenated on dim 1).

    Returns:
        ``(min, argmin)``: (B, 1, H, W) minimum error (gradient flows to the chosen source only)
        and (B, 1, H, W) int64 index of the chosen source.
    """
    check_tensor("errors", errors, "(B, S, H, W)")
    if errors.shape[1] < 1:
        raise ValueError(f"errors: expected shape (B, S, H, W) with S >= 1, got {tuple(errors.shape)}")
    values, indices = torch.min(errors, dim=1, keepdim=True)
    return values, indices


def automask(reprojection_errors: torch.Tensor, identity_errors: torch.Tensor, noise: float = 1e-5,
             generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Monodepth2 auto-mask: keep pixels whose warped error beats the un-warped (identity) error.

    ``mask = min_s reprojection_s < min_s (identity_s + noise * N(0, 1))``. The tiny Gaussian noise
    breaks ties where the source and target are identical (e.g. static textureless regions), so
    such pixels are dropped rather than kept. Pixels moving with the camera (static-camera
    frames, objects at the camera's speed) are masked out.

    Args:
        reprojection_errors: (B, S, H, W) errors of the warped source frames vs the target.
        identity_errors: (B, S', H, W) errors of the un-warped source frames vs the target.
        noise: standard deviation of the tie-breaking noise (0 disables it).
        generator: optional ``torch.Generator`` for the noise.

    Returns:
        (B, 1, H, W) float mask (1 = keep) in the dtype of ``reprojection_errors``, no gradient.
    """
    check_tensor("reprojection_errors", reprojection_errors, "(B, S, H, W)")
    check_tensor("identity_errors", identity_errors, "(B, S', H, W)")
    check_dims("reprojection_errors", reprojection_errors, "identity_errors", identity_errors, (0, 2, 3),
               "(B, S', H, W)")
    if noise < 0:
        raise ValueError(f"noise: expected a non-negative value, got {noise}")
    with torch.no_grad():
        identity = identity_errors
        if noise > 0:
            eps = torch.randn(identity.shape, generator=generator, device=identity.device, dtype=identity.dtype)
            identity = identity + noise * eps
        keep = reprojection_errors.min(dim=1, keepdim=True).values < identity.min(dim=1, keepdim=True).values
    return keep.to(reprojection_errors.dtype)


class SSIM(nn.Module):
    """Module wrapper of :func:`ssim`: ``forward(x, y) -> (B, C, H, W)`` SSIM map."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ssim(x, y)


class PhotometricError(nn.Module):
    """Module wrapper of :func:`photometric_error`: ``forward(pred, target) -> (B, 1, H, W)``."""

    def __init__(self, ssim_weight: float = 0.85, robust: bool = False):
        super().__init__()
        if not 0.0 <= ssim_weight <= 1.0:
            raise ValueError(f"ssim_weight: expected a value in [0, 1], got {ssim_weight}")
        self.ssim_weight = ssim_weight
        self.robust = robust

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return photometric_error(pred, target, ssim_weight=self.ssim_weight, robust=self.robust)

    def extra_repr(self) -> str:
        return f"ssim_weight={self.ssim_weight}, robust={self.robust}"
