"""Loss terms of the semantic aligner (:class:`fmdepth.models.semantic.SemanticSystem`).

* :func:`laplace_nll`: ``|e|/sigma + log sigma``, the flow term (uncertainty-weighted) and the
  joint landmark term;
* :func:`coarse_flow_error`: end-point error of a coarse-to-fine level against the true flow
  averaged over each cell (deep supervision);
* :func:`concentration_loss`: spatial variance of each landmark heatmap (peaked heatmaps);
* :func:`separation_loss`: hinge ``max(0, margin - |l_i - l_j|)`` over landmark pairs.

Landmark distances are in units of ``scale`` (the system passes ``max(H, W)``), so weights do
not depend on the image size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
