import os
import types

import pytest
import torch

from fmdepth.config import config_from_dict
from fmdepth.engine.task_depth import make_depth_validate, resolve_split_dir


def test_resolve_split_dir(tmp_path):
    data = tmp_path / "data"
    (data / "splits").mkdir(parents=True)
    (data / "splits" / "train_files.txt").write_text("a 1 l\n")
    cfg = config_from_dict({"data": {"dataset": "synthetic", "path": str(data), "split": "splits"}})
    assert resolve_split_dir(cfg) == str(data / "splits")
    cfg = config_from_dict({"data": {"dataset": "synthetic", "path": str(data), "split": ""}})
    assert os.path.samefile(resolve_split_dir(cfg), data / "splits")
    cfg = config_from_dict({"data": {"dataset": "kitti_raw", "path": str(data),
                                     "split": str(data / "splits")}})
    assert resolve_split_dir(cfg) == str(data / "splits")
    cfg = config_from_dict({"data": {"dataset": "synthetic", "path": str(data), "split": "nope"}})
    with pytest.raises(FileNotFoundError, match="data.split"):
        resolve_split_dir(cfg)


class _OracleSystem(torch.nn.Module):
    """Predicts a disparity whose depth is 3x the ground truth (median scaling must undo it)."""

    def __init__(self, gt):
        super().__init__()
        self.gt = gt

    def predict_disparity(self, image):
        # disp_to_depth(min 0.1, max 100): scaled = 0.01 + (10 - 0.01) * disp = 1 / depth
        depth = 3.0 * self.gt[: image.shape[0]]
        return (1.0 / depth - 0.01) / (10 - 0.01)


def test_depth_validate_uses_median_scaling_and_the_metrics():
    g = torch.Generator().manual_seed(0)
    gt = 5 + 40 * torch.rand(2, 1, 64, 224, generator=g)
    batch = types.SimpleNamespace(net_frames={0: torch.rand(2, 3, 64, 224)}, depth_gt=gt)
    validate = make_depth_validate(0.1, 100.0)
    m = validate(_OracleSystem(gt), [batch], torch.device("cpu"))
    assert set(m) >= {"abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"}
    assert m["abs_rel"] < 1e-3 and m["a1"] == 1.0
    batch.depth_gt = None
    with pytest.raises(ValueError, match="ground-truth"):
        validate(_OracleSystem(gt), [batch], torch.device("cpu"))


@pytest.mark.slow
def test_depth_task_trains_two_steps(tmp_path):
    from fmdepth.data.synthetic import render_dataset
    from fmdepth.engine.checkpoint import load_checkpoint
    from fmdepth.engine.trainer import train

    data = render_dataset(str(tmp_path / "synth"), drives=2, frames=8, height=64, width=224,
                          velodyne=False, supersample=1, progress=False)
    cfg = config_from_dict({
        "data": {"dataset": "synthetic", "path": data, "split": "splits", "height": 64, "width": 224,
                 "num_workers": 0},
        "model": {"depth_layers": 18, "pose_layers": 18, "feature_layers": 18},
        "loss": {"feature_metric": 1e-3},
        "train": {"max_steps": 2, "batch_size": 2, "log_every": 1, "image_every": 1, "device": "cpu"}})
    res = train(cfg, str(tmp_path / "run"), progress=False)
    assert res.step == 2 and set(res.last_val) >= {"abs_rel", "a1"}
    ck = load_checkpoint(res.last_checkpoint)
    assert set(ck["models"]) == {"depth", "pose", "feature"}
    assert os.path.isfile(res.best_checkpoint)


def _tiny_cfg(data, dataset, split, **data_extra):
    return config_from_dict({
        "data": dict({"dataset": dataset, "path": data, "split": split, "height": 64, "width": 224,
                      "num_workers": 0}, **data_extra),
        "model": {"depth_layers": 18, "pose_layers": 18, "feature_layers": 18, "pose_scale": 0.1,
                  "min_depth": 0.01},
        "loss": {"feature_metric": 0.0, "scales": [0]},
        "train": {"max_steps": 2, "batch_size": 2, "log_every": 1, "image_every": 0, "val_every": 2,
                  "device": "cpu"}})


@pytest.fixture(scope="module")
def odom_root(tmp_path_factory):
    from fmdepth.data.synthetic import render_dataset

    # sequences 00, 01 train (splits/odom/train_files.txt), 02 test (test_files_02.txt)
    return render_dataset(str(tmp_path_factory.mktemp("odom") / "synth"), drives=3, frames=6, height=64,
                          width=224, supersample=1, progress=False)


@pytest.mark.slow
def test_kitti_odometry_trains_then_evaluate_pose(odom_root, tmp_path, capsys):
    """data.dataset kitti_odom + split odom, then `fmdepth evaluate pose` on the held-out sequence."""
    from fmdepth.cli import main
    from fmdepth.data import KittiOdometryDataset
    from fmdepth.engine.task_depth import build
    from fmdepth.engine.trainer import train

    cfg = _tiny_cfg(odom_root, "kitti_odom", "odom")
    task = build(cfg)
    assert isinstance(task.train_set, KittiOdometryDataset) and task.val_set is not None
    assert {e[0] for e in task.train_set.entries} == {"0", "1"}
    # K from calib.txt P2 scaled to 224x64 (rendered at 224x64: unchanged)
    assert torch.allclose(task.train_set[0].K[0][0, 0], torch.tensor(0.58 * 224))
    res = train(cfg, str(tmp_path / "run"), progress=False)
    assert res.step == 2 and "abs_rel" in res.last_val
    out = tmp_path / "pose.json"
    assert main(["evaluate", "pose", "--checkpoint", res.last_checkpoint, "--data", odom_root,
                 "--sequence", "02", "--json", str(out), "--no-progress"]) == 0
    import json

    result = json.loads(out.read_text())
    assert result["sequence"] == "02" and result["num_frames"] == 6 and result["ate_mean"] >= 0
    assert "Snippet ATE" in capsys.readouterr().out


def test_kitti_odometry_without_calib_names_the_file(odom_root, tmp_path):
    import shutil

    from fmdepth.engine.task_depth import build

    root = tmp_path / "copy"
    shutil.copytree(odom_root, root, symlinks=True)
    os.remove(root / "sequences" / "01" / "calib.txt")
    with pytest.raises(FileNotFoundError, match=r"calibration file not found: .*sequences/01/calib\.txt"):
        build(_tiny_cfg(str(root), "kitti_odom", "odom"))
    with pytest.raises(FileNotFoundError, match=r"sequences/01/calib\.txt"):
        from fmdepth.commands.evaluate import read_calib_intrinsics
        read_calib_intrinsics(str(root / "sequences" / "01" / "calib.txt"))
