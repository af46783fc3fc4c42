"""Synthetic multimodal registration pairs with a known displacement.

Built from real photographs and microscopy images that ship inside scikit-image (no download,
:mod:`fmdepth.data.modalities`): the fixed image is one *modality* of a base image warped by a
known random affine and/or smooth deformation (:mod:`fmdepth.data.warps`), the moving image
another modality of the unwarped base, so the true displacement is known at every pixel. Every
image is resampled by :func:`fmdepth.geometry.sample` (bicubic, ``align_corners=True``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from fmdepth.geometry import resize_image, sample

from .media import to_gray
from .modalities import MODALITIES, SHIPPED_IMAGES, modality_images, shipped_image
from .pair_io import resize_array, save_image, write_landmarks
from .warps import random_smooth_flow, random_warp, uniform


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
    region = resize_array(base_full[:, ya:yb, xa:xb], max(2, int(round((yb - ya) * sy))),
                          max(2, int(round((xb - xa) * sx))))
    oy, ox = (y0 - ya) * sy, (x0 - xa) * sx  # output pixel (0, 0) inside region
    mod_fixed, mod_moving = modality_images(torch.from_numpy(region), modality, rng)

    flow, A = random_warp(height, width, rng, rms, affine=(affine_kwargs or {}) if affine else None,
                          control=control)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    pix = torch.stack([xs + ox, ys + oy], -1)[None]  # (1, H, W, 2) output pixel in the region
    fixed = sample(mod_fixed[None], pix + flow.permute(1, 2, 0)[None], mode="bicubic", padding_mode="border")[0]
    moving = sample(mod_moving[None], pix, mode="bicubic", padding_mode="border")[0]
    fixed, moving = fixed[0].clamp(0, 1).numpy(), moving[0].clamp(0, 1).numpy()

    margin = max(2, int(0.08 * min(height, width)))
    lf = _landmarks(fixed[0], num_landmarks, margin, rng) if num_landmarks > 0 else np.zeros((0, 2))
    # bilinear, as the landmark metric samples flows (so the true flow scores exactly 0)
    at = torch.from_numpy(lf).view(1, 1, -1, 2)
    lm = lf + sample(flow.double()[None], at, padding_mode="border")[0][0, :, 0].numpy().T
    keep = (lm[:, 0] >= 0) & (lm[:, 0] <= width - 1) & (lm[:, 1] >= 0) & (lm[:, 1] <= height - 1)
    return RegistrationPair(fixed=fixed, moving=moving, flow=flow.numpy(), landmarks_fixed=lf[keep],
                            landmarks_moving=lm[keep], affine=A,
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
    side, smooth random deformation from :func:`fmdepth.data.warps.random_smooth_flow`, fixed =
    the grey photo warped by the deformation, moving = another modality of the unwarped photo by
    :func:`fmdepth.data.modalities.modality_images`), but on pre-loaded, pre-shrunk grey images
    and without landmark detection: about 1.5 ms per 128x128 pair (1 thread) instead of ~37 ms
    for make_pair, so millions of distinct pairs can be drawn. Sampling goes through
    :func:`fmdepth.geometry.sample`. No landmarks (the known flow is the supervision); modalities
    ``remap``, ``edges``, ``invert``, ``same``.

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
                g = resize_image(g, (int(g.shape[-2] * f), int(g.shape[-1] * f)))
            self._bases.append(g.clamp(0, 1).contiguous())

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> dict:
        if not 0 <= idx < self.length:
            raise IndexError(idx)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(idx))
        u = lambda lo, hi: uniform(gen, lo, hi)  # noqa: E731
        h, w = self.size
        bi = int(torch.randint(len(self._bases), (), generator=gen))
        base = self._bases[bi]
        bh, bw = base.shape[-2:]
        rms = self.rms * u(*self.rms_range)
        flow = random_smooth_flow(h, w, rms, gen, control=self.control)[None]  # (1, 2, h, w)
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
        fixed, gray_m = both[0], both[1]  # (1, h, w) each
        mod = self.modalities[int(torch.randint(len(self.modalities), (), generator=gen))]
        _, moving = modality_images(gray_m, mod, gen)
        return {"name": f"fast_synthetic_{idx:07d}", "fixed": fixed.contiguous(),
                "moving": moving.contiguous(), "flow": flow[0].contiguous()}


