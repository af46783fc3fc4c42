"""Sparse points on dense fields: a field's values at (x, y) points, and points moved by a flow.

Points are (B, N, 2) ``(x, y)`` pixels with pixel centres at integers; a flow (B, 2, H, W) is in
pixels and moves a point ``p`` of its grid to ``p + flow(p)`` (the backward-warp convention of
:func:`fmdepth.geometry.flow_warp`).
"""
import torch

from fmdepth.core.checks import check_tensor

from .warp import sample


def sample_at(field: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample ``field`` at ``points`` (border values outside the field).

    Args:
        field: (B, C, H, W).
        points: (B, N, 2) (x, y) pixels of ``field``.

    Returns:
        (B, N, C) values.

    Example:
        >>> sample_at(torch.arange(6.).view(1, 1, 2, 3), torch.tensor([[[1.5, 0.5]]]))
        tensor([[[3.]]])
    """
    sizes = check_tensor(field, "field", ("B", "C", "H", "W"))
    check_tensor(points, "points", ("B", "N", 2), sizes)
    vals, _ = sample(field, points[:, None], mode="bilinear", padding_mode="border")  # (B, C, 1, N)
    return vals[:, :, 0].transpose(1, 2)


def carry_points(points: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Move points by the flow sampled there: ``p + flow(p)``.

    Args:
        points: (B, N, 2) (x, y) pixels of the flow's grid.
        flow: (B, 2, H, W) pixels.

    Returns:
        (B, N, 2) the moved points.
    """
    check_tensor(flow, "flow", ("B", 2, "H", "W"))
    return points + sample_at(flow, points)
