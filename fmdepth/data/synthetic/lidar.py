"""The LiDAR simulation: 64-beam velodyne scans ray cast in a :class:`~.scene.Street`.

Scans are cast from the velodyne (x forward, y left, z up; KITTI's mounting relative to the
cameras) up to :data:`~.scene.VELO_MAX_RANGE`; :func:`kitti_convention_scan` then places the
returns inside image_02 for KITTI's 1-based pixel convention, so the standard export
(``fmdepth export-gt``, column ``round(u) - 1``) stores exactly the dense camera z there.
"""
from __future__ import annotations

import math

import numpy as np

from .scene import VELO_MAX_RANGE, Street, cast, rect_corners, scene_rects

def _velodyne_dirs(azimuth_step_deg: float = 0.2) -> np.ndarray:
    """(3, 64, A) unit beam directions in the velodyne frame (x forward, y left, z up)."""
    elev = np.deg2rad(np.linspace(2.0, -24.8, 64))
    az = np.deg2rad(np.arange(0.0, 360.0, azimuth_step_deg) - 180.0)
    e, a = np.meshgrid(elev, az, indexing="ij")
    return np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)]).astype(np.float32)


def render_velodyne(street: Street, frame: int, world_T_velo: np.ndarray,
                    azimuth_step_deg: float = 0.2) -> np.ndarray:
    """Simulated 64-beam scan: (N, 4) float32 x, y, z, reflectance in velodyne coordinates."""
    dv = _velodyne_dirs(azimuth_step_deg)  # (3, 64, A)
    A = dv.shape[2]
    R = world_T_velo[:3, :3]
    O = world_T_velo[:3, 3]
    dw = np.einsum("ij,jea->iea", R.astype(np.float32), dv)
    with np.errstate(divide="ignore"):
        inv = 1.0 / dw
    rects = scene_rects(street, frame, O, VELO_MAX_RANGE)
    velo_T_world = np.linalg.inv(world_T_velo)
    step = 2 * np.pi / A
    windows = []  # azimuth columns that can hit each rect
    for k in range(len(rects.axis)):
        corners = rect_corners(rects, k) @ velo_T_world[:3, :3].T + velo_T_world[:3, 3]
        ang = np.arctan2(corners[:, 1], corners[:, 0])
        mid = math.atan2(corners[:, 1].mean(), corners[:, 0].mean())
        rel = np.angle(np.exp(1j * (ang - mid)))
        if np.ptp(rel) > np.deg2rad(170) or np.hypot(*corners[:, :2].mean(0)) < 1e-6:
            windows.append([(Ellipsis,)])
            continue
        c0 = int(math.floor((mid + rel.min() + np.pi) / step)) - 1
        c1 = int(math.ceil((mid + rel.max() + np.pi) / step)) + 2
        if c0 < 0:
            windows.append([(slice(None), slice(c0 % A, A)), (slice(None), slice(0, min(c1, A)))])
        elif c1 > A:
            windows.append([(slice(None), slice(c0, A)), (slice(None), slice(0, c1 - A))])
        else:
            windows.append([(slice(None), slice(c0, c1))])
    t_best, rid = cast(O, dw, inv, rects, windows, t_min=1e-3, t_max=VELO_MAX_RANGE)
    ok = rid >= 0
    pts = (dv[:, ok] * t_best[ok]).T  # (N, 3) velodyne frame (unit directions: t = range)
    refl = np.array([m.reflectance for m in rects.material], np.float32)[rid[ok]]
    return np.concatenate([pts, refl[:, None]], axis=1).astype(np.float32)


def kitti_convention_scan(scan: np.ndarray, depth: np.ndarray, velo_to_image: np.ndarray) -> np.ndarray:
    """Make a simulated scan agree with the KITTI pixel convention of the standard export.

    The standard Eigen export (:func:`~fmdepth.data.kitti_io.velodyne_depth_map`, ``pixel="kitti"``)
    reads ``P_rect`` as giving 1-based pixel coordinates: a return projecting to (u, v) measures the
    0-based pixel (row ``round(v) - 1``, column ``round(u) - 1``). The renderer's depth is the
    camera z at 0-based pixel centres of ``K = P_rect[:, :3]``, so a physical beam hit would be
    stored one pixel off (metres at depth edges, ~2 m per row on the far road). Every return that
    the export would keep is therefore moved onto the ray through (c + 1, r + 1) of the pixel it is
    assigned to, at camera z ``depth[r, c]`` -- the export then stores exactly the dense depth
    there (``camera-z``; float32 rounding only). Returns landing on sky (depth 0, LiDAR/camera
    parallax), behind the camera or, once moved, beyond the LiDAR's range are removed; returns
    outside the image are kept unchanged.

    Args:
        scan: (N, 4) float32 velodyne x, y, z, reflectance.
        depth: (H, W) camera z of image_02 at pixel centres, 0 = sky.
        velo_to_image: (3, 4) ``P_rect_02 @ R_rect_00 @ Tr_velo_to_cam`` as parsed from the
            calibration files written (the export's matrix, so rounding agrees).

    Returns:
        (M, 4) float32 scan.
    """
    H, W = depth.shape
    M = np.asarray(velo_to_image, np.float64)
    pts = scan[:, :3].astype(np.float64)
    proj = np.dot(M, np.c_[pts, np.ones(len(pts))].T).T  # (N, 3)
    z = proj[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.round(proj[:, 0] / z) - 1
        r = np.round(proj[:, 1] / z) - 1
    kept = (pts[:, 0] >= 0) & (c >= 0) & (r >= 0) & (c < W) & (r < H)  # what the export keeps
    idx = np.nonzero(kept)[0]
    ci, ri = c[idx].astype(np.int64), r[idx].astype(np.int64)
    d = depth[ri, ci].astype(np.float64)
    good = (z[idx] > 1e-6) & (d > 0)
    idx, ci, ri, d = idx[good], ci[good], ri[good], d[good]
    # solve A X + b = d * (c + 1, r + 1, 1) for the velodyne point X
    A, b = M[:, :3], M[:, 3]
    rhs = np.stack([d * (ci + 1), d * (ri + 1), d]) - b[:, None]  # (3, n)
    moved = np.linalg.solve(A, rhs).T.astype(np.float32)  # (n, 3)
    in_range = np.linalg.norm(moved, axis=1) <= VELO_MAX_RANGE
    idx, moved = idx[in_range], moved[in_range]
    out = scan.copy()
    out[idx, :3] = moved
    drop = np.zeros(len(scan), bool)
    drop[kept] = True
    drop[idx] = False
    return out[~drop]
