"""GAN losses for translation-based registration (the translator is the generator).

``mode="lsgan"``: least squares, ``mean (D(.) - target)^2`` with target 1 (real) or 0 (fake), on raw
discriminator outputs. ``mode="vanilla"``: binary cross-entropy on logits (no sigmoid in the
discriminator). Discriminator outputs may be a tensor of any shape (e.g. PatchGAN (B, 1, h, w)) or a
list of such tensors (multi-scale discriminators; the losses are averaged).
"""
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GAN_MODES", "gan_loss", "discriminator_loss", "generator_loss", "GANLoss"]

GAN_MODES = ("lsgan", "vanilla")

Pred = Union[torch.Tensor, Sequence[torch.Tensor]]


def _check_mode(mode: str) -> None:
    if mode not in GAN_MODES:
        raise ValueError(f"mode: expected one of {GAN_MODES}, got {mode!r}")


def _as_list(pred: Pred, name: str):
    preds = [pred] if isinstance(pred, torch.Tensor) else list(pred) if isinstance(pred, (list, tuple)) else None
    if not preds:
        raise ValueError(f"{name}: expected a discriminator output tensor (B, ...) or a non-empty list of them, "
                         f"got {type(pred).__name__}")
    for i, p in enumerate(preds):
        if not isinstance(p, torch.Tensor) or not p.is_floating_point() or p.dim() == 0:
            raise ValueError(f"{name}[{i}]: expected a floating tensor of shape (B, ...), got "
                             f"{tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__}")
    return preds


def gan_loss(pred: Pred, target_is_real: bool, mode: str = "lsgan") -> torch.Tensor:
    """Adversarial loss of discriminator output(s) against an all-real or all-fake target.

    Args:
        pred: discriminator output (B, ...) (raw scores / logits), or a list of them.
        target_is_real: compare against 1 (True) or 0 (False).
        mode: ``"lsgan"`` (mean squared error) or ``"vanilla"`` (BCE with logits).

    Returns:
        scalar loss (mean over elements, averaged over the list).

    Example:
        >>> float(gan_loss(torch.ones(2, 1, 4, 4), True))
        0.0
    """
    _check_mode(mode)
    preds = _as_list(pred, "pred")
    total = None
    for p in preds:
        target = torch.full_like(p, 1.0 if target_is_real else 0.0)
        if mode == "lsgan":
            term = F.mse_loss(p, target)
        else:
            term = F.binary_cross_entropy_with_logits(p, target)
        total = term if total is None else total + term
    return total / len(preds)


def discriminator_loss(pred_real: Pred, pred_fake: Pred, mode: str = "lsgan") -> torch.Tensor:
    """``0.5 (gan_loss(D(real), True) + gan_loss(D(fake), False))``; detach the fake input upstream."""
    return 0.5 * (gan_loss(pred_real, True, mode) + gan_loss(pred_fake, False, mode))


def generator_loss(pred_fake: Pred, mode: str = "lsgan") -> torch.Tensor:
    """``gan_loss(D(G(x)), True)``: the generator wants its outputs classified real."""
    return gan_loss(pred_fake, True, mode)


class GANLoss(nn.Module):
    """Module wrapper of :func:`gan_loss`: ``forward(pred, target_is_real) -> scalar``."""

    def __init__(self, mode: str = "lsgan"):
        super().__init__()
        _check_mode(mode)
        self.mode = mode

    def forward(self, pred: Pred, target_is_real: bool) -> torch.Tensor:
        return gan_loss(pred, target_is_real, self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
