"""DepthSystem: training modes, gradients, frozen FeatureNet, baseline path, warping sanity."""
import math

import pytest
import torch
import torch.nn.functional as F

from fmdepth.config import ConfigError, LossConfig, ModelConfig, config_from_dict
from fmdepth.geometry import intrinsics_pyramid, invert_intrinsics
from fmdepth.models import DepthSystem, build_depth_system, colorize
from fmdepth.tasks.depth import build_system

from fmdepth.data import DepthBatch

B, H, W = 1, 64, 64
SMALL = dict(depth_layers=18, pose_layers=18, feature_layers=18)


def make_batch(frames, stereo_T=None, num_scales=4):
    """A DepthBatch following the data contract from full-resolution (B, 3, H, W) frames."""
    b, _, h, w = frames[0].shape
    K = torch.tensor([[0.58 * w, 0, 0.5 * w - 0.5], [0, 1.92 * h, 0.5 * h - 0.5], [0, 0, 1.0]])
    Ks = intrinsics_pyramid(K.expand(b, 3, 3).clone(), num_scales)
    pyramids = {f: [x] + [F.interpolate(x, scale_factor=0.5 ** s, mode="area") for s in range(1, num_scales)]
                for f, x in frames.items()}
    fields = dict(frames=pyramids, net_frames=dict(frames), K=Ks, K_inv=[invert_intrinsics(k) for k in Ks],
                  stereo_T=stereo_T, depth_gt=None, label=None, index=torch.arange(b),
                  meta=[("synthetic", i, "l") for i in range(b)])
    return DepthBatch(**fields)


def stereo_T(b, baseline=0.1):
    T = torch.eye(4).expand(b, 4, 4).clone()
    T[:, 0, 3] = -baseline  # source camera to the right: X_src = X_tgt - baseline
    return T


@pytest.fixture(scope="module")
def random_batch():
    g = torch.Generator().manual_seed(1)
    frames = {f: torch.rand(B, 3, H, W, generator=g) for f in (0, -1, 1, "s")}
    return make_batch(frames, stereo_T=stereo_T(B))


def _grad_norm(module):
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


# --------------------------------------------------------------------------- full objective
def test_joint_step_finite_loss_and_gradients(random_batch):
    system = DepthSystem(ModelConfig(**SMALL), LossConfig(mode="joint"), frame_ids=[0, 1], stereo=True)
    system.train()
    out = system.training_step(random_batch, step=LossConfig().automask_warmup, want_images=True)  # mask on
    assert torch.isfinite(out.loss) and out.loss.requires_grad
    out.loss.backward()
    for name, module in system.trainable_models().items():
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert _grad_norm(module) > 0, name
    for key in ("photometric", "feature_metric", "smoothness", "smoothness2", "featurenet/reconstruction",
                "automask_fraction", "loss"):
        assert key in out.scalars and math.isfinite(out.scalars[key]), key
    assert set(out.images) == {"input", "disparity", "warped_source", "automask", "featurenet_reconstruction"}
    for name, img in out.images.items():
        assert img.shape[-2:] == (H, W) and img.shape[0] in (1, 3), name
        assert img.min() >= 0 and img.max() <= 1, name
    assert [g["name"] for g in system.parameter_groups()] == ["depth", "pose", "feature"]


def test_photometric_only_does_not_build_featurenet(random_batch):
    system = DepthSystem(ModelConfig(**SMALL), LossConfig(feature_metric=0.0), frame_ids=[0, -1])
    assert system.feature_net is None
    assert set(system.trainable_models()) == {"depth", "pose"}
    out = system.training_step(random_batch, step=0)
    assert "feature_metric" not in out.scalars and not any(k.startswith("featurenet") for k in out.scalars)
    out.loss.backward()
    assert _grad_norm(system.depth_net) > 0 and _grad_norm(system.pose_net) > 0


def test_frozen_featurenet_gets_no_gradients(random_batch):
    system = DepthSystem(ModelConfig(**SMALL), LossConfig(mode="depth"), frame_ids=[0, -1])
    system.train()
    assert not system.feature_net.training  # batch-norm statistics stay fixed
    before = {k: v.clone() for k, v in system.feature_net.state_dict().items()}
    out = system.training_step(random_batch, step=0)
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in system.feature_net.parameters())
    assert _grad_norm(system.depth_net) > 0 and _grad_norm(system.pose_net) > 0
    assert "feature_metric" in out.scalars and out.scalars["feature_metric"] > 0
    for k, v in system.feature_net.state_dict().items():  # running stats untouched
        torch.testing.assert_close(v, before[k])
    names = [g["name"] for g in system.parameter_groups()]
    assert names == ["depth", "pose"]
    assert "feature" in system.trainable_models()  # saved in checkpoints all the same


def test_featurenet_stage_trains_only_featurenet(random_batch):
    system = DepthSystem(ModelConfig(**SMALL), LossConfig(mode="featurenet"), frame_ids=[0, -1])
    assert system.depth_net is None and system.pose_net is None
    out = system.training_step(random_batch, step=0, want_images=True)
    out.loss.backward()
    assert torch.isfinite(out.loss) and _grad_norm(system.feature_net) > 0
    assert set(system.trainable_models()) == {"feature"}
    assert set(out.images) == {"input", "featurenet_reconstruction"}
    with pytest.raises(RuntimeError, match="featurenet"):
        system.predict_disparity(random_batch.net_frames[0])


@pytest.mark.parametrize("automask,min_reproj", [(False, True), (True, False)])
def test_loss_switches(random_batch, automask, min_reproj):
    system = DepthSystem(ModelConfig(**SMALL), LossConfig(feature_metric=0.0, automask=automask,
                                                          min_reprojection=min_reproj, scales=[0, 2]),
                         frame_ids=[0, 1])
    out = system.training_step(random_batch, step=LossConfig().automask_warmup)  # past the warm-up
    assert torch.isfinite(out.loss)
    assert ("automask_fraction" in out.scalars) == automask


def test_missing_frame_is_a_clear_error(random_batch):
    system = DepthSystem(ModelConfig(**SMALL), LossConfig(feature_metric=0.0), frame_ids=[0, -1, 2])
    with pytest.raises(ValueError, match="missing frame 2"):
        system.training_step(random_batch, step=0)


def test_predict_disparity_and_depth():
    system = DepthSystem(ModelConfig(**SMALL, min_depth=0.5, max_depth=50.0), LossConfig(feature_metric=0.0))
    system.eval()
    with torch.no_grad():
        disp = system.predict_disparity(torch.rand(1, 3, 64, 128))
        depth = system.predict_depth(torch.rand(1, 3, 64, 128))
    assert disp.shape == depth.shape == (1, 1, 64, 128)
    assert depth.min() >= 0.5 and depth.max() <= 50.0


def test_pose_order_and_inversion(monkeypatch, random_batch):
    """PoseNet sees [earlier, later]; the past source's pose is inverted to src_T_tgt."""
    system = DepthSystem(ModelConfig(**SMALL), LossConfig(feature_metric=0.0), frame_ids=[0, -1, 1])
    seen = []

    def fake_pose(pair):
        seen.append(pair)
        b = pair.shape[0]
        return torch.zeros(b, 3), torch.tensor([[0.0, 0.0, 1.0]]).expand(b, 3)

    monkeypatch.setattr(system.pose_net, "forward", fake_pose)
    poses = system.predict_poses(random_batch)
    f = random_batch.net_frames
    torch.testing.assert_close(seen[0], torch.cat([f[-1], f[0]], 1))
    torch.testing.assert_close(seen[1], torch.cat([f[0], f[1]], 1))
    assert float(poses[1][0, 2, 3]) == pytest.approx(1.0)  # later_T_earlier = 1_T_0
    assert float(poses[-1][0, 2, 3]) == pytest.approx(-1.0)  # inverted: (0_T_-1)^-1 = -1_T_0


# -------------------------------------------------------------------- warping sanity check
def _texture(u, v):
    return torch.stack([0.5 + 0.25 * torch.sin(u / 3.0) + 0.2 * torch.cos(v / 4.0),
                        0.5 + 0.3 * torch.sin((u + v) / 5.0),
                        0.5 + 0.3 * torch.cos(u / 7.0 - v / 2.5)], dim=0)


def test_true_depth_beats_wrong_depth():
    """A textured fronto-parallel plane seen by a stereo pair: with the true depth the warped source
    reproduces the target, so the photometric and feature-metric losses are lower than with a
    wrong depth (and lower than with no motion)."""
    depth_true, baseline = 5.0, 0.5
    H, W = 64, 128
    K = torch.tensor([[0.58 * W, 0, 0.5 * W - 0.5], [0, 1.92 * H, 0.5 * H - 0.5], [0, 0, 1.0]])
    shift = float(K[0, 0]) * baseline / depth_true  # source column = target column - shift
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                          indexing="ij")
    target = _texture(u, v).unsqueeze(0)
    source = _texture(u + shift, v).unsqueeze(0)
    batch = make_batch({0: target, "s": source}, stereo_T=stereo_T(1, baseline))
    model = ModelConfig(**SMALL)
    system = DepthSystem(model, LossConfig(mode="depth", smoothness=0.0, smoothness2=0.0, automask=False),
                         frame_ids=[0], stereo=True)

    def loss_at(depth):
        scaled = 1.0 / depth
        disp01 = (scaled - 1 / model.max_depth) / (1 / model.min_depth - 1 / model.max_depth)
        disps = [torch.full((1, 1, H // 2 ** s, W // 2 ** s), disp01) for s in range(4)]
        with torch.no_grad():
            out = system.compute_losses(batch, disps, {"s": batch.stereo_T})
        return out.scalars

    right = loss_at(depth_true)
    for wrong in (depth_true / 2, depth_true * 3):
        bad = loss_at(wrong)
        assert right["photometric"] < 0.5 * bad["photometric"]
        assert right["feature_metric"] < bad["feature_metric"]
    assert right["photometric"] < 0.02


# ------------------------------------------------------------------------------- factory
def _cfg(**sections):
    base = {"model": dict(SMALL), "data": {"height": 64, "width": 96}}
    for key, value in sections.items():
        base.setdefault(key, {}).update(value)
    return config_from_dict(base)


def test_build_depth_system_from_config():
    system = build_depth_system(_cfg(loss={"feature_metric": 0.0}, data={"frame_ids": [0, 1], "stereo": True}))
    assert system.source_ids == [1, "s"] and system.feature_net is None


def test_build_stage2_requires_feature_weights():
    with pytest.raises(ConfigError, match="model.feature_weights"):
        build_depth_system(_cfg(loss={"mode": "depth"}))


def test_build_scales_must_fit_pyramid():
    with pytest.raises(ConfigError, match="loss.scales"):
        build_depth_system(_cfg(data={"num_scales": 2}))


def test_stage1_checkpoint_feeds_stage2(tmp_path):
    stage1 = build_depth_system(_cfg(loss={"mode": "featurenet"}))
    with torch.no_grad():
        for p in stage1.feature_net.parameters():
            p.add_(0.01)
    ckpt = tmp_path / "last.pt"
    torch.save({"config": {}, "models": {k: m.state_dict() for k, m in stage1.trainable_models().items()}}, ckpt)
    stage2 = build_system(_cfg(loss={"mode": "depth"}, model={"feature_weights": str(ckpt)}))
    for k, v in stage1.feature_net.state_dict().items():
        torch.testing.assert_close(stage2.feature_net.state_dict()[k], v)

    with pytest.raises(FileNotFoundError, match="feature_weights"):
        build_system(_cfg(loss={"mode": "depth"}, model={"feature_weights": str(tmp_path / "nope.pt")}))
    torch.save({"models": {"depth": {}}}, tmp_path / "nofeat.pt")
    with pytest.raises(ValueError, match="no FeatureNet"):
        build_system(_cfg(loss={"mode": "depth"}, model={"feature_weights": str(tmp_path / "nofeat.pt")}))
    with pytest.raises(ValueError, match="does not fit"):
        build_system(_cfg(loss={"mode": "depth"},
                                model={"feature_weights": str(ckpt), "feature_layers": 34}))


def test_loss_config_validation_names_keys():
    for override, key in [({"loss": {"mode": "stage3"}}, "loss.mode"),
                          ({"loss": {"feature_levels": [6]}}, "loss.feature_levels"),
                          ({"loss": {"featurenet_convergent": -1.0}}, "loss.featurenet_convergent"),
                          ({"loss": {"photometric": 0.0, "feature_metric": 0.0}}, "loss.photometric"),
                          ({"model": {"num_scales": 9}}, "model.num_scales"),
                          ({"model": {"depth_layers": 20}}, "model.depth_layers")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            config_from_dict(override)


def test_colorize_magma():
    img = colorize(torch.linspace(0, 1, 50).view(1, 5, 10))
    assert img.shape == (3, 5, 10) and img.min() >= 0 and img.max() <= 1
    assert img[:, 0, 0].sum() < img[:, -1, -1].sum()  # dark (low) to bright (high)


@pytest.mark.parametrize("name,mode,fm,stereo", [("kitti_featdepth_r50_640x192", "two_stage", 1e-3, False),
                                                 ("kitti_monodepth2_baseline_640x192", "joint", 0.0, False),
                                                 ("kitti_featdepth_stereo_640x192", "depth", 1e-3, True)])
def test_shipped_configs(name, mode, fm, stereo):
    import os
    from fmdepth.config import load_config
    root = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
    cfg = load_config(os.path.join(root, f"{name}.yaml"))
    assert (cfg.loss.mode, cfg.loss.feature_metric, cfg.data.stereo) == (mode, fm, stereo)
    assert (cfg.model.depth_layers, cfg.model.pose_layers, cfg.model.feature_layers) == (50, 18, 50)
    assert cfg.data.frame_ids == [0, -1, 1] and (cfg.data.height, cfg.data.width) == (192, 640)
    assert cfg.optim.lr == 1e-4 and cfg.optim.decay_epochs == [20, 30] and cfg.train.epochs == 40


def test_renderer_ground_truth_explains_frames_plain_and_flipped(tmp_path):
    """End-to-end geometry check on rendered drives: the renderer's GT depth and GT relative poses
    (``src_T_tgt`` for frames -1 and +1, mirrored ``S T S`` for a flipped sample) plugged into
    ``compute_losses`` give a far lower photometric loss than inverted poses or a constant depth,
    with and without the horizontal flip (images, K, stereo sign and GT depth must flip together)."""
    import os

    import numpy as np

    from fmdepth.data import KittiRawDataset, collate_depth
    from fmdepth.data.synthetic import render_dataset

    root = render_dataset(str(tmp_path / "synth"), drives=2, frames=4, seed=0, height=96, width=320,
                          velodyne=False, progress=False)
    model = ModelConfig(**SMALL)
    system = DepthSystem(model, LossConfig(feature_metric=0.0, smoothness=0.0, smoothness2=0.0),
                         frame_ids=[0, -1, 1], stereo=True)

    def cam_pose(folder, side, frame):  # c0_T_cam of the drive's first frame
        rows = np.loadtxt(os.path.join(root, "gt", folder, f"poses_{'02' if side == 'l' else '03'}.txt"))
        T = np.eye(4)
        T[:3] = rows[frame].reshape(3, 4)
        return T

    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])
    for flip in (0.0, 1.0):
        ds = KittiRawDataset(root, os.path.join(root, "splits", "train_files.txt"), 64, 224,
                             frame_ids=(0, -1, 1, "s"), is_train=True, stereo=True, load_gt=True,
                             flip_prob=flip, jitter_prob=0.0)
        batch = collate_depth([ds[i] for i in range(min(3, len(ds)))])
        depth = F.interpolate(batch.depth_gt, size=(64, 224), mode="nearest")
        depth = torch.where(depth > 0, depth, torch.full_like(depth, model.max_depth))  # sky: far
        disp = (1 / depth - 1 / model.max_depth) / (1 / model.min_depth - 1 / model.max_depth)
        disps = [disp] + [F.interpolate(disp, scale_factor=0.5 ** s, mode="bilinear", align_corners=False)
                          for s in (1, 2, 3)]
        poses = {"s": batch.stereo_T}
        for f in (-1, 1):
            Ts = []
            for folder, frame, side in batch.meta:
                T = np.linalg.inv(cam_pose(folder, side, frame + f)) @ cam_pose(folder, side, frame)
                Ts.append(mirror @ T @ mirror if flip else T)
            poses[f] = torch.tensor(np.stack(Ts), dtype=torch.float32)

        def photometric(disps, poses):
            with torch.no_grad():
                return system.compute_losses(batch, disps, poses).scalars["photometric"]

        right = photometric(disps, poses)
        inverted = photometric(disps, {f: torch.linalg.inv(T) for f, T in poses.items()})
        constant = photometric([torch.full_like(d, 0.02) for d in disps], poses)
        assert right < 0.5 * inverted and right < 0.5 * constant, (flip, right, inverted, constant)
