"""Writers for KITTI files: calibration, velodyne scans, OXTS packets, timestamps, poses, images.

They write what :mod:`fmdepth.data.kitti_io` reads, with its file names and calibration keys.
Numbers are written as in KITTI's own files: calibration values ``%.6e``, poses ``%.9e`` (3 x 4
row-major per line), timestamps ``YYYY-MM-DD HH:MM:SS.fffffffff`` at 10 Hz.
"""
from __future__ import annotations

import datetime as dt
import math
import os
import shutil
from typing import List, Sequence

import numpy as np

from .kitti_io import (ODOMETRY_CALIB, ODOMETRY_VELO_KEY, RAW_CAM_TO_CAM, RAW_CAMERA_ENTRIES, RAW_IMU_TO_VELO,
                       RAW_VELO_TO_CAM, RIGID_ROTATION_KEY, RIGID_TRANSLATION_KEY, VELODYNE_FIELDS,
                       odometry_key, raw_frame_name, raw_key)

#: Seconds between two KITTI frames (10 Hz).
FRAME_PERIOD_S = 0.1


# ---------------------------------------------------------------------------------- calibration
def format_values(values) -> str:
    """Numbers as KITTI calibration files hold them: ``%.6e``, space separated, never ``-0``."""
    return " ".join(f"{float(v) + 0.0:.6e}" for v in np.asarray(values).ravel())


def projection(K: np.ndarray, cam_x: float) -> np.ndarray:
    """(3, 4) rectified projection ``[K | (-fx * cam_x, 0, 0)]`` of a camera ``cam_x`` metres
    along the x axis of rectified cam0. ``K``: (3, 3)."""
    P = np.zeros((3, 4))
    P[:, :3] = K
    P[0, 3] = -K[0, 0] * cam_x
    return P


def write_cam_to_cam(date_dir: str, K: np.ndarray, height: int, width: int, cam_x: Sequence[float],
                     R_rect: np.ndarray, calib_time: str) -> None:
    """Write ``<date_dir>/calib_cam_to_cam.txt`` of an ideal rectified rig.

    Camera ``c`` (00, 01, ...) has intrinsics ``K`` (3, 3), no distortion, cam0's orientation and
    its centre ``cam_x[c]`` metres along cam0's x axis; every camera gets ``R_rect`` (3, 3) and the
    image size ``width`` x ``height``.
    """
    lines = [f"calib_time: {calib_time}", "corner_dist: 9.950000e-02"]
    for c, x in enumerate(cam_x):
        values = {"S": [width, height], "K": K, "D": np.zeros(5), "R": np.eye(3), "T": [-x, 0.0, 0.0],
                  "S_rect": [width, height], "R_rect": R_rect, "P_rect": projection(K, x)}
        lines += [f"{raw_key(entry, f'{c:02d}')}: {format_values(values[entry])}" for entry in RAW_CAMERA_ENTRIES]
    _write_text(os.path.join(date_dir, RAW_CAM_TO_CAM), "\n".join(lines) + "\n")


def _rigid_text(R: np.ndarray, T: np.ndarray, calib_time: str) -> str:
    return (f"calib_time: {calib_time}\n{RIGID_ROTATION_KEY}: {format_values(R)}\n"
            f"{RIGID_TRANSLATION_KEY}: {format_values(T)}\n")


def write_velo_to_cam(date_dir: str, R: np.ndarray, T: np.ndarray, calib_time: str) -> None:
    """Write ``<date_dir>/calib_velo_to_cam.txt``: velodyne -> unrectified cam0, ``R`` (3, 3), ``T`` (3,)."""
    zero2 = format_values(np.zeros(2))
    text = _rigid_text(R, T, calib_time) + f"delta_f: {zero2}\ndelta_c: {zero2}\n"
    _write_text(os.path.join(date_dir, RAW_VELO_TO_CAM), text)


def write_imu_to_velo(date_dir: str, R: np.ndarray, T: np.ndarray, calib_time: str) -> None:
    """Write ``<date_dir>/calib_imu_to_velo.txt``: IMU -> velodyne, ``R`` (3, 3), ``T`` (3,)."""
    _write_text(os.path.join(date_dir, RAW_IMU_TO_VELO), _rigid_text(R, T, calib_time))


def write_odometry_calib(seq_dir: str, K: np.ndarray, cam_x: Sequence[float], velo_to_cam0: np.ndarray) -> None:
    """Write ``<seq_dir>/calib.txt``: ``P0``, ``P1``, ... (:func:`projection` of ``K`` for the
    camera centres ``cam_x``) and ``Tr`` (velodyne -> rectified cam0, (3, 4) or (4, 4))."""
    text = "".join(f"{odometry_key(str(c))}: {format_values(projection(K, x))}\n" for c, x in enumerate(cam_x))
    text += f"{ODOMETRY_VELO_KEY}: {format_values(np.asarray(velo_to_cam0)[:3])}\n"
    _write_text(os.path.join(seq_dir, ODOMETRY_CALIB), text)


# ------------------------------------------------------------------------------------ timestamps
def timestamp(base: dt.datetime, index: int, offset_s: float = 0.0) -> str:
    """KITTI timestamp text of frame ``index`` (10 Hz from ``base``), shifted by ``offset_s``."""
    t = base + dt.timedelta(seconds=FRAME_PERIOD_S * index + offset_s)
    return t.strftime("%Y-%m-%d %H:%M:%S.%f") + "000"


def write_timestamps(path: str, base: dt.datetime, frames: int, offset_s: float = 0.0) -> None:
    """Write a raw-layout ``timestamps.txt``: one :func:`timestamp` per frame."""
    _write_text(path, "\n".join(timestamp(base, i, offset_s) for i in range(frames)) + "\n")


def write_velodyne_timestamps(velodyne_dir: str, base: dt.datetime, frames: int) -> None:
    """Write ``timestamps.txt`` and the sweep's ``timestamps_start.txt`` / ``timestamps_end.txt``
    (half a frame before / after) of a raw drive's ``velodyne_points`` folder."""
    for name, offset in (("timestamps.txt", 0.0), ("timestamps_start.txt", -FRAME_PERIOD_S / 2),
                         ("timestamps_end.txt", FRAME_PERIOD_S / 2)):
        write_timestamps(os.path.join(velodyne_dir, name), base, frames, offset)


def write_odometry_times(seq_dir: str, frames: int) -> None:
    """Write ``<seq_dir>/times.txt``: seconds since the first frame, one line per frame."""
    _write_text(os.path.join(seq_dir, "times.txt"),
                       "".join(f"{FRAME_PERIOD_S * i:.6e}\n" for i in range(frames)))


# ------------------------------------------------------------------------------------------ oxts
OXTS_FORMAT = """lat:   latitude of the oxts-unit (deg)
lon:   longitude of the oxts-unit (deg)
alt:   altitude of the oxts-unit (m)
roll:  roll angle (rad),  0 = level, positive = left side up (-pi..pi)
pitch: pitch angle (rad), 0 = level, positive = front down (-pi/2..pi/2)
yaw:   heading (rad),     0 = east,  positive = counter clockwise (-pi..pi)
vn:    velocity towards north (m/s)
ve:    velocity towards east (m/s)
vf:    forward velocity, i.e. parallel to earth-surface (m/s)
vl:    leftward velocity, i.e. parallel to earth-surface (m/s)
vu:    upward velocity, i.e. perpendicular to earth-surface (m/s)
ax:    acceleration in x, i.e. in direction of vehicle front (m/s^2)
ay:    acceleration in y, i.e. in direction of vehicle left (m/s^2)
az:    acceleration in z, i.e. in direction of vehicle top (m/s^2)
af:    forward acceleration (m/s^2)
al:    leftward acceleration (m/s^2)
au:    upward acceleration (m/s^2)
wx:    angular rate around x (rad/s)
wy:    angular rate around y (rad/s)
wz:    angular rate around z (rad/s)
wf:    angular rate around forward axis (rad/s)
wl:    angular rate around leftward axis (rad/s)
wu:    angular rate around upward axis (rad/s)
pos_accuracy:  position accuracy (north/east in m)
vel_accuracy:  velocity accuracy (north/east in m/s)
navstat:       navigation status (see navstat_to_string)
numsats:       number of satellites tracked by primary GPS receiver
posmode:       position mode of primary GPS receiver (see gps_mode_to_string)
velmode:       velocity mode of primary GPS receiver (see gps_mode_to_string)
orimode:       orientation mode of primary GPS receiver (see gps_mode_to_string)
"""


def oxts_packets(world_T_imu: Sequence[np.ndarray], enu_R_world: np.ndarray, lat0: float = 49.0,
                 lon0: float = 8.4) -> List[str]:
    """OXTS packets (30 values per line) from IMU poses, with KITTI's Mercator projection at 10 Hz.

    Args:
        world_T_imu: (4, 4) IMU-to-world pose per frame (IMU axes: x forward, y left, z up).
        enu_R_world: (3, 3) rotation from the poses' world frame to east-north-up.
        lat0, lon0: latitude / longitude (degrees) of the world origin.
    """
    r_earth = 6378137.0
    scale = math.cos(math.radians(lat0))
    mx0 = scale * r_earth * math.radians(lon0)
    my0 = scale * r_earth * math.log(math.tan(math.pi * (90.0 + lat0) / 360.0))
    enu_R, enu_p = [], []
    for T in world_T_imu:
        enu_R.append(enu_R_world @ T[:3, :3])
        enu_p.append(enu_R_world @ T[:3, 3])
    enu_p = np.asarray(enu_p)
    n = len(world_T_imu)
    vel = np.gradient(enu_p, FRAME_PERIOD_S, axis=0) if n > 1 else np.zeros((n, 3))
    acc = np.gradient(vel, FRAME_PERIOD_S, axis=0) if n > 1 else np.zeros((n, 3))
    rows = []
    for i in range(n):
        Rm = enu_R[i]
        yaw = math.atan2(Rm[1, 0], Rm[0, 0])
        pitch = math.asin(-max(-1.0, min(1.0, Rm[2, 0])))
        roll = math.atan2(Rm[2, 1], Rm[2, 2])
        east, north, up = enu_p[i]
        lon = math.degrees((mx0 + east) / (scale * r_earth))
        lat = math.degrees(2.0 * math.atan(math.exp((my0 + north) / (scale * r_earth)))) - 90.0
        v_body = Rm.T @ vel[i]  # x forward, y left, z up
        a_body = Rm.T @ acc[i]
        if 0 < i < n - 1:
            dR = enu_R[i - 1].T @ enu_R[i + 1]
            w = np.array([dR[2, 1] - dR[1, 2], dR[0, 2] - dR[2, 0], dR[1, 0] - dR[0, 1]]) / 2.0 / (2 * FRAME_PERIOD_S)
        else:
            w = np.zeros(3)
        vals = [lat, lon, 116.0 + up, roll, pitch, yaw, vel[i, 1], vel[i, 0], v_body[0], v_body[1],
                v_body[2], a_body[0], a_body[1], a_body[2] + 9.81, a_body[0], a_body[1],
                a_body[2] + 9.81, w[0], w[1], w[2], w[0], w[1], w[2]]
        rows.append(" ".join(repr(float(v)) for v in vals) + " 0.05 0.02 4 10 5 5 6")
    return rows


def write_oxts(oxts_dir: str, world_T_imu: Sequence[np.ndarray], enu_R_world: np.ndarray,
               base: dt.datetime) -> None:
    """Write a raw drive's ``oxts`` folder: ``dataformat.txt``, ``timestamps.txt`` and one
    ``data/NNNNNNNNNN.txt`` packet per pose (:func:`oxts_packets`)."""
    data_dir = os.path.join(oxts_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    _write_text(os.path.join(oxts_dir, "dataformat.txt"), OXTS_FORMAT)
    write_timestamps(os.path.join(oxts_dir, "timestamps.txt"), base, len(world_T_imu))
    for i, row in enumerate(oxts_packets(world_T_imu, enu_R_world)):
        _write_text(os.path.join(data_dir, raw_frame_name(i, ".txt")), row + "\n")


# --------------------------------------------------------------------------- scans, poses, images
def write_velodyne(path: str, scan: np.ndarray) -> None:
    """Write a velodyne ``.bin`` scan; ``scan``: (N, 4) x, y, z, reflectance (stored as float32)."""
    scan = np.asarray(scan)
    if scan.ndim != 2 or scan.shape[1] != VELODYNE_FIELDS:
        raise ValueError(f"velodyne scan must be (N, {VELODYNE_FIELDS}) x, y, z, reflectance, got {scan.shape}")
    np.ascontiguousarray(scan, dtype=np.float32).tofile(path)


def write_poses(path: str, poses: Sequence[np.ndarray]) -> None:
    """Write poses (each (4, 4) or (3, 4)) as the odometry ground truth: 12 values per line, ``%.9e``."""
    np.savetxt(path, np.asarray([np.asarray(T)[:3].ravel() for T in poses]), fmt="%.9e")


def write_png(path: str, image: np.ndarray) -> None:
    """Write ``image`` (H, W, 3) float in [0, 1] as an 8-bit RGB PNG (rounded to nearest)."""
    from PIL import Image

    Image.fromarray((np.clip(image, 0, 1) * 255.0 + 0.5).astype(np.uint8)).save(path)


def link_or_copy(src: str, dst: str) -> None:
    """Hard-link ``src`` to ``dst`` (the odometry layout mirrors raw files), copying where links fail."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)
