"""`fmdepth import-weights`: Monodepth2 folders and FeatDepth checkpoints -> fmdepth checkpoints.

The source files are built here from the public parameter names and shapes of the released
models (torchvision ResNet names; the decoders' names listed in fmdepth.interop.monodepth2 /
featdepth), written in the source format, imported, and checked name by name and against a small
functional re-computation of the source networks' forward pass.
"""
import os

import pytest
import torch
import torch.nn.functional as F
import torchvision

from fmdepth.cli import main
from fmdepth.core.checkpoint import load_checkpoint
from fmdepth.inference import DepthPredictor, PosePredictor
from fmdepth.interop import ImportWeightsError, import_featdepth, import_monodepth2
from fmdepth.networks.resnet import encoder_channels

H, W = 64, 128
DEC = [16, 32, 64, 128, 256]


# ---------------------------------------------------------------------------- source layouts
def _random_like(state, seed):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            out[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith("running_mean"):
            out[k] = 0.1 * torch.randn(v.shape, generator=g)
        elif v.dim() > 1:
            fan_in = v[0].numel()
            out[k] = torch.randn(v.shape, generator=g) * (1.0 / fan_in) ** 0.5
        else:
            out[k] = 0.1 * torch.randn(v.shape, generator=g) + (1.0 if k.endswith("weight") else 0.0)
    return out


def resnet_layout(layers, in_images=1, seed=0, prefix="encoder."):
    """A torchvision ResNet's names and shapes (classifier included), conv1 for stacked frames."""
    net = getattr(torchvision.models, f"resnet{layers}")(weights=None)
    state = net.state_dict()
    state["conv1.weight"] = torch.zeros(64, 3 * in_images, 7, 7)
    return {prefix + k: v for k, v in _random_like(state, seed).items()}


def md2_depth_layout(layers, seed=1):
    """depth.pth: decoder.0..9 = upconv(4,0), upconv(4,1), ..., upconv(0,1); decoder.10..13 = disp 0..3."""
    enc = encoder_channels(layers)
    shapes = {}
    for n in range(10):
        step, j = divmod(n, 2)
        i = 4 - step
        if j == 0:
            c_in = enc[4] if i == 4 else DEC[i + 1]
        else:
            c_in = DEC[i] + (enc[i - 1] if i > 0 else 0)
        shapes[f"decoder.{n}.conv.conv.weight"] = (DEC[i], c_in, 3, 3)
        shapes[f"decoder.{n}.conv.conv.bias"] = (DEC[i],)
    for s in range(4):
        shapes[f"decoder.{10 + s}.conv.weight"] = (1, DEC[s], 3, 3)
        shapes[f"decoder.{10 + s}.conv.bias"] = (1,)
    return _random_like({k: torch.zeros(v) for k, v in shapes.items()}, seed)


def md2_pose_layout(layers=18, seed=2):
    c4 = encoder_channels(layers)[4]
    shapes = {"net.0.weight": (256, c4, 1, 1), "net.0.bias": (256,), "net.1.weight": (256, 256, 3, 3),
              "net.1.bias": (256,), "net.2.weight": (256, 256, 3, 3), "net.2.bias": (256,),
              "net.3.weight": (12, 256, 1, 1), "net.3.bias": (12,)}
    return _random_like({k: torch.zeros(v) for k, v in shapes.items()}, seed)


def write_md2_folder(folder, layers=18, pose=True, stereo=False, height=H, width=W):
    os.makedirs(folder, exist_ok=True)
    enc = resnet_layout(layers, seed=layers)
    torch.save({**enc, "height": height, "width": width, "use_stereo": stereo}, os.path.join(folder, "encoder.pth"))
    dec = md2_depth_layout(layers)
    torch.save(dec, os.path.join(folder, "depth.pth"))
    src = {"encoder": enc, "depth": dec}
    if pose:
        src["pose_encoder"] = resnet_layout(18, in_images=2, seed=5)
        src["pose"] = md2_pose_layout(18)
        torch.save(src["pose_encoder"], os.path.join(folder, "pose_encoder.pth"))
        torch.save(src["pose"], os.path.join(folder, "pose.pth"))
    return str(folder), src


def featdepth_layout(depth_layers=18, pose=True, extractor=False, autoencoder=False, seed=10):
    """FeatDepth names: DepthEncoder/DepthDecoder (CRP), PoseEncoder/PoseDecoder, extractor and/or
    Encoder/Decoder (filter the keys for an auto-encoder-only file)."""
    state = {}
    enc = encoder_channels(depth_layers)
    state.update(resnet_layout(depth_layers, seed=seed, prefix="DepthEncoder.encoder."))
    shapes = {}
    for k in (4, 3, 2, 1):
        shapes[f"reduce{k}.conv.weight"] = (512 if k == 4 else 256, enc[k], 1, 1)
        shapes[f"iconv{k}.conv.weight"] = (256, 512 if k == 4 else 513, 3, 3)
        shapes[f"iconv{k}.conv.bias"] = (256,)
        for i in range(1, 5):
            shapes[f"crp{k}.0.{i}_pointwise.conv.weight"] = (256, 256, 1, 1)
        shapes[f"merge{k}.conv.weight"] = (256, 256, 3, 3)
        shapes[f"merge{k}.conv.bias"] = (256,)
        shapes[f"disp{k}.0.conv.weight"] = (1, 256, 3, 3)
        shapes[f"disp{k}.0.conv.bias"] = (1,)
    state.update({"DepthDecoder." + k: v for k, v in
                  _random_like({k: torch.zeros(v) for k, v in shapes.items()}, seed + 1).items()})
    if pose:
        state.update(resnet_layout(18, in_images=2, seed=seed + 2, prefix="PoseEncoder.encoder."))
        shapes = {"reduce.weight": (256, 512, 1, 1), "reduce.bias": (256,), "conv1.weight": (256, 256, 3, 3),
                  "conv1.bias": (256,), "conv2.weight": (256, 256, 3, 3), "conv2.bias": (256,),
                  "conv3.weight": (6, 256, 1, 1), "conv3.bias": (6,)}
        state.update({"PoseDecoder." + k: v for k, v in
                      _random_like({k: torch.zeros(v) for k, v in shapes.items()}, seed + 3).items()})
    if extractor:
        state.update(resnet_layout(depth_layers, seed=seed + 4, prefix="extractor.encoder."))
    if autoencoder:
        state.update(resnet_layout(depth_layers, seed=seed + 4, prefix="Encoder.encoder."))
        shapes = {}
        ins = {5: enc[4], 4: DEC[4], 3: DEC[3], 2: DEC[2], 1: DEC[1]}
        for n in range(5, 0, -1):
            shapes[f"upconv{n}.conv.conv.weight"] = (DEC[n - 1], ins[n], 3, 3)
            shapes[f"upconv{n}.conv.conv.bias"] = (DEC[n - 1],)
            shapes[f"iconv{n}.conv.conv.weight"] = (DEC[n - 1], DEC[n - 1], 3, 3)
            shapes[f"iconv{n}.conv.conv.bias"] = (DEC[n - 1],)
        for m in range(4, 0, -1):
            shapes[f"disp{m}.conv.weight"] = (3, DEC[m - 1], 3, 3)
            shapes[f"disp{m}.conv.bias"] = (3,)
        state.update({"Decoder." + k: v for k, v in
                      _random_like({k: torch.zeros(v) for k, v in shapes.items()}, seed + 5).items()})
    return state


def save_mmcv(state, path):
    torch.save({"meta": {"epoch": 40, "iter": 1000}, "state_dict": state}, path)
    return str(path)


# -------------------------------------------------------------- functional source references
def ref_resnet(state, prefix, x, norm):
    """The five feature levels of the source encoder (torchvision ResNet + the source's normalisation)."""
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    layers = 50 if "layer1.0.conv3.weight" in sub else 18
    net = getattr(torchvision.models, f"resnet{layers}")(weights=None)
    net.conv1 = torch.nn.Conv2d(sub["conv1.weight"].shape[1], 64, 7, 2, 3, bias=False)
    net.load_state_dict(sub)
    net.eval()
    x = (x - 0.45) / 0.225 if norm else x
    f = [net.relu(net.bn1(net.conv1(x)))]
    f.append(net.layer1(net.maxpool(f[-1])))
    for layer in (net.layer2, net.layer3, net.layer4):
        f.append(layer(f[-1]))
    return f


def conv(x, w, b=None, pad="reflect"):
    if w.shape[-1] == 3:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect") if pad == "reflect" else F.pad(x, (1, 1, 1, 1))
    return F.conv2d(x, w, b)


def ref_md2_depth(src, x):
    f = ref_resnet(src["encoder"], "encoder.", x, True)
    d = src["depth"]
    out = {}
    y = f[4]
    for i in range(4, -1, -1):
        n = 2 * (4 - i)
        y = F.elu(conv(y, d[f"decoder.{n}.conv.conv.weight"], d[f"decoder.{n}.conv.conv.bias"]))
        y = F.interpolate(y, scale_factor=2, mode="nearest")
        if i > 0:
            y = torch.cat([y, f[i - 1]], 1)
        y = F.elu(conv(y, d[f"decoder.{n + 1}.conv.conv.weight"], d[f"decoder.{n + 1}.conv.conv.bias"]))
        if i < 4:
            out[i] = torch.sigmoid(conv(y, d[f"decoder.{10 + i}.conv.weight"], d[f"decoder.{10 + i}.conv.bias"]))
    return [out[s] for s in range(4)]


def ref_md2_pose(src, frames):
    f = ref_resnet(src["pose_encoder"], "encoder.", frames, True)[4]
    p = src["pose"]
    y = F.relu(F.conv2d(f, p["net.0.weight"], p["net.0.bias"]))
    y = F.relu(F.conv2d(y, p["net.1.weight"], p["net.1.bias"], padding=1))
    y = F.relu(F.conv2d(y, p["net.2.weight"], p["net.2.bias"], padding=1))
    y = F.conv2d(y, p["net.3.weight"], p["net.3.bias"]).mean(3).mean(2)
    y = 0.01 * y.view(-1, 2, 1, 6)
    return y[:, 0, 0, :3], y[:, 0, 0, 3:]


def ref_featdepth_depth(state, x):
    """Native FeatDepth disparities (1/2 .. 1/16 resolution, finest first)."""
    f = ref_resnet(state, "DepthEncoder.encoder.", x, True)
    d = {k[len("DepthDecoder."):]: v for k, v in state.items() if k.startswith("DepthDecoder.")}
    y = disp = None
    native = []
    for k in (4, 3, 2, 1):
        z = F.conv2d(f[k], d[f"reduce{k}.conv.weight"])
        if y is not None:
            z = torch.cat([z, y, disp], 1)
        z = F.leaky_relu(conv(z, d[f"iconv{k}.conv.weight"], d[f"iconv{k}.conv.bias"]))
        top = z
        for i in range(1, 5):
            top = F.conv2d(F.max_pool2d(top, 5, 1, 2), d[f"crp{k}.0.{i}_pointwise.conv.weight"])
            z = z + top
        z = F.leaky_relu(conv(z, d[f"merge{k}.conv.weight"], d[f"merge{k}.conv.bias"]))
        y = F.interpolate(z, scale_factor=2, mode="nearest")
        disp = torch.sigmoid(conv(y, d[f"disp{k}.0.conv.weight"], d[f"disp{k}.0.conv.bias"]))
        native.append(disp)
    return native[::-1]


def ref_featdepth_autoencoder(state, x):
    f = ref_resnet(state, "Encoder.encoder.", x, False)
    d = {k[len("Decoder."):]: v for k, v in state.items() if k.startswith("Decoder.")}
    y, levels = f[4], {}
    for n in range(5, 0, -1):
        y = F.elu(conv(y, d[f"upconv{n}.conv.conv.weight"], d[f"upconv{n}.conv.conv.bias"]))
        y = F.interpolate(y, scale_factor=2, mode="nearest")
        y = F.elu(conv(y, d[f"iconv{n}.conv.conv.weight"], d[f"iconv{n}.conv.conv.bias"]))
        levels[n] = y
    return f, [torch.sigmoid(conv(levels[m], d[f"disp{m}.conv.weight"], d[f"disp{m}.conv.bias"]))
               for m in (1, 2, 3, 4)]


def _image(b=2, h=H, w=W, seed=3):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------- Monodepth2
@pytest.fixture(scope="module")
def md2(tmp_path_factory):
    root = tmp_path_factory.mktemp("md2")
    folder, src = write_md2_folder(root / "mono_r18")
    out = str(root / "md2.pt")
    assert main(["import-weights", "--from", "monodepth2", folder, "--out", out]) == 0
    return {"folder": folder, "src": src, "ckpt": out, "root": root}


def test_md2_import_names_shapes_values(md2, capsys):
    ckpt = load_checkpoint(md2["ckpt"])
    cfg, models, src = ckpt["config"], ckpt["models"], md2["src"]
    assert cfg["task"] == "depth" and (cfg["data"]["height"], cfg["data"]["width"]) == (H, W)
    assert cfg["model"]["input_norm"] == "monodepth2" and cfg["model"]["depth_layers"] == 18
    assert (cfg["model"]["min_depth"], cfg["model"]["max_depth"], cfg["model"]["pose_scale"]) == (0.1, 100.0, 0.01)
    depth, pose = models["depth"], models["pose"]
    assert torch.equal(depth["encoder.encoder.layer3.1.bn2.running_var"], src["encoder"]["encoder.layer3.1.bn2.running_var"])
    assert torch.equal(depth["decoder.upconv1.3.conv.conv.weight"], src["depth"]["decoder.7.conv.conv.weight"])
    assert torch.equal(depth["decoder.upconv0.0.conv.conv.bias"], src["depth"]["decoder.0.conv.conv.bias"])
    assert torch.equal(depth["decoder.heads.2.conv.weight"], src["depth"]["decoder.12.conv.weight"])
    assert tuple(pose["encoder.encoder.conv1.weight"].shape) == (64, 6, 7, 7)
    assert torch.equal(pose["encoder.encoder.conv1.weight"], src["pose_encoder"]["encoder.conv1.weight"])
    assert torch.equal(pose["decoder.net.4.weight"], src["pose"]["net.2.weight"])
    assert torch.equal(pose["decoder.net.6.weight"], src["pose"]["net.3.weight"][:6])
    # every source tensor is accounted for: mapped, or one of the named unused ones
    n_src = sum(len(v) for v in src.values())
    n_mapped = len(depth) + len(pose)  # num_batches_tracked included: the files have them
    assert n_mapped + 4 == n_src  # + encoder.fc.weight/bias of encoder.pth and pose_encoder.pth
    dropped = ckpt["source"]["dropped"]
    assert len(dropped) == 3 and "encoder.pth: encoder.fc.weight, encoder.fc.bias (" in dropped[0]
    assert any(d.startswith("pose.pth: net.3 rows 6..11") for d in dropped)
    assert set(ckpt["source"]["files"]) == {"encoder.pth", "depth.pth", "pose_encoder.pth", "pose.pth"}


def test_md2_predictions_equal_source_forward(md2):
    x = _image()
    predictor = DepthPredictor.from_checkpoint(md2["ckpt"], device="cpu")
    with torch.no_grad():
        ours = predictor.net(x)
        ref = ref_md2_depth(md2["src"], x)
        for a, b in zip(ours, ref):
            assert a.shape == b.shape
            assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
        scaled = predictor.predict_scaled_disp(x)
        assert torch.allclose(scaled, 0.01 + (10 - 0.01) * ref[0], atol=1e-4)
        pose = PosePredictor.from_checkpoint(md2["ckpt"], device="cpu")
        frames = torch.cat([x, _image(seed=4)], 1)
        aa, tt = pose.net(frames)
        raa, rtt = ref_md2_pose(md2["src"], frames)
        assert torch.allclose(aa, raa, atol=1e-6) and torch.allclose(tt, rtt, atol=1e-6)


def test_md2_resnet50_stereo_without_pose(tmp_path, capsys):
    folder, src = write_md2_folder(tmp_path / "stereo_r50", layers=50, pose=False, stereo=True, height=64, width=96)
    out = str(tmp_path / "s.pt")
    assert main(["import-weights", "--from", "monodepth2", folder, "--out", out]) == 0
    text = capsys.readouterr().out
    assert "ResNet50" in text and "5.4" in text and "wrote" in text
    ckpt = load_checkpoint(out)
    assert set(ckpt["models"]) == {"depth"} and ckpt["config"]["model"]["depth_layers"] == 50
    assert ckpt["config"]["data"]["stereo"] is True and ckpt["config"]["data"]["frame_ids"] == [0]
    x = _image(1, 64, 96)
    with torch.no_grad():
        ours = DepthPredictor.from_checkpoint(out, device="cpu").net(x)[0]
        assert torch.allclose(ours, ref_md2_depth(src, x)[0], atol=1e-5)


def test_md2_fine_tune_init_checkpoint(md2):
    from fmdepth.config import config_from_dict
    from fmdepth.tasks.depth import init_from_checkpoint
    from fmdepth.models.depth import build_depth_system

    ckpt = load_checkpoint(md2["ckpt"])
    data = {"task": "depth", "model": {**ckpt["config"]["model"], "init_checkpoint": md2["ckpt"]},
            "loss": {"feature_metric": 0.0}}
    cfg = config_from_dict(data)
    system = build_depth_system(cfg)
    assert init_from_checkpoint(system, cfg) == ["depth", "pose"]
    for name, net in system.trainable_models().items():
        for k, v in net.state_dict().items():
            assert torch.equal(v, ckpt["models"][name][k]), (name, k)
    data["model"]["input_norm"] = "imagenet"
    cfg = config_from_dict(data)
    with pytest.raises(ValueError, match="model.input_norm.*monodepth2"):
        init_from_checkpoint(build_depth_system(cfg), cfg)


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_md2_bad_folders(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["import-weights", "--from", "monodepth2", str(empty), "--out", str(tmp_path / "o.pt")]) == 2
    line = _one_error_line(capsys)
    assert str(empty) in line and "encoder.pth" in line and "depth.pth" in line
    # a ResNet50 decoder with a ResNet18 encoder: mis-shaped tensors are listed
    folder, _ = write_md2_folder(tmp_path / "mixed")
    torch.save(md2_depth_layout(50), os.path.join(folder, "depth.pth"))
    assert main(["import-weights", "--from", "monodepth2", folder, "--out", str(tmp_path / "o.pt")]) == 2
    line = _one_error_line(capsys)
    assert "wrong shape" in line and "decoder.0.conv.conv.weight" in line
    assert not os.path.exists(tmp_path / "o.pt")
    # an unknown tensor
    folder, src = write_md2_folder(tmp_path / "extra")
    torch.save({**src["depth"], "decoder.14.conv.weight": torch.zeros(1, 16, 3, 3)}, os.path.join(folder, "depth.pth"))
    with pytest.raises(ImportWeightsError, match="unknown|disparity convs"):
        import_monodepth2(folder)
    # a missing tensor
    dec = dict(src["depth"])
    del dec["decoder.3.conv.conv.bias"]
    torch.save(dec, os.path.join(folder, "depth.pth"))
    with pytest.raises(ImportWeightsError, match="decoder.upconv1.1.conv.conv.bias"):
        import_monodepth2(folder)


class _Payload:
    """Pickles as a call of os.makedirs: loading it with full unpickling would run it."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_bad_files(tmp_path, capsys):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"definitely not a checkpoint")
    assert main(["import-weights", "--from", "featdepth", str(junk), "--out", str(tmp_path / "o.pt")]) == 2
    line = _one_error_line(capsys)
    assert str(junk) in line and "not a torch checkpoint" in line
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": _Payload(str(marker))}}, evil)
    assert main(["import-weights", "--from", "featdepth", str(evil), "--out", str(tmp_path / "o.pt")]) == 2
    line = _one_error_line(capsys)
    assert str(evil) in line and "refused" in line and not marker.exists()
    folder, _ = write_md2_folder(tmp_path / "evil_md2", pose=False)
    torch.save({"encoder.conv1.weight": _Payload(str(marker))}, os.path.join(folder, "depth.pth"))
    assert main(["import-weights", "--from", "monodepth2", folder, "--out", str(tmp_path / "o.pt")]) == 2
    assert "depth.pth" in _one_error_line(capsys) and not marker.exists()


def test_other_architecture(md2, tmp_path, capsys):
    # an fmdepth checkpoint given as a FeatDepth file
    assert main(["import-weights", "--from", "featdepth", md2["ckpt"], "--out", str(tmp_path / "o.pt")]) == 2
    line = _one_error_line(capsys)
    assert md2["ckpt"] in line and "not a FeatDepth checkpoint" in line
    # a FeatDepth file given as a Monodepth2 folder
    path = save_mmcv(featdepth_layout(pose=False), tmp_path / "fd.pth")
    assert main(["import-weights", "--from", "monodepth2", path, "--out", str(tmp_path / "o.pt")]) == 2
    assert "not a folder" in _one_error_line(capsys)


# ---------------------------------------------------------------------------------- FeatDepth
def test_featdepth_depth_pose_with_autoencoder(tmp_path, capsys):
    depth_file = save_mmcv(featdepth_layout(extractor=True), tmp_path / "fm_depth.pth")
    ae_state = featdepth_layout(pose=False, autoencoder=True)
    ae_state = {k: v for k, v in ae_state.items() if k.startswith(("Encoder.", "Decoder."))}
    ae_file = save_mmcv(ae_state, tmp_path / "autoencoder.pth")
    out = str(tmp_path / "fd.pt")
    rc = main(["import-weights", "--from", "featdepth", depth_file, "--autoencoder", ae_file,
               "--height", str(H), "--width", str(W), "--out", out])
    assert rc == 0, capsys.readouterr().err
    ckpt = load_checkpoint(out)
    assert set(ckpt["models"]) == {"depth", "pose", "feature"}
    m = ckpt["config"]["model"]
    assert (m["depth_decoder"], m["input_norm"], m["feature_input_norm"]) == ("featdepth", "monodepth2", "none")
    state = featdepth_layout(extractor=True)
    assert torch.equal(ckpt["models"]["depth"]["decoder.crp.1.pointwise.2.weight"],
                       state["DepthDecoder.crp3.0.3_pointwise.conv.weight"])
    x = _image()
    with torch.no_grad():
        ours = DepthPredictor.from_checkpoint(out, device="cpu").net(x)
        native = ref_featdepth_depth(state, x)
        for s in range(4):
            up = F.interpolate(native[s], scale_factor=2, mode="bilinear", align_corners=False)
            assert ours[s].shape == (2, 1, H // 2 ** s, W // 2 ** s)
            assert torch.allclose(ours[s], up, atol=1e-5), (s, float((ours[s] - up).abs().max()))
        pose = PosePredictor.from_checkpoint(out, device="cpu").net
        frames = torch.cat([x, _image(seed=5)], 1)
        aa, tt = pose(frames)
        src = {"pose_encoder": {k[len("PoseEncoder."):]: v for k, v in state.items() if k.startswith("PoseEncoder.")},
               "pose": {}}
        dec = {k[len("PoseDecoder."):]: v for k, v in state.items() if k.startswith("PoseDecoder.")}
        f = ref_resnet(src["pose_encoder"], "encoder.", frames, True)[4]
        y = F.relu(F.conv2d(f, dec["reduce.weight"], dec["reduce.bias"]))
        y = F.relu(F.conv2d(y, dec["conv1.weight"], dec["conv1.bias"], padding=1))
        y = F.relu(F.conv2d(y, dec["conv2.weight"], dec["conv2.bias"], padding=1))
        y = 0.01 * F.conv2d(y, dec["conv3.weight"], dec["conv3.bias"]).mean(3).mean(2)
        assert torch.allclose(aa, y[:, :3], atol=1e-6) and torch.allclose(tt, y[:, 3:], atol=1e-6)
        from fmdepth.networks import FeatureNet

        fnet = FeatureNet(18, input_norm="none")
        fnet.load_state_dict(ckpt["models"]["feature"])
        fnet.eval()
        feats, recons = fnet(x)
        rfeats, rrecons = ref_featdepth_autoencoder(ae_state, x)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(feats, rfeats))
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(recons, rrecons))


def test_featdepth_extractor_rules(tmp_path, capsys):
    depth_file = save_mmcv(featdepth_layout(extractor=True), tmp_path / "fm_depth.pth")
    with pytest.raises(ImportWeightsError, match="--autoencoder"):
        import_featdepth(depth_file, H, W)
    report = import_featdepth(depth_file, H, W, without_feature=True)
    assert set(report.models) == {"depth", "pose"}
    assert any("extractor.*" in d and "--without-feature" in d for d in report.dropped)
    other = featdepth_layout(pose=False, autoencoder=True, seed=99)
    other = {k: v for k, v in other.items() if k.startswith(("Encoder.", "Decoder."))}
    ae_file = save_mmcv(other, tmp_path / "other_ae.pth")
    with pytest.raises(ImportWeightsError, match="differs from the extractor"):
        import_featdepth(depth_file, H, W, autoencoder=ae_file)
    # the auto-encoder alone: a FeatureNet-only checkpoint usable as model.feature_weights
    report = import_featdepth(ae_file)
    assert set(report.models) == {"feature"} and report.config["loss"]["mode"] == "featurenet"
    # a missing decoder tensor is named
    bad = featdepth_layout(pose=False)
    del bad["DepthDecoder.merge2.conv.bias"]
    with pytest.raises(ImportWeightsError, match="decoder.merge.2.conv.bias"):
        import_featdepth(save_mmcv(bad, tmp_path / "bad.pth"), H, W)


def test_import_refuses_size_and_existing_out(md2, tmp_path, capsys):
    assert main(["import-weights", "--from", "monodepth2", md2["folder"], "--height", "100",
                 "--out", str(tmp_path / "o.pt")]) == 2
    assert "multiple of 32" in _one_error_line(capsys)
    assert main(["import-weights", "--from", "monodepth2", md2["folder"], "--out", md2["ckpt"]]) == 2
    assert "exists" in _one_error_line(capsys)
