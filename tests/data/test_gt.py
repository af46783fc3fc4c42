import os

import numpy as np
import pytest

from fmdepth.data.gt import export_gt, load_gt_depths, save_gt_depths
from fmdepth.data.kitti_io import RawCalibration, load_velodyne, velodyne_depth_map
from fmdepth.data.splits import read_split, write_split

DATE = "2011_09_26"


def _project(root, folder, frame):
    """(u, v, cam_z, velo_x) of every velodyne point that export-gt keeps (test-side projection)."""
    calib = RawCalibration(os.path.join(root, DATE), need_velodyne=True)
    P = calib.P_rect["02"] @ calib.R_rect_00 @ calib.velo_to_cam
    pts = load_velodyne(os.path.join(root, folder, "velodyne_points", "data", f"{frame:010d}.bin"))
    pts = pts[pts[:, 0] >= 0, :3].astype(np.float64)
    proj = np.c_[pts, np.ones(len(pts))] @ P.T
    z = proj[:, 2]
    u, v = proj[:, 0] / z, proj[:, 1] / z
    H, W = calib.size["02"]
    keep = (z > 0) & (np.round(u) >= 0) & (np.round(v) >= 0) & (np.round(u) < W) & (np.round(v) < H)
    return u[keep], v[keep], z[keep], pts[keep, 0]


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


def test_camera_z_matches_dense_gt_within_1cm(exported, synth_root):
    gts, entries = exported
    for k in (0, 2, 4):
        folder, frame, _ = entries[k]
        camz, dense = gts["camz"][k], gts["dense"][k]
        assert camz.shape == dense.shape == (96, 320)
        u, v, z, _ = _project(synth_root, folder, frame)
        # every exported pixel holds the nearest (smallest z) point landing on it
        ur, vr = np.round(u).astype(int), np.round(v).astype(int)
        nearest = np.full(camz.shape, np.inf)
        np.minimum.at(nearest, (vr, ur), z)
        hit = np.isfinite(nearest)
        assert np.array_equal(hit, camz > 0)
        assert np.allclose(camz[hit], nearest[hit], atol=1e-4)
        # the dense GT, interpolated at the exact projection (inverse depth is affine on a plane),
        # equals the LiDAR camera z within 1 cm away from depth edges
        H, W = dense.shape
        inside = (u <= W - 1) & (v <= H - 1)
        u, v, z = u[inside], v[inside], z[inside]
        u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
        u1, v1 = np.minimum(u0 + 1, W - 1), np.minimum(v0 + 1, H - 1)
        D = np.stack([dense[v0, u0], dense[v0, u1], dense[v1, u0], dense[v1, u1]])
        inv = 1.0 / np.where(D > 0, D, 1.0)
        # one plane under the 2x2 neighbourhood: inverse depth is affine there (i00 + i11 = i01 + i10)
        smooth = (D > 0).all(0) & (np.abs(inv[0] + inv[3] - inv[1] - inv[2]) < 1e-3 * inv.mean(0))
        a, b = u - u0, v - v0
        interp = 1.0 / ((1 - a) * (1 - b) * inv[0] + a * (1 - b) * inv[1] + (1 - a) * b * inv[2] + a * b * inv[3])
        err = (interp - z)[smooth]
        assert smooth.sum() > 3000
        # the rest: LiDAR/camera parallax (occlusions) and structures thinner than a pixel (curbs,
        # poles) that fall between the four pixel centres at this tiny 96x320 resolution
        assert np.mean(np.abs(err) < 0.01) > 0.96, np.percentile(err, [1, 50, 99])
        assert np.median(np.abs(err)) < 1e-4


def test_default_differs_by_the_velodyne_camera_offset(exported, synth_root):
    gts, entries = exported
    folder, frame, _ = entries[1]
    velo, camz = gts["velo"][1], gts["camz"][1]
    assert np.array_equal(velo > 0, camz > 0)
    u, v, z, x = _project(synth_root, folder, frame)
    ur, vr = np.round(u).astype(int), np.round(v).astype(int)
    count = np.zeros(velo.shape, int)
    np.add.at(count, (vr, ur), 1)
    single = count[vr, ur] == 1  # pixels hit by exactly one point: the same point wins in both modes
    diff = velo[vr[single], ur[single]] - camz[vr[single], ur[single]]
    assert single.sum() > 1000
    assert np.allclose(diff, (x - z)[single], atol=1e-4)
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
    z = velodyne_depth_map(pts, P, 5, 5, "camera-z")
    x = velodyne_depth_map(pts, P, 5, 5, "velodyne-x")
    assert z[2, 2] == pytest.approx(3.5) and x[2, 2] == pytest.approx(3.0)  # nearest of 3 returns
    assert z[2, 4] == pytest.approx(2.5) and x[2, 4] == pytest.approx(2.0)
    assert (z > 0).sum() == 2 and np.array_equal(z > 0, x > 0)
    with pytest.raises(ValueError, match="value"):
        velodyne_depth_map(pts, P, 5, 5, "disparity")


def test_export_gt_cli(synth_root, tmp_path, capsys):
    from fmdepth.cli import main

    out = tmp_path / "cli.npz"
    split = os.path.join(synth_root, "splits", "test_files.txt")
    assert main(["export-gt", "--data", synth_root, "--split-file", split, "--out", str(out), "--quiet"]) == 0
    assert "frames, LiDAR (velodyne-x)" in capsys.readouterr().out
    assert main(["export-gt", "--data", synth_root, "--split-file", str(tmp_path / "nope.txt"),
                 "--out", str(out)]) == 2
    assert "split file not found" in capsys.readouterr().err
