"""`fmdepth export`: DepthNet / PoseNet to ONNX (onnxruntime) and TorchScript (torch.jit.load)."""
import importlib.util

import numpy as np
import pytest
import torch

from fmdepth.cli import main
from fmdepth.inference import DepthPredictor, PosePredictor
from fmdepth.interop.export import run_exported

HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="onnx/onnxruntime not installed (pip install -e \".[export]\")")
H, W = 64, 96


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """An imported Monodepth2-style checkpoint (ResNet18, input_norm monodepth2) at 64x96."""
    import sys
    import os

    sys.path.insert(0, os.path.dirname(__file__))
    from test_import_weights import write_md2_folder

    root = tmp_path_factory.mktemp("export")
    folder, _ = write_md2_folder(root / "md2", height=H, width=W)
    out = str(root / "md2.pt")
    assert main(["import-weights", "--from", "monodepth2", folder, "--out", out]) == 0
    return out


def _batch(n, c=3, seed=0):
    return torch.rand(n, c, H, W, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=needs_onnx)])
def test_export_depth_dynamic_batch(ckpt, tmp_path, fmt, capsys):
    out = str(tmp_path / f"depth.{fmt}")
    assert main(["export", "--checkpoint", ckpt, "--format", fmt, "--out", out]) == 0
    text = capsys.readouterr().out
    assert "max |exported - PyTorch|" in text and "dynamic batch" in text
    net = DepthPredictor.from_checkpoint(ckpt, device="cpu").net
    for n in (1, 3):
        x = _batch(n, seed=n)
        with torch.no_grad():
            ref = net(x)[0].numpy()
        got = run_exported(out, fmt, x)
        assert got[0].shape == (n, 1, H, W)
        assert np.abs(got[0] - ref).max() < 1e-4


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=needs_onnx)])
def test_export_pose(ckpt, tmp_path, fmt):
    out = str(tmp_path / f"pose.{fmt}")
    assert main(["export", "--checkpoint", ckpt, "--format", fmt, "--pose", "--out", out]) == 0
    net = PosePredictor.from_checkpoint(ckpt, device="cpu").net
    x = _batch(2, c=6, seed=7)
    with torch.no_grad():
        ref = [t.numpy() for t in net(x)]
    got = run_exported(out, fmt, x)
    assert [g.shape for g in got] == [(2, 3), (2, 3)]
    assert max(np.abs(a - b).max() for a, b in zip(got, ref)) < 1e-4


@needs_onnx
def test_onnx_metadata(ckpt, tmp_path):
    import onnx

    out = str(tmp_path / "d.onnx")
    assert main(["export", "--checkpoint", ckpt, "--format", "onnx", "--out", out]) == 0
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["input_norm"] == "monodepth2" and meta["min_depth"] == "0.1" and meta["height"] == str(H)


def test_export_bad_input(ckpt, tmp_path, capsys):
    assert main(["export", "--checkpoint", ckpt, "--format", "torchscript", "--height", "100",
                 "--out", str(tmp_path / "x.ts")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ckpt in err[0] and "not a multiple of 32" in err[0]
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"nope")
    assert main(["export", "--checkpoint", str(junk), "--format", "torchscript", "--out", str(tmp_path / "x.ts")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(junk) in err[0]


def test_export_onnx_missing_packages(ckpt, tmp_path, monkeypatch, capsys):
    import builtins

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name in ("onnx", "onnxruntime"):
            raise ImportError(f"No module named '{name}'", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    assert main(["export", "--checkpoint", ckpt, "--format", "onnx", "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "pip install -e \".[export]\"" in err and "onnx" in err


def test_export_other_architecture(tmp_path, capsys):
    from fmdepth.config import Config, config_to_dict

    cfg = config_to_dict(Config())
    cfg["task"] = "registration"
    path = str(tmp_path / "reg.pt")
    torch.save({"config": cfg, "models": {"registration": {"w": torch.zeros(1)}}, "optimizer": {},
                "scheduler": {}, "scaler": None, "step": 0, "epoch": 0, "version": "0.1.0", "rng": {},
                "best_metric": None}, path)
    assert main(["export", "--checkpoint", path, "--format", "torchscript", "--out", str(tmp_path / "x.ts")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and path in err[0] and "no 'depth' network" in err[0]
