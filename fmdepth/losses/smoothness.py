"""Smoothness regularisers: edge-aware first/second order on disparity (depth training), gradient-L2
and edge-aware bilateral 8-neighbour smoothness of flow fields (registration).

Derivatives are forward finite differences on the valid region (no padding), e.g.
``∂x d(u, v) = d(u+1, v) - d(u, v)`` of shape (H, W-1) and ``∂xx d(u, v) = d(u+2, v) - 2 d(u+1, v) + d(u, v)``
of shape (H, W-2). Each directional term is averaged over its own valid region; terms are summed.
(kornia's ``spatial_gradient`` uses padded Sobel/central differences, a different definition, so it
is not used here.)
"""
from typing import Tuple

import torch
from torch import nn

from fmdepth.core.checks import as_compute, check_min_size, check_same_device, check_tensor

__all__ = [
    "gradient_x", "gradient_y", "edge_aware_smoothness", "flow_smoothness", "bilateral_smoothness",
    "EdgeAwareSmoothness", "FlowSmoothness", "BilateralSmoothness",
]


def gradient_x(t: torch.Tensor) -> torch.Tensor:
    """Forward difference along width: (B, C, H, W) -> (B, C, H, W-1)."""
    return t[..., :, 1:] - t[..., :, :-1]


def gradient_y(t: torch.Tensor) -> torch.Tensor:
    """Forward difference along height: (B, C, H, W) -> (B, C, H-1, W)."""
    return t[..., 1:, :] - t[..., :-1, :]


def first_order_terms(field: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``mean|∂x f| e^{-|∂x I|} + mean|∂y f| e^{-|∂y I|}``, ``|∂I|`` averaged over image channels.

    ``field``: (B, C, H, W) (the mean runs over its channels too); ``image``: (B, Ci, H, W).
    """
    w_x = torch.exp(-gradient_x(image).abs().mean(dim=1, keepdim=True))  # (B, 1, H, W-1)
    w_y = torch.exp(-gradient_y(image).abs().mean(dim=1, keepdim=True))  # (B, 1, H-1, W)
    return (gradient_x(field).abs() * w_x).mean() + (gradient_y(field).abs() * w_y).mean()


def _second_derivatives(t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gx = gradient_x(t)
    return gradient_x(gx), gradient_y(gradient_y(t)), gradient_y(gx)  # xx, yy, xy


def second_order_terms(field: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``Σ_{k∈{xx,yy,xy}} mean|∂_k f| e^{-|∂_k I|}`` with the image term averaged over its channels.

    ``∂xx``, ``∂yy`` are the second differences along width/height, ``∂xy`` the mixed difference
    ``∂y(∂x f)``; each is averaged over its own valid region.
    """
    total = field.new_zeros(())
    for df, di in zip(_second_derivatives(field), _second_derivatives(image)):
        total = total + (df.abs() * torch.exp(-di.abs().mean(dim=1, keepdim=True))).mean()
    return total


def edge_aware_smoothness(disp: torch.Tensor, image: torch.Tensor, order: int = 1,
                          normalize: bool = True) -> torch.Tensor:
    """Edge-aware smoothness of a disparity map.

    With ``d = disp / mean_{H,W}(disp)`` (``normalize=True``, Monodepth2's scale normalisation):

    * ``order=1``: ``mean|∂x d| e^{-|∂x I|} + mean|∂y d| e^{-|∂y I|}``
    * ``order=2``: ``mean|∂xx d| e^{-|∂xx I|} + mean|∂yy d| e^{-|∂yy I|} + mean|∂xy d| e^{-|∂xy I|}``

    where ``|∂I|`` is the absolute image difference averaged over the colour channels and each
    mean runs over the batch and the difference's valid region.

    Args:
        disp: (B, 1, H, W) disparity (positive).
        image: (B, C, H, W) image in [0, 1] at the disparity's resolution.
        order: 1 or 2.
        normalize: divide ``disp`` by its per-image spatial mean (+1e-7) first.

    Returns:
        scalar loss (0 for a constant disparity).

    Example:
        >>> disp = torch.linspace(0.5, 1.0, 8).expand(1, 1, 4, 8)
        >>> float(edge_aware_smoothness(disp, torch.zeros(1, 3, 4, 8), order=2))
        0.0
    """
    sizes = check_tensor(disp, "disp", ("B", 1, "H", "W"))
    check_tensor(image, "image", ("B", "C", "H", "W"), sizes)
    check_same_device(("disp", disp), ("image", image))
    if order not in (1, 2):
        raise ValueError(f"order: expected 1 or 2, got {order!r}")
    check_min_size(disp, "disp", order + 1, order + 1, f"order-{order} differences")
    disp, image = as_compute(disp, image)
    if normalize:
        disp = disp / (disp.mean(dim=(2, 3), keepdim=True) + 1e-7)
    if order == 1:
        return first_order_terms(disp, image)
    return second_order_terms(disp, image)


def flow_smoothness(flow: torch.Tensor) -> torch.Tensor:
    """Gradient-L2 (diffusion) regulariser ``(mean (∂x u)^2 + mean (∂y u)^2) / 2`` over both components.

    Args:
        flow: (B, 2, H, W) displacement field in pixels.

    Returns:
        scalar (0 for a constant flow; a ramp u = a·x gives a^2 / 4 for a flow with one component).
    """
    check_tensor(flow, "flow", ("B", 2, "H", "W"))
    check_min_size(flow, "flow", 2, 2, "forward differences")
    (flow,) = as_compute(flow)
    return 0.5 * (gradient_x(flow).pow(2).mean() + gradient_y(flow).pow(2).mean())


# the four "forward" neighbour offsets (dy, dx); their mirrors give the same pixel pairs
_HALF_NEIGHBOURHOOD = ((0, 1), (1, 0), (1, 1), (1, -1))


def _pairs(t: torch.Tensor, dy: int, dx: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Views ``t(p)`` and ``t(p + (dy, dx))`` over all pixels p where both exist."""
    h, w = t.shape[-2:]
    ys, yn = slice(0, h - dy), slice(dy, h)
    if dx >= 0:
        xs, xn = slice(0, w - dx), slice(dx, w)
    else:
        xs, xn = slice(-dx, w), slice(0, w + dx)
    return t[..., ys, xs], t[..., yn, xn]


def bilateral_smoothness(flow: torch.Tensor, image: torch.Tensor, alpha: float = 10.0) -> torch.Tensor:
    """Edge-aware 8-neighbour smoothness of a flow (translation-based registration).

    ``mean_{n ∈ N8} mean_p (|u(p) - u(p+n)| + |v(p) - v(p+n)|) · exp(-α · mean_c |I(p) - I(p+n)|)``

    with ``I`` the warped (moving) image. Each neighbour term averages over the pixels where the
    neighbour exists; opposite neighbours describe the same pixel pairs, so the 8-neighbour mean is
    computed exactly from the four forward offsets.

    Args:
        flow: (B, 2, H, W) displacement in pixels.
        image: (B, C, H, W) warped image (intensities in [0, 1]) at the flow's resolution.
        alpha: edge sensitivity α >= 0 (0 gives plain 8-neighbour total variation).

    Returns:
        scalar loss (0 for a constant flow).
    """
    sizes = check_tensor(flow, "flow", ("B", 2, "H", "W"))
    check_tensor(image, "image", ("B", "C", "H", "W"), sizes)
    check_same_device(("flow", flow), ("image", image))
    check_min_size(flow, "flow", 2, 2, "neighbour differences")
    if alpha < 0:
        raise ValueError(f"alpha: expected a non-negative value, got {alpha}")
    flow, image = as_compute(flow, image)
    total = flow.new_zeros(())
    for dy, dx in _HALF_NEIGHBOURHOOD:
        f0, f1 = _pairs(flow, dy, dx)
        i0, i1 = _pairs(image, dy, dx)
        weight = torch.exp(-alpha * (i0 - i1).abs().mean(dim=1, keepdim=True))  # (B, 1, h', w')
        total = total + ((f0 - f1).abs().sum(dim=1, keepdim=True) * weight).mean()
    return total / len(_HALF_NEIGHBOURHOOD)


class EdgeAwareSmoothness(nn.Module):
    """Module wrapper of :func:`edge_aware_smoothness`: ``forward(disp, image) -> scalar``."""

    def __init__(self, order: int = 1, normalize: bool = True):
        super().__init__()
        if order not in (1, 2):
            raise ValueError(f"order: expected 1 or 2, got {order!r}")
        self.order = order
        self.normalize = normalize

    def forward(self, disp: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return edge_aware_smoothness(disp, image, order=self.order, normalize=self.normalize)

    def extra_repr(self) -> str:
        return f"order={self.order}, normalize={self.normalize}"


class FlowSmoothness(nn.Module):
    """Module wrapper of :func:`flow_smoothness`: ``forward(flow) -> scalar``."""

    def forward(self, flow: torch.Tensor) -> torch.Tensor:
        return flow_smoothness(flow)


class BilateralSmoothness(nn.Module):
    """Module wrapper of :func:`bilateral_smoothness`: ``forward(flow, image) -> scalar``."""

    def __init__(self, alpha: float = 10.0):
        super().__init__()
        if alpha < 0:
            raise ValueError(f"alpha: expected a non-negative value, got {alpha}")
        self.alpha = alpha

    def forward(self, flow: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return bilateral_smoothness(flow, image, alpha=self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
