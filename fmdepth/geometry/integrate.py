"""Diffeomorphic flow from a stationary velocity field, and the Jacobian determinant of a flow."""
import torch

from fmdepth.core.checks import check_tensor
from .warp import flow_warp

__all__ = ["integrate_velocity", "jacobian_determinant"]


def integrate_velocity(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """Integrate a stationary velocity field by scaling and squaring.

    ``phi = exp(v)``: start from ``v / 2**steps`` and compose the displacement with itself
    ``steps`` times, ``u <- u + u o (id + u)``, each composition one :func:`flow_warp`
    (border padding, so a constant field stays constant at the image edges).

    Args:
        velocity: (B, 2, H, W) in pixels (channel 0: x/columns, channel 1: y/rows).
        steps: number of squarings (>= 0; 0 returns the velocity itself).

    Returns:
        flow: (B, 2, H, W) displacement in pixels, for :func:`flow_warp`.

    Example:
        >>> v = torch.ones(1, 2, 4, 4)
        >>> integrate_velocity(v).sub(1).abs().max().item() < 1e-6
        True
    """
    check_tensor(velocity, "velocity", ("B", 2, "H", "W"))
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps: expected a non-negative int, got {steps!r}")
    flow = velocity / (2 ** steps)
    for _ in range(steps):
        flow = flow + flow_warp(flow, flow, padding_mode="border")[0]
    return flow


def jacobian_determinant(flow: torch.Tensor) -> torch.Tensor:
    """Jacobian determinant of the map ``p -> p + flow(p)``.

    Derivatives by central differences inside and one-sided differences at the borders
    (``torch.gradient``); values <= 0 mark folding.

    Args:
        flow: (B, 2, H, W) in pixels, H >= 2 and W >= 2.

    Returns:
        (B, 1, H, W); 1 everywhere for the zero flow.

    Example:
        >>> jacobian_determinant(torch.zeros(1, 2, 3, 3)).unique()
        tensor([1.])
    """
    check_tensor(flow, "flow", ("B", 2, "H", "W"))
    if flow.shape[-2] < 2 or flow.shape[-1] < 2:
        raise ValueError(f"flow: expected (B, 2, H, W) with H, W >= 2, got {tuple(flow.shape)}")
    d_dy, d_dx = torch.gradient(flow, dim=(2, 3))  # each (B, 2, H, W)
    du_dx, dv_dx = d_dx[:, 0:1], d_dx[:, 1:2]
    du_dy, dv_dy = d_dy[:, 0:1], d_dy[:, 1:2]
    return (1.0 + du_dx) * (1.0 + dv_dy) - du_dy * dv_dx
