"""Inference from a checkpoint: loading, architecture checks, prediction of folders and videos."""
import os

import numpy as np
import pytest
import torch

from fmdepth.config import Config, config_to_dict
from fmdepth.inference import (
    DepthPredictor,
    PosePredictor,
    collect_inputs,
    colorize_disparity,
    predict_inputs,
)
from fmdepth.networks import DepthNet, PoseNet

H, W = 64, 96  # network input size of the test checkpoints


def make_checkpoint(path, depth_layers=18, height=H, width=W, with_pose=True, task="depth"):
    """A checkpoint dict following the engine's contract, built from randomly initialised nets."""
    cfg = config_to_dict(Config())
    cfg["task"] = task
    cfg["data"].update(height=height, width=width)
    cfg["model"].update(depth_layers=depth_layers, pose_layers=18)
    models = {}
    if task == "depth":
        models["depth"] = DepthNet(num_layers=depth_layers).state_dict()
        if with_pose:
            models["pose"] = PoseNet(num_layers=18).state_dict()
    else:
        models["other"] = {"w": torch.zeros(1)}
    ckpt = {"config": cfg, "models": models, "optimizer": {}, "scheduler": {}, "scaler": None,
            "step": 0, "epoch": 0, "version": "0.1.0", "rng": {}, "best_metric": None}
    torch.save(ckpt, path)
    return str(path)


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory):
    torch.manual_seed(0)
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture(scope="module")
def predictor(ckpt_path):
    return DepthPredictor.from_checkpoint(ckpt_path, device="cpu")


def test_depth_predictor_shapes_and_range(predictor):
    pred = predictor
    assert (pred.height, pred.width) == (H, W)
    images = torch.rand(2, 3, 50, 130)
    disp, depth = pred.predict(images)
    assert disp.shape == (2, 1, 50, 130) and depth.shape == (2, 1, 50, 130)
    info = pred.info
    # scaled disparity within [1/max_depth, 1/min_depth]; depth is its inverse
    assert disp.min() >= 1 / info.max_depth - 1e-6 and disp.max() <= 1 / info.min_depth + 1e-6
    torch.testing.assert_close(depth * disp, torch.ones_like(disp))
    small = pred.predict_scaled_disp(images)
    assert small.shape == (2, 1, H, W)
    pp = pred.predict_scaled_disp(images, post_process=True)
    assert pp.shape == (2, 1, H, W) and not torch.equal(pp, small)


def test_pose_predictor_returns_rigid_transforms(ckpt_path):
    pose = PosePredictor.from_checkpoint(ckpt_path, device="cpu")
    T = pose.predict(torch.rand(3, 3, 40, 60), torch.rand(3, 3, 40, 60))
    assert T.shape == (3, 4, 4) and T.dtype == torch.float64
    R = T[:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(3, 3, 3),
                               atol=1e-5, rtol=0)


def test_checkpoint_from_another_architecture(tmp_path):
    path = make_checkpoint(tmp_path / "r18.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["model"]["depth_layers"] = 50  # config says ResNet50, weights are ResNet18
    torch.save(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match=r"mismatch\.pt: the 'depth' weights do not fit"):
        DepthPredictor.from_checkpoint(str(tmp_path / "mismatch.pt"))
    other = make_checkpoint(tmp_path / "reg.pt", task="registration")
    with pytest.raises(ValueError, match=r"reg\.pt: checkpoint holds no 'depth' network \(task 'registration'"):
        DepthPredictor.from_checkpoint(other)
    no_pose = make_checkpoint(tmp_path / "nopose.pt", with_pose=False)
    with pytest.raises(ValueError, match="no 'pose' network"):
        PosePredictor.from_checkpoint(no_pose)


def test_missing_and_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError):
        collect_inputs([str(tmp_path / "nope.png")])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown file type"):
        collect_inputs([str(tmp_path / "notes.txt")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no image"):
        collect_inputs([str(empty)])


def _write_images(folder, sizes):
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)).save(
            os.path.join(folder, f"img_{i}.png"))


def test_predict_folder_end_to_end(predictor, tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    _write_images(str(folder), [(60, 90), (60, 90), (45, 120)])  # mixed sizes in one batch
    pred = predictor
    out = tmp_path / "out"
    files = predict_inputs(pred, [str(folder)], str(out), batch_size=2, progress=False)
    assert len(files) == 9
    d0 = np.load(out / "frames" / "img_0_disp.npy")
    z0 = np.load(out / "frames" / "img_0_depth.npy")
    assert d0.shape == (60, 90) and d0.dtype == np.float32
    np.testing.assert_allclose(z0 * d0, 1.0, rtol=1e-5)
    assert np.load(out / "frames" / "img_2_disp.npy").shape == (45, 120)
    png = np.asarray(Image.open(out / "frames" / "img_2_disp.png"))
    assert png.shape == (45, 120, 3)
    # same image alone or in a batch gives the same prediction
    alone = tmp_path / "alone"
    predict_inputs(pred, [str(folder / "img_0.png")], str(alone), save="disp", progress=False)
    np.testing.assert_allclose(np.load(alone / "img_0_disp.npy"), d0, rtol=1e-5, atol=1e-6)
    assert not (alone / "img_0_depth.npy").exists()


def test_predict_video_end_to_end(predictor, tmp_path):
    """A video gives NAME_depth.mp4 (input | disparity, same fps); .npy per frame only on request."""
    import imageio.v2 as iio2

    video = tmp_path / "clip.mp4"
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, size=(48, 80, 3), dtype=np.uint8) for _ in range(4)]
    with iio2.get_writer(str(video), fps=5, codec="libx264", macro_block_size=1) as writer:
        for f in frames:
            writer.append_data(f)
    files = predict_inputs(predictor, [str(video)], str(tmp_path / "out"), batch_size=3, save="depth",
                           progress=False)
    assert files == [str(tmp_path / "out" / "clip_depth.mp4")]
    assert sorted(os.listdir(tmp_path / "out")) == ["clip_depth.mp4"]
    reader = iio2.get_reader(files[0], format="ffmpeg")
    fps, out = reader.get_meta_data()["fps"], [f for f in reader]
    reader.close()
    assert len(out) == 4 and fps == pytest.approx(5.0) and out[0].shape == (48, 160, 3)
    # left half: the input (H.264 is lossy on random noise: compare loosely)
    decoded = [f for f in iio2.get_reader(str(video), format="ffmpeg")]
    assert np.abs(out[2][:, :80].astype(float) - decoded[2].astype(float)).mean() < 40
    files = predict_inputs(predictor, [str(video)], str(tmp_path / "npy"), batch_size=3, save="depth",
                           progress=False, save_npy=True)
    assert sorted(os.path.basename(f) for f in files if f.endswith(".npy")) == [f"{i:06d}_depth.npy" for i in range(4)]
    assert np.load(tmp_path / "npy" / "clip" / "000003_depth.npy").shape == (48, 80)


def test_predict_bad_video_overwrites_nothing(predictor, tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"not a video" * 100)
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip_depth.mp4").write_bytes(b"previous result")
    with pytest.raises(ValueError, match=r"clip\.mp4: "):
        predict_inputs(predictor, [str(bad)], str(out), progress=False)
    assert sorted(os.listdir(out)) == ["clip_depth.mp4"]
    assert (out / "clip_depth.mp4").read_bytes() == b"previous result"


def test_colorize_disparity():
    img = colorize_disparity(np.linspace(0, 1, 200).reshape(10, 20))
    assert img.shape == (10, 20, 3) and img.dtype == np.uint8
    assert img[0, 0].sum() < img[-1, -1].sum()  # magma: dark for far (small disparity)
