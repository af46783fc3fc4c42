import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from fmdepth.data import synthetic
from fmdepth.data.kitti_io import RawCalibration, read_calib_file
from fmdepth.data.splits import read_split
from fmdepth.data.synthetic import CLASS_MASK, LABEL_IDS, TEXTURELESS, render_dataset
from fmdepth.geometry import backproject, inverse_warp, invert_intrinsics, project, sample

DATE = "2011_09_26"
DRIVE = f"{DATE}/{DATE}_drive_0001_sync"


def _img(root, folder, i, cam="02"):
    a = np.asarray(Image.open(os.path.join(root, folder, f"image_{cam}", "data", f"{i:010d}.png")), np.float32)
    return torch.from_numpy(a / 255.0).permute(2, 0, 1)[None]


def _pose(root, folder, cam="02"):
    P = np.loadtxt(os.path.join(root, "gt", folder, f"poses_{cam}.txt")).reshape(-1, 3, 4)
    T = np.tile(np.eye(4), (len(P), 1, 1))
    T[:, :3] = P
    return T


def _gt(root, folder, i, kind="depth"):
    return np.load(os.path.join(root, "gt", folder, kind, f"{i:010d}.npy"), allow_pickle=False)


def test_layout_and_calibration(synth_root):
    r = synth_root
    for rel in (f"{DATE}/calib_cam_to_cam.txt", f"{DATE}/calib_velo_to_cam.txt", f"{DATE}/calib_imu_to_velo.txt",
                f"{DRIVE}/image_02/data/0000000004.png", f"{DRIVE}/image_03/data/0000000000.png",
                f"{DRIVE}/velodyne_points/data/0000000002.bin", f"{DRIVE}/oxts/data/0000000001.txt",
                f"{DRIVE}/image_02/timestamps.txt", f"{DRIVE}/velodyne_points/timestamps_start.txt",
                "sequences/00/image_2/000004.png", "sequences/01/image_3/000000.png", "sequences/00/calib.txt",
                "sequences/00/velodyne/000000.bin", "poses/00.txt", "poses/01.txt", "synth_info.json",
                f"gt/{DRIVE}/depth/0000000000.npy", f"gt/{DRIVE}/labels_03/0000000004.npy",
                "splits/train_files.txt", "splits/val_files.txt", "splits/test_files.txt",
                "splits/odom/train_files.txt", "splits/odom/test_files_01.txt"):
        assert os.path.isfile(os.path.join(r, rel)), rel
    calib = RawCalibration(os.path.join(r, DATE), need_velodyne=True)
    K = calib.K("02")
    assert np.allclose(K, [[0.58 * 320, 0, 159.5], [0, 1.92 * 96, 47.5], [0, 0, 1]])
    assert calib.size["02"] == (96, 320)
    assert calib.baseline() == pytest.approx(0.54)
    assert np.allclose(calib.velo_to_cam[:3, :3], synthetic.KITTI_R_VELO_TO_CAM)
    with Image.open(os.path.join(r, DRIVE, "image_02/data/0000000000.png")) as im:
        assert im.size == (320, 96) and im.mode == "RGB"
    odo = read_calib_file(os.path.join(r, "sequences/00/calib.txt"))
    assert set(odo) >= {"P0", "P1", "P2", "P3", "Tr"}
    oxts = np.loadtxt(os.path.join(r, DRIVE, "oxts/data/0000000002.txt"))
    assert oxts.shape == (30,) and 49.0 < oxts[0] < 49.01 and 5.0 < oxts[8] < 15.0  # lat, forward m/s
    scan = np.fromfile(os.path.join(r, DRIVE, "velodyne_points/data/0000000000.bin"), np.float32).reshape(-1, 4)
    assert scan.shape[0] > 50000 and np.all(np.linalg.norm(scan[:, :3], axis=1) <= 120.01)
    info = json.load(open(os.path.join(r, "synth_info.json")))
    assert info["labels"]["0"] == "sky" and info["textureless_flag"] == TEXTURELESS


def test_odometry_poses_match_raw_poses(synth_root):
    P0 = np.loadtxt(os.path.join(synth_root, "poses/00.txt")).reshape(-1, 3, 4)
    T2 = _pose(synth_root, DRIVE)
    assert len(P0) == 5 and np.allclose(P0[0], np.eye(4)[:3], atol=1e-9)
    # camera 2 sits 6 cm left of camera 0 (same orientation)
    c2 = T2[:, :3, 3]
    c0 = P0[:, :, 3] + np.einsum("nij,j->ni", P0[:, :, :3], [synthetic.CAM2_X, 0, 0])
    assert np.allclose(c0, c2, atol=1e-6)
    step = np.linalg.norm(np.diff(c2, axis=0), axis=1)
    assert np.all((step > 0.45) & (step < 1.55))  # 0.5 - 1.5 m per frame


def test_splits_neighbours_and_disjoint_test(synth_root):
    train = read_split(os.path.join(synth_root, "splits/train_files.txt"))
    val = read_split(os.path.join(synth_root, "splits/val_files.txt"))
    test = read_split(os.path.join(synth_root, "splits/test_files.txt"))
    assert train and val and test
    for folder, i, side in train + val:
        for j in (i - 1, i + 1):
            assert os.path.isfile(os.path.join(synth_root, folder, "image_02/data", f"{j:010d}.png"))
    assert {e[0] for e in test}.isdisjoint({e[0] for e in train + val})


def _non_occluded(depth_t, depth_s, src_T_tgt, K):
    points = backproject(depth_t, invert_intrinsics(K))
    pix = project(points, K, src_T_tgt)
    z_src = (src_T_tgt[:, :3, :3] @ points.flatten(2) + src_T_tgt[:, :3, 3:]).view_as(points)[:, 2:3]
    d_src, inside = sample(depth_s, pix, mode="nearest")
    return inside & (depth_t > 0) & ((z_src - d_src).abs() < 0.03 * z_src + 0.05)


@pytest.mark.parametrize("t", [1, 3])
def test_temporal_warp_with_gt_depth_and_pose(synth_root, t):
    K = torch.from_numpy(RawCalibration(os.path.join(synth_root, DATE)).K("02")).float()[None]
    T = _pose(synth_root, DRIVE)
    src_T_tgt = torch.from_numpy(np.linalg.inv(T[t + 1]) @ T[t]).float()[None]
    depth_t = torch.from_numpy(_gt(synth_root, DRIVE, t))[None, None]
    depth_s = torch.from_numpy(_gt(synth_root, DRIVE, t + 1))[None, None]
    label = torch.from_numpy(_gt(synth_root, DRIVE, t, "labels").astype(np.int64))[None, None]
    img_t, img_s = _img(synth_root, DRIVE, t), _img(synth_root, DRIVE, t + 1)
    warped, valid = inverse_warp(img_s, depth_t, src_T_tgt, K)
    mask = valid & _non_occluded(depth_t, depth_s, src_T_tgt, K)
    mask &= (label & CLASS_MASK) != LABEL_IDS["moving_car"]
    assert mask.float().mean() > 0.5
    err = (warped - img_t).abs().mean(1, keepdim=True)[mask].mean()
    err_identity = (img_s - img_t).abs().mean(1, keepdim=True)[mask].mean()
    assert err < 0.3 * err_identity, (err, err_identity)
    assert err < 0.03


def test_stereo_warp_with_gt_depth(synth_root):
    K = torch.from_numpy(RawCalibration(os.path.join(synth_root, DATE)).K("02")).float()[None]
    src_T_tgt = torch.eye(4)[None]
    src_T_tgt[0, 0, 3] = -0.54  # right camera sees left-camera points shifted by -baseline
    depth_l = torch.from_numpy(_gt(synth_root, DRIVE, 2))[None, None]
    depth_r = torch.from_numpy(_gt(synth_root, DRIVE, 2, "depth_03"))[None, None]
    img_l, img_r = _img(synth_root, DRIVE, 2, "02"), _img(synth_root, DRIVE, 2, "03")
    warped, valid = inverse_warp(img_r, depth_l, src_T_tgt, K)
    mask = valid & _non_occluded(depth_l, depth_r, src_T_tgt, K)
    err = (warped - img_l).abs().mean(1, keepdim=True)[mask].mean()
    err_identity = (img_r - img_l).abs().mean(1, keepdim=True)[mask].mean()
    assert err < 0.3 * err_identity and err < 0.03, (err, err_identity)


def test_labels_and_sky(synth_root):
    depth = _gt(synth_root, DRIVE, 0)
    label = _gt(synth_root, DRIVE, 0, "labels")
    assert depth.dtype == np.float32 and label.dtype == np.uint8 and depth.shape == label.shape == (96, 320)
    sky = label == LABEL_IDS["sky"]
    assert sky.any() and np.all(depth[sky] == 0) and np.all(depth[~sky] > 0)
    assert sky[:10].mean() > sky[-10:].mean()  # sky at the top, road at the bottom
    road = (label & CLASS_MASK) == LABEL_IDS["road"]
    assert road[-5:].mean() > 0.3
    # road depth follows the ground-plane formula z = fy * h / (v - cy): constant along a row
    # (the rig only yaws and pitches slightly), within the pitch's effect of the formula
    u = np.nonzero(road[-1])[0]
    assert np.ptp(depth[-1, u]) < 1e-3 * depth[-1, u].mean()
    assert depth[-1, u].mean() == pytest.approx(1.92 * 96 * 1.65 / (95 - 47.5), rel=0.03)


def test_textureless_fraction_controls_flat_surfaces(tmp_path):
    flat = render_dataset(str(tmp_path / "flat"), drives=2, frames=3, height=32, width=96, textureless=1.0,
                          velodyne=False, progress=False)
    lab = np.load(os.path.join(flat, "gt", DRIVE, "labels", "0000000001.npy"))
    surf = (lab != 0) & (lab != LABEL_IDS["lane_marking"])
    assert surf.any() and np.all(lab[surf] & TEXTURELESS)
    tex = render_dataset(str(tmp_path / "tex"), drives=2, frames=3, height=32, width=96, textureless=0.0,
                         velodyne=False, progress=False)
    lab = np.load(os.path.join(tex, "gt", DRIVE, "labels", "0000000001.npy"))
    assert not np.any(lab & TEXTURELESS)


def test_deterministic_for_a_seed(tmp_path):
    kw = dict(drives=2, frames=3, height=32, width=96, velodyne=False, progress=False, moving_cars=1)
    a = render_dataset(str(tmp_path / "a"), seed=5, **kw)
    b = render_dataset(str(tmp_path / "b"), seed=5, **kw)
    c = render_dataset(str(tmp_path / "c"), seed=6, **kw)
    rel = os.path.join(DRIVE, "image_02", "data", "0000000002.png")
    bytes_of = lambda root: open(os.path.join(root, rel), "rb").read()  # noqa: E731
    assert bytes_of(a) == bytes_of(b) != bytes_of(c)
    for f in ("splits/train_files.txt", "poses/00.txt", f"gt/{DRIVE}/poses_02.txt"):
        assert open(os.path.join(a, f)).read() == open(os.path.join(b, f)).read()


def test_output_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "half"
    calls = {"n": 0}
    real = synthetic.dataset.write_png

    def failing(path, image):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        real(path, image)

    monkeypatch.setattr(synthetic.dataset, "write_png", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        render_dataset(str(out), drives=2, frames=3, height=32, width=96, velodyne=False, progress=False)
    assert not out.exists()
    assert os.listdir(tmp_path) == []  # the temporary folder was removed too
    monkeypatch.setattr(synthetic.dataset, "write_png", real)
    done = render_dataset(str(out), drives=2, frames=3, height=32, width=96, velodyne=False, progress=False)
    with pytest.raises(FileExistsError, match=str(out)):
        render_dataset(done, drives=2, frames=3, height=32, width=96, velodyne=False, progress=False)


@pytest.mark.parametrize("kwargs, match", [
    (dict(drives=1), "drives"), (dict(frames=2), "frames"), (dict(textureless=1.5), "textureless"),
    (dict(height=4), "image size"), (dict(moving_cars=-1), "moving_cars"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    args = dict(drives=2, frames=3, height=32, width=96, velodyne=False, progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        render_dataset(str(tmp_path / "x"), **args)


def test_synth_cli(tmp_path, capsys):
    from fmdepth.cli import main

    out = tmp_path / "cli"
    assert main(["synth", "--out", str(out), "--drives", "2", "--frames", "3", "--height", "32", "--width", "96",
                 "--no-velodyne", "--quiet"]) == 0
    assert "splits" in capsys.readouterr().out
    assert main(["synth", "--out", str(out), "--drives", "2", "--frames", "3", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
