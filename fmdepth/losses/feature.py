"""Feature-metric loss and the FeatureNet (auto-encoder) objective of FeatDepth.

* ``feature_metric_loss``: robust L1 between the target's features and the source features warped
  into the target with the predicted depth and pose, per-pixel minimum over sources, averaged over
  the valid (and optionally masked) pixels.
* FeatureNet: ``reconstruction_loss`` (SSIM + L1 per output scale), ``discriminative_loss``
  (``-mean|∇φ| e^{-|∇I|}``, pushes features to have gradients where the image is flat) and
  ``convergent_loss`` (``mean|∇²φ| e^{-|∇²I|}``, keeps the feature landscape smooth so that
  gradient descent converges); ``featurenet_loss`` combines them with the per-level weight 2^-level.

The feature gradients ``|∇φ|`` are averaged over the feature channels (a mean over all elements), so
the loss scale does not depend on the channel count; the image term ``|∇I|`` is averaged over the
colour channels. Derivatives are the forward differences of :mod:`fmdepth.losses.smoothness`.
"""
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from fmdepth.geometry import inverse_warp

from fmdepth.core.checks import as_compute, check_min_size, check_same_device, check_tensor, compute_dtype
from .photometric import photometric_error, robust_l1
from .smoothness import first_order_terms, second_order_terms

__all__ = [
    "feature_metric_loss", "reconstruction_loss", "discriminative_loss", "convergent_loss", "featurenet_loss",
    "FEATURENET_DEFAULT_WEIGHTS", "FeatureMetricLoss", "FeatureNetLoss",
]

FEATURENET_DEFAULT_WEIGHTS = {"reconstruction": 1.0, "discriminative": 1e-3, "convergent": 1e-3}


def feature_metric_loss(feat_tgt: torch.Tensor, feats_src: Sequence[torch.Tensor], depth_tgt: torch.Tensor,
                        src_T_tgt: Sequence[torch.Tensor], K: torch.Tensor, mask: Optional[torch.Tensor] = None,
                        eps: float = 1e-6) -> torch.Tensor:
    """Feature-metric reprojection loss.

    For each source s, ``φ_s→t = inverse_warp(φ_s, depth_tgt, src_T_tgt[s], K)`` and
    ``e_s = mean_c sqrt((φ_t - φ_s→t)^2 + eps) - sqrt(eps)`` (the robust L1, offset so that identical
    features cost exactly 0); pixels a source does not see (outside the image or
    behind the camera) get no error from it. The loss is the per-pixel minimum over the sources that
    see the pixel, averaged over the pixels seen by at least one source and weighted by ``mask``.

    Args:
        feat_tgt: (B, C, h, w) target features.
        feats_src: list of S >= 1 source features, each (B, C, h, w).
        depth_tgt: (B, 1, h, w) target depth at feature resolution (resize the depth first).
        src_T_tgt: list of S poses, each (B, 4, 4), mapping target-frame points into source s.
        K: (B, 3, 3) intrinsics at feature resolution (``fmdepth.geometry.scale_intrinsics``).
        mask: optional (B, 1, h, w) weights in [0, 1] (e.g. the auto-mask), bool allowed.
        eps: robust-L1 regulariser.

    Returns:
        scalar loss (0 when no pixel is valid).
    """
    sizes = check_tensor(feat_tgt, "feat_tgt", ("B", "C", "h", "w"))
    if isinstance(feats_src, torch.Tensor) or not isinstance(feats_src, (list, tuple)) or len(feats_src) == 0:
        raise ValueError("feats_src: expected a non-empty list of (B, C, h, w) tensors")
    if isinstance(src_T_tgt, torch.Tensor) or not isinstance(src_T_tgt, (list, tuple)):
        raise ValueError("src_T_tgt: expected a list of (B, 4, 4) tensors, one per source")
    if len(src_T_tgt) != len(feats_src):
        raise ValueError(f"src_T_tgt: expected {len(feats_src)} poses (one per source feature), got {len(src_T_tgt)}")
    for i, (f, T) in enumerate(zip(feats_src, src_T_tgt)):
        check_tensor(f, f"feats_src[{i}]", ("B", "C", "h", "w"), sizes)
        check_same_device(("feat_tgt", feat_tgt), (f"feats_src[{i}]", f))
        if not isinstance(T, torch.Tensor) or T.shape != (feat_tgt.shape[0], 4, 4):
            got = tuple(T.shape) if isinstance(T, torch.Tensor) else type(T).__name__
            raise ValueError(f"src_T_tgt[{i}]: expected shape ({feat_tgt.shape[0]}, 4, 4), got {got}")
    check_tensor(depth_tgt, "depth_tgt", ("B", 1, "h", "w"), sizes)
    check_same_device(("feat_tgt", feat_tgt), ("depth_tgt", depth_tgt))
    if not isinstance(K, torch.Tensor) or K.shape != (feat_tgt.shape[0], 3, 3):
        got = tuple(K.shape) if isinstance(K, torch.Tensor) else type(K).__name__
        raise ValueError(f"K: expected shape ({feat_tgt.shape[0]}, 3, 3) at feature resolution, got {got}")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dim() != 4 or mask.shape[1] != 1:
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask: expected shape (B, 1, h, w), got {got}")
        check_tensor(mask, "mask", ("B", 1, "h", "w"), sizes, floating=False)
        check_same_device(("feat_tgt", feat_tgt), ("mask", mask))

    dtype = compute_dtype(feat_tgt, *feats_src)
    feat_tgt = feat_tgt.to(dtype)
    big = torch.finfo(dtype).max
    errors, seen = [], []
    for f, T in zip(feats_src, src_T_tgt):
        warped, valid = inverse_warp(f, depth_tgt, T, K)  # (B, C, h, w), (B, 1, h, w)
        valid = valid.bool()
        # robust L1 offset by sqrt(eps) so identical features cost exactly 0 (same gradients)
        err = robust_l1(warped.to(dtype), feat_tgt, eps).mean(dim=1, keepdim=True) - eps ** 0.5  # (B, 1, h, w)
        errors.append(torch.where(valid, err, torch.full_like(err, big)))
        seen.append(valid)
    err_min = torch.cat(errors, dim=1).min(dim=1, keepdim=True).values  # (B, 1, h, w)
    any_seen = torch.cat(seen, dim=1).any(dim=1, keepdim=True)  # (B, 1, h, w)
    weight = any_seen.to(err_min.dtype)
    if mask is not None:
        weight = weight * mask.to(err_min.dtype)
    err_min = torch.where(any_seen, err_min, torch.zeros_like(err_min))
    return (err_min * weight).sum() / weight.sum().clamp_min(1.0 if mask is None else 1e-7)


def _resize_like(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Image at (height, width): area averaging when shrinking, bilinear when enlarging."""
    if image.shape[-2:] == (height, width):
        return image
    if height <= image.shape[-2] and width <= image.shape[-1]:
        return F.interpolate(image, size=(height, width), mode="area")
    return F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)


ImageArg = Union[torch.Tensor, Sequence[torch.Tensor]]


def reconstruction_loss(recon: Sequence[torch.Tensor], image: ImageArg) -> torch.Tensor:
    """FeatureNet reconstruction loss: mean over scales of ``mean photometric_error(recon_s, I_s)``.

    Args:
        recon: list of reconstructions, one per decoder scale, each (B, 3, h_s, w_s).
        image: (B, 3, H, W) input image, resized (area) to each scale's resolution; or a list of
            per-scale images (index s is used for scale s, resized if its size differs).

    Returns:
        scalar loss.
    """
    if isinstance(recon, torch.Tensor) or not isinstance(recon, (list, tuple)) or len(recon) == 0:
        raise ValueError("recon: expected a non-empty list of (B, 3, h, w) reconstructions, one per scale")
    per_scale = isinstance(image, (list, tuple))
    if per_scale and len(image) < len(recon):
        raise ValueError(f"image: expected at least {len(recon)} per-scale images, got {len(image)}")
    total = None
    for s, r in enumerate(recon):
        sizes = check_tensor(r, f"recon[{s}]", ("B", 3, "h", "w"))
        img = image[s] if per_scale else image
        check_tensor(img, f"image[{s}]" if per_scale else "image", ("B", 3, "H", "W"), sizes)
        check_same_device((f"recon[{s}]", r), ("image", img))
        term = photometric_error(r, _resize_like(img.to(r.dtype), r.shape[-2], r.shape[-1])).mean()
        total = term if total is None else total + term
    return total / len(recon)


def _feature_and_image(feature: torch.Tensor, image: torch.Tensor, min_size: int):
    sizes = check_tensor(feature, "feature", ("B", "C", "h", "w"))
    check_tensor(image, "image", ("B", 3, "H", "W"), sizes)
    check_same_device(("feature", feature), ("image", image))
    check_min_size(feature, "feature", min_size, min_size, f"order-{min_size - 1} differences")
    feature, image = as_compute(feature, image)
    return feature, _resize_like(image, feature.shape[-2], feature.shape[-1])


def discriminative_loss(feature: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``-(mean|∂x φ| e^{-|∂x I|} + mean|∂y φ| e^{-|∂y I|})`` (negative: rewards feature gradients).

    Args:
        feature: (B, C, h, w) encoder features φ (the mean also runs over channels).
        image: (B, 3, H, W) image, area-resized to (h, w).

    Returns:
        scalar (<= 0).
    """
    feature, image = _feature_and_image(feature, image, 2)
    return -first_order_terms(feature, image)


def convergent_loss(feature: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``Σ_{k∈{xx,yy,xy}} mean|∂_k φ| e^{-|∂_k I|}`` (second-order smoothness of the features).

    Args:
        feature: (B, C, h, w) encoder features φ.
        image: (B, 3, H, W) image, area-resized to (h, w).

    Returns:
        scalar (>= 0).
    """
    feature, image = _feature_and_image(feature, image, 3)
    return second_order_terms(feature, image)


def _resolve_weights(weights) -> Dict[str, float]:
    out = dict(FEATURENET_DEFAULT_WEIGHTS)
    if weights is None:
        return out
    if isinstance(weights, Mapping):
        unknown = set(weights) - set(out)
        if unknown:
            raise ValueError(f"weights: unknown key(s) {sorted(unknown)}; expected {sorted(out)}")
        out.update({k: float(v) for k, v in weights.items()})
        return out
    if isinstance(weights, (list, tuple)) and len(weights) == 3:
        return dict(zip(("reconstruction", "discriminative", "convergent"), map(float, weights)))
    raise ValueError("weights: expected a mapping with keys reconstruction/discriminative/convergent "
                     f"or a 3-sequence, got {weights!r}")


def featurenet_loss(features: Sequence[torch.Tensor], reconstructions: Sequence[torch.Tensor], image: ImageArg,
                    weights: Optional[Union[Mapping[str, float], Sequence[float]]] = None
                    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """FeatureNet objective:
    ``w_r L_rec + Σ_l 2^-l (w_d L_dis(φ_l) + w_c L_cvt(φ_l))``.

    Args:
        features: list of encoder features, level l first-to-last, each (B, C_l, h_l, w_l).
        reconstructions: list of decoder reconstructions per scale, each (B, 3, h_s, w_s).
        image: (B, 3, H, W) input image in [0, 1] (or a list of per-scale images, see
            :func:`reconstruction_loss`; the discriminative/convergent terms use the first).
        weights: ``{"reconstruction": 1.0, "discriminative": 1e-3, "convergent": 1e-3}`` (defaults;
            a partial mapping overrides only its keys) or a 3-sequence in that order.

    Returns:
        ``(total, parts)``: the scalar loss and a dict of detached, unweighted scalars
        ``reconstruction``, ``discriminative``, ``convergent`` (the latter two already summed over
        levels with the 2^-level factor).
    """
    w = _resolve_weights(weights)
    if isinstance(features, torch.Tensor) or not isinstance(features, (list, tuple)) or len(features) == 0:
        raise ValueError("features: expected a non-empty list of (B, C, h, w) encoder features")
    full = image[0] if isinstance(image, (list, tuple)) else image
    rec = reconstruction_loss(reconstructions, image)
    dis = rec.new_zeros(())
    cvt = rec.new_zeros(())
    for level, feat in enumerate(features):
        scale = 0.5 ** level
        if w["discriminative"] != 0.0:
            dis = dis + scale * discriminative_loss(feat, full)
        if w["convergent"] != 0.0:
            cvt = cvt + scale * convergent_loss(feat, full)
    total = w["reconstruction"] * rec + w["discriminative"] * dis + w["convergent"] * cvt
    parts = {"reconstruction": rec.detach(), "discriminative": dis.detach(), "convergent": cvt.detach()}
    return total, parts


class FeatureMetricLoss(nn.Module):
    """Module wrapper of :func:`feature_metric_loss`."""

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, feat_tgt, feats_src, depth_tgt, src_T_tgt, K, mask=None) -> torch.Tensor:
        return feature_metric_loss(feat_tgt, feats_src, depth_tgt, src_T_tgt, K, mask=mask, eps=self.eps)


class FeatureNetLoss(nn.Module):
    """Module wrapper of :func:`featurenet_loss` with the weights fixed at construction."""

    def __init__(self, weights: Optional[Union[Mapping[str, float], Sequence[float]]] = None):
        super().__init__()
        self.weights = _resolve_weights(weights)

    def forward(self, features, reconstructions, image):
        return featurenet_loss(features, reconstructions, image, self.weights)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.weights.items())
