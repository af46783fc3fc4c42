"""Imported Monodepth2 weights give Monodepth2's own test_simple.py disparity (slow, needs MD2_REPO).

``MD2_REPO`` points at a Monodepth2 checkout (see bench/md2_equality.py for the two compat edits a
current torchvision needs); the test is skipped without it.
"""
import importlib.util
import os

import pytest
import torch

MD2_REPO = os.environ.get("MD2_REPO", "")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (MD2_REPO and os.path.isfile(os.path.join(MD2_REPO, "test_simple.py"))),
                       reason="MD2_REPO (a Monodepth2 checkout) not set"),
]


def _bench():
    path = os.path.join(os.path.dirname(__file__), "..", "bench", "md2_equality.py")
    spec = importlib.util.spec_from_file_location("md2_equality", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("layers", [18, 50])
def test_disparity_equals_monodepth2(layers, tmp_path):
    bench = _bench()
    image = bench.default_image(str(tmp_path))
    torch.set_num_threads(1)
    r = bench.compare(MD2_REPO, layers, image, str(tmp_path))
    assert r["shape"] == (1, 1, 192, 640)
    assert r["scaled_disp_range"][1] - r["scaled_disp_range"][0] > 0.5  # a non-trivial disparity map
    assert r["scaled_disp_max_abs_diff"] <= 1e-4
    assert r["sigmoid_disp_max_abs_diff"] <= 1e-5
    assert r["pose_max_abs_diff"] <= 1e-6
