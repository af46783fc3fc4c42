"""Pose metrics: snippet ATE (scale-invariant) and KITTI relative errors on synthetic trajectories."""
import math

import numpy as np
import pytest

from fmdepth.metrics import (
    align_trajectory,
    chain_relative_poses,
    compute_ate,
    load_kitti_poses,
    relative_pose_errors,
    snippet_ate,
)
from fmdepth.metrics.pose import plot_trajectory, save_kitti_poses, umeyama_alignment


def _rot_y(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _trajectory(n=400, speed=1.0, yaw_rate=0.004):
    """world_T_cam of a car driving forward (z) at ``speed`` m/frame on a gentle curve."""
    poses = [np.eye(4)]
    step = np.eye(4)
    step[:3, :3] = _rot_y(yaw_rate)
    step[2, 3] = speed
    for _ in range(n - 1):
        poses.append(poses[-1] @ step)
    return np.stack(poses)


def test_compute_ate_hand_value_and_scale_invariance():
    gt = np.array([[0, 0, 0], [0, 0, 1.0], [0, 0, 2.0]])
    assert compute_ate(gt, gt * 7.5 + 3.0) == pytest.approx(0.0, abs=1e-12)
    pred = np.array([[0, 0, 0], [0, 0, 1.0], [0, 0, 2.0], ])
    pred_shift = pred.copy()
    pred_shift[1, 0] = 1.0  # one point off by 1 m sideways
    # scale = sum(gt.pred)/sum(pred^2) = 5/6; errors (5/6,0,-1/6), (0,0,-1/3) -> sqrt(30/36) / 3
    assert compute_ate(gt, pred_shift) == pytest.approx(math.sqrt(30 / 36) / 3)


def test_snippet_ate_noise_and_scale_change():
    rng = np.random.default_rng(0)
    gt = _trajectory(60)
    noisy = gt.copy()
    noisy[:, :3, 3] += rng.normal(scale=0.01, size=(60, 3))
    e1 = snippet_ate(gt, noisy)
    scaled = noisy.copy()
    scaled[:, :3, 3] *= 0.037  # a monocular prediction at another scale
    e2 = snippet_ate(gt, scaled)
    assert e1.shape == (59,)
    np.testing.assert_allclose(e1, e2, rtol=1e-9, atol=1e-12)  # per-snippet scale alignment
    assert 0.001 < e1.mean() < 0.02
    assert snippet_ate(gt, gt).max() == pytest.approx(0.0, abs=1e-9)


def test_chain_relative_poses_inverts_ground_truth_motion():
    gt = _trajectory(30)
    next_T_prev = [np.linalg.inv(gt[i + 1]) @ gt[i] for i in range(29)]
    np.testing.assert_allclose(chain_relative_poses(next_T_prev), gt, atol=1e-9)


def test_relative_errors_zero_for_perfect_and_scaled():
    gt = _trajectory(400)
    r = relative_pose_errors(gt, gt)
    assert r["t_err"] == pytest.approx(0.0, abs=1e-6) and r["r_err"] == pytest.approx(0.0, abs=1e-6)
    scaled = gt.copy()
    scaled[:, :3, 3] *= 0.2
    for mode in ("7dof", "scale"):
        r = relative_pose_errors(gt, scaled, alignment=mode)
        assert r["t_err"] == pytest.approx(0.0, abs=1e-6)
        assert r["scale"] == pytest.approx(5.0)
    # unaligned: error = 0.8 x chord / path length (chord slightly shorter than the curved path)
    assert relative_pose_errors(gt, scaled, alignment="none")["t_err"] == pytest.approx(80.0, rel=0.03)


def test_relative_errors_known_drift():
    # straight line; the prediction overestimates every step by 2% (no alignment) -> t_err = 2 %
    gt = _trajectory(1000, yaw_rate=0.0)
    pred = _trajectory(1000, speed=1.02, yaw_rate=0.0)
    r = relative_pose_errors(gt, pred, alignment="none")
    assert r["t_err"] == pytest.approx(2.0, rel=0.02)
    assert r["r_err"] == pytest.approx(0.0, abs=1e-6)
    # heading drift of 1e-4 rad per frame (1 m) -> the error rotation over L metres is ~L*1e-4 rad
    pred_rot = _trajectory(1000, yaw_rate=1e-4)
    r = relative_pose_errors(gt, pred_rot, alignment="none")
    expected = 1e-4 * 180 / math.pi * 100  # degrees per 100 m
    assert r["r_err"] == pytest.approx(expected, rel=0.02)
    assert set(r["per_length"]) == {100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0}


def test_relative_errors_too_short():
    gt = _trajectory(50)
    with pytest.raises(ValueError, match="shorter than the shortest segment"):
        relative_pose_errors(gt, gt)
    r = relative_pose_errors(gt, gt, lengths=(10, 20), step=5)
    assert r["num_segments"] > 0


def test_umeyama_recovers_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(50, 3))
    R = _rot_y(0.7)
    dst = 2.5 * src @ R.T + np.array([1.0, -2.0, 3.0])
    s, R_est, t = umeyama_alignment(src, dst)
    assert s == pytest.approx(2.5)
    np.testing.assert_allclose(R_est, R, atol=1e-9)
    aligned, scale = align_trajectory(_trajectory(20), _trajectory(20), "7dof")
    np.testing.assert_allclose(aligned, _trajectory(20), atol=1e-9)


def test_pose_file_roundtrip_and_errors(tmp_path):
    gt = _trajectory(12)
    p = tmp_path / "09.txt"
    save_kitti_poses(str(p), gt)
    np.testing.assert_allclose(load_kitti_poses(str(p)), gt, atol=1e-8)
    bad = tmp_path / "bad.txt"
    bad.write_text("1 0 0 0 0 1 0 0 0 0 1\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1: expected 12 numbers"):
        load_kitti_poses(str(bad))
    with pytest.raises(FileNotFoundError):
        load_kitti_poses(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match=r"\(N, 4, 4\)"):
        snippet_ate(np.eye(4), np.eye(4))


def test_plot_trajectory_writes_png(tmp_path):
    out = plot_trajectory(_trajectory(50), _trajectory(50, speed=1.1), str(tmp_path / "traj.png"), title="09")
    data = open(out, "rb").read(8)
    assert data.startswith(b"\x89PNG")
