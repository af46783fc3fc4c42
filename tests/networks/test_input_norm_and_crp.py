"""Encoder input normalisation options and FeatDepth's chained-residual-pooling depth decoder."""
import pytest
import torch

from fmdepth.config import ConfigError, config_from_dict
from fmdepth.networks import CRPDepthDecoder, DepthNet, FeatureNet, PoseNet, ResnetEncoder


def test_input_norm_matches_manual_normalisation():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 96)
    ref = ResnetEncoder(18).eval()
    for norm, y in (("monodepth2", (x - 0.45) / 0.225), ("none", x),
                    ("imagenet", (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                     / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))):
        enc = ResnetEncoder(18, input_norm=norm).eval()
        enc.load_state_dict(ref.state_dict())
        with torch.no_grad():
            got = enc(x)[4]
            # the same weights on the manually normalised image, through the ImageNet path undone
            net = enc.encoder
            f = net.relu(net.bn1(net.conv1(y)))
            f = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(f)))))
        assert torch.allclose(got, f, atol=1e-6), norm
        assert enc.config()["input_norm"] == norm


def test_input_norm_default_unchanged_and_stacked_frames():
    assert ResnetEncoder(18).input_norm == "imagenet"
    pose = PoseNet(18, input_norm="monodepth2")
    assert pose.encoder.mean.shape == (1, 6, 1, 1) and torch.all(pose.encoder.mean == 0.45)
    assert pose.config()["input_norm"] == "monodepth2"
    assert FeatureNet(18, input_norm="none").config()["input_norm"] == "none"
    with pytest.raises(ValueError, match="input_norm must be one of imagenet, monodepth2, none"):
        ResnetEncoder(18, input_norm="kitti")


@pytest.mark.parametrize("size", [(64, 96), (96, 128)])
def test_featdepth_decoder_shapes(size):
    h, w = size
    net = DepthNet(18, decoder="featdepth", input_norm="monodepth2").eval()
    with torch.no_grad():
        disps = net(torch.rand(2, 3, h, w))
    assert [tuple(d.shape) for d in disps] == [(2, 1, h // 2 ** s, w // 2 ** s) for s in range(4)]
    assert all(((d > 0) & (d < 1)).all() for d in disps)
    assert net.config()["decoder"] == "featdepth" and isinstance(net.decoder, CRPDepthDecoder)
    again = DepthNet(**net.config())
    assert set(again.state_dict()) == set(net.state_dict())


def test_featdepth_decoder_dropout_only_in_training():
    torch.manual_seed(0)
    net = DepthNet(18, decoder="featdepth")
    x = torch.rand(1, 3, 64, 64)
    net.eval()
    with torch.no_grad():
        a, b = net(x)[0], net(x)[0]
    assert torch.equal(a, b)
    net.train()
    with torch.no_grad():
        c, d = net(x)[0], net(x)[0]
    assert not torch.equal(c, d)  # dropout on encoder levels 3 and 4


def test_featdepth_decoder_rejects_five_scales():
    with pytest.raises(ValueError, match="num_scales must be in"):
        DepthNet(18, num_scales=5, decoder="featdepth")
    with pytest.raises(ValueError, match="decoder must be one of"):
        DepthNet(18, decoder="refinenet")


@pytest.mark.parametrize("key,value,match", [
    ("input_norm", "kitti", "model.input_norm"), ("feature_input_norm", "x", "model.feature_input_norm"),
    ("depth_decoder", "unet", "model.depth_decoder")])
def test_config_rejects_bad_values(key, value, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict({"model": {key: value}})
