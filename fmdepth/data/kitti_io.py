"""Readers for KITTI files: calibration text files, velodyne scans, images -- with clear errors.

Every reader names the file and what it expected when the input is missing or malformed. The
file names, calibration keys and frame names below are the format's one description, shared
with the writers in :mod:`fmdepth.data.kitti_write`.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import numpy as np

# --------------------------------------------------------------------------------------- format
#: Calibration files of a KITTI raw recording day (``<root>/<date>/``).
RAW_CAM_TO_CAM = "calib_cam_to_cam.txt"
RAW_VELO_TO_CAM = "calib_velo_to_cam.txt"
RAW_IMU_TO_VELO = "calib_imu_to_velo.txt"
#: Calibration file of a KITTI odometry sequence (``<root>/sequences/NN/``).
ODOMETRY_CALIB = "calib.txt"
#: Per-camera entries of ``calib_cam_to_cam.txt`` in file order, named ``<entry>_<cc>`` (cc = 00..03).
RAW_CAMERA_ENTRIES = ("S", "K", "D", "R", "T", "S_rect", "R_rect", "P_rect")
#: Entries of ``calib_velo_to_cam.txt`` / ``calib_imu_to_velo.txt``: rotation (3 x 3), translation (3).
RIGID_ROTATION_KEY = "R"
RIGID_TRANSLATION_KEY = "T"
#: Key of the velodyne -> rectified cam0 transform (3 x 4) in an odometry ``calib.txt``.
ODOMETRY_VELO_KEY = "Tr"
#: Values of one velodyne return in a ``.bin`` scan: float32 x, y, z, reflectance.
VELODYNE_FIELDS = 4


def raw_key(entry: str, cam: str) -> str:
    """Key of a per-camera ``calib_cam_to_cam.txt`` entry: ``raw_key("P_rect", "02") == "P_rect_02"``."""
    return f"{entry}_{cam}"


def odometry_key(cam: str) -> str:
    """Key of a camera's projection in an odometry ``calib.txt``: ``odometry_key("2") == "P2"``."""
    return f"P{cam}"


def raw_frame_name(index: int, ext: str) -> str:
    """File name of frame ``index`` in a KITTI raw folder (``0000000042.png``)."""
    return f"{index:010d}{ext}"


def odometry_frame_name(index: int, ext: str) -> str:
    """File name of frame ``index`` in a KITTI odometry sequence folder (``000042.png``)."""
    return f"{index:06d}{ext}"


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
        cam_path = os.path.join(date_dir, RAW_CAM_TO_CAM)
        cam = read_calib_file(cam_path)
        self.cam_path = cam_path
        self.P_rect = {c: _get(cam, raw_key("P_rect", c), 12, cam_path).reshape(3, 4) for c in ("02", "03")}
        self.R_rect_00 = np.eye(4)
        self.R_rect_00[:3, :3] = _get(cam, raw_key("R_rect", "00"), 9, cam_path).reshape(3, 3)
        self.size: Dict[str, Tuple[int, int]] = {}
        for c in ("02", "03"):
            key = raw_key("S_rect", c)
            if key in cam and cam[key].size == 2:
                w, h = cam[key]
                self.size[c] = (int(round(h)), int(round(w)))
        velo_path = os.path.join(date_dir, RAW_VELO_TO_CAM)
        self.velo_path = velo_path
        self.velo_to_cam: Optional[np.ndarray] = None
        if os.path.isfile(velo_path):
            velo = read_calib_file(velo_path)
            T = np.eye(4)
            T[:3, :3] = _get(velo, RIGID_ROTATION_KEY, 9, velo_path).reshape(3, 3)
            T[:3, 3] = _get(velo, RIGID_TRANSLATION_KEY, 3, velo_path)
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
        self.P = {c: _get(calib, odometry_key(c), 12, path).reshape(3, 4) for c in ("2", "3")}
        self.velo_to_cam: Optional[np.ndarray] = None
        if ODOMETRY_VELO_KEY in calib:
            T = np.eye(4)
            T[:3] = _get(calib, ODOMETRY_VELO_KEY, 12, path).reshape(3, 4)
            self.velo_to_cam = T

    def K(self, cam: str) -> np.ndarray:
        return self.P[cam][:, :3].copy()

    def baseline(self) -> float:
        return float((self.P["2"][0, 3] - self.P["3"][0, 3]) / self.P["2"][0, 0])

    def velo_to_image(self, cam: str = "2") -> np.ndarray:
        if self.velo_to_cam is None:
            raise ValueError(f"{self.path}: no '{ODOMETRY_VELO_KEY}' (velodyne -> camera) entry")
        return self.P[cam] @ self.velo_to_cam


# ------------------------------------------------------------------------------------- velodyne
def load_velodyne(path: str) -> np.ndarray:
    """(N, 4) float32 x, y, z, reflectance from a KITTI ``.bin`` scan."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"velodyne scan not found: {path}")
    size = os.path.getsize(path)
    if size % (4 * VELODYNE_FIELDS):
        raise ValueError(f"{path}: {size} bytes is not a whole number of (x, y, z, r) float32 points "
                         "(truncated velodyne file?)")
    return np.fromfile(path, dtype=np.float32).reshape(-1, VELODYNE_FIELDS)


#: Pixel conventions of :func:`velodyne_depth_map`: "kitti" (default) is the KITTI devkit's and
#: the standard Eigen export's (P_rect gives 1-based pixel coordinates: column round(u) - 1,
#: row round(v) - 1); "centre" puts a point at the nearest 0-based pixel centre (round(u), round(v)).
PIXEL_CONVENTIONS = ("kitti", "centre")


def velodyne_depth_map(points: np.ndarray, velo_to_image: np.ndarray, height: int, width: int,
                       value: str = "velodyne-x", pixel: str = "kitti") -> np.ndarray:
    """Sparse depth (H, W) float32 from velodyne points (0 = no return).

    ``pixel="kitti"`` (default) is the rule of the standard Eigen export (Monodepth2's
    ``export_gt_depth.py``, i.e. ``generate_depth_map(..., vel_depth=True)``), so the output is
    identical to that file: points with velodyne x < 0 are dropped, the rest are projected with
    ``velo_to_image`` and put at column ``round(u) - 1``, row ``round(v) - 1`` (the devkit's
    1-based pixel convention; ``round`` is numpy's half-to-even), points outside the image are
    dropped, and where several land on one pixel the smallest stored value wins. With
    ``value="velodyne-x"`` there is no separate test on the camera z (as in the standard export:
    a point with x >= 0 but z <= 0 lands on a non-finite or mirrored pixel and is dropped or kept
    exactly as there); ``value="camera-z"`` drops points with camera z <= 1e-6. The standard
    file also carries a quirk of its duplicate search at the left/right image edges
    (:func:`_standard_edge_pairs`), reproduced for ``value="velodyne-x"`` (the standard file's
    content); ``camera-z`` is not a standard file and keeps the plain smallest-value rule.

    ``pixel="centre"`` is the 0-based nearest-pixel-centre rule (``round(u), round(v)``, points
    with camera z <= 1e-6 dropped); it is not comparable to published KITTI numbers (it differs
    from the standard file by one pixel, up to tens of metres at depth edges).

    Args:
        points: (N, 3+) velodyne coordinates.
        velo_to_image: (3, 4) ``P_rect @ R_rect_00 @ Tr_velo_to_cam``.
        value: "velodyne-x" stores the point's forward velodyne coordinate, as the standard
            export does; "camera-z" stores the rectified camera z (the projection's third row).
        pixel: "kitti" or "centre" (see above).
    """
    if value not in ("velodyne-x", "camera-z"):
        raise ValueError(f"value must be 'velodyne-x' or 'camera-z', got {value!r}")
    if pixel not in PIXEL_CONVENTIONS:
        raise ValueError(f"pixel must be one of {', '.join(PIXEL_CONVENTIONS)}, got {pixel!r}")
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"points must be (N, 3+), got {points.shape}")
    velo_to_image = np.asarray(velo_to_image, dtype=np.float64)
    if velo_to_image.shape != (3, 4):
        raise ValueError(f"velo_to_image must be (3, 4), got {velo_to_image.shape}")
    pts = points[points[:, 0] >= 0, :3].astype(np.float64)
    hom = np.concatenate([pts, np.ones((pts.shape[0], 1))], axis=1)  # (N, 4)
    proj = np.dot(velo_to_image, hom.T).T  # (N, 3)
    z = proj[:, 2]
    if pixel == "centre" or value == "camera-z":
        front = z > 1e-6
        proj, pts, z = proj[front], pts[front], z[front]
    with np.errstate(divide="ignore", invalid="ignore"):
        uf = proj[:, 0] / z
        vf = proj[:, 1] / z
    offset = 1.0 if pixel == "kitti" else 0.0
    uf = np.round(uf) - offset
    vf = np.round(vf) - offset
    inside = (uf >= 0) & (vf >= 0) & (uf < width) & (vf < height)  # False for inf / nan
    u, v = uf[inside].astype(np.int64), vf[inside].astype(np.int64)
    val = (pts[inside, 0] if value == "velodyne-x" else z[inside]).astype(np.float32)
    depth = np.zeros((height, width), np.float32)
    # nearest return wins: write far-to-near so the smallest value is written last
    order = np.argsort(-val, kind="stable")
    depth[v[order], u[order]] = val[order]
    if pixel == "kitti" and value == "velodyne-x":
        _standard_edge_pairs(depth, u, v, val)
    return depth


def _standard_edge_pairs(depth: np.ndarray, u: np.ndarray, v: np.ndarray, val: np.ndarray) -> None:
    """Reproduce the standard export's duplicate search at the image's left/right edges (in place).

    The standard export finds points sharing a pixel through the linear index
    ``row * (W - 1) + col - 1``, which is unique except that it also pairs the last pixel of a row,
    (r, W - 1), with the first of the next, (r + 1, 0). Where both pixels of such a pair hold
    returns, the pixel of the pair's first return (scan order) gets the smallest value of both,
    and the other pixel keeps the value of its own last return (plain assignment order). ``u``,
    ``v``, ``val``: the kept returns in scan order. Both columns lie outside the Garg/Eigen crop,
    so published metrics do not see this; it only matters for an identical file.
    """
    H, W = depth.shape
    if W < 2 or H < 2:
        return
    right = (u == W - 1) & (v < H - 1)
    left = (u == 0) & (v >= 1)
    key = np.where(right, v, np.where(left, v - 1, -1))  # the pair's upper row
    both = np.intersect1d(key[right], key[left])
    for r in both:
        idx = np.nonzero(key == r)[0]  # scan order
        first_right = right[idx[0]]
        other = left if first_right else right
        p_row, p_col = (r, W - 1) if first_right else (r + 1, 0)
        q_row, q_col = (r + 1, 0) if first_right else (r, W - 1)
        depth[p_row, p_col] = val[idx].min()
        depth[q_row, q_col] = val[idx[other[idx]][-1]]


# --------------------------------------------------------------------------------------- images
def open_image(path: str, expected_size: Optional[Tuple[int, int]] = None, what: str = "image"):
    """An image file as an 8-bit RGB PIL image, read by :func:`fmdepth.data.media.read_image_rgb8`.

    Args:
        expected_size: optional (H, W) the image must have.

    Raises:
        FileNotFoundError: missing file; ValueError: corrupt/truncated image or wrong size.
    """
    from PIL import Image

    from .media import read_image_rgb8

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:  # the one reader and its bit-depth rule (8-bit files come back exactly)
        img = Image.fromarray(read_image_rgb8(path))
    except ValueError as exc:
        raise ValueError(f"{path}: corrupt or truncated {what} ({exc})") from None
    if expected_size is not None and (img.height, img.width) != tuple(expected_size):
        raise ValueError(f"{path}: {what} is {img.width}x{img.height} (WxH), expected "
                         f"{expected_size[1]}x{expected_size[0]}")
    return img
