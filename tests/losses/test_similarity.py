
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from fmdepth.losses import (MINDSSC, NGF, LocalNCC, MutualInformation, correlation_ratio, local_ncc, mind_descriptor,
                            mind_ssc, mutual_information, ngf)


@pytest.fixture(scope="module")
def camera():
    """skimage's camera man, area-downsampled to (1, 1, 48, 48) float64 in [0, 1]."""
    img = torch.from_numpy(skimage.data.camera().astype(np.float64) / 255.0)[None, None]
    return F.interpolate(img, size=(48, 48), mode="area")


def _crop(img, dy=0, dx=0, m=4):
    h, w = img.shape[-2:]
    return img[..., m + dy:h - m + dy, m + dx:w - m + dx]


SHIFTS = [(0, 1), (0, -2), (3, 0), (-1, 0), (2, 2), (-3, 1)]


# --- NCC -----------------------------------------------------------------------------------------

def test_ncc_identity_affine_and_sign(camera, dtype):
    x = camera.to(dtype)
    tol = 1e-6 if dtype == torch.float64 else 1e-3  # float32 cancels in the near-flat sky windows
    eps = 1e-12 if dtype == torch.float64 else 1e-9
    assert local_ncc(x, x, eps=eps).item() == pytest.approx(1.0, abs=tol)
    for a, b in [(0.5, 0.2), (3.0, -1.0), (0.1, 0.9)]:
        assert local_ncc(x, a * x + b, eps=eps * a * a).item() == pytest.approx(1.0, abs=tol)
    assert local_ncc(x, 1 - x, eps=eps).item() == pytest.approx(-1.0, abs=tol)


def test_ncc_affine_invariance_with_default_eps(camera):
    y = torch.sqrt(camera)  # a different (non-affine) modality
    ref = local_ncc(camera, y).item()
    for a, b in [(0.8, 0.1), (1.5, -0.2)]:
        assert local_ncc(a * camera + b, y).item() == pytest.approx(ref, abs=1e-2)


@pytest.mark.parametrize("dy, dx", SHIFTS)
def test_ncc_optimal_at_zero_displacement(camera, dy, dx):
    moving = 0.7 * camera + 0.1
    zero = local_ncc(_crop(camera), _crop(moving))
    assert local_ncc(_crop(camera), _crop(moving, dy, dx)) < zero - 0.01


def test_ncc_range_flat_regions_and_gradients():
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    y = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    v = local_ncc(x, y, window=3)
    assert -1.0 <= v.item() <= 1.0
    flat = torch.full((1, 1, 10, 10), 0.4, requires_grad=True)
    other = torch.full((1, 1, 10, 10), 0.7, requires_grad=True)
    out = local_ncc(flat, other)
    out.backward()
    assert out.item() == 0.0
    assert torch.isfinite(flat.grad).all() and torch.isfinite(other.grad).all()


def test_ncc_window_by_hand():
    # window 1: every window is one pixel, variance 0 -> 0 everywhere
    x = torch.rand(1, 1, 5, 5)
    assert local_ncc(x, x, window=1).item() == 0.0
    # a 3x3 image with window 5: every (clipped) window holds all nine pixels -> the Pearson correlation
    a = torch.tensor([[0.1, 0.5, 0.2], [0.9, 0.3, 0.4], [0.6, 0.8, 0.7]], dtype=torch.float64)
    b = torch.tensor([[0.3, 0.1, 0.5], [0.2, 0.9, 0.4], [0.8, 0.6, 0.7]], dtype=torch.float64)
    pearson = np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1]
    full = local_ncc(a[None, None], b[None, None], window=5, eps=1e-15)
    assert full.item() == pytest.approx(pearson, abs=1e-9)


# --- MI ------------------------------------------------------------------------------------------

def test_mi_of_image_with_itself_is_its_entropy():
    # 8 levels at every 4th bin centre: the soft histogram keeps levels apart, MI(x, x) = H(x)
    levels = torch.arange(8, dtype=torch.float64) / 7
    idx = torch.randint(0, 8, (1, 1, 24, 24))
    x = levels[idx]
    counts = torch.bincount(idx.flatten(), minlength=8).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    assert mutual_information(x, x, bins=29).item() == pytest.approx(entropy, rel=1e-3)
    # independent images: MI close to 0
    y = levels[torch.randint(0, 8, (1, 1, 24, 24))]
    assert mutual_information(x, y, bins=29).item() < 0.1


def test_mi_invariant_to_bijective_remapping(camera):
    q = torch.round(camera * 7) / 7  # quantised to 8 levels
    perm = torch.randperm(8)
    remapped = (perm.double() / 7)[torch.round(q * 7).long()]
    ref = mutual_information(q, camera, bins=29).item()
    assert mutual_information(remapped, camera, bins=29).item() == pytest.approx(ref, rel=2e-3)
    # inversion 1 - x on the continuous image: bin centres are symmetric, so the same up to rounding
    ref32 = mutual_information(camera, camera ** 2).item()
    assert mutual_information(1 - camera, camera ** 2).item() == pytest.approx(ref32, rel=1e-6)


@pytest.mark.parametrize("dy, dx", SHIFTS)
def test_mi_optimal_at_zero_displacement(camera, dy, dx):
    moving = 1 - camera ** 2  # multimodal: non-linear, inverted intensities
    zero = mutual_information(_crop(camera), _crop(moving))
    assert mutual_information(_crop(camera), _crop(moving, dy, dx)) < zero - 0.05


def test_mi_mask_equals_crop(camera):
    y = camera.flip(-1)
    mask = torch.zeros_like(camera)
    mask[..., :, :24] = 1
    torch.testing.assert_close(mutual_information(camera, y, mask=mask),
                               mutual_information(camera[..., :24], y[..., :24]))
    torch.testing.assert_close(mutual_information(camera, y, mask=mask.bool()),
                               mutual_information(camera[..., :24], y[..., :24]))


def test_mi_constant_images_zero_with_finite_gradients():
    x = torch.full((2, 1, 8, 8), 0.3, requires_grad=True)
    y = torch.full((2, 1, 8, 8), 0.6, requires_grad=True)
    mi = mutual_information(x, y)
    mi.backward()
    assert mi.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


def test_mi_autocast_float32_result():
    x, y = torch.rand(1, 1, 16, 16).bfloat16(), torch.rand(1, 1, 16, 16).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mi = mutual_information(x, y)
    assert mi.dtype == torch.float32
    torch.testing.assert_close(mi, mutual_information(x.float(), y.float()))


# --- correlation ratio ---------------------------------------------------------------------------

def test_correlation_ratio_by_hand():
    # x takes two values (bins 0 and 31); y = 1, 3 in the first group, 5, 7 in the second:
    # Var(y) = 5, E[Var(y | x)] = 1 -> eta^2 = 0.8
    x = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 2, 2)
    y = torch.tensor([1.0, 3.0, 5.0, 7.0]).view(1, 1, 2, 2)
    assert correlation_ratio(x, y) == pytest.approx(0.8)
    mask = torch.tensor([True, False, True, False]).view(1, 1, 2, 2)  # one pixel per group: exact
    assert correlation_ratio(x, y, mask=mask) == pytest.approx(1.0)
    assert correlation_ratio(x, y, bins=2) == pytest.approx(0.8)


def test_correlation_ratio_functional_vs_independent(camera):
    x = camera.float()
    assert correlation_ratio(x, (x - 0.5) ** 2) > 0.99  # a non-monotonic function of x
    assert correlation_ratio(x, torch.rand_like(x)) < 0.05
    shuffled = x.flatten()[torch.randperm(x.numel())].view_as(x)
    assert correlation_ratio(x, shuffled) < 0.05
    # not symmetric: x is not a function of (x - 0.5)^2 (two x values per y)
    assert correlation_ratio((x - 0.5) ** 2 * 4, x) < correlation_ratio(x, (x - 0.5) ** 2)


def test_correlation_ratio_bad_input():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="constant"):
        correlation_ratio(x, torch.full_like(x, 0.5))
    with pytest.raises(ValueError, match="no pixel"):
        correlation_ratio(x, torch.rand_like(x), mask=torch.zeros(1, 1, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="bins"):
        correlation_ratio(x, x, bins=1)
    with pytest.raises(ValueError, match="y"):
        correlation_ratio(x, x[..., :4])


# --- NGF -----------------------------------------------------------------------------------------

def test_ngf_contrast_inversion_and_identity(camera):
    v = ngf(camera, camera).item()
    assert 0.0 < v <= 1.0
    assert ngf(camera, 1 - camera).item() == pytest.approx(v, rel=1e-12)
    assert ngf(camera, 0.3 * (1 - camera) ** 2).item() > 0.5 * v  # monotone remap keeps the edges


@pytest.mark.parametrize("dy, dx", SHIFTS)
def test_ngf_optimal_at_zero_displacement(camera, dy, dx):
    moving = 1 - camera
    zero = ngf(_crop(camera), _crop(moving))
    assert ngf(_crop(camera), _crop(moving, dy, dx)) < zero - 0.02


def test_ngf_by_hand():
    # x = ramp along u (gradient (0.5 * 2 * s, 0) = (s, 0) by central differences), y = ramp along v
    s = 0.1
    u = torch.arange(5, dtype=torch.float64)
    x = (s * u).expand(1, 1, 5, 5)
    y = x.transpose(-1, -2)
    assert ngf(x, y).item() == pytest.approx(0.0, abs=1e-15)  # orthogonal gradients
    eps = 0.05
    expected = (s * s / (s * s + eps * eps)) ** 2  # parallel gradients of magnitude s
    assert ngf(x, x, eps=eps).item() == pytest.approx(expected)
    flat = torch.full((1, 1, 5, 5), 0.5, requires_grad=True)
    out = ngf(flat, x)
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(flat.grad).all()


# --- MIND-SSC ------------------------------------------------------------------------------------

def test_mind_descriptor_by_hand(dtype):
    # horizontal ramp I = s u, radius 0, dilation 1: at an interior pixel the neighbours (0,+1),
    # (+1,0), (0,-1), (-1,0) differ from I by +s, 0, -s, 0; the 6 pair distances are
    # s^2, 4 s^2, s^2, s^2, 0, s^2 (min 0), their mean V = 4 s^2 / 3, MIND = exp(-D / V)
    s = 0.1
    img = (s * torch.arange(7, dtype=dtype)).expand(1, 1, 7, 7).contiguous()
    d = mind_descriptor(img, radius=0, dilation=1)
    assert d.shape == (1, 6, 7, 7) and d.dtype == dtype
    expected = torch.exp(-torch.tensor([1.0, 4.0, 1.0, 1.0, 0.0, 1.0], dtype=dtype) * 0.75)
    torch.testing.assert_close(d[0, :, 3, 3], expected)
    torch.testing.assert_close(d[0, :, 1:-1, 1:-1], expected.view(6, 1, 1).expand(6, 5, 5))


@pytest.mark.parametrize("b, c", [(1, 1), (2, 1), (2, 3)])
def test_mind_shapes_range_and_invariances(b, c):
    x = torch.rand(b, c, 20, 24, dtype=torch.float64)
    assert mind_descriptor(x).shape == (b, 6 * c, 20, 24)
    v = mind_ssc(x, torch.rand(b, c, 20, 24, dtype=torch.float64))
    assert 0.0 <= v.item() <= 1.0
    # invariant to affine intensity maps, including contrast inversion
    for y in (0.3 * x + 0.5, 1.0 - x, 2.0 * x - 1.0):
        assert mind_ssc(x, y).item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("dy, dx", SHIFTS)
def test_mind_optimal_at_zero_displacement_across_a_remap(camera, dy, dx):
    moving = 0.5 + 0.5 * torch.sin(2 * np.pi * 1.3 * camera + 0.7)  # non-monotonic remap
    zero = mind_ssc(_crop(camera), _crop(moving))
    assert mind_ssc(_crop(camera), _crop(moving, dy, dx)) < zero - 0.01


def test_mind_mask_and_constant_image(camera):
    y = camera ** 2
    full = mind_ssc(camera, y)
    ones = torch.ones(1, 1, 48, 48, dtype=torch.bool)
    torch.testing.assert_close(mind_ssc(camera, y, mask=ones), full)
    half = torch.zeros(1, 1, 48, 48)
    half[..., :24] = 1
    by_hand = 1 - (mind_descriptor(camera) - mind_descriptor(y)).abs()[..., :24].mean()
    torch.testing.assert_close(mind_ssc(camera, y, mask=half), by_hand)
    flat = torch.full((1, 1, 16, 16), 0.4)
    with pytest.raises(ValueError, match="constant"):
        mind_ssc(flat, torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="batch element 1 is constant"):
        mind_descriptor(torch.cat([torch.rand(1, 1, 16, 16), flat]))


# --- gradcheck / modules / errors / CUDA ----------------------------------------------------------

def test_gradcheck_similarities():
    x = torch.rand(1, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: local_ncc(a, b, window=3), (x, y))
    xi = (0.1 + 0.8 * torch.rand(1, 1, 4, 4, dtype=torch.float64)).requires_grad_(True)
    yi = (0.1 + 0.8 * torch.rand(1, 1, 4, 4, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: mutual_information(a, b, bins=8), (xi, yi))
    assert torch.autograd.gradcheck(lambda a, b: ngf(a, b), (x, y))
    xm = torch.rand(1, 1, 7, 8, dtype=torch.float64, requires_grad=True)
    ym = torch.rand(1, 1, 7, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: mind_ssc(a, b, radius=1, dilation=1), (xm, ym))


def test_modules_equal_functions(camera):
    y = camera ** 2
    torch.testing.assert_close(LocalNCC(5)(camera, y), local_ncc(camera, y, 5))
    torch.testing.assert_close(MutualInformation(16)(camera, y), mutual_information(camera, y, 16))
    torch.testing.assert_close(NGF(0.02)(camera, y), ngf(camera, y, 0.02))
    torch.testing.assert_close(MINDSSC(2, 3)(camera, y), mind_ssc(camera, y, 2, 3))


@pytest.mark.parametrize("call, name", [
    (lambda: local_ncc(torch.rand(8, 8), torch.rand(8, 8)), "x"),
    (lambda: local_ncc(torch.rand(1, 1, 8, 8), torch.rand(1, 2, 8, 8)), "y"),
    (lambda: local_ncc(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), window=4), "window"),
    (lambda: mutual_information(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), bins=1), "bins"),
    (lambda: mutual_information(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), sigma=0.0), "sigma"),
    (lambda: mutual_information(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), mask=torch.ones(1, 8, 8)), "mask"),
    (lambda: ngf(torch.rand(1, 1, 2, 8), torch.rand(1, 1, 2, 8)), "x"),
    (lambda: ngf(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), eps=0), "eps"),
    (lambda: mind_ssc(torch.rand(1, 8, 8), torch.rand(1, 8, 8)), "x"),
    (lambda: mind_ssc(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9)), "y"),
    (lambda: mind_ssc(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), mask=torch.ones(1, 2, 8, 8)), "mask"),
    (lambda: mind_descriptor(torch.rand(1, 1, 8, 8), radius=-1), "radius"),
    (lambda: mind_descriptor(torch.rand(1, 1, 8, 8), dilation=0), "dilation"),
])
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()


def test_cuda_parity(cuda_device, camera):
    x = camera.float()
    y = (1 - camera ** 2).float()
    for fn in (local_ncc, mutual_information, ngf):
        torch.testing.assert_close(fn(x.to(cuda_device), y.to(cuda_device)).cpu(), fn(x, y), rtol=1e-4, atol=1e-5)
    with torch.autocast("cuda", dtype=torch.float16):
        mi = mutual_information(x.to(cuda_device).half(), y.to(cuda_device).half())
    assert mi.dtype == torch.float32 and torch.isfinite(mi)


def test_ncc_and_ngf_under_cpu_autocast(camera):
    x, y = camera.float().bfloat16(), (1 - camera ** 2).float().bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ncc_v, ngf_v = local_ncc(x, y), ngf(x, y)
    assert ncc_v.dtype == torch.float32 and ngf_v.dtype == torch.float32
    torch.testing.assert_close(ncc_v, local_ncc(x.float(), y.float()))
    torch.testing.assert_close(ngf_v, ngf(x.float(), y.float()))
