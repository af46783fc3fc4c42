"""Rigid poses as (B, 4, 4) matrices: ``a_T_b`` maps points of frame b into frame a."""
import torch
from kornia.geometry.conversions import axis_angle_to_rotation_matrix

from fmdepth.core.checks import check_same_device, check_tensor, geometry_dtype

__all__ = ["pose_vec_to_matrix", "invert_pose", "compose_pose"]


def _rigid(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Assemble (B, 4, 4) from R (B, 3, 3) and t (B, 3)."""
    top = torch.cat([R, t.unsqueeze(-1)], dim=-1)  # (B, 3, 4)
    bottom = top.new_zeros(top.shape[0], 1, 4)
    bottom[:, 0, 3] = 1.0
    return torch.cat([top, bottom], dim=1)


def pose_vec_to_matrix(axisangle: torch.Tensor, translation: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """Rigid transform from an axis-angle rotation and a translation (PoseNet's output).

    ``T = [R(axisangle) | translation]``; with ``invert=True`` the inverse
    ``[R^T | -R^T translation]`` (Monodepth2's convention for the frames before the target).
    Differentiable everywhere, including at zero rotation.

    Args:
        axisangle: (B, 3) rotation axis times angle in radians.
        translation: (B, 3).
        invert: return the inverse transform.

    Returns:
        (B, 4, 4).

    Example:
        >>> pose_vec_to_matrix(torch.zeros(2, 3), torch.tensor([[1., 0, 0]] * 2)).shape
        torch.Size([2, 4, 4])
    """
    sizes = check_tensor(axisangle, "axisangle", ("B", 3))
    check_tensor(translation, "translation", ("B", 3), sizes)
    check_same_device(("axisangle", axisangle), ("translation", translation))
    dt = geometry_dtype(("axisangle", axisangle), ("translation", translation))
    R = axis_angle_to_rotation_matrix(axisangle.to(dt))  # (B, 3, 3)
    t = translation.to(dt)
    if invert:
        R = R.transpose(1, 2)
        t = -torch.matmul(R, t.unsqueeze(-1)).squeeze(-1)
    return _rigid(R, t)


def invert_pose(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms in closed form: ``b_T_a`` from ``a_T_b``.

    Args:
        T: (B, 4, 4) rigid transforms (rotation block orthonormal).

    Returns:
        (B, 4, 4).
    """
    check_tensor(T, "T", ("B", 4, 4))
    R_inv = T[:, :3, :3].transpose(1, 2)
    t_inv = -torch.matmul(R_inv, T[:, :3, 3:]).squeeze(-1)
    return _rigid(R_inv, t_inv)


def compose_pose(a_T_b: torch.Tensor, b_T_c: torch.Tensor) -> torch.Tensor:
    """``a_T_c = a_T_b @ b_T_c``.

    Args:
        a_T_b: (B, 4, 4).
        b_T_c: (B, 4, 4).

    Returns:
        (B, 4, 4).
    """
    sizes = check_tensor(a_T_b, "a_T_b", ("B", 4, 4))
    check_tensor(b_T_c, "b_T_c", ("B", 4, 4), sizes)
    check_same_device(("a_T_b", a_T_b), ("b_T_c", b_T_c))
    geometry_dtype(("a_T_b", a_T_b), ("b_T_c", b_T_c))
    return torch.matmul(a_T_b, b_T_c)
