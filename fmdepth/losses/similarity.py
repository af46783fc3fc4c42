"""Image similarity measures for registration (higher = more similar; use ``loss = -similarity``).

* ``local_ncc``: windowed normalised cross-correlation, signed, in [-1, 1], 0 in flat windows.
* ``mutual_information``: differentiable MI from a Gaussian (Parzen) soft joint histogram, in nats.
* ``ngf``: normalised gradient fields (Haber & Modersitzki), ``mean (n_ε(x) · n_ε(y))^2`` in [0, 1].
* ``mind_ssc``: modality independent neighbourhood descriptor, self-similarity context (Heinrich
  et al. 2012, 2013), ``1 - mean |MIND(x) - MIND(y)|`` in [0, 1]; :func:`mind_descriptor` gives
  the per-pixel descriptor.
* ``correlation_ratio``: how far one image's intensities are a function of the other's (Roche et
  al. 1998), in [0, 1]; not a loss (no gradient), it says when MI is a safe objective.
* :class:`Similarity`: the registration loss (lower = better) over these, selected by name from
  :data:`SIMILARITIES`, on a warped image with its validity mask; :func:`to_gray` gives luminance.

All take (B, C, H, W) images; channels are compared one to one (channel c of x with channel c of y).
Statistics are computed in at least float32 with autocast disabled (they cancel or accumulate badly
in half precision).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from fmdepth.core.checks import as_compute, check_min_size, check_same_device, check_tensor, no_autocast

__all__ = ["SIMILARITIES", "local_ncc", "mutual_information", "correlation_ratio", "ngf", "mind_descriptor", "mind_ssc",
           "to_gray", "LocalNCC", "MutualInformation", "NGF", "MINDSSC", "Similarity"]

# the names :class:`Similarity` accepts (registration losses, lower = better)
SIMILARITIES = ("mse", "ncc", "mi", "ngf", "mind", "feature")

IMAGE = ("B", "C", "H", "W")


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> dict:
    """x, y: (B, C, H, W) of the same shape, on the same device -> the sizes of ``x``."""
    sizes = check_tensor(x, "x", IMAGE)
    check_tensor(y, "y", IMAGE, sizes)
    check_same_device(("x", x), ("y", y))
    return sizes


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
    _check_pair(x, y)
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
    sizes = _check_pair(x, y)
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins: expected an integer >= 2, got {bins!r}")
    if sigma is None:
        sigma = 0.5 / (bins - 1)
    if sigma <= 0:
        raise ValueError(f"sigma: expected a positive value, got {sigma}")
    if mask is not None:
        check_tensor(mask, "mask", ("B", "M", "H", "W"), sizes, floating=False)
        if mask.shape[1] not in (1, x.shape[1]):
            raise ValueError(f"mask: expected shape (B, 1, H, W) or (B, C, H, W), got {tuple(mask.shape)}")
        check_same_device(("x", x), ("mask", mask))
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


def correlation_ratio(x: torch.Tensor, y: torch.Tensor, bins: int = 32,
                      mask: Optional[torch.Tensor] = None) -> float:
    """Correlation ratio eta^2(y | x): the share of y's variance that x's intensities explain.

    ``1 - E[Var(y | bin(x))] / Var(y)`` over the (masked) pixels, with x cut into ``bins`` equal
    bins of [0, 1] (Roche, Malandain, Pennec & Ayache 1998). 1 when y is a function of x (any
    function, monotonic or not), about 0 when y does not depend on x. Not symmetric. All channels
    pool (channel c of x with channel c of y).

    Args:
        x: (B, C, H, W) intensities in [0, 1] (clamped).
        y: (B, C, H, W).
        bins: number of bins of x (>= 2).
        mask: optional (B, 1, H, W) or (B, C, H, W) bool / {0, 1}: the pixels to use.

    Returns:
        eta^2 in [0, 1], a Python float.

    Raises:
        ValueError: bad shapes or bins, no pixel in the mask, or a constant y (its variance is 0:
            nothing to explain).
    """
    sizes = _check_pair(x, y)
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins: expected an integer >= 2, got {bins!r}")
    with torch.no_grad(), no_autocast(x.device):
        x, y = as_compute(x, y)
        if mask is None:
            keep = torch.ones_like(x, dtype=torch.bool)
        else:
            check_tensor(mask, "mask", ("B", "M", "H", "W"), sizes, floating=False)
            if mask.shape[1] not in (1, x.shape[1]):
                raise ValueError(f"mask: expected shape (B, 1, H, W) or (B, C, H, W), got {tuple(mask.shape)}")
            keep = mask.to(x.device).bool().expand_as(x)
        xs, ys = x[keep].double(), y[keep].double()
        if xs.numel() == 0:
            raise ValueError("correlation_ratio: the mask selects no pixel")
        total = ys.var(unbiased=False)
        if not float(total) > 0:
            raise ValueError("correlation_ratio: y is constant (zero variance), eta is undefined")
        idx = (xs.clamp(0.0, 1.0) * bins).long().clamp_max(bins - 1)
        count = torch.bincount(idx, minlength=bins).double()
        s1 = torch.bincount(idx, ys, minlength=bins)
        s2 = torch.bincount(idx, ys * ys, minlength=bins)
        used = count > 0
        within = (s2[used] - s1[used] ** 2 / count[used]).sum() / xs.numel()
        return float((1.0 - within / total).clamp(0.0, 1.0))


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
    _check_pair(x, y)
    check_min_size(x, "x", 3, 3, "central differences")
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
    check_tensor(image, "image", IMAGE)
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
    sizes = _check_pair(x, y)
    if mask is not None:
        check_tensor(mask, "mask", ("B", 1, "H", "W"), sizes, floating=False)
        check_same_device(("x", x), ("mask", mask))
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


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) luminance (0.299 R + 0.587 G + 0.114 B); (B, 1, H, W) unchanged."""
    check_tensor(x, "image", IMAGE)
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"image: expected 1 or 3 channels, got {x.shape[1]}")
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


class Similarity(nn.Module):
    """Dissimilarity between the fixed image and the warped moving image (lower = better).

    ``mse``; ``ncc`` (-:func:`local_ncc`, mono-modal or linearly related intensities); ``mi``
    (-:func:`mutual_information` on luminance, multi-modal); ``ngf`` (-:func:`ngf`, multi-modal,
    edge based); ``mind`` (-:func:`mind_ssc`, multi-modal, local self-similarity); ``feature`` (L1
    between per-pixel normalised features of an encoder -- meaningful across modalities only with
    an encoder trained to be modality-invariant).

    Args:
        name: one of :data:`SIMILARITIES`.
        ncc_window: window of the local NCC.
        mi_bins: histogram bins of the mutual information.
        feature_encoder: module with ``encode(image (B,3,H,W)) -> list of features`` (e.g.
            :class:`fmdepth.networks.FeatureNet`); required for ``feature``. Its weights are frozen.
        feature_levels: how many of the finest encoder levels to compare.
        mi_samples: if > 0 and the image has more pixels, MI is estimated on this many random
            pixels, re-drawn at every call (stochastic optimisation, as in Mattes MI).
        mind_radius, mind_dilation: patch radius and neighbour distance of MIND-SSC (pixels of
            the level it is evaluated at).

    Shape: forward(fixed (B, C, H, W), warped (B, C, H, W), valid (B, 1, H, W) bool or None) -> scalar.
    """

    def __init__(self, name: str = "mi", ncc_window: int = 9, mi_bins: int = 32,
                 feature_encoder: Optional[nn.Module] = None, feature_levels: int = 2,
                 mi_samples: int = 0, mind_radius: int = 1, mind_dilation: int = 2) -> None:
        super().__init__()
        if name not in SIMILARITIES:
            raise ValueError(f"similarity: unknown '{name}'; expected one of {', '.join(SIMILARITIES)}")
        self.name, self.ncc_window, self.mi_bins, self.feature_levels = name, ncc_window, mi_bins, feature_levels
        self.mi_samples = int(mi_samples)
        self.mind_radius, self.mind_dilation = int(mind_radius), int(mind_dilation)
        self.encoder = None
        if name == "feature":
            if feature_encoder is None:
                raise ValueError("feature_encoder: the 'feature' similarity needs an encoder with "
                                 "encode(image) -> features (e.g. fmdepth.networks.FeatureNet)")
            for p in feature_encoder.parameters():
                p.requires_grad_(False)
            self.encoder = feature_encoder.eval()

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        if fixed.shape != warped.shape:
            raise ValueError(f"fixed {tuple(fixed.shape)} and warped {tuple(warped.shape)} differ")
        if valid is not None:
            m = valid.to(fixed.dtype)
            fixed_m, warped_m = fixed * m, warped * m
        else:
            m, fixed_m, warped_m = None, fixed, warped
        if self.name == "mse":
            diff = (fixed - warped) ** 2
            if m is None:
                return diff.mean()
            return (diff * m).sum() / (m.sum() * fixed.shape[1]).clamp_min(1.0)
        if self.name == "ncc":
            return -local_ncc(fixed_m, warped_m, window=self.ncc_window)
        if self.name == "mi":
            fg, wg = to_gray(fixed), to_gray(warped)
            n = fg.shape[-2] * fg.shape[-1]
            if self.mi_samples and n > self.mi_samples:
                # stochastic pixel sampling (as in Mattes MI): a fresh random subset every call
                idx = torch.randint(0, n, (self.mi_samples,), device=fg.device)
                fg = fg.flatten(2)[..., idx].unsqueeze(2)  # (B, 1, 1, S)
                wg = wg.flatten(2)[..., idx].unsqueeze(2)
                valid = None if valid is None else valid.flatten(2)[..., idx].unsqueeze(2)
            return -mutual_information(fg, wg, bins=self.mi_bins, mask=valid)
        if self.name == "ngf":
            return -ngf(fixed_m, warped_m)
        if self.name == "mind":
            return -mind_ssc(fixed, warped, radius=self.mind_radius, dilation=self.mind_dilation, mask=valid)
        # feature-metric
        f3 = fixed_m.expand(-1, 3, -1, -1) if fixed.shape[1] == 1 else fixed_m
        w3 = warped_m.expand(-1, 3, -1, -1) if warped.shape[1] == 1 else warped_m
        feats_f = self.encoder.encode(f3)[: self.feature_levels]
        feats_w = self.encoder.encode(w3)[: self.feature_levels]
        total = fixed.new_zeros(())
        for a, b in zip(feats_f, feats_w):
            total = total + (F.normalize(a, dim=1) - F.normalize(b, dim=1)).abs().sum(1).mean()
        return total / len(feats_f)

    def train(self, mode: bool = True):  # the frozen encoder stays in eval mode
        super().train(mode)
        if self.encoder is not None:
            self.encoder.eval()
        return self
