"""Base images and imaging modalities of the synthetic registration pairs (the one recipe per modality).

Base images are real photographs and microscopy images that ship inside scikit-image (no
download), :func:`stereo_rgbd` (photo + disparity) and :func:`mni152_slice` (brain T1 + tissue
map, from nilearn). A *modality* turns one base image into two images of the same scene with
different contrasts, (fixed-like, moving-like), each (1, H, W): :data:`MODALITIES` names them
and :func:`modality_images` makes them, in torch. The random parameters of a recipe (phase,
frequency, channels) are drawn from the caller's numpy or torch generator
(:func:`fmdepth.data.warps.uniform`).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .media import image_to_chw, to_gray
from .warps import Rng, uniform

# scikit-image images that ship with the wheel (no pooch download needed in skimage 0.26).
SHIPPED_IMAGES = ("camera", "astronaut", "coffee", "chelsea", "immunohistochemistry", "retina",
                  "coins", "moon", "hubble_deep_field", "rocket", "motorcycle_left", "page")
# the modality registry: fmdepth.config and the datasets ask it
MODALITIES = ("remap", "edges", "invert", "ihc", "channels", "chanremap", "paired", "same")

__all__ = ["SHIPPED_IMAGES", "MODALITIES", "shipped_image", "stereo_rgbd", "mni152_slice", "modality_images",
           "gray_tensor", "remap", "edge_magnitude"]


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
    :func:`fmdepth.data.pairs.make_pair` with ``modality="paired"`` (grey photo vs disparity).
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
    anterior to posterior (the slice is shown with the nose up). For
    :func:`fmdepth.data.pairs.make_pair` with ``modality="paired"`` (T1 vs tissue map).

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


# ---------------------------------------------------------------------------------- recipes
def gray_tensor(img: torch.Tensor) -> torch.Tensor:
    """(3, H, W) CPU tensor -> (1, H, W) luminance by :func:`fmdepth.data.media.to_gray`; (1, H, W) unchanged."""
    return img if img.shape[0] == 1 else torch.from_numpy(to_gray(img.numpy()))


def remap(x: torch.Tensor, freq: float, phase: float) -> torch.Tensor:
    """Non-monotonic intensity remap ``0.5 + 0.5 sin(2 pi freq x + phase)`` of (C, H, W) in [0, 1]."""
    return 0.5 + 0.5 * torch.sin(2 * np.pi * freq * x + phase)


def _pad_symmetric(x: torch.Tensor, p: int) -> torch.Tensor:
    """Pad (C, H, W) by ``p`` on every side, mirroring about the edge (d c b a | a b c d)."""
    def idx(n: int) -> torch.Tensor:
        j = torch.arange(-p, n + p)
        j = torch.where(j < 0, -j - 1, j)
        return torch.where(j >= n, 2 * n - 1 - j, j)

    return x[:, idx(x.shape[1])][:, :, idx(x.shape[2])]


def _correlate(x: torch.Tensor, ky: torch.Tensor, kx: torch.Tensor) -> torch.Tensor:
    """Separable correlation of (1, H, W) with odd 1-D kernels, symmetric borders."""
    r = len(ky) // 2
    k = (ky[:, None] * kx[None]).to(x.dtype)[None, None]
    return F.conv2d(_pad_symmetric(x, r)[None], k)[0]


def edge_magnitude(gray: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude of (1, H, W): Gaussian (sigma 1, radius 4), Sobel, / its 99.5th percentile, clipped to [0, 1]."""
    g = torch.exp(-0.5 * torch.arange(-4, 5, dtype=torch.float64) ** 2)
    g = g / g.sum()
    smooth = _correlate(gray, g, g)
    d, s = torch.tensor([-1.0, 0.0, 1.0]), torch.tensor([1.0, 2.0, 1.0])
    mag = torch.hypot(_correlate(smooth, d, s), _correlate(smooth, s, d))
    return (mag / torch.quantile(mag.flatten(), 0.995).clamp_min(1e-6)).clamp(0, 1)


def _haematoxylin(rgb: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB -> (H, W) haematoxylin stain density (colour deconvolution, skimage's rgb2hed)."""
    from skimage.color import hed_from_rgb

    od = torch.log(rgb.clamp_min(1e-6)) / np.log(1e-6)  # (3, H, W)
    return torch.einsum("chw,c->hw", od, torch.as_tensor(hed_from_rgb[:, 0], dtype=rgb.dtype)).clamp_min(0)


def _rgb(base: torch.Tensor) -> torch.Tensor:
    return base.expand(3, -1, -1) if base.shape[0] == 1 else base


def modality_images(base: torch.Tensor, modality: str, rng: Rng) -> Tuple[torch.Tensor, torch.Tensor]:
    """Two modalities (fixed-like, moving-like) of the same (C, H, W) base image, each (1, H, W).

    ``remap``: grey vs a sinusoidal remap of grey (random frequency in [1.1, 1.6), phase);
    ``edges``: grey vs its gradient magnitude; ``invert``: grey vs 1 - grey; ``ihc``: grey vs the
    haematoxylin stain channel (0.5-99.5th percentile); ``channels``: red vs inverted blue;
    ``chanremap``: one colour channel vs a remap of another (random pair); ``paired``: the grey
    of all but the last channel vs the last channel (:func:`stereo_rgbd`, :func:`mni152_slice`);
    ``same``: grey vs grey.

    Raises:
        ValueError: unknown modality, or ``paired`` with a one-channel base.
    """
    if modality == "paired":
        if base.shape[0] < 2:
            raise ValueError(f"modality 'paired': the base image needs >= 2 channels, got {base.shape[0]}")
        photo = base[:-1]
        fixed = gray_tensor(photo) if photo.shape[0] == 3 else photo.mean(0, keepdim=True)
        return fixed, base[-1:].clone()
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality '{modality}'; expected one of {', '.join(MODALITIES)}")
    gray = gray_tensor(base)
    if modality == "same":
        return gray, gray.clone()
    if modality == "invert":
        return gray, 1.0 - gray
    if modality == "remap":
        freq = uniform(rng, 1.1, 1.6)
        return gray, remap(gray, freq, uniform(rng, 0, 2 * np.pi))
    if modality == "edges":
        return gray, edge_magnitude(gray)
    if modality == "ihc":
        h = _haematoxylin(_rgb(base))
        lo, hi = torch.quantile(h.flatten(), torch.tensor([0.005, 0.995], dtype=h.dtype)).tolist()
        return gray, ((h - lo) / max(hi - lo, 1e-6)).clamp(0, 1)[None]
    rgb = _rgb(base)
    if modality == "channels":
        return rgb[0:1].clone(), 1.0 - rgb[2:3]
    # chanremap
    if isinstance(rng, torch.Generator):
        a, b = torch.randperm(3, generator=rng)[:2].tolist()
    else:
        a, b = (int(i) for i in rng.choice(3, size=2, replace=False))
    freq = uniform(rng, 1.1, 1.6)
    return rgb[a:a + 1].clone(), remap(rgb[b:b + 1], freq, uniform(rng, 0, 2 * np.pi))
