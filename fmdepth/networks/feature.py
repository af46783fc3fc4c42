"""FeatureNet: the auto-encoder whose encoder features define the feature-metric loss.

A ResNet encoder (ResNet50 by default) and a decoder *without* skip connections (otherwise the
image could bypass the bottleneck) that reconstructs the input image at ``num_scales`` scales
with a sigmoid. The encoder's feature levels are what the depth system compares between
target and warped source frames; FeatureNet's own objective (reconstruction + discriminative +
convergent regularisers, :func:`fmdepth.losses.featurenet_loss`) shapes them so that the
feature-metric loss has wide, smooth basins even on textureless surfaces.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .depth import DepthDecoder, check_image
from .resnet import ResnetEncoder


class FeatureNet(nn.Module):
    """Image auto-encoder exposing multi-scale encoder features.

    Args:
        num_layers: ResNet depth of the encoder (50 by default).
        pretrained: ``"none"``, ``"imagenet"`` or the path of a ResNet state_dict (encoder only).
        num_scales: number of reconstruction scales (4 by default).
        input_norm: normalisation inside the encoder: ``"imagenet"`` (default), ``"monodepth2"``
            or ``"none"`` (FeatDepth's auto-encoder sees the image in [0, 1] as is).

    Shape:
        encode(image: (B, 3, H, W) in [0, 1], levels=None) -> list of encoder features up to the
        deepest requested level: level i is (B, num_ch_enc[i], H/2**(i+1), W/2**(i+1)).
        forward(image) -> (features: 5 levels, reconstructions: [(B, 3, H, W),
        (B, 3, H/2, W/2), ...] in [0, 1], scale 0 first).

    Example:
        >>> net = FeatureNet(num_layers=18)
        >>> feats, recons = net(torch.rand(1, 3, 64, 96))
        >>> tuple(feats[0].shape), tuple(recons[0].shape)
        ((1, 64, 32, 48), (1, 3, 64, 96))
    """

    def __init__(self, num_layers: int = 50, pretrained: str = "none", num_scales: int = 4,
                 input_norm: str = "imagenet"):
        super().__init__()
        self.num_layers = num_layers
        self.pretrained = pretrained
        self.num_scales = num_scales
        self.input_norm = input_norm
        self.encoder = ResnetEncoder(num_layers, pretrained, num_input_images=1, input_norm=input_norm)
        self.num_ch_enc = self.encoder.num_ch_enc
        self.decoder = DepthDecoder(self.num_ch_enc, num_scales=num_scales, num_output_channels=3,
                                    use_skips=False)

    def config(self) -> dict:
        """Constructor arguments (to rebuild the module for a checkpoint)."""
        return {"num_layers": self.num_layers, "pretrained": self.pretrained,
                "num_scales": self.num_scales, "input_norm": self.input_norm}

    def encode(self, image: torch.Tensor, levels: Optional[Sequence[int]] = None) -> List[torch.Tensor]:
        """Encoder features of ``image`` (B, 3, H, W) in [0, 1].

        Args:
            levels: the levels the caller needs; only layers up to ``max(levels)`` are run and the
                returned list holds levels ``0..max(levels)``. None = all five.
        """
        check_image(image, "image")
        if levels is None:
            max_level = 4
        else:
            levels = list(levels)
            if not levels or any(lv not in range(5) for lv in levels):
                raise ValueError(f"levels must be a non-empty list of values in 0..4, got {levels!r}")
            max_level = max(levels)
        return self.encoder(image, max_level=max_level)

    def forward(self, image: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        features = self.encode(image)
        return features, self.decoder(features)
