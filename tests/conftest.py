"""Shared fixtures: devices and dtypes with per-dtype tolerances.

``device`` is parametrised over CPU and CUDA; the CUDA case is skipped cleanly when no GPU
is present. ``dtype`` is float32/float64 with ``tol`` giving matching tolerances.
"""
import os

import numpy as np
import pytest
import torch

# One intra-op thread: the test tensors are small, where thread hand-offs cost more than they
# save, and timings stay stable on a shared 2-core CI machine.
torch.set_num_threads(1)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(params=DEVICES)
def device(request):
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


@pytest.fixture
def tol(dtype):
    """(rtol, atol) suited to ``dtype``."""
    return {torch.float32: (1e-4, 1e-5), torch.float64: (1e-9, 1e-10)}[dtype]


@pytest.fixture
def cuda_device():
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    return torch.device("cuda")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def shared_dir():
    """The ../shared folder beside the checkout (split lists, test data)."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.normpath(os.path.join(here, "..", "..", "shared"))
    if not os.path.isdir(path):
        pytest.skip(f"shared data folder not found at {path}")
    return path
