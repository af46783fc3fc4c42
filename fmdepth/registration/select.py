"""Never worse than the input: candidate scoring and selection around the per-pair solver.

:func:`register_pair` runs the optional affine stage and :func:`~fmdepth.registration.solver.solve_pair`,
scores the candidates (identity, affine, final) on the chosen similarity and on an independent
check similarity (:func:`score_flows`) and keeps a candidate only if it is better on both.
:func:`keep_if_better` applies the same guard to a result from elsewhere (a learned system).
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from fmdepth.geometry import affine_to_3x3, affine_to_flow, check_image_pair, flow_warp
from fmdepth.losses import SIMILARITIES, to_gray
from fmdepth.metrics.registration import RegistrationResult

from .solver import (DEFAULT_MIND_RADIUS, DEFAULT_SIMILARITY, as_affine, as_image_batch, check_method, make_similarity,
                     solve_pair)

# the independent check of register_pair; "mind" for every other similarity
CHECK_SIMILARITY = {"mind": "ngf"}

# solve_pair settings that the affine stage of register_pair (init="affine") inherits
_AFFINE_STAGE_KEYS = ("levels", "optimizer", "mi_bins", "ncc_window", "mi_samples", "feature_encoder",
                      "mind_radius", "mind_dilation", "mind_ngf_weight", "seed")
# solve_pair settings that also shape the scoring similarities
_SCORE_KEYS = ("mi_bins", "ncc_window", "mind_radius", "mind_dilation", "feature_encoder")


def check_similarity_for(similarity: str) -> str:
    """The second similarity :func:`register_pair` scores candidates on: ``ngf`` for ``mind``, else ``mind``."""
    return CHECK_SIMILARITY.get(similarity, "mind")


def check_images(fixed_g: torch.Tensor, moving_g: torch.Tensor) -> None:
    """Raise ``ValueError`` when a grey (1, 1, H, W) image is non-finite or constant (no similarity defined)."""
    for name, img in (("fixed", fixed_g), ("moving", moving_g)):
        if not bool(torch.isfinite(img).all()):
            raise ValueError(f"{name} image: has non-finite values (NaN or inf); no similarity is defined")
        if float(img.std()) < 1e-6:
            raise ValueError(f"{name} image: is constant (value {float(img.mean()):.4g}): no similarity is defined "
                             f"for it (nothing to align); give an image with structure")


@torch.no_grad()
def score_flows(fixed: torch.Tensor, moving: torch.Tensor, flows: Dict[str, torch.Tensor],
                similarities: Sequence[str], mi_bins: int = 32, ncc_window: int = 9,
                mind_radius: int = DEFAULT_MIND_RADIUS,
                mind_dilation: int = 2, feature_encoder: Optional[nn.Module] = None) -> Dict[str, Dict[str, float]]:
    """Loss (lower = better) of each candidate flow under each similarity, on a common overlap.

    Args:
        fixed: (1, C, H, W) image; moving: (1, C, H, W) image (grey images: luminance is used).
        flows: name -> (1, 2, H, W) flow (``warped(p) = moving(p + flow(p))``).
        similarities: names from :data:`fmdepth.losses.SIMILARITIES` (``mi`` uses every pixel,
            deterministic).

    Returns:
        ``{flow name: {similarity name: loss}}``. Every candidate is scored on the pixels that all
        candidates map inside the moving image, so the scores compare like with like.
    """
    fg, mg = to_gray(fixed), to_gray(moving)
    warped = {k: flow_warp(mg, f.to(mg)) for k, f in flows.items()}  # name -> (image, valid)
    common = torch.stack([v for _, v in warped.values()]).all(0)  # (1, 1, H, W)
    if int(common.sum()) < 16:
        common = torch.ones_like(common)
    sims = {n: make_similarity(n, ncc_window=ncc_window, mi_bins=mi_bins, mind_radius=mind_radius,
                               mind_dilation=mind_dilation, feature_encoder=feature_encoder).to(fg.device)
            for n in similarities}
    return {k: {n: float(sim(fg, w, common)) for n, sim in sims.items()} for k, (w, _) in warped.items()}


def prefer(scores: Dict[str, Dict[str, float]], current: str, candidate: str,
           names: Sequence[str]) -> Tuple[bool, str]:
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
    check_images(to_gray(fixed), to_gray(moving))
    flows = {"identity": torch.zeros_like(result.flow), "final": result.flow}
    scores = score_flows(fixed, moving, flows, (similarity, check))
    ok, why = prefer(scores, "identity", "final", (similarity, check))
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
    identity is dropped before the method runs (the method then starts from the identity). When
    the affine start is kept, the method also runs from the identity (``"identity start"``), and
    the affine and the result from it must beat that result on both similarities too: an affine
    start never ends worse than the identity start by both measures (2-3.5x the time of the default).
    ``result.kept``, ``result.scores`` and ``result.notes`` say which was kept and why.

    The default similarity ``mind`` (MIND-SSC) was chosen on the tuning pairs of
    ``bench/registration.py --cross-modality tuning`` (channel vs remapped channel, photo vs
    disparity, photo vs edge magnitude; 4 pairs each, 256x256): it was the most accurate similarity
    on every kind (mean landmark error 0.52 / 2.77 / 1.25 px against ngf 3.39 / 6.88 / 3.94 and mi
    2.71 / 9.12 / 7.80, from 8.6 / 9.1 / 8.8). The affine stage (``init="affine"``) was better on
    the disparity kind only (2.66 px) and worse on the other two (0.67 / 1.31 px) for ~2.3x the time,
    so the default start is the identity. Its MIND-SSC patch radius (2, 5x5 patches) was chosen later
    on 12 tuning pairs per kind (see :func:`~fmdepth.registration.solver.solve_pair`).

    Args:
        fixed, moving: (C, H, W) or (1, C, H, W) images in [0, 1], the same H, W (see
            :func:`~fmdepth.registration.solver.solve_pair`).
        method, similarity: see :func:`~fmdepth.registration.solver.solve_pair`.
        init: ``identity`` (default) or ``affine`` (deformable / translation: start from a
            per-pair affine stage with the same similarity, kept only if it beats the identity).
        init_affine: (2, 3) or (3, 3) pixel affine fixed -> moving to start from (e.g. from
            best-buddy matches); checked against the identity like the affine stage.
        keep_best: False returns the final transform unchecked (scores are still reported).
        check_similarity: the second similarity (None: :func:`check_similarity_for`).
        **solver: the optimisation settings of :func:`~fmdepth.registration.solver.solve_pair`
            (levels, iterations, lr, ...).

    Returns:
        :class:`~fmdepth.metrics.registration.RegistrationResult`: flow (1, 2, H, W), warped
        (1, C', H, W), and ``kept`` / ``scores`` / ``notes``.

    Raises:
        ValueError: bad arguments, images of different sizes, or a constant / non-finite image
            (no similarity is defined for it).
    """
    if init not in ("identity", "affine"):
        raise ValueError(f"init: expected 'identity' or 'affine', got {init!r}")
    check_method(method)
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity: unknown '{similarity}'; expected one of {', '.join(SIMILARITIES)}")
    check = check_similarity or check_similarity_for(similarity)
    if check not in SIMILARITIES or check == similarity:
        raise ValueError(f"check_similarity: expected one of {', '.join(SIMILARITIES)} other than "
                         f"'{similarity}', got {check!r}")
    t0 = time.perf_counter()
    fixed_full, moving_full = as_image_batch(fixed, "fixed"), as_image_batch(moving, "moving")
    check_image_pair(fixed_full, moving_full)
    device = torch.device(device) if device is not None else fixed_full.device
    fixed_full, moving_full = fixed_full.to(device), moving_full.to(device)
    check_images(to_gray(fixed_full), to_gray(moving_full))
    H, W = fixed_full.shape[-2:]
    names = (similarity, check)
    sim_kw = {k: solver[k] for k in _SCORE_KEYS if k in solver}
    zero = torch.zeros(1, 2, H, W, device=device)
    notes: List[str] = []
    flows = {"identity": zero}
    A0 = None
    if init_affine is not None:
        A0 = affine_to_3x3(as_affine(init_affine, device))
    elif init == "affine" and method != "affine":
        stage = {k: v for k, v in solver.items() if k in _AFFINE_STAGE_KEYS}
        A0 = solve_pair(fixed_full, moving_full, "affine", similarity, progress=progress, **stage).affine
    if A0 is not None:
        flows["affine"] = affine_to_flow(A0[None], H, W)
        scores = score_flows(fixed_full, moving_full, flows, names, **sim_kw)
        ok, why = prefer(scores, "identity", "affine", names)
        if not ok and keep_best:
            notes.append(f"initial affine dropped, the method starts from the identity: {why}")
            A0 = None
    res = solve_pair(fixed_full, moving_full, method, similarity, init_affine=None if A0 is None else A0[:2],
                     progress=progress, **solver)
    flows["final"] = res.flow
    results = {"final": res}
    order = ["final"]
    if A0 is not None and method != "affine" and keep_best:
        # an affine start can lead the field into another basin: the identity start is run too, and
        # the affine start's candidates must beat its result on both similarities
        ref = solve_pair(fixed_full, moving_full, method, similarity, init_affine=None, progress=progress, **solver)
        flows["identity start"], results["identity start"] = ref.flow, ref
        order = ["identity start", "affine", "final"]
    elif A0 is not None:
        order = ["affine", "final"]
    scores = score_flows(fixed_full, moving_full, flows, names, **sim_kw)
    kept = "identity"
    for cand in order:
        ok, why = prefer(scores, kept, cand, names)
        notes.append(why)
        if ok or not keep_best:
            kept = cand
    if kept in results:
        res = results[kept]
        if kept != "final":
            notes.append(f"returning the {method} result from the identity start: the result from the affine "
                         f"start was not better on both {similarity} and {check}")
    else:
        notes.append(f"returning the {kept}: the {method} result was not better on both {similarity} and {check}")
        flow = flows[kept]
        with torch.no_grad():
            warped, _ = flow_warp(moving_full, flow)
        res = RegistrationResult(flow=flow, warped=warped, affine=A0 if kept == "affine" else None,
                                 translated=None, losses=res.losses)
    res.kept, res.scores, res.notes = kept, scores, notes
    res.seconds = time.perf_counter() - t0
    return res
