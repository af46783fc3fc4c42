"""Users' own monocular sequences: a video, a folder of frames, or a folder of several sequences.

A *source* (:class:`FrameSource`) is found at one path:

* a video file (``VIDEO_EXTS``): one sequence, its decoded frames;
* a folder with images directly inside: one sequence (named ``.``), frames sorted by name;
* a folder of sequences: every sub-folder holding images and every video file directly inside
  is a sequence (images directly inside, if any, are one more).

Every sequence needs at least 3 frames (a target and both neighbours) and one frame size
throughout (checked when the source is built, naming the file). Sequences may differ in size:
each has its own intrinsics, scaled alike with the frames to the network size.

Intrinsics come from a small YAML/JSON file in pixels of the original frames::

    fx: 720.0          # or  K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
    fy: 720.0
    cx: 620.5          # principal point in pixels (pixel centres at integers)
    cy: 187.0
    width: 1242        # optional: the image size K refers to (default: the frames' size)
    height: 375

given as ``intrinsics=``, or found next to the data: for a video ``NAME.mp4`` the files
``NAME.yaml|yml|json`` then ``intrinsics.yaml|yml|json`` beside it; for a frame folder
``intrinsics.yaml|yml|json`` inside it, then in the folder above (a folder of sequences may hold
one file for all). Without one, ``fov_deg`` (``data.fov_deg``) is the assumed horizontal field of
view -- fx = fy = W / (2 tan(fov/2)), principal point at the image centre -- and a warning says
so; ``fov_deg=0`` refuses instead.

:func:`build_folder_datasets` makes the training and validation sets of ``data.dataset: folder``:
split files ``train_files.txt`` / ``val_files.txt`` with lines ``<sequence> <index> l`` when
given, else an automatic split -- the last ``val_fraction`` of each sequence's usable frames
(those with all temporal neighbours) for validation, the frames before them, apart from a gap
so that no training sample touches a validation frame, for training.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .kitti import EntriesArg, MonoSequenceDataset, CameraCalibration
from .kitti_io import open_image
from .media import IMAGE_EXTS, VIDEO_EXTS, iter_video_frames, list_images  # noqa: F401 (re-exported)

GUESS_HFOV_DEG = 70.0
INTRINSICS_NAMES = ("intrinsics.yaml", "intrinsics.yml", "intrinsics.json")
MIN_FRAMES = 3


def read_intrinsics_file(path: str) -> Tuple[np.ndarray, Optional[Tuple[int, int]]]:
    """(K (3, 3), (H, W) or None) from a YAML/JSON intrinsics file (format in the module doc)."""
    import yaml

    if not os.path.isfile(path):
        raise FileNotFoundError(f"intrinsics file not found: {path}")
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh) if path.lower().endswith(".json") else yaml.safe_load(fh)
        except (ValueError, yaml.YAMLError) as exc:
            msg = " ".join(str(exc).split())
            raise ValueError(f"{path}: cannot parse intrinsics ({msg}); expected fx, fy, cx, cy") from None
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
                raise ValueError(f"{path}: missing intrinsics key(s) {', '.join(missing)} "
                                 "(expected fx, fy, cx, cy in pixels of the original frames, or K)")
            K = np.array([[float(data["fx"]), 0.0, float(data["cx"])],
                          [0.0, float(data["fy"]), float(data["cy"])], [0.0, 0.0, 1.0]])
    except (TypeError, ValueError) as exc:
        if str(exc).startswith(path):
            raise
        raise ValueError(f"{path}: intrinsics must be numbers ({exc})") from None
    if not np.all(np.isfinite(K)):
        raise ValueError(f"{path}: intrinsics must be finite numbers")
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise ValueError(f"{path}: focal lengths must be positive, got fx={K[0, 0]:g}, fy={K[1, 1]:g}")
    size = None
    if "width" in data or "height" in data:
        if not ("width" in data and "height" in data):
            raise ValueError(f"{path}: give both width and height (the image size K refers to)")
        try:
            size = (int(data["height"]), int(data["width"]))
        except (TypeError, ValueError):
            raise ValueError(f"{path}: width and height must be integers") from None
        if min(size) <= 0:
            raise ValueError(f"{path}: width and height must be positive, got {size[1]}x{size[0]}")
    return K, size


def _scale_K(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K after resizing by (sx, sy), pixel-centre convention (as geometry.scale_intrinsics)."""
    S = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return S @ K


@dataclass
class _Sequence:
    name: str
    path: str  # the frame folder or the video file
    files: Optional[List[str]]  # image paths (frame folders)
    frames: Optional[List[np.ndarray]]  # decoded (H, W, 3) uint8 frames (videos)
    size: Tuple[int, int]  # (H, W) of the frames as stored (videos: resized at decoding)
    K: np.ndarray  # (3, 3) in pixels of ``size``
    K_source: str  # the intrinsics file, or the assumption

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else len(self.frames)


class FrameSource:
    """The sequences found at ``path`` with their frames and intrinsics (see the module doc).

    Args:
        path: a video file, a frame folder, or a folder of sequences.
        intrinsics: a YAML/JSON file or a (3, 3) K for every sequence (pixels of the original
            frames); None = look next to the data, then assume ``fov_deg``.
        fov_deg: assumed horizontal field of view when no intrinsics are found (0 = refuse).
        video_size: (H, W) to resize video frames to while decoding (keeps memory to what the
            network sees; K is scaled alike); None = keep the decoded size.
        min_frames: fewest frames a sequence may have.

    Raises:
        FileNotFoundError / ValueError: one line naming the file and what was expected.
    """

    def __init__(self, path: str, intrinsics: Union[None, str, np.ndarray] = None,
                 fov_deg: float = GUESS_HFOV_DEG, video_size: Optional[Tuple[int, int]] = None,
                 min_frames: int = MIN_FRAMES, progress: bool = True):
        path = os.fspath(path)
        self.path = path
        self.fov_deg = float(fov_deg)
        self._intrinsics = intrinsics
        self._progress = progress
        self._video_size = video_size
        self.assumed: List[str] = []
        found: List[Tuple[str, str, str]] = []  # (name, kind, path)
        if os.path.isfile(path):
            if not path.lower().endswith(VIDEO_EXTS):
                raise ValueError(f"{path}: expected a video ({', '.join(VIDEO_EXTS)}) or a folder of frames")
            self.base = os.path.dirname(os.path.abspath(path))
            found.append((os.path.basename(path), "video", path))
        elif os.path.isdir(path):
            self.base = path
            if list_images(path):
                found.append((".", "images", path))
            for sub in sorted(os.listdir(path)):
                p = os.path.join(path, sub)
                if os.path.isdir(p) and list_images(p):
                    found.append((sub, "images", p))
                elif os.path.isfile(p) and sub.lower().endswith(VIDEO_EXTS):
                    found.append((sub, "video", p))
            if not found:
                raise ValueError(f"{path}: no frames: expected images ({', '.join(IMAGE_EXTS)}) or videos "
                                 f"({', '.join(VIDEO_EXTS)}) in the folder or its sub-folders")
        else:
            raise FileNotFoundError(f"video or image folder not found: {path}")
        self.sequences: Dict[str, _Sequence] = {}
        for name, kind, p in found:
            seq = self._load_video(name, p) if kind == "video" else self._load_folder(name, p)
            if len(seq) < min_frames:
                where = p if kind == "video" else os.path.join(p, "")
                raise ValueError(f"{where}: {len(seq)} frame(s), expected at least {min_frames} "
                                 "(a target frame and its neighbours)")
            self.sequences[name] = seq
        if self.assumed:
            warnings.warn(f"{path}: no intrinsics file (fx, fy, cx, cy in YAML/JSON next to the data); "
                          f"assuming a {self.fov_deg:g} degree horizontal field of view, principal point at "
                          f"the image centre: {'; '.join(self.assumed)}", stacklevel=2)

    # ------------------------------------------------------------------------ loading
    def _load_folder(self, name: str, folder: str) -> _Sequence:
        from PIL import Image, UnidentifiedImageError

        files = [os.path.join(folder, f) for f in list_images(folder)]
        size = None
        for f in files:
            try:
                with Image.open(f) as img:
                    hw = (img.height, img.width)
            except (OSError, UnidentifiedImageError, ValueError) as exc:
                raise ValueError(f"{f}: not a readable image ({exc})") from None
            if size is None:
                size = hw
            elif hw != size:
                raise ValueError(f"{f}: frame is {hw[1]}x{hw[0]} but {os.path.basename(files[0])} is "
                                 f"{size[1]}x{size[0]}; expected one frame size per sequence (put frames of "
                                 "another size in their own sub-folder)")
        K, src = self._intrinsics_for(name, folder, [folder, os.path.dirname(os.path.abspath(folder))]
                                      if name != "." else [folder], size)
        return _Sequence(name, folder, files, None, size, K, src)

    def _load_video(self, name: str, video: str) -> _Sequence:
        from PIL import Image
        from tqdm import tqdm

        frames: List[np.ndarray] = []
        native = None
        for i, frame in enumerate(tqdm(iter_video_frames(video), desc=f"decoding {name}", unit="frame",
                                       disable=not self._progress)):
            hw = frame.shape[:2]
            if native is None:
                native = hw
            elif hw != native:
                raise ValueError(f"{video}: frame {i} is {hw[1]}x{hw[0]} but frame 0 is {native[1]}x{native[0]}; "
                                 "expected one frame size throughout the video")
            if self._video_size is not None and hw != tuple(self._video_size):
                h, w = self._video_size
                frame = np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.LANCZOS))
            frames.append(frame)
        if native is None:
            raise ValueError(f"{video}: the video has no frames; expected a decodable video")
        stem = os.path.splitext(video)[0]
        folder = os.path.dirname(os.path.abspath(video))
        K, src = self._intrinsics_for(name, video, [folder], native,
                                      extra=[stem + ext for ext in (".yaml", ".yml", ".json")])
        size = frames[0].shape[:2]
        if size != native:
            K = _scale_K(K, size[1] / native[1], size[0] / native[0])
        return _Sequence(name, video, None, frames, size, K, src)

    def _intrinsics_for(self, name: str, what: str, folders: Sequence[str], size: Tuple[int, int],
                        extra: Sequence[str] = ()) -> Tuple[np.ndarray, str]:
        """K (3, 3) in pixels of frames of ``size`` (H, W) and where it came from."""
        H, W = size
        K, K_size, src = None, None, None
        if isinstance(self._intrinsics, (str, os.PathLike)):
            src = os.fspath(self._intrinsics)
            K, K_size = read_intrinsics_file(src)
        elif self._intrinsics is not None:
            K = np.asarray(self._intrinsics, dtype=np.float64)
            if K.shape != (3, 3) or not (K[0, 0] > 0 and K[1, 1] > 0):
                raise ValueError(f"intrinsics: expected a (3, 3) K with positive focal lengths, got {K.tolist()}")
            src = "intrinsics="
        else:
            for cand in list(extra) + [os.path.join(f, n) for f in folders for n in INTRINSICS_NAMES]:
                if os.path.isfile(cand):
                    src = cand
                    K, K_size = read_intrinsics_file(cand)
                    break
        if K is None:
            if not self.fov_deg > 0:
                raise ValueError(f"{what}: no intrinsics file (expected fx, fy, cx, cy in pixels of the original "
                                 f"frames in {' or '.join(list(extra[:1]) + [os.path.join(folders[0], INTRINSICS_NAMES[0])])}) "
                                 "and no field-of-view guess (data.fov_deg is 0)")
            f = W / (2.0 * math.tan(math.radians(self.fov_deg / 2.0)))
            K = np.array([[f, 0.0, (W - 1) / 2.0], [0.0, f, (H - 1) / 2.0], [0.0, 0.0, 1.0]])
            src = f"assumed {self.fov_deg:g} deg horizontal field of view"
            self.assumed.append(f"'{name}' fx = fy = {f:.1f} px for {W}x{H} frames")
            return K, src
        if K_size is not None and K_size != (H, W):
            K = _scale_K(K, W / K_size[1], H / K_size[0])
        return K.astype(np.float64), src

    # -------------------------------------------------------------------------- queries
    def counts(self) -> Dict[str, int]:
        return {k: len(v) for k, v in self.sequences.items()}

    def image(self, name: str, index: int, expected_size=None, what: str = "frame"):
        """The PIL RGB image of frame ``index`` of sequence ``name``."""
        from PIL import Image

        seq = self.sequences[name]
        if seq.files is not None:
            return open_image(seq.files[index], expected_size, what=what)
        return Image.fromarray(seq.frames[index])


class ImageFolderDataset(MonoSequenceDataset):
    """Monocular sequences from image folders or videos, with the KITTI datasets' sample format.

    Args:
        root: a video, a frame folder, a folder of sequences (see the module doc), or a
            :class:`FrameSource` already built (shared by the training and validation sets).
        height, width, frame_ids, num_scales, is_train, flip_prob, jitter_prob, skip_missing:
            as :class:`~fmdepth.data.KittiRawDataset` (no stereo: "s" is refused).
        intrinsics: path of a YAML/JSON intrinsics file, a (3, 3) K in pixels of the native
            images, or None (look next to the data, else assume ``fov_deg`` and warn).
        entries: optional split file / entries ``(sequence, index, "l")``; default: every frame
            that has all its temporal neighbours (the others are dropped).
    """

    def __init__(self, root: Union[str, FrameSource], height: int, width: int, frame_ids: Sequence = (0, -1, 1),
                 num_scales: int = 4, is_train: bool = False, intrinsics: Union[None, str, np.ndarray] = None,
                 entries: Optional[EntriesArg] = None, skip_missing: bool = False, flip_prob: float = 0.5,
                 jitter_prob: float = 0.5, progress: bool = True, fov_deg: float = GUESS_HFOV_DEG):
        if any(f == "s" for f in frame_ids):
            raise ValueError("frame_ids: ImageFolderDataset has one camera, no stereo pair ('s' is not "
                             "available; stereo needs the KITTI raw or odometry layout)")
        offsets = [int(f) for f in frame_ids]
        if isinstance(root, FrameSource):
            self.source = root
        else:
            self.source = FrameSource(root, intrinsics=intrinsics, fov_deg=fov_deg, progress=progress,
                                      min_frames=max(offsets) - min(offsets) + 1)
        if entries is None:
            entries = usable_entries(self.source, offsets)
            if not entries:
                raise ValueError(f"{self.source.path}: no frame has all neighbours {offsets} (too few frames?)")
        super().__init__(self.source.base, entries, height, width, frame_ids=frame_ids, num_scales=num_scales,
                         is_train=is_train, img_ext=".png", stereo=False, load_gt=False,
                         skip_missing=skip_missing, flip_prob=flip_prob, jitter_prob=jitter_prob)

    # ---------------------------------------------------------------- dataset interface
    def image_path(self, folder: str, frame: int, side: str) -> str:
        seq = self.source.sequences[folder]
        return seq.files[frame] if seq.files is not None else f"{seq.path}#frame{frame}"

    def _missing_frame(self, folder, frame, side):
        n = self.source.counts().get(folder)
        if n is None:
            return f"sequence '{folder}' not found under {self.source.path}"
        if not 0 <= frame < n:
            return f"frame {frame} out of range (sequence '{folder}' has {n} frames)"
        return None

    def _open_frame(self, folder, frame, side, size, what):
        return self.source.image(folder, frame, size, what)

    def _load_calib(self, folder: str) -> CameraCalibration:
        seq = self.source.sequences[folder]
        return CameraCalibration({"l": seq.K.copy()}, 0.0, {"l": seq.size}, {"l": None}, seq.K_source)


def usable_entries(source: FrameSource, offsets: Sequence[int]) -> List[Tuple[str, int, str]]:
    """Every ``(sequence, index, "l")`` whose temporal neighbours ``offsets`` all exist."""
    out = []
    for name, n in source.counts().items():
        out += [(name, i, "l") for i in range(n) if all(0 <= i + o < n for o in offsets)]
    return out


def auto_split(source: FrameSource, offsets: Sequence[int], val_fraction: float
               ) -> Tuple[List[Tuple[str, int, str]], List[Tuple[str, int, str]]]:
    """(train, val) entries: the last ``val_fraction`` of each sequence's usable frames for
    validation (at least one where ``val_fraction > 0`` and the sequence has 4+ usable frames),
    the earlier ones -- minus a gap so no training sample reads a validation frame -- for training."""
    lo, hi = min(offsets), max(offsets)
    train, val = [], []
    for name, n in source.counts().items():
        usable = [i for i in range(n) if 0 <= i + lo and i + hi < n]
        n_val = int(round(val_fraction * len(usable)))
        if val_fraction > 0 and n_val == 0 and len(usable) >= 4:
            n_val = 1
        if n_val == 0:
            train += [(name, i, "l") for i in usable]
            continue
        first_val = usable[-n_val]
        val += [(name, i, "l") for i in usable[-n_val:]]
        train += [(name, i, "l") for i in usable if i + hi < first_val + lo]
    return train, val


def build_folder_datasets(path: str, split: str, height: int, width: int, frame_ids: Sequence[int] = (0, -1, 1),
                          num_scales: int = 4, fov_deg: float = GUESS_HFOV_DEG, val_fraction: float = 0.1,
                          flip_prob: float = 0.5, jitter_prob: float = 0.5, progress: bool = True):
    """(train set, val set or None) of ``data.dataset: folder`` (see the module doc).

    ``split``: a folder (as given or relative to the data folder) holding ``train_files.txt``
    (and optionally ``val_files.txt``) with lines ``<sequence> <index> l`` -- the sequence name
    is the sub-folder or video file name, ``.`` for frames directly in the folder -- or
    ``""``/``"auto"`` (or the KITTI default ``eigen_zhou``, meaningless here) for the automatic split.
    """
    offsets = [int(f) for f in frame_ids]
    source = FrameSource(path, fov_deg=fov_deg, video_size=(height, width), progress=progress,
                         min_frames=max(MIN_FRAMES, max(offsets) - min(offsets) + 1))
    kw = dict(height=height, width=width, frame_ids=tuple(frame_ids), num_scales=num_scales)
    if split in ("", "auto", "eigen_zhou"):
        train, val = auto_split(source, offsets, val_fraction)
        how = f"automatic split: the last {val_fraction:.0%} of each sequence for validation"
    else:
        cands = [split] if os.path.isabs(split) else [split, os.path.join(source.base, split)]
        split_dir = next((c for c in cands if os.path.isfile(os.path.join(c, "train_files.txt"))), None)
        if split_dir is None:
            raise FileNotFoundError(f"data.split: no train_files.txt in {' or '.join(cands)} (use 'auto' for an "
                                    "automatic split of each sequence)")
        from .splits import read_split

        train = read_split(os.path.join(split_dir, "train_files.txt"))
        vf = os.path.join(split_dir, "val_files.txt")
        val = read_split(vf) if os.path.isfile(vf) and os.path.getsize(vf) > 0 else []
        how = f"split files in {split_dir}"
    if not train:
        raise ValueError(f"{path}: no training frames ({how}); need sequences with more frames")
    train_set = ImageFolderDataset(source, entries=train, is_train=True, flip_prob=flip_prob,
                                   jitter_prob=jitter_prob, **kw)
    val_set = ImageFolderDataset(source, entries=val, is_train=False, **kw) if val else None
    sizes = sorted({f"{s.size[1]}x{s.size[0]}" for s in source.sequences.values()})
    print(f"folder data {path}: {len(source.sequences)} sequence(s), {sum(source.counts().values())} frames "
          f"({', '.join(sizes)}), {len(train)} train / {len(val)} val samples ({how})")
    return train_set, val_set
