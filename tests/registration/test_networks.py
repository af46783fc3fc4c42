"""Registration networks: identity at initialisation, shapes, bad inputs."""
import pytest
import torch

from fmdepth.networks import AffineRegressor, PatchDiscriminator, ResnetTranslator, UNetFlow


@pytest.mark.parametrize("size", [(32, 32), (40, 52)])
def test_unet_flow_identity_at_init(size):
    net = UNetFlow(2, depth=3, width=8)
    out = net(torch.rand(2, 1, *size), torch.rand(2, 1, *size))
    assert out.shape == (2, 2, *size)
    assert torch.count_nonzero(out) == 0  # zero-initialised head -> identity warp
    out.sum().backward()
    assert net.head.weight.grad is not None and net.head.weight.grad.abs().sum() > 0


def test_affine_regressor_identity_at_init():
    theta = AffineRegressor(2, width=8)(torch.rand(3, 1, 48, 64), torch.rand(3, 1, 48, 64))
    assert theta.shape == (3, 2, 3)
    expected = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 3)
    assert torch.allclose(theta, expected)


def test_translator_and_discriminator_shapes():
    t = ResnetTranslator(1, 1, width=8, num_blocks=1)
    y = t(torch.rand(2, 1, 30, 42))
    assert y.shape == (2, 1, 30, 42) and y.min() >= 0 and y.max() <= 1
    d = PatchDiscriminator(2, width=8)
    assert d(torch.rand(2, 2, 64, 64)).shape == (2, 1, 6, 6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="fixed/moving"):
        UNetFlow(2, depth=2, width=4)(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 20))
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        UNetFlow(2, depth=2, width=4)(torch.rand(1, 3, 16, 16), torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="image"):
        ResnetTranslator(1, 1, width=4, num_blocks=0)(torch.rand(1, 3, 16, 16))


def test_unet_flow_features_keep_their_scale_at_init():
    # He init: the decoder output feeding the (zero) head keeps the input's order of magnitude
    # (ratio 0.91 here); with PyTorch's default conv init it shrinks to 0.10
    torch.manual_seed(0)
    net = UNetFlow(2, depth=4, width=16)
    feats = {}
    net.refine.register_forward_hook(lambda mod, i, o: feats.setdefault("refine", o))
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        net(x, torch.rand(2, 1, 64, 64))
    ratio = float(feats["refine"].pow(2).mean().sqrt() / x.pow(2).mean().sqrt())
    assert 0.3 < ratio < 3.0, ratio
