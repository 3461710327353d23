import pytest
import torch

from revq_core.modeling.quantizers.reset import CodeUsage, reset_unused_codes


def _codebook(groups=1, codes=10, dim=3):
    return torch.arange(groups * codes * dim, dtype=torch.float32).reshape(groups, codes, dim)


def test_reset_moves_least_used_codes_onto_most_used_ones():
    codebook = _codebook()
    before = codebook.clone()
    counts = torch.tensor([[5, 0, 3, 0, 0, 9, 1, 0, 2, 0]])  # 5 unused; floor(0.2 * 10) = 2 resets
    stats = reset_unused_codes(codebook, counts, reset_ratio=0.2, noise_std=0.0)
    assert stats.codes_reset == 2 and stats.codes_reset_per_group.tolist() == [2]
    assert torch.equal(codebook[0, 1], before[0, 5])  # least used (lowest index among zeros) <- most used
    assert torch.equal(codebook[0, 3], before[0, 0])  # second least used <- second most used
    untouched = [0, 2, 4, 5, 6, 7, 8, 9]
    assert torch.equal(codebook[0, untouched], before[0, untouched])
    assert stats.usage == pytest.approx(0.5)


def test_reset_count_is_limited_by_unused_codes_and_per_group():
    codebook = _codebook(groups=3)
    counts = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1, 1, 0],  # 1 unused -> 1 reset
                           [1] * 10,  # none unused -> none
                           [0] * 9 + [4]])  # 9 unused -> floor(0.2 * 10) = 2
    before = codebook.clone()
    stats = reset_unused_codes(codebook, counts, noise_std=0.0)
    assert stats.codes_reset_per_group.tolist() == [1, 0, 2]
    assert torch.equal(codebook[0, 9], before[0, 0])  # stable: among equal counts the lowest index is "most used"
    assert torch.equal(codebook[1], before[1])
    assert torch.equal(codebook[2, 0], before[2, 9])
    assert torch.equal(codebook[2, 1], before[2, 0])  # second "most used" is the first zero, read before writing
    assert stats.usage_per_group.tolist() == pytest.approx([0.9, 1.0, 0.1])


def test_reset_noise_is_seeded_and_scaled():
    counts = torch.tensor([[3, 0, 0, 7, 0, 0, 0, 0, 0, 0]])
    first, second = _codebook(), _codebook()
    reset_unused_codes(first, counts, noise_std=0.1, generator=torch.Generator().manual_seed(7))
    reset_unused_codes(second, counts, noise_std=0.1, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)
    noise = torch.randn(2, 3, generator=torch.Generator().manual_seed(7))
    original = _codebook()
    assert torch.allclose(first[0, 1], original[0, 3] + 0.1 * noise[0])
    assert torch.allclose(first[0, 2], original[0, 0] + 0.1 * noise[1])


def test_usage_counter_maps_tokens_to_their_group_and_zeroes():
    group_of_token = torch.arange(6) % 3  # T = 6 tokens over G = 3 codebooks
    usage = CodeUsage(3, 4, group_of_token)
    usage.update(torch.tensor([[0, 1, 2, 3, 3, 3], [0, 0, 0, 0, 0, 0]]))
    expected = torch.tensor([[3, 0, 0, 1], [2, 1, 0, 1], [2, 0, 1, 1]])
    assert torch.equal(usage.counts, expected)
    assert usage.usage() == pytest.approx((2 / 4 + 3 / 4 + 3 / 4) / 3)
    usage.zero_()
    assert usage.counts.sum() == 0 and usage.usage() == 0.0


def test_counts_must_match_the_codebook():
    with pytest.raises(ValueError, match=r"counts must have shape \(G, K\)"):
        reset_unused_codes(_codebook(), torch.zeros(2, 10))
