"""Per-pair registration recovers known transforms on synthetic multimodal pairs."""
import numpy as np
import pytest
import torch

from fmdepth.data.pairs import make_pair
from fmdepth.metrics.registration import folding_fraction, landmark_error, mean_corner_error
from fmdepth.geometry import affine_to_flow, compose_affine_flow, resize_flow
from fmdepth.losses import Similarity
from fmdepth.registration import DEFAULT_ITERATIONS, default_lr, register_pair


@pytest.mark.parametrize("similarity", ["ngf", pytest.param("mi", marks=pytest.mark.slow)])
def test_affine_recovers_known_affine(similarity):
    # 64x64 remapped (non-monotonic intensities) photo; random rotation/scale/shear/translation
    p = make_pair((64, 64), modality="remap", image="camera", affine=True, rms=0.0, seed=2)
    before = mean_corner_error(np.eye(3), p.affine, 64, 64)
    r = register_pair(p.fixed, p.moving, "affine", similarity, iterations=(60, 40))
    err = mean_corner_error(r.affine, p.affine, 64, 64)
    assert before > 2.0
    assert err < 0.5, f"mean corner error {err:.3f} px (before {before:.2f})"
    assert r.flow.shape == (1, 2, 64, 64) and r.warped.shape == (1, 1, 64, 64)


def test_deformable_ngf_reduces_landmark_error():
    # 96x96 pair, smooth deformation of 3 px RMS, moving = non-monotonic remap of the photo
    p = make_pair((96, 96), modality="remap", image="camera", rms=3.0, seed=0)
    before = landmark_error(p.landmarks_fixed, p.landmarks_moving)["lre_mean"]
    r = register_pair(p.fixed, p.moving, "deformable", "ngf", iterations=(60, 40, 30), init="identity")
    after = landmark_error(p.landmarks_fixed, p.landmarks_moving, r.flow[0])
    assert before > 2.0
    assert after["lre_mean"] < 0.6, f"{before:.2f} -> {after}"
    assert folding_fraction(r.flow) == 0.0


def test_default_learning_rates():
    assert default_lr("affine", "mi") == 0.01
    assert default_lr("deformable", "mi") == 0.2 and default_lr("deformable", "ncc") == 0.2
    assert default_lr("deformable", "ngf") == 0.5 and default_lr("translation", "mse") == 0.5
    assert default_lr("deformable", "mind") == 0.5
    from fmdepth.registration import default_grid_spacing

    assert default_grid_spacing("mind") == 32 and default_grid_spacing("mind", 96, 128) == 12
    assert default_grid_spacing("ngf") == 16 and default_grid_spacing("mi", 96, 96) == 16
    assert DEFAULT_ITERATIONS["deformable"] == (120, 80, 40)


def test_deformable_mi_defaults_on_bench_like_pair():
    # the benchmark's setting at half size: 128x128, 4 px RMS, all register_pair defaults (MI,
    # lr 0.2 px, smoothness 0.5, 120/80/40 iterations) except fewer sampled pixels to stay fast
    p = make_pair((128, 128), modality="remap", image="coffee", rms=4.0, seed=102, num_landmarks=20)
    before = landmark_error(p.landmarks_fixed, p.landmarks_moving)["lre_mean"]
    r = register_pair(p.fixed, p.moving, "deformable", mi_samples=2048)
    after = landmark_error(p.landmarks_fixed, p.landmarks_moving, r.flow[0])["lre_mean"]
    assert before > 3.0
    assert after < 0.75, f"{before:.2f} -> {after:.2f}"
    assert folding_fraction(r.flow) == 0.0


@pytest.mark.slow
def test_deformable_mi_reduces_landmark_error():
    p = make_pair((96, 96), modality="remap", image="astronaut", rms=3.0, seed=1)
    before = landmark_error(p.landmarks_fixed, p.landmarks_moving)["lre_mean"]
    r = register_pair(p.fixed, p.moving, "deformable", "mi", iterations=(60, 40, 30))
    after = landmark_error(p.landmarks_fixed, p.landmarks_moving, r.flow[0])["lre_mean"]
    assert after < 0.6 and after < 0.3 * before, f"{before:.2f} -> {after:.2f}"


def test_diffeomorphic_and_translation_run():
    p = make_pair((48, 48), modality="same", image="camera", rms=2.0, seed=5, num_landmarks=10)
    r = register_pair(p.fixed, p.moving, "deformable", "ncc", levels=2, iterations=(10, 5), diffeomorphic=True)
    assert torch.isfinite(r.flow).all() and folding_fraction(r.flow) == 0.0
    t = register_pair(p.fixed, p.moving, "translation", levels=1, iterations=2, keep_best=False, init="identity")
    assert t.kept == "final" and set(t.scores) == {"identity", "final"}
    assert t.translated.shape == (1, 1, 48, 48) and torch.isfinite(t.flow).all()


def test_init_affine_is_used():
    p = make_pair((48, 48), modality="same", image="camera", affine=True, rms=0.0, seed=6)
    r = register_pair(p.fixed, p.moving, "deformable", "ncc", iterations=0, init_affine=p.affine)
    np.testing.assert_allclose(r.flow[0].numpy(), affine_to_flow(torch.tensor(p.affine)[None].float(), 48, 48)[0],
                               atol=1e-3)


def test_helpers_hand_values():
    A = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]])
    f = affine_to_flow(A, 4, 5)
    assert torch.allclose(f[:, 0], torch.full((1, 4, 5), 2.0)) and torch.allclose(f[:, 1], torch.full((1, 4, 5), -1.0))
    # compose with a zero deformation = the affine
    assert torch.allclose(compose_affine_flow(A, torch.zeros(1, 2, 4, 5)), f)
    # a constant 1 px flow on 5 px becomes 2 px on 9 px (align_corners convention)
    assert torch.allclose(resize_flow(torch.ones(1, 2, 5, 5), (9, 9)), torch.full((1, 2, 9, 9), 2.0))


def test_bad_inputs():
    a, b = torch.rand(1, 32, 32), torch.rand(1, 32, 40)
    with pytest.raises(ValueError, match="sizes differ"):
        register_pair(a, b, "deformable", "ngf")
    with pytest.raises(ValueError, match="method"):
        register_pair(a, a, "elastic", "ngf")
    with pytest.raises(ValueError, match="similarity"):
        Similarity("ssd")
    with pytest.raises(ValueError, match="moving"):
        register_pair(a, torch.rand(2, 1, 32, 32), "affine", "mse")


def test_default_is_mind_and_reduces_error_on_a_remap_pair():
    p = make_pair((96, 96), modality="chanremap", image="astronaut", rms=3.0, seed=3, num_landmarks=15)
    before = landmark_error(p.landmarks_fixed, p.landmarks_moving)["lre_mean"]
    r = register_pair(p.fixed, p.moving, iterations=(60, 40, 30))
    after = landmark_error(p.landmarks_fixed, p.landmarks_moving, r.flow[0])["lre_mean"]
    assert before > 2.0 and after < 0.35 * before, f"{before:.2f} -> {after:.2f}"
    assert r.kept == "final" and set(r.scores) == {"identity", "final"}  # init="identity" by default
    assert set(r.scores["final"]) == {"mind", "ngf"}
    assert all(r.scores["final"][n] < r.scores["identity"][n] for n in ("mind", "ngf"))
    assert any("final improves on" in n for n in r.notes)


def test_scoring_uses_the_solver_mind_radius():
    from fmdepth.commands.register import MIND_RADIUS
    from fmdepth.registration import score_flows
    from fmdepth.registration.solver import DEFAULT_MIND_RADIUS

    assert MIND_RADIUS == DEFAULT_MIND_RADIUS == 2  # the CLI default is the solver's
    p = make_pair((64, 64), modality="chanremap", image="astronaut", rms=2.0, seed=5, num_landmarks=8)
    f, m = torch.from_numpy(p.fixed)[None], torch.from_numpy(p.moving)[None]
    r = register_pair(f, m, iterations=(5, 5, 5))
    flows = {"identity": torch.zeros_like(r.flow), "final": r.flow}
    same = score_flows(f, m, flows, ("mind",), mind_radius=DEFAULT_MIND_RADIUS)
    other = score_flows(f, m, flows, ("mind",), mind_radius=1)
    assert r.scores["final"]["mind"] == pytest.approx(same["final"]["mind"], abs=1e-6)
    assert r.scores["final"]["mind"] != pytest.approx(other["final"]["mind"], abs=1e-6)
    r1 = register_pair(f, m, iterations=(5, 5, 5), mind_radius=1)  # a given radius reaches the scoring too
    other1 = score_flows(f, m, {"identity": flows["identity"], "final": r1.flow}, ("mind",), mind_radius=1)
    assert r1.scores["final"]["mind"] == pytest.approx(other1["final"]["mind"], abs=1e-6)


def test_a_wrong_initial_affine_is_dropped_and_identity_kept():
    p = make_pair((64, 64), modality="remap", image="camera", rms=2.0, seed=1, num_landmarks=10)
    wrong = np.array([[0.9, 0.2, 8.0], [-0.2, 0.9, -6.0]])
    r = register_pair(p.fixed, p.moving, "deformable", init_affine=wrong, iterations=0)
    # 0 iterations from the identity = the identity again: not better, so the identity is kept
    assert r.kept == "identity" and torch.count_nonzero(r.flow) == 0 and r.affine is None
    assert any("initial affine dropped" in n for n in r.notes)
    np.testing.assert_allclose(r.warped[0].numpy(), p.moving, atol=1e-5)
    raw = register_pair(p.fixed, p.moving, "deformable", init_affine=wrong, iterations=0, keep_best=False)
    assert raw.kept == "final" and torch.count_nonzero(raw.flow) > 0


def test_a_right_initial_affine_is_kept_when_the_method_adds_nothing():
    p = make_pair((64, 64), modality="remap", image="camera", affine=True, rms=0.0, seed=6, num_landmarks=10)
    r = register_pair(p.fixed, p.moving, "deformable", init_affine=p.affine, iterations=0)
    assert r.kept == "affine"  # the final field equals the affine: not strictly better on both
    np.testing.assert_allclose(r.flow[0].numpy(), affine_to_flow(torch.tensor(p.affine)[None].float(), 64, 64)[0],
                               atol=1e-3)
    assert r.scores["affine"]["mind"] < r.scores["identity"]["mind"]


def test_init_affine_stage_not_worse_than_identity():
    p = make_pair((64, 64), modality="edges", image="coffee", affine=True, rms=2.0, seed=4, num_landmarks=12,
                  affine_kwargs=dict(rotation_deg=4.0, scale=0.04, shear=0.0, translation=4 / 64))
    before = landmark_error(p.landmarks_fixed, p.landmarks_moving)["lre_mean"]
    r = register_pair(p.fixed, p.moving, "deformable", init="affine", levels=2, iterations=(40, 30))
    after = landmark_error(p.landmarks_fixed, p.landmarks_moving, r.flow[0])["lre_mean"]
    assert after < before and r.kept in ("affine", "final", "identity start") and "affine" in r.scores
    assert "identity start" in r.scores  # an affine start is checked against the identity start


def test_a_misleading_affine_start_loses_to_the_identity_start(monkeypatch):
    import fmdepth.registration.select as select

    p = make_pair((64, 64), modality="remap", image="camera", affine=True, rms=2.0, seed=2, num_landmarks=12,
                  affine_kwargs=dict(rotation_deg=4.0, scale=0.04, shear=0.0, translation=4 / 64))
    real = select.solve_pair

    def solve(fixed, moving, method, similarity, init_affine=None, **kw):
        res = real(fixed, moving, method, similarity, init_affine=init_affine, **kw)
        if method == "deformable" and init_affine is not None:  # a field run from the affine into a wrong basin
            yy, xx = torch.meshgrid(torch.linspace(0, 3, 64), torch.linspace(0, 3, 64), indexing="ij")
            res.flow = res.flow + 6.0 * torch.stack([torch.sin(yy), torch.cos(xx)])[None]
        return res

    monkeypatch.setattr(select, "solve_pair", solve)
    r = register_pair(p.fixed, p.moving, "deformable", init="affine", levels=2, iterations=(40, 30))
    assert r.kept == "identity start", r.notes
    ref = real(p.fixed, p.moving, "deformable", "mind", levels=2, iterations=(40, 30))
    torch.testing.assert_close(r.flow, ref.flow)  # exactly the identity-start result
    assert r.scores["identity start"]["mind"] < r.scores["final"]["mind"]
    assert any("from the identity start" in n for n in r.notes)


def test_undefined_similarity_is_a_clear_error():
    flat, img = torch.full((1, 32, 32), 0.3), torch.rand(1, 32, 32)
    with pytest.raises(ValueError, match="moving image: is constant"):
        register_pair(img, flat)
    bad = img.clone()
    bad[0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="fixed image: has non-finite"):
        register_pair(bad, img)
    with pytest.raises(ValueError, match="check_similarity"):
        register_pair(img, img, similarity="ngf", check_similarity="ngf")
    with pytest.raises(ValueError, match="init"):
        register_pair(img, img, init="nbb")


def test_keep_if_better_guards_other_results():
    from fmdepth.registration import RegistrationResult, keep_if_better

    p = make_pair((64, 64), modality="edges", image="astronaut", rms=3.0, seed=2, num_landmarks=10)
    f, m = torch.from_numpy(p.fixed)[None], torch.from_numpy(p.moving)[None]
    true = torch.from_numpy(p.flow)[None]
    good = keep_if_better(f, m, RegistrationResult(flow=true, warped=m))
    assert good.kept == "final" and torch.equal(good.flow, true)
    wrong = -true  # the displacement in the opposite direction
    bad = keep_if_better(f, m, RegistrationResult(flow=wrong, warped=m))
    assert bad.kept == "identity" and torch.count_nonzero(bad.flow) == 0
    assert "not better" in bad.notes[0] and "returning the identity" in bad.notes[-1]


def test_mind_objective_adds_weighted_ngf():
    from fmdepth.commands.register import MIND_NGF_WEIGHT
    from fmdepth.losses import Similarity
    from fmdepth.registration.solver import DEFAULT_MIND_NGF_WEIGHT, WeightedSimilarity

    assert MIND_NGF_WEIGHT == DEFAULT_MIND_NGF_WEIGHT == 0.1
    from fmdepth.commands.register import CONSISTENCY_LIMIT
    from fmdepth.registration import DEFAULT_CONSISTENCY_LIMIT

    assert CONSISTENCY_LIMIT == DEFAULT_CONSISTENCY_LIMIT == 0.03  # the CLI's copy (no torch import)
    f, w = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    valid = torch.ones(1, 1, 32, 32, dtype=torch.bool)
    valid[..., :4] = False
    mind, ngf = Similarity("mind", mind_radius=2), Similarity("ngf")
    both = WeightedSimilarity([(mind, 1.0), (ngf, 0.1)])
    assert float(both(f, w, valid)) == pytest.approx(float(mind(f, w, valid)) + 0.1 * float(ngf(f, w, valid)), abs=1e-6)
    p = make_pair((64, 64), modality="chanremap", image="astronaut", rms=2.0, seed=5, num_landmarks=8)
    a = register_pair(p.fixed, p.moving, iterations=(10, 10, 10))
    b = register_pair(p.fixed, p.moving, iterations=(10, 10, 10), mind_ngf_weight=0.0)
    assert not torch.allclose(a.flow, b.flow)  # the weight reaches the objective
    with pytest.raises(ValueError, match="mind_ngf_weight"):
        register_pair(p.fixed, p.moving, mind_ngf_weight=-1.0)
    from fmdepth.registration import solve_pair

    c = solve_pair(p.fixed, p.moving, iterations=(10, 10, 10), mind_mi_weight=0.2)
    assert not torch.allclose(a.flow, c.flow) and not torch.allclose(b.flow, c.flow)  # MI reaches it too
    with pytest.raises(ValueError, match="mind_mi_weight"):
        solve_pair(p.fixed, p.moving, mind_mi_weight=-1.0)


def test_mi_is_added_where_intensities_are_a_function_of_each_other(monkeypatch):
    import fmdepth.registration.select as select
    from fmdepth.commands.register import FUNCTIONAL_ETA as CLI_ETA, MIND_MI_WEIGHT
    from fmdepth.registration import DEFAULT_MIND_MI_WEIGHT, FUNCTIONAL_ETA

    assert CLI_ETA == FUNCTIONAL_ETA == 0.92 and MIND_MI_WEIGHT == DEFAULT_MIND_MI_WEIGHT == 0.2  # CLI copies
    real, weights = select.solve_pair, []

    def solve(*args, **kw):
        weights.append(kw["mind_mi_weight"])
        return real(*args, **kw)

    monkeypatch.setattr(select, "solve_pair", solve)
    it = dict(iterations=(20, 10, 10))
    # a tissue-map-like pair: moving = a non-monotonic function of the (smoothed) fixed photo
    import skimage.data
    import skimage.filters

    cam = skimage.filters.gaussian(skimage.data.camera()[::4, ::4].astype(np.float32) / 255, 1.5)
    p = make_pair((64, 64), modality="paired", image=np.stack([cam, 4 * (cam - 0.5) ** 2]).astype(np.float32),
                  rms=2.0, seed=1, num_landmarks=10)
    r = register_pair(p.fixed, p.moving, **it)
    assert r.correlation_ratio >= FUNCTIONAL_ETA and r.mind_mi_weight == DEFAULT_MIND_MI_WEIGHT
    assert weights == [0.0, 0.2, 0.0]  # the first solve, again with MI, the backward check without
    assert any("MI added" in n for n in r.notes)
    # moving = the edge magnitude of the photo: not a function of its intensities
    q = make_pair((64, 64), modality="edges", image="camera", rms=2.0, seed=1, num_landmarks=10)
    weights.clear()
    r = register_pair(q.fixed, q.moving, **it)
    assert r.correlation_ratio < FUNCTIONAL_ETA and r.mind_mi_weight == 0.0 and weights == [0.0, 0.0]
    assert not any("MI added" in n for n in r.notes)
    weights.clear()
    r = register_pair(p.fixed, p.moving, mind_mi_weight=0.0, **it)  # never: nothing measured
    assert r.correlation_ratio is None and r.mind_mi_weight == 0.0 and weights == [0.0, 0.0]
    weights.clear()
    r = register_pair(q.fixed, q.moving, mind_mi_weight=0.3, **it)  # always
    assert r.correlation_ratio is None and r.mind_mi_weight == 0.3 and weights == [0.3, 0.3]
    weights.clear()
    register_pair(q.fixed, q.moving, init="affine", mind_mi_weight=0.3, levels=2, iterations=(10, 10))
    assert len(weights) >= 3 and set(weights) == {0.3}  # the affine stage (the first call) too
    r = register_pair(p.fixed, p.moving, "deformable", "ngf", **it)  # MIND only
    assert r.correlation_ratio is None and r.mind_mi_weight == 0.0
    for bad in (-0.1, float("nan"), "often", True):
        with pytest.raises(ValueError, match="mind_mi_weight"):
            register_pair(p.fixed, p.moving, mind_mi_weight=bad)


def test_inverse_consistency_hand_values():
    from fmdepth.registration import inverse_consistency

    H = W = 32
    A = torch.tensor([[[1.02, 0.05, 2.0], [-0.04, 0.98, -1.5], [0.0, 0.0, 1.0]]])
    fwd, back = affine_to_flow(A, H, W), affine_to_flow(torch.linalg.inv(A), H, W)
    assert inverse_consistency(fwd, back) < 1e-4  # exact inverses
    shift = torch.zeros(1, 2, H, W)
    shift[:, 0] = 3.0
    assert inverse_consistency(shift, torch.zeros(1, 2, H, W)) == pytest.approx(3.0)
    assert inverse_consistency(shift, -shift) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="inverse_consistency"):
        inverse_consistency(shift, shift[..., :16])


def _backward_fooled(monkeypatch, moving, offset):
    """register_pair's backward runs (those given ``moving`` as their fixed image) return a result
    ``offset`` px off; -> the list of (method, is backward) of every solve_pair call."""
    import fmdepth.registration.select as select

    real, calls = select.solve_pair, []

    def solve(fixed, moving_, method, similarity, init_affine=None, **kw):
        res = real(fixed, moving_, method, similarity, init_affine=init_affine, **kw)
        calls.append((method, fixed is moving))
        if fixed is moving:
            res.flow = res.flow + offset
            if res.affine is not None:
                res.affine = res.affine.clone()
                res.affine[:2, 2] += offset
        return res

    monkeypatch.setattr(select, "solve_pair", solve)
    return calls


def test_a_field_the_backward_registration_does_not_invert_is_dropped(monkeypatch):
    from fmdepth.registration import DEFAULT_CONSISTENCY_LIMIT

    p = make_pair((64, 64), modality="remap", image="camera", rms=2.5, seed=0, num_landmarks=12)
    f, m = torch.from_numpy(p.fixed)[None], torch.from_numpy(p.moving)[None]
    it = dict(iterations=(30, 20, 10), mind_mi_weight=0.0)  # one objective (the MI test is tested on its own)
    good = register_pair(f, m, **it)
    assert good.kept == "final" and good.consistency["final"] < DEFAULT_CONSISTENCY_LIMIT * 64
    calls = _backward_fooled(monkeypatch, m, 6.0)  # the backward run registers m as the fixed image
    r = register_pair(f, m, **it)
    assert calls == [("deformable", False), ("deformable", True)]
    assert r.kept == "identity" and torch.count_nonzero(r.flow) == 0, r.notes
    assert r.consistency["final"] > DEFAULT_CONSISTENCY_LIMIT * 64
    assert any("disagree by" in n for n in r.notes) and "forward-backward" in r.notes[-1]
    calls.clear()
    off = register_pair(f, m, **it, consistency_limit=0)  # off: no backward run
    assert calls == [("deformable", False)] and off.kept == "final" and off.consistency == {}
    loose = register_pair(f, m, **it, consistency_limit=0.5)  # 32 px: trusted
    assert loose.kept == "final"
    with pytest.raises(ValueError, match="consistency_limit"):
        register_pair(f, m, consistency_limit=-0.1)


def test_an_affine_stage_the_backward_stage_does_not_invert_is_dropped(monkeypatch):
    p = make_pair((64, 64), modality="remap", image="camera", affine=True, rms=0.0, seed=6, num_landmarks=10)
    f, m = torch.from_numpy(p.fixed)[None], torch.from_numpy(p.moving)[None]
    calls = _backward_fooled(monkeypatch, m, 0.0)
    r = register_pair(f, m, init="affine", levels=2, iterations=(30, 20))
    assert "affine" in r.consistency and r.consistency["affine"] < 1.92, r.notes
    assert ("affine", True) in calls  # the affine stage was run the other way round
    monkeypatch.undo()
    _backward_fooled(monkeypatch, m, 8.0)
    r = register_pair(f, m, init="affine", levels=2, iterations=(30, 20))
    assert r.consistency["affine"] > 1.92
    assert any("initial affine dropped" in n and "disagree" in n for n in r.notes)
    assert "identity start" not in r.scores  # dropped before the method ran: one start only
