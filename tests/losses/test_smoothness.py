import math

import pytest
import torch

from fmdepth.losses import (BilateralSmoothness, EdgeAwareSmoothness, FlowSmoothness, bilateral_smoothness,
                            edge_aware_smoothness, flow_smoothness)


def _ramp(h, w, fn=lambda u: u, dtype=torch.float64):
    u = torch.arange(w, dtype=dtype)
    return fn(u).expand(1, 1, h, w).clone()


@pytest.mark.parametrize("order", [1, 2])
def test_constant_disparity_is_zero(order, device, dtype):
    disp = torch.full((2, 1, 6, 7), 0.3, device=device, dtype=dtype, requires_grad=True)
    image = torch.rand(2, 3, 6, 7, device=device, dtype=dtype)
    loss = edge_aware_smoothness(disp, image, order=order)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(disp.grad).all()


def test_first_order_ramp_by_hand():
    # d = 1 + u on W = 5: mean 3, normalised slope 1/3 along x, 0 along y
    disp = _ramp(4, 5, lambda u: 1 + u)
    flat = torch.zeros(1, 3, 4, 5, dtype=torch.float64)
    assert edge_aware_smoothness(disp, flat).item() == pytest.approx(1 / 3)
    assert edge_aware_smoothness(disp, flat, normalize=False).item() == pytest.approx(1.0)
    # image ramp 0.1 per column in every channel: weight exp(-0.1) on the x term
    image = _ramp(4, 5, lambda u: 0.1 * u).expand(1, 3, 4, 5)
    assert edge_aware_smoothness(disp, image).item() == pytest.approx(math.exp(-0.1) / 3)
    # image gradient averaged over channels: one channel of 0.3 per column, two flat -> 0.1
    image2 = torch.cat([_ramp(4, 5, lambda u: 0.3 * u), torch.zeros(1, 2, 4, 5, dtype=torch.float64)], 1)
    assert edge_aware_smoothness(disp, image2).item() == pytest.approx(math.exp(-0.1) / 3)
    assert edge_aware_smoothness(disp, flat, order=2).item() == pytest.approx(0.0, abs=1e-15)


def test_second_order_quadratic_by_hand():
    # d = u^2 on W = 4: values 0, 1, 4, 9 (mean 3.5); second difference 2 everywhere
    disp = _ramp(3, 4, lambda u: u ** 2)
    flat = torch.zeros(1, 3, 3, 4, dtype=torch.float64)
    assert edge_aware_smoothness(disp, flat, order=2).item() == pytest.approx(2 / 3.5)
    assert edge_aware_smoothness(disp, flat, order=2, normalize=False).item() == pytest.approx(2.0)
    image = _ramp(3, 4, lambda u: 0.05 * u ** 2).expand(1, 3, 3, 4)  # |∂xx I| = 0.1
    assert edge_aware_smoothness(disp, image, order=2, normalize=False).item() == pytest.approx(2 * math.exp(-0.1))
    # mixed derivative: d = u * v has ∂xy = 1 and no pure second derivative
    u = torch.arange(4, dtype=torch.float64)
    v = torch.arange(3, dtype=torch.float64)
    disp_xy = (v[:, None] * u[None, :]).expand(1, 1, 3, 4)
    assert edge_aware_smoothness(disp_xy, flat, order=2, normalize=False).item() == pytest.approx(1.0)


def test_zero_disparity_finite_gradient():
    disp = torch.zeros(1, 1, 5, 5, requires_grad=True)
    loss = edge_aware_smoothness(disp, torch.rand(1, 3, 5, 5), order=2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(disp.grad).all()


def test_flow_smoothness_by_hand(device, dtype):
    a = 0.7
    flow = torch.zeros(2, 2, 5, 6, device=device, dtype=dtype)
    flow[:, 0] = a * torch.arange(6, device=device, dtype=dtype)  # u = a x, v = 0
    assert flow_smoothness(flow).item() == pytest.approx(a * a / 4)
    assert flow_smoothness(torch.full_like(flow, 3.0)).item() == 0.0


def _bilateral_brute_force(flow, image, alpha):
    h, w = flow.shape[-2:]
    terms = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            vals = []
            for y in range(h):
                for x in range(w):
                    yn, xn = y + dy, x + dx
                    if 0 <= yn < h and 0 <= xn < w:
                        df = (flow[:, :, y, x] - flow[:, :, yn, xn]).abs().sum(1)
                        di = (image[:, :, y, x] - image[:, :, yn, xn]).abs().mean(1)
                        vals.append(df * torch.exp(-alpha * di))
            terms.append(torch.stack(vals).mean())
    return torch.stack(terms).mean()


def test_bilateral_matches_8_neighbour_definition():
    flow = torch.randn(2, 2, 4, 5, dtype=torch.float64)
    image = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(bilateral_smoothness(flow, image, alpha=3.0), _bilateral_brute_force(flow, image, 3.0))


def test_bilateral_by_hand():
    flow = torch.zeros(1, 2, 4, 5, dtype=torch.float64)
    flow[:, 0] = torch.arange(5, dtype=torch.float64)  # |Δu| = 1 to every neighbour with a column step
    flat = torch.zeros(1, 1, 4, 5, dtype=torch.float64)
    # neighbours (0,±1), (±1,±1) see |Δu| = 1, (±1,0) see 0: mean 6/8
    assert bilateral_smoothness(flow, flat, alpha=5.0).item() == pytest.approx(0.75)
    image = _ramp(4, 5, lambda u: 0.2 * u)  # |ΔI| = 0.2 exactly where |Δu| = 1
    assert bilateral_smoothness(flow, image, alpha=5.0).item() == pytest.approx(0.75 * math.exp(-1.0))
    assert bilateral_smoothness(torch.full_like(flow, 2.0), image).item() == 0.0


def test_gradcheck_smoothness():
    disp = (torch.rand(1, 1, 5, 6, dtype=torch.float64) + 0.5).requires_grad_(True)
    image = torch.rand(1, 3, 5, 6, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda d: edge_aware_smoothness(d, image, order=1), (disp,))
    assert torch.autograd.gradcheck(lambda d: edge_aware_smoothness(d, image, order=2), (disp,))
    flow = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(flow_smoothness, (flow,))
    assert torch.autograd.gradcheck(lambda f: bilateral_smoothness(f, image[..., :4, :5]), (flow,))


def test_autocast_and_half_inputs():
    disp = torch.rand(1, 1, 6, 6).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = edge_aware_smoothness(disp, torch.rand(1, 3, 6, 6).bfloat16())
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_modules_equal_functions():
    disp, image = torch.rand(2, 1, 6, 7), torch.rand(2, 3, 6, 7)
    flow = torch.randn(2, 2, 6, 7)
    torch.testing.assert_close(EdgeAwareSmoothness(order=2)(disp, image), edge_aware_smoothness(disp, image, 2))
    torch.testing.assert_close(FlowSmoothness()(flow), flow_smoothness(flow))
    torch.testing.assert_close(BilateralSmoothness(2.0)(flow, image), bilateral_smoothness(flow, image, 2.0))


@pytest.mark.parametrize("call, name", [
    (lambda: edge_aware_smoothness(torch.rand(1, 2, 5, 5), torch.rand(1, 3, 5, 5)), "disp"),
    (lambda: edge_aware_smoothness(torch.rand(1, 1, 5, 5), torch.rand(1, 3, 5, 4)), "image"),
    (lambda: edge_aware_smoothness(torch.rand(1, 1, 5, 5), torch.rand(1, 3, 5, 5), order=3), "order"),
    (lambda: edge_aware_smoothness(torch.rand(1, 1, 2, 5), torch.rand(1, 3, 2, 5), order=2), "disp"),
    (lambda: flow_smoothness(torch.rand(1, 3, 5, 5)), "flow"),
    (lambda: bilateral_smoothness(torch.rand(1, 2, 5, 5), torch.rand(2, 3, 5, 5)), "image"),
    (lambda: bilateral_smoothness(torch.rand(1, 2, 5, 5), torch.rand(1, 3, 5, 5), alpha=-1), "alpha"),
])
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()


def test_cuda_parity(cuda_device):
    disp, image, flow = torch.rand(2, 1, 8, 9), torch.rand(2, 3, 8, 9), torch.randn(2, 2, 8, 9)
    for order in (1, 2):
        torch.testing.assert_close(edge_aware_smoothness(disp.to(cuda_device), image.to(cuda_device), order).cpu(),
                                   edge_aware_smoothness(disp, image, order))
    torch.testing.assert_close(bilateral_smoothness(flow.to(cuda_device), image.to(cuda_device)).cpu(),
                               bilateral_smoothness(flow, image))
