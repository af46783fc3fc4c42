import os

import numpy as np
import pytest

from fmdepth.data.gt import export_gt, gt_depth_for_entry, load_gt_depths, save_gt_depths
from fmdepth.data.kitti_io import velodyne_depth_map
from fmdepth.data.splits import read_split, write_split

DATE = "2011_09_26"


def _read_calib(path):
    """Test-side KITTI calibration parser: {key: float array}, non-numeric lines skipped."""
    out = {}
    for line in open(path):
        key, _, rest = line.partition(":")
        try:
            out[key.strip()] = np.array([float(t) for t in rest.split()])
        except ValueError:
            pass
    return out


def _standard_projection(root, folder):
    cam = _read_calib(os.path.join(root, folder.split("/")[0], "calib_cam_to_cam.txt"))
    velo = _read_calib(os.path.join(root, folder.split("/")[0], "calib_velo_to_cam.txt"))
    Tr = np.eye(4)
    Tr[:3, :3], Tr[:3, 3] = velo["R"].reshape(3, 3), velo["T"]
    R0 = np.eye(4)
    R0[:3, :3] = cam["R_rect_00"].reshape(3, 3)
    W, H = cam["S_rect_02"].astype(int)
    return cam["P_rect_02"].reshape(3, 4) @ R0 @ Tr, H, W


def _standard_rule(root, folder, frame):
    """The standard Eigen export written out point by point, independently of fmdepth.

    Points with velodyne x >= 0, in scan order, are written at (round(v) - 1, round(u) - 1) when
    inside the image (plain assignment: the last one wins); then every group of points sharing
    the linear index row * (W - 1) + col - 1 (the standard code's duplicate key) gets the
    smallest velodyne x of the group at the pixel of its first point.
    """
    P, H, W = _standard_projection(root, folder)
    pts = np.fromfile(os.path.join(root, folder, "velodyne_points", "data", f"{frame:010d}.bin"),
                      np.float32).reshape(-1, 4)
    depth = np.zeros((H, W))
    groups = {}
    for x, y, z, _ in pts:
        if x < 0:
            continue
        p = P @ np.array([x, y, z, 1.0], np.float64)
        if p[2] == 0:
            continue
        col, row = round(p[0] / p[2]) - 1, round(p[1] / p[2]) - 1
        if not (0 <= col < W and 0 <= row < H):
            continue
        depth[row, col] = x
        groups.setdefault(row * (W - 1) + col - 1, []).append((row, col, float(x)))
    for members in groups.values():
        if len(members) > 1:
            row, col, _ = members[0]
            depth[row, col] = min(m[2] for m in members)
    return depth.astype(np.float32)


@pytest.fixture(scope="module")
def exported(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("gt")
    split = os.path.join(synth_root, "splits", "test_files.txt")
    paths = {}
    for name, kw in (("velo", {}), ("camz", {"depth": "camera-z"}), ("dense", {"dense": True})):
        path, n, skipped = export_gt(synth_root, split, str(out / f"{name}.npz"), progress=False, **kw)
        assert n == len(read_split(split)) and not skipped
        paths[name] = path
    return {k: load_gt_depths(p) for k, p in paths.items()}, read_split(split)


def test_default_export_is_the_standard_eigen_export_on_every_frame(synth_root):
    """max |fmdepth - standard| is 0 on every frame of every drive (byte-identical maps)."""
    cache, checked, edge_pairs = {}, 0, 0
    for split in ("train_files.txt", "val_files.txt", "test_files.txt"):
        for folder, frame, side in read_split(os.path.join(synth_root, "splits", split)):
            if side != "l":
                continue
            ours = gt_depth_for_entry(synth_root, (folder, frame, "l"), _cache=cache)
            ref = _standard_rule(synth_root, folder, frame)
            assert ours.dtype == np.float32 and ours.shape == ref.shape
            assert np.abs(ours - ref).max() == 0 and ours.tobytes() == ref.tobytes(), (folder, frame)
            edge_pairs += int(((ref[:-1, -1] > 0) & (ref[1:, 0] > 0)).sum())
            checked += 1
    assert checked >= 6 and edge_pairs > 0  # the (r, W-1) / (r+1, 0) quirk is exercised


def test_centre_rule_is_one_pixel_off_the_standard(synth_root, tmp_path):
    entry = read_split(os.path.join(synth_root, "splits", "test_files.txt"))[0]
    std = gt_depth_for_entry(synth_root, entry)
    centre = gt_depth_for_entry(synth_root, entry, pixel="centre")
    assert not np.array_equal(std, centre)
    # away from the edge pairs, the centre map shifted by one pixel up-left is the standard map
    assert np.array_equal(centre[1:, 2:], std[:-1, 1:-1])
    with pytest.raises(ValueError, match="pixel must be one of"):
        export_gt(synth_root, os.path.join(synth_root, "splits", "test_files.txt"), str(tmp_path / "x.npz"),
                  pixel="matlab", progress=False)


def test_camera_z_matches_dense_gt_within_1cm(exported, synth_root):
    """The synthetic scans follow the KITTI convention: camera-z = dense depth at every LiDAR pixel."""
    gts, entries = exported
    for k in range(len(entries)):
        camz, dense = gts["camz"][k], gts["dense"][k]
        assert camz.shape == dense.shape == (96, 320)
        hit = camz > 0
        assert hit.sum() > 2000
        assert (dense[hit] > 0).all()
        assert np.abs(camz[hit] - dense[hit]).max() < 0.01


def test_default_differs_by_the_velodyne_camera_offset(exported):
    gts, _ = exported
    velo, camz = gts["velo"][1], gts["camz"][1]
    assert np.array_equal(velo > 0, camz > 0)
    diff = (velo - camz)[velo > 0]
    assert 0.2 < np.median(diff) < 0.35  # ~0.27 m LiDAR-camera offset


def test_dense_export_is_the_renderer_depth(exported, synth_root):
    gts, entries = exported
    folder, frame, _ = entries[3]
    ref = np.load(os.path.join(synth_root, "gt", folder, "depth", f"{frame:010d}.npy"))
    assert np.array_equal(gts["dense"][3], ref)


def test_saved_format_plain_and_object(tmp_path):
    plain = tmp_path / "plain.npz"
    save_gt_depths(str(plain), [np.ones((4, 5)), np.zeros((4, 5))])
    with np.load(plain, allow_pickle=False) as z:
        assert z["data"].dtype == np.float32 and z["data"].shape == (2, 4, 5)
    mixed = tmp_path / "mixed.npz"
    save_gt_depths(str(mixed), [np.ones((4, 5)), np.full((3, 2), 7.0)])
    with np.load(mixed, allow_pickle=True) as z:  # what Monodepth2's evaluation does
        assert z["data"].dtype == object and z["data"][1].shape == (3, 2)
    out = load_gt_depths(str(mixed))
    assert [g.shape for g in out] == [(4, 5), (3, 2)] and out[1][0, 0] == 7.0
    # a Monodepth2-style file written by np.array(list_of_maps)
    m2 = tmp_path / "m2.npz"
    np.savez_compressed(m2, data=np.array([np.ones((2, 3), np.float32), np.ones((3, 3), np.float32)], dtype=object))
    assert [g.shape for g in load_gt_depths(str(m2))] == [(2, 3), (3, 3)]
    npy = tmp_path / "one.npy"
    np.save(npy, np.ones((2, 6, 7), np.float32))
    assert len(load_gt_depths(str(npy))) == 2


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def test_reader_refuses_arbitrary_pickles(tmp_path):
    evil = tmp_path / "evil.npz"
    arr = np.empty(1, dtype=object)
    arr[0] = _Payload()
    np.savez(evil, data=arr)
    with pytest.raises(ValueError, match="refusing to unpickle 'posix.system'|refusing to unpickle 'nt.system'"):
        load_gt_depths(str(evil))
    odd = tmp_path / "odd.npz"
    arr[0] = {"not": "an array"}
    np.savez(odd, data=arr)
    with pytest.raises(ValueError, match="item 0 is not an"):
        load_gt_depths(str(odd))
    nokey = tmp_path / "nokey.npz"
    np.savez(nokey, depths=np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="no 'data' array"):
        load_gt_depths(str(nokey))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match="junk.npz"):
        load_gt_depths(str(junk))
    with pytest.raises(FileNotFoundError):
        load_gt_depths(str(tmp_path / "missing.npz"))


def test_missing_velodyne_errors_and_skip(synth_root, tmp_path):
    entries = read_split(os.path.join(synth_root, "splits", "test_files.txt"))[:2]
    bad = entries + [(entries[0][0], 99, "l")]
    split = tmp_path / "split.txt"
    write_split(str(split), bad)
    with pytest.raises(FileNotFoundError, match=r"0000000099\.bin"):
        export_gt(synth_root, str(split), str(tmp_path / "gt.npz"), progress=False)
    assert not (tmp_path / "gt.npz").exists()
    with pytest.warns(UserWarning, match="skipped 1 of 3"):
        path, n, skipped = export_gt(synth_root, str(split), str(tmp_path / "gt.npz"), progress=False,
                                     skip_missing=True)
    assert n == 2 and skipped[0][0] == bad[2] and len(load_gt_depths(path)) == 2
    with pytest.raises(FileNotFoundError, match="dense ground truth not found"):
        write_split(str(split), [(entries[0][0], 99, "l")])
        export_gt(synth_root, str(split), str(tmp_path / "d.npz"), dense=True, progress=False)


def test_velodyne_depth_map_nearest_return():
    K = np.array([[10.0, 0, 2], [0, 10, 2], [0, 0, 1]])
    # velodyne (x fwd, y left, z up) -> camera (x right, y down, z fwd), camera 0.5 m behind
    Rt = np.array([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0.5]])
    P = K @ Rt
    pts = np.array([[5.0, 0, 0, 0], [3.0, 0, 0, 0], [4.0, 0, 0, 0],  # all on pixel (2, 2)
                    [2.0, -0.4, 0, 0],  # u = 10 * 0.4 / 2.5 + 2 = 3.6 -> column 4
                    [-1.0, 0, 0, 0],  # behind the velodyne: dropped
                    [1.0, 5.0, 0, 0]], np.float32)  # outside the image
    z = velodyne_depth_map(pts, P, 5, 5, "camera-z", pixel="centre")
    x = velodyne_depth_map(pts, P, 5, 5, "velodyne-x", pixel="centre")
    assert z[2, 2] == pytest.approx(3.5) and x[2, 2] == pytest.approx(3.0)  # nearest of 3 returns
    assert z[2, 4] == pytest.approx(2.5) and x[2, 4] == pytest.approx(2.0)
    assert (z > 0).sum() == 2 and np.array_equal(z > 0, x > 0)
    # the default (standard export) rule: one pixel up-left, (u, v) = (2, 2) -> row 1, column 1
    xk = velodyne_depth_map(pts, P, 5, 5)
    assert xk[1, 1] == pytest.approx(3.0) and xk[1, 3] == pytest.approx(2.0) and (xk > 0).sum() == 2
    with pytest.raises(ValueError, match="value"):
        velodyne_depth_map(pts, P, 5, 5, "disparity")


def test_export_gt_cli(synth_root, tmp_path, capsys):
    from fmdepth.cli import main

    out = tmp_path / "cli.npz"
    split = os.path.join(synth_root, "splits", "test_files.txt")
    assert main(["export-gt", "--data", synth_root, "--split-file", split, "--out", str(out), "--quiet"]) == 0
    assert "frames, LiDAR (velodyne-x, kitti pixel rule)" in capsys.readouterr().out
    assert main(["export-gt", "--data", synth_root, "--split-file", str(tmp_path / "nope.txt"),
                 "--out", str(out)]) == 2
    assert "split file not found" in capsys.readouterr().err
