"""Tests for fmdepth.geometry.pose."""
import math

import pytest
import torch

from fmdepth.geometry import compose_pose, invert_pose, pose_vec_to_matrix


def _random_vecs(batch, dtype, device="cpu"):
    return torch.randn(batch, 3, dtype=dtype, device=device) * 0.7, torch.randn(batch, 3, dtype=dtype, device=device)


def test_shape_and_rigid_structure(device, dtype, tol):
    axisangle, translation = _random_vecs(4, dtype, device)
    T = pose_vec_to_matrix(axisangle, translation)
    assert T.shape == (4, 4, 4) and T.dtype == dtype and T.device.type == device.type
    R = T[:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=dtype, device=device).expand(4, 3, 3),
                               rtol=tol[0], atol=10 * tol[1])
    torch.testing.assert_close(T[:, 3], torch.tensor([0, 0, 0, 1.0], dtype=dtype, device=device).expand(4, 4))
    torch.testing.assert_close(T[:, :3, 3], translation)


def test_quarter_turn_about_z_maps_x_to_y(dtype):
    T = pose_vec_to_matrix(torch.tensor([[0, 0, math.pi / 2]], dtype=dtype), torch.tensor([[1.0, 2.0, 3.0]], dtype=dtype))
    x = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=dtype)
    torch.testing.assert_close(T[0] @ x, torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=dtype))


def test_invert_flag_equals_matrix_inverse(dtype, tol):
    axisangle, translation = _random_vecs(5, dtype)
    T = pose_vec_to_matrix(axisangle, translation)
    T_inv = pose_vec_to_matrix(axisangle, translation, invert=True)
    torch.testing.assert_close(T_inv, torch.linalg.inv(T), rtol=tol[0], atol=10 * tol[1])
    torch.testing.assert_close(invert_pose(T), T_inv, rtol=tol[0], atol=tol[1])
    torch.testing.assert_close(compose_pose(T, T_inv), torch.eye(4, dtype=dtype).expand(5, 4, 4),
                               rtol=tol[0], atol=10 * tol[1])


def test_composition_matches_axis_angle_addition_about_one_axis(dtype, tol):
    axis = torch.tensor([[0.3, -0.5, 0.8]], dtype=dtype)
    axis = axis / axis.norm()
    zero = torch.zeros(1, 3, dtype=dtype)
    a_T_b = pose_vec_to_matrix(axis * 0.4, zero)
    b_T_c = pose_vec_to_matrix(axis * 0.9, zero)
    torch.testing.assert_close(compose_pose(a_T_b, b_T_c), pose_vec_to_matrix(axis * 1.3, zero),
                               rtol=tol[0], atol=10 * tol[1])
    # translations compose as a_T_b applied to b's translation
    t1, t2 = torch.randn(1, 3, dtype=dtype), torch.randn(1, 3, dtype=dtype)
    a_T_c = compose_pose(pose_vec_to_matrix(axis * 0.4, t1), pose_vec_to_matrix(zero, t2))
    torch.testing.assert_close(a_T_c[:, :3, 3], t1 + (a_T_b[:, :3, :3] @ t2.unsqueeze(-1)).squeeze(-1),
                               rtol=tol[0], atol=10 * tol[1])


def test_zero_rotation_has_finite_gradients_and_gradcheck():
    axisangle = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    translation = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    T = pose_vec_to_matrix(axisangle, translation, invert=True)
    torch.testing.assert_close(T[:, :3, :3], torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    T.square().sum().backward()
    assert torch.isfinite(axisangle.grad).all()
    for invert in (False, True):
        assert torch.autograd.gradcheck(lambda a, t: pose_vec_to_matrix(a, t, invert=invert),
                                        (torch.randn(2, 3, dtype=torch.float64, requires_grad=True), translation))


def test_bad_input():
    with pytest.raises(ValueError, match=r"^axisangle: expected shape \(B, 3\)"):
        pose_vec_to_matrix(torch.zeros(2, 1, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"^translation"):
        pose_vec_to_matrix(torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"^translation: expected dtype"):
        pose_vec_to_matrix(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^T: expected shape \(B, 4, 4\)"):
        invert_pose(torch.eye(4))
    with pytest.raises(ValueError, match=r"^b_T_c"):
        compose_pose(torch.eye(4)[None], torch.eye(4).expand(2, 4, 4))
