"""Joint semantic alignment + landmark detection, trained self-supervised on known warps.

Model (:class:`SemanticAligner`):

* a shared feature extractor (ResNet trunk, :class:`fmdepth.networks.ResnetEncoder`, levels 0,
  1 and 2: strides 2, 4 and 8) run on both images;
* an alignment network, coarse to fine: the local correlation volume of the two stride-8
  feature maps (cosine similarity for every displacement within ``corr_radius`` cells) gives a
  coarse flow prior (its soft-argmax over displacements, learnable temperature); the volume plus
  A's features -> a residual coarse flow, a log-uncertainty and per-cell weights of a global
  affine fit (weighted least squares, :func:`fit_affine_flow`) of that flow, on which a last
  stride-8 residual is regressed (``affine_prior``). Then, PWC-style, at stride 4 (and 2, down to
  ``finest_stride``): B's features warped by the upsampled flow, their local correlation with A's
  (``refine_radius`` cells), its soft-argmax + a regressed residual. Upsampled to full
  resolution, the result is a dense field on A's pixel grid, in pixels, pointing into B
  (``flow_warp(image_b, flow)`` brings B onto A) and a per-pixel scale ``sigma`` (pixels);
* a landmark detector: K heatmaps at stride 4 on the shared features, turned into landmarks by a
  soft-argmax (expected position under the spatial softmax).

Losses (pure functions below, combined by :class:`SemanticSystem`):

* ``flow_nll``: Laplace negative log-likelihood ``|e|/sigma + log sigma`` of the flow error on
  valid pixels, when the pair's true flow is known (synthetic pairs);
* ``coarse_flow``: end-point error of every level's coarse flow against the true flow averaged
  over each cell (synthetic pairs; deep supervision of the coarse-to-fine levels);
* ``photometric``: L1 between A and B warped by the predicted flow (real pairs, no ground truth);
* ``equivariance``: landmarks of A carried by the *true* warp land on the landmarks of B;
* ``joint``: landmarks of A carried by the *predicted* field land on those of B, weighted by the
  predicted uncertainty at the landmark (Laplace NLL again) -- the term that couples the two tasks;
* ``concentration``: spatial variance of each heatmap (peaked heatmaps);
* ``separation``: hinge ``max(0, margin - |l_i - l_j|)`` over landmark pairs (distinct landmarks).

Distances in the landmark losses are in units of ``max(H, W)`` so weights do not depend on the
image size. Evaluation: PCK@alpha -- the fraction of keypoints of A whose predicted match in B
lies within ``alpha * max(H, W)`` pixels of the true one.

Data (:class:`WarpedPairDataset`): real images shipped with scikit-image (no downloads), randomly
cropped, then warped by a random affine map plus a smooth deformation (a coarse random
displacement grid, bicubically upsampled) with a photometric change; each pair is a pure function
of (seed, index). :class:`ImagePairDataset` reads real pairs (with optional keypoints) from disk.
"""
from __future__ import annotations

import math
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

# skimage.data images shipped with the package (no download needed)
SKIMAGE_TRAIN_IMAGES = ("astronaut", "chelsea", "coffee", "immunohistochemistry", "hubble_deep_field",
                        "camera", "coins", "moon", "clock", "brick", "gravel", "grass", "colorwheel")
SKIMAGE_VAL_IMAGES = ("rocket", "cell", "page", "text", "retina")  # not "cat": the same picture as "chelsea"


# ------------------------------------------------------------------------------ pure functions
def soft_argmax(logits: torch.Tensor, stride: int = 1, temperature: float = 1.0
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Expected position under the spatial softmax of each heatmap.

    Args:
        logits: (B, K, h, w) heatmap logits on a grid of ``stride`` image pixels per cell.
        stride: image pixels per heatmap cell; cell ``i`` has its centre at pixel
            ``(i + 0.5) * stride - 0.5`` (pixel centres at integers).
        temperature: softmax temperature.

    Returns:
        landmarks (B, K, 2) (x, y) image pixels, probs (B, K, h, w) (each map sums to 1).

    Example:
        >>> logits = torch.full((1, 1, 4, 5), -1e4); logits[0, 0, 2, 3] = 0
        >>> soft_argmax(logits)[0]
        tensor([[[3., 2.]]])
    """
    if logits.dim() != 4:
        raise ValueError(f"logits: expected shape (B, K, h, w), got {tuple(logits.shape)}")
    B, K, h, w = logits.shape
    probs = torch.softmax(logits.reshape(B, K, h * w) / temperature, dim=-1).view(B, K, h, w)
    xs = (torch.arange(w, device=logits.device, dtype=probs.dtype) + 0.5) * stride - 0.5
    ys = (torch.arange(h, device=logits.device, dtype=probs.dtype) + 0.5) * stride - 0.5
    x = (probs.sum(2) * xs).sum(-1)  # (B, K)
    y = (probs.sum(3) * ys).sum(-1)
    return torch.stack([x, y], -1), probs


def concentration_loss(probs: torch.Tensor, landmarks: torch.Tensor, stride: int = 1,
                       scale: float = 1.0) -> torch.Tensor:
    """Mean spatial variance ``E[(x-mx)^2 + (y-my)^2]`` of the heatmaps, in units of ``scale``.

    Args:
        probs: (B, K, h, w) normalised heatmaps; landmarks: (B, K, 2) their means (x, y) pixels.
        stride: image pixels per heatmap cell; scale: length unit (e.g. ``max(H, W)``).
    """
    if probs.dim() != 4 or landmarks.shape != (*probs.shape[:2], 2):
        raise ValueError(f"probs (B, K, h, w) and landmarks (B, K, 2) expected, got "
                         f"{tuple(probs.shape)} and {tuple(landmarks.shape)}")
    h, w = probs.shape[-2:]
    xs = (torch.arange(w, device=probs.device, dtype=probs.dtype) + 0.5) * stride - 0.5
    ys = (torch.arange(h, device=probs.device, dtype=probs.dtype) + 0.5) * stride - 0.5
    dx2 = (xs.view(1, 1, 1, w) - landmarks[..., 0, None, None]) ** 2
    dy2 = (ys.view(1, 1, h, 1) - landmarks[..., 1, None, None]) ** 2
    var = (probs * (dx2 + dy2)).sum((-2, -1))  # (B, K)
    return var.mean() / (scale * scale)


def separation_loss(landmarks: torch.Tensor, margin: float, scale: float = 1.0) -> torch.Tensor:
    """Hinge ``max(0, margin - |l_i - l_j| / scale)`` averaged over landmark pairs i < j and batch.

    Args:
        landmarks: (B, K, 2); margin: in units of ``scale``. K == 1 gives 0.
    """
    if landmarks.dim() != 3 or landmarks.shape[-1] != 2:
        raise ValueError(f"landmarks: expected shape (B, K, 2), got {tuple(landmarks.shape)}")
    K = landmarks.shape[1]
    if K < 2:
        return landmarks.new_zeros(())
    diff = landmarks[:, :, None] - landmarks[:, None]  # (B, K, K, 2)
    dist = torch.sqrt((diff ** 2).sum(-1) + 1e-12) / scale
    i, j = torch.triu_indices(K, K, offset=1, device=landmarks.device)
    return F.relu(margin - dist[:, i, j]).mean()


def laplace_nll(error: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Elementwise Laplace negative log-likelihood ``|error| / sigma + log sigma`` (sigma > 0)."""
    return error.abs() / sigma + torch.log(sigma)


def coarse_flow_error(flow: torch.Tensor, true_flow: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean end-point error (pixels) of a coarse flow (B, 2, h, w) against the full-resolution true
    flow (B, 2, H, W) averaged over each cell (exact at the cell centre for an affine field), on the
    cells entirely valid (``valid`` (B, 1, H, W) averaged to 1)."""
    if flow.dim() != 4 or flow.shape[1] != 2 or true_flow.shape[:2] != flow.shape[:2]:
        raise ValueError(f"flow (B, 2, h, w) and true_flow (B, 2, H, W) expected, got "
                         f"{tuple(flow.shape)} and {tuple(true_flow.shape)}")
    size = flow.shape[-2:]
    target = F.adaptive_avg_pool2d(true_flow, size)
    m = (F.adaptive_avg_pool2d(valid.float(), size) > 0.999).float()
    return ((flow - target).norm(dim=1, keepdim=True) * m).sum() / m.sum().clamp_min(1.0)


def sample_at(field: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample ``field`` (B, C, H, W) at (x, y) pixels ``points`` (B, N, 2) -> (B, N, C)."""
    from fmdepth.geometry import sample

    vals, _ = sample(field, points[:, None], mode="bilinear", padding_mode="border")  # (B, C, 1, N)
    return vals[:, :, 0].transpose(1, 2)


def carry_points(points: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Move (x, y) points of A (B, N, 2) by the flow (B, 2, H, W) sampled there: ``p + flow(p)``."""
    return points + sample_at(flow, points)


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


def local_correlation(feat_a: torch.Tensor, feat_b: torch.Tensor, radius: int) -> torch.Tensor:
    """Cosine similarity of A's features with B's at every displacement within ``radius`` cells.

    Args:
        feat_a, feat_b: (B, C, h, w).

    Returns:
        (B, (2r+1)**2, h, w); channel ``(dy + r) * (2r+1) + (dx + r)`` compares A at p with B at
        p + (dx, dy) (zero outside B).
    """
    if feat_a.shape != feat_b.shape or feat_a.dim() != 4:
        raise ValueError(f"feat_a and feat_b must have the same (B, C, h, w) shape, got "
                         f"{tuple(feat_a.shape)} and {tuple(feat_b.shape)}")
    B, C, h, w = feat_a.shape
    a = F.normalize(feat_a, dim=1)
    b = F.normalize(feat_b, dim=1)
    k = 2 * radius + 1
    patches = F.unfold(b, kernel_size=k, padding=radius)  # (B, C*k*k, h*w)
    patches = patches.view(B, C, k * k, h * w)
    return (a.view(B, C, 1, h * w) * patches).sum(1).view(B, k * k, h, w)


# -------------------------------------------------------------------------------------- model
def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.1, inplace=True))


def _displacements(radius: int) -> torch.Tensor:
    """(D, 2) (dx, dy) cell offsets in the channel order of :func:`local_correlation`."""
    r = float(radius)
    dy, dx = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
    return torch.stack([dx.flatten(), dy.flatten()], 1)


def correlation_prior(corr: torch.Tensor, displacements: torch.Tensor, temperature: torch.Tensor
                      ) -> torch.Tensor:
    """Soft-argmax of a correlation volume over its displacements -> (B, 2, h, w) cells.

    Args:
        corr: (B, D, h, w) from :func:`local_correlation`; displacements: (D, 2) (dx, dy) cells;
        temperature: scalar tensor (> 0) of the softmax over D.
    """
    attn = torch.softmax(corr / temperature, dim=1)  # (B, D, h, w)
    return torch.einsum("bdhw,dc->bchw", attn, displacements.to(attn.dtype))


def fit_affine_flow(flow: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """Weighted least-squares affine map fitted to a coarse flow, returned as a flow on the same grid.

    Cell ``(i, j)`` of the (h, w) grid has its centre at pixel ``((j + .5) s - .5, (i + .5) s - .5)``;
    the fit minimises ``sum_p weight(p) |M [p; 1] - (p + flow(p))|^2`` over 2x3 matrices M.

    Args:
        flow: (B, 2, h, w) pixels; weight: (B, 1, h, w) >= 0 (normalised inside); stride: s.

    Returns:
        (B, 2, h, w) pixels: ``M [p; 1] - p``.
    """
    if flow.dim() != 4 or flow.shape[1] != 2 or weight.shape != (flow.shape[0], 1, *flow.shape[2:]):
        raise ValueError(f"flow (B, 2, h, w) and weight (B, 1, h, w) expected, got {tuple(flow.shape)} "
                         f"and {tuple(weight.shape)}")
    B, _, h, w = flow.shape
    dt = flow.dtype
    ys, xs = torch.meshgrid((torch.arange(h, device=flow.device, dtype=dt) + 0.5) * stride - 0.5,
                            (torch.arange(w, device=flow.device, dtype=dt) + 0.5) * stride - 0.5, indexing="ij")
    c = torch.tensor([(w * stride - 1) / 2.0, (h * stride - 1) / 2.0], device=flow.device, dtype=dt)
    norm = float(max(h, w) * stride) / 2.0  # centred, ~unit coordinates: a well-conditioned system
    pts = (torch.stack([xs.flatten(), ys.flatten()], 1) - c) / norm  # (N, 2)
    P = torch.cat([pts, torch.ones_like(pts[:, :1])], 1)  # (N, 3)
    Q = pts + flow.flatten(2).transpose(1, 2) / norm  # (B, N, 2)
    wgt = weight.flatten(2).transpose(1, 2)  # (B, N, 1)
    wgt = wgt / wgt.sum(1, keepdim=True).clamp_min(1e-12)
    PtW = (P * wgt).transpose(1, 2)  # (B, 3, N)
    eye = torch.eye(3, device=flow.device, dtype=dt) * 1e-6
    M = torch.linalg.solve(PtW @ P + eye, PtW @ Q)  # (B, 3, 2)
    return ((P @ M - pts) * norm).transpose(1, 2).reshape(B, 2, h, w)


class _Refinement(nn.Module):
    """One coarse-to-fine step (PWC-style) at a finer stride: B's features warped by the upsampled
    flow, local correlation with A's, soft-argmax prior of it + a residual flow and log-sigma
    regressed from the correlation, A's features and the coarser level's context."""

    def __init__(self, stride: int, feat_ch: int, ctx_ch: int, radius: int, width: int) -> None:
        super().__init__()
        self.stride, self.radius = stride, radius
        d = (2 * radius + 1) ** 2
        self.reduce = nn.Conv2d(feat_ch, 32, 1)
        self.align = nn.Sequential(_conv(d + 32 + ctx_ch + 3, width), _conv(width, width))
        self.head = nn.Conv2d(width, 3, 3, padding=1)  # residual flow (cells) + log-sigma
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("displacements", _displacements(radius), persistent=False)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(0.05)))

    def forward(self, fa: torch.Tensor, fb: torch.Tensor, flow: torch.Tensor, log_sigma: torch.Tensor,
                ctx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """fa, fb (B, C, h, w) at this stride; flow (B, 2, h', w') pixels, log_sigma (B, 1, h', w'),
        ctx (B, c, h', w') from the coarser level -> flow, log_sigma, context at (h, w)."""
        from fmdepth.geometry import flow_warp

        up = lambda t: F.interpolate(t, size=fa.shape[-2:], mode="bilinear", align_corners=False)
        flow, log_sigma, ctx = up(flow), up(log_sigma), up(ctx)
        s = float(self.stride)
        fb_warped, _ = flow_warp(fb, flow / s)  # B's features brought onto A's grid (zeros outside)
        corr = local_correlation(fa, fb_warped, self.radius)  # (B, D, h, w)
        x = self.align(torch.cat([corr, self.reduce(fa), ctx, flow / s, log_sigma], 1))
        out = self.head(x)
        prior = correlation_prior(corr, self.displacements, self.log_temperature.exp())
        return flow + (prior + out[:, :2]) * s, log_sigma + out[:, 2:], x


class SemanticAligner(nn.Module):
    """Shared trunk + alignment network (flow, uncertainty) + landmark detector.

    The alignment network is coarse-to-fine: a stride-8 estimate from the correlation volume of
    the two stride-8 feature maps (soft-argmax prior + regressed residual); with ``affine_prior``,
    a weighted least-squares affine fit of it (weights predicted per cell) plus a regressed
    residual; then one refinement per finer stride down to ``finest_stride`` (4, then 2): B's
    features at that stride are warped by the upsampled flow, correlated locally
    (``refine_radius`` cells) with A's, and a residual flow (soft-argmax prior + regression) and
    log-sigma are added.

    Args:
        num_landmarks: K heatmaps.
        trunk_layers: ResNet depth of the shared feature extractor (18/34/50/...).
        pretrained: trunk weights: ``"none"``, ``"imagenet"`` or a ResNet state_dict path.
        corr_radius: displacement radius of the stride-8 correlation volume, in stride-8 cells.
        min_sigma: floor of the uncertainty (pixels).
        refine_radius: displacement radius of the refinement correlations, in cells of their stride.
        finest_stride: 8 (no refinement), 4 or 2: the last stride the flow is refined at.
        affine_prior: fit a global affine map to the stride-8 flow and regress the residual on it.

    Shapes:
        forward(image_a (B, 3, H, W), image_b (B, 3, H, W)) in [0, 1], H and W multiples of 8 ->
        dict with ``flow`` (B, 2, H, W) pixels (A grid -> B), ``sigma`` (B, 1, H, W) pixels,
        ``landmarks_a``/``landmarks_b`` (B, K, 2) (x, y) pixels, ``probs_a``/``probs_b``
        (B, K, H/4, W/4), ``coarse_flows``: the flow (pixels) after each level, coarsest first,
        (B, 2, H/s, W/s) for s = 8 (twice with ``affine_prior``: before and after the affine
        step), 4, ... down to ``finest_stride``.
    """

    landmark_stride = 4

    def __init__(self, num_landmarks: int = 10, trunk_layers: int = 18, pretrained: str = "none",
                 corr_radius: int = 3, min_sigma: float = 0.1, refine_radius: int = 2,
                 finest_stride: int = 4, affine_prior: bool = True) -> None:
        super().__init__()
        from fmdepth.networks.resnet import ResnetEncoder

        if num_landmarks < 1 or corr_radius < 1 or min_sigma <= 0 or refine_radius < 1:
            raise ValueError(f"need num_landmarks >= 1, corr_radius >= 1, min_sigma > 0, refine_radius >= 1, "
                             f"got {num_landmarks}, {corr_radius}, {min_sigma}, {refine_radius}")
        if finest_stride not in (2, 4, 8):
            raise ValueError(f"finest_stride must be 2, 4 or 8, got {finest_stride}")
        self.num_landmarks = num_landmarks
        self.trunk_layers = trunk_layers
        self.corr_radius = corr_radius
        self.min_sigma = min_sigma
        self.refine_radius = refine_radius
        self.finest_stride = finest_stride
        self.affine_prior = bool(affine_prior)
        self.trunk = ResnetEncoder(trunk_layers, pretrained=pretrained)
        # only strides 2, 4 and 8 are used: drop the deeper stages' weights
        self.trunk.encoder.layer3, self.trunk.encoder.layer4 = nn.Identity(), nn.Identity()
        c2, c4, c8 = self.trunk.num_ch_enc[0], self.trunk.num_ch_enc[1], self.trunk.num_ch_enc[2]
        d = (2 * corr_radius + 1) ** 2
        self.reduce8 = nn.Conv2d(c8, 64, 1)
        self.align8 = nn.Sequential(_conv(d + 64, 128), _conv(128, 96), _conv(96, 64))
        # flow (cells) + log-sigma (+ the logit of each cell's weight in the affine fit)
        self.head8 = nn.Conv2d(64, 4 if self.affine_prior else 3, 3, padding=1)
        heads = [self.head8]
        if self.affine_prior:  # residual over the weighted affine fit of the stride-8 flow
            self.mix8 = _conv(64 + 4, 64)
            self.head8_affine = nn.Conv2d(64, 2, 3, padding=1)
            heads.append(self.head8_affine)
        for head in heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        # coarse flow prior: soft-argmax of the correlation volume over the displacements (the
        # heads learn residuals on top of it); learnable temperature
        self.register_buffer("displacements", _displacements(corr_radius), persistent=False)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(0.05)))
        self.refine = nn.ModuleList()
        if finest_stride <= 4:
            self.refine.append(_Refinement(4, c4, 64, refine_radius, 64))
        if finest_stride <= 2:
            self.refine.append(_Refinement(2, c2, 64, refine_radius, 32))
        self.landmark = nn.Sequential(_conv(c4 + 64, 64), _conv(64, 64),
                                      nn.Conv2d(64, num_landmarks, 1))

    def config(self) -> dict:
        return {"num_landmarks": self.num_landmarks, "trunk_layers": self.trunk_layers,
                "corr_radius": self.corr_radius, "min_sigma": self.min_sigma,
                "refine_radius": self.refine_radius, "finest_stride": self.finest_stride,
                "affine_prior": self.affine_prior}

    def features(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.trunk(image, max_level=2)
        return f[0], f[1], f[2]  # strides 2, 4, 8

    def detect(self, f4: torch.Tensor, f8: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        up = F.interpolate(self.reduce8(f8), size=f4.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.landmark(torch.cat([f4, up], 1))
        return soft_argmax(logits, stride=self.landmark_stride)

    def forward(self, image_a: torch.Tensor, image_b: torch.Tensor) -> Dict[str, torch.Tensor]:
        if image_a.dim() != 4 or image_a.shape[1] != 3 or image_a.shape != image_b.shape:
            raise ValueError(f"image_a and image_b must both be (B, 3, H, W), got "
                             f"{tuple(image_a.shape)} and {tuple(image_b.shape)}")
        H, W = image_a.shape[-2:]
        if H % 8 or W % 8:
            raise ValueError(f"image size must be a multiple of 8, got {H}x{W}")
        B = image_a.shape[0]
        f2, f4, f8 = self.features(torch.cat([image_a, image_b]))
        f8a, f8b = f8[:B], f8[B:]
        corr = local_correlation(f8a, f8b, self.corr_radius)  # (B, D, H/8, W/8)
        ctx = self.align8(torch.cat([corr, self.reduce8(f8a)], 1))
        out8 = self.head8(ctx)
        prior = correlation_prior(corr, self.displacements, self.log_temperature.exp())  # cells
        flow, log_sigma = (prior + out8[:, :2]) * 8.0, out8[:, 2:3]  # pixels, (B, 1, H/8, W/8)
        coarse = [flow]
        if self.affine_prior:
            weight = torch.softmax(out8[:, 3:].flatten(2), -1).view_as(log_sigma)
            affine = fit_affine_flow(flow, weight, 8)
            ctx = self.mix8(torch.cat([ctx, affine / 8.0, (flow - affine) / 8.0], 1))
            flow = affine + self.head8_affine(ctx) * 8.0
            coarse.append(flow)
        for level in self.refine:
            f = f4 if level.stride == 4 else f2
            flow, log_sigma, ctx = level(f[:B], f[B:], flow, log_sigma, ctx)
            coarse.append(flow)
        full = lambda t: F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)
        flow = full(flow)
        sigma = F.softplus(full(log_sigma) + math.log(math.e - 1.0)) + self.min_sigma  # 1 + min_sigma at init
        landmarks, probs = self.detect(f4, f8)
        return {"flow": flow, "sigma": sigma, "landmarks_a": landmarks[:B], "landmarks_b": landmarks[B:],
                "probs_a": probs[:B], "probs_b": probs[B:], "coarse_flows": coarse}

    @torch.no_grad()
    def match_points(self, image_a: torch.Tensor, image_b: torch.Tensor,
                     points_a: torch.Tensor) -> torch.Tensor:
        """(x, y) points of A (B, N, 2) -> their predicted positions in B (B, N, 2)."""
        return carry_points(points_a, self(image_a, image_b)["flow"])


# ------------------------------------------------------------------------------------- system
DEFAULT_WEIGHTS = {"flow": 1.0, "coarse_flow": 0.5, "photometric": 0.0, "equivariance": 1.0, "joint": 0.1,
                   "concentration": 0.1, "separation": 1.0}


class SemanticSystem(nn.Module):
    """The trainable system (engine protocol) around a :class:`SemanticAligner`.

    A batch is a dict: ``image_a``, ``image_b`` (B, 3, H, W); optionally ``flow`` (B, 2, H, W)
    and ``valid`` (B, 1, H, W) (the true field of a synthetic pair), ``keypoints_a``,
    ``keypoints_b`` (B, N, 2), ``keypoints_valid`` (B, N) (evaluation).
    """

    def __init__(self, aligner: SemanticAligner, weights: Optional[Dict[str, float]] = None,
                 separation_margin: float = 0.1) -> None:
        super().__init__()
        unknown = set(weights or {}) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}")
        self.aligner = aligner
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.separation_margin = separation_margin

    def trainable_models(self) -> Dict[str, nn.Module]:
        return {"semantic": self.aligner}

    def parameter_groups(self) -> List[dict]:
        return [{"params": [p for p in self.aligner.parameters() if p.requires_grad]}]

    def losses(self, batch: Dict[str, torch.Tensor], out: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        from fmdepth.geometry import flow_warp

        a, b = batch["image_a"], batch["image_b"]
        H, W = a.shape[-2:]
        scale = float(max(H, W))
        flow, sigma = out["flow"], out["sigma"]
        la, lb = out["landmarks_a"], out["landmarks_b"]
        terms: Dict[str, torch.Tensor] = {}
        w = self.weights
        if "flow" in batch and w["flow"] > 0:
            valid = batch["valid"].float()
            err = (flow - batch["flow"]).norm(dim=1, keepdim=True)  # (B, 1, H, W) pixels
            terms["flow"] = (laplace_nll(err, sigma) * valid).sum() / valid.sum().clamp_min(1.0)
        if "flow" in batch and w["coarse_flow"] > 0:
            terms["coarse_flow"] = sum(coarse_flow_error(f, batch["flow"], batch["valid"])
                                       for f in out["coarse_flows"]) / len(out["coarse_flows"])
        if w["photometric"] > 0:
            warped, inside = flow_warp(b, flow)
            m = inside.float()
            terms["photometric"] = ((warped - a).abs().mean(1, keepdim=True) * m).sum() / m.sum().clamp_min(1.0)
        if "flow" in batch and w["equivariance"] > 0:
            target = carry_points(la, batch["flow"])
            terms["equivariance"] = ((target - lb).norm(dim=-1) / scale).mean()
        if w["joint"] > 0:
            carried = carry_points(la, flow)
            sig = sample_at(sigma, la)[..., 0] / scale  # (B, K)
            terms["joint"] = laplace_nll((carried - lb).norm(dim=-1) / scale, sig).mean()
        if w["concentration"] > 0:
            s = SemanticAligner.landmark_stride
            terms["concentration"] = 0.5 * (concentration_loss(out["probs_a"], la, s, scale)
                                            + concentration_loss(out["probs_b"], lb, s, scale))
        if w["separation"] > 0:
            terms["separation"] = 0.5 * (separation_loss(la, self.separation_margin, scale)
                                         + separation_loss(lb, self.separation_margin, scale))
        return terms

    def training_step(self, batch, step: int, want_images: bool = False):
        from fmdepth.core.system import StepOutput
        from fmdepth.geometry import flow_warp

        out = self.aligner(batch["image_a"], batch["image_b"])
        terms = self.losses(batch, out)
        loss = sum(self.weights[k] * v for k, v in terms.items())
        scalars = {k: float(v.detach()) for k, v in terms.items()}
        if "flow" in batch:
            valid = batch["valid"].float()
            epe = ((out["flow"] - batch["flow"]).norm(dim=1, keepdim=True) * valid).sum() / valid.sum().clamp_min(1)
            scalars["epe"] = float(epe.detach())
        images = {}
        if want_images:
            with torch.no_grad():
                warped, _ = flow_warp(batch["image_b"][:1], out["flow"][:1])
                sig = out["sigma"][0]
                images = {"image_a": batch["image_a"][0].clamp(0, 1), "image_b": batch["image_b"][0].clamp(0, 1),
                          "b_warped_to_a": warped[0].clamp(0, 1), "sigma": (sig / sig.max()).clamp(0, 1)}
        return StepOutput(loss=loss, scalars=scalars, images=images)


# --------------------------------------------------------------------------------------- data
def load_skimage_images(names: Sequence[str], max_side: int = 256) -> List[torch.Tensor]:
    """scikit-image's shipped sample images -> list of (3, h, w) float tensors in [0, 1]
    (grayscale replicated, alpha dropped, longer side at most ``max_side``)."""
    import skimage.data

    out = []
    for name in names:
        fn = getattr(skimage.data, name, None)
        if fn is None or not callable(fn):
            raise ValueError(f"'{name}' is not a scikit-image sample image (skimage.data.{name})")
        try:
            arr = np.asarray(fn())
        except Exception as exc:  # images that need a download (pooch) are not usable offline
            raise ValueError(f"skimage.data.{name} cannot be loaded offline ({type(exc).__name__}); "
                             f"use one shipped with scikit-image, e.g. {', '.join(SKIMAGE_TRAIN_IMAGES[:4])}") from exc
        t = torch.from_numpy(arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0))
        t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
        t = t[:3] if t.shape[0] >= 3 else t.expand(3, -1, -1)
        s = max_side / max(t.shape[-2:])
        if s < 1:
            size = (max(1, round(t.shape[1] * s)), max(1, round(t.shape[2] * s)))
            t = F.interpolate(t[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        out.append(t.contiguous())
    return out


def random_warp_flow(height: int, width: int, rng: np.random.Generator, max_rotation: float = 20.0,
                     max_scale: float = 1.2, max_translation: float = 0.1, max_shear: float = 0.1,
                     deform: float = 2.0, deform_grid: int = 4) -> torch.Tensor:
    """A random smooth field (2, H, W) pixels: affine about the centre + bicubic random deformation.

    ``p + flow(p)`` is an affine map (rotation up to ``max_rotation`` degrees, scale in
    ``[1/max_scale, max_scale]``, shear up to ``max_shear``, shift up to ``max_translation`` of the
    size) plus a displacement drawn N(0, deform^2) on a ``deform_grid`` x ``deform_grid`` grid.
    """
    ang = math.radians(rng.uniform(-max_rotation, max_rotation))
    s = math.exp(rng.uniform(-math.log(max_scale), math.log(max_scale)))
    sh = rng.uniform(-max_shear, max_shear)
    tx, ty = rng.uniform(-max_translation, max_translation, 2) * np.array([width, height])
    R = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]]) * s
    M = R @ np.array([[1.0, sh], [0.0, 1.0]])
    c = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    t = c - M @ c + np.array([tx, ty])
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                            torch.arange(width, dtype=torch.float32), indexing="ij")
    P = torch.stack([xs, ys], 0).view(2, -1)  # (2, H*W)
    Mt = torch.from_numpy(M).float()
    mapped = Mt @ P + torch.from_numpy(t).float().view(2, 1)
    flow = (mapped - P).view(2, height, width)
    if deform > 0:
        coarse = torch.from_numpy(rng.normal(0.0, deform, (1, 2, deform_grid, deform_grid))).float()
        flow = flow + F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)[0]
    return flow


class WarpedPairDataset(Dataset):
    """Pairs (A, B) of the same real image related by a known random warp, made on the fly.

    B is a random crop of a scikit-image sample image resized to (height, width); A is B warped by
    a random smooth field ``flow`` (affine + deformation): ``A(p) = B(p + flow(p))``, followed by
    a random photometric change (per-channel gain/offset and gamma). Each pair depends only on
    (seed, index).

    Returns dicts: ``image_a``, ``image_b`` (3, H, W); ``flow`` (2, H, W) pixels (A grid -> B);
    ``valid`` (1, H, W) bool (``p + flow(p)`` inside B); ``keypoints_a`` (N, 2) random (x, y)
    pixels of A, ``keypoints_b`` (N, 2) their true positions in B, ``keypoints_valid`` (N,) bool.
    """

    def __init__(self, images: Sequence[str] = SKIMAGE_TRAIN_IMAGES, height: int = 64, width: int = 64,
                 length: int = 2000, seed: int = 0, num_keypoints: int = 20, max_rotation: float = 20.0,
                 max_scale: float = 1.2, max_translation: float = 0.1, deform: float = 2.0,
                 photometric: float = 0.2) -> None:
        if height % 8 or width % 8 or height < 16 or width < 16:
            raise ValueError(f"height and width must be multiples of 8 and >= 16, got {height}x{width}")
        if length < 1 or num_keypoints < 1:
            raise ValueError(f"length and num_keypoints must be >= 1, got {length}, {num_keypoints}")
        if not images:
            raise ValueError("images: need at least one scikit-image sample image name")
        self.names = list(images)
        self.images = load_skimage_images(self.names, max_side=4 * max(height, width))
        self.height, self.width, self.length, self.seed = height, width, length, seed
        self.num_keypoints = num_keypoints
        self.warp_args = dict(max_rotation=max_rotation, max_scale=max_scale,
                              max_translation=max_translation, deform=deform)
        self.photometric = photometric

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        from fmdepth.geometry import flow_warp

        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} pairs")
        rng = np.random.default_rng([self.seed, index])
        H, W = self.height, self.width
        src = self.images[int(rng.integers(len(self.images)))]
        h, w = src.shape[-2:]
        side = min(h, w)
        crop = int(rng.uniform(0.35, 0.8) * side)
        crop_h, crop_w = max(16, int(crop * H / max(H, W))), max(16, int(crop * W / max(H, W)))
        y0, x0 = int(rng.integers(0, h - crop_h + 1)), int(rng.integers(0, w - crop_w + 1))
        b = F.interpolate(src[None, :, y0:y0 + crop_h, x0:x0 + crop_w], size=(H, W), mode="bilinear",
                          align_corners=False, antialias=True)[0].clamp(0, 1)
        flow = random_warp_flow(H, W, rng, **self.warp_args)
        a, valid = flow_warp(b[None], flow[None], padding_mode="border")
        a, valid = a[0], valid[0]
        if self.photometric > 0:
            p = self.photometric
            gain = torch.from_numpy(rng.uniform(1 - p, 1 + p, 3)).float().view(3, 1, 1)
            offset = torch.from_numpy(rng.uniform(-p / 2, p / 2, 3)).float().view(3, 1, 1)
            gamma = float(math.exp(rng.uniform(-p, p)))
            a = (a.clamp(0, 1) ** gamma * gain + offset).clamp(0, 1)
        n = self.num_keypoints
        cand = torch.from_numpy(rng.uniform(0, 1, (4 * n, 2))).float() * torch.tensor([W - 1.0, H - 1.0])
        cand_b = cand + _bilinear_points(flow, cand)  # true positions in B
        ok = ((cand_b >= 0) & (cand_b <= torch.tensor([W - 1.0, H - 1.0]))).all(1)
        order = torch.argsort((~ok).int(), stable=True)[:n]  # candidates inside B first
        kp_a, kp_b, ok = cand[order], cand_b[order], ok[order]
        return {"image_a": a.contiguous(), "image_b": b.contiguous(), "flow": flow, "valid": valid,
                "keypoints_a": kp_a, "keypoints_b": kp_b, "keypoints_valid": ok}


def _bilinear_points(field: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(C, H, W) field at (N, 2) (x, y) pixels -> (N, C)."""
    return sample_at(field[None], points[None])[0]


class ImagePairDataset(Dataset):
    """Real pairs from a folder: ``<root>/pairs.txt`` lines ``A_path B_path [kp_file]``, paths
    relative to ``root``; an optional keypoint file has one ``xa ya xb yb`` line per keypoint.

    Returns dicts like :class:`WarpedPairDataset` without ``flow``/``valid`` (no ground-truth
    field); images resized to (height, width) and keypoints scaled alike (pixel centres).
    """

    def __init__(self, root: str, height: int = 64, width: int = 64, num_keypoints: int = 20) -> None:
        listing = os.path.join(root, "pairs.txt")
        if not os.path.isfile(listing):
            raise FileNotFoundError(f"{listing} not found (expected lines 'A_path B_path [keypoints.txt]')")
        self.root, self.height, self.width, self.num_keypoints = root, height, width, num_keypoints
        self.entries = []
        with open(listing, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                parts = line.split()
                if not parts or parts[0].startswith("#"):
                    continue
                if len(parts) not in (2, 3):
                    raise ValueError(f"{listing}:{lineno}: expected 'A_path B_path [keypoints.txt]', got {line.strip()!r}")
                self.entries.append(parts)
        if not self.entries:
            raise ValueError(f"{listing}: no pairs listed")

    def __len__(self) -> int:
        return len(self.entries)

    def _load(self, rel: str) -> Tuple[torch.Tensor, Tuple[int, int]]:
        from .nbb import load_image

        img = load_image(os.path.join(self.root, rel), rel)
        size = tuple(img.shape[-2:])
        img = F.interpolate(img, size=(self.height, self.width), mode="bilinear", align_corners=False,
                            antialias=True)[0]
        return img.clamp(0, 1), size

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        entry = self.entries[index]
        a, (ha, wa) = self._load(entry[0])
        b, (hb, wb) = self._load(entry[1])
        n = self.num_keypoints
        kp_a, kp_b, ok = torch.zeros(n, 2), torch.zeros(n, 2), torch.zeros(n, dtype=torch.bool)
        if len(entry) == 3:
            path = os.path.join(self.root, entry[2])
            pts = np.loadtxt(path, ndmin=2, dtype=np.float64)
            if pts.shape[1] != 4:
                raise ValueError(f"{path}: expected lines 'xa ya xb yb', got {pts.shape[1]} columns")
            pts = torch.from_numpy(pts[:n]).float()
            m = pts.shape[0]
            sc = lambda p, w, h: torch.stack([(p[:, 0] + 0.5) * self.width / w - 0.5,
                                              (p[:, 1] + 0.5) * self.height / h - 0.5], 1)
            kp_a[:m], kp_b[:m], ok[:m] = sc(pts[:, :2], wa, ha), sc(pts[:, 2:], wb, hb), True
        return {"image_a": a, "image_b": b, "keypoints_a": kp_a, "keypoints_b": kp_b, "keypoints_valid": ok}


# --------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_pck(aligner: SemanticAligner, loader, device, alphas: Sequence[float] = (0.05, 0.1)
                 ) -> Dict[str, float]:
    """PCK@alpha (alpha * max(H, W)) of keypoints carried by the predicted field, + mean EPE."""
    was_training = aligner.training
    aligner.eval()
    preds, targets, masks, epes = [], [], [], []
    size = None
    for batch in loader:
        a, b = batch["image_a"].to(device), batch["image_b"].to(device)
        size = tuple(a.shape[-2:])
        out = aligner(a, b)
        preds.append(carry_points(batch["keypoints_a"].to(device), out["flow"]).cpu())
        targets.append(batch["keypoints_b"])
        masks.append(batch["keypoints_valid"])
        if "flow" in batch:
            v = batch["valid"].to(device).float()
            e = (out["flow"] - batch["flow"].to(device)).norm(dim=1, keepdim=True)
            epes.append(float((e * v).sum() / v.sum().clamp_min(1)))
    aligner.train(was_training)
    pred, target, mask = torch.cat(preds), torch.cat(targets), torch.cat(masks)
    res = {f"pck@{a:g}": pck(pred, target, a, size, mask) for a in alphas}
    if epes:
        res["epe"] = float(np.mean(epes))
    return res


def make_validate(alphas: Sequence[float] = (0.05, 0.1)):
    """``validate(system, loader, device)`` for the engine: PCK@alpha and EPE."""

    def validate(system, loader, device) -> Dict[str, float]:
        return evaluate_pck(system.aligner, loader, device, alphas)

    return validate


# ---------------------------------------------------------------------- bounded-time training
def train_for(seconds: float, aligner: Optional[SemanticAligner] = None, dataset: Optional[Dataset] = None,
              batch_size: int = 16, lr: float = 1e-3, device="cpu", weights: Optional[Dict[str, float]] = None,
              seed: int = 0, max_steps: int = 0, progress: bool = True, final_lr_ratio: float = 1.0
              ) -> Tuple[SemanticAligner, Dict[str, list]]:
    """Train a semantic aligner on synthetic warped pairs for at most ``seconds`` (no CLI, no
    run folder; for benches and notebooks). Returns the aligner and the loss history.

    ``final_lr_ratio`` < 1: cosine decay of the learning rate from ``lr`` to ``lr * final_lr_ratio``
    over the budget (the fraction of ``seconds`` elapsed or of ``max_steps`` done, whichever is
    further)."""
    if not 0 < final_lr_ratio <= 1:
        raise ValueError(f"final_lr_ratio must be in (0, 1], got {final_lr_ratio}")
    from tqdm import tqdm

    if seconds <= 0 and max_steps <= 0:
        raise ValueError("give a positive time budget (seconds) or max_steps")
    torch.manual_seed(seed)
    device = torch.device(device)
    aligner = (aligner or SemanticAligner()).to(device)
    dataset = dataset or WarpedPairDataset(seed=seed)
    system = SemanticSystem(aligner, weights).to(device)
    opt = torch.optim.Adam(system.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=gen,
                                         drop_last=True, num_workers=0)
    history: Dict[str, list] = {"loss": [], "epe": [], "lr": []}
    start = time.perf_counter()
    step = 0
    bar = tqdm(desc="semantic", unit="step", disable=not progress)
    aligner.train()
    while True:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            if final_lr_ratio < 1:
                done = max((time.perf_counter() - start) / seconds if seconds > 0 else 0.0,
                           step / max_steps if max_steps else 0.0)
                factor = final_lr_ratio + (1 - final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
                for group in opt.param_groups:
                    group["lr"] = lr * factor
            out = system.training_step(batch, step)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(system.parameters(), 5.0)
            opt.step()
            step += 1
            history["loss"].append(float(out.loss.detach()))
            history["epe"].append(out.scalars.get("epe", float("nan")))
            history["lr"].append(opt.param_groups[0]["lr"])
            bar.update(1)
            bar.set_postfix(loss=f"{history['loss'][-1]:.3g}", epe=f"{history['epe'][-1]:.2f}")
            if (seconds > 0 and time.perf_counter() - start >= seconds) or (max_steps and step >= max_steps):
                bar.close()
                aligner.eval()
                return aligner, history
