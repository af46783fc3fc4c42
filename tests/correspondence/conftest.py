"""A real image against an affine-warped, colour-remapped copy of itself (known ground truth)."""
import math

import numpy as np
import pytest
import torch


def warped_pair(size: int = 160, angle_deg: float = 8.0, scale: float = 1.08, shift=(4.0, -3.0),
                image: str = "astronaut"):
    """Returns (a, b, b_to_a) with a, b (3, size, size) in [0, 1] and ``b_to_a(points_b) -> points_a``.

    b(p) = a(M p) (before the colour change), with M a rotation+scale about the centre plus a
    shift; both are crops of a larger warped image, so b has no empty border.
    """
    import skimage.data
    from fmdepth.geometry import affine_warp
    import torch.nn.functional as F

    img = torch.from_numpy(getattr(skimage.data, image)().astype(np.float32) / 255.0).permute(2, 0, 1)
    big_side = int(size * 10 / 7)
    big = F.interpolate(img[None], size=(big_side, big_side), mode="bilinear", align_corners=False,
                        antialias=True)
    ang = math.radians(angle_deg)
    R = torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]]) * scale
    c = torch.tensor([(big_side - 1) / 2.0] * 2)
    t = c - R @ c + torch.tensor(shift)
    M = torch.cat([R, t[:, None]], 1)
    warped, _ = affine_warp(big, M[None])
    o = (big_side - size) // 2
    a = big[0, :, o:o + size, o:o + size].clamp(0, 1)
    b = warped[0, :, o:o + size, o:o + size].clamp(0, 1)
    # colour remap: gamma + per-channel gain/offset
    b = (b ** 0.7 * torch.tensor([0.8, 1.1, 0.9]).view(3, 1, 1)
         + torch.tensor([0.1, -0.05, 0.05]).view(3, 1, 1)).clamp(0, 1)

    def b_to_a(points_b: torch.Tensor) -> torch.Tensor:
        return (points_b + o) @ R.T + t - o

    return a.contiguous(), b.contiguous(), b_to_a


@pytest.fixture(scope="session")
def make_pair():
    """The :func:`warped_pair` factory."""
    return warped_pair
