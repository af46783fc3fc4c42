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


@pytest.fixture(scope="module")
def gt_file(synth):
    from fmdepth.data.gt import save_gt_depths

    _, gts = _dense_gt(synth["root"])
    path = str(synth["base"] / "gt_depths.npz")
    save_gt_depths(path, gts)
    return path


def test_evaluate_depth_checkpoint_json_csv(synth, gt_file, tmp_path, capsys):
    split = os.path.join(synth["root"], "splits", "test_files.txt")
    out_json, out_csv, disps = tmp_path / "m.json", tmp_path / "m.csv", tmp_path / "disps.npz"
    rc = main(["evaluate", "depth", "--checkpoint", synth["ckpt"], "--data", synth["root"], "--split-file", split,
               "--gt", gt_file, "--json", str(out_json), "--csv", str(out_csv), "--batch-size", "2",
               "--num-workers", "0", "--save-pred", str(disps), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Scaling ratios | med:" in out and "abs_rel" in out
    res = json.loads(out_json.read_text())
    assert set(METRIC_NAMES) <= set(res)
    assert res["num_images"] == 5 and res["protocol"] == "eigen" and res["ratio_median"] > 0
    assert all(np.isfinite(res[k]) for k in METRIC_NAMES)
    rows = out_csv.read_text().strip().splitlines()
    assert len(rows) == 6 and rows[0].startswith("index,folder,frame_index,side,abs_rel")
    # the saved predictions, evaluated as external predictions, give the same numbers
    out_json2 = tmp_path / "m2.json"
    assert main(["evaluate", "depth", "--pred", str(disps), "--gt", gt_file, "--json", str(out_json2),
                 "--no-progress"]) == 0
    res2 = json.loads(out_json2.read_text())
    for k in METRIC_NAMES:
        assert res2[k] == pytest.approx(res[k], rel=1e-6)


def test_evaluate_depth_external_predictions(synth, gt_file, tmp_path):
    _, gts = _dense_gt(synth["root"])
    # scaled disparities of a depth 3x the ground truth, at half resolution, saved under a custom key
    preds = np.stack([1.0 / (3.0 * np.where(g > 0, g, 50.0)[::2, ::2]) for g in gts]).astype(np.float32)
    np.savez(tmp_path / "p.npz", my_disps=preds)
    out = tmp_path / "p.json"
    assert main(["evaluate", "depth", "--pred", str(tmp_path / "p.npz"), "--gt", gt_file, "--json", str(out),
                 "--protocol", "eigen_benchmark", "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert res["ratio_median"] == pytest.approx(1 / 3, rel=0.02)  # ratio = median(gt)/median(pred)
    assert res["a1"] > 0.9 and res["abs_rel"] < 0.1
    # a fixed scale instead of median scaling
    assert main(["evaluate", "depth", "--pred", str(tmp_path / "p.npz"), "--gt", gt_file, "--json", str(out),
                 "--protocol", "eigen_benchmark", "--fixed-scale", "0.3333333", "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert "ratio_median" not in res and res["fixed_scale"] == pytest.approx(1 / 3) and res["abs_rel"] < 0.1
    # the median ratios are reported but not applied: ~1 once the fixed scale makes the depth metric
    assert res["ratio_median_not_applied"] == pytest.approx(1.0, rel=0.02)
    assert main(["evaluate", "depth", "--pred", str(tmp_path / "p.npz"), "--gt", gt_file, "--json", str(out),
                 "--protocol", "eigen_benchmark", "--fixed-scale", "1", "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert res["ratio_median_not_applied"] == pytest.approx(1 / 3, rel=0.02) and res["abs_rel"] > 0.6


def test_evaluate_depth_bad_predictions(synth, gt_file, tmp_path, capsys):
    preds = np.full((4, 64, 208), 0.1, dtype=np.float32)
    np.savez(tmp_path / "short.npz", disps=preds)
    assert main(["evaluate", "depth", "--pred", str(tmp_path / "short.npz"), "--gt", gt_file]) == 2
    err = capsys.readouterr().err
    assert "short.npz holds 4 predictions" in err and "gt_depths.npz holds 5" in err
    preds = np.full((5, 64, 208), 0.1, dtype=np.float32)
    preds[3, 10, 10] = np.nan
    np.savez(tmp_path / "nan.npz", disps=preds)
    assert main(["evaluate", "depth", "--pred", str(tmp_path / "nan.npz"), "--gt", gt_file, "--no-progress"]) == 2
    assert "nan.npz frame 3: prediction contains 1 NaN" in capsys.readouterr().err
    np.save(tmp_path / "obj.npy", np.array([np.zeros((2, 2)), None], dtype=object))
    assert main(["evaluate", "depth", "--pred", str(tmp_path / "obj.npy"), "--gt", gt_file]) == 2
    assert "without unpickling" in capsys.readouterr().err


def test_evaluate_depth_wrong_architecture(synth, gt_file, tmp_path, capsys):
    ckpt = torch.load(synth["ckpt"], weights_only=True)
    ckpt["config"]["model"]["depth_layers"] = 34
    torch.save(ckpt, tmp_path / "r34.pt")
    split = os.path.join(synth["root"], "splits", "test_files.txt")
    rc = main(["evaluate", "depth", "--checkpoint", str(tmp_path / "r34.pt"), "--data", synth["root"],
               "--split-file", split, "--gt", gt_file])
    assert rc == 2 and "r34.pt: the 'depth' weights do not fit" in capsys.readouterr().err


def test_eval_depth_wrapper_same_arguments(synth, gt_file, tmp_path):
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("eval_depth", os.path.join(here, "..", "evaluate", "eval_depth.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _, gts = _dense_gt(synth["root"])
    np.savez(tmp_path / "d.npz", disps=np.stack([np.full(g.shape, 0.1, np.float32) for g in gts]))
    out = tmp_path / "w.json"
    assert mod.main(["--pred", str(tmp_path / "d.npz"), "--gt", gt_file, "--json", str(out), "--no-progress"]) == 0
    assert set(METRIC_NAMES) <= set(json.loads(out.read_text()))


def test_eval_pose_wrapper_same_arguments(synth, tmp_path):
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("eval_pose", os.path.join(here, "..", "evaluate", "eval_pose.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "p.json"
    assert mod.main(["--checkpoint", synth["ckpt"], "--data", synth["root"], "--sequence", "1",
                     "--align", "scale", "--json", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    # 5 frames of ~1 m: shorter than 100 m, so the devkit's relative errors are reported as null
    assert res["t_err"] is None and res["num_snippets"] == 4 and res["sequence"] == "01"
