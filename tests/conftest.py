import pytest
import torch

# Test models are tiny: one thread is fastest, and avoids oversubscription when other jobs share the cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    yield


def brute_force_codes(tokens: torch.Tensor, codebook: torch.Tensor, group_of_token: torch.Tensor) -> torch.Tensor:
    """Reference nearest neighbour: tokens (B, T, D), codebook (G, K, D) -> (B, T) by float64 argmin."""
    books = codebook.double()[group_of_token]  # (T, K, D)
    distances = (tokens.double()[:, :, None, :] - books[None]).pow(2).sum(-1)  # (B, T, K)
    return distances.argmin(-1)
