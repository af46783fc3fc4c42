"""Training pairs of the semantic aligner, and the typed batch they make.

* :class:`WarpedPairDataset`: real images shipped with scikit-image (no downloads), randomly
  cropped, then warped by a random affine map plus a smooth deformation (a coarse random
  displacement grid, bicubically upsampled) with a photometric change; each pair is a pure
  function of (seed, index). :data:`TRAINING_IMAGES` are warped for training,
  :data:`VALIDATION_IMAGES` (other pictures) for held-out validation.
* :class:`ImagePairDataset`: real pairs (with optional keypoints) listed in a folder's
  ``pairs.txt``; no true field.

Both return :class:`SemanticSample` items; :func:`collate_semantic` stacks them into a
:class:`SemanticBatch`:

===============  ================================================================================
image_a/image_b  (B, 3, H, W) in [0, 1]
flow             (B, 2, H, W) pixels, the true field on A's grid: ``A(p) = B(p + flow(p))``, or None
valid            (B, 1, H, W) bool, ``p + flow(p)`` inside B, or None (with ``flow``)
keypoints_a      (B, N, 2) (x, y) pixels of A
keypoints_b      (B, N, 2) their true positions in B
keypoints_valid  (B, N) bool, which keypoints count
===============  ================================================================================
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, fields
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from fmdepth.geometry import flow_warp
from fmdepth.geometry.points import sample_at

from .pairs import load_image
from .warps import random_warp_flow  # noqa: F401 (re-exported: the pairs' warp)

# skimage.data images shipped with the package (no download needed)
TRAINING_IMAGES = ("astronaut", "chelsea", "coffee", "immunohistochemistry", "hubble_deep_field",
                   "camera", "coins", "moon", "clock", "brick", "gravel", "grass", "colorwheel")
VALIDATION_IMAGES = ("rocket", "cell", "page", "text", "retina")  # not "cat": the same picture as "chelsea"


@dataclass
class SemanticSample:
    """One pair (tensors without the batch dimension); see the module docstring."""

    image_a: Tensor  # (3, H, W)
    image_b: Tensor  # (3, H, W)
    flow: Optional[Tensor]  # (2, H, W)
    valid: Optional[Tensor]  # (1, H, W) bool
    keypoints_a: Tensor  # (N, 2)
    keypoints_b: Tensor  # (N, 2)
    keypoints_valid: Tensor  # (N,) bool


@dataclass
class SemanticBatch:
    """A batch of pairs (see the module docstring for every field's shape)."""

    image_a: Tensor
    image_b: Tensor
    flow: Optional[Tensor]
    valid: Optional[Tensor]
    keypoints_a: Tensor
    keypoints_b: Tensor
    keypoints_valid: Tensor

    def to(self, device, non_blocking: bool = False) -> "SemanticBatch":
        """A copy with every tensor on ``device``."""
        return SemanticBatch(**{f.name: None if getattr(self, f.name) is None else
                                getattr(self, f.name).to(device, non_blocking=non_blocking)
                                for f in fields(self)})

    def pin_memory(self) -> "SemanticBatch":
        """A copy in pinned memory (``DataLoader(pin_memory=True)``)."""
        return SemanticBatch(**{f.name: None if getattr(self, f.name) is None else
                                getattr(self, f.name).pin_memory() for f in fields(self)})


def collate_semantic(samples: Sequence[SemanticSample]) -> SemanticBatch:
    """Stack :class:`SemanticSample` items into a :class:`SemanticBatch` (``flow``/``valid``
    stay None when the samples have none)."""
    if not samples:
        raise ValueError("collate_semantic: no samples")
    out = {}
    for f in fields(SemanticSample):
        values = [getattr(s, f.name) for s in samples]
        if any(v is None for v in values):
            if not all(v is None for v in values):
                raise ValueError(f"collate_semantic: '{f.name}' is missing in some samples only")
            out[f.name] = None
        else:
            out[f.name] = torch.stack(values)
    return SemanticBatch(**out)


def load_skimage_images(names: Sequence[str], max_side: int = 256) -> List[torch.Tensor]:
    """scikit-image's shipped sample images -> list of (3, h, w) float tensors in [0, 1]
    (grayscale replicated, alpha dropped, longer side at most ``max_side``)."""
    import skimage.data

    out = []
    for name in names:
        fn = getattr(skimage.data, name, None)
        if fn is None or not callable(fn):
            raise ValueError(f"'{name}' is not a scikit-image sample image (skimage.data.{name})")
        try:
            arr = np.asarray(fn())
        except Exception as exc:  # images that need a download (pooch) are not usable offline
            raise ValueError(f"skimage.data.{name} cannot be loaded offline ({type(exc).__name__}); "
                             f"use one shipped with scikit-image, e.g. {', '.join(TRAINING_IMAGES[:4])}") from exc
        t = torch.from_numpy(arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0))
        t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
        t = t[:3] if t.shape[0] >= 3 else t.expand(3, -1, -1)
        s = max_side / max(t.shape[-2:])
        if s < 1:
            size = (max(1, round(t.shape[1] * s)), max(1, round(t.shape[2] * s)))
            t = F.interpolate(t[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        out.append(t.contiguous())
    return out


class WarpedPairDataset(Dataset):
    """Pairs (A, B) of the same real image related by a known random warp, made on the fly.

    B is a random crop of a scikit-image sample image resized to (height, width); A is B warped by
    a random smooth field ``flow`` (affine + deformation): ``A(p) = B(p + flow(p))``, followed by
    a random photometric change (per-channel gain/offset and gamma). Each pair depends only on
    (seed, index).

    Returns :class:`SemanticSample` items: ``image_a``, ``image_b`` (3, H, W); ``flow``
    (2, H, W) pixels (A grid -> B); ``valid`` (1, H, W) bool (``p + flow(p)`` inside B);
    ``keypoints_a`` (N, 2) random (x, y) pixels of A, ``keypoints_b`` (N, 2) their true
    positions in B, ``keypoints_valid`` (N,) bool.
    """

    def __init__(self, images: Sequence[str] = TRAINING_IMAGES, height: int = 64, width: int = 64,
                 length: int = 2000, seed: int = 0, num_keypoints: int = 20, max_rotation: float = 20.0,
                 max_scale: float = 1.2, max_translation: float = 0.1, deform: float = 2.0,
                 photometric: float = 0.2) -> None:
        if height % 8 or width % 8 or height < 16 or width < 16:
            raise ValueError(f"height and width must be multiples of 8 and >= 16, got {height}x{width}")
        if length < 1 or num_keypoints < 1:
            raise ValueError(f"length and num_keypoints must be >= 1, got {length}, {num_keypoints}")
        if not images:
            raise ValueError("images: need at least one scikit-image sample image name")
        self.names = list(images)
        self.images = load_skimage_images(self.names, max_side=4 * max(height, width))
        self.height, self.width, self.length, self.seed = height, width, length, seed
        self.num_keypoints = num_keypoints
        self.warp_args = dict(max_rotation=max_rotation, max_scale=max_scale,
                              max_translation=max_translation, deform=deform)
        self.photometric = photometric

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> SemanticSample:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} pairs")
        rng = np.random.default_rng([self.seed, index])
        H, W = self.height, self.width
        src = self.images[int(rng.integers(len(self.images)))]
        h, w = src.shape[-2:]
        side = min(h, w)
        crop = int(rng.uniform(0.35, 0.8) * side)
        crop_h, crop_w = max(16, int(crop * H / max(H, W))), max(16, int(crop * W / max(H, W)))
        y0, x0 = int(rng.integers(0, h - crop_h + 1)), int(rng.integers(0, w - crop_w + 1))
        b = F.interpolate(src[None, :, y0:y0 + crop_h, x0:x0 + crop_w], size=(H, W), mode="bilinear",
                          align_corners=False, antialias=True)[0].clamp(0, 1)
        flow = random_warp_flow(H, W, rng, **self.warp_args)
        a, valid = flow_warp(b[None], flow[None], padding_mode="border")
        a, valid = a[0], valid[0]
        if self.photometric > 0:
            p = self.photometric
            gain = torch.from_numpy(rng.uniform(1 - p, 1 + p, 3)).float().view(3, 1, 1)
            offset = torch.from_numpy(rng.uniform(-p / 2, p / 2, 3)).float().view(3, 1, 1)
            gamma = float(math.exp(rng.uniform(-p, p)))
            a = (a.clamp(0, 1) ** gamma * gain + offset).clamp(0, 1)
        n = self.num_keypoints
        cand = torch.from_numpy(rng.uniform(0, 1, (4 * n, 2))).float() * torch.tensor([W - 1.0, H - 1.0])
        cand_b = cand + sample_at(flow[None], cand[None])[0]  # true positions in B
        ok = ((cand_b >= 0) & (cand_b <= torch.tensor([W - 1.0, H - 1.0]))).all(1)
        order = torch.argsort((~ok).int(), stable=True)[:n]  # candidates inside B first
        kp_a, kp_b, ok = cand[order], cand_b[order], ok[order]
        return SemanticSample(a.contiguous(), b.contiguous(), flow, valid, kp_a, kp_b, ok)


class ImagePairDataset(Dataset):
    """Real pairs from a folder: ``<root>/pairs.txt`` lines ``A_path B_path [kp_file]``, paths
    relative to ``root``; an optional keypoint file has one ``xa ya xb yb`` line per keypoint.

    Returns :class:`SemanticSample` items like :class:`WarpedPairDataset` with ``flow`` and
    ``valid`` None (no ground-truth field); images resized to (height, width) (grayscale
    replicated to three channels, with a warning) and keypoints scaled alike (pixel centres).
    """

    def __init__(self, root: str, height: int = 64, width: int = 64, num_keypoints: int = 20) -> None:
        listing = os.path.join(root, "pairs.txt")
        if not os.path.isfile(listing):
            raise FileNotFoundError(f"{listing} not found (expected lines 'A_path B_path [keypoints.txt]')")
        self.root, self.height, self.width, self.num_keypoints = root, height, width, num_keypoints
        self.entries = []
        with open(listing, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                parts = line.split()
                if not parts or parts[0].startswith("#"):
                    continue
                if len(parts) not in (2, 3):
                    raise ValueError(f"{listing}:{lineno}: expected 'A_path B_path [keypoints.txt]', got {line.strip()!r}")
                self.entries.append(parts)
        if not self.entries:
            raise ValueError(f"{listing}: no pairs listed")

    def __len__(self) -> int:
        return len(self.entries)

    def _load(self, rel: str) -> Tuple[torch.Tensor, Tuple[int, int]]:
        img = torch.from_numpy(load_image(os.path.join(self.root, rel)))  # (1 or 3, h, w)
        if img.shape[0] == 1:
            warnings.warn(f"{rel}: grayscale image, replicated to 3 channels", UserWarning, stacklevel=2)
            img = img.expand(3, -1, -1)
        size = tuple(img.shape[-2:])
        img = F.interpolate(img[None], size=(self.height, self.width), mode="bilinear", align_corners=False,
                            antialias=True)[0]
        return img.clamp(0, 1), size

    def __getitem__(self, index: int) -> SemanticSample:
        entry = self.entries[index]
        a, (ha, wa) = self._load(entry[0])
        b, (hb, wb) = self._load(entry[1])
        n = self.num_keypoints
        kp_a, kp_b, ok = torch.zeros(n, 2), torch.zeros(n, 2), torch.zeros(n, dtype=torch.bool)
        if len(entry) == 3:
            path = os.path.join(self.root, entry[2])
            pts = np.loadtxt(path, ndmin=2, dtype=np.float64)
            if pts.shape[1] != 4:
                raise ValueError(f"{path}: expected lines 'xa ya xb yb', got {pts.shape[1]} columns")
            pts = torch.from_numpy(pts[:n]).float()
            m = pts.shape[0]
            sc = lambda p, w, h: torch.stack([(p[:, 0] + 0.5) * self.width / w - 0.5,
                                              (p[:, 1] + 0.5) * self.height / h - 0.5], 1)
            kp_a[:m], kp_b[:m], ok[:m] = sc(pts[:, :2], wa, ha), sc(pts[:, 2:], wb, hb), True
        return SemanticSample(a, b, None, None, kp_a, kp_b, ok)
