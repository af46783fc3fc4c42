import os
import types

import pytest
import torch

from fmdepth.config import config_from_dict
from fmdepth.tasks.depth import make_depth_validate, resolve_split_dir


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
    from fmdepth.core.checkpoint import load_checkpoint
    from fmdepth.tasks import train

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
    from fmdepth.tasks.depth import build
    from fmdepth.tasks import train

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

    from fmdepth.tasks.depth import build

    root = tmp_path / "copy"
    shutil.copytree(odom_root, root, symlinks=True)
    os.remove(root / "sequences" / "01" / "calib.txt")
    with pytest.raises(FileNotFoundError, match=r"calibration file not found: .*sequences/01/calib\.txt"):
        build(_tiny_cfg(str(root), "kitti_odom", "odom"))
    with pytest.raises(FileNotFoundError, match=r"sequences/01/calib\.txt"):
        from fmdepth.commands.evaluate import read_calib_intrinsics
        read_calib_intrinsics(str(root / "sequences" / "01" / "calib.txt"))


def _write_video(path, frames, fps=10):
    import imageio.v2 as imageio

    with imageio.get_writer(str(path), fps=fps, macro_block_size=1) as wr:
        for f in frames:
            wr.append_data(f)


def _synth_frames(root, drive=1, cam="02"):
    import numpy as np
    from PIL import Image

    d = os.path.join(root, "2011_09_26", f"2011_09_26_drive_{drive:04d}_sync", f"image_{cam}", "data")
    return [np.asarray(Image.open(os.path.join(d, f))) for f in sorted(os.listdir(d))]


@pytest.mark.slow
def test_folder_video_trains_then_predict_writes_a_video(odom_root, tmp_path, capsys):
    """`train --data my_video.mp4` with configs/video_quick.yaml, then `predict` on the same video."""
    import imageio.v2 as imageio

    from fmdepth.cli import main

    video = tmp_path / "my_video.mp4"
    _write_video(video, _synth_frames(odom_root) + _synth_frames(odom_root, 2), fps=12)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = os.path.join(repo, "configs", "video_quick.yaml")
    with pytest.warns(UserWarning, match="assuming a 60 degree horizontal field of view"):
        assert main(["train", "--config", cfg, "--data", str(video), "--out", str(tmp_path / "run"),
                     "--set", "train.max_steps=2", "--set", "train.val_every=2", "--set", "data.height=64",
                     "--set", "data.width=224", "--set", "train.batch_size=2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "1 sequence(s), 12 frames" in out and "val" in out
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    assert ckpt.is_file()
    assert main(["predict", "--checkpoint", str(ckpt), str(video), "--out", str(tmp_path / "pred"),
                 "--no-progress"]) == 0
    written = sorted(os.listdir(tmp_path / "pred"))
    assert written == ["my_video_depth.mp4"]
    reader = imageio.get_reader(str(tmp_path / "pred" / "my_video_depth.mp4"), format="ffmpeg")
    meta = reader.get_meta_data()
    frames = [f for f in reader]
    reader.close()
    assert len(frames) == 12 and abs(meta["fps"] - 12) < 0.01
    assert frames[0].shape == (64, 2 * 224, 3)  # input | colourised disparity, the input's size


def test_folder_of_sequences_split_sizes_and_intrinsics(odom_root, tmp_path, capsys):
    """Several sequences of different sizes, K from a YAML next to the data, automatic split."""
    import numpy as np
    from PIL import Image

    from fmdepth.data.folder import build_folder_datasets

    root = tmp_path / "mine"
    for name, frames, size in (("a", _synth_frames(odom_root), None), ("b", _synth_frames(odom_root, 2), (112, 32))):
        (root / name).mkdir(parents=True)
        for i, f in enumerate(frames):
            img = Image.fromarray(f)
            (img.resize(size) if size else img).save(root / name / f"{i:04d}.png")
    (root / "intrinsics.yaml").write_text("fx: 129.92\nfy: 122.88\ncx: 111.5\ncy: 31.5\nwidth: 224\nheight: 64\n")
    train, val = build_folder_datasets(str(root), "auto", 64, 224, val_fraction=0.25, progress=False)
    assert "2 sequence(s), 12 frames (112x32, 224x64)" in capsys.readouterr().out
    assert [e for e in val.entries if e[0] == "a"] == [("a", 4, "l")]
    # val sample 4 reads frames 3-5: training samples 2 and 3 would read frame 3, so only 1 is left
    assert [e[1] for e in train.entries if e[0] == "a"] == [1]
    s_a = val[0]
    assert torch.allclose(s_a.K[0][0, 0], torch.tensor(129.92)) and s_a.frames[0][0].shape == (3, 64, 224)
    s_b = next(train[i] for i, e in enumerate(train.entries) if e[0] == "b")
    # b: frames at 112x32, K scaled by 0.5 from the file, then by 2 to the network size: unchanged
    assert torch.allclose(s_b.K[0], s_a.K[0], atol=1e-4)
    # a split file wins over the automatic split
    (root / "splits").mkdir()
    (root / "splits" / "train_files.txt").write_text("a 1 l\nb 2 l\n")
    train, val = build_folder_datasets(str(root), "splits", 64, 224, progress=False)
    assert train.entries == [("a", 1, "l"), ("b", 2, "l")] and val is None
    assert np.isfinite(train[1].frames[0][0].numpy()).all()


def test_folder_bad_input_one_line(odom_root, tmp_path):
    import numpy as np
    from PIL import Image

    from fmdepth.config import config_from_dict
    from fmdepth.data.folder import FrameSource, read_intrinsics_file
    from fmdepth.tasks.depth import build

    frames = _synth_frames(odom_root)
    few = tmp_path / "few"
    few.mkdir()
    for i in range(2):
        Image.fromarray(frames[i]).save(few / f"{i}.png")
    with pytest.raises(ValueError, match=r"few/: 2 frame\(s\), expected at least 3"):
        FrameSource(str(few), progress=False)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i in range(4):
        img = Image.fromarray(frames[i])
        (img.resize((112, 32)) if i == 2 else img).save(mixed / f"{i}.png")
    with pytest.raises(ValueError, match=r"mixed/2\.png: frame is 112x32 but 0\.png is 224x64"):
        FrameSource(str(mixed), progress=False)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 2000)
    with pytest.raises(ValueError, match=r"bad\.mp4: "):
        FrameSource(str(bad), progress=False)
    k = tmp_path / "k.yaml"
    k.write_text("fx: 100\nfy: 100\ncx: 10\n")
    with pytest.raises(ValueError, match=r"k\.yaml: missing intrinsics key\(s\) cy"):
        read_intrinsics_file(str(k))
    k.write_text("fx: 0\nfy: 100\ncx: 10\ncy: 5\n")
    with pytest.raises(ValueError, match=r"k\.yaml: focal lengths must be positive"):
        read_intrinsics_file(str(k))
    seq = tmp_path / "seq"
    seq.mkdir()
    for i in range(3):
        Image.fromarray(frames[i]).save(seq / f"{i}.png")
    (seq / "intrinsics.json").write_text('{"fx": -5, "fy": 100, "cx": 10, "cy": 5}')
    with pytest.raises(ValueError, match=r"intrinsics\.json: focal lengths must be positive"):
        FrameSource(str(seq), progress=False)
    with pytest.raises(ValueError, match=r"data.stereo: .*one camera"):
        build(config_from_dict({"data": {"dataset": "folder", "path": str(seq), "stereo": True}}))
    os.remove(seq / "intrinsics.json")
    with pytest.raises(ValueError, match=r"seq: no intrinsics file .* \(data.fov_deg is 0\)"):
        FrameSource(str(seq), fov_deg=0, progress=False)
    assert np.array_equal(np.asarray(Image.open(seq / "0.png")), frames[0])  # nothing overwritten


def test_stereo_depth_range_is_checked_against_the_metric_baseline(odom_root, tmp_path):
    import shutil

    from fmdepth.tasks.depth import build, stereo_start_disparity

    # KITTI: fx = 0.58 W, baseline 0.54 m; Monodepth2's range 0.1..100 in metres vs its metric equivalent
    assert stereo_start_disparity(0.58, 0.54, 0.1, 100.0) == pytest.approx(1.5676, abs=1e-4)
    assert stereo_start_disparity(0.58, 0.54, 0.54, 540.0) == pytest.approx(0.2903, abs=1e-4)
    cfg = _tiny_cfg(odom_root, "synthetic", "splits", frame_ids=[0], stereo=True)
    cfg.model.min_depth = 0.1
    with pytest.raises(ValueError, match=r"model.min_depth.*1\.57 image widths away.*min_depth >= 0\.32 .*0\.54\.\.540 m here"):
        build(cfg)
    cfg.model.min_depth = 1.0
    task = build(cfg)
    sample = task.train_set[0]
    assert abs(float(sample.stereo_T[0, 3])) == pytest.approx(0.54, abs=1e-6)  # metres, from calib
    # a stereo request on data without a second camera: one line naming the missing file
    root = tmp_path / "mono_only"
    shutil.copytree(odom_root, root, ignore=shutil.ignore_patterns("image_03", "sequences", "gt"))
    cfg = _tiny_cfg(str(root), "synthetic", "splits", frame_ids=[0], stereo=True)
    with pytest.raises(FileNotFoundError, match=r"image not found: .*image_03.*\(stereo frame 's'\)"):
        build(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("frame_ids", [[0], [0, -1, 1]], ids=["stereo", "mono+stereo"])
def test_stereo_and_mono_stereo_train_end_to_end(odom_root, tmp_path, frame_ids):
    from fmdepth.tasks import train

    cfg = _tiny_cfg(odom_root, "synthetic", "splits", frame_ids=frame_ids, stereo=True)
    cfg.model.min_depth = 1.0
    cfg.loss.automask = False
    cfg.loss.disp_norm = False
    res = train(cfg, str(tmp_path / "run"), progress=False)
    assert res.step == 2 and "abs_rel" in res.last_val
    from fmdepth.core.checkpoint import load_checkpoint

    models = set(load_checkpoint(res.last_checkpoint)["models"])
    assert models == ({"depth"} if frame_ids == [0] else {"depth", "pose"})


@pytest.mark.slow
def test_stereo_training_is_metric_without_median_scaling(tmp_path):
    """configs/synth_stereo_quick.yaml, shortened: the depth beats the (median-scaled!) constant
    baseline without any median scaling, and the unapplied median ratio is near 1."""
    import numpy as np

    from fmdepth.config import load_config
    from fmdepth.data import KittiRawDataset, collate_depth
    from fmdepth.data.synthetic import render_dataset
    from fmdepth.tasks import train
    from fmdepth.metrics.depth import evaluate_depth_predictions

    data = render_dataset(str(tmp_path / "synth"), drives=3, frames=16, seed=1, height=64, width=224,
                          velodyne=False, supersample=1, progress=False)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = load_config(os.path.join(repo, "configs", "synth_stereo_quick.yaml"),
                      [f"data.path={data}", "train.max_steps=150", "train.val_every=150", "train.ckpt_every=150"])
    res = train(cfg, str(tmp_path / "run"), progress=False)
    from fmdepth.inference import DepthPredictor

    pred = DepthPredictor.from_checkpoint(res.last_checkpoint, device="cpu")
    test = KittiRawDataset(data, os.path.join(data, "splits", "test_files.txt"), 64, 224, frame_ids=(0,),
                           num_scales=1, load_gt=True)
    batch = collate_depth([test[i] for i in range(len(test))])
    scaled = pred.predict_scaled_disp(batch.net_frames[0])[:, 0].numpy()
    gts = list(batch.depth_gt[:, 0].numpy())
    fixed = evaluate_depth_predictions(gts, list(scaled), median_scaling=False)
    ratio = evaluate_depth_predictions(gts, list(scaled), median_scaling=True).ratio_median
    const = evaluate_depth_predictions(gts, [np.ones_like(s) for s in scaled], median_scaling=True)
    assert fixed.metrics["abs_rel"] <= 0.6 * const.metrics["abs_rel"], (fixed.metrics, const.metrics)
    assert 0.8 < ratio < 1.25
