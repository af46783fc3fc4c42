"""ResNet encoders (torchvision) returning the five feature levels a U-Net style decoder needs.

Images go in as floats in [0, 1]; normalisation happens inside the encoder (``input_norm``:
per-channel ImageNet mean/std by default; ``"monodepth2"`` is Monodepth2's and FeatDepth's
``(x - 0.45) / 0.225`` on every channel, ``"none"`` feeds the image as is, as FeatDepth's
auto-encoder does), so weights imported from those projects see what they were trained on. Several
frames can be stacked along the channel axis (``num_input_images``): conv1 then takes
``3 * num_input_images`` channels and, when weights are loaded, its 3-channel kernel is repeated
once per frame and divided by the number of frames, so a stack of identical frames gives the
same activations as one frame.

Weights (``pretrained``):

* ``"none"``: random initialisation (torchvision's default init).
* ``"imagenet"``: torchvision's ImageNet weights (downloaded into the torch hub cache). If they
  cannot be obtained a :class:`PretrainedWeightsError` says so; the encoder is never left
  silently random when weights were asked for.
* a path to a local ``state_dict`` file (a torchvision ResNet's keys; ``fc.*`` is ignored, and a
  ``"state_dict"``/``"model"`` wrapper or an ``"encoder."`` prefix is accepted). Read with
  ``torch.load(weights_only=True)``; missing or mismatched keys raise a clear error.
"""
from __future__ import annotations

import os
from typing import Dict, List, Union

import torch
from torch import nn
import torchvision

RESNET_DEPTHS = (18, 34, 50, 101, 152)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# input normalisation inside the encoders: name -> (mean, std) per RGB channel, None = identity
INPUT_NORMS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),  # torchvision's ImageNet statistics (fmdepth default)
    "monodepth2": ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),  # Monodepth2 / FeatDepth depth + pose
    "none": None,  # image in [0, 1] as is (FeatDepth's auto-encoder)
}


def check_input_norm(input_norm: str) -> str:
    """``input_norm`` if it is one of :data:`INPUT_NORMS`, else ValueError naming the choices."""
    if input_norm not in INPUT_NORMS:
        raise ValueError(f"input_norm must be one of {', '.join(INPUT_NORMS)}, got {input_norm!r}")
    return input_norm

_BUILDERS = {
    18: (torchvision.models.resnet18, "ResNet18_Weights"),
    34: (torchvision.models.resnet34, "ResNet34_Weights"),
    50: (torchvision.models.resnet50, "ResNet50_Weights"),
    101: (torchvision.models.resnet101, "ResNet101_Weights"),
    152: (torchvision.models.resnet152, "ResNet152_Weights"),
}


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were requested but could not be obtained or do not fit the network."""


def encoder_channels(num_layers: int) -> List[int]:
    """Channels of the five feature levels of a ResNet with ``num_layers`` layers."""
    if num_layers not in RESNET_DEPTHS:
        raise ValueError(f"num_layers must be one of {RESNET_DEPTHS}, got {num_layers!r}")
    base = [64, 64, 128, 256, 512]
    if num_layers >= 50:  # bottleneck blocks expand by 4
        base[1:] = [c * 4 for c in base[1:]]
    return base


def imagenet_state_dict(num_layers: int) -> Dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for ResNet-``num_layers`` (downloads into the hub cache).

    Raises:
        PretrainedWeightsError: the download (or cache read) failed, e.g. offline.
    """
    _, weights_name = _BUILDERS[num_layers]
    weights = getattr(torchvision.models, weights_name).IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=True)
    except Exception as exc:  # URLError, socket/SSL errors, corrupt cache ...
        raise PretrainedWeightsError(
            f"pretrained='imagenet': could not obtain torchvision's ImageNet weights for "
            f"ResNet{num_layers} ({weights.url}): {type(exc).__name__}: {exc}. Without internet, "
            f"download the file elsewhere and pass its path as pretrained=<path> "
            f"(model.pretrained in the config), or use pretrained='none' for random init."
        ) from exc


def load_state_dict_file(path: str) -> Dict[str, torch.Tensor]:
    """Read a ResNet state_dict from ``path`` safely (``weights_only=True``).

    Accepts a bare state_dict or one wrapped under ``"state_dict"`` / ``"model"``; strips a
    leading ``"module."`` or ``"encoder."`` from the keys.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        PretrainedWeightsError: the file is not a state_dict of tensors.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"pretrained weights file not found: {path!r} (expected 'none', 'imagenet' or the path "
            f"to a ResNet state_dict saved with torch.save)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedWeightsError(
            f"{path}: cannot read it as a torch state_dict with weights_only=True: {exc}") from exc
    if isinstance(data, dict):
        for wrapper in ("state_dict", "model"):
            if wrapper in data and isinstance(data[wrapper], dict):
                data = data[wrapper]
                break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise PretrainedWeightsError(
            f"{path}: expected a state_dict (a mapping of parameter names to tensors), "
            f"got {type(data).__name__}")
    out = {}
    for key, value in data.items():
        for prefix in ("module.", "encoder."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


class ResnetEncoder(nn.Module):
    """Torchvision ResNet without its classifier, returning five feature levels.

    Args:
        num_layers: 18, 34, 50, 101 or 152.
        pretrained: ``"none"``, ``"imagenet"`` or the path of a local ResNet state_dict.
        num_input_images: frames stacked along channels (input has ``3 * num_input_images``).
        input_norm: ``"imagenet"`` (default), ``"monodepth2"`` or ``"none"`` (see :data:`INPUT_NORMS`).

    Attributes:
        num_ch_enc: channels of the five levels, e.g. ``[64, 256, 512, 1024, 2048]`` for ResNet50.

    Shape:
        forward(image: (B, 3 * num_input_images, H, W) in [0, 1]) -> list of 5 tensors
        (B, num_ch_enc[i], H / 2**(i+1), W / 2**(i+1)) (sizes rounded up for odd inputs).

    Example:
        >>> enc = ResnetEncoder(18)
        >>> [f.shape[1] for f in enc(torch.rand(1, 3, 64, 96))]
        [64, 64, 128, 256, 512]
    """

    def __init__(self, num_layers: int = 50, pretrained: str = "none", num_input_images: int = 1,
                 input_norm: str = "imagenet"):
        super().__init__()
        if num_layers not in RESNET_DEPTHS:
            raise ValueError(f"num_layers must be one of {RESNET_DEPTHS}, got {num_layers!r}")
        if not isinstance(num_input_images, int) or num_input_images < 1:
            raise ValueError(f"num_input_images must be a positive integer, got {num_input_images!r}")
        if not isinstance(pretrained, str) or not pretrained:
            raise ValueError(f"pretrained must be 'none', 'imagenet' or a file path, got {pretrained!r}")
        self.num_layers = num_layers
        self.pretrained = pretrained
        self.num_input_images = num_input_images
        self.input_norm = check_input_norm(input_norm)
        self.num_ch_enc = encoder_channels(num_layers)

        builder, _ = _BUILDERS[num_layers]
        net = builder(weights=None)
        if num_input_images > 1:
            net.conv1 = nn.Conv2d(3 * num_input_images, 64, kernel_size=7, stride=2, padding=3,
                                  bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        # Drop the classifier: unused parameters would break DDP and waste memory.
        del net.fc
        del net.avgpool
        self.encoder = net

        stats = INPUT_NORMS[input_norm]
        mean, std = stats if stats is not None else ((0.0,) * 3, (1.0,) * 3)
        self.register_buffer("mean", torch.tensor(mean * num_input_images).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std * num_input_images).view(1, -1, 1, 1),
                             persistent=False)

        if pretrained == "imagenet":
            self.load_resnet_weights(imagenet_state_dict(num_layers), source="imagenet")
        elif pretrained != "none":
            self.load_resnet_weights(load_state_dict_file(pretrained), source=pretrained)

    def config(self) -> dict:
        """Constructor arguments (to rebuild the module for a checkpoint)."""
        return {"num_layers": self.num_layers, "pretrained": self.pretrained,
                "num_input_images": self.num_input_images, "input_norm": self.input_norm}

    @torch.no_grad()
    def load_resnet_weights(self, state_dict: Dict[str, torch.Tensor], source: str = "state_dict") -> None:
        """Load a single-image torchvision ResNet state_dict (``fc.*`` ignored).

        conv1's kernel is repeated ``num_input_images`` times along the input channels and
        divided by ``num_input_images`` when the file holds a 3-channel kernel.

        Raises:
            PretrainedWeightsError: keys missing / unexpected, or a tensor of the wrong shape.
        """
        state = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        own = self.encoder.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            def _show(keys):
                return ", ".join(keys[:5]) + (f" ... ({len(keys)} in all)" if len(keys) > 5 else "")
            parts = []
            if missing:
                parts.append(f"missing keys: {_show(missing)}")
            if unexpected:
                parts.append(f"unexpected keys: {_show(unexpected)}")
            raise PretrainedWeightsError(
                f"{source}: does not match a torchvision ResNet{self.num_layers} "
                f"({'; '.join(parts)})")
        conv1 = state["conv1.weight"]
        n = self.num_input_images
        if n > 1 and conv1.shape[1] == 3:
            state["conv1.weight"] = conv1.repeat(1, n, 1, 1) / n
        for key, value in state.items():
            if own[key].shape != value.shape:
                raise PretrainedWeightsError(
                    f"{source}: tensor '{key}' has shape {tuple(value.shape)}, ResNet{self.num_layers} "
                    f"with num_input_images={n} expects {tuple(own[key].shape)}")
        self.encoder.load_state_dict(state, strict=True)

    def forward(self, image: torch.Tensor, max_level: int = 4) -> List[torch.Tensor]:
        """Five feature maps (see the class doc), or only levels ``0..max_level``.

        Args:
            image: (B, 3 * num_input_images, H, W) in [0, 1].
            max_level: last level computed (0..4); stopping early saves the deeper layers when a
                caller needs only fine features (e.g. the feature-metric loss uses level 0).
        """
        channels = 3 * self.num_input_images
        if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != channels:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"image must be (B, {channels}, H, W), got {shape}")
        if max_level not in range(5):
            raise ValueError(f"max_level must be in 0..4, got {max_level!r}")
        x = image if self.input_norm == "none" else (image - self.mean) / self.std
        net = self.encoder
        feats = [net.relu(net.bn1(net.conv1(x)))]  # (B, 64, H/2, W/2)
        layers = (net.layer1, net.layer2, net.layer3, net.layer4)
        for level in range(1, max_level + 1):
            x = feats[-1] if level > 1 else net.maxpool(feats[-1])
            feats.append(layers[level - 1](x))  # (B, C_level, H/2**(level+1), W/2**(level+1))
        return feats
