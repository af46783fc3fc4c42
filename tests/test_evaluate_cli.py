"""`fmdepth evaluate depth|pose|registration` and `fmdepth predict` end to end on synthetic data."""
import json
import os

import numpy as np
import pytest
import torch

from fmdepth.cli import main
from fmdepth.config import Config, config_to_dict
from fmdepth.metrics.depth import METRIC_NAMES
from fmdepth.networks import DepthNet, PoseNet

GT_H, GT_W = 128, 416   # rendered image / ground-truth size
NET_H, NET_W = 96, 320  # network input size stored in the test checkpoint


def make_checkpoint(path, height=NET_H, width=NET_W):
    """A checkpoint dict following the engine's contract, with randomly initialised ResNet18 nets."""
    cfg = config_to_dict(Config())
    cfg["data"].update(height=height, width=width)
    cfg["model"].update(depth_layers=18, pose_layers=18)
    ckpt = {"config": cfg, "models": {"depth": DepthNet(num_layers=18).state_dict(),
                                      "pose": PoseNet(num_layers=18).state_dict()},
            "optimizer": {}, "scheduler": {}, "scaler": None, "step": 0, "epoch": 0, "version": "0.1.0",
            "rng": {}, "best_metric": None}
    torch.save(ckpt, path)
    return str(path)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A tiny synthetic KITTI-layout dataset (2 drives x 5 frames) and a checkpoint."""
    from fmdepth.data.synthetic import render_dataset

    base = tmp_path_factory.mktemp("evalcli")
    root = render_dataset(str(base / "synth"), drives=2, frames=5, seed=3, height=GT_H, width=GT_W,
                          velodyne=False, supersample=1, progress=False)
    torch.manual_seed(0)
    return {"root": root, "ckpt": make_checkpoint(base / "best.pt"), "base": base}


def _dense_gt(root):
    """The renderer's dense ground truth of the test split, in split order."""
    entries = [l.split() for l in open(os.path.join(root, "splits", "test_files.txt")) if l.strip()]
    return entries, [np.load(os.path.join(root, "gt", f, "depth" if s == "l" else "depth_03", f"{int(i):010d}.npy"))
                     for f, i, s in entries]


def test_evaluate_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = capsys.readouterr().out
    assert "depth" in out and "pose" in out and "registration" in out


def test_evaluate_depth_needs_input(capsys):
    assert main(["evaluate", "depth"]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err


def test_evaluate_pose_json_and_plot(synth, tmp_path, capsys):
    out_json, plot = tmp_path / "pose.json", tmp_path / "traj.png"
    rc = main(["evaluate", "pose", "--checkpoint", synth["ckpt"], "--data", synth["root"], "--sequence", "01",
               "--segment-lengths", "1,2", "--json", str(out_json), "--plot", str(plot), "--no-progress"])
    assert rc == 0
    res = json.loads(out_json.read_text())
    for key in ("ate_mean", "ate_std", "t_err", "r_err", "num_snippets", "num_frames"):
        assert key in res
    assert res["num_frames"] == 5 and res["num_snippets"] == 4
    assert np.isfinite(res["ate_mean"]) and res["t_err"] is not None
    assert open(plot, "rb").read(4) == b"\x89PNG"
    assert "Snippet ATE" in capsys.readouterr().out


def test_evaluate_pose_bad_sequence(synth, capsys):
    rc = main(["evaluate", "pose", "--checkpoint", synth["ckpt"], "--data", synth["root"], "--sequence", "07"])
    assert rc == 2 and "sequences/07" in capsys.readouterr().err


def test_predict_cli_folder(synth, tmp_path, capsys):
    folder = os.path.join(synth["root"], "sequences", "01", "image_2")
    rc = main(["predict", "--checkpoint", synth["ckpt"], folder, "--out", str(tmp_path / "pred"),
               "--batch-size", "2", "--no-progress"])
    assert rc == 0
    disp = np.load(tmp_path / "pred" / "image_2" / "000000_disp.npy")
    assert disp.shape == (GT_H, GT_W)
    assert "predicted 5 image(s)" in capsys.readouterr().out


def test_predict_cli_missing_input(synth, tmp_path, capsys):
    rc = main(["predict", "--checkpoint", synth["ckpt"], str(tmp_path / "none.png"), "--out", str(tmp_path)])
    assert rc == 2 and "input not found" in capsys.readouterr().err
