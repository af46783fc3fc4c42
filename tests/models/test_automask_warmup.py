"""The auto-mask warm-up: why monocular training from scratch did not start, and that it now does.

Root cause (see the docstring of fmdepth/models/depth.py): at a near-identity pose the auto-mask
keeps the pixels whose error the current (random) translation already lowers, so the masked
translation gradient reinforces that random direction. During the warm-up the loss runs without
the mask and the gradient removes the random component instead.
"""
import json
import os

import numpy as np
import pytest
import torch

from fmdepth.config import ConfigError, LossConfig, ModelConfig, config_from_dict
from fmdepth.geometry import pose_vec_to_matrix
from fmdepth.models import DepthSystem


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    from fmdepth.data.synthetic import render_dataset

    return render_dataset(str(tmp_path_factory.mktemp("warmup") / "synth"), drives=2, frames=5, seed=0,
                          height=96, width=320, velodyne=False, progress=False)


def _descent_on_translation(system, batch, disps, t0, step):
    """-dL/dt for one translation shared by both neighbours (src_T_tgt = T(t) for +1, T(t)^-1 for -1)."""
    t = t0.clone().requires_grad_(True)
    b = len(batch.index)
    T = pose_vec_to_matrix(torch.zeros(b, 3), t.expand(b, 3))
    out = system.compute_losses(batch, disps, {1: T, -1: torch.linalg.inv(T)}, step=step)
    (grad,) = torch.autograd.grad(out.loss, t)
    return -grad[0]


def test_automask_reinforces_a_random_initial_translation_and_the_warmup_does_not(drive):
    from fmdepth.data import KittiRawDataset, collate_depth

    ds = KittiRawDataset(drive, os.path.join(drive, "splits", "train_files.txt"), 64, 224,
                         frame_ids=(0, -1, 1), is_train=False)
    batch = collate_depth([ds[i] for i in range(4)])
    system = DepthSystem(ModelConfig(depth_layers=18, pose_layers=18),
                         LossConfig(feature_metric=0.0, smoothness=0.0, smoothness2=0.0, automask_warmup=100),
                         frame_ids=[0, -1, 1])
    with torch.no_grad():
        disps = system.depth_net(batch.net_frames[0])  # a freshly initialised network's depth
    g = torch.Generator().manual_seed(0)
    masked, warm = [], []
    for _ in range(6):
        t0 = torch.randn(1, 3, generator=g) * 1e-3  # the size of PoseNet's output at x0.01
        for step, acc in ((100, masked), (0, warm)):
            d = _descent_on_translation(system, batch, disps, t0, step)
            acc.append(float(torch.nn.functional.cosine_similarity(d, t0[0], dim=0)))
    # with the mask the descent direction always leans towards the random start ...
    assert min(masked) > 0.1, masked
    # ... during the warm-up it always leans away from it
    assert max(warm) < -0.2, warm


def test_warmup_switches_the_mask_by_step(drive):
    from fmdepth.data import KittiRawDataset, collate_depth

    ds = KittiRawDataset(drive, os.path.join(drive, "splits", "train_files.txt"), 64, 224,
                         frame_ids=(0, -1, 1), is_train=False)
    batch = collate_depth([ds[0], ds[1]])
    system = DepthSystem(ModelConfig(depth_layers=18, pose_layers=18),
                         LossConfig(feature_metric=0.0, automask_warmup=10), frame_ids=[0, -1, 1])
    with torch.no_grad():
        assert "automask_fraction" not in system.training_step(batch, 9).scalars
        assert "automask_fraction" in system.training_step(batch, 10).scalars
        disps = system.depth_net(batch.net_frames[0])
        poses = system.predict_poses(batch)
        assert "automask_fraction" in system.compute_losses(batch, disps, poses).scalars  # step None: on


def test_automask_warmup_config():
    assert LossConfig().automask_warmup == 300
    with pytest.raises(ConfigError, match="loss.automask_warmup"):
        config_from_dict({"loss": {"automask_warmup": -1}})


@pytest.mark.slow
def test_training_at_the_published_settings_starts(drive, tmp_path):
    """A few dozen steps at pose_scale 0.01 / min_depth 0.1 (the defaults): PoseNet's translation
    grows from its initial ~4e-4 and the warped sources explain the target better than the
    un-warped ones on the training frames."""
    from fmdepth.data import KittiRawDataset, collate_depth
    from fmdepth.core.checkpoint import load_checkpoint
    from fmdepth.tasks import train
    from fmdepth.losses import photometric_error
    from fmdepth.geometry import disp_to_depth, inverse_warp

    cfg = config_from_dict({
        "data": {"dataset": "synthetic", "path": drive, "split": "splits", "height": 64, "width": 224,
                 "num_workers": 0},
        "model": {"depth_layers": 18, "pose_layers": 18},
        "loss": {"feature_metric": 0.0, "smoothness2": 0.0},
        "optim": {"lr": 3e-4, "decay_epochs": []},
        "train": {"max_steps": 40, "epochs": 100, "batch_size": 4, "log_every": 5, "device": "cpu",
                  "val_every": 1000, "ckpt_every": 1000, "image_every": 1000}})
    assert (cfg.model.pose_scale, cfg.model.min_depth) == (0.01, 0.1)
    res = train(cfg, str(tmp_path / "run"), progress=False)
    with open(tmp_path / "run" / "metrics.jsonl") as fh:
        logs = [json.loads(line) for line in fh if '"train"' in line]
    t_first = logs[0]["pose/translation_1"]
    t_last = np.mean([r["pose/translation_1"] for r in logs[-2:]])
    assert t_last > 3 * t_first, (t_first, t_last)

    system = DepthSystem(cfg.model, cfg.loss, frame_ids=[0, -1, 1])
    ck = load_checkpoint(res.last_checkpoint)
    system.depth_net.load_state_dict(ck["models"]["depth"])
    system.pose_net.load_state_dict(ck["models"]["pose"])
    system.eval()
    ds = KittiRawDataset(drive, os.path.join(drive, "splits", "train_files.txt"), 64, 224,
                         frame_ids=(0, -1, 1), is_train=False)
    batch = collate_depth([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        depth = disp_to_depth(system.predict_disparity(batch.net_frames[0]), 0.1, 100.0)[1]
        poses = system.predict_poses(batch)
        target = batch.frames[0][0]
        warped = torch.cat([photometric_error(inverse_warp(batch.frames[f][0], depth, poses[f], batch.K[0],
                                                           padding_mode="border")[0], target) for f in (-1, 1)], 1)
        identity = torch.cat([photometric_error(batch.frames[f][0], target) for f in (-1, 1)], 1)
    assert float(warped.min(1).values.mean()) < 0.9 * float(identity.min(1).values.mean())
