import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fmdepth.data import (DepthBatch, ImageFolderDataset, KittiOdometryDataset, KittiRawDataset,
                          collate_depth)
from fmdepth.data.augment import ColorJitterParams
from fmdepth.data.kitti_io import RawCalibration
from fmdepth.data.splits import read_split
from fmdepth.geometry import inverse_warp, scale_intrinsics

DATE = "2011_09_26"
H, W = 64, 192


def _train(root):
    return os.path.join(root, "splits", "train_files.txt")


def _make(root, **kw):
    args = dict(frame_ids=(0, -1, 1), num_scales=4)
    args.update(kw)
    return KittiRawDataset(root, args.pop("split", _train(root)), H, W, **args)


def test_batch_shapes_and_intrinsics_per_scale(synth_root):
    ds = _make(synth_root, frame_ids=(0, -1, 1, "s"), load_gt=True)
    loader = DataLoader(ds, batch_size=3, shuffle=False, collate_fn=collate_depth)
    batch = next(iter(loader))
    assert isinstance(batch, DepthBatch) and batch.batch_size == 3
    assert set(batch.frames) == {0, -1, 1, "s"} == set(batch.net_frames)
    for fid, levels in batch.frames.items():
        assert [tuple(t.shape) for t in levels] == [(3, 3, H >> s, W >> s) for s in range(4)]
        assert levels[0].min() >= 0 and levels[0].max() <= 1
    assert batch.depth_gt.shape == (3, 1, 96, 320) and batch.label.dtype == torch.int64
    assert batch.index.tolist() == [0, 1, 2] and batch.meta[0] == read_split(_train(synth_root))[0]
    K_native = torch.from_numpy(RawCalibration(os.path.join(synth_root, DATE)).K("02")).float()
    K0 = scale_intrinsics(K_native, W / 320, H / 96)
    for s in range(4):
        expected = scale_intrinsics(K0, (W >> s) / W, (H >> s) / H)
        assert torch.allclose(batch.K[s][0], expected, atol=1e-4)
        assert torch.allclose(batch.K[s][0] @ batch.K_inv[s][0], torch.eye(3), atol=1e-5)
    # stereo: target left -> right camera is at +baseline, points move by -baseline
    sides = [m[2] for m in batch.meta]
    for b, side in enumerate(sides):
        assert batch.stereo_T[b, 0, 3] == pytest.approx(-0.54 if side == "l" else 0.54, abs=1e-5)
    moved = batch.to("cpu")
    assert moved.frames[0][1].shape == batch.frames[0][1].shape and moved.meta == batch.meta


def test_intrinsics_come_from_the_calibration_file(synth_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns("velodyne*", "sequences", "gt"))
    calib = root / DATE / "calib_cam_to_cam.txt"
    text = calib.read_text().replace("P_rect_02: 1.856000e+02", "P_rect_02: 2.000000e+02")
    calib.write_text(text)
    sample = _make(str(root))[0]
    assert sample.K[0][0, 0] == pytest.approx(200.0 * W / 320)


def test_flip_keeps_images_K_stereo_and_gt_consistent(synth_root):
    plain = _make(synth_root, frame_ids=(0, "s"), load_gt=True)
    flipped = _make(synth_root, frame_ids=(0, "s"), load_gt=True, is_train=True, flip_prob=1.0, jitter_prob=0.0)
    a, b = plain[2], flipped[2]
    for fid in (0, "s"):
        for s in range(4):
            assert torch.allclose(b.frames[fid][s], a.frames[fid][s].flip(-1), atol=1.5 / 255)
        assert torch.equal(b.net_frames[fid], b.frames[fid][0])  # no jitter
    for s in range(4):
        w = W >> s
        assert b.K[s][0, 2] == pytest.approx(w - 1 - a.K[s][0, 2])
        assert b.K[s][0, 0] == pytest.approx(a.K[s][0, 0])
    assert b.stereo_T[0, 3] == pytest.approx(-a.stereo_T[0, 3])
    assert torch.equal(b.depth_gt, a.depth_gt.flip(-1)) and torch.equal(b.label, a.label.flip(-1))
    # geometric check: the stereo warp with the GT depth works in both the plain and flipped sample
    for smp in (a, b):
        depth = torch.nn.functional.interpolate(smp.depth_gt[None], size=(H, W), mode="nearest")
        warped, valid = inverse_warp(smp.frames["s"][0][None], depth, smp.stereo_T[None], smp.K[0][None])
        err = (warped - smp.frames[0][0][None]).abs().mean(1, keepdim=True)[valid & (depth > 0)].mean()
        wrong = smp.stereo_T.clone()
        wrong[0, 3] *= -1
        warped_w, valid_w = inverse_warp(smp.frames["s"][0][None], depth, wrong[None], smp.K[0][None])
        err_w = (warped_w - smp.frames[0][0][None]).abs().mean(1, keepdim=True)[valid_w & (depth > 0)].mean()
        assert err < 0.5 * err_w, (err, err_w)


def test_jitter_only_on_network_inputs_and_identical_for_all_frames(synth_root):
    plain = _make(synth_root)
    jit = _make(synth_root, is_train=True, flip_prob=0.0, jitter_prob=1.0)
    torch.manual_seed(123)
    b = jit[1]
    a = plain[1]
    torch.manual_seed(123)
    torch.rand(())  # the dataset's jitter coin
    params = ColorJitterParams.sample()
    for fid in (0, -1, 1):
        for s in range(4):
            assert torch.equal(b.frames[fid][s], a.frames[fid][s])  # loss images untouched
        assert not torch.allclose(b.net_frames[fid], a.frames[fid][0], atol=1e-3)
        assert torch.allclose(b.net_frames[fid], params.apply(a.frames[fid][0]), atol=1e-6)


def test_no_augmentation_when_not_training(synth_root):
    ds = _make(synth_root, is_train=False, flip_prob=1.0, jitter_prob=1.0)
    s = ds[0]
    assert torch.equal(s.net_frames[0], s.frames[0][0])


def test_odometry_dataset(synth_root):
    ds = KittiOdometryDataset(synth_root, os.path.join(synth_root, "splits", "odom", "train_files.txt"), H, W,
                              frame_ids=(0, -1, 1, "s"), load_gt=True)
    batch = collate_depth([ds[0], ds[1]])
    assert batch.frames[1][0].shape == (2, 3, H, W) and batch.depth_gt.shape == (2, 1, 96, 320)
    raw = _make(synth_root)
    assert torch.allclose(batch.K[0][0], raw[0].K[0], atol=1e-4)
    # same pixels as the raw layout (the renderer hard-links the files)
    assert torch.equal(batch.frames[0][0][0], _make(synth_root, split=[("2011_09_26/2011_09_26_drive_0001_sync",
                                                                        ds.entries[0][1], ds.entries[0][2])])[0].frames[0][0])


def test_image_folder_and_video(synth_root, tmp_path):
    src = os.path.join(synth_root, DATE, f"{DATE}_drive_0001_sync", "image_02", "data")
    folder = tmp_path / "seq"
    shutil.copytree(src, folder)
    (folder / "intrinsics.yaml").write_text("fx: 185.6\nfy: 184.32\ncx: 159.5\ncy: 47.5\n")
    ds = ImageFolderDataset(str(folder), H, W, frame_ids=(0, -1, 1))
    assert len(ds) == 3  # 5 frames, the first and last lack a neighbour
    raw_K = _make(synth_root)[0].K
    assert all(torch.allclose(k1, k2, atol=1e-4) for k1, k2 in zip(ds[0].K, raw_K))
    assert collate_depth([ds[0], ds[1]]).frames[-1][3].shape == (2, 3, H // 8, W // 8)
    with pytest.raises(ValueError, match="stereo"):
        ImageFolderDataset(str(folder), H, W, frame_ids=(0, "s"))
    import imageio.v2 as imageio

    video = tmp_path / "clip.mp4"
    with imageio.get_writer(str(video), fps=10) as wr:
        for f in sorted(os.listdir(src)):
            wr.append_data(np.asarray(Image.open(os.path.join(src, f))))
    with pytest.warns(UserWarning, match="degree horizontal field of view"):
        vds = ImageFolderDataset(str(video), H, W, progress=False)
        sample = vds[0]
    assert len(vds) == 3 and sample.frames[0][0].shape == (3, H, W)


# ---------------------------------------------------------------------------------- bad input
@pytest.fixture
def broken_root(synth_root, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns("sequences", "gt", "velodyne*"))
    return root


def test_missing_frames_and_skip_missing(broken_root):
    drive = broken_root / DATE / f"{DATE}_drive_0001_sync"
    missing = drive / "image_02" / "data" / "0000000002.png"
    os.remove(missing)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        _make(str(broken_root))
    with pytest.warns(UserWarning, match="skipped"):
        ds = _make(str(broken_root), skip_missing=True)
    reasons = [r for _, r in ds.skipped]
    assert ds.skipped and all(str(missing) in r for r in reasons)
    assert {e[1] for e, _ in ds.skipped if e[0].endswith("0001_sync") and e[2] == "l"} <= {1, 2, 3}
    with pytest.raises(FileNotFoundError, match="not found"):
        _make(str(broken_root), split=[(f"{DATE}/{DATE}_drive_0009_sync", 1, "l")])


def test_missing_calibration(broken_root):
    calib = broken_root / DATE / "calib_cam_to_cam.txt"
    os.remove(calib)
    with pytest.raises(FileNotFoundError, match=str(calib)):
        _make(str(broken_root))


def test_missing_velodyne_for_gt(broken_root):
    with pytest.raises(FileNotFoundError, match="ground truth not found"):
        _make(str(broken_root), load_gt=True)


def test_corrupt_and_wrongly_sized_images(broken_root):
    data = broken_root / DATE / f"{DATE}_drive_0001_sync" / "image_02" / "data"
    target = data / "0000000002.png"
    blob = target.read_bytes()
    target.write_bytes(blob[: len(blob) // 3])  # truncated PNG
    ds = _make(str(broken_root), split=[(f"{DATE}/{DATE}_drive_0001_sync", 2, "l")])
    with pytest.raises(ValueError, match=r"0000000002\.png: corrupt or truncated"):
        ds[0]
    Image.new("RGB", (100, 40)).save(target)
    with pytest.raises(ValueError, match=r"is 100x40 \(WxH\), expected 320x96"):
        ds[0]


def test_bad_split_lines_and_arguments(synth_root, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{DATE}/{DATE}_drive_0001_sync 1 l\n{DATE}/{DATE}_drive_0001_sync one l\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: frame index must be an integer"):
        _make(synth_root, split=str(bad))
    with pytest.raises(ValueError, match="divisible"):
        KittiRawDataset(synth_root, _train(synth_root), 60, 192)
    with pytest.raises(ValueError, match="must contain 0"):
        _make(synth_root, frame_ids=(-1, 1))
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        KittiRawDataset(str(tmp_path / "nowhere"), _train(synth_root), H, W)


def test_collate_rejects_mixed_samples(synth_root):
    a = _make(synth_root)[0]
    b = _make(synth_root, frame_ids=(0,))[0]
    with pytest.raises(ValueError, match="frame ids"):
        collate_depth([a, b])
    with pytest.raises(ValueError, match="empty"):
        collate_depth([])


def test_loader_with_workers_is_deterministic(synth_root):
    ds = _make(synth_root, is_train=True)

    def first_batch():
        g = torch.Generator().manual_seed(7)
        loader = DataLoader(ds, batch_size=2, shuffle=True, num_workers=1, collate_fn=collate_depth, generator=g)
        return next(iter(loader))

    b1, b2 = first_batch(), first_batch()
    assert b1.meta == b2.meta
    assert torch.equal(b1.net_frames[0], b2.net_frames[0]) and torch.equal(b1.K[0], b2.K[0])


def test_corrupt_image_with_skip_missing_falls_back_and_reports(broken_root):
    drive = f"{DATE}/{DATE}_drive_0001_sync"
    target = broken_root / DATE / f"{DATE}_drive_0001_sync" / "image_02" / "data" / "0000000002.png"
    target.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = _make(str(broken_root), split=[(drive, 2, "l"), (drive, 3, "r")], skip_missing=True)
    with pytest.warns(UserWarning, match=r"skipping entry 0 .*0000000002\.png: corrupt"):
        sample = ds[0]
    assert sample.meta == (drive, 3, "r") and sample.index == 0


def test_jpg_frames(broken_root):
    data = broken_root / DATE / f"{DATE}_drive_0001_sync" / "image_02" / "data"
    for png in list(data.glob("*.png")):
        Image.open(png).convert("RGB").save(png.with_suffix(".jpg"), quality=95)
        png.unlink()
    drive = f"{DATE}/{DATE}_drive_0001_sync"
    ds = _make(str(broken_root), split=[(drive, 2, "l")], img_ext=".jpg")
    s = ds[0]
    assert s.frames[1][0].shape == (3, H, W) and s.K[0].shape == (3, 3)
    with pytest.raises(FileNotFoundError, match=r"0000000002\.png"):
        _make(str(broken_root), split=[(drive, 2, "l")])
