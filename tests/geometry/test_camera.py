"""Tests for fmdepth.geometry.camera."""
import pytest
import torch

from fmdepth.geometry import (backproject, disp_to_depth, intrinsics_pyramid, invert_intrinsics, project,
                              scale_intrinsics)


def _K(dtype=torch.float32, skew=0.0):
    return torch.tensor([[[721.5, skew, 609.6], [0.0, 721.5, 172.9], [0.0, 0.0, 1.0]]], dtype=dtype)


def test_scale_intrinsics_pixel_centre_convention(dtype):
    K = torch.tensor([[100.0, 0.0, 31.5], [0.0, 80.0, 15.5], [0.0, 0.0, 1.0]], dtype=dtype)  # centre of 64x32
    K2 = scale_intrinsics(K, 0.5, 0.5)
    expected = torch.tensor([[50.0, 0.0, 15.5], [0.0, 40.0, 7.5], [0.0, 0.0, 1.0]], dtype=dtype)  # centre of 32x16
    torch.testing.assert_close(K2, expected)
    # cx' = (cx + 0.5) * sx - 0.5 for a non-centred principal point; batched input keeps its shape
    Kb = _K(dtype).expand(3, 3, 3)
    Ks = scale_intrinsics(Kb, 0.25, 0.5)
    assert Ks.shape == (3, 3, 3)
    torch.testing.assert_close(Ks[:, 0, 2], torch.full((3,), (609.6 + 0.5) * 0.25 - 0.5, dtype=dtype))
    torch.testing.assert_close(Ks[:, 1, 1], torch.full((3,), 721.5 * 0.5, dtype=dtype))


def test_scaled_intrinsics_project_to_resized_pixel_positions(dtype):
    """A 3-D point lands at u at full resolution and at (u + 0.5) * s - 0.5 after resizing by s."""
    K = _K(dtype, skew=2.0)
    points = torch.tensor([[1.3, -0.4, 7.0], [-2.0, 0.5, 12.0]], dtype=dtype).t().reshape(1, 3, 1, 2)
    pix = project(points, K)
    for sx, sy in [(0.5, 0.5), (0.25, 0.125), (1.5, 2.0)]:
        pix_s = project(points, scale_intrinsics(K, sx, sy))
        scale = torch.tensor([sx, sy], dtype=dtype)
        torch.testing.assert_close(pix_s, (pix + 0.5) * scale - 0.5)


def test_intrinsics_pyramid():
    K = _K()
    levels = intrinsics_pyramid(K, 4)
    assert len(levels) == 4 and levels[0] is K
    for s, Ks in enumerate(levels):
        torch.testing.assert_close(Ks, scale_intrinsics(K, 1 / 2 ** s, 1 / 2 ** s))
    exact = intrinsics_pyramid(K, 3, height=375, width=1242)
    torch.testing.assert_close(exact[2], scale_intrinsics(K, (1242 // 4) / 1242, (375 // 4) / 375))
    with pytest.raises(ValueError, match="num_scales"):
        intrinsics_pyramid(K, 0)
    with pytest.raises(ValueError, match="height, width"):
        intrinsics_pyramid(K, 2, height=10)


def test_invert_intrinsics(dtype, tol):
    K = torch.cat([_K(dtype), _K(dtype, skew=3.0), torch.tensor([[[2.0, 0.1, 0.3], [0.2, 1.5, 0.4], [0.1, 0.0, 1.0]]],
                                                                  dtype=dtype)])
    K_inv = invert_intrinsics(K)
    torch.testing.assert_close(K_inv @ K, torch.eye(3, dtype=dtype).expand(3, 3, 3), rtol=tol[0], atol=10 * tol[1])
    torch.testing.assert_close(invert_intrinsics(K[0]), K_inv[0])
    with pytest.raises(ValueError, match=r"^K: expected invertible"):
        invert_intrinsics(torch.zeros(2, 3, 3, dtype=dtype))
    singular = _K(dtype).clone()
    singular[0, 1, 1] = 0.0
    with pytest.raises(ValueError, match=r"^K: expected invertible"):
        invert_intrinsics(singular)
    with pytest.raises(ValueError, match=r"^K: expected invertible"):
        invert_intrinsics(_K(dtype) * float("nan"))
    with pytest.raises(ValueError, match=r"^K: expected shape \(B, 3, 3\)"):
        invert_intrinsics(torch.eye(4)[None])


def test_invert_intrinsics_gradcheck():
    K = _K(torch.float64, skew=1.0).requires_grad_()
    assert torch.autograd.gradcheck(invert_intrinsics, (K,))
    # backproject is differentiable through K_inv too
    depth = torch.rand(1, 1, 3, 4, dtype=torch.float64) + 1
    assert torch.autograd.gradcheck(lambda k: backproject(depth, invert_intrinsics(k)), (K,))


def test_disp_to_depth():
    disp = torch.tensor([0.0, 0.5, 1.0])
    scaled, depth = disp_to_depth(disp, 0.1, 100.0)
    torch.testing.assert_close(depth[[0, 2]], torch.tensor([100.0, 0.1]))
    torch.testing.assert_close(scaled, 1 / depth)
    torch.testing.assert_close(scaled[1], torch.tensor((0.01 + 10.0) / 2))
    with pytest.raises(ValueError, match="min_depth"):
        disp_to_depth(disp, 1.0, 0.5)
    with pytest.raises(ValueError, match="disp"):
        disp_to_depth([0.5], 0.1, 10.0)
