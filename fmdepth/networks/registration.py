"""Registration networks: U-Net flow generator, affine regressor, translator, PatchGAN.

All take images in [0, 1], accept any spatial size (inputs are padded internally to the network's
stride and outputs cropped back), and start at the identity transform: the flow generator's output
convolution and the affine regressor's last layer are zero-initialised (bias = identity).
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from fmdepth.core.checks import check_tensor


def _pad_to(x: torch.Tensor, multiple: int):
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


class _ConvAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(0.2, inplace=True))


class UNetFlow(nn.Module):
    """VoxelMorph-style 2-D U-Net that predicts a dense field from a (fixed, moving) pair.

    Encoder: ``depth`` stride-2 conv blocks; decoder: upsample, concatenate the skip, conv.
    Widths: ``width`` at full resolution, ``2 * width`` below (VoxelMorph's 16/32/32/32 for
    ``width=16``). The 3x3 output convolution is zero-initialised, so the field is 0 (identity
    warp) at initialisation.

    Args:
        in_channels: channels of fixed + moving together (2 for grey pairs).
        depth: number of down-sampling levels (inputs are padded to a multiple of ``2**depth``).
        width: base number of features.
        out_channels: 2 (dx, dy).

    Shape:
        forward(fixed (B, Cf, H, W), moving (B, Cm, H, W)) -> field (B, 2, H, W) in pixels of the
        input resolution (a displacement or a stationary velocity, as the model uses it).

    Example:
        >>> net = UNetFlow(2, depth=3, width=8)
        >>> net(torch.rand(1, 1, 40, 52), torch.rand(1, 1, 40, 52)).shape
        torch.Size([1, 2, 40, 52])
    """

    def __init__(self, in_channels: int = 2, depth: int = 4, width: int = 16, out_channels: int = 2) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be >= 1, got depth={depth}, width={width}")
        self.in_channels, self.depth, self.width = in_channels, depth, width
        enc_ch = [width] + [2 * width] * depth  # level 0 (full) .. depth
        self.stem = _ConvAct(in_channels, enc_ch[0])
        self.down = nn.ModuleList([_ConvAct(enc_ch[i], enc_ch[i + 1], stride=2) for i in range(depth)])
        self.up = nn.ModuleList()
        cur = enc_ch[depth]
        for i in range(depth - 1, -1, -1):
            out = 2 * width if i > 0 else width
            self.up.append(_ConvAct(cur + enc_ch[i], out))
            cur = out
        self.refine = _ConvAct(cur, width)
        for m in self.modules():  # He init for the leaky ReLUs: keeps the decoder features at the
            if isinstance(m, nn.Conv2d):  # input's scale (PyTorch's default init shrinks them ~10x)
                nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)
        self.head = nn.Conv2d(width, out_channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        if fixed.dim() != 4 or moving.dim() != 4 or fixed.shape[0] != moving.shape[0] \
                or fixed.shape[-2:] != moving.shape[-2:]:
            raise ValueError(f"fixed/moving: expected (B, C, H, W) of equal B, H, W, got "
                             f"{tuple(fixed.shape)} and {tuple(moving.shape)}")
        x = torch.cat([fixed, moving], dim=1)
        check_tensor(x, "cat(fixed, moving)", ("B", self.in_channels, "H", "W"))
        x, (h, w) = _pad_to(x, 2 ** self.depth)
        skips: List[torch.Tensor] = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        y = skips[-1]
        for i, block in enumerate(self.up):
            skip = skips[self.depth - 1 - i]
            y = F.interpolate(y, size=skip.shape[-2:], mode="nearest")
            y = block(torch.cat([y, skip], dim=1))
        return self.head(self.refine(y))[..., :h, :w]


class AffineRegressor(nn.Module):
    """Spatial-transformer localisation network: (fixed, moving) -> normalised affine theta.

    ``theta`` (B, 2, 3) follows ``F.affine_grid(..., align_corners=True)``: it maps normalised
    fixed-image coordinates to normalised moving-image coordinates. Convert it to a pixel affine
    with :func:`fmdepth.geometry.normalized_affine_to_pixel`. The last layer is zero-initialised
    with the identity as bias, so the regressor starts at the identity.

    Example:
        >>> AffineRegressor(2, width=8)(torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64)).shape
        torch.Size([2, 2, 3])
    """

    def __init__(self, in_channels: int = 2, width: int = 16, depth: int = 5) -> None:
        super().__init__()
        self.in_channels = in_channels
        layers: List[nn.Module] = []
        cin = in_channels
        for i in range(depth):
            cout = width * min(2 ** i, 8)
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(min(8, cout), cout),
                       nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(cin, 4 * width), nn.LeakyReLU(0.2, inplace=True), nn.Linear(4 * width, 6))
        nn.init.zeros_(self.fc[-1].weight)
        with torch.no_grad():
            self.fc[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        if fixed.dim() != 4 or moving.dim() != 4 or fixed.shape[0] != moving.shape[0]:
            raise ValueError(f"fixed/moving: expected (B, C, H, W) with equal B, got "
                             f"{tuple(fixed.shape)} and {tuple(moving.shape)}")
        if moving.shape[-2:] != fixed.shape[-2:]:
            moving = F.interpolate(moving, size=fixed.shape[-2:], mode="bilinear", align_corners=True)
        x = torch.cat([fixed, moving], dim=1)
        check_tensor(x, "cat(fixed, moving)", ("B", self.in_channels, "H", "W"))
        feat = self.features(x).mean(dim=(2, 3))  # (B, C)
        return self.fc(feat).view(-1, 2, 3)


class _ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch, affine=True), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetTranslator(nn.Module):
    """Image-to-image translator (CycleGAN-style ResNet generator) for modality translation.

    7x7 stem, ``num_down`` stride-2 convolutions, ``num_blocks`` residual blocks, transposed
    convolutions back up, 7x7 output with a sigmoid (images in [0, 1]). Translation must be
    (nearly) equivariant to geometry so that NeMAR's two paths agree; a fully convolutional
    network with reflection padding is.

    Shape: forward(image (B, in_channels, H, W)) -> (B, out_channels, H, W) in [0, 1].
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 32, num_blocks: int = 4,
                 num_down: int = 2) -> None:
        super().__init__()
        self.in_channels, self.num_down = in_channels, num_down
        layers: List[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, width, 7),
                                   nn.InstanceNorm2d(width, affine=True), nn.ReLU(inplace=True)]
        ch = width
        for _ in range(num_down):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(ch * 2, affine=True),
                       nn.ReLU(inplace=True)]
            ch *= 2
        layers += [_ResBlock(ch) for _ in range(num_blocks)]
        for _ in range(num_down):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(ch // 2, affine=True), nn.ReLU(inplace=True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_channels, 7), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        check_tensor(image, "image", ("B", self.in_channels, "H", "W"))
        x, (h, w) = _pad_to(image, 2 ** self.num_down)
        return self.net(x)[..., :h, :w]


class LocalTranslator(nn.Module):
    """A per-pixel intensity translator with a 5x5 receptive field, no normalisation.

    3x3 convolution, ``num_layers`` 1x1 convolutions (leaky ReLU), 3x3 output with a sigmoid.
    Suited to modality pairs related by a (possibly non-monotonic) intensity response, such as two
    cameras with different spectral responses: with a 5x5 receptive field it cannot move content
    by more than 2 px, so geometry is left to the registration network, and without instance
    normalisation it keeps absolute intensities (an instance-normalised translator, as
    :class:`ResnetTranslator`, sees each image's intensities only relative to that image's mean
    and spread, so it cannot represent a fixed response curve).

    Shape: forward(image (B, in_channels, H, W)) -> (B, out_channels, H, W) in [0, 1].
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 32, num_layers: int = 2) -> None:
        super().__init__()
        self.in_channels = in_channels
        layers: List[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, padding_mode="reflect"),
                                   nn.LeakyReLU(0.2)]
        for _ in range(num_layers):
            layers += [nn.Conv2d(width, width, 1), nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(width, out_channels, 3, padding=1, padding_mode="reflect"), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        check_tensor(image, "image", ("B", self.in_channels, "H", "W"))
        return self.net(image)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix): a map of real/fake logits, one per receptive-field patch.

    For a conditional GAN pass ``torch.cat([condition, image], 1)`` (``in_channels`` = both).

    Shape: forward(x (B, in_channels, H, W)) -> logits (B, 1, h, w).
    """

    def __init__(self, in_channels: int = 2, width: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        layers: List[nn.Module] = [nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        ch = width
        for i in range(1, num_layers + 1):
            cout = width * min(2 ** i, 8)
            stride = 2 if i < num_layers else 1
            layers += [nn.Conv2d(ch, cout, 4, stride=stride, padding=1), nn.InstanceNorm2d(cout, affine=True),
                       nn.LeakyReLU(0.2, True)]
            ch = cout
        layers += [nn.Conv2d(ch, 1, 4, stride=1, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", ("B", self.in_channels, "H", "W"))
        return self.net(x)
