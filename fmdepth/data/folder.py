"""Users' own monocular sequences: a folder of images, a folder of sequence folders, or a video.

Frames of a sequence are the image files (png/jpg) sorted by name, or the decoded frames of a
video file. Intrinsics come from a small YAML/JSON file::

    fx: 720.0          # or  K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
    fy: 720.0
    cx: 620.5          # principal point in pixels (pixel centres at integers)
    cy: 187.0
    width: 1242        # optional: the image size K refers to (default: the images' size)
    height: 375

given as ``intrinsics=`` or found as ``intrinsics.yaml``/``intrinsics.json`` in the folder (or
beside the video). Without one the dataset states its guess -- a 70 degree horizontal field of
view (fx = fy = W / (2 tan 35deg) ~ 0.714 W), principal point at the image centre -- in a warning.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .kitti import EntriesArg, MonoSequenceDataset, _Calib
from .kitti_io import open_image

from .media import IMAGE_EXTS, VIDEO_EXTS, iter_video_frames, list_images  # noqa: F401 (re-exported)

GUESS_HFOV_DEG = 70.0


def read_intrinsics_file(path: str) -> Tuple[np.ndarray, Optional[Tuple[int, int]]]:
    """(K (3, 3), (H, W) or None) from a YAML/JSON intrinsics file (format in the module doc)."""
    import yaml

    if not os.path.isfile(path):
        raise FileNotFoundError(f"intrinsics file not found: {path}")
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh) if path.lower().endswith(".json") else yaml.safe_load(fh)
        except (ValueError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot parse intrinsics ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with fx, fy, cx, cy (or K)")
    try:
        if "K" in data:
            K = np.asarray(data["K"], dtype=np.float64)
            if K.shape != (3, 3):
                raise ValueError(f"{path}: K must be 3x3, got shape {K.shape}")
        else:
            missing = [k for k in ("fx", "fy", "cx", "cy") if k not in data]
            if missing:
                raise ValueError(f"{path}: missing intrinsics key(s) {', '.join(missing)} (or give K)")
            K = np.array([[float(data["fx"]), 0.0, float(data["cx"])],
                          [0.0, float(data["fy"]), float(data["cy"])], [0.0, 0.0, 1.0]])
    except (TypeError, ValueError) as exc:
        if str(exc).startswith(path):
            raise
        raise ValueError(f"{path}: intrinsics must be numbers ({exc})") from None
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise ValueError(f"{path}: focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
    size = None
    if "width" in data or "height" in data:
        if not ("width" in data and "height" in data):
            raise ValueError(f"{path}: give both width and height (the image size K refers to)")
        size = (int(data["height"]), int(data["width"]))
    return K, size


class ImageFolderDataset(MonoSequenceDataset):
    """Monocular sequences from image folders or a video, with the KITTI datasets' sample format.

    Args:
        root: a folder of images, a folder whose sub-folders hold images (one sequence each),
            or a video file.
        height, width, frame_ids, num_scales, is_train, flip_prob, jitter_prob, skip_missing:
            as :class:`~fmdepth.data.KittiRawDataset` (no stereo: "s" is refused).
        intrinsics: path of a YAML/JSON intrinsics file, a (3, 3) K in pixels of the native
            images, or None (look for intrinsics.yaml/json, else state a guess).
        entries: optional split file / entries ``(sequence, index, "l")``; default: every frame
            that has all its temporal neighbours (the others are dropped).
    """

    def __init__(self, root: str, height: int, width: int, frame_ids: Sequence = (0, -1, 1),
                 num_scales: int = 4, is_train: bool = False, intrinsics: Union[None, str, np.ndarray] = None,
                 entries: Optional[EntriesArg] = None, skip_missing: bool = False, flip_prob: float = 0.5,
                 jitter_prob: float = 0.5, progress: bool = True):
        root = os.fspath(root)
        if any(f == "s" for f in frame_ids):
            raise ValueError("frame_ids: ImageFolderDataset has no stereo pair ('s' is not available)")
        self._video: Optional[Dict[str, List[np.ndarray]]] = None
        self._files: Dict[str, List[str]] = {}
        if os.path.isfile(root) and root.lower().endswith(VIDEO_EXTS):
            base = os.path.dirname(os.path.abspath(root))
            self._video = {os.path.basename(root): _decode_video(root, progress)}
            search = base
        elif os.path.isdir(root):
            imgs = list_images(root)
            if imgs:
                self._files["."] = imgs
            for sub in sorted(os.listdir(root)):
                d = os.path.join(root, sub)
                if os.path.isdir(d):
                    sub_imgs = list_images(d)
                    if sub_imgs:
                        self._files[sub] = sub_imgs
            if not self._files:
                raise ValueError(f"{root}: no images ({', '.join(IMAGE_EXTS)}) in the folder or its sub-folders")
            base = search = root
        elif os.path.exists(root):
            raise ValueError(f"{root}: expected an image folder or a video ({', '.join(VIDEO_EXTS)})")
        else:
            raise FileNotFoundError(f"image folder or video not found: {root}")
        self._base = base
        self._K_native, self._K_size = self._resolve_intrinsics(intrinsics, search)
        offsets = [int(f) for f in frame_ids]
        if entries is None:
            entries = []
            for seq, n in self._counts().items():
                entries += [(seq, i, "l") for i in range(n) if all(0 <= i + o < n for o in offsets)]
            if not entries:
                raise ValueError(f"{root}: no frame has all neighbours {offsets} (too few frames?)")
        super().__init__(base, entries, height, width, frame_ids=frame_ids, num_scales=num_scales,
                         is_train=is_train, img_ext=".png", stereo=False, load_gt=False,
                         skip_missing=skip_missing, flip_prob=flip_prob, jitter_prob=jitter_prob)

    def _counts(self) -> Dict[str, int]:
        if self._video is not None:
            return {k: len(v) for k, v in self._video.items()}
        return {k: len(v) for k, v in self._files.items()}

    def _resolve_intrinsics(self, intrinsics, search: str):
        if isinstance(intrinsics, (str, os.PathLike)):
            return read_intrinsics_file(os.fspath(intrinsics))
        if intrinsics is not None:
            K = np.asarray(intrinsics, dtype=np.float64)
            if K.shape != (3, 3):
                raise ValueError(f"intrinsics: expected a (3, 3) K, got shape {K.shape}")
            return K, None
        for name in ("intrinsics.yaml", "intrinsics.yml", "intrinsics.json"):
            path = os.path.join(search, name)
            if os.path.isfile(path):
                return read_intrinsics_file(path)
        return None, None

    # ---------------------------------------------------------------- dataset interface
    def image_path(self, folder: str, frame: int, side: str) -> str:
        if self._video is not None:
            return f"{folder}#frame{frame}"
        return os.path.join(self._base, folder, self._files[folder][frame])

    def _missing_frame(self, folder, frame, side):
        n = self._counts().get(folder)
        if n is None:
            return f"sequence '{folder}' not found under {self._base}"
        if not 0 <= frame < n:
            return f"frame {frame} out of range (sequence '{folder}' has {n} frames)"
        if self._video is None and not os.path.isfile(self.image_path(folder, frame, side)):
            return f"image not found: {self.image_path(folder, frame, side)}"
        return None

    def _open_frame(self, folder, frame, side, size, what):
        if self._video is None:
            return open_image(self.image_path(folder, frame, side), size, what=what)
        from PIL import Image

        return Image.fromarray(self._video[folder][frame])

    def _load_calib(self, folder: str) -> _Calib:
        first = self._open_frame(folder, 0, "l", None, "first frame")
        H, W = first.height, first.width
        if self._K_native is None:
            f = W / (2.0 * math.tan(math.radians(GUESS_HFOV_DEG / 2.0)))
            K = np.array([[f, 0.0, (W - 1) / 2.0], [0.0, f, (H - 1) / 2.0], [0.0, 0.0, 1.0]])
            warnings.warn(f"{self._base}: no intrinsics given (intrinsics= or intrinsics.yaml); assuming a "
                          f"{GUESS_HFOV_DEG:g} degree horizontal field of view: fx = fy = {f:.1f} px for "
                          f"{W}x{H} images, principal point at the centre", stacklevel=2)
        else:
            K = self._K_native.copy()
            if self._K_size is not None and self._K_size != (H, W):
                sy, sx = H / self._K_size[0], W / self._K_size[1]
                K[0, 0] *= sx
                K[1, 1] *= sy
                K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
                K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        return _Calib({"l": K}, 0.0, {"l": (H, W)}, {"l": None}, "intrinsics")


def _decode_video(path: str, progress: bool) -> List[np.ndarray]:
    """All frames of a video as (H, W, 3) uint8 arrays (:func:`fmdepth.data.media.iter_video_frames`)."""
    from tqdm import tqdm

    frames = list(tqdm(iter_video_frames(path), desc=f"decoding {os.path.basename(path)}", unit="frame",
                       disable=not progress))
    if not frames:
        raise ValueError(f"{path}: the video has no frames")
    return frames
