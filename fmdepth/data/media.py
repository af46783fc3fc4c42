"""Which files are images and videos, and how frames are read from them.

One place for every reader in fmdepth (``fmdepth predict``, :class:`ImageFolderDataset`, the
registration pair and video readers, the pose evaluation, ``datasets/make_split.py``), so that a
folder that works with one command works with all of them.

* Images: ``IMAGE_EXTS``, read by :func:`read_image` (decoded by imageio: PIL for PNG/JPEG/...,
  tifffile for TIFF) with one rule for bit depths and channels (see its docstring).
* Videos: ``VIDEO_EXTS`` (decoded by imageio's ffmpeg plugin; animated GIFs by imageio's own
  reader). Frames come out as (H, W, 3) uint8 RGB: grey frames are repeated to three channels,
  an alpha channel is dropped.

Every failure is a ``ValueError`` (or ``FileNotFoundError``) naming the file.
"""
from __future__ import annotations

import os
from typing import Iterator, List, Optional, Tuple

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


def unit_range(arr: np.ndarray) -> np.ndarray:
    """Any-shaped image array -> float32 in [0, 1], the one bit-depth rule of fmdepth.

    uint8 is divided by 255 and uint16 by 65535 (the full 16-bit range maps to [0, 1], so a
    16-bit file keeps its precision and its brightness relative to an 8-bit one); bool becomes
    0 / 1; float and other integer arrays are kept when they lie in [0, 1] and otherwise
    min-max normalised over the array.
    """
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    out = arr.astype(np.float32)
    if arr.dtype == np.bool_ or out.size == 0:
        return out
    lo, hi = float(np.nanmin(out)), float(np.nanmax(out))
    if lo < 0.0 or hi > 1.0:
        out = (out - lo) / max(hi - lo, 1e-12)
    return out


def image_to_chw(img: np.ndarray, channels: Optional[int] = None, name: str = "image") -> np.ndarray:
    """(H, W) or (H, W, C) array -> float32 (C, H, W) in [0, 1] (values by :func:`unit_range`).

    Grey and grey+alpha give 1 channel, RGB and RGBA 3 (alpha is dropped, not composited).

    Args:
        img: (H, W), (H, W, 1|2|3|4), or a single-page (1, H, W[, C]) stack.
        channels: None keeps 1 or 3; 1 converts RGB to grey (:func:`to_gray`); 3 repeats grey.
        name: named in the error message.

    Raises:
        ValueError: another shape or channel count, or an image smaller than 2x2.
    """
    img = np.asarray(img)
    if img.ndim in (3, 4) and img.shape[0] == 1 and (img.ndim == 4 or img.shape[-1] not in (1, 2, 3, 4)):
        img = img[0]
    if img.ndim not in (2, 3) or min(img.shape[:2]) < 2:
        raise ValueError(f"{name}: expected a 2-D grey or (H, W, C) colour image, got shape {img.shape}")
    img = unit_range(img)
    if img.ndim == 2:
        img = img[None]
    else:
        if img.shape[2] in (2, 4):  # alpha dropped
            img = img[..., :-1]
        if img.shape[2] not in (1, 3):
            raise ValueError(f"{name}: expected 1, 2, 3 or 4 channels, got {img.shape[2]}")
        img = np.transpose(img, (2, 0, 1))
    if channels == 1 and img.shape[0] == 3:
        img = to_gray(img)
    elif channels == 3 and img.shape[0] == 1:
        img = np.repeat(img, 3, axis=0)
    elif channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels}")
    return np.ascontiguousarray(img, dtype=np.float32)


def to_gray(img: np.ndarray) -> np.ndarray:
    """(3, H, W) RGB -> (1, H, W) luminance (ITU-R 601); (1, H, W) is returned unchanged."""
    if img.shape[0] == 1:
        return img
    w = np.array([0.299, 0.587, 0.114], dtype=np.float32)[:, None, None]
    return (img * w).sum(0, keepdims=True).astype(np.float32)


def read_image(path: str, channels: Optional[int] = None) -> np.ndarray:
    """THE image reader of fmdepth: an image file -> float32 (C, H, W) in [0, 1].

    * 8-bit (grey, RGB, RGBA): value / 255.
    * 16-bit (e.g. 16-bit PNG or TIFF): value / 65535 -- the full 16-bit range, never clipped to
      8 bits (PIL's ``convert("RGB")`` would saturate every value above 255).
    * float TIFF: kept when in [0, 1], else min-max normalised; 1-bit: 0 / 1.
    * grey -> 1 channel; grey+alpha -> 1 (alpha dropped); RGB -> 3; RGBA -> 3 (alpha dropped).
    * palette images are expanded to their palette's colours (RGB, or RGBA then alpha dropped).
    * ``channels=1`` converts colour to luminance (ITU-R 601), ``channels=3`` repeats grey.

    Args:
        path: image file (any of ``IMAGE_EXTS``; the extension is not checked).
        channels: None, 1 or 3 (see above).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable image (the message names it).
    """
    return image_to_chw(_decode(path), channels, name=path)


def read_image_rgb8(path: str) -> np.ndarray:
    """:func:`read_image` as a contiguous (H, W, 3) uint8 RGB array (the same bit-depth rule,
    rounded to 8 bits; 8-bit files come back exactly, without a float round trip)."""
    img = _decode(path)
    if img.dtype == np.uint8 and (img.ndim == 2 or (img.ndim == 3 and img.shape[-1] in (1, 3, 4))):
        return as_rgb_uint8(img)
    return as_rgb_uint8(np.transpose(image_to_chw(img, 3, name=path), (1, 2, 0)))


def _decode(path: str) -> np.ndarray:
    """The decoded pixel array of an image file (imageio), with the reader's error messages."""
    import imageio.v3 as iio

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        return np.asarray(iio.imread(path))
    except Exception as exc:  # imageio raises many types for non-images
        raise ValueError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None


def as_rgb_uint8(frame: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) frame -> contiguous (H, W, 3) uint8 RGB.

    Non-uint8 frames go through :func:`unit_range` (16-bit: value / 65535) and are rounded to
    8 bits; an alpha channel is dropped.
    """
    arr = np.asarray(frame)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 1|3|4) frame, got shape {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.dtype != np.uint8:
        arr = np.clip(unit_range(arr) * 255.0 + 0.5, 0, 255).astype(np.uint8)
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
