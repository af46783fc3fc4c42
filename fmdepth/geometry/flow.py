"""Flow and affine helpers of registration: resizing, affine -> flow, composition, pyramids.

A flow is (B, 2, H, W) in pixels on the **fixed** grid, ``flow[:, 0]`` = dx, and the registered
image is ``warped(p) = moving(p + flow(p))`` (:func:`fmdepth.geometry.flow_warp`). Affines are
pixel affines mapping fixed pixels to moving pixels, (B, 2, 3) or (B, 3, 3). Resizing keeps pixel
centres aligned (``align_corners=True``), as every sampler of :mod:`fmdepth.geometry`.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F

from fmdepth.core.checks import check_tensor

__all__ = ["resize_image", "resize_flow", "affine_to_flow", "compose_affine_flow", "affine_to_3x3",
           "pyramid_sizes", "check_image_pair"]


def check_image_pair(fixed: torch.Tensor, moving: torch.Tensor) -> None:
    """Require fixed (B, C, H, W) and moving (B, C', H, W): the same batch size and image size.

    Raises:
        ValueError: naming the argument; different image sizes say how to resample first.
    """
    sizes = check_tensor(fixed, "fixed", ("B", "C", "H", "W"))
    check_tensor(moving, "moving", ("B", "C'", "H'", "W'"), sizes)
    if fixed.shape[-2:] != moving.shape[-2:]:
        raise ValueError(f"fixed {tuple(fixed.shape[-2:])} and moving {tuple(moving.shape[-2:])} image sizes "
                         f"differ: resample the moving image to the fixed size first "
                         f"(`fmdepth register` does this and reports it)")


def resize_image(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Anti-aliased bilinear resize of (B, C, H, W) images to ``size`` = (H', W') (pixel-centre aligned).

    Returns:
        (B, C, H', W'); ``x`` itself when it already has that size.
    """
    check_tensor(x, "x", ("B", "C", "H", "W"))
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    down = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True, antialias=down)


def resize_flow(flow: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Resample a (B, 2, h, w) pixel flow to ``size`` = (H, W), rescaling its values -> (B, 2, H, W).

    With ``align_corners=True`` pixel coordinates map as ``u' = u (W - 1) / (w - 1)``.

    Example:
        >>> resize_flow(torch.ones(1, 2, 5, 5), (9, 9))[0, :, 0, 0].tolist()
        [2.0, 2.0]
    """
    check_tensor(flow, "flow", ("B", 2, "h", "w"))
    h, w = flow.shape[-2:]
    H, W = size
    if (h, w) == (H, W):
        return flow
    out = F.interpolate(flow, size=(H, W), mode="bilinear", align_corners=True)
    sx = (W - 1) / max(w - 1, 1)
    sy = (H - 1) / max(h - 1, 1)
    return torch.cat([out[:, :1] * sx, out[:, 1:] * sy], dim=1)


def affine_to_flow(affine: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 2, 3) or (B, 3, 3) pixel affine (fixed -> moving) -> (B, 2, H, W) flow ``A p - p``.

    Example:
        >>> affine_to_flow(torch.tensor([[[1.0, 0, 2], [0, 1, -1]]]), 4, 5)[0, :, 0, 0].tolist()
        [2.0, -1.0]
    """
    check_tensor(affine, "affine", ("B", "R", 3))
    if affine.shape[-2] not in (2, 3):
        raise ValueError(f"affine: expected (B, 2, 3) or (B, 3, 3), got {tuple(affine.shape)}")
    ys, xs = torch.meshgrid(torch.arange(height, dtype=affine.dtype, device=affine.device),
                            torch.arange(width, dtype=affine.dtype, device=affine.device), indexing="ij")
    p = torch.stack([xs, ys, torch.ones_like(xs)], 0).view(1, 3, -1)  # (1, 3, HW)
    q = affine[:, :2] @ p  # (B, 2, HW)
    return (q - p[:, :2]).view(-1, 2, height, width)


def compose_affine_flow(affine: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Flow of the map ``p -> A (p + flow(p))`` (deform first, then the affine), (B, 2, H, W).

    ``A``: (B, 2, 3) or (B, 3, 3) pixel affine; ``flow``: (B, 2, H, W). Equals
    ``affine_to_flow(A) + A[:, :2, :2] @ flow``; it is diffeomorphic when ``flow`` is and ``A`` is
    invertible.
    """
    check_tensor(flow, "flow", ("B", 2, "H", "W"))
    h, w = flow.shape[-2:]
    lin = affine[:, :2, :2]
    return affine_to_flow(affine, h, w) + torch.einsum("bij,bjhw->bihw", lin, flow)


def affine_to_3x3(affine: torch.Tensor) -> torch.Tensor:
    """(2, 3) pixel affine -> (3, 3) with the last row (0, 0, 1); a (3, 3) one is returned as is."""
    check_tensor(affine, "affine", ("R", 3))
    if affine.shape[-2] == 3:
        return affine
    if affine.shape[-2] != 2:
        raise ValueError(f"affine: expected (2, 3) or (3, 3), got {tuple(affine.shape)}")
    return torch.cat([affine, torch.tensor([[0.0, 0.0, 1.0]], dtype=affine.dtype, device=affine.device)], 0)


def pyramid_sizes(height: int, width: int, levels: int, min_size: int = 24) -> List[Tuple[int, int]]:
    """Coarse-to-fine (h, w) sizes, halving per level, never below ``min_size`` on the short side.

    Example:
        >>> pyramid_sizes(256, 200, 3)
        [(64, 50), (128, 100), (256, 200)]
    """
    sizes = [(height, width)]
    for _ in range(levels - 1):
        h, w = sizes[-1]
        if min(h, w) // 2 < min_size:
            break
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes[::-1]


# the 8 orientations of a square image: (hflip, vflip, transpose), applied in that order
DIHEDRAL = tuple((h, v, t) for h in (False, True) for v in (False, True) for t in (False, True))


def dihedral_image(x: torch.Tensor, hflip: bool, vflip: bool, transpose: bool) -> torch.Tensor:
    """(..., H, W) -> the image flipped left-right (``hflip``), then upside down (``vflip``), then
    transposed (``transpose``; (..., W, H)): the pixel map ``g``."""
    if hflip:
        x = torch.flip(x, (-1,))
    if vflip:
        x = torch.flip(x, (-2,))
    return x.transpose(-1, -2) if transpose else x


def dihedral_flow(flow: torch.Tensor, hflip: bool, vflip: bool, transpose: bool) -> torch.Tensor:
    """The flow of a pair whose two images went through :func:`dihedral_image` (same flags).

    flow: (..., 2, H, W) pixels (channel 0 = dx). With ``g`` the pixel map and ``M`` its linear
    part, the new pair's flow is ``u'(p) = M^-1 u(g(p))``: flipped like the images, with dx negated
    by ``hflip``, dy by ``vflip`` and the two swapped by ``transpose``.
    """
    if flow.dim() < 3 or flow.shape[-3] != 2:
        raise ValueError(f"flow: expected (..., 2, H, W), got {tuple(flow.shape)}")
    dx, dy = flow.unbind(-3)
    if hflip:
        dx, dy = -torch.flip(dx, (-1,)), torch.flip(dy, (-1,))
    if vflip:
        dx, dy = torch.flip(dx, (-2,)), -torch.flip(dy, (-2,))
    if transpose:
        dx, dy = dy.transpose(-1, -2), dx.transpose(-1, -2)
    return torch.stack([dx, dy], -3)


def undo_dihedral_flow(flow: torch.Tensor, hflip: bool, vflip: bool, transpose: bool) -> torch.Tensor:
    """Inverse of :func:`dihedral_flow`: the flow predicted on the mapped pair, back on the original
    pair (each flag is its own inverse, undone in reverse order)."""
    for op in ((False, False, transpose), (False, vflip, False), (hflip, False, False)):
        flow = dihedral_flow(flow, *op)
    return flow
