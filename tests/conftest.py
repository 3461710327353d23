import os

import pytest
import torch

# Test models are tiny: one thread is fastest, and avoids oversubscription when other jobs share the cores.
torch.set_num_threads(1)


@pytest.fixture
def two_threads():
    """For the large steps of the paper-scale tests (a 14-73 M-parameter rectifier, a codebook of up to 2 GiB)."""
    threads = torch.get_num_threads()
    # this process's share of the cores: 1 on each of the two xdist workers of a 2-core machine (conftest.py)
    share = os.environ.get("REVQ_NUM_THREADS", "").strip()
    torch.set_num_threads(min(2, int(share) if share.isdigit() and int(share) > 0 else os.cpu_count() or 1))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    yield

