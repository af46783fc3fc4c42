"""A real image and an affine-warped, colour-remapped copy of itself, with the true mapping
(test and benchmark data for sparse correspondence; scikit-image sample images, no downloads)."""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import torch


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

    from fmdepth.data.media import image_to_chw
    from fmdepth.data.warps import centred_affine
    from fmdepth.geometry import affine_warp, resize_image

    img = torch.from_numpy(image_to_chw(getattr(skimage.data, image)(), channels=3))  # (3, H, W)
    big_side = int(size * 10 / 7)
    big = resize_image(img[None], (big_side, big_side))
    A = torch.from_numpy(centred_affine(big_side, big_side, angle_deg, (scale, scale), shift=shift)).float()
    R, t = A[:, :2], A[:, 2]
    warped, _ = affine_warp(big, A[None])
    o = (big_side - size) // 2
    a = big[0, :, o:o + size, o:o + size].clamp(0, 1)
    b = warped[0, :, o:o + size, o:o + size].clamp(0, 1)
    b = (b ** gamma * torch.tensor(gain).view(3, 1, 1) + torch.tensor(offset).view(3, 1, 1)).clamp(0, 1)

    def b_to_a(points_b: torch.Tensor) -> torch.Tensor:
        return (points_b + o) @ R.T + t - o

    return a.contiguous(), b.contiguous(), b_to_a
