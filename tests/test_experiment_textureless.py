"""bench/experiment_textureless.py: the held-out evaluation (all pixels and textureless pixels)."""
import importlib.util
import os

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench():
    spec = importlib.util.spec_from_file_location("experiment_textureless",
                                                  os.path.join(ROOT, "bench", "experiment_textureless.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_accumulator_perfect_constant_and_textureless_split():
    from fmdepth.data.synthetic import TEXTURELESS

    mod = _bench()
    gt = torch.linspace(2.0, 40.0, 16 * 32).reshape(1, 1, 16, 32).double()
    label = torch.full((1, 1, 16, 32), 6, dtype=torch.int64)
    label[..., :, :16] |= TEXTURELESS  # left half textureless
    perfect = mod.Accumulator()
    perfect.add(gt, label, (1.0 / gt).float() * 3.0)  # any scale: median scaling removes it
    r = perfect.result()
    assert r["overall"]["abs_rel"] < 1e-5 and r["textureless"]["abs_rel"] < 1e-5
    assert r["textureless_images"] == 1 and abs(r["textureless_pixel_fraction"] - 0.5) < 1e-9

    const = mod.Accumulator()
    const.add(gt, label, None)
    g = gt.numpy().ravel()
    pred = np.full_like(g, np.median(g))
    expect = np.mean(np.abs(g - pred) / g)
    assert abs(const.result()["overall"]["abs_rel"] - expect) < 1e-6
    left = gt[..., :16].numpy().ravel()
    expect_tl = np.mean(np.abs(left - np.median(g)) / left)  # same scale ratio, textureless pixels only
    assert abs(const.result()["textureless"]["abs_rel"] - expect_tl) < 1e-6
