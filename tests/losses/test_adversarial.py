import math

import pytest
import torch

from fmdepth.losses import GANLoss, discriminator_loss, gan_loss, generator_loss


def test_lsgan_by_hand():
    pred = torch.tensor([[0.5], [1.5]])
    assert gan_loss(pred, True).item() == pytest.approx(0.25)   # (0.25 + 0.25) / 2
    assert gan_loss(pred, False).item() == pytest.approx(1.25)  # (0.25 + 2.25) / 2


def test_vanilla_by_hand():
    zero = torch.zeros(2, 1, 3, 3)
    assert gan_loss(zero, True, "vanilla").item() == pytest.approx(math.log(2))
    big = torch.full((1, 1, 2, 2), 30.0)
    assert gan_loss(big, True, "vanilla").item() == pytest.approx(0.0, abs=1e-9)
    assert gan_loss(big, False, "vanilla").item() == pytest.approx(30.0, rel=1e-6)


def test_list_of_outputs_is_averaged_and_helpers():
    a, b = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 2, 2)
    torch.testing.assert_close(gan_loss([a, b], True), (gan_loss(a, True) + gan_loss(b, True)) / 2)
    real, fake = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    for mode in ("lsgan", "vanilla"):
        torch.testing.assert_close(discriminator_loss(real, fake, mode),
                                   0.5 * (gan_loss(real, True, mode) + gan_loss(fake, False, mode)))
        torch.testing.assert_close(generator_loss(fake, mode), gan_loss(fake, True, mode))
        torch.testing.assert_close(GANLoss(mode)(fake, False), gan_loss(fake, False, mode))


def test_generator_gradient_pushes_towards_real():
    pred = torch.zeros(1, 1, 2, 2, requires_grad=True)
    generator_loss(pred).backward()
    assert (pred.grad < 0).all()


@pytest.mark.parametrize("call, name", [
    (lambda: gan_loss(torch.rand(2, 1), True, mode="wgan"), "mode"),
    (lambda: gan_loss([], True), "pred"),
    (lambda: gan_loss([torch.rand(2, 1), "x"], True), r"pred\[1\]"),
    (lambda: GANLoss("hinge"), "mode"),
])
def test_bad_input(call, name):
    with pytest.raises(ValueError, match=rf"^{name}"):
        call()
