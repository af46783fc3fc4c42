"""Ego-motion metrics: snippet ATE (Zhou et al.) and KITTI odometry relative errors.

Pose convention (DESIGN.md): ``a_T_b`` maps points of frame b into frame a. A trajectory is an
(N, 4, 4) array of ``world_T_cam`` poses (KITTI ``poses/NN.txt`` rows, the camera-to-world
transforms), the first usually the identity.

* **Snippet ATE** -- the protocol of Zhou et al. (CVPR 2017) as used by Monodepth2 on KITTI
  odometry 09/10: for every start frame ``i`` (0 .. N-2) the snippet covers frames
  ``i .. min(i + 4, N - 1)`` (the last three snippets are shorter, as in Monodepth2); both the
  ground-truth and the predicted camera positions are expressed in the snippet's first frame,
  the prediction is scaled by ``s = sum(gt . pred) / sum(pred^2)`` and the error is
  ``||s * pred - gt||_F / n`` (n = snippet length). Note that this published definition is
  ``RMSE / sqrt(n)``, not the plain RMSE; we keep it so numbers compare with published tables.
  Reported as mean and std over snippets.
* **Relative errors** -- the KITTI odometry devkit definition: for every 10th first frame and
  every segment length L in 100, 200, ..., 800 m (path length along the ground truth), the last
  frame is the first one whose distance exceeds L; the error pose is
  ``inv(pred_first^-1 pred_last) @ (gt_first^-1 gt_last)``; ``t_err`` is its translation norm
  divided by L (reported in %), ``r_err`` its rotation angle divided by L (reported in
  degrees per 100 m); both averaged over all segments. A monocular prediction has no metric
  scale, so it is aligned first: ``"7dof"`` (Umeyama similarity on the positions, default),
  ``"scale"`` (least-squares scale only, rotation untouched) or ``"none"``.
"""
from __future__ import annotations

import math
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

SEGMENT_LENGTHS = (100, 200, 300, 400, 500, 600, 700, 800)  # metres (KITTI odometry devkit)
SEGMENT_STEP = 10  # frames between segment start frames (devkit)
ALIGNMENTS = ("7dof", "scale", "none")


def _check_poses(poses, name: str) -> np.ndarray:
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise ValueError(f"{name} must be (N, 4, 4) poses, got shape {poses.shape}")
    if not np.all(np.isfinite(poses)):
        raise ValueError(f"{name} contains NaN/inf values")
    return poses


def _check_xyz(xyz, name: str) -> np.ndarray:
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or xyz.shape[0] < 1:
        raise ValueError(f"{name} must be (N, 3) positions, got shape {xyz.shape}")
    return xyz


def load_kitti_poses(path: str) -> np.ndarray:
    """Read a KITTI odometry pose file (12 numbers per line, row-major 3x4 ``world_T_cam``).

    Returns:
        (N, 4, 4) float64.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pose file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                values = [float(v) for v in line.split()]
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected 12 numbers, got {line.strip()[:60]!r}") from None
            if len(values) != 12:
                raise ValueError(f"{path}:{lineno}: expected 12 numbers (a 3x4 pose), got {len(values)}")
            rows.append(values)
    if not rows:
        raise ValueError(f"{path}: no poses")
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    poses[:, :3, :4] = np.asarray(rows).reshape(-1, 3, 4)
    return poses


def save_kitti_poses(path: str, poses) -> None:
    """Write (N, 4, 4) ``world_T_cam`` poses in the KITTI format (12 numbers per line)."""
    poses = _check_poses(poses, "poses")
    np.savetxt(path, poses[:, :3, :4].reshape(len(poses), 12), fmt="%.9e")


def chain_relative_poses(next_T_prev) -> np.ndarray:
    """Integrate frame-to-frame motions into a trajectory.

    Args:
        next_T_prev: (N-1, 4, 4); element i maps points of frame i into frame i+1
            (what PoseNet predicts for the pair (frame i, frame i+1)).

    Returns:
        (N, 4, 4) ``world_T_cam`` poses with frame 0 as the world frame.
    """
    rel = _check_poses(next_T_prev, "next_T_prev") if len(next_T_prev) else np.zeros((0, 4, 4))
    poses = [np.eye(4)]
    for T in rel:
        poses.append(poses[-1] @ np.linalg.inv(T))  # world_T_{i+1} = world_T_i @ i_T_{i+1}
    return np.stack(poses)


def compute_ate(gt_xyz, pred_xyz) -> float:
    """Snippet ATE of Zhou et al.: first positions aligned, least-squares scale, ``||err||_F / n``.

    Args:
        gt_xyz: (n, 3) ground-truth positions.
        pred_xyz: (n, 3) predicted positions (any scale).

    Returns:
        the error (in the ground truth's unit); invariant to the prediction's scale and offset.
    """
    gt_xyz = _check_xyz(gt_xyz, "gt_xyz")
    pred_xyz = _check_xyz(pred_xyz, "pred_xyz")
    if gt_xyz.shape != pred_xyz.shape:
        raise ValueError(f"gt_xyz {gt_xyz.shape} and pred_xyz {pred_xyz.shape} must match")
    pred = pred_xyz + (gt_xyz[0] - pred_xyz[0])[None]
    denom = float(np.sum(pred ** 2))
    scale = float(np.sum(gt_xyz * pred)) / denom if denom > 0 else 0.0
    err = pred * scale - gt_xyz
    return float(np.sqrt(np.sum(err ** 2)) / gt_xyz.shape[0])


def snippet_ate(gt_poses, pred_poses, snippet_length: int = 5) -> np.ndarray:
    """ATE of every snippet of ``snippet_length`` frames (see the module docstring).

    Args:
        gt_poses: (N, 4, 4) ground-truth ``world_T_cam``.
        pred_poses: (N, 4, 4) predicted ``world_T_cam`` (any scale).

    Returns:
        (N-1,) errors, one per start frame.
    """
    gt = _check_poses(gt_poses, "gt_poses")
    pred = _check_poses(pred_poses, "pred_poses")
    if len(gt) != len(pred):
        raise ValueError(f"gt_poses has {len(gt)} poses but pred_poses has {len(pred)}")
    if len(gt) < 2:
        raise ValueError("need at least 2 poses for a snippet")
    if snippet_length < 2:
        raise ValueError(f"snippet_length must be >= 2, got {snippet_length}")
    errors = []
    for i in range(len(gt) - 1):
        j = min(i + snippet_length, len(gt))
        gt_local = np.linalg.inv(gt[i])[None] @ gt[i:j]  # frame-i_T_cam
        pred_local = np.linalg.inv(pred[i])[None] @ pred[i:j]
        errors.append(compute_ate(gt_local[:, :3, 3], pred_local[:, :3, 3]))
    return np.asarray(errors)


def umeyama_alignment(src_xyz, dst_xyz, with_scale: bool = True):
    """Similarity (s, R, t) minimising ``sum ||dst - (s R src + t)||^2`` (Umeyama 1991).

    Args:
        src_xyz, dst_xyz: (N, 3) corresponding positions.

    Returns:
        (s, R (3, 3), t (3,)).
    """
    src = _check_xyz(src_xyz, "src_xyz")
    dst = _check_xyz(dst_xyz, "dst_xyz")
    if src.shape != dst.shape:
        raise ValueError(f"src_xyz {src.shape} and dst_xyz {dst.shape} must match")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    var_s = float(np.mean(np.sum(xs ** 2, axis=1)))
    s = float(np.trace(np.diag(D) @ S) / var_s) if (with_scale and var_s > 0) else 1.0
    t = mu_d - s * R @ mu_s
    return s, R, t


def align_trajectory(gt_poses, pred_poses, mode: str = "7dof"):
    """Bring a predicted trajectory into the ground truth's frame and scale.

    Args:
        gt_poses, pred_poses: (N, 4, 4) ``world_T_cam``.
        mode: ``"7dof"`` (similarity on positions), ``"scale"`` (least-squares scale of the
            positions, both trajectories expressed relative to their first pose) or ``"none"``.

    Returns:
        (aligned (N, 4, 4), scale applied).
    """
    if mode not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got '{mode}'")
    gt = _check_poses(gt_poses, "gt_poses")
    pred = _check_poses(pred_poses, "pred_poses")
    if len(gt) != len(pred):
        raise ValueError(f"gt_poses has {len(gt)} poses but pred_poses has {len(pred)}")
    if mode == "none":
        return pred.copy(), 1.0
    if mode == "scale":
        # express both relative to their first pose, then fit one scale to the positions
        pred_rel = np.linalg.inv(pred[0])[None] @ pred
        gt_rel = np.linalg.inv(gt[0])[None] @ gt
        p, g = pred_rel[:, :3, 3], gt_rel[:, :3, 3]
        denom = float(np.sum(p ** 2))
        s = float(np.sum(g * p) / denom) if denom > 0 else 1.0
        out = pred_rel.copy()
        out[:, :3, 3] *= s
        return gt[0][None] @ out, s
    s, R, t = umeyama_alignment(pred[:, :3, 3], gt[:, :3, 3], with_scale=True)
    out = pred.copy()
    out[:, :3, :3] = R[None] @ pred[:, :3, :3]
    out[:, :3, 3] = s * pred[:, :3, 3] @ R.T + t[None]
    return out, s


def trajectory_distances(poses) -> np.ndarray:
    """(N,) cumulative path length along the trajectory's positions."""
    poses = _check_poses(poses, "poses")
    steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def _rotation_angle(T: np.ndarray) -> float:
    d = 0.5 * (T[0, 0] + T[1, 1] + T[2, 2] - 1.0)
    return float(math.acos(max(min(d, 1.0), -1.0)))


def relative_pose_errors(gt_poses, pred_poses, lengths: Sequence[float] = SEGMENT_LENGTHS,
                         step: int = SEGMENT_STEP, alignment: str = "7dof") -> Dict[str, object]:
    """KITTI odometry relative errors (see the module docstring).

    Args:
        gt_poses: (N, 4, 4) ground-truth ``world_T_cam``.
        pred_poses: (N, 4, 4) predicted ``world_T_cam``.
        lengths: segment lengths in metres.
        step: frames between segment start frames.
        alignment: ``"7dof"``, ``"scale"`` or ``"none"`` (applied before measuring).

    Returns:
        dict with ``t_err`` (%), ``r_err`` (deg / 100 m), ``num_segments``, ``scale`` (the
        alignment's scale), ``per_length`` {L: (t_err %, r_err deg/100m, count)}.

    Raises:
        ValueError: different lengths, or the trajectory is shorter than the shortest segment.
    """
    gt = _check_poses(gt_poses, "gt_poses")
    pred = _check_poses(pred_poses, "pred_poses")
    if len(gt) != len(pred):
        raise ValueError(f"gt_poses has {len(gt)} poses but pred_poses has {len(pred)}")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    pred, scale = align_trajectory(gt, pred, alignment)
    dist = trajectory_distances(gt)
    segs: List[tuple] = []
    for first in range(0, len(gt), step):
        for length in lengths:
            beyond = np.nonzero(dist[first:] > dist[first] + length)[0]
            if beyond.size == 0:
                continue
            last = first + int(beyond[0])
            delta_gt = np.linalg.inv(gt[first]) @ gt[last]
            delta_pred = np.linalg.inv(pred[first]) @ pred[last]
            err = np.linalg.inv(delta_pred) @ delta_gt
            segs.append((length, float(np.linalg.norm(err[:3, 3])) / length, _rotation_angle(err) / length))
    if not segs:
        raise ValueError(f"the ground-truth trajectory is {dist[-1]:.1f} m long, shorter than the "
                         f"shortest segment ({min(lengths)} m): no relative error can be measured")
    arr = np.asarray(segs)
    per_length = {}
    for length in lengths:
        sel = arr[arr[:, 0] == length]
        if len(sel):
            per_length[float(length)] = (float(sel[:, 1].mean() * 100), float(sel[:, 2].mean() * 180 / math.pi * 100),
                                         int(len(sel)))
    return {
        "t_err": float(arr[:, 1].mean() * 100.0),
        "r_err": float(arr[:, 2].mean() * 180.0 / math.pi * 100.0),
        "num_segments": int(len(arr)),
        "scale": float(scale),
        "per_length": per_length,
    }


def plot_trajectory(gt_poses, pred_poses, path: str, title: Optional[str] = None,
                    labels=("ground truth", "prediction")) -> str:
    """Top view (x right, z forward) of the ground truth and an (aligned) prediction, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gt = _check_poses(gt_poses, "gt_poses")
    pred = _check_poses(pred_poses, "pred_poses")
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    ax.plot(gt[:, 0, 3], gt[:, 2, 3], "k-", lw=1.5, label=labels[0])
    ax.plot(pred[:, 0, 3], pred[:, 2, 3], "-", color="tab:red", lw=1.2, label=labels[1])
    ax.plot(gt[0, 0, 3], gt[0, 2, 3], "ko", ms=5, label="start")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("z [m]")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
