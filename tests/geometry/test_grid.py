"""Tests for fmdepth.geometry.grid."""
import pytest
import torch

from fmdepth.geometry import normalized_grid, pixel_grid
from fmdepth.geometry import grid as grid_module


def test_pixel_grid_values(device, dtype):
    g = pixel_grid(3, 4, device, dtype)
    assert g.shape == (3, 4, 2) and g.dtype == dtype and g.device.type == device.type
    assert g[2, 3].tolist() == [3.0, 2.0]
    assert g[..., 0].tolist() == [[0, 1, 2, 3]] * 3


def test_grid_cached_per_size_device_dtype_not_batch(dtype):
    a = pixel_grid(5, 7, "cpu", dtype)
    assert pixel_grid(5, 7, torch.device("cpu"), dtype) is a
    assert pixel_grid(5, 8, "cpu", dtype) is not a
    other = torch.float64 if dtype == torch.float32 else torch.float32
    assert pixel_grid(5, 7, "cpu", other).dtype == other
    # no batch size in the cache key: after the first call, other batch sizes reuse the grids
    from fmdepth.geometry import flow_warp, inverse_warp

    def run(batch):
        image = torch.rand(batch, 1, 9, 10, dtype=dtype)
        flow_warp(image, torch.zeros(batch, 2, 9, 10, dtype=dtype))
        K = torch.tensor([[5.0, 0, 4], [0, 5, 4], [0, 0, 1]], dtype=dtype).expand(batch, 3, 3)
        inverse_warp(image, torch.ones(batch, 1, 9, 10, dtype=dtype), torch.eye(4, dtype=dtype).expand(batch, 4, 4), K)

    run(1)
    misses = (grid_module._normalized.cache_info().misses, grid_module._homogeneous.cache_info().misses)
    for batch in (3, 5):
        run(batch)
    assert (grid_module._normalized.cache_info().misses, grid_module._homogeneous.cache_info().misses) == misses


def test_normalized_grid_align_corners():
    g = normalized_grid(3, 5)
    assert g[0, 0].tolist() == [-1.0, -1.0] and g[-1, -1].tolist() == [1.0, 1.0]
    torch.testing.assert_close(g[1, 2], torch.tensor([0.0, 0.0]))
    assert normalized_grid(1, 1)[0, 0].tolist() == [-1.0, -1.0]  # single pixel: grid_sample reads it


def test_grid_built_under_inference_mode_is_usable_with_autograd():
    with torch.inference_mode():
        pixel_grid(6, 11)
        normalized_grid(6, 11)
    from fmdepth.geometry import flow_warp
    flow = torch.zeros(1, 2, 6, 11, requires_grad=True)
    flow_warp(torch.rand(1, 1, 6, 11), flow)[0].sum().backward()
    assert flow.grad is not None


def test_bad_size():
    with pytest.raises(ValueError, match="height, width"):
        pixel_grid(0, 3)
    with pytest.raises(ValueError, match="height, width"):
        normalized_grid(2.5, 3)
