"""Readers for KITTI files: calibration text files, velodyne scans, images -- with clear errors.

Every reader names the file and what it expected when the input is missing or malformed.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import numpy as np


# ---------------------------------------------------------------------------------- calibration
def read_calib_file(path: str) -> Dict[str, np.ndarray]:
    """Parse a KITTI ``key: v1 v2 ...`` calibration file into float arrays (non-numeric keys skipped).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: no numeric entry could be read.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"calibration file not found: {path}")
    data: Dict[str, np.ndarray] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if ":" not in line:
                continue
            key, value = line.split(":", 1)
            try:
                data[key.strip()] = np.array([float(x) for x in value.split()], dtype=np.float64)
            except ValueError:
                continue  # e.g. calib_time
    if not data:
        raise ValueError(f"{path}: no numeric calibration entries (expected lines like 'P_rect_02: ...')")
    return data


def _get(calib: Dict[str, np.ndarray], key: str, size: int, path: str) -> np.ndarray:
    if key not in calib:
        raise ValueError(f"{path}: missing calibration entry '{key}'")
    v = calib[key]
    if v.size != size:
        raise ValueError(f"{path}: '{key}' has {v.size} values, expected {size}")
    return v


class RawCalibration:
    """Calibration of one KITTI raw recording day (``<root>/<date>/calib_*.txt``).

    Attributes:
        P_rect: {"02": (3, 4), "03": (3, 4)} rectified projection matrices.
        R_rect_00: (4, 4) rectifying rotation (homogeneous).
        velo_to_cam: (4, 4) ``Tr_velo_to_cam`` (velodyne -> unrectified cam0); None if the
            velodyne calibration file is absent (only needed for ground truth).
        size: {"02": (H, W), ...} from ``S_rect_0x`` when present.
    """

    def __init__(self, date_dir: str, need_velodyne: bool = False):
        cam_path = os.path.join(date_dir, "calib_cam_to_cam.txt")
        cam = read_calib_file(cam_path)
        self.cam_path = cam_path
        self.P_rect = {c: _get(cam, f"P_rect_{c}", 12, cam_path).reshape(3, 4) for c in ("02", "03")}
        self.R_rect_00 = np.eye(4)
        self.R_rect_00[:3, :3] = _get(cam, "R_rect_00", 9, cam_path).reshape(3, 3)
        self.size: Dict[str, Tuple[int, int]] = {}
        for c in ("02", "03"):
            key = f"S_rect_{c}"
            if key in cam and cam[key].size == 2:
                w, h = cam[key]
                self.size[c] = (int(round(h)), int(round(w)))
        velo_path = os.path.join(date_dir, "calib_velo_to_cam.txt")
        self.velo_path = velo_path
        self.velo_to_cam: Optional[np.ndarray] = None
        if os.path.isfile(velo_path):
            velo = read_calib_file(velo_path)
            T = np.eye(4)
            T[:3, :3] = _get(velo, "R", 9, velo_path).reshape(3, 3)
            T[:3, 3] = _get(velo, "T", 3, velo_path)
            self.velo_to_cam = T
        elif need_velodyne:
            raise FileNotFoundError(f"calibration file not found: {velo_path}")

    def K(self, cam: str) -> np.ndarray:
        """(3, 3) intrinsics of camera "02" or "03" (rectified)."""
        return self.P_rect[cam][:, :3].copy()

    def baseline(self) -> float:
        """Metric stereo baseline image_02 <-> image_03 from the P_rect translations."""
        fx = self.P_rect["02"][0, 0]
        return float((self.P_rect["02"][0, 3] - self.P_rect["03"][0, 3]) / fx)

    def velo_to_image(self, cam: str = "02") -> np.ndarray:
        """(3, 4) ``P_rect_0x @ R_rect_00 @ Tr_velo_to_cam``: velodyne points -> image pixels."""
        if self.velo_to_cam is None:
            raise FileNotFoundError(f"calibration file not found: {self.velo_path}")
        return self.P_rect[cam] @ self.R_rect_00 @ self.velo_to_cam


class OdometryCalibration:
    """``sequences/NN/calib.txt`` of the KITTI odometry benchmark (P0..P3, Tr)."""

    def __init__(self, path: str):
        calib = read_calib_file(path)
        self.path = path
        self.P = {c: _get(calib, f"P{c}", 12, path).reshape(3, 4) for c in ("2", "3")}
        self.velo_to_cam: Optional[np.ndarray] = None
        if "Tr" in calib:
            T = np.eye(4)
            T[:3] = _get(calib, "Tr", 12, path).reshape(3, 4)
            self.velo_to_cam = T

    def K(self, cam: str) -> np.ndarray:
        return self.P[cam][:, :3].copy()

    def baseline(self) -> float:
        return float((self.P["2"][0, 3] - self.P["3"][0, 3]) / self.P["2"][0, 0])

    def velo_to_image(self, cam: str = "2") -> np.ndarray:
        if self.velo_to_cam is None:
            raise ValueError(f"{self.path}: no 'Tr' (velodyne -> camera) entry")
        return self.P[cam] @ self.velo_to_cam


# ------------------------------------------------------------------------------------- velodyne
def load_velodyne(path: str) -> np.ndarray:
    """(N, 4) float32 x, y, z, reflectance from a KITTI ``.bin`` scan."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"velodyne scan not found: {path}")
    size = os.path.getsize(path)
    if size % 16:
        raise ValueError(f"{path}: {size} bytes is not a whole number of (x, y, z, r) float32 points "
                         "(truncated velodyne file?)")
    return np.fromfile(path, dtype=np.float32).reshape(-1, 4)


def velodyne_depth_map(points: np.ndarray, velo_to_image: np.ndarray, height: int, width: int,
                       value: str = "velodyne-x") -> np.ndarray:
    """Sparse depth (H, W) float32 from velodyne points (0 = no return).

    Points behind the velodyne (x < 0) and outside the image are dropped; each point goes to
    the nearest pixel centre (``round(u), round(v)``) and where several land on one pixel the
    smallest stored value wins (nearest return).

    Args:
        points: (N, 3+) velodyne coordinates.
        velo_to_image: (3, 4) ``P_rect @ R_rect_00 @ Tr_velo_to_cam``.
        value: "velodyne-x" stores the point's forward velodyne coordinate, exactly as the
            standard Eigen export (Monodepth2's ``generate_depth_map``) does; "camera-z"
            stores the rectified camera z (the projection's third coordinate).
    """
    if value not in ("velodyne-x", "camera-z"):
        raise ValueError(f"value must be 'velodyne-x' or 'camera-z', got {value!r}")
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"points must be (N, 3+), got {points.shape}")
    pts = points[points[:, 0] >= 0, :3].astype(np.float64)
    hom = np.concatenate([pts, np.ones((pts.shape[0], 1))], axis=1)
    proj = hom @ velo_to_image.T  # (N, 3)
    z = proj[:, 2]
    front = z > 1e-6
    proj, pts, z = proj[front], pts[front], z[front]
    u = np.round(proj[:, 0] / z).astype(np.int64)
    v = np.round(proj[:, 1] / z).astype(np.int64)
    inside = (u >= 0) & (v >= 0) & (u < width) & (v < height)
    u, v = u[inside], v[inside]
    val = (pts[inside, 0] if value == "velodyne-x" else z[inside]).astype(np.float32)
    depth = np.zeros((height, width), np.float32)
    # nearest return wins: write far-to-near so the smallest value is written last
    order = np.argsort(-val, kind="stable")
    depth[v[order], u[order]] = val[order]
    return depth


# --------------------------------------------------------------------------------------- images
def open_image(path: str, expected_size: Optional[Tuple[int, int]] = None, what: str = "image"):
    """Open and fully decode an RGB image with PIL.

    Args:
        expected_size: optional (H, W) the image must have.

    Raises:
        FileNotFoundError: missing file; ValueError: corrupt/truncated image or wrong size.
    """
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            img = img.convert("RGB")
    except (OSError, SyntaxError, UnidentifiedImageError, ValueError) as exc:
        raise ValueError(f"{path}: corrupt or truncated {what} ({exc})") from None
    if expected_size is not None and (img.height, img.width) != tuple(expected_size):
        raise ValueError(f"{path}: {what} is {img.width}x{img.height} (WxH), expected "
                         f"{expected_size[1]}x{expected_size[0]}")
    return img
