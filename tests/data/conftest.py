"""Tiny synthetic datasets rendered once per test session (shared by the data tests)."""
import pytest

from fmdepth.data.synthetic import render_dataset


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """2 drives x 5 frames at 96x320 with velodyne, one moving car per drive."""
    out = tmp_path_factory.mktemp("synth") / "kitti"
    return str(render_dataset(str(out), drives=2, frames=5, seed=3, textureless=0.2, height=96, width=320,
                              moving_cars=1, progress=False))
