"""Image pairs for registration: synthesis with known displacement, pair folders, video pairs.

Conventions (shared with :mod:`fmdepth.models.registration` and :mod:`fmdepth.metrics.registration`):

* images are float32 arrays/tensors in [0, 1], channels first ``(C, H, W)``;
* a displacement ``flow`` is ``(2, H, W)`` in pixels **on the fixed-image grid**, ``flow[0]`` = dx
  (columns), ``flow[1]`` = dy (rows): fixed pixel ``p`` corresponds to moving pixel ``p + flow(p)``,
  so the registered image is ``warped(p) = moving(p + flow(p))`` (``fmdepth.geometry.flow_warp``);
* landmarks are ``(N, 2)`` arrays of ``(x, y)`` pixel coordinates (pixel centres at integers),
  stored as CSV files with one ``x,y`` line per landmark (an optional ``x,y`` header is allowed).

Synthetic multimodal pairs (:func:`make_pair`) are built from the real photographs and microscopy
images that ship inside scikit-image (no download): the fixed image is one *modality* of a base
image warped by a known random affine and/or smooth deformation, the moving image another modality
of the unwarped base, so the true displacement is known at every pixel.

A *pair folder* (:func:`write_pair_folder`, :class:`PairFolderDataset`) is::

    ROOT/fixed/<name>.png   ROOT/moving/<name>.png            (required, same names)
    ROOT/landmarks_fixed/<name>.csv  ROOT/landmarks_moving/<name>.csv   (optional)
    ROOT/flow/<name>.npy   (optional true displacement, (2, H, W) float32)

Videos: :func:`read_frames` reads a folder of frames or a video file; :class:`FramePairDataset`
pairs two such sources frame by frame (different lengths / frame rates are errors unless
``on_mismatch="truncate"``).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from .media import IMAGE_EXTS, VIDEO_EXTS, iter_video_frames, video_info  # noqa: F401 (video_info re-exported)
from .media import is_video_file as is_video  # noqa: F401 (re-exported for fmdepth register)
from .media import list_images as _list_images

# scikit-image images that ship with the wheel (no pooch download needed in skimage 0.26).
SHIPPED_IMAGES = ("camera", "astronaut", "coffee", "chelsea", "immunohistochemistry", "retina",
                  "coins", "moon", "hubble_deep_field", "rocket", "motorcycle_left", "page")
MODALITIES = ("remap", "edges", "invert", "ihc", "channels", "chanremap", "paired", "same")


# ------------------------------------------------------------------------------------------ I/O
def load_image(path: str, channels: Optional[int] = None) -> np.ndarray:
    """Read an image file as float32 ``(C, H, W)`` in [0, 1].

    Args:
        path: image file (png, jpg, tif, ...).
        channels: None keeps 1 (grey) or 3 (RGB, alpha dropped); 1 converts to grey (luminance);
            3 repeats grey to RGB.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable image.
    """
    import imageio.v3 as iio

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        img = np.asarray(iio.imread(path))
    except Exception as exc:  # imageio raises many types for non-images
        raise ValueError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    return image_to_chw(img, channels, name=path)


def image_to_chw(img: np.ndarray, channels: Optional[int] = None, name: str = "image") -> np.ndarray:
    """(H, W) / (H, W, C) uint8/uint16/float array -> float32 (C, H, W) in [0, 1]."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] == 1 and img.shape[-1] not in (1, 3, 4):
        img = img[0]
    if img.ndim not in (2, 3) or min(img.shape[:2]) < 2:
        raise ValueError(f"{name}: expected a 2-D grey or (H, W, C) colour image, got shape {img.shape}")
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.0
    elif img.dtype == bool:
        img = img.astype(np.float32)
    else:
        img = img.astype(np.float32)
        lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
        if lo < 0.0 or hi > 1.0:
            img = (img - lo) / max(hi - lo, 1e-12)
    if img.ndim == 2:
        img = img[None]
    else:
        if img.shape[2] == 4:
            img = img[..., :3]
        if img.shape[2] not in (1, 3):
            raise ValueError(f"{name}: expected 1, 3 or 4 channels, got {img.shape[2]}")
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


def save_image(path: str, img) -> None:
    """Write a (C, H, W) or (H, W) float image in [0, 1] (numpy or tensor) as 8-bit PNG/JPG."""
    import imageio.v3 as iio

    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 3:
        img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    iio.imwrite(path, (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def read_landmarks(path: str, height: Optional[int] = None, width: Optional[int] = None) -> np.ndarray:
    """Read a landmark CSV file (``x,y`` per line, optional header) as float64 ``(N, 2)``.

    Args:
        path: CSV file.
        height, width: if given, every point must lie inside the image
            (``0 <= x <= width - 1``, ``0 <= y <= height - 1``).

    Raises:
        FileNotFoundError: missing file. ValueError: malformed line (named by number), no points,
        non-finite or out-of-image points.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"landmark file not found: {path}")
    points: List[Tuple[float, float]] = []
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            cells = [c.strip() for c in row if c.strip() != ""]
            if not cells or cells[0].startswith("#"):
                continue
            if len(cells) != 2:
                raise ValueError(f"{path}:{lineno}: expected 'x,y', got {','.join(row)!r}")
            try:
                x, y = float(cells[0]), float(cells[1])
            except ValueError:
                if lineno == 1 and not points:  # header such as "x,y"
                    continue
                raise ValueError(f"{path}:{lineno}: expected two numbers 'x,y', got {','.join(row)!r}") from None
            if not (np.isfinite(x) and np.isfinite(y)):
                raise ValueError(f"{path}:{lineno}: non-finite landmark ({x}, {y})")
            points.append((x, y))
    if not points:
        raise ValueError(f"{path}: no landmarks found (expected lines 'x,y')")
    pts = np.asarray(points, dtype=np.float64)
    if height is not None and width is not None:
        bad = (pts[:, 0] < 0) | (pts[:, 0] > width - 1) | (pts[:, 1] < 0) | (pts[:, 1] > height - 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{path}: {int(bad.sum())} landmark(s) outside the {width}x{height} image, "
                             f"first #{i + 1} at ({pts[i, 0]:.2f}, {pts[i, 1]:.2f}); "
                             f"valid x in [0, {width - 1}], y in [0, {height - 1}]")
    return pts


def write_landmarks(path: str, points: np.ndarray) -> None:
    """Write ``(N, 2)`` (x, y) points as a CSV file with an ``x,y`` header."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points: expected (N, 2), got {points.shape}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("x,y\n")
        for x, y in points:
            fh.write(f"{x:.4f},{y:.4f}\n")


# -------------------------------------------------------------------------------- base images
def shipped_image(name: str) -> np.ndarray:
    """A scikit-image sample image that ships with the wheel, as float32 (3, H, W) or (1, H, W)."""
    import skimage.data

    if name not in SHIPPED_IMAGES:
        raise ValueError(f"unknown base image '{name}'; shipped ones: {', '.join(SHIPPED_IMAGES)}")
    if name == "motorcycle_left":  # the left view of scikit-image's stereo pair (left, right, disparity)
        return image_to_chw(skimage.data.stereo_motorcycle()[0], name=name)
    return image_to_chw(getattr(skimage.data, name)(), name=name)


def stereo_rgbd() -> np.ndarray:
    """scikit-image's stereo_motorcycle left view with its disparity map, (4, 500, 741) float32.

    Channels 0-2: the RGB photo; channel 3: the disparity normalised to [0, 1] (1st-99th
    percentile), its occlusion holes (inf) filled with the nearest valid disparity. For
    :func:`make_pair` with ``modality="paired"`` (grey photo vs disparity).
    """
    import skimage.data
    from scipy import ndimage

    left, _, disp = skimage.data.stereo_motorcycle()
    disp = np.asarray(disp, np.float64)
    bad = ~np.isfinite(disp)
    if bad.any():
        idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
        disp = disp[tuple(idx)]
    lo, hi = np.percentile(disp, [1, 99])
    disp = np.clip((disp - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.concatenate([image_to_chw(left), disp[None].astype(np.float32)], 0)


def mni152_slice(z: int, tissue: str = "gm") -> np.ndarray:
    """An axial slice of nilearn's MNI152 (2009a) T1 template and a tissue probability map, (2, H, W).

    Channel 0: the T1 intensity in [0, 1]; channel 1: the ``gm`` or ``wm`` probability map. The
    templates ship inside the nilearn package (no download; ``pip install nilearn``). Rows run
    anterior to posterior (the slice is shown with the nose up). For :func:`make_pair` with
    ``modality="paired"`` (T1 vs tissue map).

    Args:
        z: axial slice index in [0, 189) of the 1 mm template.
        tissue: ``gm`` (grey matter) or ``wm`` (white matter).
    """
    try:
        from nilearn import datasets
    except ImportError:
        raise ImportError("mni152_slice needs nilearn (pip install nilearn); its templates ship with it") from None
    if tissue not in ("gm", "wm"):
        raise ValueError(f"tissue: expected 'gm' or 'wm', got {tissue!r}")
    t1 = datasets.load_mni152_template(resolution=1).get_fdata()
    tmap = (datasets.load_mni152_gm_template if tissue == "gm" else datasets.load_mni152_wm_template)(
        resolution=1).get_fdata()
    if not 0 <= z < t1.shape[2]:
        raise ValueError(f"z: expected a slice index in [0, {t1.shape[2]}), got {z}")
    a = np.rot90(t1[:, :, z])  # (y, x) with anterior up
    b = np.rot90(tmap[:, :, z])
    a = a / max(float(a.max()), 1e-6)
    return np.stack([a, np.clip(b, 0, 1)]).astype(np.float32)


def _resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    from skimage.transform import resize

    out = resize(np.transpose(img, (1, 2, 0)), (height, width), order=1, anti_aliasing=True,
                 preserve_range=True)
    return np.transpose(out, (2, 0, 1)).astype(np.float32)


def _modalities(base: np.ndarray, modality: str, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Two modalities (fixed-like, moving-like) of the same (C, H, W) base image, each (1, H, W)."""
    from scipy import ndimage

    if modality == "paired":
        # a base that carries both modalities: the luminance of all but the last channel (e.g. a photo)
        # against the last channel (e.g. its disparity map, see stereo_rgbd; or a tissue map, mni152_slice)
        if base.shape[0] < 2:
            raise ValueError(f"modality 'paired': the base image needs >= 2 channels, got {base.shape[0]}")
        photo = base[:-1]
        fixed = to_gray(photo) if photo.shape[0] == 3 else photo.mean(0, keepdims=True)
        return fixed.astype(np.float32), base[-1:].astype(np.float32).copy()
    gray = to_gray(base)[0]
    if modality == "same":
        return gray[None], gray[None].copy()
    if modality == "invert":
        return gray[None], (1.0 - gray)[None]
    if modality == "remap":
        # non-monotonic intensity remapping: a sinusoid of the intensity with a random phase
        freq = rng.uniform(1.1, 1.6)
        phase = rng.uniform(0, 2 * np.pi)
        return gray[None], (0.5 + 0.5 * np.sin(2 * np.pi * freq * gray + phase))[None].astype(np.float32)
    if modality == "edges":
        smooth = ndimage.gaussian_filter(gray, 1.0)
        mag = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))
        mag = mag / max(float(np.percentile(mag, 99.5)), 1e-6)
        return gray[None], np.clip(mag, 0, 1)[None].astype(np.float32)
    if modality == "ihc":
        # haematoxylin stain channel (colour deconvolution) against the luminance image
        from skimage.color import rgb2hed

        rgb = np.repeat(base, 3, 0) if base.shape[0] == 1 else base
        h = rgb2hed(np.transpose(rgb, (1, 2, 0)))[..., 0]
        lo, hi = np.percentile(h, [0.5, 99.5])
        return gray[None], np.clip((h - lo) / max(hi - lo, 1e-6), 0, 1)[None].astype(np.float32)
    if modality == "channels":
        # red channel against an inverted blue channel (RGB vs. "infrared-like" contrast)
        rgb = np.repeat(base, 3, 0) if base.shape[0] == 1 else base
        return rgb[0:1].copy(), (1.0 - rgb[2:3]).astype(np.float32)
    if modality == "chanremap":
        # one colour channel against a non-monotonic remap of another (random pair of channels)
        rgb = np.repeat(base, 3, 0) if base.shape[0] == 1 else base
        a, b = rng.choice(3, size=2, replace=False)
        freq, phase = rng.uniform(1.1, 1.6), rng.uniform(0, 2 * np.pi)
        return rgb[a:a + 1].copy(), (0.5 + 0.5 * np.sin(2 * np.pi * freq * rgb[b:b + 1] + phase)).astype(np.float32)
    raise ValueError(f"unknown modality '{modality}'; expected one of {', '.join(MODALITIES)}")


# ------------------------------------------------------------------------------ deformations
def random_affine(height: int, width: int, rng: np.random.Generator, rotation_deg: float = 8.0,
                  scale: float = 0.08, shear: float = 0.04, translation: float = 0.04) -> np.ndarray:
    """A random (2, 3) pixel affine ``A`` about the image centre (fixed pixel -> moving pixel).

    Rotation uniform in +-``rotation_deg``, log-scale in +-``scale``, shear in +-``shear``,
    translation in +-``translation`` x image size.
    """
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    a = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg))
    sx, sy = np.exp(rng.uniform(-scale, scale, size=2))
    sh = rng.uniform(-shear, shear)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lin = rot @ np.array([[sx, sh], [0.0, sy]])
    t = rng.uniform(-translation, translation, size=2) * np.array([width, height])
    c = np.array([cx, cy])
    offset = c + t - lin @ c
    return np.concatenate([lin, offset[:, None]], axis=1)


def affine_to_flow(affine: np.ndarray, height: int, width: int) -> np.ndarray:
    """(2, 3) or (3, 3) pixel affine (fixed -> moving) -> (2, H, W) displacement ``A p - p``."""
    A = np.asarray(affine, dtype=np.float64)[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    mx = A[0, 0] * xs + A[0, 1] * ys + A[0, 2]
    my = A[1, 0] * xs + A[1, 1] * ys + A[1, 2]
    return np.stack([mx - xs, my - ys]).astype(np.float32)


def random_smooth_flow(height: int, width: int, rms: float, rng: np.random.Generator,
                       control: int = 5) -> np.ndarray:
    """Random smooth (2, H, W) displacement with RMS magnitude ``rms`` pixels.

    Gaussian noise on a ``control x control`` grid, upsampled with cubic splines to full size,
    then scaled so that ``sqrt(mean(dx^2 + dy^2)) == rms``.
    """
    from scipy import ndimage

    if rms <= 0:
        return np.zeros((2, height, width), np.float32)
    coarse = rng.standard_normal((2, control, control)).astype(np.float64)
    flow = np.stack([ndimage.zoom(c, (height / control, width / control), order=3, mode="nearest")
                     for c in coarse])[:, :height, :width]
    flow = flow - flow.mean(axis=(1, 2), keepdims=True)
    cur = np.sqrt(np.mean(np.sum(flow ** 2, axis=0)))
    return (flow * (rms / max(cur, 1e-12))).astype(np.float32)


def _sample_np(img: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return np.stack([ndimage.map_coordinates(c, [ys, xs], order=3, mode="reflect") for c in img]).astype(np.float32)


def _landmarks(gray: np.ndarray, n: int, margin: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` salient points (Harris corners), filled with random points; (n, 2) x, y."""
    from skimage.feature import corner_harris, corner_peaks

    h, w = gray.shape
    pts = np.zeros((0, 2))
    try:
        peaks = corner_peaks(corner_harris(gray.astype(np.float64), sigma=1.5), min_distance=max(3, h // 24),
                             exclude_border=margin, num_peaks=n)
        pts = peaks[:, ::-1].astype(np.float64)
    except Exception:  # pragma: no cover - harris on degenerate images
        pass
    if len(pts) < n:
        extra = rng.uniform([margin, margin], [w - 1 - margin, h - 1 - margin], size=(n - len(pts), 2))
        pts = np.concatenate([pts, extra])
    return pts[:n]


@dataclass
class RegistrationPair:
    """A synthetic pair with its known displacement.

    Attributes:
        fixed: (1, H, W) float32 in [0, 1].
        moving: (1, H, W) float32 in [0, 1].
        flow: (2, H, W) true displacement on the fixed grid (fixed p <-> moving p + flow(p)).
        landmarks_fixed: (N, 2) x, y on the fixed image.
        landmarks_moving: (N, 2) = landmarks_fixed + flow(landmarks_fixed) (exact).
        affine: (2, 3) pixel affine part of the displacement (fixed -> moving), or None.
        name: a short identifier.
    """

    fixed: np.ndarray
    moving: np.ndarray
    flow: np.ndarray
    landmarks_fixed: np.ndarray
    landmarks_moving: np.ndarray
    affine: Optional[np.ndarray] = None
    name: str = "pair"
    info: Dict[str, object] = field(default_factory=dict)


def make_pair(size: Tuple[int, int] = (96, 96), modality: str = "remap", image: str = "camera",
              affine: bool = False, rms: float = 4.0, seed: int = 0, num_landmarks: int = 20,
              affine_kwargs: Optional[dict] = None, control: int = 5, crop: Optional[float] = None,
              name: Optional[str] = None) -> RegistrationPair:
    """Synthesize a multimodal pair from a shipped scikit-image image with a known displacement.

    The displacement is ``u = (A p - p) + s(p)``: an optional random affine ``A`` plus a random
    smooth field ``s`` of RMS ``rms`` pixels. ``fixed(p) = modality_1(base)(p + u(p))`` and
    ``moving = modality_2(base)``, hence warping the moving image with ``u`` reproduces the fixed
    image's geometry exactly. The base image is cropped with a margin, so no border is invented.

    Args:
        size: (H, W) of both images.
        modality: one of ``remap`` (non-monotonic intensity remap), ``edges`` (gradient magnitude),
            ``invert``, ``ihc`` (haematoxylin channel vs luminance), ``channels`` (red vs inverted
            blue), ``same``.
        image: base image name from :data:`SHIPPED_IMAGES`, or a (C, H, W) float array in [0, 1]
            (e.g. :func:`stereo_rgbd`, :func:`mni152_slice` for ``modality="paired"``).
        affine: include a random affine (rotation +-8 deg, scale +-8 %, translation +-4 %).
        rms: RMS magnitude of the smooth part, pixels (0 = none).
        seed: random seed (deformation, crop, landmarks).
        num_landmarks: landmarks (Harris corners of the fixed image, then random points).
        crop: fraction of the base image's shorter side to crop (random position); None = random
            in [0.5, 0.9].
    """
    from scipy import ndimage

    height, width = int(size[0]), int(size[1])
    if height < 16 or width < 16:
        raise ValueError(f"size: expected at least 16x16, got {size}")
    rng = np.random.default_rng(seed)
    if isinstance(image, str):
        base_full = shipped_image(image)
    else:
        base_full = np.asarray(image, dtype=np.float32)
        if base_full.ndim != 3 or min(base_full.shape[1:]) < 16:
            raise ValueError(f"image: expected a shipped image name or a (C, H, W) array, got shape {base_full.shape}")
        image = "array"
    _, bh, bw = base_full.shape
    frac = rng.uniform(0.5, 0.9) if crop is None else float(crop)
    ch = int(min(bh, bw) * frac)
    cw = int(min(bw, ch * width / height))
    y0 = int(rng.integers(0, bh - ch + 1))
    x0 = int(rng.integers(0, bw - cw + 1))
    # base at output resolution with a margin all round so that warped samples stay inside
    pad = 0.25
    py, px = int(ch * pad), int(cw * pad)
    ya, yb = max(0, y0 - py), min(bh, y0 + ch + py)
    xa, xb = max(0, x0 - px), min(bw, x0 + cw + px)
    sy, sx = height / ch, width / cw
    region = _resize(base_full[:, ya:yb, xa:xb], max(2, int(round((yb - ya) * sy))), max(2, int(round((xb - xa) * sx))))
    oy, ox = (y0 - ya) * sy, (x0 - xa) * sx  # output pixel (0, 0) inside region
    mod_fixed, mod_moving = _modalities(region, modality, rng)

    A = random_affine(height, width, rng, **(affine_kwargs or {})) if affine else None
    flow = random_smooth_flow(height, width, rms, rng, control=control)
    if A is not None:
        flow = flow + affine_to_flow(A, height, width)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    fixed = _sample_np(mod_fixed, xs + flow[0] + ox, ys + flow[1] + oy)
    moving = _sample_np(mod_moving, xs + ox, ys + oy)
    fixed, moving = np.clip(fixed, 0, 1), np.clip(moving, 0, 1)

    margin = max(2, int(0.08 * min(height, width)))
    lf = _landmarks(fixed[0], num_landmarks, margin, rng) if num_landmarks > 0 else np.zeros((0, 2))
    # bilinear, as the landmark metric samples flows (so the true flow scores exactly 0)
    disp = np.stack([ndimage.map_coordinates(flow[i].astype(np.float64), [lf[:, 1], lf[:, 0]], order=1,
                                             mode="nearest") for i in range(2)], axis=1)
    lm = lf + disp
    keep = (lm[:, 0] >= 0) & (lm[:, 0] <= width - 1) & (lm[:, 1] >= 0) & (lm[:, 1] <= height - 1)
    return RegistrationPair(fixed=fixed, moving=moving, flow=flow, landmarks_fixed=lf[keep],
                            landmarks_moving=lm[keep], affine=None if A is None else A.astype(np.float64),
                            name=name or f"{image}_{modality}_{seed}",
                            info={"image": image, "modality": modality, "rms": rms, "seed": seed})


def write_pair_folder(out: str, pairs: Sequence[RegistrationPair]) -> str:
    """Write pairs in the pair-folder layout (see module docstring); returns ``out``."""
    for sub in ("fixed", "moving", "landmarks_fixed", "landmarks_moving", "flow"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    for p in pairs:
        save_image(os.path.join(out, "fixed", f"{p.name}.png"), p.fixed)
        save_image(os.path.join(out, "moving", f"{p.name}.png"), p.moving)
        write_landmarks(os.path.join(out, "landmarks_fixed", f"{p.name}.csv"), p.landmarks_fixed)
        write_landmarks(os.path.join(out, "landmarks_moving", f"{p.name}.csv"), p.landmarks_moving)
        np.save(os.path.join(out, "flow", f"{p.name}.npy"), p.flow.astype(np.float32))
    return out


def make_pair_folder(out: str, count: int, size: Tuple[int, int] = (128, 128), seed: int = 0,
                     modalities: Sequence[str] = ("remap", "edges"), affine: bool = False,
                     rms: float = 4.0, images: Sequence[str] = SHIPPED_IMAGES) -> str:
    """Synthesize ``count`` pairs (cycling through ``images`` and ``modalities``) into ``out``."""
    pairs = [make_pair(size, modality=modalities[i % len(modalities)], image=images[i % len(images)],
                       affine=affine, rms=rms, seed=seed + i, name=f"pair_{i:04d}") for i in range(count)]
    return write_pair_folder(out, pairs)


# ------------------------------------------------------------------------------------ datasets
@dataclass
class PairBatch:
    """A batch of registration pairs (what :func:`collate_pairs` returns).

    Attributes:
        fixed: (B, C, H, W) in [0, 1].  moving: (B, C, H, W) in [0, 1].
        flow: (B, 2, H, W) true displacement or None (unknown for real data).
        landmarks_fixed / landmarks_moving: per-sample (N_i, 2) tensors or None.
        names: pair names.
    """

    fixed: torch.Tensor
    moving: torch.Tensor
    flow: Optional[torch.Tensor] = None
    landmarks_fixed: Optional[List[torch.Tensor]] = None
    landmarks_moving: Optional[List[torch.Tensor]] = None
    names: List[str] = field(default_factory=list)

    def to(self, device) -> "PairBatch":
        mv = (lambda t: None if t is None else t.to(device))
        return PairBatch(self.fixed.to(device), self.moving.to(device), mv(self.flow),
                         None if self.landmarks_fixed is None else [mv(t) for t in self.landmarks_fixed],
                         None if self.landmarks_moving is None else [mv(t) for t in self.landmarks_moving],
                         list(self.names))


def collate_pairs(samples: List[dict]) -> PairBatch:
    """Stack samples ``{"fixed", "moving", ["flow"], ["landmarks_fixed", "landmarks_moving"], "name"}``."""
    fixed = torch.stack([torch.as_tensor(s["fixed"]) for s in samples])
    moving = torch.stack([torch.as_tensor(s["moving"]) for s in samples])
    flow = None
    if all(s.get("flow") is not None for s in samples):
        flow = torch.stack([torch.as_tensor(s["flow"]) for s in samples])
    lf = lm = None
    if all(s.get("landmarks_fixed") is not None for s in samples):
        lf = [torch.as_tensor(s["landmarks_fixed"], dtype=torch.float32) for s in samples]
        lm = [torch.as_tensor(s["landmarks_moving"], dtype=torch.float32) for s in samples]
    return PairBatch(fixed, moving, flow, lf, lm, [str(s.get("name", i)) for i, s in enumerate(samples)])


class PairFolderDataset(Dataset):
    """Pairs from a pair folder (``ROOT/fixed``, ``ROOT/moving``, optional landmarks and flow).

    Every fixed image must have a moving image with the same file stem. Images are converted to
    ``channels`` and, when ``height``/``width`` are given, resized (landmarks and flow rescaled).

    Args:
        root: the pair folder.
        height, width: output size (None: keep; then all pairs in a batch must share a size).
        channels: 1 (grey, default) or 3.
    """

    def __init__(self, root: str, height: Optional[int] = None, width: Optional[int] = None,
                 channels: int = 1) -> None:
        self.root = root
        fixed_dir, moving_dir = os.path.join(root, "fixed"), os.path.join(root, "moving")
        if not os.path.isdir(fixed_dir) or not os.path.isdir(moving_dir):
            raise NotADirectoryError(f"{root}: a pair folder needs 'fixed/' and 'moving/' sub-folders")
        fixed = {os.path.splitext(f)[0]: f for f in _list_images(fixed_dir)}
        moving = {os.path.splitext(f)[0]: f for f in _list_images(moving_dir)}
        missing = sorted(set(fixed) - set(moving))
        if missing:
            raise ValueError(f"{root}: {len(missing)} fixed image(s) without a moving image of the same "
                             f"name, e.g. '{missing[0]}'")
        if not fixed:
            raise ValueError(f"{root}: no images in {fixed_dir}")
        self.names = sorted(fixed)
        self._fixed, self._moving = fixed, moving
        self.height, self.width, self.channels = height, width, channels

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, idx: int) -> dict:
        name = self.names[idx]
        fixed = load_image(os.path.join(self.root, "fixed", self._fixed[name]), self.channels)
        moving = load_image(os.path.join(self.root, "moving", self._moving[name]), self.channels)
        _, fh, fw = fixed.shape
        _, mh, mw = moving.shape
        sample = {"name": name}
        lf_path = os.path.join(self.root, "landmarks_fixed", f"{name}.csv")
        lm_path = os.path.join(self.root, "landmarks_moving", f"{name}.csv")
        flow_path = os.path.join(self.root, "flow", f"{name}.npy")
        lf = lm = flow = None
        if os.path.isfile(lf_path) and os.path.isfile(lm_path):
            lf, lm = read_landmarks(lf_path, fh, fw), read_landmarks(lm_path, mh, mw)
            if len(lf) != len(lm):
                raise ValueError(f"{name}: {len(lf)} fixed landmarks but {len(lm)} moving landmarks")
        if os.path.isfile(flow_path):
            flow = np.load(flow_path, allow_pickle=False).astype(np.float32)
            if flow.shape != (2, fh, fw):
                raise ValueError(f"{flow_path}: expected flow of shape (2, {fh}, {fw}), got {flow.shape}")
        H = self.height or fh
        W = self.width or fw
        # fixed-grid pixel scale (align_corners convention: u' = u * (W'-1)/(W-1))
        if (fh, fw) != (H, W) or (mh, mw) != (H, W):
            sfx, sfy = (W - 1) / (fw - 1), (H - 1) / (fh - 1)
            smx, smy = (W - 1) / (mw - 1), (H - 1) / (mh - 1)
            if flow is not None:  # moving coordinate minus fixed coordinate, re-expressed
                ys, xs = np.mgrid[0:fh, 0:fw].astype(np.float32)
                mx, my = (xs + flow[0]) * smx, (ys + flow[1]) * smy
                nx, ny = xs * sfx, ys * sfy
                flow = _resize(np.stack([mx - nx, my - ny]), H, W) if (fh, fw) != (H, W) else np.stack([mx - nx, my - ny])
            fixed, moving = _resize(fixed, H, W), _resize(moving, H, W)
            if lf is not None:
                lf = lf * np.array([sfx, sfy])
                lm = lm * np.array([smx, smy])
        sample.update(fixed=fixed, moving=moving, flow=flow, landmarks_fixed=lf, landmarks_moving=lm)
        return sample


class SyntheticPairDataset(Dataset):
    """On-the-fly synthetic pairs (:func:`make_pair`), deterministic per index and seed."""

    def __init__(self, length: int, size: Tuple[int, int] = (128, 128), seed: int = 0,
                 modalities: Sequence[str] = ("remap", "edges"), affine: bool = False, rms: float = 4.0,
                 images: Sequence[str] = SHIPPED_IMAGES, num_landmarks: int = 20) -> None:
        for m in modalities:
            if m not in MODALITIES:
                raise ValueError(f"modalities: unknown modality '{m}'; expected {', '.join(MODALITIES)}")
        self.length, self.size, self.seed = int(length), tuple(size), int(seed)
        self.modalities, self.affine, self.rms = tuple(modalities), affine, rms
        self.images, self.num_landmarks = tuple(images), num_landmarks

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> dict:
        rng = np.random.default_rng(self.seed * 1_000_003 + idx)
        p = make_pair(self.size, modality=self.modalities[int(rng.integers(len(self.modalities)))],
                      image=self.images[int(rng.integers(len(self.images)))], affine=self.affine,
                      rms=self.rms, seed=int(rng.integers(2 ** 31)), num_landmarks=self.num_landmarks,
                      name=f"synthetic_{idx:06d}")
        return {"name": p.name, "fixed": p.fixed, "moving": p.moving, "flow": p.flow,
                "landmarks_fixed": p.landmarks_fixed, "landmarks_moving": p.landmarks_moving}


class FastSyntheticPairDataset(Dataset):
    """Cheap on-the-fly synthetic pairs in torch, for training learned registration at scale.

    The same recipe as :func:`make_pair` (random crop of a shipped image at 50-90 % of its short
    side, smooth random deformation from a 5x5 control grid upsampled bicubically, fixed = the
    grey photo warped by the deformation, moving = another modality of the unwarped photo), but
    vectorised in torch on pre-loaded images: about 6 ms per 128x128 pair (1 thread) instead of
    ~140 ms for make_pair (scipy cubic resampling, Harris landmarks), so millions of distinct pairs can be
    drawn. Sampling goes through :func:`fmdepth.geometry.sample`. No landmarks (the known flow is
    the supervision); modalities ``remap``, ``edges``, ``invert``, ``same``.

    Each index is deterministic (``seed``, ``idx``); the RMS of the deformation is drawn in
    ``rms * rms_range`` so that the model sees milder and stronger fields than the nominal one.

    Args:
        length: number of indices.
        size: (H, W) of the pairs.
        seed: random seed (use other seeds than evaluation pairs).
        modalities: moving-image modalities to draw from.
        rms: nominal RMS of the deformation, pixels at ``size``.
        images: shipped base images (None: :attr:`DEFAULT_IMAGES`).
        rms_range: (lo, hi) factors applied to ``rms``.

    Example:
        >>> ds = FastSyntheticPairDataset(10, size=(64, 64), images=("camera",))
        >>> s = ds[3]; s["fixed"].shape, s["moving"].shape, s["flow"].shape
        ((1, 64, 64), (1, 64, 64), (2, 64, 64))
    """

    FAST_MODALITIES = ("remap", "edges", "invert", "same")  # repeat one to draw it more often
    # the shipped images without the motorcycle: the learned model's published figures were trained on this set
    DEFAULT_IMAGES = tuple(n for n in SHIPPED_IMAGES if n != "motorcycle_left")

    def __init__(self, length: int, size: Tuple[int, int] = (128, 128), seed: int = 0,
                 modalities: Sequence[str] = ("remap", "edges"), rms: float = 4.0,
                 images: Optional[Sequence[str]] = None, rms_range: Tuple[float, float] = (0.5, 1.5),
                 control: int = 5) -> None:
        for m in modalities:
            if m not in self.FAST_MODALITIES:
                raise ValueError(f"modalities: '{m}' is not available for fast synthesis; expected "
                                 f"{', '.join(self.FAST_MODALITIES)}")
        if not modalities or (images is not None and not images):
            raise ValueError("modalities and images must not be empty")
        self.length, self.size, self.seed = int(length), (int(size[0]), int(size[1])), int(seed)
        self.modalities, self.rms, self.rms_range, self.control = tuple(modalities), float(rms), rms_range, control
        self.images = tuple(images) if images is not None else self.DEFAULT_IMAGES
        h, w = self.size
        self._bases = []
        for name in self.images:  # grey, pre-shrunk so that a 90 % crop is ~1.3x the output size
            g = torch.from_numpy(to_gray(shipped_image(name)))[None]  # (1, 1, Hb, Wb)
            short = min(g.shape[-2:])
            f = min(1.0, 1.3 * max(h, w) / (0.9 * short))
            if f < 1.0:
                g = torch.nn.functional.interpolate(g, scale_factor=f, mode="bilinear", align_corners=False,
                                                    antialias=True)
            self._bases.append(g.clamp(0, 1).contiguous())

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> dict:
        import torch.nn.functional as F

        from fmdepth.geometry import sample

        if not 0 <= idx < self.length:
            raise IndexError(idx)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(idx))
        u = lambda lo, hi: float(lo + (hi - lo) * torch.rand((), generator=gen))  # noqa: E731
        h, w = self.size
        bi = int(torch.randint(len(self._bases), (), generator=gen))
        base = self._bases[bi]
        bh, bw = base.shape[-2:]
        rms = self.rms * u(*self.rms_range)
        # smooth field: Gaussian noise on a control grid, bicubic upsampling, zero mean, RMS = rms
        flow = F.interpolate(torch.randn(1, 2, self.control, self.control, generator=gen), size=(h, w),
                             mode="bicubic", align_corners=True)
        flow = flow - flow.mean(dim=(2, 3), keepdim=True)
        flow = flow * (rms / flow.pow(2).sum(1).mean().sqrt().clamp_min(1e-12))
        # crop: fraction of the base's short side, positioned so that the deformation stays inside
        frac = u(0.5, 0.9)
        ch = min(bh, bw) * frac
        s = ch / h  # base pixels per output pixel
        cw = min(float(bw), s * w)
        s = min(s, cw / w)
        m = float(flow.abs().max()) * s + 1.0
        y0 = u(min(m, (bh - 1 - s * (h - 1)) / 2), max(min(m, (bh - 1 - s * (h - 1)) / 2), bh - 1 - s * (h - 1) - m))
        x0 = u(min(m, (bw - 1 - s * (w - 1)) / 2), max(min(m, (bw - 1 - s * (w - 1)) / 2), bw - 1 - s * (w - 1) - m))
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        grid = torch.stack([xs, ys], -1)[None]  # (1, h, w, 2) output pixel (x, y)
        offset = torch.tensor([x0, y0])
        pix_m = offset + s * grid
        pix_f = offset + s * (grid + flow.permute(0, 2, 3, 1))
        both = sample(torch.cat([base, base]), torch.cat([pix_f, pix_m]), mode="bicubic", padding_mode="border")[0]
        both = both.clamp(0, 1)
        fixed, gray_m = both[:1], both[1:]
        mod = self.modalities[int(torch.randint(len(self.modalities), (), generator=gen))]
        if mod == "remap":
            freq, phase = u(1.1, 1.6), u(0, 2 * np.pi)
            moving = 0.5 + 0.5 * torch.sin(2 * np.pi * freq * gray_m + phase)
        elif mod == "edges":
            k = torch.exp(-0.5 * torch.arange(-3, 4, dtype=torch.float32) ** 2)
            k = k / k.sum()
            sm = F.conv2d(F.pad(gray_m, (3, 3, 3, 3), mode="replicate"), (k[:, None] * k[None])[None, None])
            sob = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
            pad = F.pad(sm, (1, 1, 1, 1), mode="replicate")
            gx = F.conv2d(pad, sob[None, None])
            gy = F.conv2d(pad, sob.t()[None, None])
            mag = torch.sqrt(gx ** 2 + gy ** 2)
            moving = (mag / torch.quantile(mag.flatten(), 0.995).clamp_min(1e-6)).clamp(0, 1)
        elif mod == "invert":
            moving = 1.0 - gray_m
        else:
            moving = gray_m
        return {"name": f"fast_synthetic_{idx:07d}", "fixed": fixed[0].contiguous(),
                "moving": moving[0].contiguous(), "flow": flow[0].contiguous()}


# -------------------------------------------------------------------------------------- videos
def read_frames(path: str, channels: Optional[int] = None):
    """Yield float32 (C, H, W) frames from a folder of images (sorted by name) or a video file."""
    if os.path.isdir(path):
        names = _list_images(path)
        if not names:
            raise ValueError(f"{path}: no image frames ({', '.join(IMAGE_EXTS)})")
        for n in names:
            yield load_image(os.path.join(path, n), channels)
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
                    frame = _resize(frame, height, width)
                store.append(frame)
        shapes = {f.shape for f in self.fixed_frames + self.moving_frames}
        if len(shapes) > 1:
            raise ValueError(f"frames of {fixed} / {moving} have different sizes {sorted(shapes)}; "
                             f"set data.height/data.width to resample them")

    def __len__(self) -> int:
        return len(self.fixed_frames)

    def __getitem__(self, idx: int) -> dict:
        return {"name": f"frame_{idx:06d}", "fixed": self.fixed_frames[idx], "moving": self.moving_frames[idx]}
