"""Ground-truth depth export (``fmdepth export-gt``) and a safe reader for ``gt_depths.npz``.

Export: for every split entry the velodyne scan is projected into the camera with
``P_rect_0x @ R_rect_00 @ Tr_velo_to_cam``. By default (``pixel="kitti"``) the points go where
the standard Eigen export puts them -- column ``round(u) - 1``, row ``round(v) - 1`` (the KITTI
devkit's 1-based convention), points outside dropped, smallest value per pixel -- and the file
is identical to Monodepth2's ``gt_depths.npz`` (see
:func:`~fmdepth.data.kitti_io.velodyne_depth_map`); ``pixel="centre"`` uses the nearest 0-based
pixel centre ``round(u), round(v)`` instead (not comparable to published numbers). The stored
value is, by default, the point's forward velodyne coordinate (velodyne x) -- exactly what the
standard Eigen export (Monodepth2's ``export_gt_depth.py``) stores and what published KITTI
numbers are computed against; it differs from the camera z by the LiDAR-camera offset
(about 0.27 m). ``depth="camera-z"`` stores the rectified camera z instead. ``dense=True``
(synthetic datasets only) stores the renderer's dense depth.

The file holds one array under the key ``data``: a float32 (N, H, W) stack when all frames have
the same size, otherwise a 1-D object array of (H, W) arrays, as Monodepth2 writes it (its
evaluation reads both). :func:`load_gt_depths` reads both without general unpickling.
"""
from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from typing import List, Optional, Tuple

import numpy as np

from .kitti_io import PIXEL_CONVENTIONS as _PIXEL_CONVENTIONS
from .kitti_io import (ODOMETRY_CALIB, OdometryCalibration, RawCalibration, load_velodyne, odometry_frame_name,
                       raw_frame_name, velodyne_depth_map)
from .splits import Entry, read_split

DEPTH_VALUES = ("velodyne-x", "camera-z")
PIXEL_CONVENTIONS = _PIXEL_CONVENTIONS


def _is_odometry(root: str, folder: str) -> bool:
    return folder.isdigit() and os.path.isdir(os.path.join(root, "sequences"))


def gt_depth_for_entry(root: str, entry: Entry, depth: str = "velodyne-x", dense: bool = False,
                       _cache: Optional[dict] = None, pixel: str = "kitti") -> np.ndarray:
    """(H, W) float32 ground truth of one split entry (0 = no measurement); see module doc."""
    folder, frame, side = entry
    cache = {} if _cache is None else _cache
    if dense:
        sub = "depth" if side == "l" else "depth_03"
        path = os.path.join(root, "gt", folder, sub, raw_frame_name(frame, ".npy"))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"dense ground truth not found: {path} (--dense needs a dataset "
                                    "written by `fmdepth synth`)")
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable numeric .npy array ({exc})") from None
        if arr.ndim != 2:
            raise ValueError(f"{path}: expected an (H, W) depth map, got shape {arr.shape}")
        return arr.astype(np.float32)
    if _is_odometry(root, folder):
        seq = os.path.join(root, "sequences", f"{int(folder):02d}")
        key = ("odom", seq)
        if key not in cache:
            cache[key] = OdometryCalibration(os.path.join(seq, ODOMETRY_CALIB))
        calib = cache[key]
        cam = "2" if side == "l" else "3"
        img = os.path.join(seq, f"image_{cam}", odometry_frame_name(frame, ".png"))
        size = _image_size_any(img)
        velo = os.path.join(seq, "velodyne", odometry_frame_name(frame, ".bin"))
        v2i = calib.velo_to_image(cam)  # odometry: Tr maps into the rectified cam0 frame
    else:
        date_dir = os.path.join(root, folder.split("/")[0])
        key = ("raw", date_dir)
        if key not in cache:
            cache[key] = RawCalibration(date_dir, need_velodyne=True)
        calib = cache[key]
        cam = "02" if side == "l" else "03"
        size = calib.size.get(cam)
        if size is None:
            size = _image_size_any(os.path.join(root, folder, f"image_{cam}", "data", raw_frame_name(frame, ".png")))
        velo = os.path.join(root, folder, "velodyne_points", "data", raw_frame_name(frame, ".bin"))
        v2i = calib.velo_to_image(cam)
    points = load_velodyne(velo)
    return velodyne_depth_map(points, v2i, size[0], size[1], depth, pixel)


def _image_size_any(path: str) -> Tuple[int, int]:
    from PIL import Image

    for cand in (path, os.path.splitext(path)[0] + ".jpg"):
        if os.path.isfile(cand):
            with Image.open(cand) as img:
                return img.height, img.width
    raise FileNotFoundError(f"image not found: {path} (needed for the image size)")


def export_gt(data: str, split_file: str, out: str, depth: str = "velodyne-x", dense: bool = False,
              skip_missing: bool = False, progress: bool = True,
              pixel: str = "kitti") -> Tuple[str, int, List[Tuple[Entry, str]]]:
    """Write ``gt_depths.npz`` (key ``data``) for the entries of ``split_file``.

    ``pixel``: "kitti" (default, the standard Eigen export's rule) or "centre" (see module doc).

    Returns:
        (out path, number of frames written, skipped entries with reasons).

    Raises:
        FileNotFoundError / ValueError: missing or malformed input (names the path), unless
            ``skip_missing`` -- then the entry is skipped and reported.
    """
    from tqdm import tqdm

    if depth not in DEPTH_VALUES:
        raise ValueError(f"depth must be one of {', '.join(DEPTH_VALUES)}, got {depth!r}")
    if pixel not in PIXEL_CONVENTIONS:
        raise ValueError(f"pixel must be one of {', '.join(PIXEL_CONVENTIONS)}, got {pixel!r}")
    if not os.path.isdir(data):
        raise FileNotFoundError(f"dataset folder not found: {data}")
    entries = read_split(split_file)
    if not entries:
        raise ValueError(f"{split_file}: no entries")
    cache: dict = {}
    gts: List[np.ndarray] = []
    skipped: List[Tuple[Entry, str]] = []
    for entry in tqdm(entries, desc="export-gt", unit="frame", disable=not progress):
        try:
            gts.append(gt_depth_for_entry(data, entry, depth, dense, cache, pixel))
        except (FileNotFoundError, ValueError) as exc:
            if not skip_missing:
                raise type(exc)(f"{split_file}: entry '{entry[0]} {entry[1]} {entry[2]}': {exc}") from None
            skipped.append((entry, str(exc)))
    if skipped:
        lines = "\n".join(f"  {e[0]} {e[1]} {e[2]}: {r}" for e, r in skipped)
        warnings.warn(f"export-gt skipped {len(skipped)} of {len(entries)} entries:\n{lines}", stacklevel=2)
    if not gts:
        raise ValueError(f"{split_file}: no ground truth could be exported")
    save_gt_depths(out, gts)
    return out, len(gts), skipped


def save_gt_depths(out: str, gts: List[np.ndarray]) -> None:
    """Save depth maps under key ``data``: a float32 stack if all sizes agree, else an object
    array (Monodepth2's format). Written to a temporary file, then renamed."""
    if len({g.shape for g in gts}) == 1:
        arr = np.stack([g.astype(np.float32) for g in gts])
    else:
        arr = np.empty(len(gts), dtype=object)
        for i, g in enumerate(gts):
            arr[i] = g.astype(np.float32)
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(out)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, data=arr)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ----------------------------------------------------------------------------------- safe reader
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays; any other global is refused."""

    def __init__(self, fh, source: str):
        super().__init__(fh, encoding="latin1")
        self.source = source

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"{self.source}: refusing to unpickle '{module}.{name}' -- ground-truth files may only hold "
            "numpy arrays")


def _read_npy_stream(fh, source: str) -> np.ndarray:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"{source}: unsupported .npy format version {version}")
    if not dtype.hasobject:
        raise ValueError(f"{source}: internal error, expected an object array")
    try:
        arr = _ArrayOnlyUnpickler(fh, source).load()
    except pickle.UnpicklingError as exc:
        raise ValueError(str(exc)) from None
    except Exception as exc:  # malformed stream
        raise ValueError(f"{source}: cannot read the object array ({type(exc).__name__}: {exc})") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{source}: expected an array of depth maps, got {type(arr).__name__}")
    return arr


def load_gt_depths(path: str) -> List[np.ndarray]:
    """Read ground-truth depth maps from ``gt_depths.npz`` (key ``data``) or a ``.npy`` file.

    Plain numeric arrays are read with ``np.load(allow_pickle=False)``; object arrays (one map
    per frame, as Monodepth2 writes them) go through an unpickler that only allows numpy's
    array-reconstruction names and refuses everything else.

    Returns:
        list of (H, W) float32 arrays.

    Raises:
        FileNotFoundError: missing file; ValueError: not a depth-map file, or it holds anything
            other than numeric arrays (the message names the file).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ground-truth file not found: {path}")
    is_zip = zipfile.is_zipfile(path)
    arr = None
    try:
        if is_zip:
            with np.load(path, allow_pickle=False) as npz:
                if "data" not in npz.files:
                    raise ValueError(f"{path}: no 'data' array (holds {', '.join(npz.files) or 'nothing'})")
                try:
                    arr = npz["data"]
                except ValueError:
                    arr = None  # object array: read below with the restricted unpickler
        else:
            arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            if str(exc).startswith(path):
                raise
            raise ValueError(f"{path}: not a readable ground-truth file ({exc})") from None
        arr = None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable ground-truth file ({exc})") from None
    if arr is None:
        try:
            if is_zip:
                with zipfile.ZipFile(path) as zf, zf.open("data.npy") as fh:
                    arr = _read_npy_stream(io.BufferedReader(fh), path)
            else:
                with open(path, "rb") as fh:
                    arr = _read_npy_stream(fh, path)
        except (ValueError, KeyError, OSError, EOFError) as exc:
            if str(exc).startswith(path):
                raise
            raise ValueError(f"{path}: not a readable ground-truth file ({exc})") from None
    if arr.dtype == object:
        maps = list(arr.ravel())
    elif arr.ndim == 3:
        maps = list(arr)
    elif arr.ndim == 2:
        maps = [arr]
    else:
        raise ValueError(f"{path}: expected (N, H, W) depth maps, got shape {arr.shape}")
    out = []
    for i, m in enumerate(maps):
        if not isinstance(m, np.ndarray) or m.ndim != 2 or not np.issubdtype(m.dtype, np.number):
            desc = f"{type(m).__name__} {getattr(m, 'shape', '')}"
            raise ValueError(f"{path}: item {i} is not an (H, W) numeric depth map ({desc})")
        out.append(m.astype(np.float32, copy=False))
    return out
