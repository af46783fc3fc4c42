"""The semantic aligner: a shared ResNet trunk, a coarse-to-fine alignment network (flow +
uncertainty) and a landmark detector, run on an image pair (A, B).

* Shared features: :class:`fmdepth.networks.ResnetEncoder` levels 0, 1 and 2 (strides 2, 4, 8)
  of both images.
* Alignment, coarse to fine: the local correlation volume of the two stride-8 feature maps
  (cosine similarity for every displacement within ``corr_radius`` cells) gives a coarse flow
  prior (its soft-argmax over displacements, learnable temperature); the volume plus A's
  features -> a residual coarse flow, a log-uncertainty and per-cell weights of a global affine
  fit (weighted least squares, :func:`fit_affine_flow`) of that flow, on which a last stride-8
  residual is regressed (``affine_prior``). Then, PWC-style (:class:`RefinementLevel`), at
  stride 4 (and 2, down to ``finest_stride``): B's features warped by the upsampled flow, their
  local correlation with A's (``refine_radius`` cells), its soft-argmax + a regressed residual.
  Upsampled to full resolution, the result is a dense field on A's pixel grid, in pixels,
  pointing into B (``flow_warp(image_b, flow)`` brings B onto A) and a per-pixel scale
  ``sigma`` (pixels).
* Landmarks: K heatmaps at stride 4 on the shared features, turned into landmarks by
  :func:`soft_argmax` (expected position under the spatial softmax).
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from fmdepth.geometry import flow_warp
from fmdepth.geometry.points import carry_points

from .resnet import ResnetEncoder


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


class RefinementLevel(nn.Module):
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
            self.refine.append(RefinementLevel(4, c4, 64, refine_radius, 64))
        if finest_stride <= 2:
            self.refine.append(RefinementLevel(2, c2, 64, refine_radius, 32))
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
