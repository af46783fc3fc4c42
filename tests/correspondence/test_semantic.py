"""Semantic alignment + landmarks: soft-argmax, losses on hand values, PCK, data, one step, task."""
import dataclasses
import math

import pytest
import torch

from fmdepth.data.semantic import WarpedPairDataset, collate_semantic, random_warp_flow
from fmdepth.geometry.points import carry_points
from fmdepth.losses.semantic import concentration_loss, laplace_nll, separation_loss
from fmdepth.metrics import pck
from fmdepth.models.semantic import SemanticSystem
from fmdepth.networks import SemanticAligner
from fmdepth.networks.semantic import local_correlation, soft_argmax


def test_soft_argmax_of_a_delta_is_its_location():
    logits = torch.full((2, 3, 6, 7), -1e4)
    where = [[(1, 2), (5, 0), (3, 6)], [(0, 0), (2, 2), (4, 5)]]  # (row, col)
    for bi, row in enumerate(where):
        for k, (y, x) in enumerate(row):
            logits[bi, k, y, x] = 0.0
    lm, probs = soft_argmax(logits)
    expect = torch.tensor([[[x, y] for y, x in row] for row in where], dtype=torch.float32)
    torch.testing.assert_close(lm, expect)
    torch.testing.assert_close(probs.sum((-2, -1)), torch.ones(2, 3))
    # on a stride-4 grid, cell (2, 3) is centred at pixel ((3 + .5) * 4 - .5, (2 + .5) * 4 - .5)
    lm4, _ = soft_argmax(logits[:1, :1], stride=4)
    torch.testing.assert_close(lm4, torch.tensor([[[2 * 4 + 1.5, 1 * 4 + 1.5]]]))


def test_soft_argmax_is_the_mean_of_a_two_point_heatmap():
    logits = torch.full((1, 1, 1, 5), -1e4)
    logits[0, 0, 0, 1] = logits[0, 0, 0, 3] = 0.0
    lm, probs = soft_argmax(logits)
    torch.testing.assert_close(lm, torch.tensor([[[2.0, 0.0]]]))
    # variance of a 50/50 mass at x = 1 and 3 around 2 is 1 (pixels^2); /scale^2 with scale 2
    torch.testing.assert_close(concentration_loss(probs, lm), torch.tensor(1.0))
    torch.testing.assert_close(concentration_loss(probs, lm, scale=2.0), torch.tensor(0.25))
    # a delta has zero variance
    d = torch.full((1, 1, 3, 3), -1e4)
    d[0, 0, 1, 1] = 0
    lmd, pd = soft_argmax(d)
    assert concentration_loss(pd, lmd) < 1e-6


def test_separation_hinge_on_hand_values():
    lm = torch.tensor([[[0.0, 0.0], [3.0, 4.0], [100.0, 0.0]]])  # distances 5, 100, ~96.1
    # margin 10: only the pair at distance 5 is penalised, by 10 - 5; mean over 3 pairs
    torch.testing.assert_close(separation_loss(lm, margin=10.0), torch.tensor(5.0 / 3))
    torch.testing.assert_close(separation_loss(lm, margin=0.1, scale=100.0), torch.tensor(0.05 / 3))
    assert separation_loss(lm, margin=4.0) == 0
    assert separation_loss(lm[:, :1], margin=10.0) == 0
    lm.requires_grad_(True)
    separation_loss(lm, margin=10.0).backward()
    assert torch.isfinite(lm.grad).all() and lm.grad[0, 0].abs().sum() > 0


def test_laplace_nll_on_hand_values():
    torch.testing.assert_close(laplace_nll(torch.tensor([2.0, -2.0]), torch.tensor([1.0, math.e])),
                               torch.tensor([2.0, 2.0 / math.e + 1.0]))


def test_pck_on_hand_values():
    target = torch.zeros(4, 2)
    pred = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 0.0], [0.0, 5.1]])
    assert pck(pred, target, 0.05, (100, 80)) == 0.5  # threshold 5 px: distances 0, 5, 6, 5.1
    assert pck(pred, target, 0.1, (100, 80)) == 1.0
    assert pck(pred, target, 0.05, (100, 80), mask=torch.tensor([True, True, False, False])) == 1.0
    with pytest.raises(ValueError, match="no keypoints"):
        pck(pred, target, 0.05, (100, 80), mask=torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="pred and target"):
        pck(pred, target[:2], 0.05, (10, 10))


def test_local_correlation_finds_a_known_shift():
    g = torch.Generator().manual_seed(0)
    fb = torch.randn(1, 16, 9, 9, generator=g)
    fa = torch.roll(fb, shifts=(-1, 2), dims=(2, 3))  # a(p) = b(p + (dx=-2, dy=1))
    corr = local_correlation(fa, fb, radius=2)
    best = corr[0, :, 3:6, 3:6].argmax(0)  # interior, away from the roll's wrap-around
    assert (best == (1 + 2) * 5 + (-2 + 2)).all()


def test_carry_points_by_a_constant_flow():
    flow = torch.zeros(1, 2, 10, 12)
    flow[:, 0], flow[:, 1] = 1.5, -2.0
    pts = torch.tensor([[[3.0, 4.0], [0.0, 9.0]]])
    torch.testing.assert_close(carry_points(pts, flow), pts + torch.tensor([1.5, -2.0]))


def test_warped_pairs_are_deterministic_and_consistent():
    ds = WarpedPairDataset(["astronaut", "camera"], height=48, width=48, length=10, seed=3,
                           photometric=0.0, deform=1.0)
    x, y = ds[4], ds[4]
    for f in dataclasses.fields(x):
        assert torch.equal(getattr(x, f.name), getattr(y, f.name)), f.name
    assert not torch.equal(ds[5].flow, x.flow)
    assert WarpedPairDataset(["astronaut"], 48, 48, length=2, seed=4)[0].flow.shape == (2, 48, 48)
    # A(p) == B(p + flow(p)) at the keypoints (no photometric change)
    from fmdepth.geometry.points import sample_at

    ok = x.keypoints_valid
    va = sample_at(x.image_a[None], x.keypoints_a[None])[0][ok]
    vb = sample_at(x.image_b[None], x.keypoints_b[None])[0][ok]
    assert ok.sum() >= 10
    assert (va - vb).abs().mean() < 0.03
    with pytest.raises(ValueError, match="multiples of 8"):
        WarpedPairDataset(height=50, width=48)
    with pytest.raises(ValueError, match="not a scikit-image sample"):
        WarpedPairDataset(["no_such_image"])


def test_random_warp_flow_is_smooth_and_bounded():
    import numpy as np

    flow = random_warp_flow(32, 32, np.random.default_rng(0), max_rotation=10, max_scale=1.1,
                            max_translation=0.05, deform=1.0)
    assert flow.shape == (2, 32, 32) and torch.isfinite(flow).all()
    assert flow.abs().max() < 10 and flow.diff(dim=2).abs().max() < 1.0


def test_one_training_step_is_finite_and_learns():
    torch.manual_seed(0)
    ds = WarpedPairDataset(["astronaut"], height=32, width=32, length=4, seed=0)
    batch = collate_semantic([ds[i] for i in range(2)])
    aligner = SemanticAligner(num_landmarks=4)
    system = SemanticSystem(aligner, {"photometric": 0.5})
    out = system.training_step(batch, 0, want_images=True)
    assert torch.isfinite(out.loss)
    assert {"flow", "photometric", "equivariance", "joint", "concentration", "separation", "epe"} <= set(out.scalars)
    assert out.images["b_warped_to_a"].shape == (3, 32, 32)
    out.loss.backward()
    grads = [p.grad for p in aligner.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    pred = aligner(batch.image_a, batch.image_b)
    assert pred["flow"].shape == (2, 2, 32, 32) and pred["sigma"].min() > 0
    assert pred["landmarks_a"].shape == (2, 4, 2)
    assert set(system.trainable_models()) == {"semantic"}
    with pytest.raises(ValueError, match="unknown loss weights"):
        SemanticSystem(aligner, {"flwo": 1.0})
    with pytest.raises(ValueError, match="multiple of 8"):
        aligner(torch.rand(1, 3, 30, 32), torch.rand(1, 3, 30, 32))


def test_refinement_level_recovers_a_known_shift_from_its_correlation():
    from fmdepth.networks.semantic import RefinementLevel

    torch.manual_seed(0)
    level = RefinementLevel(stride=4, feat_ch=16, ctx_ch=5, radius=2, width=8)
    fb = torch.randn(1, 16, 12, 12)
    fa = torch.roll(fb, shifts=(-1, 2), dims=(2, 3))  # a(p) = b(p + (dx=-2, dy=1)) cells
    zero = torch.zeros(1, 2, 6, 6)  # coarser (stride-8) flow, pixels
    flow, log_sigma, ctx = level(fa, fb, zero, torch.zeros(1, 1, 6, 6), torch.zeros(1, 5, 6, 6))
    assert flow.shape == (1, 2, 12, 12) and log_sigma.shape == (1, 1, 12, 12) and ctx.shape == (1, 8, 12, 12)
    inner = flow[0, :, 3:9, 3:9]  # away from the roll's wrap-around
    torch.testing.assert_close(inner, torch.tensor([-8.0, 4.0]).view(2, 1, 1).expand_as(inner), atol=0.2, rtol=0)
    # an upsampled coarse flow that is already right: B's features are warped onto A's, nothing to add
    right = torch.tensor([-8.0, 4.0]).view(1, 2, 1, 1).expand(1, 2, 6, 6)
    flow, _, _ = level(fa, fb, right, torch.zeros(1, 1, 6, 6), torch.zeros(1, 5, 6, 6))
    torch.testing.assert_close(flow[0, :, 3:9, 3:9], right[0, :, :1, :1].expand(2, 6, 6), atol=0.2, rtol=0)


@pytest.mark.parametrize("finest,affine", [(8, False), (8, True), (4, True), (2, False)])
def test_aligner_coarse_to_fine_shapes_and_config_round_trip(finest, affine):
    torch.manual_seed(0)
    m = SemanticAligner(num_landmarks=3, finest_stride=finest, refine_radius=1, affine_prior=affine)
    out = m(torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48))
    assert out["flow"].shape == (2, 2, 32, 48) and out["sigma"].shape == (2, 1, 32, 48)
    strides = ([8, 8] if affine else [8]) + [4, 2][: {8: 0, 4: 1, 2: 2}[finest]]
    assert [tuple(f.shape) for f in out["coarse_flows"]] == [(2, 2, 32 // s, 48 // s) for s in strides]
    again = SemanticAligner(**m.config())
    again.load_state_dict(m.state_dict())  # strict: the config rebuilds the same architecture
    with pytest.raises(ValueError, match="finest_stride"):
        SemanticAligner(finest_stride=16)


def test_fit_affine_flow_recovers_an_affine_field_and_ignores_zero_weight_cells():
    import numpy as np

    from fmdepth.networks.semantic import fit_affine_flow

    flow = random_warp_flow(48, 64, np.random.default_rng(0), deform=0.0)  # affine, (2, 48, 64)
    coarse = torch.nn.functional.adaptive_avg_pool2d(flow[None], (6, 8))  # exact at the stride-8 cell centres
    weight = torch.rand(1, 1, 6, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fit_affine_flow(coarse, weight, 8), coarse, atol=1e-3, rtol=0)
    noisy = coarse.clone()
    noisy[..., 2, 3] += 20.0  # an outlier cell: with zero weight it does not move the fit
    weight[..., 2, 3] = 0.0
    torch.testing.assert_close(fit_affine_flow(noisy, weight, 8), coarse, atol=1e-3, rtol=0)
    assert (fit_affine_flow(noisy, torch.ones_like(weight), 8) - coarse).abs().max() > 0.1
    with pytest.raises(ValueError, match="weight"):
        fit_affine_flow(coarse, weight[:, :, :3], 8)


def test_coarse_flow_error_is_zero_for_the_cell_centre_values_of_an_affine_field():
    from fmdepth.losses.semantic import coarse_flow_error

    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(24.0), indexing="ij")
    true = torch.stack([0.1 * xs - 0.2 * ys + 1, 0.05 * xs + 0.1 * ys - 2])[None]  # (1, 2, 16, 24)
    cy, cx = torch.meshgrid(torch.arange(4.0) * 4 + 1.5, torch.arange(6.0) * 4 + 1.5, indexing="ij")
    coarse = torch.stack([0.1 * cx - 0.2 * cy + 1, 0.05 * cx + 0.1 * cy - 2])[None]  # at stride-4 cell centres
    valid = torch.ones(1, 1, 16, 24, dtype=torch.bool)
    assert coarse_flow_error(coarse, true, valid) < 1e-5
    off = coarse + torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    torch.testing.assert_close(coarse_flow_error(off, true, valid), torch.tensor(5.0))
    # cells not entirely valid do not count
    valid[..., :4, :4] = False
    off[..., 0, 0] += 100
    torch.testing.assert_close(coarse_flow_error(off, true, valid), torch.tensor(5.0))


def test_held_out_images_are_not_training_images():
    import numpy as np

    from fmdepth.data.semantic import TRAINING_IMAGES, VALIDATION_IMAGES, load_skimage_images

    from fmdepth.config import SemanticConfig

    assert list(SemanticConfig().val_images) == list(VALIDATION_IMAGES)
    assert list(SemanticConfig().train_images) == list(TRAINING_IMAGES)
    train = load_skimage_images(TRAINING_IMAGES, max_side=32)
    held = load_skimage_images(VALIDATION_IMAGES, max_side=32)
    for name, v in zip(VALIDATION_IMAGES, held):  # e.g. skimage's "cat" is the picture "chelsea"
        for tname, t in zip(TRAINING_IMAGES, train):
            same = v.shape == t.shape and np.allclose(v.numpy(), t.numpy(), atol=1e-3)
            assert not same, f"held-out '{name}' is the training image '{tname}'"


def test_semantic_task_builds_from_the_config(tmp_path):
    from fmdepth.config import ConfigError, load_config
    from fmdepth.tasks import build_task

    cfg = load_config("configs/semantic_synthetic.yaml",
                      ["semantic.train_images=[astronaut]", "semantic.val_images=[camera]",
                       "semantic.val_pairs=2", "semantic.train_pairs=3", "data.height=32", "data.width=32"])
    task = build_task(cfg)
    assert len(task.train_set) == 3 and len(task.val_set) == 2
    assert task.best_metric == "pck@0.05" and task.best_mode == "max"
    loader = torch.utils.data.DataLoader(task.val_set, batch_size=2, collate_fn=task.collate_fn)
    metrics = task.validate(task.system, loader, torch.device("cpu"))
    assert set(metrics) >= {"pck@0.05", "pck@0.1", "epe"} and 0 <= metrics["pck@0.05"] <= 1
    with pytest.raises(ConfigError, match="semantic.separation_margin"):
        load_config("configs/semantic_synthetic.yaml", ["semantic.separation_margin=-1"])
    with pytest.raises(ConfigError, match="semantic.real_pairs"):
        load_config("configs/semantic_real.yaml")


@pytest.mark.slow
def test_semantic_training_through_the_engine(tmp_path):
    from fmdepth.config import load_config
    from fmdepth.tasks import train

    cfg = load_config("configs/semantic_synthetic.yaml",
                      ["semantic.train_images=[astronaut]", "semantic.val_images=[camera]",
                       "semantic.val_pairs=4", "semantic.train_pairs=8", "data.height=32",
                       "data.width=32", "train.batch_size=4", "train.epochs=1", "train.device=cpu"])
    train(cfg, str(tmp_path / "run"), progress=False)
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    from fmdepth.core.checkpoint import load_checkpoint

    ckpt = load_checkpoint(str(tmp_path / "run" / "checkpoints" / "last.pt"))
    assert "semantic" in ckpt["models"]
    # the saved config rebuilds the same architecture (coarse-to-fine arguments included)
    s = ckpt["config"]["semantic"]
    assert s["finest_stride"] == 4 and s["affine_prior"] is True and s["refine_radius"] == 2
    aligner = SemanticAligner(num_landmarks=s["num_landmarks"], trunk_layers=s["trunk_layers"],
                              corr_radius=s["corr_radius"], refine_radius=s["refine_radius"],
                              finest_stride=s["finest_stride"], affine_prior=s["affine_prior"])
    aligner.load_state_dict(ckpt["models"]["semantic"])
    # and a later stage starts from it (semantic.init_checkpoint)
    from fmdepth.tasks import build_task

    cfg2 = load_config("configs/semantic_synthetic.yaml",
                       ["semantic.train_images=[astronaut]", "semantic.val_images=[camera]",
                        "semantic.val_pairs=2", "semantic.train_pairs=2", "data.height=32", "data.width=32",
                        f"semantic.init_checkpoint={tmp_path / 'run' / 'checkpoints' / 'last.pt'}"])
    task = build_task(cfg2)
    for k, v in task.system.aligner.state_dict().items():
        assert torch.equal(v, ckpt["models"]["semantic"][k]), k


def test_real_pairs_folder_with_keypoints_trains_without_a_true_field(tmp_path):
    import imageio.v3 as iio
    import numpy as np

    from fmdepth.data.semantic import ImagePairDataset

    rng = np.random.default_rng(0)
    iio.imwrite(tmp_path / "a.png", (rng.random((40, 80, 3)) * 255).astype(np.uint8))
    iio.imwrite(tmp_path / "b.png", (rng.random((20, 40)) * 255).astype(np.uint8))  # grayscale
    (tmp_path / "kp.txt").write_text("0 0 0 0\n79 39 39 19\n")
    (tmp_path / "pairs.txt").write_text("# A B keypoints\na.png b.png kp.txt\nb.png a.png\n")
    ds = ImagePairDataset(str(tmp_path), height=32, width=32, num_keypoints=4)
    assert len(ds) == 2
    with pytest.warns(UserWarning, match="grayscale"):
        x = ds[0]
    assert x.image_a.shape == x.image_b.shape == (3, 32, 32)
    assert x.flow is None and x.valid is None
    assert x.keypoints_valid.tolist() == [True, True, False, False]
    # pixel-centre scaling: x' = (x + .5) * 32 / 80 - .5
    torch.testing.assert_close(x.keypoints_a[1], torch.tensor([(79.5 * 32 / 80) - 0.5, (39.5 * 32 / 40) - 0.5]))
    torch.testing.assert_close(x.keypoints_b[1], torch.tensor([(39.5 * 32 / 40) - 0.5, (19.5 * 32 / 20) - 0.5]))
    with pytest.warns(UserWarning):
        batch = collate_semantic([ds[0], ds[1]])
    system = SemanticSystem(SemanticAligner(num_landmarks=3), {"flow": 0.0, "equivariance": 0.0, "photometric": 1.0})
    out = system.training_step(batch, 0)
    assert torch.isfinite(out.loss) and "photometric" in out.scalars and "flow" not in out.scalars
    (tmp_path / "pairs.txt").write_text("a.png\n")
    with pytest.raises(ValueError, match="pairs.txt:1"):
        ImagePairDataset(str(tmp_path))


def test_a_semantic_checkpoint_loads_through_load_system(tmp_path):
    """tasks.load_system rebuilds the semantic system from its checkpoint with the trained weights."""
    from fmdepth.config import load_config
    from fmdepth.core.checkpoint import load_checkpoint
    from fmdepth.tasks import load_system, train

    cfg = load_config("configs/semantic_synthetic.yaml",
                      ["semantic.train_images=[astronaut]", "semantic.val_images=[]", "semantic.train_pairs=4",
                       "data.height=32", "data.width=32", "train.batch_size=2", "train.epochs=1",
                       "train.max_steps=2", "train.device=cpu", "semantic.pretrained=none"])
    train(cfg, str(tmp_path / "run"), progress=False)
    path = str(tmp_path / "run" / "checkpoints" / "last.pt")
    loaded = load_system(path, task="semantic")
    saved = load_checkpoint(path)["models"]["semantic"]
    for k, v in loaded.system.aligner.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert not loaded.system.training
    with pytest.raises(ValueError, match="expected a depth checkpoint"):
        load_system(path, task="depth")
