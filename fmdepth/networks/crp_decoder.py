"""The disparity decoder of FeatDepth's released models (chained residual pooling, RefineNet-style).

Four stages from the 1/32 encoder level to 1/2 resolution. Stage ``k`` (4, 3, 2, 1) reduces the
encoder level ``k`` with a 1x1 conv (no bias; 512 channels at stage 4, ``width`` otherwise),
concatenates the upsampled output and disparity of the stage before it (stages 3..1), then runs
a reflection-padded 3x3 conv, leaky ReLU (slope 0.01), a chained-residual-pooling block
(``crp_stages`` times: 5x5 max-pool with stride 1, 1x1 conv, added to the running sum), a second
3x3 conv, leaky ReLU, x2 nearest upsampling, and a 3x3 conv + sigmoid for the disparity. During
training, dropout (p = 0.5) acts on encoder levels 3 and 4. Encoder level 0 is not used.

The native disparities are at 1/2, 1/4, 1/8 and 1/16 of the input. To keep the
:class:`~fmdepth.networks.DepthNet` contract (scale ``s`` at ``1/2**s``), each one is upsampled
x2 (bilinear, ``align_corners=False``), which is also how FeatDepth feeds them to its losses
(resized to the input size).
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .depth import Conv3x3


class ChainedResidualPool(nn.Module):
    """``x + sum_i p_i`` with ``p_0 = x`` and ``p_i = conv1x1_i(maxpool5x5(p_{i-1}))``.

    Shape:
        forward(x: (B, C, h, w)) -> (B, C, h, w)
    """

    def __init__(self, channels: int, stages: int = 4):
        super().__init__()
        self.pool = nn.MaxPool2d(kernel_size=5, stride=1, padding=2)
        self.pointwise = nn.ModuleList(nn.Conv2d(channels, channels, kernel_size=1, bias=False)
                                       for _ in range(stages))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = x
        for conv in self.pointwise:
            top = conv(self.pool(top))
            x = x + top
        return x


class CRPDepthDecoder(nn.Module):
    """FeatDepth's disparity decoder (see the module docstring).

    Args:
        num_ch_enc: channels of the five encoder levels (finest first).
        num_scales: outputs returned (1..4), scale 0 first.
        width: channels of the stages (256 in FeatDepth).
        crp_stages: pooling stages per chained-residual-pooling block (4 in FeatDepth).

    Attributes (index ``j`` = stage ``4 - j``, coarse first): ``reduce``, ``iconv``, ``crp``,
    ``merge``, ``heads``; ``heads[j]`` gives output scale ``3 - j``.

    Shape:
        forward(features: 5 levels (B, C_i, H/2**(i+1), W/2**(i+1))) -> ``num_scales``
        disparities [(B, 1, H, W), (B, 1, H/2, W/2), ...] in [0, 1].
    """

    def __init__(self, num_ch_enc: Sequence[int], num_scales: int = 4, width: int = 256,
                 crp_stages: int = 4):
        super().__init__()
        if len(num_ch_enc) != 5:
            raise ValueError("num_ch_enc must list 5 levels")
        if not 1 <= num_scales <= 4:
            raise ValueError(f"num_scales must be in [1, 4] for the FeatDepth decoder, got {num_scales}")
        self.num_ch_enc = list(num_ch_enc)
        self.num_scales = num_scales
        top = 2 * width  # stage 4 reduces to 512 channels in FeatDepth
        self.dropout = nn.Dropout(p=0.5)
        self.reduce = nn.ModuleList()
        self.iconv = nn.ModuleList()
        for j, level in enumerate((4, 3, 2, 1)):
            out = top if j == 0 else width
            self.reduce.append(nn.Conv2d(self.num_ch_enc[level], out, kernel_size=1, bias=False))
            self.iconv.append(Conv3x3(top if j == 0 else 2 * width + 1, width))
        self.crp = nn.ModuleList(ChainedResidualPool(width, crp_stages) for _ in range(4))
        self.merge = nn.ModuleList(Conv3x3(width, width) for _ in range(4))
        self.heads = nn.ModuleList(Conv3x3(width, 1) for _ in range(4))

    def forward(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        if len(features) != 5:
            raise ValueError(f"features must hold 5 encoder levels, got {len(features)}")
        native: List[torch.Tensor] = []  # coarse first: 1/16, 1/8, 1/4, 1/2
        x = disp = None
        for j, level in enumerate((4, 3, 2, 1)):
            feat = features[level]
            if level >= 3:
                feat = self.dropout(feat)
            y = self.reduce[j](feat)
            if x is not None:
                y = torch.cat([y, x, disp], dim=1)  # (B, 2*width + 1, h, w)
            y = F.leaky_relu(self.iconv[j](y), 0.01)
            y = F.leaky_relu(self.merge[j](self.crp[j](y)), 0.01)
            x = F.interpolate(y, scale_factor=2.0, mode="nearest")
            disp = torch.sigmoid(self.heads[j](x))
            native.append(disp)
        outputs = [F.interpolate(d, scale_factor=2.0, mode="bilinear", align_corners=False)
                   for d in reversed(native)]  # scale 0 (full resolution) first
        return outputs[:self.num_scales]
