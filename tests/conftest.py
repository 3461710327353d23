import os

import pytest
import torch

# Test models are tiny: one thread is fastest, and avoids oversubscription when other jobs share the cores.
torch.set_num_threads(1)


@pytest.fixture
def two_threads():
    """For the large steps of the paper-scale tests (a 14-73 M-parameter rectifier, a codebook of up to 2 GiB)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    yield

