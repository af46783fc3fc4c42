import pytest
import torch
import torch.nn.functional as F

from fmdepth.losses import (SSIM, PhotometricError, automask, min_reprojection, photometric_error, robust_l1,
                            ssim)

C1, C2 = 0.01 ** 2, 0.03 ** 2


def _reference_ssim(x, y):
    """The usual five-pool formulation (Monodepth2 style) to compare against."""
    pad = torch.nn.ReflectionPad2d(1)
    x, y = pad(x), pad(y)
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sx = F.avg_pool2d(x * x, 3, 1) - mu_x ** 2
    sy = F.avg_pool2d(y * y, 3, 1) - mu_y ** 2
    sxy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    return (2 * mu_x * mu_y + C1) * (2 * sxy + C2) / ((mu_x ** 2 + mu_y ** 2 + C1) * (sx + sy + C2))


@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (2, 3, 5, 7), (3, 2, 16, 9)])
def test_ssim_matches_reference(shape, device, dtype, tol):
    x = torch.rand(shape, device=device, dtype=dtype)
    y = torch.rand(shape, device=device, dtype=dtype)
    out = ssim(x, y)
    assert out.shape == shape and out.dtype == dtype
    rtol, atol = tol
    torch.testing.assert_close(out, _reference_ssim(x, y), rtol=rtol * 10, atol=atol * 10)


def test_ssim_identical_is_one_and_error_zero(device, dtype):
    x = torch.rand(2, 3, 6, 9, device=device, dtype=dtype)
    torch.testing.assert_close(ssim(x, x), torch.ones_like(x))
    assert photometric_error(x, x).abs().max().item() == 0.0
    # the robust L1 of identical images is sqrt(1e-6) = 1e-3 per pixel
    torch.testing.assert_close(photometric_error(x, x, robust=True),
                               torch.full((2, 1, 6, 9), 0.15e-3, device=device, dtype=dtype))


def test_ssim_constant_images_by_hand():
    # sigma = 0 everywhere: SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    x = torch.full((1, 1, 4, 5), 0.5)
    y = torch.full((1, 1, 4, 5), 0.25)
    expected = (2 * 0.5 * 0.25 + C1) / (0.5 ** 2 + 0.25 ** 2 + C1)
    torch.testing.assert_close(ssim(x, y), torch.full_like(x, expected))


def test_photometric_error_2x2_by_hand():
    # x = [[a, b], [c, d]]; reflection padding makes the window of pixel (0, 0) hold
    # d c d / b a b / d c d, mean (a + 2b + 2c + 4d) / 9; of pixel (1, 1): (4a + 2b + 2c + d) / 9.
    x = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]]], dtype=torch.float64)
    y = x + 0.1  # same variance and covariance, mean shifted: SSIM = (2 mx my + C1) / (mx^2 + my^2 + C1)
    err = photometric_error(x, y)
    s00 = (2 * 0.6 * 0.7 + C1) / (0.6 ** 2 + 0.7 ** 2 + C1)
    s11 = (2 * 0.4 * 0.5 + C1) / (0.4 ** 2 + 0.5 ** 2 + C1)
    assert err[0, 0, 0, 0].item() == pytest.approx(0.85 * (1 - s00) / 2 + 0.15 * 0.1, abs=1e-12)
    assert err[0, 0, 1, 1].item() == pytest.approx(0.85 * (1 - s11) / 2 + 0.15 * 0.1, abs=1e-12)


def test_l1_part_by_hand_mean_over_channels():
    pred = torch.tensor([[[[0.0, 1.0], [0.5, 0.25]], [[1.0, 1.0], [0.5, 0.75]]]])  # (1, 2, 2, 2)
    target = torch.zeros_like(pred)
    err = photometric_error(pred, target, ssim_weight=0.0)
    torch.testing.assert_close(err, torch.tensor([[[[0.5, 1.0], [0.5, 0.5]]]]))
    rob = photometric_error(pred, target, ssim_weight=0.0, robust=True)
    expected = ((pred ** 2 + 1e-6).sqrt()).mean(1, keepdim=True)
    torch.testing.assert_close(rob, expected)
    torch.testing.assert_close(robust_l1(torch.tensor(3.0), torch.tensor(-1.0)), torch.tensor((16 + 1e-6) ** 0.5))


def test_photometric_error_shape_and_weighting(device):
    a = torch.rand(3, 3, 8, 12, device=device)
    b = torch.rand(3, 3, 8, 12, device=device)
    err = photometric_error(a, b, ssim_weight=0.5)
    assert err.shape == (3, 1, 8, 12)
    dssim = ((1 - ssim(a, b)) / 2).clamp(0, 1).mean(1, keepdim=True)
    l1 = (a - b).abs().mean(1, keepdim=True)
    torch.testing.assert_close(err, 0.5 * dssim + 0.5 * l1)


def test_gradcheck_ssim_and_photometric_error():
    x = torch.rand(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ssim, (x, y))
    assert torch.autograd.gradcheck(lambda a, b: photometric_error(a, b, robust=True), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: photometric_error(a, b), (x, y))
    # smallest size (2 x 3: reflection folds every border back), and one input without grad
    small_x = torch.rand(1, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    small_y = torch.rand(1, 2, 2, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(ssim, (small_x, small_y))
    assert torch.autograd.gradcheck(lambda b: ssim(small_y, b), (small_x,))


def test_ssim_gradient_matches_autograd_of_reference():
    x = torch.rand(2, 3, 9, 11, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 3, 9, 11, dtype=torch.float64, requires_grad=True)
    w = torch.rand(2, 3, 9, 11, dtype=torch.float64)
    gx, gy = torch.autograd.grad((ssim(x, y) * w).sum(), (x, y))
    rx, ry = torch.autograd.grad((_reference_ssim(x, y) * w).sum(), (x, y))
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gy, ry)


@pytest.mark.parametrize("robust", [False, True])
def test_constant_images_finite_gradients(robust):
    for value_y in (0.5, 0.3):
        x = torch.full((1, 3, 6, 6), 0.5, requires_grad=True)
        y = torch.full((1, 3, 6, 6), value_y, requires_grad=True)
        err = photometric_error(x, y, robust=robust)
        err.mean().backward()
        assert torch.isfinite(err).all()
        assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


def test_autocast_cpu_bfloat16():
    x = torch.rand(2, 3, 8, 8).bfloat16()
    y = torch.rand(2, 3, 8, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = photometric_error(x, y)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, photometric_error(x.float(), y.float()))


def test_min_reprojection_picks_the_right_source():
    errors = torch.tensor([[[[0.3, 0.1]], [[0.2, 0.4]], [[0.5, 0.05]]]])  # (1, 3, 1, 2)
    errors.requires_grad_(True)
    value, index = min_reprojection(errors)
    assert value.shape == (1, 1, 1, 2) and index.shape == (1, 1, 1, 2)
    torch.testing.assert_close(value.detach(), torch.tensor([[[[0.2, 0.05]]]]))
    assert index.flatten().tolist() == [1, 2]
    value.sum().backward()
    assert errors.grad.flatten().tolist() == [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]


def test_automask_crafted_case():
    # pixel 0: best reprojection 0.1 beats best identity 0.2 -> keep
    # pixel 1: 0.4 loses to identity 0.3 -> drop
    # pixel 2: source 0 is worse than its identity (0.6 > 0.5) but the per-pixel minima decide: 0.15 < 0.2
    # pixel 3: exact tie -> dropped (identity wins ties)
    reproj = torch.tensor([[[[0.1, 0.5, 0.6, 0.2]], [[0.3, 0.4, 0.15, 0.25]]]])
    ident = torch.tensor([[[[0.2, 0.3, 0.5, 0.2]], [[0.5, 0.6, 0.2, 0.3]]]])
    mask = automask(reproj, ident, noise=0.0)
    assert mask.shape == (1, 1, 1, 4) and mask.dtype == torch.float32
    assert mask.flatten().tolist() == [1.0, 0.0, 1.0, 0.0]
    noisy = automask(reproj, ident)  # noise 1e-5 only decides the exact tie
    assert noisy.flatten()[:3].tolist() == [1.0, 0.0, 1.0]
    assert noisy.flatten()[3].item() in (0.0, 1.0)
    g = torch.Generator().manual_seed(3)
    a = automask(reproj, ident, generator=g)
    g.manual_seed(3)
    assert torch.equal(a, automask(reproj, ident, generator=g))


def test_automask_different_source_counts_and_no_grad():
    reproj = torch.rand(2, 2, 5, 6, requires_grad=True)
    ident = torch.rand(2, 3, 5, 6)
    mask = automask(reproj, ident)
    assert mask.shape == (2, 1, 5, 6) and not mask.requires_grad


def test_modules_equal_functions():
    x, y = torch.rand(2, 3, 7, 9), torch.rand(2, 3, 7, 9)
    torch.testing.assert_close(SSIM()(x, y), ssim(x, y))
    torch.testing.assert_close(PhotometricError(0.7, robust=True)(x, y), photometric_error(x, y, 0.7, True))
    assert "ssim_weight=0.7" in repr(PhotometricError(0.7))


@pytest.mark.parametrize("call, name", [
    (lambda: ssim(torch.rand(3, 8, 8), torch.rand(3, 8, 8)), "x"),
    (lambda: ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 7)), "y"),
    (lambda: ssim(torch.rand(1, 3, 1, 8), torch.rand(1, 3, 1, 8)), "x"),
    (lambda: photometric_error(torch.rand(1, 3, 8, 8), torch.rand(2, 3, 8, 8)), "target"),
    (lambda: photometric_error(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), ssim_weight=1.5), "ssim_weight"),
    (lambda: min_reprojection(torch.rand(2, 8, 8)), "errors"),
    (lambda: automask(torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 9)), "identity_errors"),
    (lambda: automask(torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 8), noise=-1), "noise"),
])
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()


def test_cuda_parity(cuda_device):
    x, y = torch.rand(2, 3, 10, 12), torch.rand(2, 3, 10, 12)
    cpu = photometric_error(x, y)
    gpu = photometric_error(x.to(cuda_device), y.to(cuda_device)).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-5)
    with torch.autocast("cuda", dtype=torch.float16):
        half = photometric_error(x.to(cuda_device).half(), y.to(cuda_device).half())
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
