"""Photometric augmentation shared by every frame of a sample (network input only).

The same colour jitter -- brightness, contrast, saturation factors in [0.8, 1.2] and a hue
shift in [-0.1, 0.1], applied in a random order -- is drawn once per sample and applied to
every frame's network input, so the frames stay photometrically consistent with each other;
the loss always sees the un-jittered images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

BRIGHTNESS = (0.8, 1.2)
CONTRAST = (0.8, 1.2)
SATURATION = (0.8, 1.2)
HUE = (-0.1, 0.1)


@dataclass
class ColorJitterParams:
    order: List[int]  # permutation of 0..3 (brightness, contrast, saturation, hue)
    brightness: float
    contrast: float
    saturation: float
    hue: float

    @classmethod
    def sample(cls, generator: Optional[torch.Generator] = None) -> "ColorJitterParams":
        """Draw parameters from torch's RNG (seeded per DataLoader worker)."""
        u = torch.rand(4, generator=generator).tolist()
        order = torch.randperm(4, generator=generator).tolist()
        lerp = lambda r, t: r[0] + (r[1] - r[0]) * t  # noqa: E731
        return cls(order, lerp(BRIGHTNESS, u[0]), lerp(CONTRAST, u[1]), lerp(SATURATION, u[2]), lerp(HUE, u[3]))

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """Jitter one image (3, H, W) or a stack (..., 3, H, W) in [0, 1]; returns a new tensor.

        Same operations as torchvision's ColorJitter (brightness scales, contrast blends with
        the mean grey level of each image, saturation blends with the greyscale image, hue
        rotates the HSV hue), written with plain tensor ops.
        """
        if image.dim() < 3 or image.shape[-3] != 3:
            raise ValueError(f"image: expected (..., 3, H, W), got {tuple(image.shape)}")
        out = image
        for i in self.order:
            if i == 0:
                out = (out * self.brightness).clamp(0.0, 1.0)
            elif i == 1:
                mean = _grey(out).mean(dim=(-2, -1), keepdim=True)
                out = (self.contrast * out + (1.0 - self.contrast) * mean).clamp(0.0, 1.0)
            elif i == 2:
                out = (self.saturation * out + (1.0 - self.saturation) * _grey(out)).clamp(0.0, 1.0)
            else:
                out = adjust_hue(out, self.hue)
        return out


def _grey(image: torch.Tensor) -> torch.Tensor:
    r, g, b = image.unbind(-3)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def adjust_hue(image: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the HSV hue of ``image`` (..., 3, H, W) in [0, 1] by ``shift`` (fraction of a turn)."""
    if not -0.5 <= shift <= 0.5:
        raise ValueError(f"shift must be in [-0.5, 0.5], got {shift}")
    r, g, b = image.unbind(-3)
    maxc, _ = image.max(dim=-3)
    minc, _ = image.min(dim=-3)
    delta = maxc - minc
    sat = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    dc = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / dc, (maxc - g) / dc, (maxc - b) / dc
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    hue = torch.remainder(hue + shift, 1.0)
    h6 = hue * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    sector = sector.long() % 6
    v = maxc
    p = v * (1.0 - sat)
    q = v * (1.0 - sat * f)
    t = v * (1.0 - sat * (1.0 - f))
    idx = sector.unsqueeze(0)
    pick = lambda *c: torch.gather(torch.stack(c), 0, idx)[0]  # noqa: E731
    out = torch.stack([pick(v, q, p, p, t, v), pick(t, v, v, q, p, p), pick(p, p, t, v, v, q)], dim=-3)
    return out.clamp(0.0, 1.0)


def flip_intrinsics(K: torch.Tensor, width: int) -> torch.Tensor:
    """K of the horizontally mirrored image of width ``width``: cx' = W - 1 - cx (pixel centres)."""
    K = K.clone()
    K[..., 0, 2] = (width - 1) - K[..., 0, 2]
    return K


def level_sizes(height: int, width: int, num_scales: int) -> List[Tuple[int, int]]:
    return [(height // 2 ** s, width // 2 ** s) for s in range(num_scales)]
