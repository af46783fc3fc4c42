"""The per-pair optimiser: one transform for one pair over a multi-resolution pyramid.

:func:`solve_pair` optimises an affine (6 parameters), a dense field on a control grid
(free-form deformation, optionally a stationary velocity field integrated by scaling and
squaring) or NeMAR's translation + flow, and returns the raw optimum;
:func:`fmdepth.registration.register_pair` adds the never-worse candidate check on top.
All warps go through :mod:`fmdepth.geometry`, all similarities come from :mod:`fmdepth.losses`.
"""
from __future__ import annotations

import math
import time
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from fmdepth.geometry import (affine_to_3x3, affine_to_flow, affine_warp, check_image_pair, compose_affine_flow,
                              flow_warp, integrate_velocity, normalized_affine_to_pixel, pixel_affine_to_normalized,
                              pyramid_sizes, resize_image)
from fmdepth.losses import Similarity, bilateral_smoothness, flow_smoothness, to_gray
from fmdepth.metrics.registration import RegistrationResult
from fmdepth.networks.registration import ResnetTranslator

# the per-pair methods :func:`solve_pair` optimises
METHODS = ("affine", "deformable", "translation")

# the per-pair default similarity (see :func:`fmdepth.registration.register_pair`)
DEFAULT_SIMILARITY = "mind"

# MIND-SSC patch radius of the per-pair solver and its candidate scoring (5x5 patches; see solve_pair)
DEFAULT_MIND_RADIUS = 2
# weight of NGF added to the MIND objective of the per-pair solver (see solve_pair)
DEFAULT_MIND_NGF_WEIGHT = 0.1

DEFAULT_ITERATIONS = {"affine": (150, 100, 60), "deformable": (120, 80, 40), "translation": (200, 150, 100)}


def check_method(method: str) -> None:
    """Raise ``ValueError`` unless ``method`` is one of :data:`METHODS`."""
    if method not in METHODS:
        raise ValueError(f"method: unknown '{method}'; expected one of {', '.join(METHODS)}")


def parse_iterations(text: Optional[str]) -> Union[None, int, List[int]]:
    """``"150,100,60"`` -> ``[150, 100, 60]`` (per level, coarse to fine), ``"50"`` -> ``50``, None -> None.

    Raises:
        ValueError: not a comma-separated list of non-negative integers (names ``--iterations``).
    """
    if text is None:
        return None
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--iterations: expected integers like 150,100,60, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise ValueError(f"--iterations: expected non-negative integers, got {text!r}")
    return values[0] if len(values) == 1 else values


def default_lr(method: str, similarity: str) -> float:
    """Adam learning rate :func:`solve_pair` uses when ``lr`` is None.

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


def make_similarity(name: str, feature_encoder: Optional[nn.Module] = None, **kwargs) -> Similarity:
    """:class:`fmdepth.losses.Similarity` ``name``; ``feature`` without an encoder gets a randomly
    initialised FeatureNet-18 (it behaves like a bank of random local filters)."""
    if name == "feature" and feature_encoder is None:
        from fmdepth.networks import FeatureNet

        feature_encoder = FeatureNet(num_layers=18, pretrained="none")
    return Similarity(name, feature_encoder=feature_encoder, **kwargs)


class WeightedSimilarity(nn.Module):
    """``sum_k weight_k * similarity_k(fixed, warped, valid)`` of :class:`fmdepth.losses.Similarity` terms."""

    def __init__(self, terms: Sequence[Tuple[Similarity, float]]):
        super().__init__()
        self.terms = nn.ModuleList([t for t, _ in terms])
        self.weights = [float(w) for _, w in terms]

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        return sum(w * t(fixed, warped, valid) for t, w in zip(self.terms, self.weights))


def as_image_batch(x, name: str) -> torch.Tensor:
    """(H, W), (C, H, W) or (1, C, H, W) array/tensor with C in (1, 3) -> (1, C, H, W) float32 tensor."""
    x = torch.as_tensor(x)
    if x.dim() == 2:
        x = x[None, None]
    elif x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] not in (1, 3):
        raise ValueError(f"{name}: expected (C, H, W) or (1, C, H, W) with C in (1, 3), got {tuple(x.shape)}")
    return x.float()


def as_affine(affine, device) -> torch.Tensor:
    """A (2, 3) or (3, 3) pixel affine (array or tensor) -> float32 tensor on ``device``, shape kept."""
    A = torch.as_tensor(affine, dtype=torch.float32, device=device)
    if A.shape not in ((2, 3), (3, 3)):
        raise ValueError(f"init_affine: expected (2, 3) or (3, 3), got {tuple(A.shape)}")
    return A


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


def _level_iterations(iterations, method: str, levels: int) -> List[int]:
    """Iterations per pyramid level (coarse to fine); fewer entries than levels apply to the finest."""
    iters = iterations if iterations is not None else DEFAULT_ITERATIONS[method]
    if isinstance(iters, int):
        iters = [iters] * levels
    iters = list(iters)
    if len(iters) < levels:
        iters = [iters[0]] * (levels - len(iters)) + iters
    return iters[-levels:]


def solve_pair(fixed, moving, method: str = "deformable", similarity: str = DEFAULT_SIMILARITY, *,
               levels: int = 3, iterations: Optional[Sequence[int]] = None, optimizer: str = "adam",
               lr: Optional[float] = None, smoothness: float = 0.5, grid_spacing: Optional[int] = None,
               diffeomorphic: bool = False, integration_steps: int = 7,
               init_affine=None, mi_bins: int = 32, ncc_window: int = 9, mi_samples: int = 8192,
               feature_encoder: Optional[nn.Module] = None, translation_weights: Tuple[float, float] = (1.0, 0.1),
               affine_refine: int = 20, mind_radius: int = DEFAULT_MIND_RADIUS, mind_dilation: int = 2,
               mind_ngf_weight: float = DEFAULT_MIND_NGF_WEIGHT, mind_mi_weight: float = 0.0,
               progress: bool = False, device=None, seed: int = 0) -> RegistrationResult:
    """Optimise one transform for one pair over a multi-resolution pyramid (no candidate check).

    :func:`fmdepth.registration.register_pair` calls this and then checks the result against the
    identity and the affine stage; call it directly only to get the raw optimum.

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
        mind_radius, mind_dilation: MIND-SSC patch radius and neighbour distance (pixels of each
            pyramid level). Radius 2 (5x5 patches, the default of the public MIND-SSC code, e.g.
            ConvexAdam's ``MINDSSC``) against 1 on the 36 tuning pairs of ``bench/registration.py
            --cross-modality tuning --seeds 12`` (channel remap / disparity / edges, initial 9.0 /
            9.1 / 8.3 px): 0.44 / 2.20 / 1.14 px against 0.33 / 3.54 / 1.43 (radius 3: 0.47 / 2.40 /
            1.15; dilation 3: 0.34 / 4.33 / 1.72).
        mind_ngf_weight: ``similarity="mind"``: the objective is MIND + this weight x NGF (0 = MIND
            alone). MIND's own optimum can lie away from the truth where NGF's does not (measured
            on the true flow of held-out pairs); on the same 36 tuning pairs, radius 2: 0.1 gives
            0.37 / 1.84 / 1.14 px, 0.3 gives 0.27 / 2.14 / 1.20, 0 gives 0.44 / 2.20 / 1.14.
        mind_mi_weight: ``similarity="mind"``: this weight x MI (``mi_bins``, ``mi_samples``) is
            added to the objective too (0 = none). It helps where one image's intensities are a
            function of the other's and hurts where they are not; :func:`~fmdepth.registration.register_pair`
            decides per pair (``mind_mi_weight="auto"``).
        affine_refine: affine with Adam: this many L-BFGS evaluations at full resolution after the
            pyramid (skipped for stochastic MI sampling); 0 = off.
        progress: show a tqdm progress bar.

    Returns:
        :class:`~fmdepth.metrics.registration.RegistrationResult` with the flow (1, 2, H, W) on the
        fixed grid at full resolution.
    """
    from tqdm.auto import tqdm

    check_method(method)
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"optimizer: expected 'adam' or 'lbfgs', got {optimizer!r}")
    if grid_spacing is not None and grid_spacing < 1:
        raise ValueError(f"grid_spacing: must be >= 1, got {grid_spacing}")
    t0 = time.perf_counter()
    fixed_full = as_image_batch(fixed, "fixed")
    moving_full = as_image_batch(moving, "moving")
    check_image_pair(fixed_full, moving_full)
    device = torch.device(device) if device is not None else fixed_full.device
    fixed_full, moving_full = fixed_full.to(device), moving_full.to(device)
    fixed_g, moving_g = to_gray(fixed_full), to_gray(moving_full)
    H, W = fixed_full.shape[-2:]
    if grid_spacing is None:
        grid_spacing = default_grid_spacing(similarity, H, W)
    sizes = pyramid_sizes(H, W, levels)
    iters = _level_iterations(iterations, method, len(sizes))
    if not mind_ngf_weight >= 0:
        raise ValueError(f"mind_ngf_weight: must be >= 0, got {mind_ngf_weight}")
    if not mind_mi_weight >= 0:
        raise ValueError(f"mind_mi_weight: must be >= 0, got {mind_mi_weight}")
    sim = make_similarity(similarity if method != "translation" else "mse", ncc_window=ncc_window, mi_bins=mi_bins,
                          feature_encoder=feature_encoder, mi_samples=mi_samples, mind_radius=mind_radius,
                          mind_dilation=mind_dilation).to(device)
    if similarity == "mind" and method != "translation" and (mind_ngf_weight > 0 or mind_mi_weight > 0):
        terms = [(sim, 1.0), (make_similarity("ngf").to(device), mind_ngf_weight),
                 (make_similarity("mi", mi_bins=mi_bins, mi_samples=mi_samples).to(device), mind_mi_weight)]
        sim = WeightedSimilarity([(t, w) for t, w in terms if w > 0])
    torch.manual_seed(seed)

    A0 = None if init_affine is None else as_affine(init_affine, device)[None, :2]  # (1, 2, 3)
    level_losses: List[float] = []
    bar = tqdm(total=sum(iters), desc=f"register {method}/{similarity if method != 'translation' else 'L1'}",
               disable=not progress, leave=False)
    step_lr = lr or default_lr(method, similarity)

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

            level_losses.append(_optimise([delta], closure, n, optimizer, step_lr, bar))
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
                return sim(f_l, warped, valid) + smoothness * flow_smoothness(flow)
            l1_w, smooth_w = translation_weights
            warped, valid = flow_warp(m_l, flow)
            vm = valid.to(f_l.dtype)
            reg_then_tr = translator(warped)  # T(R(m))
            tr_then_reg, valid2 = flow_warp(translator(m_l), flow)  # R(T(m))
            vm2 = valid2.to(f_l.dtype)
            l1 = ((reg_then_tr - f_l).abs() * vm).sum() / vm.sum().clamp_min(1) + \
                ((tr_then_reg - f_l).abs() * vm2).sum() / vm2.sum().clamp_min(1)
            return l1_w * l1 + smooth_w * bilateral_smoothness(flow, f_l)

        level_losses.append(_optimise(params, closure, n, optimizer, step_lr, bar))
    bar.close()
    with torch.no_grad():
        v = field_at(H, W, L - 1)
        flow = integrate_velocity(v, steps=integration_steps) if diffeomorphic else v
        if A0 is not None:
            flow = compose_affine_flow(A0, flow)
        warped, _ = flow_warp(moving_full, flow)
        translated = translator(to_gray(warped)) if translator is not None else None
    return RegistrationResult(flow=flow, warped=warped, affine=None if A0 is None else affine_to_3x3(A0[0]),
                              translated=translated, seconds=time.perf_counter() - t0, losses=level_losses)
