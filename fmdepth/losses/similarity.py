"""Image similarity measures for registration (higher = more similar; use ``loss = -similarity``).

* ``local_ncc``: windowed normalised cross-correlation, signed, in [-1, 1], 0 in flat windows.
* ``mutual_information``: differentiable MI from a Gaussian (Parzen) soft joint histogram, in nats.
* ``ngf``: normalised gradient fields (Haber & Modersitzki), ``mean (n_ε(x) · n_ε(y))^2`` in [0, 1].
* ``mind_ssc``: modality independent neighbourhood descriptor, self-similarity context (Heinrich
  et al. 2012, 2013), ``1 - mean |MIND(x) - MIND(y)|`` in [0, 1]; :func:`mind_descriptor` gives
  the per-pixel descriptor.

All take (B, C, H, W) images; channels are compared one to one (channel c of x with channel c of y).
Statistics are computed in at least float32 with autocast disabled (they cancel or accumulate badly
in half precision).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import as_compute, check_dims, check_min_size, check_same_shape, check_tensor, no_autocast

__all__ = ["local_ncc", "mutual_information", "ngf", "mind_descriptor", "mind_ssc", "LocalNCC", "MutualInformation",
           "NGF", "MINDSSC"]


def local_ncc(x: torch.Tensor, y: torch.Tensor, window: int = 9, eps: float = 1e-5) -> torch.Tensor:
    """Local normalised cross-correlation averaged over pixels and channels.

    Over each ``window x window`` box (clipped at the borders; means over the in-image part),
    ``ncc = cov(x, y) / sqrt((var(x) + eps) (var(y) + eps))``. By Cauchy-Schwarz ``|ncc| <= 1``;
    ``eps`` (a variance floor, intensity^2 units: 1e-5 ~ a standard deviation of 0.003) makes flat
    windows score 0 with finite gradients instead of 0/0. Invariant (up to ``eps``) to ``a x + b``
    with ``a > 0``; ``a < 0`` flips the sign.

    Args:
        x: (B, C, H, W) image.
        y: (B, C, H, W) image.
        window: odd box size (9 as in VoxelMorph; 1 degenerates to per-pixel, i.e. 0).
        eps: positive variance floor added to both local variances.

    Returns:
        scalar similarity in [-1, 1] (1 = identical up to a positive affine map).

    Example:
        >>> x = torch.rand(1, 1, 16, 16)
        >>> round(float(local_ncc(x, 2 * x + 1, eps=1e-9)), 4)
        1.0
    """
    check_tensor("x", x, "(B, C, H, W)")
    check_tensor("y", y, "(B, C, H, W)")
    check_same_shape("x", x, "y", y, "(B, C, H, W)")
    if not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"window: expected an odd positive integer, got {window!r}")
    if eps <= 0:
        raise ValueError(f"eps: expected a positive value, got {eps}")
    with no_autocast(x.device):
        x, y = as_compute(x, y)
        # centre each channel globally: local statistics are shift invariant, and the
        # E[x^2] - E[x]^2 cancellation shrinks (flat images give exactly 0)
        x = x - x.mean(dim=(2, 3), keepdim=True)
        y = y - y.mean(dim=(2, 3), keepdim=True)
        c = x.shape[1]
        stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B, 5C, H, W)
        means = F.avg_pool2d(stacked, window, stride=1, padding=window // 2, count_include_pad=False)
        mu_x, mu_y, e_xx, e_yy, e_xy = means.split(c, dim=1)
        var_x = (e_xx - mu_x * mu_x).clamp_min(0.0)
        var_y = (e_yy - mu_y * mu_y).clamp_min(0.0)
        cov = e_xy - mu_x * mu_y
        ncc = cov / torch.sqrt((var_x + eps) * (var_y + eps))
        return ncc.clamp(-1.0, 1.0).mean()


def mutual_information(x: torch.Tensor, y: torch.Tensor, bins: int = 32, sigma: Optional[float] = None,
                       mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Differentiable mutual information from a Parzen-window (Gaussian soft) joint histogram.

    Bin centres ``c_k = k / (bins - 1)`` cover [0, 1]; every sample contributes
    ``w_k(v) ∝ exp(-(v - c_k)^2 / (2 sigma^2))`` normalised to sum 1 over the bins. The joint
    distribution ``p(i, j) = Σ_n m_n w_i(x_n) w_j(y_n) / Σ_n m_n`` (m = mask weights) gives
    ``MI = Σ p(i,j) log(p(i,j) / (p(i) p(j)))`` per batch element; the batch mean is returned.
    All channels of an image pool into one histogram (channel c of x paired with channel c of y).

    Args:
        x: (B, C, H, W) intensities expected in [0, 1] (values outside are clamped; no gradient there).
        y: (B, C, H, W) intensities in [0, 1].
        bins: number of histogram bins (>= 2).
        sigma: Parzen standard deviation; default half the bin spacing, ``0.5 / (bins - 1)``.
        mask: optional (B, 1, H, W) or (B, C, H, W) non-negative weights (bool allowed).

    Returns:
        scalar MI in nats (>= 0; higher = more dependent). Invariant to bijective intensity maps
        up to the histogram's resolution.
    """
    check_tensor("x", x, "(B, C, H, W)")
    check_tensor("y", y, "(B, C, H, W)")
    check_same_shape("x", x, "y", y, "(B, C, H, W)")
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins: expected an integer >= 2, got {bins!r}")
    if sigma is None:
        sigma = 0.5 / (bins - 1)
    if sigma <= 0:
        raise ValueError(f"sigma: expected a positive value, got {sigma}")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dim() != 4 or mask.shape[1] not in (1, x.shape[1]):
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask: expected shape (B, 1, H, W) or (B, C, H, W), got {got}")
        check_dims("x", x, "mask", mask, (0, 2, 3), "(B, 1, H, W)")
    b = x.shape[0]
    with no_autocast(x.device):
        x, y = as_compute(x, y)
        centres = torch.linspace(0.0, 1.0, bins, device=x.device, dtype=x.dtype)  # (K,)
        tiny = torch.finfo(x.dtype).tiny

        def soft_bins(v: torch.Tensor) -> torch.Tensor:
            d = (v.clamp(0.0, 1.0).reshape(b, -1, 1) - centres) / sigma  # (B, N, K)
            w = torch.exp(-0.5 * d * d)
            return w / w.sum(dim=-1, keepdim=True).clamp_min(tiny)

        wx, wy = soft_bins(x), soft_bins(y)  # (B, N, K)
        if mask is not None:
            m = mask.to(x.dtype).expand_as(x).reshape(b, -1, 1)  # (B, N, 1)
            wx = wx * m
            total = m.sum(dim=1).clamp_min(tiny)  # (B, 1)
        else:
            total = x.new_full((b, 1), float(wx.shape[1]))
        p_xy = torch.bmm(wx.transpose(1, 2), wy) / total.unsqueeze(-1)  # (B, K, K)
        p_x = p_xy.sum(dim=2, keepdim=True)  # (B, K, 1)
        p_y = p_xy.sum(dim=1, keepdim=True)  # (B, 1, K)
        eps = 1e-10
        mi = (p_xy * (torch.log(p_xy + eps) - torch.log(p_x * p_y + eps))).sum(dim=(1, 2))  # (B,)
        return mi.mean()


def _central_gradients(t: torch.Tensor):
    """Central differences on the interior: (B, C, H, W) -> two (B, C, H-2, W-2)."""
    gx = 0.5 * (t[..., 1:-1, 2:] - t[..., 1:-1, :-2])
    gy = 0.5 * (t[..., 2:, 1:-1] - t[..., :-2, 1:-1])
    return gx, gy


def ngf(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    """Normalised gradient fields similarity (Haber & Modersitzki 2006).

    ``n_ε(I) = ∇I / sqrt(|∇I|^2 + ε^2)`` with central differences on the interior pixels;
    similarity ``mean (n_ε(x) · n_ε(y))^2`` in [0, 1] (the NGF distance is ``1 - ngf``). Edges
    count regardless of their polarity, so it is invariant to contrast inversion ``x -> 1 - x``;
    flat regions (``|∇I| << ε``) contribute ~0.

    Args:
        x: (B, C, H, W) image, H, W >= 3.
        y: (B, C, H, W) image.
        eps: edge threshold ε > 0 in intensity units per pixel (gradients well below it count as noise).

    Returns:
        scalar similarity in [0, 1].
    """
    check_tensor("x", x, "(B, C, H, W)")
    check_tensor("y", y, "(B, C, H, W)")
    check_same_shape("x", x, "y", y, "(B, C, H, W)")
    check_min_size("x", x, 3, 3, "central differences")
    if eps <= 0:
        raise ValueError(f"eps: expected a positive value, got {eps}")
    x, y = as_compute(x, y)
    xgx, xgy = _central_gradients(x)
    ygx, ygy = _central_gradients(y)
    e2 = eps * eps
    dot = xgx * ygx + xgy * ygy
    norm2 = (xgx * xgx + xgy * xgy + e2) * (ygx * ygx + ygy * ygy + e2)
    return (dot * dot / norm2).mean()


def _ssc_pairs(dilation: int):
    """The 2-D self-similarity context: all 6 pairs of the 4-neighbourhood at ``dilation`` pixels.

    The 3-D MIND-SSC compares the 12 pairs of the 6-neighbourhood at distance sqrt(2); in 2-D those
    are only the 4 diagonal pairs of the 4-neighbourhood, so the 2 opposite pairs (distance 2 d,
    the horizontal and vertical directions) are added. Offsets are (dy, dx).
    """
    d = dilation
    nb = [(0, d), (d, 0), (0, -d), (-d, 0)]
    return [(nb[i], nb[j]) for i in range(4) for j in range(i + 1, 4)]


def mind_descriptor(image: torch.Tensor, radius: int = 1, dilation: int = 2) -> torch.Tensor:
    """MIND-SSC descriptor (Heinrich et al., MICCAI 2013), 2-D: (B, C, H, W) -> (B, 6 C, H, W).

    For every pair ``(a, b)`` of the self-similarity context (:func:`_ssc_pairs`), the patch
    distance ``D(x; a, b) = mean_{q in patch} (I(x + a + q) - I(x + b + q))^2`` over a
    ``(2 radius + 1)^2`` box (replicate border). With ``D' = D - min_pairs D`` and the local
    variance ``V(x) = mean_pairs D'(x)`` clamped to ``[1e-3, 1e3] x`` its image mean,
    ``MIND = exp(-D' / V)``: in (0, 1], 1 on the most self-similar pair. It depends on the image
    only through local self-similarity, so any locally smooth monotonic or non-monotonic
    intensity map leaves it (nearly) unchanged -- what makes it modality independent.

    Args:
        image: (B, C, H, W); each channel gets its own 6 descriptor channels.
        radius: patch radius in pixels (>= 0).
        dilation: distance of the neighbours in pixels (>= 1).

    Returns:
        (B, 6 C, H, W) descriptor, channel ``6 c + k`` = pair ``k`` of channel ``c``.

    Raises:
        ValueError: an image of the batch is constant (no self-similarity structure: MIND is undefined).

    Example:
        >>> mind_descriptor(torch.rand(2, 1, 16, 16)).shape
        torch.Size([2, 6, 16, 16])
    """
    check_tensor("image", image, "(B, C, H, W)")
    if not isinstance(radius, int) or radius < 0:
        raise ValueError(f"radius: expected an integer >= 0, got {radius!r}")
    if not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"dilation: expected an integer >= 1, got {dilation!r}")
    with no_autocast(image.device):
        (x,) = as_compute(image)
        b, c, h, w = x.shape
        d = dilation
        xp = F.pad(x, (d, d, d, d), mode="replicate")  # (B, C, H + 2d, W + 2d)

        def shifted(o):
            return xp[..., d + o[0]:d + o[0] + h, d + o[1]:d + o[1] + w]

        diffs = torch.stack([(shifted(a) - shifted(bb)) ** 2 for a, bb in _ssc_pairs(d)], dim=2)  # (B, C, 6, H, W)
        k = 2 * radius + 1
        ssd = F.avg_pool2d(diffs.reshape(b, c * 6, h, w), k, stride=1, padding=radius,
                           count_include_pad=False).reshape(b, c, 6, h, w)
        ssd = ssd - ssd.min(dim=2, keepdim=True).values
        var = ssd.mean(dim=2, keepdim=True)  # (B, C, 1, H, W)
        mean_var = var.mean(dim=(1, 2, 3, 4), keepdim=True)  # (B, 1, 1, 1, 1)
        flat = mean_var.flatten() <= 1e-12
        if bool(flat.any()):
            i = int(flat.nonzero()[0])
            raise ValueError(f"image: batch element {i} is constant (no local structure at dilation {d}): "
                             f"MIND is undefined for it")
        var = torch.minimum(torch.maximum(var, 1e-3 * mean_var), 1e3 * mean_var)
        return torch.exp(-ssd / var).reshape(b, c * 6, h, w)


def mind_ssc(x: torch.Tensor, y: torch.Tensor, radius: int = 1, dilation: int = 2,
             mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MIND-SSC similarity: ``1 - mean |MIND(x) - MIND(y)|`` over pixels (and descriptor channels).

    Args:
        x: (B, C, H, W) image.
        y: (B, C, H, W) image (any modality of the same scene).
        radius, dilation: of :func:`mind_descriptor`.
        mask: optional (B, 1, H, W) non-negative weights (bool allowed): a weighted mean over pixels.

    Returns:
        scalar similarity in [0, 1] (1 = the same local self-similarity everywhere).

    Raises:
        ValueError: bad shapes, or a constant image (MIND undefined).

    Example:
        >>> x = torch.rand(1, 1, 24, 24)
        >>> round(float(mind_ssc(x, 0.3 * x + 0.5)), 4)  # invariant to affine intensity maps
        1.0
    """
    check_tensor("x", x, "(B, C, H, W)")
    check_tensor("y", y, "(B, C, H, W)")
    check_same_shape("x", x, "y", y, "(B, C, H, W)")
    if mask is not None:
        check_tensor("mask", mask.float() if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool else mask,
                     "(B, 1, H, W)", channels=1)
        check_dims("x", x, "mask", mask, (0, 2, 3), "(B, 1, H, W)")
    dist = (mind_descriptor(x, radius, dilation) - mind_descriptor(y, radius, dilation)).abs()  # (B, 6C, H, W)
    if mask is None:
        return 1.0 - dist.mean()
    m = mask.to(dist.dtype)
    return 1.0 - (dist * m).sum() / (m.sum() * dist.shape[1]).clamp_min(1.0)


class LocalNCC(nn.Module):
    """Module wrapper of :func:`local_ncc`: ``forward(x, y) -> scalar similarity``."""

    def __init__(self, window: int = 9, eps: float = 1e-5):
        super().__init__()
        if not isinstance(window, int) or window < 1 or window % 2 == 0:
            raise ValueError(f"window: expected an odd positive integer, got {window!r}")
        self.window, self.eps = window, eps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return local_ncc(x, y, window=self.window, eps=self.eps)

    def extra_repr(self) -> str:
        return f"window={self.window}, eps={self.eps}"


class MutualInformation(nn.Module):
    """Module wrapper of :func:`mutual_information`: ``forward(x, y, mask=None) -> scalar MI``."""

    def __init__(self, bins: int = 32, sigma: Optional[float] = None):
        super().__init__()
        if not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins: expected an integer >= 2, got {bins!r}")
        self.bins, self.sigma = bins, sigma

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return mutual_information(x, y, bins=self.bins, sigma=self.sigma, mask=mask)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, sigma={self.sigma}"


class NGF(nn.Module):
    """Module wrapper of :func:`ngf`: ``forward(x, y) -> scalar similarity``."""

    def __init__(self, eps: float = 1e-2):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ngf(x, y, eps=self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class MINDSSC(nn.Module):
    """Module wrapper of :func:`mind_ssc`: ``forward(x, y, mask=None) -> scalar similarity``."""

    def __init__(self, radius: int = 1, dilation: int = 2):
        super().__init__()
        if not isinstance(radius, int) or radius < 0:
            raise ValueError(f"radius: expected an integer >= 0, got {radius!r}")
        if not isinstance(dilation, int) or dilation < 1:
            raise ValueError(f"dilation: expected an integer >= 1, got {dilation!r}")
        self.radius, self.dilation = radius, dilation

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return mind_ssc(x, y, radius=self.radius, dilation=self.dilation, mask=mask)

    def extra_repr(self) -> str:
        return f"radius={self.radius}, dilation={self.dilation}"
