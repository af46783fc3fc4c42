"""Which files are images and videos, and how frames are read from them.

One place for every reader in fmdepth (``fmdepth predict``, :class:`ImageFolderDataset`, the
registration pair and video readers, the pose evaluation, ``datasets/make_split.py``), so that a
folder that works with one command works with all of them.

* Images: ``IMAGE_EXTS`` (decoded by PIL / imageio).
* Videos: ``VIDEO_EXTS`` (decoded by imageio's ffmpeg plugin; animated GIFs by imageio's own
  reader). Frames come out as (H, W, 3) uint8 RGB: grey frames are repeated to three channels,
  an alpha channel is dropped.

Every failure is a ``ValueError`` (or ``FileNotFoundError``) naming the file.
"""
from __future__ import annotations

import os
from typing import Iterator, List, Tuple

import numpy as np

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")


def is_image_file(path: str) -> bool:
    """True for an existing file with an image extension (case-insensitive)."""
    return os.path.isfile(path) and path.lower().endswith(IMAGE_EXTS)


def is_video_file(path: str) -> bool:
    """True for an existing file with a video extension (case-insensitive)."""
    return os.path.isfile(path) and path.lower().endswith(VIDEO_EXTS)


def list_images(folder: str) -> List[str]:
    """Sorted names (not paths) of the image files directly inside ``folder``.

    Raises:
        NotADirectoryError: ``folder`` is not a folder.
    """
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"not a folder: {folder}")
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTS)
                  and os.path.isfile(os.path.join(folder, f)))


def open_video(path: str):
    """An imageio reader for ``path`` (ffmpeg, or imageio's GIF reader for ``.gif``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be opened as a video (the message names it).
    """
    import imageio.v2 as iio2

    if not os.path.isfile(path):
        raise FileNotFoundError(f"video not found: {path}")
    try:
        if path.lower().endswith(".gif"):
            return iio2.get_reader(path)
        return iio2.get_reader(path, format="ffmpeg")
    except Exception as exc:  # imageio raises many exception types for unreadable files
        raise ValueError(f"{path}: not a readable video ({type(exc).__name__}: {exc})") from None


def as_rgb_uint8(frame: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) frame -> contiguous (H, W, 3) uint8 RGB."""
    arr = np.asarray(frame)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 1|3|4) frame, got shape {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            arr = np.clip(arr * 255.0 + 0.5, 0, 255)
        else:  # 16-bit frames: keep the top byte
            arr = arr >> 8 if arr.dtype == np.uint16 else np.clip(arr, 0, 255)
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])


def iter_video_frames(path: str) -> Iterator[np.ndarray]:
    """Yield every frame of a video as (H, W, 3) uint8 RGB.

    Raises:
        ValueError: the video cannot be opened, or decoding fails part-way (the message names
            the file and how many frames were read).
    """
    reader = open_video(path)
    count = 0
    try:
        it = iter(reader)
        while True:
            try:
                frame = next(it)
            except StopIteration:
                break
            except Exception as exc:  # a truncated or corrupt stream
                raise ValueError(f"{path}: error while decoding the video after {count} frames "
                                 f"({type(exc).__name__}: {exc})") from None
            count += 1
            yield as_rgb_uint8(frame)
    finally:
        reader.close()


def video_fps(path: str) -> float:
    """Frames per second from a video's metadata (0.0 when the container does not say).

    Raises:
        FileNotFoundError / ValueError: as :func:`open_video`.
    """
    reader = open_video(path)
    try:
        fps = float(reader.get_meta_data().get("fps", 0.0) or 0.0)
    except Exception:  # metadata is optional
        fps = 0.0
    finally:
        reader.close()
    return fps if np.isfinite(fps) else 0.0


def video_info(path: str) -> Tuple[int, float]:
    """(number of frames, frames per second) of a video; a frame folder gives (n images, 0.0).

    Raises:
        FileNotFoundError: neither a folder nor a file.
        ValueError: the file is not a readable video.
    """
    if os.path.isdir(path):
        return len(list_images(path)), 0.0
    reader = open_video(path)
    try:
        fps = float(reader.get_meta_data().get("fps", 0.0) or 0.0)
        try:  # ffmpeg counts by decoding; other readers (GIF) know their length
            n = reader.count_frames() if hasattr(reader, "count_frames") else reader.get_length()
            if not np.isfinite(float(n)):
                raise ValueError("unknown length")
        except Exception as exc:
            raise ValueError(f"{path}: cannot count the video's frames ({type(exc).__name__}: {exc})") from None
    finally:
        reader.close()
    return int(n), fps
