"""A real image and an affine-warped, colour-remapped copy of itself, with the true mapping
(test and benchmark data for sparse correspondence; scikit-image sample images, no downloads)."""
from __future__ import annotations

import math
from typing import Callable, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F


def affine_colour_pair(size: int = 224, angle_deg: float = 8.0, scale: float = 1.08,
                       shift: Sequence[float] = (4.0, -3.0), image: str = "astronaut",
                       gamma: float = 0.7, gain: Sequence[float] = (0.8, 1.1, 0.9),
                       offset: Sequence[float] = (0.1, -0.05, 0.05)
                       ) -> Tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """(a, b, b_to_a): a, b (3, size, size) in [0, 1]; ``b_to_a`` maps (N, 2) (x, y) of b to a.

    ``b(p) = remap(a(M p))``: M rotates by ``angle_deg`` and scales by ``scale`` about the centre,
    then shifts by ``shift`` pixels; remap = gamma, per-channel gain and offset. Both images are
    central crops of a larger version, so b has no empty border.
    """
    import skimage.data

    from fmdepth.geometry import affine_warp

    arr = np.asarray(getattr(skimage.data, image)())
    img = torch.from_numpy(arr.astype(np.float32) / 255.0)
    img = img[None].expand(3, -1, -1) if img.dim() == 2 else img.permute(2, 0, 1)[:3]
    big_side = int(size * 10 / 7)
    big = F.interpolate(img[None], size=(big_side, big_side), mode="bilinear", align_corners=False,
                        antialias=True)
    ang = math.radians(angle_deg)
    R = torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]]) * scale
    c = torch.tensor([(big_side - 1) / 2.0] * 2)
    t = c - R @ c + torch.tensor([float(s) for s in shift])
    warped, _ = affine_warp(big, torch.cat([R, t[:, None]], 1)[None])
    o = (big_side - size) // 2
    a = big[0, :, o:o + size, o:o + size].clamp(0, 1)
    b = warped[0, :, o:o + size, o:o + size].clamp(0, 1)
    b = (b ** gamma * torch.tensor(gain).view(3, 1, 1) + torch.tensor(offset).view(3, 1, 1)).clamp(0, 1)

    def b_to_a(points_b: torch.Tensor) -> torch.Tensor:
        return (points_b + o) @ R.T + t - o

    return a.contiguous(), b.contiguous(), b_to_a
