"""DepthNet: ResNet encoder + multi-scale disparity decoder (skip connections, ELU, sigmoid).

The decoder goes from the 1/32 feature level back to full resolution in five steps; each step is
a reflection-padded 3x3 conv + ELU, a x2 nearest upsampling, concatenation with the encoder
feature of that resolution (none at full resolution) and a second conv + ELU. A 3x3 conv +
sigmoid gives a disparity in [0, 1] at each of the ``num_scales`` finest resolutions.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fmdepth.core.checks import check_tensor

from .resnet import ResnetEncoder

DEPTH_DECODERS = ("monodepth2", "featdepth")  # DepthNet(decoder=...): see DepthNet


class Conv3x3(nn.Module):
    """3x3 convolution with reflection padding (keeps the spatial size)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class ConvBlock(nn.Module):
    """Reflection-padded 3x3 conv followed by ELU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = Conv3x3(in_channels, out_channels)
        self.act = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2 upsampling (B, C, h, w) -> (B, C, 2h, 2w)."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def check_image(image: torch.Tensor, name: str = "image", channels: int = 3, multiple: int = 32) -> None:
    """ValueError unless ``image`` is (B, channels, H, W) with H and W multiples of ``multiple``."""
    check_tensor(image, name, ("B", channels, "H", "W"))
    h, w = image.shape[-2:]
    if h % multiple or w % multiple or h < 2 * multiple or w < 2 * multiple:
        raise ValueError(f"{name} height and width must be multiples of {multiple} and at least "
                         f"{2 * multiple} (the 1/{multiple} level needs 2 pixels for reflection "
                         f"padding), got {h}x{w}")


class DepthDecoder(nn.Module):
    """Multi-scale disparity decoder over the five encoder levels.

    Args:
        num_ch_enc: channels of the five encoder levels (finest first).
        num_scales: number of output scales (1..5); scale s has resolution 1/2**s.
        num_output_channels: channels of each output (1 for disparity).
        num_ch_dec: decoder channels at the five resolutions (full res first).

    Shape:
        forward(features: list of 5 (B, C_i, H/2**(i+1), W/2**(i+1))) -> list over scales
        [(B, out, H, W), (B, out, H/2, W/2), ...], scale 0 first, sigmoid outputs.
    """

    def __init__(self, num_ch_enc: Sequence[int], num_scales: int = 4, num_output_channels: int = 1,
                 num_ch_dec: Sequence[int] = (16, 32, 64, 128, 256), use_skips: bool = True):
        super().__init__()
        if len(num_ch_enc) != 5 or len(num_ch_dec) != 5:
            raise ValueError("num_ch_enc and num_ch_dec must list 5 levels each")
        if not 1 <= num_scales <= 5:
            raise ValueError(f"num_scales must be in [1, 5], got {num_scales}")
        self.num_scales = num_scales
        self.use_skips = use_skips
        self.num_ch_enc = list(num_ch_enc)
        self.num_ch_dec = list(num_ch_dec)
        self.upconv0 = nn.ModuleList()  # before upsampling, level i (i = 4 .. 0)
        self.upconv1 = nn.ModuleList()  # after upsampling (+ skip)
        for i in range(4, -1, -1):
            c_in = self.num_ch_enc[4] if i == 4 else self.num_ch_dec[i + 1]
            self.upconv0.append(ConvBlock(c_in, self.num_ch_dec[i]))
            c_in = self.num_ch_dec[i]
            if use_skips and i > 0:
                c_in += self.num_ch_enc[i - 1]
            self.upconv1.append(ConvBlock(c_in, self.num_ch_dec[i]))
        self.heads = nn.ModuleList(Conv3x3(self.num_ch_dec[s], num_output_channels)
                                   for s in range(num_scales))

    def forward(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        if len(features) != 5:
            raise ValueError(f"features must hold 5 encoder levels, got {len(features)}")
        outputs: List[torch.Tensor] = [None] * self.num_scales  # type: ignore[list-item]
        x = features[4]
        for step, i in enumerate(range(4, -1, -1)):
            x = upsample2x(self.upconv0[step](x))
            if self.use_skips and i > 0:
                x = torch.cat([x, features[i - 1]], dim=1)
            x = self.upconv1[step](x)
            if i < self.num_scales:
                outputs[i] = torch.sigmoid(self.heads[i](x))
        return outputs


class DepthNet(nn.Module):
    """Single-image disparity network: ResNet encoder + :class:`DepthDecoder`.

    Args:
        num_layers: ResNet depth of the encoder (18/34/50/101/152), 50 by default.
        pretrained: ``"none"``, ``"imagenet"`` or the path of a ResNet state_dict.
        num_scales: number of output scales (4 by default).
        input_norm: normalisation inside the encoder: ``"imagenet"`` (default), ``"monodepth2"``
            (``(x - 0.45) / 0.225``, for Monodepth2 / FeatDepth weights) or ``"none"``.
        decoder: ``"monodepth2"`` (default: :class:`DepthDecoder`, skip connections, ELU) or
            ``"featdepth"`` (:class:`~fmdepth.networks.crp_decoder.CRPDepthDecoder`, the decoder
            of FeatDepth's released models; at most 4 scales).

    Shape:
        forward(image: (B, 3, H, W) in [0, 1], H and W multiples of 32, >= 64) -> list of
        ``num_scales`` disparities in [0, 1]: [(B, 1, H, W), (B, 1, H/2, W/2), ...].

    Example:
        >>> net = DepthNet(num_layers=18)
        >>> [tuple(d.shape) for d in net(torch.rand(2, 3, 64, 96))]
        [(2, 1, 64, 96), (2, 1, 32, 48), (2, 1, 16, 24), (2, 1, 8, 12)]
    """

    def __init__(self, num_layers: int = 50, pretrained: str = "none", num_scales: int = 4,
                 input_norm: str = "imagenet", decoder: str = "monodepth2"):
        super().__init__()
        if decoder not in DEPTH_DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DEPTH_DECODERS)}, got {decoder!r}")
        self.num_layers = num_layers
        self.pretrained = pretrained
        self.num_scales = num_scales
        self.input_norm = input_norm
        self.decoder_name = decoder
        self.encoder = ResnetEncoder(num_layers, pretrained, num_input_images=1, input_norm=input_norm)
        if decoder == "featdepth":
            from .crp_decoder import CRPDepthDecoder

            self.decoder = CRPDepthDecoder(self.encoder.num_ch_enc, num_scales=num_scales)
        else:
            self.decoder = DepthDecoder(self.encoder.num_ch_enc, num_scales=num_scales)

    def config(self) -> dict:
        """Constructor arguments (to rebuild the module for a checkpoint)."""
        return {"num_layers": self.num_layers, "pretrained": self.pretrained,
                "num_scales": self.num_scales, "input_norm": self.input_norm,
                "decoder": self.decoder_name}

    def forward(self, image: torch.Tensor) -> List[torch.Tensor]:
        check_image(image, "image")
        return self.decoder(self.encoder(image))
