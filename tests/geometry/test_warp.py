"""Tests for fmdepth.geometry.warp: known values, agreement between paths, gradients, errors."""
import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F

from fmdepth.geometry import (affine_warp, backproject, flow_warp, homography_warp, inverse_warp,
                              invert_intrinsics, normalized_affine_to_pixel, pixel_affine_to_normalized,
                              pixel_grid, pose_vec_to_matrix, project, sample)

_spec = importlib.util.spec_from_file_location("geom_helpers", os.path.join(os.path.dirname(__file__), "helpers.py"))
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
make_K, eye4 = _helpers.make_K, _helpers.eye4


def _random_pose(batch, dtype, device="cpu", rot=0.05, trans=0.2):
    return pose_vec_to_matrix(torch.randn(batch, 3, dtype=dtype, device=device) * rot,
                              torch.randn(batch, 3, dtype=dtype, device=device) * trans)


# ----------------------------------------------------------------------------- identity / shapes
@pytest.mark.parametrize("batch,channels,height,width", [(1, 1, 5, 6), (3, 3, 8, 11), (2, 16, 1, 7)])
def test_inverse_warp_identity_returns_image(device, dtype, batch, channels, height, width):
    image = torch.rand(batch, channels, height, width, dtype=dtype, device=device)
    depth = torch.rand(batch, 1, height, width, dtype=dtype, device=device) * 50 + 0.1
    K = make_K(batch, height, width, dtype, device)
    warped, valid = inverse_warp(image, depth, eye4(batch, dtype, device), K)
    assert warped.shape == image.shape and warped.dtype == dtype
    assert valid.shape == (batch, 1, height, width) and valid.dtype == torch.bool
    atol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(warped, image, rtol=0, atol=atol)
    assert bool(valid.all())


def test_flow_and_affine_and_homography_identity(device, dtype):
    image = torch.rand(2, 3, 7, 9, dtype=dtype, device=device)
    atol = 1e-6 if dtype == torch.float32 else 1e-12
    for warped, valid in [flow_warp(image, torch.zeros(2, 2, 7, 9, dtype=dtype, device=device)),
                          affine_warp(image, torch.eye(3, dtype=dtype, device=device)[:2].expand(2, 2, 3)),
                          homography_warp(image, torch.eye(3, dtype=dtype, device=device).expand(2, 3, 3))]:
        torch.testing.assert_close(warped, image, rtol=0, atol=atol)
        assert bool(valid.all())


# ----------------------------------------------------------------------------- known values
def test_fronto_parallel_plane_translation_moves_by_fx_t_over_Z(dtype):
    B, H, W, Z, tx = 2, 12, 20, 5.0, 0.3
    K = make_K(B, H, W, dtype, fx=50.0)
    depth = torch.full((B, 1, H, W), Z, dtype=dtype)
    src_T_tgt = eye4(B, dtype)
    src_T_tgt[:, 0, 3] = tx
    pix = project(backproject(depth, invert_intrinsics(K)), K, src_T_tgt)
    grid = pixel_grid(H, W, dtype=dtype)
    shift = pix - grid
    torch.testing.assert_close(shift[..., 0], torch.full_like(shift[..., 0], 50.0 * tx / Z), rtol=0, atol=1e-4)
    torch.testing.assert_close(shift[..., 1], torch.zeros_like(shift[..., 1]), rtol=0, atol=1e-4)
    # The fused warp samples exactly there: a 3 px shift of the image.
    image = torch.rand(B, 3, H, W, dtype=dtype)
    warped, valid = inverse_warp(image, depth, src_T_tgt, K)
    atol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(warped[..., :W - 3], image[..., 3:], rtol=0, atol=atol)
    assert bool(valid[..., :W - 3].all()) and not bool(valid[..., W - 3 + 1:].any())
    assert torch.count_nonzero(warped[..., W - 2:]) == 0  # zeros padding outside


def test_one_pixel_flow_known_value(dtype):
    image = torch.arange(12, dtype=dtype).view(1, 1, 3, 4)
    flow = torch.zeros(1, 2, 3, 4, dtype=dtype)
    flow[:, 1] = 1.0  # sample one row below
    warped, valid = flow_warp(image, flow)
    expected = torch.tensor([[4, 5, 6, 7], [8, 9, 10, 11], [0, 0, 0, 0]], dtype=dtype)
    torch.testing.assert_close(warped[0, 0], expected)
    assert valid[0, 0].tolist() == [[True] * 4, [True] * 4, [False] * 4]
    flow = torch.zeros(1, 2, 3, 4, dtype=dtype)
    flow[:, 0] = 0.25  # a quarter pixel right: linear interpolation along the row
    warped, _ = flow_warp(image, flow, padding_mode="border")
    torch.testing.assert_close(warped[0, 0, :, :3], image[0, 0, :, :3] + 0.25)


def test_sample_known_values():
    image = torch.arange(6.0).view(1, 1, 2, 3)
    pix = torch.tensor([[[[0.0, 0.0], [2.0, 1.0], [0.5, 0.5], [2.5, 0.0], [-0.1, 0.0]]]])
    warped, valid = sample(image, pix)
    torch.testing.assert_close(warped.flatten()[:3], torch.tensor([0.0, 5.0, 2.0]))
    assert valid.flatten().tolist() == [True, True, True, False, False]
    with pytest.raises(ValueError, match="mode"):
        sample(image, pix, mode="cubic")
    with pytest.raises(ValueError, match="padding_mode"):
        sample(image, pix, padding_mode="wrap")


def test_affine_warp_known_values(dtype):
    image = torch.arange(20, dtype=dtype).view(1, 1, 4, 5)
    # transpose-like map: target (u, v) samples source (v, u) -- integer, exact
    A = torch.tensor([[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]], dtype=dtype)
    warped, valid = affine_warp(image, A)
    expected = torch.zeros(4, 5, dtype=dtype)
    expected[:, :4] = image[0, 0, :4, :4].t()
    torch.testing.assert_close(warped[0, 0], expected)
    assert valid[0, 0, :, :4].all() and not valid[0, 0, :, 4].any()
    # (B, 3, 3) accepted; translation by half a pixel averages neighbours
    A3 = torch.eye(3, dtype=dtype)[None].clone()
    A3[0, 0, 2] = 0.5
    warped, _ = affine_warp(image, A3)
    torch.testing.assert_close(warped[0, 0, :, :4], (image[0, 0, :, :4] + image[0, 0, :, 1:]) / 2)


def test_affine_matches_torch_affine_grid_and_conversions_roundtrip(dtype):
    B, H, W = 2, 6, 9
    image = torch.rand(B, 2, H, W, dtype=dtype)
    theta = torch.tensor([[[0.9, 0.1, 0.05], [-0.1, 1.1, 0.0]], [[1.0, 0.0, -0.2], [0.05, 0.8, 0.1]]], dtype=dtype)
    A = normalized_affine_to_pixel(theta, H, W)
    assert A.shape == (B, 3, 3)
    torch.testing.assert_close(A[:, 2], torch.tensor([[0.0, 0.0, 1.0]] * B, dtype=dtype))
    torch.testing.assert_close(pixel_affine_to_normalized(A, H, W), theta)
    reference = F.grid_sample(image, F.affine_grid(theta, [B, 2, H, W], align_corners=True), align_corners=True)
    torch.testing.assert_close(affine_warp(image, A)[0], reference)


def test_homography_known_values(dtype):
    image = torch.arange(48, dtype=dtype).view(1, 1, 6, 8)
    Hm = torch.diag(torch.tensor([2.0, 2.0, 1.0], dtype=dtype))[None]  # out(u, v) = img(2u, 2v)
    warped, valid = homography_warp(image, Hm)
    torch.testing.assert_close(warped[0, 0, :3, :4], image[0, 0, ::2, ::2])
    assert valid[0, 0, :3, :4].all() and not valid[0, 0, 3:].any()
    # projective scaling: H * 2 is the same homography
    torch.testing.assert_close(homography_warp(image, Hm * 2)[0], warped)
    # points mapped beyond the horizon (third coordinate <= 0) are invalid
    Hneg = torch.eye(3, dtype=dtype)[None].clone()
    Hneg[0, 2] = torch.tensor([0.0, -1.0, 2.5], dtype=dtype)  # w = 2.5 - v
    _, valid = homography_warp(image, Hneg)
    assert not valid[0, 0, 3:].any()


# ----------------------------------------------------------------------------- agreement
def test_backproject_project_round_trip(device, dtype, tol):
    B, H, W = 2, 5, 7
    K = make_K(B, H, W, dtype, device)
    depth = torch.rand(B, 1, H, W, dtype=dtype, device=device) * 10 + 0.5
    points = backproject(depth, invert_intrinsics(K))
    assert points.shape == (B, 3, H, W)
    torch.testing.assert_close(points[:, 2:], depth, rtol=tol[0], atol=tol[1])
    pix = project(points, K)
    assert pix.shape == (B, H, W, 2)
    torch.testing.assert_close(pix, pixel_grid(H, W, device, dtype).expand(B, H, W, 2),
                               rtol=0, atol=1e-4 if dtype == torch.float32 else 1e-9)


def test_fused_inverse_warp_matches_backproject_project_sample(device, dtype):
    B, H, W = 3, 9, 13
    K = make_K(B, H, W, dtype, device)
    image = torch.rand(B, 4, H, W, dtype=dtype, device=device)
    depth = torch.rand(B, 1, H, W, dtype=dtype, device=device) * 5 + 1
    T = _random_pose(B, dtype, device)
    warped, valid = inverse_warp(image, depth, T, K)
    pix = project(backproject(depth, invert_intrinsics(K)), K, T)
    ref, ref_valid = sample(image, pix)
    atol = 2e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(warped, ref, rtol=0, atol=atol)
    assert 0 < int(valid.sum()) < valid.numel()
    assert (valid != ref_valid).sum() <= 1  # may differ only by rounding at the border


def test_depth_warp_equals_equivalent_flow_warp(dtype):
    B, H, W = 2, 10, 12
    K = make_K(B, H, W, dtype)
    image = torch.rand(B, 3, H, W, dtype=dtype)
    depth = torch.rand(B, 1, H, W, dtype=dtype) * 4 + 2
    T = _random_pose(B, dtype)
    pix = project(backproject(depth, invert_intrinsics(K)), K, T)
    flow = (pix - pixel_grid(H, W, dtype=dtype)).permute(0, 3, 1, 2)  # (B, 2, H, W)
    w1, v1 = inverse_warp(image, depth, T, K)
    w2, v2 = flow_warp(image, flow)
    torch.testing.assert_close(w1, w2, rtol=0, atol=2e-5 if dtype == torch.float32 else 1e-10)
    assert (v1 != v2).sum() <= 1


# ----------------------------------------------------------------------------- gradients
def test_gradcheck_inverse_warp_image_depth_pose():
    B, H, W = 2, 5, 6
    d = torch.float64
    K = make_K(B, H, W, d)
    image = torch.rand(B, 2, H, W, dtype=d, requires_grad=True)
    depth = (torch.rand(B, 1, H, W, dtype=d) * 2 + 3).requires_grad_()
    axisangle = (torch.randn(B, 3, dtype=d) * 0.05).requires_grad_()
    translation = (torch.randn(B, 3, dtype=d) * 0.2).requires_grad_()

    K = K.requires_grad_()

    def fn(image, depth, axisangle, translation, K):
        return inverse_warp(image, depth, pose_vec_to_matrix(axisangle, translation), K)[0]

    assert torch.autograd.gradcheck(fn, (image, depth, axisangle, translation, K), eps=1e-6, atol=1e-6,
                                    fast_mode=True)


def test_inverse_warp_without_autograd_and_without_depth_grad():
    B, H, W = 2, 6, 7
    K = make_K(B, H, W)
    image, depth, T = torch.rand(B, 3, H, W), torch.rand(B, 1, H, W) + 1, _random_pose(B, torch.float32)
    expected, _ = inverse_warp(image, depth, T, K)
    with torch.inference_mode():
        torch.testing.assert_close(inverse_warp(image, depth, T, K)[0], expected)
    # only the pose needs a gradient (e.g. a frozen depth network)
    axisangle = torch.zeros(B, 3, requires_grad=True)
    warped, _ = inverse_warp(image, depth, pose_vec_to_matrix(axisangle, T[:, :3, 3]), K)
    warped.sum().backward()
    assert axisangle.grad is not None and torch.isfinite(axisangle.grad).all()


def test_gradcheck_flow_affine_homography():
    d = torch.float64
    image = torch.rand(1, 2, 5, 6, dtype=d, requires_grad=True)
    flow = (torch.rand(1, 2, 5, 6, dtype=d) * 2 - 1).requires_grad_()
    # generic values: no target pixel may land exactly on a pixel centre (bilinear kinks there)
    A = torch.tensor([[[0.953, 0.107, 0.311], [-0.047, 1.041, 0.219]]], dtype=d, requires_grad=True)
    Hm = torch.tensor([[[1.013, 0.051, 0.307], [0.021, 0.968, 0.113], [0.011, 0.0047, 1.0]]], dtype=d,
                      requires_grad=True)
    assert torch.autograd.gradcheck(lambda i, f: flow_warp(i, f)[0], (image, flow))
    assert torch.autograd.gradcheck(lambda i, a: affine_warp(i, a)[0], (image, A))
    assert torch.autograd.gradcheck(lambda i, h: homography_warp(i, h)[0], (image, Hm))


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_nonpositive_depth_and_points_behind_camera_are_masked_and_finite(padding_mode):
    B, H, W = 2, 6, 8
    K = make_K(B, H, W)
    image = torch.rand(B, 3, H, W, requires_grad=True)
    depth = torch.rand(B, 1, H, W) * 3 + 0.5
    depth[:, :, 0, :3] = 0.0
    depth[:, :, 1, :3] = -2.0
    depth[:, :, 2, 0] = 1e-30
    depth.requires_grad_()
    # move the camera 2 m forward: points nearer than 2 m end up behind the source camera
    axisangle = torch.zeros(B, 3, requires_grad=True)
    translation = torch.tensor([[0.0, 0.0, -2.0]] * B, requires_grad=True)
    warped, valid = inverse_warp(image, depth, pose_vec_to_matrix(axisangle, translation), K,
                                 padding_mode=padding_mode)
    assert not valid[:, :, 0, :3].any() and not valid[:, :, 1, :3].any()
    assert not valid[depth.detach() < 2.0].any()
    assert torch.isfinite(warped).all()
    (warped * torch.rand_like(warped)).sum().backward()
    for t in (image, depth, axisangle, translation):
        assert torch.isfinite(t.grad).all()


# ----------------------------------------------------------------------------- precision
def test_autocast_bfloat16_cpu_runs_and_matches_float32():
    B, H, W = 2, 8, 10
    K = make_K(B, H, W)
    image = torch.rand(B, 3, H, W)
    depth = torch.rand(B, 1, H, W) * 3 + 1
    T = _random_pose(B, torch.float32)
    reference, ref_valid = inverse_warp(image, depth, T, K)
    conv = torch.nn.Conv2d(3, 3, 1).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        conv.bias.zero_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image_bf16 = conv(image)  # autocast output, bfloat16
        assert image_bf16.dtype == torch.bfloat16
        warped, valid = inverse_warp(image_bf16, depth.bfloat16(), T, K)
        flowed, _ = flow_warp(image_bf16, torch.zeros(B, 2, H, W))
    assert warped.dtype == torch.bfloat16 and flowed.dtype == torch.bfloat16
    torch.testing.assert_close(warped.float(), reference, rtol=0, atol=3e-2)
    assert (valid != ref_valid).float().mean() < 0.05


def test_low_precision_image_with_float32_geometry(dtype):
    image = torch.rand(1, 2, 5, 6, dtype=torch.float16)
    warped, _ = flow_warp(image, torch.zeros(1, 2, 5, 6))
    assert warped.dtype == torch.float16
    torch.testing.assert_close(warped, image)


# ----------------------------------------------------------------------------- bad input
def _good(B=2, H=5, W=6):
    return (torch.rand(B, 3, H, W), torch.rand(B, 1, H, W) + 1, eye4(B), make_K(B, H, W))


@pytest.mark.parametrize("case,name", [
    (lambda i, d, T, K: (i[0], d, T, K), "image_src"),                 # rank 3
    (lambda i, d, T, K: (i, d[:, :, :4], T, K), "depth_tgt"),          # height mismatch
    (lambda i, d, T, K: (i, d.repeat(1, 2, 1, 1), T, K), "depth_tgt"),  # 2 channels
    (lambda i, d, T, K: (i, d[:1], T, K), "depth_tgt"),                # batch mismatch
    (lambda i, d, T, K: (i, d, T[:, :3], K), "src_T_tgt"),             # (B, 3, 4)
    (lambda i, d, T, K: (i, d, T, K[:1]), "K"),                        # batch mismatch
    (lambda i, d, T, K: (i, d, T, K[0]), "K"),                         # (3, 3)
    (lambda i, d, T, K: (i, d.double(), T, K), "depth_tgt"),           # dtype mismatch
    (lambda i, d, T, K: (i, d.long(), T, K), "depth_tgt"),             # integer depth
    (lambda i, d, T, K: (i, d, T, torch.zeros_like(K)), "K"),          # singular
    (lambda i, d, T, K: (i, d, T, K * torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1)), "K"),  # fy = 0
    (lambda i, d, T, K: (i, d.index_fill(3, torch.tensor([2]), float("nan")), T, K), "depth_tgt"),
    (lambda i, d, T, K: (i, d.index_fill(2, torch.tensor([1]), float("inf")), T, K), "depth_tgt"),
])
def test_inverse_warp_bad_input_names_argument(case, name):
    args = case(*_good())
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        inverse_warp(*args)


def test_bad_input_other_functions():
    image, depth, T, K = _good()
    with pytest.raises(ValueError, match=r"^depth: expected shape \(B, 1, H, W\)"):
        backproject(depth[0], invert_intrinsics(K))
    with pytest.raises(ValueError, match=r"^depth: expected finite"):
        backproject(depth.clone().fill_(float("nan")), invert_intrinsics(K))
    with pytest.raises(ValueError, match=r"^K_inv"):
        backproject(depth, K[:, :2])
    with pytest.raises(ValueError, match=r"^points"):
        project(depth, K)
    with pytest.raises(ValueError, match=r"^src_T_tgt"):
        project(backproject(depth, invert_intrinsics(K)), K, T[:1])
    with pytest.raises(ValueError, match=r"^pix: expected shape \(B, H, W, 2\)"):
        sample(image, torch.rand(2, 5, 6, 3))
    with pytest.raises(ValueError, match=r"^flow: expected shape \(B, 2, H, W\)"):
        flow_warp(image, torch.rand(2, 2, 6, 6))
    with pytest.raises(ValueError, match=r"^src_A_tgt: expected shape \(B, 2, 3\) or \(B, 3, 3\)"):
        affine_warp(image, torch.rand(2, 2, 2))
    with pytest.raises(ValueError, match=r"^src_H_tgt"):
        homography_warp(image, torch.rand(2, 2, 3))
    with pytest.raises(ValueError, match=r"^flow: expected dtype"):
        flow_warp(image, torch.zeros(2, 2, 5, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^image_src"):
        inverse_warp(image.numpy(), depth, T, K)


# ----------------------------------------------------------------------------- CUDA parity
def test_cuda_parity(cuda_device):
    B, H, W = 2, 24, 40
    K = make_K(B, H, W)
    image = torch.rand(B, 3, H, W)
    depth = torch.rand(B, 1, H, W) * 5 + 1
    T = _random_pose(B, torch.float32)
    flow = torch.randn(B, 2, H, W)
    cpu = [inverse_warp(image, depth, T, K), flow_warp(image, flow)]
    gpu = [inverse_warp(image.to(cuda_device), depth.to(cuda_device), T.to(cuda_device), K.to(cuda_device)),
           flow_warp(image.to(cuda_device), flow.to(cuda_device))]
    for (wc, vc), (wg, vg) in zip(cpu, gpu):
        torch.testing.assert_close(wg.cpu(), wc, rtol=0, atol=1e-4)
        assert (vg.cpu() != vc).sum() <= 2
    with torch.autocast("cuda", dtype=torch.float16):
        half = image.to(cuda_device).half()
        warped, _ = inverse_warp(half, depth.to(cuda_device).half(), T.to(cuda_device), K.to(cuda_device))
    assert warped.dtype == torch.float16
    torch.testing.assert_close(warped.float().cpu(), cpu[0][0], rtol=0, atol=5e-3)


def test_cuda_gradients_match_cpu(cuda_device):
    B, H, W = 2, 12, 16
    K = make_K(B, H, W)
    inputs = [torch.rand(B, 3, H, W), torch.rand(B, 1, H, W) * 5 + 1, torch.randn(B, 3) * 0.05, torch.randn(B, 3) * 0.1]
    grads = []
    for dev in ("cpu", cuda_device):
        leaves = [t.clone().to(dev).requires_grad_() for t in inputs]
        warped, _ = inverse_warp(leaves[0], leaves[1], pose_vec_to_matrix(leaves[2], leaves[3]), K.to(dev))
        warped.square().sum().backward()
        grads.append([t.grad.cpu() for t in leaves])
    for gc, gg in zip(*grads):
        torch.testing.assert_close(gg, gc, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("o", [(True, False, False), (False, True, False), (False, False, True), (True, True, True),
                               (True, False, True)])
def test_dihedral_flow_commutes_with_warping_and_undo_inverts_it(o):
    from fmdepth.geometry import dihedral_flow, dihedral_image, flow_warp, undo_dihedral_flow

    g = torch.Generator().manual_seed(0)
    moving = torch.rand(2, 3, 12, 12, generator=g)
    flow = 2 * torch.randn(2, 2, 12, 12, generator=g)
    ref = dihedral_image(flow_warp(moving, flow)[0], *o)
    got = flow_warp(dihedral_image(moving, *o), dihedral_flow(flow, *o))[0]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(undo_dihedral_flow(dihedral_flow(flow, *o), *o), flow)
    with pytest.raises(ValueError, match="flow"):
        dihedral_flow(torch.zeros(1, 3, 4, 4), *o)
