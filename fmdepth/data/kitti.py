"""KITTI raw and KITTI odometry datasets producing :class:`~fmdepth.data.batch.DepthSample` items.

Both read the intrinsics from the calibration files (never hard-coded), scale them to the
requested size and to every pyramid level, and return multi-scale images for the loss plus the
(optionally colour-jittered) scale-0 network input. Augmentation (``is_train=True``): horizontal
flip with probability ``flip_prob`` (images, K -- ``cx' = W - 1 - cx`` -- the stereo sign and the
ground truth flip together) and colour jitter with probability ``jitter_prob`` (one draw per
sample, applied to the network inputs only).

Every entry is checked when the dataset is built: a split line whose frames (including the
temporal neighbours and, with ``stereo``, the other camera), calibration or ground-truth files
are missing raises ``FileNotFoundError`` naming the path, or -- with ``skip_missing=True`` -- is
dropped and reported (``dataset.skipped`` lists ``(entry, reason)``).
"""
from __future__ import annotations

import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import ColorJitterParams, flip_intrinsics, level_sizes
from .batch import DepthSample, FrameId
from .kitti_io import (ODOMETRY_CALIB, RAW_CAM_TO_CAM, RAW_VELO_TO_CAM, OdometryCalibration, RawCalibration,
                       load_velodyne, odometry_frame_name, open_image, raw_frame_name, velodyne_depth_map)
from .splits import Entry, read_split

EntriesArg = Union[str, "os.PathLike[str]", Sequence[Entry]]


class CameraCalibration:
    """What a dataset needs from a calibration: K (3, 3) per side, baseline, native size."""

    def __init__(self, K: Dict[str, np.ndarray], baseline: float, size: Dict[str, Tuple[int, int]],
                 velo_to_image: Dict[str, Optional[np.ndarray]], source: str):
        self.K, self.baseline, self.size, self.velo_to_image, self.source = K, baseline, size, velo_to_image, source


class MonoSequenceDataset(Dataset):
    """Base class: samples of temporal (and stereo) frames around split entries.

    Subclasses implement :meth:`image_path`, :meth:`_load_calib` (per folder), and optionally
    :meth:`_gt_files` / :meth:`_load_gt`.
    """

    SIDES = {"l": "l", "r": "r"}

    def __init__(self, root: str, split_file_or_entries: EntriesArg, height: int, width: int,
                 frame_ids: Sequence[FrameId] = (0, -1, 1), num_scales: int = 4, is_train: bool = False,
                 img_ext: str = ".png", stereo: bool = False, load_gt: bool = False,
                 skip_missing: bool = False, flip_prob: float = 0.5, jitter_prob: float = 0.5,
                 gt_size: Optional[Tuple[int, int]] = None, progress: bool = False):
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"dataset folder not found: {root}")
        if height <= 0 or width <= 0:
            raise ValueError(f"height, width must be positive, got {height}, {width}")
        if num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {num_scales}")
        f = 2 ** (num_scales - 1)
        if height % f or width % f:
            raise ValueError(f"height and width must be divisible by 2**(num_scales-1) = {f}, got {height}x{width}")
        if img_ext not in (".png", ".jpg"):
            raise ValueError(f"img_ext must be '.png' or '.jpg', got {img_ext!r}")
        ids: List[FrameId] = []
        for fid in frame_ids:
            if fid == "s":
                stereo = True
                continue
            if isinstance(fid, bool) or not isinstance(fid, (int, np.integer)):
                raise ValueError(f"frame_ids: expected integers (and optionally 's'), got {fid!r}")
            ids.append(int(fid))
        if 0 not in ids:
            raise ValueError(f"frame_ids must contain 0 (the target frame), got {list(frame_ids)}")
        for name, p in (("flip_prob", flip_prob), ("jitter_prob", jitter_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        self.root = root
        self.height, self.width = int(height), int(width)
        self.temporal_ids = ids
        self.frame_ids: List[FrameId] = ids + (["s"] if stereo else [])
        self.num_scales = int(num_scales)
        self.is_train = bool(is_train)
        self.img_ext = img_ext
        self.stereo = bool(stereo)
        self.load_gt = bool(load_gt)
        self.skip_missing = bool(skip_missing)
        self.flip_prob = float(flip_prob)
        self.jitter_prob = float(jitter_prob)
        self.gt_size = tuple(gt_size) if gt_size is not None else None
        self._calib_cache: Dict[str, CameraCalibration] = {}

        if isinstance(split_file_or_entries, (str, os.PathLike)):
            self.split_source = os.fspath(split_file_or_entries)
            entries = read_split(self.split_source)
        else:
            self.split_source = "<entries>"
            entries = [(str(a), int(b), str(c)) for a, b, c in split_file_or_entries]
        self.skipped: List[Tuple[Entry, str]] = []
        self.entries: List[Entry] = []
        for n, entry in enumerate(entries, 1):
            reason = self._check_entry(entry)
            if reason is None:
                self.entries.append(entry)
            elif self.skip_missing:
                self.skipped.append((entry, reason))
            else:
                raise FileNotFoundError(f"{self.split_source}: entry {n} '{entry[0]} {entry[1]} {entry[2]}': "
                                        f"{reason} (use skip_missing=True / --skip-missing to skip such entries)")
        if self.skipped:
            lines = "\n".join(f"  {e[0]} {e[1]} {e[2]}: {r}" for e, r in self.skipped)
            warnings.warn(f"{type(self).__name__}: skipped {len(self.skipped)} of {len(entries)} entries of "
                          f"{self.split_source}:\n{lines}", stacklevel=2)
        if not self.entries:
            raise ValueError(f"{self.split_source}: no usable entries under {root}")

    # ------------------------------------------------------------------ subclass interface
    def image_path(self, folder: str, frame: int, side: str) -> str:
        raise NotImplementedError

    def _load_calib(self, folder: str) -> CameraCalibration:
        raise NotImplementedError

    def _calib_files(self, folder: str) -> List[str]:
        return []

    def _gt_files(self, folder: str, frame: int, side: str) -> List[str]:
        """Files needed for ``load_gt`` (any one existing list is enough: returns alternatives)."""
        return []

    def _load_gt(self, folder: str, frame: int, side: str, calib: CameraCalibration
                 ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        raise NotImplementedError

    # ------------------------------------------------------------------------- helpers
    def calibration(self, folder: str) -> CameraCalibration:
        calib = self._calib_cache.get(folder)
        if calib is None:
            calib = self._load_calib(folder)
            self._calib_cache[folder] = calib
        return calib

    def _check_entry(self, entry: Entry) -> Optional[str]:
        folder, frame, side = entry
        if side not in self.SIDES:
            return f"side must be 'l' or 'r', got {side!r}"
        for path in self._calib_files(folder):
            if not os.path.isfile(path):
                return f"calibration file not found: {path}"
        for fid in self.temporal_ids:
            if frame + fid < 0:
                return f"frame {frame + fid} (offset {fid}) does not exist (negative index)"
            missing = self._missing_frame(folder, frame + fid, side)
            if missing:
                return f"{missing} (frame offset {fid})"
        if self.stereo:
            missing = self._missing_frame(folder, frame, _other(side))
            if missing:
                return f"{missing} (stereo frame 's')"
        if self.load_gt:
            options = self._gt_files(folder, frame, side)
            if options and not any(all(os.path.isfile(p) for p in opt) for opt in options):
                wanted = " or ".join(" + ".join(opt) for opt in options)
                return f"ground truth not found: {wanted}"
        return None

    def _missing_frame(self, folder: str, frame: int, side: str) -> Optional[str]:
        """None if the frame exists, else a message naming what is missing."""
        path = self.image_path(folder, frame, side)
        return None if os.path.isfile(path) else f"image not found: {path}"

    def _open_frame(self, folder: str, frame: int, side: str, size: Optional[Tuple[int, int]], what: str):
        """The decoded PIL RGB image of a frame (checked against ``size`` (H, W) when given)."""
        return open_image(self.image_path(folder, frame, side), size, what=what)

    def __len__(self) -> int:
        return len(self.entries)

    def _pyramid(self, img, flip: bool) -> List[torch.Tensor]:
        from PIL import Image

        if flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out = []
        level = img
        for h, w in level_sizes(self.height, self.width, self.num_scales):
            if (level.height, level.width) != (h, w):
                level = level.resize((w, h), Image.Resampling.LANCZOS)
            arr = np.asarray(level, dtype=np.uint8)
            out.append(torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0))
        return out

    def __getitem__(self, index: int) -> DepthSample:
        if not 0 <= index < len(self.entries):
            raise IndexError(f"index {index} out of range for a dataset of {len(self.entries)} entries")
        if not self.skip_missing:
            return self._get(index)
        for attempt in range(len(self.entries)):
            i = (index + attempt) % len(self.entries)
            try:
                sample = self._get(i)
            except (FileNotFoundError, ValueError) as exc:
                warnings.warn(f"skipping entry {i} ({' '.join(map(str, self.entries[i]))}): {exc}")
                continue
            if i != index:
                sample.index = index
            return sample
        raise ValueError(f"{self.split_source}: no entry could be loaded")

    def _get(self, index: int) -> DepthSample:
        from fmdepth.geometry import intrinsics_pyramid, invert_intrinsics, scale_intrinsics

        folder, frame, side = self.entries[index]
        calib = self.calibration(folder)
        cam = self.SIDES[side]
        do_flip = self.is_train and self.flip_prob > 0 and float(torch.rand(())) < self.flip_prob
        jitter = None
        if self.is_train and self.jitter_prob > 0 and float(torch.rand(())) < self.jitter_prob:
            jitter = ColorJitterParams.sample()

        expected = calib.size.get(cam)
        frames: Dict[FrameId, List[torch.Tensor]] = {}
        native = None
        for fid in self.frame_ids:
            what = f"frame {fid!r} of '{folder} {frame} {side}'"
            if fid == "s":
                size = calib.size.get(self.SIDES[_other(side)], expected)
                img = self._open_frame(folder, frame, _other(side), size or native, what)
            else:
                img = self._open_frame(folder, frame + fid, side, expected or native, what)
            if native is None:
                native = (img.height, img.width)
            frames[fid] = self._pyramid(img, do_flip)

        Hn, Wn = native
        K0 = torch.as_tensor(calib.K[cam], dtype=torch.float32)
        K0 = scale_intrinsics(K0, self.width / Wn, self.height / Hn)
        Ks = intrinsics_pyramid(K0, self.num_scales, self.height, self.width)
        if do_flip:
            Ks = [flip_intrinsics(K, w) for K, (_, w) in zip(Ks, level_sizes(self.height, self.width,
                                                                                 self.num_scales))]
        K_inv = [invert_intrinsics(K[None])[0] for K in Ks]

        if jitter is not None:  # one draw for every frame of the sample, network input only
            jittered = jitter.apply(torch.stack([frames[fid][0] for fid in self.frame_ids]))
            net = {fid: jittered[i] for i, fid in enumerate(self.frame_ids)}
        else:
            net = {fid: frames[fid][0] for fid in self.frame_ids}
        stereo_T = None
        if self.stereo:
            stereo_T = torch.eye(4)
            sign = -1.0 if side == "l" else 1.0
            stereo_T[0, 3] = sign * (-1.0 if do_flip else 1.0) * calib.baseline
        depth_gt = label = None
        if self.load_gt:
            depth, lab = self._load_gt(folder, frame, side, calib)
            if do_flip:
                depth = depth[:, ::-1]
                lab = None if lab is None else lab[:, ::-1]
            if self.gt_size is not None and depth.shape != self.gt_size:
                depth = _resize_nearest(depth, self.gt_size)
                lab = None if lab is None else _resize_nearest(lab, self.gt_size)
            depth_gt = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None]
            if lab is not None:
                label = torch.from_numpy(np.ascontiguousarray(lab).astype(np.int64))[None]
        return DepthSample(frames=frames, net_frames=net, K=Ks, K_inv=K_inv, stereo_T=stereo_T,
                           depth_gt=depth_gt, label=label, index=index, meta=(folder, frame, side))


def _other(side: str) -> str:
    return "r" if side == "l" else "l"


def _resize_nearest(a: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    h, w = a.shape
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return a[rows][:, cols]


class KittiRawDataset(MonoSequenceDataset):
    """KITTI raw sequences: ``<root>/<date>/<date>_drive_NNNN_sync/image_0{2,3}/data/NNNNNNNNNN.png``.

    Intrinsics come from ``<root>/<date>/calib_cam_to_cam.txt`` (``P_rect_02`` / ``P_rect_03``),
    the stereo baseline from the same file. Ground truth (``load_gt=True``): the renderer's dense
    depth ``<root>/gt/<folder>/depth[_03]/NNNNNNNNNN.npy`` (+ labels) when present, otherwise the
    velodyne scan projected into the camera (``gt_value``: "velodyne-x", the standard Eigen
    value, or "camera-z").

    Args:
        root: dataset root; split_file_or_entries: split file path or list of entries.
        height, width: output size at scale 0; frame_ids: e.g. (0, -1, 1) and optionally "s".
        num_scales: pyramid levels; is_train: enable augmentation; img_ext: ".png" | ".jpg".
        stereo: add the other camera as frame "s"; load_gt: return depth_gt (and labels).
        skip_missing: drop (and report) entries with missing files instead of failing.
        flip_prob, jitter_prob: augmentation probabilities (training only).
        gt_size: optional (H, W) to resize ground truth to (nearest), for batching mixed sizes.
    """

    SIDES = {"l": "02", "r": "03"}

    def __init__(self, *args, gt_value: str = "velodyne-x", **kwargs):
        if gt_value not in ("velodyne-x", "camera-z"):
            raise ValueError(f"gt_value must be 'velodyne-x' or 'camera-z', got {gt_value!r}")
        self.gt_value = gt_value
        super().__init__(*args, **kwargs)

    def image_path(self, folder: str, frame: int, side: str) -> str:
        return os.path.join(self.root, folder, f"image_{self.SIDES[side]}", "data", raw_frame_name(frame, self.img_ext))

    def _date_dir(self, folder: str) -> str:
        return os.path.join(self.root, folder.split("/")[0])

    def _calib_files(self, folder: str) -> List[str]:
        return [os.path.join(self._date_dir(folder), RAW_CAM_TO_CAM)]

    def _load_calib(self, folder: str) -> CameraCalibration:
        raw = RawCalibration(self._date_dir(folder))
        v2i = {c: (raw.velo_to_image(c) if raw.velo_to_cam is not None else None) for c in ("02", "03")}
        return CameraCalibration({c: raw.K(c) for c in ("02", "03")}, raw.baseline(), raw.size, v2i, raw.cam_path)

    def dense_gt_path(self, folder: str, frame: int, side: str, kind: str = "depth") -> str:
        sub = kind if side == "l" else f"{kind}_03"
        return os.path.join(self.root, "gt", folder, sub, raw_frame_name(frame, ".npy"))

    def velodyne_path(self, folder: str, frame: int) -> str:
        return os.path.join(self.root, folder, "velodyne_points", "data", raw_frame_name(frame, ".bin"))

    def _gt_files(self, folder, frame, side):
        return [[self.dense_gt_path(folder, frame, side)],
                [self.velodyne_path(folder, frame), os.path.join(self._date_dir(folder), RAW_VELO_TO_CAM)]]

    def _load_gt(self, folder, frame, side, calib):
        dense = self.dense_gt_path(folder, frame, side)
        if os.path.isfile(dense):
            depth = _load_npy(dense, 2)
            lab_path = self.dense_gt_path(folder, frame, side, "labels")
            label = _load_npy(lab_path, 2) if os.path.isfile(lab_path) else None
            return depth, label
        cam = self.SIDES[side]
        if calib.velo_to_image[cam] is None:
            raise FileNotFoundError(f"calibration file not found: "
                                    f"{os.path.join(self._date_dir(folder), RAW_VELO_TO_CAM)}")
        h, w = calib.size.get(cam) or _image_size(self.image_path(folder, frame, side))
        points = load_velodyne(self.velodyne_path(folder, frame))
        return velodyne_depth_map(points, calib.velo_to_image[cam], h, w, self.gt_value), None


class KittiOdometryDataset(MonoSequenceDataset):
    """KITTI odometry: ``<root>/sequences/NN/image_{2,3}/NNNNNN.png``, ``calib.txt`` (P2/P3).

    Split entries are ``<sequence> <frame> <side>`` (e.g. ``9 0 l``). Same arguments as
    :class:`KittiRawDataset`; ground truth is the velodyne scan ``sequences/NN/velodyne/NNNNNN.bin``
    projected with ``P2 @ Tr`` (camera z, odometry has no velodyne-x convention).
    """

    SIDES = {"l": "2", "r": "3"}

    def _seq_dir(self, folder: str) -> str:
        try:
            return os.path.join(self.root, "sequences", f"{int(folder):02d}")
        except ValueError:
            return os.path.join(self.root, "sequences", folder)

    def image_path(self, folder: str, frame: int, side: str) -> str:
        return os.path.join(self._seq_dir(folder), f"image_{self.SIDES[side]}", odometry_frame_name(frame, self.img_ext))

    def _calib_files(self, folder: str) -> List[str]:
        return [os.path.join(self._seq_dir(folder), ODOMETRY_CALIB)]

    def _load_calib(self, folder: str) -> CameraCalibration:
        odo = OdometryCalibration(os.path.join(self._seq_dir(folder), ODOMETRY_CALIB))
        v2i = {c: (odo.velo_to_image(c) if odo.velo_to_cam is not None else None) for c in ("2", "3")}
        return CameraCalibration({c: odo.K(c) for c in ("2", "3")}, odo.baseline(), {}, v2i, odo.path)

    def velodyne_path(self, folder: str, frame: int) -> str:
        return os.path.join(self._seq_dir(folder), "velodyne", odometry_frame_name(frame, ".bin"))

    def _gt_files(self, folder, frame, side):
        return [[self.velodyne_path(folder, frame)]]

    def _load_gt(self, folder, frame, side, calib):
        cam = self.SIDES[side]
        if calib.velo_to_image[cam] is None:
            raise ValueError(f"{calib.source}: no 'Tr' entry, cannot project velodyne ground truth")
        h, w = _image_size(self.image_path(folder, frame, side))
        points = load_velodyne(self.velodyne_path(folder, frame))
        return velodyne_depth_map(points, calib.velo_to_image[cam], h, w, "camera-z"), None


def _load_npy(path: str, ndim: int) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable numeric .npy array ({exc})") from None
    if arr.ndim != ndim:
        raise ValueError(f"{path}: expected a {ndim}-D array, got shape {arr.shape}")
    return arr


def _image_size(path: str) -> Tuple[int, int]:
    from PIL import Image

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    with Image.open(path) as img:
        return img.height, img.width
