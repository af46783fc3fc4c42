"""Tests for fmdepth.geometry.integrate."""
import pytest
import torch

from fmdepth.geometry import flow_warp, integrate_velocity, jacobian_determinant


def test_constant_velocity_integrates_to_that_translation(dtype, tol):
    v = torch.zeros(2, 2, 9, 11, dtype=dtype)
    v[:, 0], v[:, 1] = 1.5, -0.75
    flow = integrate_velocity(v, steps=7)
    torch.testing.assert_close(flow, v, rtol=tol[0], atol=10 * tol[1])


def test_zero_velocity_gives_zero_flow(dtype):
    flow = integrate_velocity(torch.zeros(1, 2, 6, 7, dtype=dtype))
    assert torch.count_nonzero(flow) == 0


def test_steps_zero_returns_velocity_and_bad_input():
    v = torch.randn(1, 2, 4, 5)
    torch.testing.assert_close(integrate_velocity(v, steps=0), v)
    with pytest.raises(ValueError, match="steps"):
        integrate_velocity(v, steps=-1)
    with pytest.raises(ValueError, match=r"^velocity: expected shape \(B, 2, H, W\)"):
        integrate_velocity(torch.randn(1, 3, 4, 5))


def test_exp_of_minus_v_inverts_exp_of_v():
    """phi_v o phi_-v ~ identity for a smooth field (away from the borders)."""
    H, W = 24, 24
    y, x = torch.meshgrid(torch.linspace(-1, 1, H, dtype=torch.float64),
                          torch.linspace(-1, 1, W, dtype=torch.float64), indexing="ij")
    v = torch.stack([2.0 * torch.sin(torch.pi * y), 1.5 * torch.cos(torch.pi * x)])[None]  # (1, 2, H, W)
    forward, backward = integrate_velocity(v), integrate_velocity(-v)
    composed = backward + flow_warp(forward, backward, padding_mode="border")[0]  # displacement of phi_v o phi_-v
    assert composed[..., 4:-4, 4:-4].abs().max() < 0.1
    assert forward.abs().max() > 1.0  # the field really moves things
    det = jacobian_determinant(forward)
    assert (det > 0).all()  # diffeomorphic: no folding


def test_integrate_velocity_is_differentiable():
    v = (torch.randn(1, 2, 5, 6, dtype=torch.float64) * 0.3).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: integrate_velocity(v, steps=3), (v,), fast_mode=True)


def test_jacobian_determinant_known_values(dtype, tol):
    det = jacobian_determinant(torch.zeros(2, 2, 5, 6, dtype=dtype))
    assert det.shape == (2, 1, 5, 6)
    torch.testing.assert_close(det, torch.ones_like(det))
    y, x = torch.meshgrid(torch.arange(5, dtype=dtype), torch.arange(6, dtype=dtype), indexing="ij")
    # p -> (1.5 u + 0.2 v, 0.1 u + 0.5 v): det = 1.5*0.5 - 0.2*0.1 = 0.73, exact for a linear map
    flow = torch.stack([0.5 * x + 0.2 * y, 0.1 * x - 0.5 * y])[None]
    torch.testing.assert_close(jacobian_determinant(flow), torch.full((1, 1, 5, 6), 0.73, dtype=dtype),
                               rtol=tol[0], atol=10 * tol[1])
    # a reflection folds: det < 0
    assert (jacobian_determinant(torch.stack([-2 * x, 0 * y])[None]) < 0).all()
    with pytest.raises(ValueError, match="flow"):
        jacobian_determinant(torch.zeros(1, 2, 1, 5))
