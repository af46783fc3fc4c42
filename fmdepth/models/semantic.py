"""The semantic alignment + landmark system: :class:`~fmdepth.networks.SemanticAligner` and its
losses composed into one objective (no file I/O), and its PCK evaluation.

Loss terms (``weights`` keys; the maths is in :mod:`fmdepth.losses.semantic`):

* ``flow``: Laplace negative log-likelihood ``|e|/sigma + log sigma`` of the flow error on valid
  pixels, when the pair's true flow is known (synthetic pairs);
* ``coarse_flow``: end-point error of every level's coarse flow against the true flow averaged
  over each cell (synthetic pairs; deep supervision of the coarse-to-fine levels);
* ``photometric``: L1 between A and B warped by the predicted flow (real pairs, no ground truth);
* ``equivariance``: landmarks of A carried by the *true* warp land on the landmarks of B;
* ``joint``: landmarks of A carried by the *predicted* field land on those of B, weighted by the
  predicted uncertainty at the landmark (Laplace NLL again) -- the term that couples the two tasks;
* ``concentration``: spatial variance of each heatmap (peaked heatmaps);
* ``separation``: hinge ``max(0, margin - |l_i - l_j|)`` over landmark pairs (distinct landmarks).

Distances in the landmark losses are in units of ``max(H, W)`` so weights do not depend on the
image size. Evaluation (:func:`evaluate_pck`): PCK@alpha -- the fraction of keypoints of A whose
predicted match in B lies within ``alpha * max(H, W)`` pixels of the true one.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from fmdepth.core.system import StepOutput
from fmdepth.data.semantic import SemanticBatch
from fmdepth.geometry import flow_warp
from fmdepth.geometry.points import carry_points, sample_at
from fmdepth.losses.semantic import coarse_flow_error, concentration_loss, laplace_nll, separation_loss
from fmdepth.metrics.pck import pck
from fmdepth.networks.semantic import SemanticAligner

LOSS_WEIGHTS = {"flow": 1.0, "coarse_flow": 0.5, "photometric": 0.0, "equivariance": 1.0, "joint": 0.1,
                "concentration": 0.1, "separation": 1.0}


def mean_epe(flow: torch.Tensor, true_flow: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean end-point error (pixels) of ``flow`` against ``true_flow`` (both (B, 2, H, W)) over
    the pixels where ``valid`` (B, 1, H, W) is set; a scalar tensor."""
    v = valid.float()
    return ((flow - true_flow).norm(dim=1, keepdim=True) * v).sum() / v.sum().clamp_min(1)


class SemanticSystem(nn.Module):
    """The trainable system (:class:`fmdepth.core.system.System`) around a :class:`SemanticAligner`.

    Args:
        aligner: the network.
        weights: loss weights overriding :data:`LOSS_WEIGHTS` (a term with weight 0 is skipped).
        separation_margin: margin of the separation hinge, in units of ``max(H, W)``.

    ``training_step`` takes a :class:`~fmdepth.data.semantic.SemanticBatch`; the flow, coarse
    flow and equivariance terms need its true ``flow`` (synthetic pairs).
    """

    def __init__(self, aligner: SemanticAligner, weights: Optional[Dict[str, float]] = None,
                 separation_margin: float = 0.1) -> None:
        super().__init__()
        unknown = set(weights or {}) - set(LOSS_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {sorted(LOSS_WEIGHTS)}")
        self.aligner = aligner
        self.weights = {**LOSS_WEIGHTS, **(weights or {})}
        self.separation_margin = separation_margin

    def trainable_models(self) -> Dict[str, nn.Module]:
        return {"semantic": self.aligner}

    def parameter_groups(self) -> List[dict]:
        return [{"params": [p for p in self.aligner.parameters() if p.requires_grad]}]

    def losses(self, batch: SemanticBatch, out: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Unweighted loss terms (name -> scalar tensor) of the aligner's output ``out`` on ``batch``."""
        a, b = batch.image_a, batch.image_b
        H, W = a.shape[-2:]
        scale = float(max(H, W))
        flow, sigma = out["flow"], out["sigma"]
        la, lb = out["landmarks_a"], out["landmarks_b"]
        terms: Dict[str, torch.Tensor] = {}
        w = self.weights
        known = batch.flow is not None
        if known and w["flow"] > 0:
            valid = batch.valid.float()
            err = (flow - batch.flow).norm(dim=1, keepdim=True)  # (B, 1, H, W) pixels
            terms["flow"] = (laplace_nll(err, sigma) * valid).sum() / valid.sum().clamp_min(1.0)
        if known and w["coarse_flow"] > 0:
            terms["coarse_flow"] = sum(coarse_flow_error(f, batch.flow, batch.valid)
                                       for f in out["coarse_flows"]) / len(out["coarse_flows"])
        if w["photometric"] > 0:
            warped, inside = flow_warp(b, flow)
            m = inside.float()
            terms["photometric"] = ((warped - a).abs().mean(1, keepdim=True) * m).sum() / m.sum().clamp_min(1.0)
        if known and w["equivariance"] > 0:
            target = carry_points(la, batch.flow)
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

    def training_step(self, batch: SemanticBatch, step: int, want_images: bool = False) -> StepOutput:
        out = self.aligner(batch.image_a, batch.image_b)
        terms = self.losses(batch, out)
        loss = sum(self.weights[k] * v for k, v in terms.items())
        scalars = {k: float(v.detach()) for k, v in terms.items()}
        if batch.flow is not None:
            scalars["epe"] = float(mean_epe(out["flow"], batch.flow, batch.valid).detach())
        images = {}
        if want_images:
            with torch.no_grad():
                warped, _ = flow_warp(batch.image_b[:1], out["flow"][:1])
                sig = out["sigma"][0]
                images = {"image_a": batch.image_a[0].clamp(0, 1), "image_b": batch.image_b[0].clamp(0, 1),
                          "b_warped_to_a": warped[0].clamp(0, 1), "sigma": (sig / sig.max()).clamp(0, 1)}
        return StepOutput(loss=loss, scalars=scalars, images=images)


@torch.no_grad()
def evaluate_pck(aligner: SemanticAligner, loader, device, alphas: Sequence[float] = (0.05, 0.1)
                 ) -> Dict[str, float]:
    """PCK@alpha (alpha * max(H, W)) of keypoints carried by the predicted field, + mean EPE.

    Args:
        aligner: the network (evaluated in eval mode, its mode restored afterwards).
        loader: yields :class:`~fmdepth.data.semantic.SemanticBatch` (keypoints (B, N, 2)).
        device: where the aligner runs.
        alphas: PCK thresholds.

    Returns:
        ``{"pck@<alpha>": fraction}`` per alpha, plus ``"epe"`` (pixels, the mean of the per-batch
        means) when the batches carry a true flow.
    """
    was_training = aligner.training
    aligner.eval()
    preds, targets, masks, epes = [], [], [], []
    size = None
    for batch in loader:
        a, b = batch.image_a.to(device), batch.image_b.to(device)
        size = tuple(a.shape[-2:])
        out = aligner(a, b)
        preds.append(carry_points(batch.keypoints_a.to(device), out["flow"]).cpu())
        targets.append(batch.keypoints_b)
        masks.append(batch.keypoints_valid)
        if batch.flow is not None:
            epes.append(float(mean_epe(out["flow"], batch.flow.to(device), batch.valid.to(device))))
    aligner.train(was_training)
    pred, target, mask = torch.cat(preds), torch.cat(targets), torch.cat(masks)
    res = {f"pck@{a:g}": pck(pred, target, a, size, mask) for a in alphas}
    if epes:
        res["epe"] = float(np.mean(epes))
    return res
