"""VGG19 feature extractor returning relu1_1 ... relu5_1 (the Neural Best-Buddies hierarchy).

Only the convolutional trunk up to ``relu5_1`` is built (the 100M-parameter classifier never is),
with torchvision's module indices, so a torchvision ``vgg19`` state_dict (``features.N.*`` keys)
loads directly. Images go in as floats in [0, 1]; ImageNet normalisation happens inside.

Weights (``pretrained``):

* ``"none"``: random initialisation (torchvision's VGG init: Kaiming-normal fan-out, zero bias),
  drawn from its own generator seeded with ``seed`` so the same seed gives the same network
  whatever the global RNG state.
* ``"imagenet"``: torchvision's ``VGG19_Weights.IMAGENET1K_V1`` (downloaded into the torch hub
  cache). A failed download raises :class:`~fmdepth.networks.resnet.PretrainedWeightsError`; the
  network is never left silently random when weights were asked for.
* a path to a local state_dict (torchvision ``vgg19`` keys, optionally wrapped under
  ``"state_dict"``/``"model"``), read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
from typing import Dict, List

import torch
from torch import nn

from .resnet import IMAGENET_MEAN, IMAGENET_STD, PretrainedWeightsError, load_state_dict_file

# torchvision's VGG19 ("E") trunk up to conv5_1: channel counts, "M" = 2x2 max-pool.
_VGG19_PREFIX = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512]
# index (in torchvision's ``features`` Sequential) of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
RELU_INDICES = (1, 6, 11, 20, 29)
LEVEL_NAMES = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
LEVEL_CHANNELS = (64, 128, 256, 512, 512)


class VGG19Features(nn.Module):
    """VGG19 trunk giving the five ``reluN_1`` feature maps.

    Args:
        pretrained: ``"none"`` (seeded random init), ``"imagenet"`` or a state_dict path.
        seed: seed of the random initialisation (``pretrained="none"`` only).

    Shapes:
        forward(image (B, 3, H, W) in [0, 1]) -> list of 5 tensors; level ``l`` (0-based) is
        (B, LEVEL_CHANNELS[l], H // 2**l, W // 2**l).

    Example:
        >>> net = VGG19Features(pretrained="none")
        >>> [tuple(f.shape) for f in net(torch.rand(1, 3, 32, 32))][-1]
        (1, 512, 2, 2)
    """

    def __init__(self, pretrained: str = "none", seed: int = 0) -> None:
        super().__init__()
        if not isinstance(pretrained, str) or not pretrained:
            raise ValueError(f"pretrained must be 'none', 'imagenet' or a state_dict path, got {pretrained!r}")
        layers: List[nn.Module] = []
        in_ch = 3
        for item in _VGG19_PREFIX:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, item, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                in_ch = item
        self.features = nn.Sequential(*layers)  # indices 0..29 as in torchvision.models.vgg19
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.pretrained = pretrained
        if pretrained == "none":
            self._random_init(seed)
        elif pretrained == "imagenet":
            self.load_vgg_weights(_imagenet_state_dict(), "torchvision ImageNet VGG19")
        else:
            if not os.path.isfile(pretrained):
                raise FileNotFoundError(
                    f"VGG19 weights file not found: {pretrained!r} (expected 'none', 'imagenet' or the "
                    f"path of a torchvision vgg19 state_dict)")
            self.load_vgg_weights(load_state_dict_file(pretrained), pretrained)
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def _random_init(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for m in self.features:
                if isinstance(m, nn.Conv2d):
                    fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                    std = (2.0 / fan_out) ** 0.5  # kaiming_normal_(mode="fan_out", relu)
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
                    m.bias.zero_()

    def load_vgg_weights(self, state_dict: Dict[str, torch.Tensor], source: str) -> None:
        """Load the ``features.N.*`` entries of a torchvision vgg19 state_dict (rest ignored)."""
        own = self.state_dict()
        wanted = {k: v for k, v in state_dict.items() if k in own}
        missing = sorted(set(own) - set(wanted))
        if missing:
            raise PretrainedWeightsError(
                f"{source}: not a torchvision vgg19 state_dict: missing {', '.join(missing[:4])}"
                f"{' ...' if len(missing) > 4 else ''}")
        for k, v in wanted.items():
            if v.shape != own[k].shape:
                raise PretrainedWeightsError(
                    f"{source}: '{k}' has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
        self.load_state_dict(wanted, strict=True)

    def forward(self, image: torch.Tensor) -> List[torch.Tensor]:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image: expected shape (B, 3, H, W) in [0, 1], got {tuple(image.shape)}")
        x = (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in RELU_INDICES:
                out.append(x)
        return out


def _imagenet_state_dict() -> Dict[str, torch.Tensor]:
    import torchvision

    weights = torchvision.models.VGG19_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=True)
    except Exception as exc:  # offline, SSL, corrupt cache ...
        raise PretrainedWeightsError(
            f"pretrained='imagenet': could not obtain torchvision's ImageNet VGG19 weights "
            f"({weights.url}): {type(exc).__name__}: {exc}. Without internet, download the file "
            f"elsewhere and pass its path (pretrained=<path>), or ask for pretrained='none' "
            f"(seeded random features; much weaker across appearance changes).") from exc
