"""Never worse than the input: candidate scoring and selection around the per-pair solver.

:func:`register_pair` runs the optional affine stage and :func:`~fmdepth.registration.solver.solve_pair`,
scores the candidates (identity, affine, final) on the chosen similarity and on an independent
check similarity (:func:`score_flows`) and keeps a candidate only if it is better on both. A dense
field must also agree with the field registered the other way round (:func:`inverse_consistency`):
where every similarity is fooled alike (a repeated structure matched one period off), the two
directions disagree. :func:`keep_if_better` applies the similarity guard to a result from
elsewhere (a learned system).
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from fmdepth.geometry import affine_to_3x3, affine_to_flow, check_image_pair, flow_warp
from fmdepth.losses import SIMILARITIES, correlation_ratio, to_gray
from fmdepth.metrics.registration import RegistrationResult

from .solver import (DEFAULT_MIND_RADIUS, DEFAULT_SIMILARITY, as_affine, as_image_batch, check_method, make_similarity,
                     solve_pair)

# the independent check of register_pair; "mind" for every other similarity
CHECK_SIMILARITY = {"mind": "ngf"}

# solve_pair settings that the affine stage of register_pair (init="affine") inherits
_AFFINE_STAGE_KEYS = ("levels", "optimizer", "mi_bins", "ncc_window", "mi_samples", "feature_encoder",
                      "mind_radius", "mind_dilation", "mind_ngf_weight", "mind_mi_weight", "seed")
# register_pair's forward-backward limit: mean inverse-consistency error as a fraction of the shorter
# side (7.7 px at 256). Chosen on the tuning pairs of bench/registration.py --cross-modality tuning
# (12 per kind, seeds 500-511, plus 4 MNI152 T1 vs white-matter pairs): their largest mean error
# was 5.1 px (photo vs disparity, where the field is fine), so the limit is 1.5x that.
DEFAULT_CONSISTENCY_LIMIT = 0.03
# ... measured away from the border (this fraction of each side), where fields are extrapolated
_CONSISTENCY_MARGIN = 1 / 16

# mind_mi_weight="auto": when the correlation ratio eta^2(warped moving | fixed) after the MIND-SSC
# field is at least FUNCTIONAL_ETA, the moving image's intensities are (nearly) a function of the
# fixed image's and the field is solved again with DEFAULT_MIND_MI_WEIGHT x MI added to the objective.
# Chosen on tuning pairs only: bench/registration.py's tuning kinds (seeds 500-511) reach at most
# 0.89 (a channel remap; disparity <= 0.14, edges <= 0.37), MNI152 T1 vs grey / white matter at
# other slices than the held-out kind's (64/76/88/100, seeds 600-607) at least 0.95; 0.92 lies
# between. MI at 0.2 took those medical pairs from 0.49 / 1.15 to 0.38 / 1.05 px (0.1: 0.39 grey
# matter, 0.3: 0.41, 0.5: 0.43 / 1.08) and the photo kinds from 0.37 / 1.84 / 1.14 to 0.33 / 2.45 /
# 1.38 px: worse where intensities are not a function of each other, hence the test.
FUNCTIONAL_ETA = 0.92
DEFAULT_MIND_MI_WEIGHT = 0.2

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


@torch.no_grad()
def inverse_consistency(forward: torch.Tensor, backward: torch.Tensor) -> float:
    """Mean forward-backward error (pixels) of a pair of fields registered both ways.

    ``forward`` (1, 2, H, W) on the fixed grid maps fixed p to moving ``p + forward(p)``;
    ``backward`` (1, 2, H, W) on the moving grid maps moving q to fixed ``q + backward(q)``. The
    error is ``|forward(p) + backward(p + forward(p))|``, averaged over the fixed pixels that map
    inside the moving image, 1/16 of each side away from the border (0 for exact inverses).
    """
    if forward.shape != backward.shape or forward.dim() != 4 or forward.shape[1] != 2:
        raise ValueError(f"inverse_consistency: expected two (1, 2, H, W) fields of one shape, "
                         f"got {tuple(forward.shape)} and {tuple(backward.shape)}")
    back, valid = flow_warp(backward.to(forward), forward)
    err = (forward + back).pow(2).sum(1, keepdim=True).sqrt()
    H, W = forward.shape[-2:]
    mh, mw = int(H * _CONSISTENCY_MARGIN), int(W * _CONSISTENCY_MARGIN)
    inner = torch.zeros_like(valid)
    inner[..., mh:H - mh, mw:W - mw] = True
    mask = valid & inner
    if int(mask.sum()) == 0:
        mask = valid if bool(valid.any()) else torch.ones_like(valid)
    return float(err[mask].mean())


def functional_eta(fixed: torch.Tensor, moving: torch.Tensor, flow: torch.Tensor) -> Optional[float]:
    """eta^2 of ``moving`` warped by ``flow`` given ``fixed`` (luminance, inside pixels), or None if undefined."""
    with torch.no_grad():
        warped, valid = flow_warp(to_gray(moving), flow)
    try:
        return correlation_ratio(to_gray(fixed), warped, mask=valid)
    except ValueError:  # nothing inside, or a constant warped image: no evidence either way
        return None


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
                  check_similarity: Optional[str] = None, consistency_limit: float = DEFAULT_CONSISTENCY_LIMIT,
                  mind_mi_weight: Union[str, float] = "auto", progress: bool = False, device=None,
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

    Dense fields (``deformable``) are also checked the other way round: the pair is registered
    from moving to fixed with the same settings, and a field whose mean forward-backward error
    (:func:`inverse_consistency`) exceeds ``consistency_limit`` x the shorter side is not trusted
    and drops out of the choice (the affine or the identity is kept instead). This catches the
    failures no similarity sees: on the held-out ``rocket`` pairs of the bench (a lattice tower
    and a rocket, vertical and repetitive) MIND-SSC, NGF and MI all score a field that slid ~20 px
    along them better than the identity, and it ended worse than the input; the two directions
    disagree there by 9-14 px against at most 5.1 px on the tuning pairs. It doubles the time.
    ``result.kept``, ``result.scores``, ``result.consistency`` (px per field candidate) and
    ``result.notes`` say which was kept and why.

    With MIND-SSC and a dense field, ``mind_mi_weight="auto"`` (the default) tests after the
    first solve whether the registered moving image's intensities are a function of the fixed
    image's: its correlation ratio eta^2 (:func:`fmdepth.losses.correlation_ratio`) given the fixed
    image is at least ``FUNCTIONAL_ETA`` (0.92; e.g. a T1 brain image and its tissue map). Then MI
    is a sound objective, and the field is solved again with ``DEFAULT_MIND_MI_WEIGHT`` (0.2) x MI
    added (more accurate there; on photo vs disparity or edge maps MI makes it worse). The backward
    run of the forward-backward check keeps the objective without MI (it only checks; MI makes a
    solve ~1.6x as slow). ``result.correlation_ratio`` and ``result.mind_mi_weight`` say what was
    measured and used.

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
        consistency_limit: largest mean forward-backward error of a kept dense field, as a
            fraction of the shorter side (default 0.03, 7.7 px at 256); 0 = no backward run.
        mind_mi_weight: ``"auto"`` (see above) or a weight >= 0 of MI added to the MIND-SSC
            objective on every solve (0 = never); ignored for other similarities.
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
    if not consistency_limit >= 0:
        raise ValueError(f"consistency_limit: must be >= 0 (a fraction of the shorter side; 0 = off), "
                         f"got {consistency_limit}")
    if mind_mi_weight != "auto" and (isinstance(mind_mi_weight, (str, bool)) or not mind_mi_weight >= 0):
        raise ValueError(f"mind_mi_weight: expected 'auto' or a weight >= 0, got {mind_mi_weight!r}")
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
    # a given MI weight applies to every solve (the affine stage too); "auto" decides after the first one
    auto_mi = mind_mi_weight == "auto" and similarity == "mind" and method == "deformable"
    solver = {**solver, "mind_mi_weight": 0.0 if mind_mi_weight == "auto" else float(mind_mi_weight)}
    notes: List[str] = []
    flows = {"identity": zero}
    A0 = None
    if init_affine is not None:
        A0 = affine_to_3x3(as_affine(init_affine, device))
    elif init == "affine" and method != "affine":
        stage = {k: v for k, v in solver.items() if k in _AFFINE_STAGE_KEYS}
        A0 = solve_pair(fixed_full, moving_full, "affine", similarity, progress=progress, **stage).affine
    check_both_ways = consistency_limit > 0 and keep_best and method == "deformable"
    limit = consistency_limit * min(H, W)
    consistency: Dict[str, float] = {}
    if A0 is not None:
        flows["affine"] = affine_to_flow(A0[None], H, W)
        scores = score_flows(fixed_full, moving_full, flows, names, **sim_kw)
        ok, why = prefer(scores, "identity", "affine", names)
        if not ok and keep_best:
            notes.append(f"initial affine dropped, the method starts from the identity: {why}")
            A0 = None
        elif check_both_ways and init_affine is None:
            # the affine stage the other way round must invert it too
            A_back = solve_pair(moving_full, fixed_full, "affine", similarity, progress=progress, **stage).affine
            consistency["affine"] = inverse_consistency(flows["affine"], affine_to_flow(A_back[None], H, W))
            if consistency["affine"] > limit:
                notes.append(f"initial affine dropped, the method starts from the identity: it and the affine "
                             f"registered from moving to fixed disagree by {consistency['affine']:.2f} px on "
                             f"average (limit {limit:.2f} px)")
                A0 = None
    res = solve_pair(fixed_full, moving_full, method, similarity, init_affine=None if A0 is None else A0[:2],
                     progress=progress, **solver)
    eta = None
    if auto_mi:
        eta = functional_eta(fixed_full, moving_full, res.flow)
        if eta is not None and eta >= FUNCTIONAL_ETA:
            solver["mind_mi_weight"] = DEFAULT_MIND_MI_WEIGHT
            notes.append(f"correlation ratio of the registered moving image given the fixed one {eta:.3f} >= "
                         f"{FUNCTIONAL_ETA:g}: its intensities are a function of the fixed image's, so the field "
                         f"was solved again with {DEFAULT_MIND_MI_WEIGHT:g} x MI added to the objective")
            res = solve_pair(fixed_full, moving_full, method, similarity,
                             init_affine=None if A0 is None else A0[:2], progress=progress, **solver)
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
    if check_both_ways:
        # the same pair the other way round, from the identity: a field it does not invert is not trusted
        # (with the automatic MI test, the check keeps the MIND-SSC objective: MI makes a solve ~1.6x as slow)
        back_solver = {**solver, "mind_mi_weight": 0.0} if auto_mi else solver
        back = solve_pair(moving_full, fixed_full, method, similarity, init_affine=None, progress=progress,
                          **back_solver).flow
        for cand in [c for c in order if c in results]:
            consistency[cand] = inverse_consistency(flows[cand], back)
            if consistency[cand] > limit:
                notes.append(f"{cand} dropped: it and the field registered from moving to fixed disagree by "
                             f"{consistency[cand]:.2f} px on average (limit {limit:.2f} px = "
                             f"{consistency_limit:g} x the shorter side); every similarity can be fooled alike "
                             f"(e.g. a repeated structure matched one period off)")
                order = [c for c in order if c != cand]
    kept = "identity"
    for cand in order:
        ok, why = prefer(scores, kept, cand, names)
        notes.append(why)
        if ok or not keep_best:
            kept = cand
    lost = (f"was not better on both {similarity} and {check}" if "final" in order
            else "failed the forward-backward check")
    if kept in results:
        res = results[kept]
        if kept != "final":
            notes.append(f"returning the {method} result from the identity start: the result from the affine "
                         f"start {lost}")
    else:
        notes.append(f"returning the {kept}: the {method} result {lost}")
        flow = flows[kept]
        with torch.no_grad():
            warped, _ = flow_warp(moving_full, flow)
        res = RegistrationResult(flow=flow, warped=warped, affine=A0 if kept == "affine" else None,
                                 translated=None, losses=res.losses)
    res.kept, res.scores, res.notes, res.consistency = kept, scores, notes, consistency
    res.correlation_ratio, res.mind_mi_weight = eta, solver["mind_mi_weight"] if similarity == "mind" else 0.0
    res.seconds = time.perf_counter() - t0
    return res
