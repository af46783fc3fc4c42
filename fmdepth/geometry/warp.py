"""Warping: backproject, project, the one sampler, and the warps built on it.

Every warp here ends in :func:`_sample_normalized` (``F.grid_sample`` with
``align_corners=True``); :func:`sample` is its public face in pixel coordinates.
:func:`inverse_warp` does not call :func:`backproject`/:func:`project`: it folds
``N K R K^-1`` and ``N K t`` (N = pixel -> normalised coordinates) into one 3x3 matrix and
one 3-vector per batch element, so the sampling grid comes out of a single small matmul on
the cached pixel grid and one fused multiply-add with the depth, inside one autograd Function
with a hand-written backward (:class:`_ProjectiveGrid`). Both routes agree (tested), and
``bench/warp.py`` compares the whole depth-training warp with a Monodepth2-style reference.
"""
import contextlib
from functools import lru_cache
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from fmdepth.core.checks import check_same_device, check_tensor, geometry_dtype
from .camera import inverse_and_det, is_singular
from .grid import cache_key, homogeneous_pixels, normalized_grid, pixel_to_normalized_scale

__all__ = ["backproject", "project", "sample", "inverse_warp", "flow_warp", "affine_warp",
           "homography_warp", "normalized_affine_to_pixel", "pixel_affine_to_normalized"]

_MODES = ("bilinear", "nearest", "bicubic")
_PADDINGS = ("zeros", "border", "reflection")
# Tolerance (normalised units) when testing "inside the image": absorbs float rounding so that
# the identity warp marks the last row/column valid (1e-5 * (W-1)/2 px: 0.003 px at W=640).
_INSIDE_TOL = 1e-5


def _no_autocast(device: torch.device):
    """Coordinates are computed in float32/64 even inside an autocast region."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _check_modes(mode: str, padding_mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
    if padding_mode not in _PADDINGS:
        raise ValueError(f"padding_mode: expected one of {_PADDINGS}, got {padding_mode!r}")


def _sample_normalized(image: torch.Tensor, grid: torch.Tensor, mode: str, padding_mode: str,
                       in_front: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """THE sampler. image (B,C,Hs,Ws), grid (B,H,W,2) in [-1,1] units (float32/64).

    Half/bfloat16 images are sampled in float32 (a 16-bit grid would misplace samples by up to
    ~0.3 px at 640 px width; CUDA autocast runs grid_sample in float32 for the same reason) and
    returned in their own dtype. ``in_front`` (B,H,W) bool is AND-ed into ``valid``.
    """
    valid = grid.detach().abs().amax(dim=-1) <= 1.0 + _INSIDE_TOL  # (B, H, W); NaN -> False
    if in_front is not None:
        valid = valid & in_front
    src = image if image.dtype in (torch.float32, torch.float64) else image.float()
    warped = F.grid_sample(src, grid.to(src.dtype), mode=mode, padding_mode=padding_mode,
                           align_corners=True)  # (B, C, H, W)
    return warped.to(image.dtype), valid.unsqueeze(1)


@lru_cache(maxsize=128)
def _norm_scale(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    with torch.inference_mode(False), torch.no_grad():
        return torch.tensor(pixel_to_normalized_scale(height, width), device=device, dtype=dtype)


def _pixel_to_normalized_matrix(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """N (3, 3) with (x_n, y_n, 1) = N (u, v, 1) for align_corners=True."""
    sx, sy = pixel_to_normalized_scale(height, width)
    return like.new_tensor([[sx, 0.0, -1.0], [0.0, sy, -1.0], [0.0, 0.0, 1.0]])


def _check_depth_finite_and_K(depth: torch.Tensor, K: torch.Tensor, det: torch.Tensor,
                              depth_name: str) -> None:
    """One host sync for both checks."""
    extremes = torch.stack(torch.aminmax(depth.detach()))  # one pass; NaN propagates into both
    flags = torch.stack([~torch.isfinite(extremes).all(), is_singular(K, det)]).tolist()
    if flags[0]:
        raise ValueError(f"{depth_name}: expected finite values in the (B, 1, H, W) depth map "
                         "(use 0 or a negative value to mark missing depth)")
    if flags[1]:
        raise ValueError("K: expected invertible, finite (B, 3, 3) intrinsics; got a singular "
                         "or non-finite matrix")


def backproject(depth: torch.Tensor, K_inv: torch.Tensor) -> torch.Tensor:
    """Lift every pixel to a 3-D point in the camera frame: ``X = depth * K^-1 (u, v, 1)``.

    Args:
        depth: (B, 1, H, W) z-depth (finite).
        K_inv: (B, 3, 3) inverse intrinsics for this resolution.

    Returns:
        points: (B, 3, H, W) in the camera frame (x right, y down, z forward).

    Example:
        >>> K_inv = torch.eye(3)[None]
        >>> backproject(torch.ones(2, 1, 4, 5), K_inv.expand(2, 3, 3)).shape
        torch.Size([2, 3, 4, 5])
    """
    sizes = check_tensor(depth, "depth", ("B", 1, "H", "W"))
    check_tensor(K_inv, "K_inv", ("B", 3, 3), sizes)
    check_same_device(("depth", depth), ("K_inv", K_inv))
    dt = geometry_dtype(("depth", depth), ("K_inv", K_inv))
    if not bool(torch.isfinite(torch.stack(torch.aminmax(depth.detach()))).all()):
        raise ValueError("depth: expected finite values in the (B, 1, H, W) depth map")
    B, _, H, W = depth.shape
    with _no_autocast(depth.device):
        P = homogeneous_pixels(H, W, depth.device, dt)  # (H*W, 3)
        rays = torch.matmul(K_inv.to(dt), P.t())  # (B, 3, H*W)
        return rays.view(B, 3, H, W) * depth.to(dt)


def project(points: torch.Tensor, K: torch.Tensor, src_T_tgt: Optional[torch.Tensor] = None,
            eps: float = 1e-7) -> torch.Tensor:
    """Project camera-frame points (optionally moved by ``src_T_tgt`` first) to pixels.

    ``pix = pi(K (R X + t))`` with ``pi(x, y, z) = (x, y) / max(z, eps)``. Points at
    ``z <= eps`` (behind the camera) get large but finite coordinates; :func:`inverse_warp`
    masks them out of ``valid``.

    Args:
        points: (B, 3, H, W) in the target camera frame.
        K: (B, 3, 3) intrinsics of the source view (pixels).
        src_T_tgt: (B, 4, 4) or None (identity).
        eps: smallest z used for the division.

    Returns:
        pix: (B, H, W, 2) (u, v) pixel coordinates in the source view.

    Example:
        >>> pts = torch.tensor([1., 2., 2.]).view(1, 3, 1, 1)
        >>> project(pts, torch.eye(3)[None]).flatten()
        tensor([0.5000, 1.0000])
    """
    sizes = check_tensor(points, "points", ("B", 3, "H", "W"))
    check_tensor(K, "K", ("B", 3, 3), sizes)
    named = [("points", points), ("K", K)]
    if src_T_tgt is not None:
        check_tensor(src_T_tgt, "src_T_tgt", ("B", 4, 4), sizes)
        named.append(("src_T_tgt", src_T_tgt))
    check_same_device(*named)
    dt = geometry_dtype(*named)
    B, _, H, W = points.shape
    with _no_autocast(points.device):
        K = K.to(dt)
        if src_T_tgt is None:
            P, t = K, None
        else:
            T = src_T_tgt.to(dt)
            P = torch.matmul(K, T[:, :3, :3])  # (B, 3, 3)
            t = torch.matmul(K, T[:, :3, 3:])  # (B, 3, 1)
        flat = points.to(dt).reshape(B, 3, H * W)
        cam = torch.matmul(P, flat) if t is None else torch.baddbmm(t, P, flat)  # (B, 3, H*W)
        pix = cam[:, :2] / cam[:, 2:].clamp(min=eps)  # (B, 2, H*W)
        return pix.transpose(1, 2).reshape(B, H, W, 2)


def sample(image: torch.Tensor, pix: torch.Tensor, mode: str = "bilinear",
           padding_mode: str = "zeros") -> Tuple[torch.Tensor, torch.Tensor]:
    """Sample ``image`` at pixel coordinates (bilinear, align_corners=True semantics).

    Args:
        image: (B, C, Hs, Ws).
        pix: (B, H, W, 2) (u, v) coordinates in ``image``'s pixels; pixel centres are integers.
        mode: "bilinear" | "nearest" | "bicubic".
        padding_mode: "zeros" | "border" | "reflection" (value outside the image).

    Returns:
        warped: (B, C, H, W) in ``image``'s dtype; valid: (B, 1, H, W) bool, True where
        ``0 <= u <= Ws-1`` and ``0 <= v <= Hs-1``.

    Example:
        >>> img = torch.arange(6.).view(1, 1, 2, 3)
        >>> sample(img, torch.tensor([[[[1.5, 0.5]]]]))[0].item()
        3.0
    """
    _check_modes(mode, padding_mode)
    sizes = check_tensor(image, "image", ("B", "C", "Hs", "Ws"))
    check_tensor(pix, "pix", ("B", "H", "W", 2), sizes)
    check_same_device(("image", image), ("pix", pix))
    dt = geometry_dtype(("image", image), ("pix", pix))
    Hs, Ws = image.shape[-2:]
    with _no_autocast(image.device):
        grid = pix.to(dt) * _norm_scale(Hs, Ws, *cache_key(image.device, dt)) - 1.0  # (B, H, W, 2)
        return _sample_normalized(image, grid, mode, padding_mode)


class _ProjectiveGrid(torch.autograd.Function):
    """grid = pi(depth * M (u, v, 1) + b) for every target pixel, with a hand-written backward.

    Channel-planar layout (B, 3, H*W) throughout; the grid is returned as a strided
    (B, H*W, 2) view of the (B, 2, H*W) planes (``grid_sample`` reads strided grids), so no
    interleaving copy is made. The backward needs, per pixel, only ``e = dL/dc``:
    ``e_xy = G / z``, ``e_z = -(G . g) / z`` (0 where z <= eps), then
    ``dL/ddepth = e . (M p)``, ``dL/db = sum_p e``, ``dL/dM = sum_p depth e p^T`` -- about half
    the memory traffic of autograd's slice/select backward. First-order only.
    """

    @staticmethod
    def forward(ctx, M, b, depth, P, eps: float):
        # M (B, 3, 3); b (B, 3) or None; depth (B, 1, H*W) or None; P (H*W, 3) pixels.
        ray = torch.matmul(M, P.t())  # (B, 3, H*W)
        if depth is None:
            cam = ray if b is None else ray + b.unsqueeze(-1)
        else:
            cam = torch.addcmul(b.unsqueeze(-1), ray, depth)  # (B, 3, H*W)
        z = cam[:, 2:]  # (B, 1, H*W)
        in_front = z > eps
        z_safe = z.clamp(min=eps)
        grid_planes = cam[:, :2] / z_safe  # (B, 2, H*W)
        ctx.eps = eps
        ctx.has_b, ctx.has_depth = b is not None, depth is not None
        ctx.save_for_backward(M, depth, P, grid_planes, z_safe, in_front)
        ctx.mark_non_differentiable(in_front)
        return grid_planes.transpose(1, 2), in_front  # (B, H*W, 2) strided view, (B, 1, H*W)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_grid, _):
        M, depth, P, grid_planes, z_safe, in_front = ctx.saved_tensors
        need_M, need_b, need_depth = ctx.needs_input_grad[:3]
        inv_z = torch.where(in_front, z_safe.reciprocal(), 0.0)  # (B, 1, H*W)
        e = grid_planes.new_empty(grid_planes.shape[0], 3, grid_planes.shape[2])  # dL/dcam
        torch.mul(grad_grid.transpose(1, 2), inv_z, out=e[:, :2])
        torch.sum(e[:, :2] * grid_planes, dim=1, keepdim=True, out=e[:, 2:])
        e[:, 2:].neg_()
        grad_M = grad_b = grad_depth = None
        if need_depth and ctx.has_depth:
            grad_depth = (e * torch.matmul(M, P.t())).sum(dim=1, keepdim=True)  # (B, 1, H*W)
        if need_b and ctx.has_b:
            grad_b = e.sum(dim=2)  # (B, 3)
        if need_M:
            grad_M = torch.matmul(e if depth is None else e * depth, P)  # (B, 3, 3)
        return grad_M, grad_b, grad_depth, None, None


def _projective_grid(M: torch.Tensor, b: Optional[torch.Tensor], depth: Optional[torch.Tensor],
                     H: int, W: int, eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """grid = pi(depth * M (u, v, 1) + b) for every target pixel; M, b already normalised.

    Returns grid (B, H, W, 2) (a strided view) and in_front (B, H, W) bool (z > eps, and
    depth > 0 when a depth is given).
    """
    B = M.shape[0]
    P = homogeneous_pixels(H, W, M.device, M.dtype)  # (H*W, 3)
    flat_depth = None if depth is None else depth.reshape(B, 1, H * W)
    grid, in_front = _ProjectiveGrid.apply(M, b, flat_depth, P, eps)  # (B, H*W, 2), (B, 1, H*W)
    if depth is not None:
        in_front = in_front & (flat_depth.detach() > 0)
    grid = grid.view(B, H, W, 2)  # still a strided view: splitting H*W needs no copy
    return grid, in_front.view(B, H, W)


def inverse_warp(image_src: torch.Tensor, depth_tgt: torch.Tensor, src_T_tgt: torch.Tensor,
                 K: torch.Tensor, padding_mode: str = "zeros", mode: str = "bilinear",
                 eps: float = 1e-7) -> Tuple[torch.Tensor, torch.Tensor]:
    """Synthesise the target view by sampling the source image at the projections of the
    target pixels: ``warped(p) = image_src(pi(K (R depth(p) K^-1 p + t)))``.

    Args:
        image_src: (B, C, H, W) source image or feature map.
        depth_tgt: (B, 1, H, W) target z-depth; values <= 0 mark missing depth (valid=False).
        src_T_tgt: (B, 4, 4) maps target-frame points into the source frame.
        K: (B, 3, 3) intrinsics (pixels of this resolution), shared by both views.
        padding_mode: "zeros" | "border" | "reflection".
        mode: "bilinear" | "nearest" | "bicubic".
        eps: points with z <= eps in the source frame are behind the camera.

    Returns:
        warped: (B, C, H, W) in ``image_src``'s dtype; valid: (B, 1, H, W) bool, True where the
        projection lies inside the source image, in front of it, and the depth is > 0.

    Raises:
        ValueError: wrong shapes/devices/dtypes, singular K, non-finite depth.

    Differentiable w.r.t. ``image_src``, ``depth_tgt``, ``src_T_tgt`` and ``K`` (first order; the
    projection has a hand-written backward, so double backward through the grid is unsupported).

    Example:
        >>> img, depth = torch.rand(2, 3, 4, 5), torch.ones(2, 1, 4, 5)
        >>> K = torch.tensor([[4., 0, 2], [0, 4, 1.5], [0, 0, 1]]).expand(2, 3, 3)
        >>> warped, valid = inverse_warp(img, depth, torch.eye(4).expand(2, 4, 4), K)
        >>> warped.shape, valid.shape, bool(valid.all())
        (torch.Size([2, 3, 4, 5]), torch.Size([2, 1, 4, 5]), True)
    """
    _check_modes(mode, padding_mode)
    sizes = check_tensor(image_src, "image_src", ("B", "C", "H", "W"))
    check_tensor(depth_tgt, "depth_tgt", ("B", 1, "H", "W"), sizes)
    check_tensor(src_T_tgt, "src_T_tgt", ("B", 4, 4), sizes)
    check_tensor(K, "K", ("B", 3, 3), sizes)
    named = [("image_src", image_src), ("depth_tgt", depth_tgt), ("src_T_tgt", src_T_tgt), ("K", K)]
    check_same_device(*named)
    dt = geometry_dtype(*named)
    B, _, H, W = image_src.shape
    with _no_autocast(image_src.device):
        K = K.to(dt)
        T = src_T_tgt.to(dt)
        K_inv, det = inverse_and_det(K)
        _check_depth_finite_and_K(depth_tgt, K, det, "depth_tgt")
        NK = torch.matmul(_pixel_to_normalized_matrix(H, W, K), K)  # (B, 3, 3)
        M = torch.matmul(torch.matmul(NK, T[:, :3, :3]), K_inv)  # (B, 3, 3) = N K R K^-1
        b = torch.matmul(NK, T[:, :3, 3:]).squeeze(-1)  # (B, 3) = N K t
        grid, in_front = _projective_grid(M, b, depth_tgt.to(dt), H, W, eps)
        return _sample_normalized(image_src, grid, mode, padding_mode, in_front)


def flow_warp(image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear",
              padding_mode: str = "zeros") -> Tuple[torch.Tensor, torch.Tensor]:
    """Backward warp by a dense displacement field: ``out(p) = image(p + flow(p))``.

    Args:
        image: (B, C, H, W).
        flow: (B, 2, H, W) in pixels; ``flow[:, 0]`` is du (x, columns), ``flow[:, 1]`` dv (y, rows).
        mode, padding_mode: as :func:`sample`.

    Returns:
        warped (B, C, H, W), valid (B, 1, H, W) bool (``p + flow(p)`` inside the image).

    Example:
        >>> img = torch.arange(3.).view(1, 1, 1, 3)
        >>> flow = torch.zeros(1, 2, 1, 3); flow[:, 0] = 1
        >>> flow_warp(img, flow)[0].flatten()
        tensor([1., 2., 0.])
    """
    _check_modes(mode, padding_mode)
    sizes = check_tensor(image, "image", ("B", "C", "H", "W"))
    check_tensor(flow, "flow", ("B", 2, "H", "W"), sizes)
    check_same_device(("image", image), ("flow", flow))
    dt = geometry_dtype(("image", image), ("flow", flow))
    H, W = image.shape[-2:]
    key = cache_key(image.device, dt)
    with _no_autocast(image.device):
        grid = torch.addcmul(normalized_grid(H, W, *key), flow.to(dt).permute(0, 2, 3, 1),
                             _norm_scale(H, W, *key))  # (B, H, W, 2)
        return _sample_normalized(image, grid, mode, padding_mode)


def _check_affine(A: torch.Tensor, name: str, sizes: Optional[dict] = None) -> dict:
    if isinstance(A, torch.Tensor) and A.dim() == 3 and A.shape[1] == 3:
        return check_tensor(A, name, ("B", 3, 3), sizes)
    try:
        return check_tensor(A, name, ("B", 2, 3), sizes)
    except ValueError as err:
        raise ValueError(str(err).replace("expected shape (B, 2, 3)", "expected shape (B, 2, 3) or (B, 3, 3)"))


def pixel_affine_to_normalized(A: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel-coordinate affine (target pixel -> source pixel) as an ``F.affine_grid`` theta.

    Args:
        A: (B, 2, 3) or (B, 3, 3) (last row ignored) mapping target (u, v, 1) to source (u, v).
        height, width: image size (source and target share it).

    Returns:
        theta: (B, 2, 3) for ``F.affine_grid(theta, size, align_corners=True)``.
    """
    _check_affine(A, "A")
    A = A[:, :2]
    N = _pixel_to_normalized_matrix(height, width, A)
    sx, sy = pixel_to_normalized_scale(height, width)
    N_inv = A.new_tensor([[1.0 / sx, 0.0, 1.0 / sx], [0.0, 1.0 / sy, 1.0 / sy], [0.0, 0.0, 1.0]])
    return torch.matmul(torch.matmul(N[:2], torch.cat([A, _last_row(A)], dim=1)), N_inv)


def _last_row(A: torch.Tensor) -> torch.Tensor:
    row = A.new_zeros(A.shape[0], 1, 3)
    row[:, 0, 2] = 1.0
    return row


def normalized_affine_to_pixel(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(align_corners=True)`` theta -> pixel affine (target pixel -> source pixel).

    Args:
        theta: (B, 2, 3) in normalised [-1, 1] coordinates.
        height, width: image size.

    Returns:
        (B, 3, 3) pixel affine with last row (0, 0, 1).
    """
    check_tensor(theta, "theta", ("B", 2, 3))
    N = _pixel_to_normalized_matrix(height, width, theta)
    sx, sy = pixel_to_normalized_scale(height, width)
    N_inv = theta.new_tensor([[1.0 / sx, 0.0, 1.0 / sx], [0.0, 1.0 / sy, 1.0 / sy], [0.0, 0.0, 1.0]])
    full = torch.cat([theta, _last_row(theta)], dim=1)
    return torch.matmul(torch.matmul(N_inv, full), N)


def affine_warp(image: torch.Tensor, src_A_tgt: torch.Tensor, mode: str = "bilinear",
                padding_mode: str = "zeros") -> Tuple[torch.Tensor, torch.Tensor]:
    """Warp by an affine map in pixel coordinates: ``out(p) = image(A p)``.

    Args:
        image: (B, C, H, W).
        src_A_tgt: (B, 2, 3) or (B, 3, 3) (last row ignored): target pixel (u, v, 1) -> source (u, v).
        mode, padding_mode: as :func:`sample`.

    Returns:
        warped (B, C, H, W), valid (B, 1, H, W) bool.

    Example:
        >>> A = torch.tensor([[[1., 0, 1], [0, 1, 0]]])  # shift sampling one pixel right
        >>> affine_warp(torch.arange(3.).view(1, 1, 1, 3), A)[0].flatten()
        tensor([1., 2., 0.])
    """
    _check_modes(mode, padding_mode)
    sizes = check_tensor(image, "image", ("B", "C", "H", "W"))
    _check_affine(src_A_tgt, "src_A_tgt", sizes)
    check_same_device(("image", image), ("src_A_tgt", src_A_tgt))
    dt = geometry_dtype(("image", image), ("src_A_tgt", src_A_tgt))
    B, C, H, W = image.shape
    with _no_autocast(image.device):
        A = src_A_tgt.to(dt)
        A = torch.cat([A[:, :2], _last_row(A)], dim=1)  # (B, 3, 3)
        M = torch.matmul(_pixel_to_normalized_matrix(H, W, A)[:2], A)  # (B, 2, 3) pixel -> normalised
        P = homogeneous_pixels(H, W, image.device, dt)  # (H*W, 3) target pixels
        grid = torch.matmul(P, M.transpose(1, 2))  # (B, H*W, 2), as F.affine_grid would give
        grid = grid.reshape(B, H, W, 2)
        return _sample_normalized(image, grid, mode, padding_mode)


def homography_warp(image: torch.Tensor, src_H_tgt: torch.Tensor, mode: str = "bilinear",
                    padding_mode: str = "zeros", eps: float = 1e-7) -> Tuple[torch.Tensor, torch.Tensor]:
    """Warp by a homography in pixel coordinates: ``out(p) = image(pi(H p))``.

    Args:
        image: (B, C, H, W).
        src_H_tgt: (B, 3, 3) maps target (u, v, 1) to homogeneous source pixels.
        mode, padding_mode: as :func:`sample`.
        eps: third homogeneous coordinates <= eps are invalid (beyond the horizon).

    Returns:
        warped (B, C, H, W), valid (B, 1, H, W) bool.
    """
    _check_modes(mode, padding_mode)
    sizes = check_tensor(image, "image", ("B", "C", "H", "W"))
    check_tensor(src_H_tgt, "src_H_tgt", ("B", 3, 3), sizes)
    check_same_device(("image", image), ("src_H_tgt", src_H_tgt))
    dt = geometry_dtype(("image", image), ("src_H_tgt", src_H_tgt))
    H, W = image.shape[-2:]
    with _no_autocast(image.device):
        Hm = src_H_tgt.to(dt)
        M = torch.matmul(_pixel_to_normalized_matrix(H, W, Hm), Hm)  # (B, 3, 3)
        grid, in_front = _projective_grid(M, None, None, H, W, eps)
        return _sample_normalized(image, grid, mode, padding_mode, in_front)
