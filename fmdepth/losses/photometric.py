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

from fmdepth.core.checks import as_compute, check_min_size, check_same_device, check_tensor

__all__ = [
    "SSIM_C1", "SSIM_C2", "ssim", "robust_l1", "photometric_error", "min_reprojection", "automask",
    "SSIM", "PhotometricError",
]

SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2


def _box3_valid(z: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sum of each 3x3 neighbourhood divided by 9, 'valid' region: (..., H+2, W+2) -> (..., H, W).

    Separable sums of shifted views accumulated in place (call without autograd recording);
    written into ``out`` when given.
    """
    h = z[..., :-2] + z[..., 1:-1]  # (..., H+2, W)
    h += z[..., 2:]
    out = torch.add(h[..., :-2, :], h[..., 1:-1, :], out=out)  # (..., H, W)
    out += h[..., 2:, :]
    del h
    return out.div_(9.0)


def _box3_full(g: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`_box3_valid`: (..., H, W) -> (..., H+2, W+2) (zero-pad by 2, same sums)."""
    return _box3_valid(F.pad(g, (2, 2, 2, 2)))


def _ssim_from_stats(stats: torch.Tensor, c: int):
    """SSIM and its factors from the (B, 5C, H, W) local means [mu_x, mu_y, E[x^2], E[y^2], E[xy]].

    ``S = a b / (cc d)`` with ``a = 2 mu_x mu_y + C1``, ``b = 2 cov + C2``, ``cc = mu_x^2 + mu_y^2 + C1``,
    ``d = var_x + var_y + C2``. In-place arithmetic (no autograd); the operation order makes S exactly
    1 for identical inputs.
    """
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(c, dim=1)
    mu_xy = mu_x * mu_y
    b = (e_xy - mu_xy).mul_(2.0).add_(SSIM_C2)
    a = mu_xy.mul_(2.0).add_(SSIM_C1)
    mu_xx = mu_x * mu_x
    mu_yy = mu_y * mu_y
    cc = (mu_xx + mu_yy).add_(SSIM_C1)
    d = mu_xx.neg_().add_(e_xx).add_(mu_yy.neg_().add_(e_yy)).add_(SSIM_C2)  # var_x + var_y + C2
    del mu_yy
    den = cc * d
    return (a * b).div_(den), mu_x, mu_y, a, b, cc, d, den


class _SSIMFunction(torch.autograd.Function):
    """SSIM map with a hand-written backward (first-order only).

    Forward: one reflection pad of ``[x, y]``, one separable 3x3 box filter over the stacked
    ``[x, y, x^2, y^2, xy]``. Backward: the chain rule through ``S = a b / (cc d)`` to the five local
    means, one 'full' box filter (the adjoint of the valid one: zero-pad by 2, same sums), the
    products' rule back to the padded inputs, and the reflection pad's adjoint. It saves only the
    padded inputs and the local means and works in place, so its peak memory stays below the
    autograd graph of the usual five-pool formulation.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        padded = F.pad(torch.cat([x, y], dim=1), (1, 1, 1, 1), mode="reflect")  # (B, 2C, H+2, W+2)
        bsz, _, hp, wp = padded.shape
        stats = padded.new_empty((bsz, 5 * c, hp - 2, wp - 2))  # local means of [x, y, x^2, y^2, xy]
        _box3_valid(padded, out=stats[:, :2 * c])
        _box3_valid(padded * padded, out=stats[:, 2 * c:4 * c])
        _box3_valid(padded[:, :c] * padded[:, c:], out=stats[:, 4 * c:])
        ctx.save_for_backward(x, y, padded, stats)
        return _ssim_from_stats(stats, c)[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, y, padded, stats = ctx.saved_tensors
        c = x.shape[1]
        s, mu_x, mu_y, a, b, cc, d, den = _ssim_from_stats(stats, c)
        g_den = grad / den
        del den
        d_a = b.mul_(g_den)  # dS/da = g b / den
        d_b = a.mul_(g_den)  # dS/db = g a / den
        del g_den
        gs = s.mul_(grad)
        d_d = gs.div(d).neg_()  # dS/dd = -g S / d
        del d
        t2 = gs.div_(cc).neg_().sub_(d_d)  # dS/dcc - dS/dd
        del cc
        t1 = d_a.sub_(d_b)  # dS/da - dS/db
        # gradients w.r.t. the padded [x, y, x^2, y^2, xy] through the box filter's adjoint;
        # d/dE[x^2] = d/dE[y^2] = dS/dd, so one box serves both
        g_sq = _box3_full(d_d)
        del d_d
        g_xy = _box3_full(d_b.mul_(2.0))
        del d_b
        xp, yp = padded[:, :c], padded[:, c:]
        grad_x = grad_y = None
        if ctx.needs_input_grad[0]:
            g = _box3_full(torch.mul(mu_y, t1).addcmul_(mu_x, t2).mul_(2.0))  # d/d mu_x
            g.addcmul_(xp, g_sq, value=2.0).addcmul_(yp, g_xy)
            grad_x = torch.ops.aten.reflection_pad2d_backward(g, x, [1, 1, 1, 1])
            del g
        if ctx.needs_input_grad[1]:
            g = _box3_full(torch.mul(mu_x, t1).addcmul_(mu_y, t2).mul_(2.0))  # d/d mu_y
            g.addcmul_(yp, g_sq, value=2.0).addcmul_(xp, g_xy)
            grad_y = torch.ops.aten.reflection_pad2d_backward(g, y, [1, 1, 1, 1])
        return grad_x, grad_y


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
    sizes = check_tensor(x, "x", ("B", "C", "H", "W"))
    check_tensor(y, "y", ("B", "C", "H", "W"), sizes)
    check_same_device(("x", x), ("y", y))
    check_min_size(x, "x", 2, 2, "3x3 window with reflection padding")
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
    sizes = check_tensor(pred, "pred", ("B", "C", "H", "W"))
    check_tensor(target, "target", ("B", "C", "H", "W"), sizes)
    check_same_device(("pred", pred), ("target", target))
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
    check_tensor(errors, "errors", ("B", "S", "H", "W"))
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
    sizes = check_tensor(reprojection_errors, "reprojection_errors", ("B", "S", "H", "W"))
    check_tensor(identity_errors, "identity_errors", ("B", "S'", "H", "W"), sizes)
    check_same_device(("reprojection_errors", reprojection_errors), ("identity_errors", identity_errors))
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
