"""Registration on the shared warping core: per-pair optimisation and learned systems.

Conventions (as everywhere in fmdepth): images (B, C, H, W) float in [0, 1]; a flow is
(B, 2, H, W) in pixels on the **fixed** grid, ``flow[:, 0]`` = dx, and the registered image is
``warped(p) = moving(p + flow(p))`` (:func:`fmdepth.geometry.flow_warp`). Affines are pixel
affines mapping fixed pixels to moving pixels (:func:`fmdepth.geometry.affine_warp`).

Two ways to register:

* :func:`register_pair` optimises one transform for one pair (affine, dense flow, stationary
  velocity field, or NeMAR-style translation + flow) over a multi-resolution pyramid.
* :class:`AffineRegistration`, :class:`DeformableRegistration`, :class:`TranslationRegistration`
  are trainable systems (``fmdepth train --config configs/registration_*.yaml``) following
  :class:`fmdepth.core.system.System`; their :meth:`register` is fast inference.

Similarities (:class:`Similarity`, lower = better): ``mse``; ``ncc`` (local normalised cross
correlation, mono-modal or linearly related intensities); ``mi`` (Parzen mutual information,
multi-modal); ``ngf`` (normalised gradient fields, multi-modal, edge based); ``feature``
(L1 between per-pixel normalised features of a FeatureNet encoder -- meaningful across
modalities only with an encoder trained to be modality-invariant; with no weights given the
encoder is randomly initialised, which behaves like a bank of random local filters).
All warps go through :mod:`fmdepth.geometry`, all similarities come from :mod:`fmdepth.losses`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from fmdepth.geometry import (affine_warp, flow_warp, integrate_velocity, normalized_affine_to_pixel,
                              pixel_affine_to_normalized)
from fmdepth.networks.registration import AffineRegressor, PatchDiscriminator, ResnetTranslator, UNetFlow

METHODS = ("affine", "deformable", "translation")
SIMILARITIES = ("mse", "ncc", "mi", "ngf", "mind", "feature")


# --------------------------------------------------------------------------------- helpers
def to_gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) luminance; (B, 1, H, W) unchanged."""
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"image: expected 1 or 3 channels, got {x.shape[1]}")
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def resize_image(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Anti-aliased bilinear resize of (B, C, H, W) images to ``size`` (pixel-centre aligned)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    down = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True, antialias=down)


def resize_flow(flow: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Resample a (B, 2, h, w) pixel flow to ``size``, rescaling its values.

    With ``align_corners=True`` pixel coordinates map as ``u' = u (W' - 1) / (w - 1)``.
    """
    h, w = flow.shape[-2:]
    H, W = size
    if (h, w) == (H, W):
        return flow
    out = F.interpolate(flow, size=(H, W), mode="bilinear", align_corners=True)
    sx = (W - 1) / max(w - 1, 1)
    sy = (H - 1) / max(h - 1, 1)
    return torch.cat([out[:, :1] * sx, out[:, 1:] * sy], dim=1)


def affine_to_flow(affine: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 2, 3) or (B, 3, 3) pixel affine (fixed -> moving) -> (B, 2, H, W) flow ``A p - p``."""
    if affine.dim() != 3 or affine.shape[-1] != 3 or affine.shape[-2] not in (2, 3):
        raise ValueError(f"affine: expected (B, 2, 3) or (B, 3, 3), got {tuple(affine.shape)}")
    ys, xs = torch.meshgrid(torch.arange(height, dtype=affine.dtype, device=affine.device),
                            torch.arange(width, dtype=affine.dtype, device=affine.device), indexing="ij")
    p = torch.stack([xs, ys, torch.ones_like(xs)], 0).view(1, 3, -1)  # (1, 3, HW)
    q = affine[:, :2] @ p  # (B, 2, HW)
    return (q - p[:, :2]).view(-1, 2, height, width)


def compose_affine_flow(affine: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Flow of the map ``p -> A (p + flow(p))`` (deform first, then the affine), (B, 2, H, W).

    ``A``: (B, 2, 3) or (B, 3, 3) pixel affine. Equals ``affine_to_flow(A) + A[:, :2, :2] @ flow``;
    it is diffeomorphic when ``flow`` is and ``A`` is invertible.
    """
    h, w = flow.shape[-2:]
    lin = affine[:, :2, :2]
    return affine_to_flow(affine, h, w) + torch.einsum("bij,bjhw->bihw", lin, flow)


def pyramid_sizes(height: int, width: int, levels: int, min_size: int = 24) -> List[Tuple[int, int]]:
    """Coarse-to-fine sizes, halving per level, never below ``min_size`` on the short side."""
    sizes = [(height, width)]
    for _ in range(levels - 1):
        h, w = sizes[-1]
        if min(h, w) // 2 < min_size:
            break
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes[::-1]


def _check_pair(fixed: torch.Tensor, moving: torch.Tensor) -> None:
    if fixed.dim() != 4 or moving.dim() != 4:
        raise ValueError(f"fixed/moving: expected (B, C, H, W), got {tuple(fixed.shape)} and {tuple(moving.shape)}")
    if fixed.shape[0] != moving.shape[0]:
        raise ValueError(f"fixed/moving: batch sizes differ ({fixed.shape[0]} vs {moving.shape[0]})")
    if fixed.shape[-2:] != moving.shape[-2:]:
        raise ValueError(f"fixed {tuple(fixed.shape[-2:])} and moving {tuple(moving.shape[-2:])} image sizes "
                         f"differ: resample the moving image to the fixed size first "
                         f"(`fmdepth register` does this and reports it)")


# ------------------------------------------------------------------------------ similarity
class Similarity(nn.Module):
    """Dissimilarity between the fixed image and the warped moving image (lower = better).

    Args:
        name: ``mse`` | ``ncc`` | ``mi`` | ``ngf`` | ``feature``.
        ncc_window: window of the local NCC.
        mi_bins: histogram bins of the mutual information.
        feature_encoder: module with ``encode(image (B,3,H,W)) -> list of features`` (e.g.
            :class:`fmdepth.networks.FeatureNet`); None builds a randomly initialised FeatureNet-18
            for ``feature``. Its weights are frozen.
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
                from fmdepth.networks import FeatureNet

                feature_encoder = FeatureNet(num_layers=18, pretrained="none")
            for p in feature_encoder.parameters():
                p.requires_grad_(False)
            self.encoder = feature_encoder.eval()

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        from fmdepth import losses

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
            return -losses.local_ncc(fixed_m, warped_m, window=self.ncc_window)
        if self.name == "mi":
            fg, wg = to_gray(fixed), to_gray(warped)
            n = fg.shape[-2] * fg.shape[-1]
            if self.mi_samples and n > self.mi_samples:
                # stochastic pixel sampling (as in Mattes MI): a fresh random subset every call
                idx = torch.randint(0, n, (self.mi_samples,), device=fg.device)
                fg = fg.flatten(2)[..., idx].unsqueeze(2)  # (B, 1, 1, S)
                wg = wg.flatten(2)[..., idx].unsqueeze(2)
                valid = None if valid is None else valid.flatten(2)[..., idx].unsqueeze(2)
            return -losses.mutual_information(fg, wg, bins=self.mi_bins, mask=valid)
        if self.name == "ngf":
            return -losses.ngf(fixed_m, warped_m)
        if self.name == "mind":
            return -losses.mind_ssc(fixed, warped, radius=self.mind_radius, dilation=self.mind_dilation, mask=valid)
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


# -------------------------------------------------------------------------- per-pair solver
@dataclass
class RegistrationResult:
    """Output of :func:`register_pair` and of the learned systems' ``register``.

    Attributes:
        flow: (1, 2, H, W) pixels on the fixed grid (``warped(p) = moving(p + flow(p))``).
        warped: (1, C, H, W) the moving image (all its channels) warped onto the fixed grid.
        affine: (3, 3) pixel affine fixed -> moving (affine method / affine initialisation) or None.
        translated: (1, 1, H, W) the translator's output T(warped moving) (translation method) or None.
        seconds: wall-clock time of the registration.
        losses: final similarity loss per pyramid level.
        kept: which candidate :func:`register_pair` returned: ``identity``, ``affine`` (the
            affine stage / initial affine) or ``final`` (the optimised transform); None for the
            learned systems.
        scores: per candidate, its loss (lower = better) on the chosen and on the check similarity.
        notes: human-readable sentences on what was kept and why.
    """

    flow: torch.Tensor
    warped: torch.Tensor
    affine: Optional[torch.Tensor] = None
    translated: Optional[torch.Tensor] = None
    seconds: float = 0.0
    losses: List[float] = field(default_factory=list)
    kept: Optional[str] = None
    scores: Dict[str, Dict[str, float]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


DEFAULT_ITERATIONS = {"affine": (150, 100, 60), "deformable": (120, 80, 40), "translation": (200, 150, 100)}


def default_lr(method: str, similarity: str) -> float:
    """Adam learning rate :func:`register_pair` uses when ``lr`` is None.

    Affine: 0.01 (normalised units). Dense fields (control points in pixels): 0.2 px, except NGF
    and MIND (0.5 px: their local-structure signal needs the larger steps to leave the identity's
    basin) and the translation method (0.5 px). Measured with ``bench/registration.py`` (256x256
    pairs, 8 px RMS): MI at 0.5 px is noisy (3.1 px landmark error) where 0.2 px reaches 0.2-0.3 px;
    NGF at 0.2 px stalls on some pairs (1.5 px) where 0.5 px reaches 0.6 px; MIND on the 9 tuning
    cross-modality pairs (``--cross-modality tuning``): 2.08 px mean at 0.2 px, 1.89 at 0.5, 1.86 at 1.0.
    """
    if method == "affine":
        return 0.01
    if method == "translation" or similarity in ("ngf", "mind"):
        return 0.5
    return 0.2


def default_grid_spacing(similarity: str, height: int = 256, width: int = 256) -> int:
    """Control-grid spacing (full-resolution pixels) :func:`solve_pair` uses when ``grid_spacing`` is None.

    MIND: 1/8 of the shorter image side (32 px at 256x256, at least 4); the others: 16 px. MIND on
    the 12 tuning cross-modality pairs (``bench/registration.py --cross-modality tuning --seeds 4``,
    256x256; channel remap / disparity / edges): 16 px 0.76 / 3.10 / 1.62 px mean landmark error,
    32 px 0.52 / 2.77 / 1.25 px, at the same cost. The 16 px of the other similarities was measured
    on the remap benchmark (see README).
    """
    return max(4, min(height, width) // 8) if similarity == "mind" else 16


def _as_batch(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() == 2:
        x = x[None, None]
    elif x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] not in (1, 3):
        raise ValueError(f"{name}: expected (C, H, W) or (1, C, H, W) with C in (1, 3), got {tuple(x.shape)}")
    return x.float()


def _optimise(params, closure, iterations: int, optimizer: str, lr: float, bar) -> float:
    """Run ``iterations`` steps of Adam (cosine-decayed lr) or L-BFGS on ``closure`` -> last loss."""
    if iterations <= 0:
        return float("nan")
    last = [float("nan")]
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=iterations, max_eval=int(iterations * 1.25),
                                history_size=20, line_search_fn="strong_wolfe", tolerance_change=1e-9)

        def lbfgs_closure():
            opt.zero_grad(set_to_none=True)
            loss = closure()
            loss.backward()
            last[0] = float(loss.detach())
            bar.update(1)
            return loss

        opt.step(lbfgs_closure)
        return last[0]
    opt = torch.optim.Adam(params, lr=lr)
    for it in range(iterations):
        for g in opt.param_groups:
            g["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * it / iterations)))
        opt.zero_grad(set_to_none=True)
        loss = closure()
        loss.backward()
        opt.step()
        last[0] = float(loss.detach())
        bar.update(1)
        if it % 10 == 0:
            bar.set_postfix(loss=f"{last[0]:.4f}")
    return last[0]


DEFAULT_SIMILARITY = "mind"  # the per-pair default (see register_pair)
CHECK_SIMILARITY = {"mind": "ngf"}  # the independent check of register_pair; "mind" for every other similarity


def check_similarity_for(similarity: str) -> str:
    """The second similarity :func:`register_pair` scores candidates on: ``ngf`` for ``mind``, else ``mind``."""
    return CHECK_SIMILARITY.get(similarity, "mind")


def _check_images(fixed_g: torch.Tensor, moving_g: torch.Tensor) -> None:
    for name, img in (("fixed", fixed_g), ("moving", moving_g)):
        if not bool(torch.isfinite(img).all()):
            raise ValueError(f"{name} image: has non-finite values (NaN or inf); no similarity is defined")
        if float(img.std()) < 1e-6:
            raise ValueError(f"{name} image: is constant (value {float(img.mean()):.4g}): no similarity is defined "
                             f"for it (nothing to align); give an image with structure")


@torch.no_grad()
def score_flows(fixed: torch.Tensor, moving: torch.Tensor, flows: Dict[str, torch.Tensor],
                similarities: Sequence[str], mi_bins: int = 32, ncc_window: int = 9, mind_radius: int = 1,
                mind_dilation: int = 2, feature_encoder: Optional[nn.Module] = None) -> Dict[str, Dict[str, float]]:
    """Loss (lower = better) of each candidate flow under each similarity, on a common overlap.

    Args:
        fixed: (1, C, H, W) image; moving: (1, C, H, W) image (grey images: luminance is used).
        flows: name -> (1, 2, H, W) flow (``warped(p) = moving(p + flow(p))``).
        similarities: names from :data:`SIMILARITIES` (``mi`` uses every pixel, deterministic).

    Returns:
        ``{flow name: {similarity name: loss}}``. Every candidate is scored on the pixels that all
        candidates map inside the moving image, so the scores compare like with like.
    """
    fg, mg = to_gray(fixed), to_gray(moving)
    warped = {k: flow_warp(mg, f.to(mg)) for k, f in flows.items()}  # name -> (image, valid)
    common = torch.stack([v for _, v in warped.values()]).all(0)  # (1, 1, H, W)
    if int(common.sum()) < 16:
        common = torch.ones_like(common)
    sims = {n: Similarity(n, ncc_window=ncc_window, mi_bins=mi_bins, mind_radius=mind_radius,
                          mind_dilation=mind_dilation, feature_encoder=feature_encoder).to(fg.device)
            for n in similarities}
    return {k: {n: float(sim(fg, w, common)) for n, sim in sims.items()} for k, (w, _) in warped.items()}


def _prefer(scores: Dict[str, Dict[str, float]], current: str, candidate: str, names: Sequence[str]):
    """Is ``candidate`` better than ``current`` on every similarity in ``names``? -> (bool, reason)."""
    worse = [n for n in names if not scores[candidate][n] < scores[current][n]]
    if not worse:
        gains = ", ".join(f"{n} {scores[current][n]:.4f} -> {scores[candidate][n]:.4f}" for n in names)
        return True, f"{candidate} improves on {current} ({gains})"
    why = ", ".join(f"{n} {scores[current][n]:.4f} -> {scores[candidate][n]:.4f}" for n in worse)
    return False, f"{candidate} is not better than {current} ({why}; lower = better)"


def keep_if_better(fixed: torch.Tensor, moving: torch.Tensor, result: RegistrationResult,
                   similarity: str = DEFAULT_SIMILARITY, check_similarity: Optional[str] = None) -> RegistrationResult:
    """Return ``result`` if its flow beats the identity on ``similarity`` and the check, else the identity.

    For results that did not come from :func:`register_pair` (e.g. a learned system's
    ``register``). fixed, moving: (1, C, H, W); ``result.kept``, ``scores`` and ``notes`` are set.
    """
    check = check_similarity or check_similarity_for(similarity)
    _check_images(to_gray(fixed), to_gray(moving))
    flows = {"identity": torch.zeros_like(result.flow), "final": result.flow}
    scores = score_flows(fixed, moving, flows, (similarity, check))
    ok, why = _prefer(scores, "identity", "final", (similarity, check))
    result.scores, result.notes = scores, [why]
    if ok:
        result.kept = "final"
        return result
    with torch.no_grad():
        warped, _ = flow_warp(moving.to(result.flow), flows["identity"])
    result.notes.append(f"returning the identity: the result was not better on both {similarity} and {check}")
    return RegistrationResult(flow=flows["identity"], warped=warped, seconds=result.seconds, kept="identity",
                              scores=scores, notes=result.notes)


def register_pair(fixed, moving, method: str = "deformable", similarity: str = DEFAULT_SIMILARITY, *,
                  init: str = "identity", init_affine=None, keep_best: bool = True,
                  check_similarity: Optional[str] = None, progress: bool = False, device=None,
                  **solver) -> RegistrationResult:
    """Register one pair; never return a transform that scores worse than the identity.

    Runs the optional affine stage (``init="affine"``, or a given ``init_affine``), then the
    method from there, and scores the candidates -- identity, affine, final -- on ``similarity``
    and on an independent ``check_similarity`` (:func:`score_flows`). A candidate replaces the
    one kept so far only if it is better on **both**; an affine stage that is not better than the
    identity is dropped before the method runs (the method then starts from the identity).
    ``result.kept``, ``result.scores`` and ``result.notes`` say which was kept and why.

    The default similarity ``mind`` (MIND-SSC) was chosen on the tuning pairs of
    ``bench/registration.py --cross-modality tuning`` (channel vs remapped channel, photo vs
    disparity, photo vs edge magnitude; 4 pairs each, 256x256): it was the most accurate similarity
    on every kind (mean landmark error 0.52 / 2.77 / 1.25 px against ngf 3.39 / 6.88 / 3.94 and mi
    2.71 / 9.12 / 7.80, from 8.6 / 9.1 / 8.8). The affine stage (``init="affine"``) was better on
    the disparity kind only (2.66 px) and worse on the other two (0.67 / 1.31 px) for ~2.3x the time,
    so the default start is the identity.

    Args:
        fixed, moving, method, similarity: see :func:`solve_pair`.
        init: ``identity`` (default) or ``affine`` (deformable / translation: start from a
            per-pair affine stage with the same similarity, kept only if it beats the identity).
        init_affine: (2, 3) or (3, 3) pixel affine fixed -> moving to start from (e.g. from
            best-buddy matches); checked against the identity like the affine stage.
        keep_best: False returns the final transform unchecked (scores are still reported).
        check_similarity: the second similarity (None: :func:`check_similarity_for`).
        **solver: the optimisation settings of :func:`solve_pair` (levels, iterations, lr, ...).

    Raises:
        ValueError: bad arguments, images of different sizes, or a constant / non-finite image
            (no similarity is defined for it).
    """
    if init not in ("identity", "affine"):
        raise ValueError(f"init: expected 'identity' or 'affine', got {init!r}")
    if method not in METHODS:
        raise ValueError(f"method: unknown '{method}'; expected one of {', '.join(METHODS)}")
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity: unknown '{similarity}'; expected one of {', '.join(SIMILARITIES)}")
    check = check_similarity or check_similarity_for(similarity)
    if check not in SIMILARITIES or check == similarity:
        raise ValueError(f"check_similarity: expected one of {', '.join(SIMILARITIES)} other than "
                         f"'{similarity}', got {check!r}")
    t0 = time.perf_counter()
    fixed_full, moving_full = _as_batch(fixed, "fixed"), _as_batch(moving, "moving")
    _check_pair(fixed_full, moving_full)
    device = torch.device(device) if device is not None else fixed_full.device
    fixed_full, moving_full = fixed_full.to(device), moving_full.to(device)
    _check_images(to_gray(fixed_full), to_gray(moving_full))
    H, W = fixed_full.shape[-2:]
    names = (similarity, check)
    sim_kw = {k: solver[k] for k in ("mi_bins", "ncc_window", "mind_radius", "mind_dilation", "feature_encoder")
              if k in solver}
    zero = torch.zeros(1, 2, H, W, device=device)
    notes: List[str] = []
    flows = {"identity": zero}
    A0 = None
    if init_affine is not None:
        A0 = torch.as_tensor(init_affine, dtype=torch.float32, device=device)
        if A0.shape not in ((2, 3), (3, 3)):
            raise ValueError(f"init_affine: expected (2, 3) or (3, 3), got {tuple(A0.shape)}")
        A0 = _to33(A0)
    elif init == "affine" and method != "affine":
        stage = {k: v for k, v in solver.items() if k in ("levels", "optimizer", "mi_bins", "ncc_window", "mi_samples",
                                                            "feature_encoder", "mind_radius", "mind_dilation", "seed")}
        A0 = solve_pair(fixed_full, moving_full, "affine", similarity, progress=progress, **stage).affine
    if A0 is not None:
        flows["affine"] = affine_to_flow(A0[None], H, W)
        scores = score_flows(fixed_full, moving_full, flows, names, **sim_kw)
        ok, why = _prefer(scores, "identity", "affine", names)
        if not ok and keep_best:
            notes.append(f"initial affine dropped, the method starts from the identity: {why}")
            A0 = None
    res = solve_pair(fixed_full, moving_full, method, similarity, init_affine=None if A0 is None else A0[:2],
                     progress=progress, **solver)
    flows["final"] = res.flow
    scores = score_flows(fixed_full, moving_full, flows, names, **sim_kw)
    kept = "identity"
    order = ["affine", "final"] if A0 is not None else ["final"]
    for cand in order:
        ok, why = _prefer(scores, kept, cand, names)
        notes.append(why)
        if ok or not keep_best:
            kept = cand
    if kept != "final":
        notes.append(f"returning the {kept}: the {method} result was not better on both {similarity} and {check}")
        flow = flows[kept]
        with torch.no_grad():
            warped, _ = flow_warp(moving_full, flow)
        res = RegistrationResult(flow=flow, warped=warped, affine=A0 if kept == "affine" else None,
                                 translated=None, losses=res.losses)
    res.kept, res.scores, res.notes = kept, scores, notes
    res.seconds = time.perf_counter() - t0
    return res


def solve_pair(fixed, moving, method: str = "deformable", similarity: str = DEFAULT_SIMILARITY, *,
               levels: int = 3, iterations: Optional[Sequence[int]] = None, optimizer: str = "adam",
               lr: Optional[float] = None, smoothness: float = 0.5, grid_spacing: Optional[int] = None,
               diffeomorphic: bool = False, integration_steps: int = 7,
               init_affine=None, mi_bins: int = 32, ncc_window: int = 9, mi_samples: int = 8192,
               feature_encoder: Optional[nn.Module] = None, translation_weights: Tuple[float, float] = (1.0, 0.1),
               affine_refine: int = 20, mind_radius: int = 1, mind_dilation: int = 2, progress: bool = False,
               device=None, seed: int = 0) -> RegistrationResult:
    """Optimise one transform for one pair over a multi-resolution pyramid (no candidate check).

    :func:`register_pair` calls this and then checks the result against the identity and the
    affine stage; call it directly only to get the raw optimum.

    Args:
        fixed: (C, H, W) or (1, C, H, W) in [0, 1] (C = 1 or 3; RGB is compared as luminance).
        moving: the same size as ``fixed`` (C may differ; the warped output keeps moving's channels).
        method: ``affine`` (6 parameters), ``deformable`` (dense flow, or a stationary velocity
            field integrated by scaling and squaring when ``diffeomorphic``), ``translation``
            (NeMAR per pair: a small translator T and a flow field R trained so that both T(R(m))
            and R(T(m)) match the fixed image in L1, with bilateral smoothness on the flow).
        similarity: ``mind`` | ``mi`` | ``ngf`` | ``ncc`` | ``mse`` | ``feature`` (affine / deformable).
        levels: pyramid levels (halving; the coarsest short side stays >= 24 px).
        iterations: per level, coarse to fine (a single int applies to every level).
        optimizer: ``adam`` (cosine-decayed learning rate) or ``lbfgs``.
        lr: Adam learning rate (None: :func:`default_lr` -- 0.01 for affine, 0.2 px for dense
            fields, 0.5 px for NGF and MIND fields and the translation method).
        smoothness: weight of :func:`fmdepth.losses.flow_smoothness` (deformable). The default 0.5
            suits smooth deformations (control grid spacing 16 px): on the benchmark pairs it
            halves the landmark error of 0.05 for both MI and NGF.
        grid_spacing: the field is parametrised on a control grid of this spacing in full-resolution
            pixels, bicubically interpolated (free-form deformation); 1 = fully dense; None:
            :func:`default_grid_spacing` (MIND: 1/8 of the shorter side, 32 px at 256; else 16 px).
        init_affine: (2, 3) or (3, 3) pixel affine fixed -> moving to start from (e.g. from
            best-buddy matches), or None (identity).
        affine_refine: affine with Adam: this many L-BFGS evaluations at full resolution after the
            pyramid (skipped for stochastic MI sampling); 0 = off.
        progress: show a tqdm progress bar.

    Returns:
        :class:`RegistrationResult` with the flow on the fixed grid at full resolution.
    """
    from tqdm.auto import tqdm

    from fmdepth import losses

    if method not in METHODS:
        raise ValueError(f"method: unknown '{method}'; expected one of {', '.join(METHODS)}")
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"optimizer: expected 'adam' or 'lbfgs', got {optimizer!r}")
    if grid_spacing is not None and grid_spacing < 1:
        raise ValueError(f"grid_spacing: must be >= 1, got {grid_spacing}")
    t0 = time.perf_counter()
    fixed_full = _as_batch(fixed, "fixed")
    moving_full = _as_batch(moving, "moving")
    _check_pair(fixed_full, moving_full)
    device = torch.device(device) if device is not None else fixed_full.device
    fixed_full, moving_full = fixed_full.to(device), moving_full.to(device)
    fixed_g, moving_g = to_gray(fixed_full), to_gray(moving_full)
    H, W = fixed_full.shape[-2:]
    if grid_spacing is None:
        grid_spacing = default_grid_spacing(similarity, H, W)
    sizes = pyramid_sizes(H, W, levels)
    iters = iterations if iterations is not None else DEFAULT_ITERATIONS[method]
    if isinstance(iters, int):
        iters = [iters] * len(sizes)
    iters = list(iters)
    if len(iters) < len(sizes):  # fewer entries than levels: the given ones apply to the finest levels
        iters = [iters[0]] * (len(sizes) - len(iters)) + iters
    iters = iters[-len(sizes):]
    sim = Similarity(similarity if method != "translation" else "mse", ncc_window=ncc_window, mi_bins=mi_bins,
                     feature_encoder=feature_encoder, mi_samples=mi_samples, mind_radius=mind_radius,
                     mind_dilation=mind_dilation).to(device)
    torch.manual_seed(seed)

    A0 = None
    if init_affine is not None:
        A0 = torch.as_tensor(init_affine, dtype=torch.float32, device=device)
        if A0.shape not in ((2, 3), (3, 3)):
            raise ValueError(f"init_affine: expected (2, 3) or (3, 3), got {tuple(A0.shape)}")
        A0 = A0[None, :2]
    level_losses: List[float] = []
    bar = tqdm(total=sum(iters), desc=f"register {method}/{similarity if method != 'translation' else 'L1'}",
               disable=not progress, leave=False)

    if method == "affine":
        theta0 = (pixel_affine_to_normalized(A0, H, W) if A0 is not None
                  else torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]], device=device))  # resolution-free
        delta = torch.zeros_like(theta0, requires_grad=True)
        for (h, w), n in zip(sizes, iters):
            f_l, m_l = resize_image(fixed_g, (h, w)), resize_image(moving_g, (h, w))

            def closure():
                A = normalized_affine_to_pixel(theta0 + delta, h, w)
                warped, valid = affine_warp(m_l, A)
                return sim(f_l, warped, valid)

            level_losses.append(_optimise([delta], closure, n, optimizer, lr or default_lr(method, similarity), bar))
        stochastic = similarity == "mi" and 0 < mi_samples < H * W
        if affine_refine > 0 and sum(iters) > 0 and optimizer == "adam" and not stochastic:
            # Adam finds the basin robustly; L-BFGS then converges precisely at full resolution
            level_losses.append(_optimise([delta], closure, affine_refine, "lbfgs", 1.0, bar))
        bar.close()
        with torch.no_grad():
            A = normalized_affine_to_pixel(theta0 + delta, H, W)
            flow = affine_to_flow(A, H, W)
            warped, _ = flow_warp(moving_full, flow)
        return RegistrationResult(flow=flow, warped=warped, affine=A[0].detach(), seconds=time.perf_counter() - t0,
                                  losses=level_losses)

    # dense: a control grid of spacing `grid_spacing` full-resolution pixels (values in full-resolution
    # pixels), bicubically interpolated to each level (FFD-like); the same parameters are refined
    # from coarse to fine, so the number of unknowns does not grow with the image.
    translator = None
    if method == "translation":
        translator = ResnetTranslator(fixed_g.shape[1], fixed_g.shape[1], width=16, num_blocks=2).to(device)
    # one control grid per pyramid level, coarse to fine: level l (of L) has spacing
    # grid_spacing * 2**(L-1-l) full-resolution pixels; the field is the sum of all grids so far.
    L = len(sizes)
    ctrls: List[torch.Tensor] = []
    for li in range(L):
        sp = grid_spacing * 2 ** (L - 1 - li) if grid_spacing > 1 else 2 ** (L - 1 - li)
        gh, gw = max(2, math.ceil((H - 1) / sp) + 1), max(2, math.ceil((W - 1) / sp) + 1)
        if grid_spacing == 1 and li == L - 1:
            gh, gw = H, W
        ctrls.append(torch.zeros(1, 2, gh, gw, device=device, requires_grad=True))

    def field_at(h: int, w: int, upto: int) -> torch.Tensor:
        """Velocity / displacement at an (h, w) level from grids 0..upto, in that level's pixels."""
        dense = sum(c if tuple(c.shape[-2:]) == (h, w) else
                    F.interpolate(c, size=(h, w), mode="bicubic", align_corners=True) for c in ctrls[: upto + 1])
        scale = torch.tensor([(w - 1) / max(W - 1, 1), (h - 1) / max(H - 1, 1)], device=device).view(1, 2, 1, 1)
        return dense * scale

    for li, ((h, w), n) in enumerate(zip(sizes, iters)):
        f_l, m_l = resize_image(fixed_g, (h, w)), resize_image(moving_g, (h, w))
        params = [{"params": ctrls[: li + 1]}]
        if translator is not None:
            params.append({"params": list(translator.parameters()), "lr": 2e-3})
        A_l = None
        if A0 is not None:  # the same affine in this level's pixels
            A_l = normalized_affine_to_pixel(pixel_affine_to_normalized(A0, H, W), h, w)

        def to_flow(v, A_l=A_l):
            flow = integrate_velocity(v, steps=integration_steps) if diffeomorphic else v
            return flow if A_l is None else compose_affine_flow(A_l, flow)

        def closure(f_l=f_l, m_l=m_l, h=h, w=w, li=li, to_flow=to_flow):
            flow = to_flow(field_at(h, w, li))
            if translator is None:
                warped, valid = flow_warp(m_l, flow)
                return sim(f_l, warped, valid) + smoothness * losses.flow_smoothness(flow)
            l1_w, smooth_w = translation_weights
            warped, valid = flow_warp(m_l, flow)
            vm = valid.to(f_l.dtype)
            reg_then_tr = translator(warped)  # T(R(m))
            tr_then_reg, valid2 = flow_warp(translator(m_l), flow)  # R(T(m))
            vm2 = valid2.to(f_l.dtype)
            l1 = ((reg_then_tr - f_l).abs() * vm).sum() / vm.sum().clamp_min(1) + \
                ((tr_then_reg - f_l).abs() * vm2).sum() / vm2.sum().clamp_min(1)
            return l1_w * l1 + smooth_w * losses.bilateral_smoothness(flow, f_l)

        level_losses.append(_optimise(params, closure, n, optimizer, lr or default_lr(method, similarity), bar))
    bar.close()
    with torch.no_grad():
        v = field_at(H, W, L - 1)
        flow = integrate_velocity(v, steps=integration_steps) if diffeomorphic else v
        if A0 is not None:
            flow = compose_affine_flow(A0, flow)
        warped, _ = flow_warp(moving_full, flow)
        translated = translator(to_gray(warped)) if translator is not None else None
    return RegistrationResult(flow=flow, warped=warped, affine=None if A0 is None else _to33(A0[0]),
                              translated=translated, seconds=time.perf_counter() - t0, losses=level_losses)


def _to33(A: torch.Tensor) -> torch.Tensor:
    if A.shape[-2] == 3:
        return A
    return torch.cat([A, torch.tensor([[0.0, 0.0, 1.0]], dtype=A.dtype, device=A.device)], 0)
# ---------------------------------------------------------------------------- learned systems
def _masked_l1(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    m = valid.to(a.dtype)
    return ((a - b).abs() * m).sum() / (m.sum() * a.shape[1]).clamp_min(1.0)


def _vis(x: torch.Tensor) -> torch.Tensor:
    """First sample of a (B, C, H, W) image batch as a (3, H, W) picture in [0, 1]."""
    x = x[0].detach().float().clamp(0, 1)
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x[:3]


def _flow_vis(flow: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) flow -> (3, H, W) picture: dx in red, dy in green, centred on 0.5."""
    f = flow[0].detach().float()
    s = f.abs().max().clamp_min(1e-6)
    return torch.cat([0.5 + 0.5 * f / s, torch.full_like(f[:1], 0.5)], 0)


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """Per image and channel: zero mean, unit standard deviation (floored at 1e-3), (B, C, H, W)."""
    mu = x.mean(dim=(2, 3), keepdim=True)
    sd = x.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
    return (x - mu) / sd


INPUT_FEATURES = ("intensity", "orientation")


def orientation_features(x: torch.Tensor, eps: float = 0.05) -> torch.Tensor:
    """Edge orientation in the doubled-angle form, invariant to the sign of the gradient, (B, 2, H, W).

    ``(gx^2 - gy^2, 2 gx gy) / (|g|^2 + eps^2)`` with central differences: ``|g| >> eps`` gives a
    unit vector ``(cos 2a, sin 2a)`` of the gradient angle ``a``, flat regions ~0. Any pointwise
    intensity map ``f`` (monotonic or not) gives ``grad f(I) = f'(I) grad I``, parallel or
    anti-parallel, hence the same features (the input-space counterpart of NGF).
    x: (B, 1, H, W) grey images.
    """
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (xp[..., 1:-1, 2:] - xp[..., 1:-1, :-2])
    gy = 0.5 * (xp[..., 2:, 1:-1] - xp[..., :-2, 1:-1])
    n = gx * gx + gy * gy + eps * eps
    return torch.cat([(gx * gx - gy * gy) / n, 2 * gx * gy / n], dim=1)


class LearnedRegistration(nn.Module):
    """Base of the learned systems (ENGINE's System protocol + fast inference).

    Networks see grey images resized by ``input_scale``; fields are predicted at that resolution
    and resampled to the input resolution (:func:`resize_flow`).
    """

    method = "base"

    def __init__(self, similarity: str = "mi", input_scale: float = 1.0, supervised: float = 0.0,
                 mi_bins: int = 32, ncc_window: int = 9, mi_samples: int = 0,
                 feature_encoder: Optional[nn.Module] = None) -> None:
        super().__init__()
        if not 0 < input_scale <= 1:
            raise ValueError(f"input_scale: must be in (0, 1], got {input_scale}")
        self.input_scale, self.supervised = float(input_scale), float(supervised)
        self.similarity = Similarity(similarity, ncc_window=ncc_window, mi_bins=mi_bins,
                                     feature_encoder=feature_encoder, mi_samples=mi_samples)

    def _net_size(self, h: int, w: int) -> Tuple[int, int]:
        return max(8, int(round(h * self.input_scale))), max(8, int(round(w * self.input_scale)))

    def predict_flow(self, fixed: torch.Tensor, moving: torch.Tensor) -> Dict[str, torch.Tensor]:
        """fixed, moving: (B, C, H, W) -> dict with ``flow`` (B, 2, H, W) (+ method extras)."""
        raise NotImplementedError

    @torch.no_grad()
    def register(self, fixed: torch.Tensor, moving: torch.Tensor) -> RegistrationResult:
        """Fast inference: fixed (B, C, H, W), moving (B, C', H, W) -> flow + warped moving (all channels)."""
        _check_pair(fixed, moving)
        t0 = time.perf_counter()
        out = self.predict_flow(to_gray(fixed), to_gray(moving))
        warped, _ = flow_warp(moving, out["flow"])
        return RegistrationResult(flow=out["flow"], warped=warped, affine=out.get("affine"),
                                  translated=out.get("translated"), seconds=time.perf_counter() - t0)

    def _supervised_term(self, flow: torch.Tensor, batch) -> Optional[torch.Tensor]:
        if self.supervised > 0 and getattr(batch, "flow", None) is not None:
            return torch.sqrt(((flow - batch.flow) ** 2).sum(1) + 1e-6).mean()
        return None

    def parameter_groups(self) -> List[dict]:
        return [{"params": [p for p in m.parameters() if p.requires_grad]} for m in self.trainable_models().values()]


class AffineRegistration(LearnedRegistration):
    """Learned affine registration: :class:`AffineRegressor` -> theta -> pixel affine -> warp."""

    method = "affine"

    def __init__(self, width: int = 16, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = AffineRegressor(2, width=width)

    def trainable_models(self) -> Dict[str, nn.Module]:
        return {"affine": self.net}

    def predict_flow(self, fixed, moving):
        _check_pair(fixed, moving)
        H, W = fixed.shape[-2:]
        size = self._net_size(H, W)
        theta = self.net(resize_image(fixed, size), resize_image(moving, size))  # (B, 2, 3) normalised
        A = normalized_affine_to_pixel(theta, H, W)  # (B, 3, 3) full-resolution pixels
        return {"flow": affine_to_flow(A, H, W), "affine": A, "theta": theta}

    def training_step(self, batch, step: int, want_images: bool = False):
        from fmdepth.core.system import StepOutput

        fixed, moving = to_gray(batch.fixed), to_gray(batch.moving)
        out = self.predict_flow(fixed, moving)
        warped, valid = affine_warp(moving, out["affine"])
        sim = self.similarity(fixed, warped, valid)
        loss, scalars = sim, {"similarity": float(sim.detach())}
        sup = self._supervised_term(out["flow"], batch)
        if sup is not None:
            loss = loss + self.supervised * sup
            scalars["supervised_epe"] = float(sup.detach())
        images = {"fixed": _vis(fixed), "moving": _vis(moving), "warped": _vis(warped)} if want_images else {}
        return StepOutput(loss=loss, scalars=scalars, images=images)


class DeformableRegistration(LearnedRegistration):
    """Learned dense registration (VoxelMorph): U-Net -> displacement, or velocity + integration.

    Loss: ``similarity_weight * similarity(fixed, moving o flow) + smoothness * flow_smoothness(flow)``
    (+ optional ``supervised`` end-point error when the batch carries a true flow, e.g. synthetic
    pairs). ``input_norm`` standardises each network input image (zero mean, unit deviation), which
    takes the modalities' different brightness ranges off the network; ``input_features="orientation"``
    adds, per image, the sign-invariant edge orientation (:func:`orientation_features`), which
    makes pointwise intensity remaps (e.g. RGB vs infrared-like contrast) look alike to the network
    and speeds supervised training up several-fold on the benchmark pairs. ``passes > 1`` is a
    recursive cascade: the same U-Net is applied again to the moving image warped by the flow so
    far, and the residual flows are composed; ``refine_scale > 1`` runs the passes after the first
    at ``input_scale * refine_scale`` (coarse to fine: e.g. 64 px, then 128 px for a 256 px pair);
    training trains the cascade end to end (loss on the final composed flow), with the first pass
    alone before training step ``cascade_from_step``. ``similarity_weight=0`` with ``supervised > 0``
    trains on the end-point error alone (the similarity is then not computed, which saves its
    cost); batches without a true flow fall back to the similarity with weight 1, so the loss never
    silently loses its data term.
    """

    method = "deformable"

    def __init__(self, depth: int = 4, width: int = 16, diffeomorphic: bool = False, integration_steps: int = 7,
                 smoothness: float = 0.05, similarity_weight: float = 1.0, input_norm: bool = False,
                 input_features: str = "intensity", passes: int = 1, refine_scale: float = 1.0,
                 cascade_from_step: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 1 <= passes <= 4:
            raise ValueError(f"passes: must be in [1, 4], got {passes}")
        if refine_scale < 1:
            raise ValueError(f"refine_scale: must be >= 1, got {refine_scale}")
        if cascade_from_step < 0:
            raise ValueError(f"cascade_from_step: must be >= 0, got {cascade_from_step}")
        self.passes, self.refine_scale, self.cascade_from_step = int(passes), float(refine_scale), int(cascade_from_step)
        if similarity_weight < 0:
            raise ValueError(f"similarity_weight: must be >= 0, got {similarity_weight}")
        if input_features not in INPUT_FEATURES:
            raise ValueError(f"input_features: expected one of {', '.join(INPUT_FEATURES)}, got {input_features!r}")
        self.input_features = input_features
        self.net = UNetFlow(2 if input_features == "intensity" else 6, depth=depth, width=width)
        self.diffeomorphic, self.integration_steps, self.smoothness = diffeomorphic, integration_steps, smoothness
        self.similarity_weight, self.input_norm = float(similarity_weight), bool(input_norm)

    def trainable_models(self) -> Dict[str, nn.Module]:
        return {"flow": self.net}

    def predict_flow(self, fixed, moving, passes: Optional[int] = None):
        _check_pair(fixed, moving)
        H, W = fixed.shape[-2:]
        flow_lo, inputs = None, {}
        for k, size in enumerate(self.pass_sizes(H, W, passes)):  # pass k > 0: the moving image warped by the flow so far
            if size not in inputs:
                inputs[size] = resize_image(fixed, size), resize_image(moving, size)
            f_lo, m_lo = inputs[size]
            if flow_lo is not None and tuple(flow_lo.shape[-2:]) != size:
                flow_lo = resize_flow(flow_lo, size)
            m_k = m_lo if flow_lo is None else flow_warp(m_lo, flow_lo, padding_mode="border")[0]
            field_ = self.net(self._net_input(f_lo), self._net_input(m_k))  # (B, 2, h, w)
            step = integrate_velocity(field_, steps=self.integration_steps) if self.diffeomorphic else field_
            # compose: moving(p + s(p) + flow(p + s(p)))
            flow_lo = step if flow_lo is None else step + flow_warp(flow_lo, step, padding_mode="border")[0]
        return {"flow": resize_flow(flow_lo, (H, W)), "flow_lo": flow_lo}

    def pass_sizes(self, h: int, w: int, passes: Optional[int] = None) -> List[Tuple[int, int]]:
        """Network input size of each pass: ``input_scale``, then ``input_scale * refine_scale`` (<= 1)."""
        s = min(1.0, self.input_scale * self.refine_scale)
        fine = (max(8, int(round(h * s))), max(8, int(round(w * s))))
        return [self._net_size(h, w)] + [fine] * ((self.passes if passes is None else passes) - 1)

    def _net_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_features == "orientation":  # per image: [intensity, cos 2a, sin 2a]
            x = torch.cat([x, orientation_features(x)], 1)
        if self.input_norm:  # standardise the intensity channel
            x = torch.cat([_standardise(x[:, :1]), x[:, 1:]], 1)
        return x

    def training_step(self, batch, step: int, want_images: bool = False):
        from fmdepth import losses
        from fmdepth.core.system import StepOutput

        fixed, moving = to_gray(batch.fixed), to_gray(batch.moving)
        # before cascade_from_step, training runs the first pass alone (it learns the coarse field first)
        out = self.predict_flow(fixed, moving, passes=1 if self.training and step < self.cascade_from_step else None)
        warped, valid = flow_warp(moving, out["flow"])
        smooth = losses.flow_smoothness(out["flow_lo"])
        loss = self.smoothness * smooth
        scalars = {"smoothness": float(smooth.detach())}
        supervisable = self.supervised > 0 and getattr(batch, "flow", None) is not None
        # similarity_weight = 0 means 'end-point error only': without a true flow, fall back to weight 1
        sim_w = self.similarity_weight if (supervisable or self.similarity_weight > 0) else 1.0
        if sim_w > 0:
            sim = self.similarity(fixed, warped, valid)
            loss = loss + sim_w * sim
            scalars["similarity"] = float(sim.detach())
        sup = self._supervised_term(out["flow"], batch)
        if sup is not None:
            loss = loss + self.supervised * sup
            scalars["supervised_epe"] = float(sup.detach())
        images = ({"fixed": _vis(fixed), "moving": _vis(moving), "warped": _vis(warped),
                   "flow": _flow_vis(out["flow"])} if want_images else {})
        return StepOutput(loss=loss, scalars=scalars, images=images)


class TranslationRegistration(LearnedRegistration):
    """NeMAR: translation-based multimodal registration.

    A translator ``T`` maps the moving modality to the fixed one and a U-Net ``R`` predicts the
    flow. Both orders must reproduce the fixed image: ``T(R(moving))`` and ``R(T(moving))`` (L1),
    a conditional PatchGAN ``D`` judges both outputs (conditioned on the moving image), and a
    bilateral smoothness term regularises the flow. Because the registration-first and
    translation-first paths must agree, ``T`` cannot absorb geometry.

    The engine runs one optimizer over :meth:`parameter_groups`; the GAN is trained in the same
    backward pass: the generator term evaluates ``D`` with *detached* parameters (no gradient to
    ``D``), the discriminator term sees detached fakes (no gradient to ``T``/``R``).
    """

    method = "translation"

    def __init__(self, depth: int = 4, width: int = 16, translator_width: int = 32, translator_blocks: int = 4,
                 discriminator_width: int = 64, l1_weight: float = 1.0, gan_weight: float = 0.05,
                 bilateral_weight: float = 0.1, bilateral_alpha: float = 10.0, gan_mode: str = "lsgan",
                 **kwargs) -> None:
        kwargs.setdefault("similarity", "mse")
        super().__init__(**kwargs)
        self.translator = ResnetTranslator(1, 1, width=translator_width, num_blocks=translator_blocks)
        self.net = UNetFlow(2, depth=depth, width=width)
        self.discriminator = PatchDiscriminator(2, width=discriminator_width)
        self.l1_weight, self.gan_weight = l1_weight, gan_weight
        self.bilateral_weight, self.bilateral_alpha, self.gan_mode = bilateral_weight, bilateral_alpha, gan_mode

    def trainable_models(self) -> Dict[str, nn.Module]:
        return {"translator": self.translator, "flow": self.net, "discriminator": self.discriminator}

    def predict_flow(self, fixed, moving):
        _check_pair(fixed, moving)
        H, W = fixed.shape[-2:]
        size = self._net_size(H, W)
        flow_lo = self.net(resize_image(fixed, size), resize_image(moving, size))
        return {"flow": resize_flow(flow_lo, (H, W)), "flow_lo": flow_lo}

    def register(self, fixed, moving):
        result = super().register(fixed, moving)
        with torch.no_grad():
            result.translated = self.translator(to_gray(result.warped))
        return result

    def _d_frozen(self, x: torch.Tensor) -> torch.Tensor:
        params = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        buffers = dict(self.discriminator.named_buffers())
        return torch.func.functional_call(self.discriminator, {**params, **buffers}, (x,))

    def training_step(self, batch, step: int, want_images: bool = False):
        from fmdepth import losses
        from fmdepth.core.system import StepOutput

        fixed, moving = to_gray(batch.fixed), to_gray(batch.moving)
        out = self.predict_flow(fixed, moving)
        flow = out["flow"]
        warped, valid = flow_warp(moving, flow)
        reg_then_tr = self.translator(warped)  # T(R(A))
        tr_then_reg, valid_t = flow_warp(self.translator(moving), flow)  # R(T(A))
        l1 = _masked_l1(reg_then_tr, fixed, valid) + _masked_l1(tr_then_reg, fixed, valid_t)
        bil = losses.bilateral_smoothness(flow, fixed, alpha=self.bilateral_alpha)
        g_adv = 0.5 * (losses.gan_loss(self._d_frozen(torch.cat([moving, reg_then_tr], 1)), True, mode=self.gan_mode)
                       + losses.gan_loss(self._d_frozen(torch.cat([moving, tr_then_reg], 1)), True, mode=self.gan_mode))
        d_real = losses.gan_loss(self.discriminator(torch.cat([moving, fixed], 1)), True, mode=self.gan_mode)
        d_fake = 0.5 * (losses.gan_loss(self.discriminator(torch.cat([moving, reg_then_tr.detach()], 1)), False,
                                        mode=self.gan_mode)
                        + losses.gan_loss(self.discriminator(torch.cat([moving, tr_then_reg.detach()], 1)), False,
                                          mode=self.gan_mode))
        d_loss = 0.5 * (d_real + d_fake)
        loss = self.l1_weight * l1 + self.gan_weight * g_adv + self.bilateral_weight * bil + d_loss
        scalars = {"l1_both_paths": float(l1.detach()), "gan_generator": float(g_adv.detach()),
                   "gan_discriminator": float(d_loss.detach()), "bilateral": float(bil.detach())}
        sup = self._supervised_term(flow, batch)
        if sup is not None:
            loss = loss + self.supervised * sup
            scalars["supervised_epe"] = float(sup.detach())
        images = ({"fixed": _vis(fixed), "moving": _vis(moving), "T_of_R": _vis(reg_then_tr),
                   "R_of_T": _vis(tr_then_reg), "flow": _flow_vis(flow)} if want_images else {})
        return StepOutput(loss=loss, scalars=scalars, images=images)


def build_registration_system(cfg) -> LearnedRegistration:
    """Map a :class:`fmdepth.config.RegistrationConfig` (``cfg.registration``) onto a system.

    Accepts the whole :class:`fmdepth.config.Config` or just its ``registration`` section.
    """
    r = getattr(cfg, "registration", cfg)
    common = dict(input_scale=r.input_scale, supervised=r.supervised, mi_bins=r.mi_bins, ncc_window=r.ncc_window,
                  mi_samples=r.mi_samples)
    if r.method == "affine":
        return AffineRegistration(width=r.affine_width, similarity=r.similarity, **common)
    if r.method == "deformable":
        return DeformableRegistration(depth=r.unet_depth, width=r.unet_width, diffeomorphic=r.diffeomorphic,
                                      integration_steps=r.integration_steps, smoothness=r.smoothness,
                                      similarity_weight=r.similarity_weight, input_norm=r.input_norm,
                                      input_features=r.input_features, passes=r.passes,
                                      refine_scale=r.refine_scale, cascade_from_step=r.cascade_from_step,
                                      similarity=r.similarity, **common)
    if r.method == "translation":
        return TranslationRegistration(depth=r.unet_depth, width=r.unet_width, translator_width=r.translator_width,
                                       translator_blocks=r.translator_blocks,
                                       discriminator_width=r.discriminator_width, l1_weight=r.l1_weight,
                                       gan_weight=r.gan_weight, bilateral_weight=r.bilateral_weight,
                                       bilateral_alpha=r.bilateral_alpha, **common)
    raise ValueError(f"registration.method: unknown '{r.method}'; expected one of {', '.join(METHODS)}")


def load_registration_checkpoint(path: str, map_location="cpu") -> LearnedRegistration:
    """Rebuild a learned registration system from an engine checkpoint (``torch.load(weights_only=True)``)."""
    import os

    from fmdepth.config import config_from_dict

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        from fmdepth.core.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path, map_location=map_location)
    except ImportError:  # pragma: no cover - engine always present in the package
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "models" not in ckpt:
        raise ValueError(f"{path}: not an fmdepth checkpoint (needs 'config' and 'models')")
    cfg = config_from_dict(ckpt["config"])
    if cfg.task != "registration":
        raise ValueError(f"{path}: checkpoint of task '{cfg.task}', expected a registration checkpoint")
    system = build_registration_system(cfg)
    for name, module in system.trainable_models().items():
        if name not in ckpt["models"]:
            raise ValueError(f"{path}: checkpoint has no weights for '{name}' (has {', '.join(ckpt['models'])})")
        module.load_state_dict(ckpt["models"][name])
    return system.eval()
