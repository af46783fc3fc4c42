"""Imported FeatDepth weights reproduce FeatDepth's own modules (slow, needs FEATDEPTH_REPO).

``FEATDEPTH_REPO`` points at a FeatDepth checkout (its ``mono/`` package); skipped without it.
"""
import importlib.util
import os

import pytest
import torch

REPO = os.environ.get("FEATDEPTH_REPO", "")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (REPO and os.path.isdir(os.path.join(REPO, "mono"))),
                       reason="FEATDEPTH_REPO (a FeatDepth checkout) not set"),
]


def test_featdepth_networks_equal_source(tmp_path):
    path = os.path.join(os.path.dirname(__file__), "..", "bench", "featdepth_equality.py")
    spec = importlib.util.spec_from_file_location("featdepth_equality", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch.set_num_threads(1)
    r = bench.compare(REPO, bench.default_image(str(tmp_path)), str(tmp_path), 192, 640)
    assert r["disp_range"][1] - r["disp_range"][0] > 0.1
    assert r["disp_max_abs_diff"] <= 1e-5
    assert r["pose_max_abs_diff"] <= 1e-6
    assert r["feature_max_abs_diff"] <= 1e-4 and r["reconstruction_max_abs_diff"] <= 1e-5
