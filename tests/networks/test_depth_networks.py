"""ResnetEncoder, DepthNet, PoseNet and FeatureNet: shapes, weights loading, pose scaling."""
import pytest
import torch
import torchvision

from fmdepth.networks import (DepthNet, FeatureNet, PoseNet, PretrainedWeightsError, ResnetEncoder,
                              encoder_channels)
from fmdepth.networks import resnet as resnet_module
from fmdepth.networks.pose import POSE_SCALE


# ----------------------------------------------------------------------------------- encoder
@pytest.mark.parametrize("layers,channels", [(18, [64, 64, 128, 256, 512]),
                                             (50, [64, 256, 512, 1024, 2048])])
def test_encoder_levels(layers, channels):
    enc = ResnetEncoder(layers)
    assert enc.num_ch_enc == channels == encoder_channels(layers)
    feats = enc(torch.rand(1, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(1, c, 64 // 2 ** (i + 1), 96 // 2 ** (i + 1))
                                              for i, c in enumerate(channels)]


def test_encoder_max_level_matches_full_forward():
    enc = ResnetEncoder(18).eval()
    x = torch.rand(2, 3, 64, 64)
    full = enc(x)
    part = enc(x, max_level=1)
    assert len(part) == 2
    for a, b in zip(part, full[:2]):
        torch.testing.assert_close(a, b)


def test_encoder_classifier_removed():
    enc = ResnetEncoder(18)
    assert not any(k.startswith("encoder.fc") for k in enc.state_dict())


def test_encoder_bad_arguments():
    with pytest.raises(ValueError, match="num_layers"):
        ResnetEncoder(20)
    with pytest.raises(ValueError, match="num_input_images"):
        ResnetEncoder(18, num_input_images=0)
    with pytest.raises(ValueError, match=r"\(B, 6, H, W\)"):
        ResnetEncoder(18, num_input_images=2)(torch.rand(1, 3, 64, 64))


def test_imagenet_normalisation_inside():
    """A constant image at the ImageNet mean becomes zero input to conv1."""
    enc = ResnetEncoder(18).eval()
    mean = torch.tensor(resnet_module.IMAGENET_MEAN).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    captured = {}

    def hook(module, inputs, output):
        captured["x"] = inputs[0]

    handle = enc.encoder.conv1.register_forward_hook(hook)
    enc(mean.contiguous())
    handle.remove()
    assert captured["x"].abs().max() < 1e-6


# ---------------------------------------------------------------------------- weights loading
def _save_resnet18(tmp_path, name="r18.pth"):
    net = torchvision.models.resnet18(weights=None)
    path = tmp_path / name
    torch.save(net.state_dict(), path)
    return net, str(path)


def test_pretrained_path_loads_weights(tmp_path):
    ref, path = _save_resnet18(tmp_path)
    enc = ResnetEncoder(18, pretrained=path)
    for key, value in ref.state_dict().items():
        if key.startswith("fc."):
            continue
        torch.testing.assert_close(enc.encoder.state_dict()[key], value)


def test_pretrained_multi_frame_conv1_repeated_and_divided(tmp_path):
    ref, path = _save_resnet18(tmp_path)
    enc = ResnetEncoder(18, pretrained=path, num_input_images=3)
    w = enc.encoder.conv1.weight
    assert w.shape == (64, 9, 7, 7)
    for k in range(3):
        torch.testing.assert_close(w[:, 3 * k:3 * k + 3], ref.conv1.weight / 3)
    # Identical frames stacked give the single-frame response.
    single = ResnetEncoder(18, pretrained=path).eval()
    enc.eval()
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(enc(x.repeat(1, 3, 1, 1))[-1], single(x)[-1], rtol=1e-4, atol=1e-4)


def test_pose_net_conv1_from_pretrained(tmp_path):
    ref, path = _save_resnet18(tmp_path)
    net = PoseNet(18, pretrained=path, num_frames=2)
    torch.testing.assert_close(net.encoder.encoder.conv1.weight,
                               torch.cat([ref.conv1.weight, ref.conv1.weight], 1) / 2)


def test_pretrained_wrapped_and_prefixed_state_dict(tmp_path):
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"encoder.{k}": v for k, v in ref.state_dict().items()}}, path)
    enc = ResnetEncoder(18, pretrained=str(path))
    torch.testing.assert_close(enc.encoder.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)


def test_pretrained_missing_file():
    with pytest.raises(FileNotFoundError, match="no_such_weights.pth"):
        ResnetEncoder(18, pretrained="/nonexistent/no_such_weights.pth")


def test_pretrained_mismatched_keys(tmp_path):
    _, path = _save_resnet18(tmp_path)
    with pytest.raises(PretrainedWeightsError, match="ResNet50.*missing keys"):
        ResnetEncoder(50, pretrained=path)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    del sd["layer1.0.conv1.weight"]
    sd["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    with pytest.raises(PretrainedWeightsError) as info:
        ResnetEncoder(18, pretrained=str(bad))
    assert "layer1.0.conv1.weight" in str(info.value) and "extra.weight" in str(info.value)


def test_pretrained_wrong_shape(tmp_path):
    sd = torchvision.models.resnet18(weights=None).state_dict()
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    bad = tmp_path / "shape.pth"
    torch.save(sd, bad)
    with pytest.raises(PretrainedWeightsError, match="layer1.0.conv1.weight"):
        ResnetEncoder(18, pretrained=str(bad))


def test_pretrained_not_a_state_dict(tmp_path):
    bad = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], bad)
    with pytest.raises(PretrainedWeightsError, match="state_dict"):
        ResnetEncoder(18, pretrained=str(bad))


def test_imagenet_unavailable_is_a_clear_error(monkeypatch):
    """Offline: asking for ImageNet weights fails loudly instead of leaving random weights."""
    def offline(self, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__,
                        "get_state_dict", offline, raising=False)
    with pytest.raises(PretrainedWeightsError, match="imagenet.*ResNet18.*network is unreachable"):
        ResnetEncoder(18, pretrained="imagenet")


# -------------------------------------------------------------------------------------- depth
@pytest.mark.parametrize("size", [(64, 96), (96, 64), (64, 192)])
def test_depth_net_shapes(size):
    h, w = size
    net = DepthNet(num_layers=18)
    disps = net(torch.rand(2, 3, h, w))
    assert [tuple(d.shape) for d in disps] == [(2, 1, h // 2 ** s, w // 2 ** s) for s in range(4)]
    assert all(((d > 0) & (d < 1)).all() for d in disps)


def test_depth_net_default_resnet50_and_num_scales():
    net = DepthNet(num_scales=2)
    assert net.encoder.num_layers == 50 and net.config() == {
        "num_layers": 50, "pretrained": "none", "num_scales": 2, "input_norm": "imagenet",
        "decoder": "monodepth2"}
    assert len(net(torch.rand(1, 3, 64, 64))) == 2


def test_depth_net_rejects_bad_input():
    net = DepthNet(num_layers=18)
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.rand(1, 3, 60, 96))
    with pytest.raises(ValueError, match="at least 64"):
        net(torch.rand(1, 3, 32, 96))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.rand(1, 1, 64, 96))


def test_depth_net_gradients_reach_encoder():
    net = DepthNet(num_layers=18)
    sum(d.mean() for d in net(torch.rand(1, 3, 64, 64))).backward()
    assert net.encoder.encoder.conv1.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------- pose
def test_pose_net_shapes_and_scale():
    net = PoseNet()
    assert net.encoder.num_layers == 18 and net.encoder.num_input_images == 2
    axisangle, translation = net(torch.rand(3, 6, 64, 96))
    assert axisangle.shape == (3, 3) and translation.shape == (3, 3)
    assert POSE_SCALE == 0.01
    # The outputs are the head's spatially averaged raw output times 0.01.
    feats = net.encoder(torch.ones(1, 6, 64, 64) * 0.5)[-1]
    a, t = net.decoder(feats)
    torch.testing.assert_close(torch.cat([a, t], 1),
                               net.decoder.net(feats).mean(dim=(2, 3)) * 0.01)


def test_pose_net_output_scale_is_configurable():
    torch.manual_seed(0)
    default = PoseNet()
    scaled = PoseNet(output_scale=0.1)
    scaled.load_state_dict(default.state_dict())  # same weights, different output factor
    x = torch.rand(2, 6, 64, 96)
    with torch.no_grad():
        a0, t0 = default(x)
        a1, t1 = scaled(x)
    torch.testing.assert_close(a1, a0 * 10.0)
    torch.testing.assert_close(t1, t0 * 10.0)
    assert scaled.config()["output_scale"] == 0.1
    with pytest.raises(ValueError, match="output_scale"):
        PoseNet(output_scale=0.0)


def test_pose_net_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"\(B, 6, H, W\)"):
        PoseNet()(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="num_frames"):
        PoseNet(num_frames=1)


# ------------------------------------------------------------------------------------ feature
def test_feature_net_shapes():
    net = FeatureNet(num_layers=18)
    feats, recons = net(torch.rand(2, 3, 64, 96))
    assert len(feats) == 5 and len(recons) == 4
    assert tuple(feats[0].shape) == (2, 64, 32, 48)
    assert [tuple(r.shape) for r in recons] == [(2, 3, 64 // 2 ** s, 96 // 2 ** s) for s in range(4)]
    assert all(((r >= 0) & (r <= 1)).all() for r in recons)


def test_feature_net_encode_only_needed_levels():
    net = FeatureNet(num_layers=18).eval()
    x = torch.rand(1, 3, 64, 64)
    only0 = net.encode(x, levels=[0])
    assert len(only0) == 1
    torch.testing.assert_close(only0[0], net.encode(x)[0])
    with pytest.raises(ValueError, match="levels"):
        net.encode(x, levels=[7])


def test_feature_net_default_resnet50_no_skips():
    net = FeatureNet()
    assert net.encoder.num_layers == 50
    assert not net.decoder.use_skips
    assert net.config()["num_layers"] == 50
