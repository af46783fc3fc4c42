"""PoseNet: relative camera motion between stacked frames (axis-angle + translation).

A ResNet encoder takes the frames stacked along channels (conv1 adapted, see
:class:`~fmdepth.networks.resnet.ResnetEncoder`); a small convolutional head on the 1/32 level
regresses 6 numbers per pixel, averaged over the image and scaled by ``output_scale`` (0.01, as
published) so that the initial motion is close to identity.

Convention used by the depth system (as in Monodepth2): for frames stacked in time order
``[earlier, later]``, ``pose_vec_to_matrix(axisangle, translation)`` is ``later_T_earlier``; the
system inverts it when the source frame is the earlier one, so the pose net always sees time
running forward.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from .resnet import ResnetEncoder

POSE_SCALE = 0.01  # default output scaling (keeps the initial motion small; Monodepth2/FeatDepth)


class PoseDecoder(nn.Module):
    """1x1 squeeze, two 3x3 convs (ReLU), 1x1 to 6 channels, spatial mean, x output_scale.

    Shape:
        forward(feature: (B, C, h, w)) -> (axisangle (B, 3), translation (B, 3))
    """

    def __init__(self, in_channels: int, hidden: int = 256, output_scale: float = POSE_SCALE):
        super().__init__()
        self.output_scale = output_scale
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 6, kernel_size=1),
        )

    def forward(self, feature: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.net(feature).mean(dim=(2, 3)) * self.output_scale  # (B, 6)
        return out[:, :3], out[:, 3:]


class PoseNet(nn.Module):
    """Relative pose from ``num_frames`` stacked images.

    Args:
        num_layers: ResNet depth of the encoder (18 by default).
        pretrained: ``"none"``, ``"imagenet"`` or the path of a ResNet state_dict (conv1 is
            repeated over the frames and divided by ``num_frames``).
        num_frames: frames stacked along the channel axis (2 by default).
        output_scale: factor on the regressed 6-vector (0.01 by default, as published).
        input_norm: normalisation inside the encoder: ``"imagenet"`` (default), ``"monodepth2"``
            (``(x - 0.45) / 0.225`` on all channels, for Monodepth2 / FeatDepth weights) or ``"none"``.

    Shape:
        forward(frames: (B, 3 * num_frames, H, W) in [0, 1]) -> (axisangle (B, 3),
        translation (B, 3)), already scaled by ``output_scale``.

    Example:
        >>> net = PoseNet()
        >>> [tuple(t.shape) for t in net(torch.rand(2, 6, 64, 96))]
        [(2, 3), (2, 3)]
    """

    def __init__(self, num_layers: int = 18, pretrained: str = "none", num_frames: int = 2,
                 output_scale: float = POSE_SCALE, input_norm: str = "imagenet"):
        super().__init__()
        if not isinstance(num_frames, int) or num_frames < 2:
            raise ValueError(f"num_frames must be an integer >= 2, got {num_frames!r}")
        if not output_scale > 0:
            raise ValueError(f"output_scale must be > 0, got {output_scale!r}")
        self.num_layers = num_layers
        self.pretrained = pretrained
        self.num_frames = num_frames
        self.output_scale = output_scale
        self.input_norm = input_norm
        self.encoder = ResnetEncoder(num_layers, pretrained, num_input_images=num_frames,
                                     input_norm=input_norm)
        self.decoder = PoseDecoder(self.encoder.num_ch_enc[-1], output_scale=output_scale)

    def config(self) -> dict:
        """Constructor arguments (to rebuild the module for a checkpoint)."""
        return {"num_layers": self.num_layers, "pretrained": self.pretrained,
                "num_frames": self.num_frames, "output_scale": self.output_scale,
                "input_norm": self.input_norm}

    def forward(self, frames: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        channels = 3 * self.num_frames
        if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or frames.shape[1] != channels:
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise ValueError(f"frames must be (B, {channels}, H, W) ({self.num_frames} stacked RGB "
                             f"images), got {shape}")
        return self.decoder(self.encoder(frames)[-1])
