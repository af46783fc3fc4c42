"""Frame-by-frame registration pairs from two videos or frame folders (e.g. RGB and infrared).

:func:`read_frames` reads a folder of frames (sorted by name) or a video file;
:class:`FramePairDataset` pairs two such sources frame by frame (different lengths / frame
rates are errors unless ``on_mismatch="truncate"``).
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

from torch.utils.data import Dataset

from .media import IMAGE_EXTS, VIDEO_EXTS, image_to_chw, iter_video_frames, list_images, read_image, video_info
from .pair_io import resize_array


def read_frames(path: str, channels: Optional[int] = None):
    """Yield float32 (C, H, W) frames from a folder of images (sorted by name) or a video file."""
    if os.path.isdir(path):
        names = list_images(path)
        if not names:
            raise ValueError(f"{path}: no image frames ({', '.join(IMAGE_EXTS)})")
        for n in names:
            yield read_image(os.path.join(path, n), channels)
        return
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video or frame folder not found: {path}")
    if not path.lower().endswith(VIDEO_EXTS):
        raise ValueError(f"{path}: expected a folder of frames or a video file ({', '.join(VIDEO_EXTS)})")
    for frame in iter_video_frames(path):
        yield image_to_chw(frame, channels, name=path)


def check_video_pair(fixed: str, moving: str, on_mismatch: str = "error") -> Tuple[int, float, List[str]]:
    """Compare two frame sources; returns (frames to use, fps of the fixed source, notes).

    Raises:
        ValueError: different frame counts or frame rates when ``on_mismatch == "error"``.
    """
    if on_mismatch not in ("error", "truncate"):
        raise ValueError(f"on_mismatch must be 'error' or 'truncate', got {on_mismatch!r}")
    nf, ff = video_info(fixed)
    nm, fm = video_info(moving)
    notes = []
    if nf == 0 or nm == 0:
        raise ValueError(f"empty frame source: {fixed if nf == 0 else moving}")
    if ff > 0 and fm > 0 and abs(ff - fm) > 1e-3 * max(ff, fm):
        msg = f"frame rates differ: {fixed} at {ff:g} fps, {moving} at {fm:g} fps"
        if on_mismatch == "error":
            raise ValueError(msg + " (resample one video, or pass --on-mismatch truncate to pair frames by index)")
        notes.append(msg + "; frames paired by index")
    if nf != nm:
        msg = f"different lengths: {fixed} has {nf} frames, {moving} has {nm}"
        if on_mismatch == "error":
            raise ValueError(msg + " (pass --on-mismatch truncate to use the first min(n) frames)")
        notes.append(msg + f"; using the first {min(nf, nm)}")
    return min(nf, nm), (ff or fm or 0.0), notes


class FramePairDataset(Dataset):
    """Frame-by-frame pairs from two frame folders or video files (e.g. RGB and infrared).

    Frames are loaded once into memory (grey by default) and resized to ``height``/``width``
    when given. Samples have no known flow or landmarks (unsupervised training).
    """

    def __init__(self, fixed: str, moving: str, height: Optional[int] = None, width: Optional[int] = None,
                 channels: int = 1, on_mismatch: str = "error") -> None:
        n, self.fps, self.notes = check_video_pair(fixed, moving, on_mismatch)
        self.fixed_frames, self.moving_frames = [], []
        for store, src in ((self.fixed_frames, fixed), (self.moving_frames, moving)):
            for i, frame in enumerate(read_frames(src, channels)):
                if i >= n:
                    break
                if height and width and frame.shape[1:] != (height, width):
                    frame = resize_array(frame, height, width)
                store.append(frame)
        shapes = {f.shape for f in self.fixed_frames + self.moving_frames}
        if len(shapes) > 1:
            raise ValueError(f"frames of {fixed} / {moving} have different sizes {sorted(shapes)}; "
                             f"set data.height/data.width to resample them")

    def __len__(self) -> int:
        return len(self.fixed_frames)

    def __getitem__(self, idx: int) -> dict:
        return {"name": f"frame_{idx:06d}", "fixed": self.fixed_frames[idx], "moving": self.moving_frames[idx]}
