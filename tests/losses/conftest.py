"""Loss tests use tiny tensors: run them single-threaded (intra-op thread hand-offs dominate the
run time on a loaded 2-core machine), restoring the session's thread count afterwards."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
