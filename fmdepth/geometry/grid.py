"""Pixel grids, cached per (height, width, device, dtype) -- never per batch size.

The cached tensors are shared: treat them as read-only (every function here returns a tensor
that no caller in fmdepth writes to; clone before modifying in place).
"""
from functools import lru_cache
from typing import Tuple

import torch

__all__ = ["pixel_grid", "normalized_grid", "homogeneous_pixels", "pixel_to_normalized_scale"]


def cache_key(device, dtype) -> Tuple[torch.device, torch.dtype]:
    """The (device, dtype) key of the grid caches; a bare ``cuda`` device resolves to its index."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device, dtype


def _check_size(height: int, width: int) -> None:
    if not (isinstance(height, int) and isinstance(width, int)) or height < 1 or width < 1:
        raise ValueError(f"height, width: expected positive ints, got {height!r}, {width!r}")


@lru_cache(maxsize=128)
def _pixel_grid(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Built outside inference mode so autograd may save it for backward later.
    with torch.inference_mode(False), torch.no_grad():
        v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                              torch.arange(width, device=device, dtype=dtype), indexing="ij")
        return torch.stack([u, v], dim=-1)  # (H, W, 2)


def pixel_grid(height: int, width: int, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """The (u, v) = (column, row) pixel coordinates of an image, cached.

    Args:
        height, width: image size in pixels.
        device, dtype: where and in which precision to build the grid.

    Returns:
        (H, W, 2) tensor with ``grid[v, u] == (u, v)``. Read-only (shared cache).

    Example:
        >>> pixel_grid(2, 3)[1, 2]
        tensor([2., 1.])
    """
    _check_size(height, width)
    return _pixel_grid(height, width, *cache_key(device, dtype))


@lru_cache(maxsize=128)
def _homogeneous(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    with torch.inference_mode(False), torch.no_grad():
        g = _pixel_grid(height, width, device, dtype).reshape(-1, 2)
        return torch.cat([g, torch.ones_like(g[:, :1])], dim=1).contiguous()  # (H*W, 3)


def homogeneous_pixels(height: int, width: int, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Homogeneous pixel coordinates (u, v, 1) as rows: (H*W, 3), cached, read-only."""
    _check_size(height, width)
    return _homogeneous(height, width, *cache_key(device, dtype))


def pixel_to_normalized_scale(height: int, width: int) -> Tuple[float, float]:
    """(sx, sy) with ``x_n = sx * u - 1``, ``y_n = sy * v - 1`` (align_corners=True).

    A 1-pixel-wide axis maps every coordinate to -1, which ``grid_sample`` with
    ``align_corners=True`` reads as the single pixel.
    """
    return 2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)


@lru_cache(maxsize=128)
def _normalized(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    with torch.inference_mode(False), torch.no_grad():
        sx, sy = pixel_to_normalized_scale(height, width)
        g = _pixel_grid(height, width, device, dtype)
        scale = torch.tensor([sx, sy], device=device, dtype=dtype)
        return (g * scale - 1.0).contiguous()  # (H, W, 2)


def normalized_grid(height: int, width: int, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """The pixel grid in ``grid_sample`` coordinates ([-1, 1], align_corners=True): (H, W, 2)."""
    _check_size(height, width)
    return _normalized(height, width, *cache_key(device, dtype))
