"""The fused CPU search kernel (revq_core.ops.cpu_search) against float64 brute force and the matmul form."""
import pytest
import torch

from revq_core.ops.cpu_search import best_two_codes, exact_nearest_codes, exact_nearest_codes_fused, kernel_enabled
from revq_core.ops.search import brute_force_nearest_codes as _brute_force
from revq_core.ops.search import nearest_codes

pytestmark = pytest.mark.skipif(not kernel_enabled(), reason="the fused CPU kernel cannot be built here "
                                                               "(no C++ compiler/ninja, or REVQ_CPU_KERNEL=0)")




# D = 4, 8, 16 take compiled fixed-size loops; others the generic loop. K % 128 pads the last chunk, N % 8
# leaves a partial block of rows; few groups (< 2 x threads) split rows into items of 64 across threads.
@pytest.mark.parametrize("groups,rows,codes,code_dim", [(512, 6, 64, 4), (7, 13, 37, 4), (3, 5, 16, 8), (2, 9, 50, 16),
                                                        (4, 3, 5, 1), (2, 11, 33, 3), (1, 4, 100, 64), (3, 1, 1, 2),
                                                        (64, 3, 20, 4), (40, 5, 17, 8), (1, 150, 300, 4),
                                                        (3, 70, 1000, 8), (2, 9, 2000, 5)])
def test_fast_path_equals_float64_brute_force_and_the_matmul_form(groups, rows, codes, code_dim):
    generator = torch.Generator().manual_seed(groups * 1000 + codes)
    tokens = torch.randn(groups, rows, code_dim, generator=generator)
    codebook = torch.randn(groups, codes, code_dim, generator=generator)
    fast = nearest_codes(tokens, codebook)
    assert torch.equal(fast, _brute_force(tokens, codebook))
    assert torch.equal(fast, nearest_codes(tokens, codebook, use_kernel=False))


def test_kernel_scores_and_runner_up_match_dense_scores():
    generator = torch.Generator().manual_seed(3)
    tokens, codebook = torch.randn(5, 7, 4, generator=generator), torch.randn(5, 45, 4, generator=generator)
    norms = codebook.pow(2).sum(-1)
    best, ids, runner_up, largest_norm = best_two_codes(tokens, codebook)
    assert torch.allclose(largest_norm, norms.amax(-1))
    dense = (norms[:, None, :] - 2 * tokens @ codebook.transpose(1, 2)).double()  # (G, N, K)
    assert torch.allclose(best.double(), dense.amin(-1), atol=1e-5)
    assert torch.allclose(runner_up.double(), dense.scatter(-1, ids[..., None], float("inf")).amin(-1), atol=1e-5)


def test_exact_ties_and_duplicate_codes_go_to_the_lowest_index():
    codebook = torch.randn(2, 40, 4)
    codebook[:, 33] = codebook[:, 5]  # duplicates in different lanes and a tail position
    codebook[:, 21] = codebook[:, 5]
    tokens = torch.stack([codebook[:, 5], codebook[:, 21] + 1e-3, codebook[:, 33]], dim=1)  # (2, 3, 4)
    assert torch.equal(nearest_codes(tokens, codebook), _brute_force(tokens, codebook))
    assert nearest_codes(tokens, codebook)[:, 0].tolist() == [5, 5]


def test_near_ties_beyond_float32_resolution_are_exact():
    offset = torch.tensor([3000.0, 0.0, 0.0, 0.0])
    codebook = (offset + 1e-3 * torch.randn(1, 64, 4))
    tokens = offset + 1e-3 * torch.randn(1, 50, 4)
    assert torch.equal(nearest_codes(tokens, codebook), _brute_force(tokens, codebook))


@pytest.mark.parametrize("groups", [1, 16])  # rows split across threads / whole groups per thread
def test_the_kernel_re_ranks_near_ties_itself_in_both_thread_layouts(groups):
    generator = torch.Generator().manual_seed(groups)
    offset = torch.tensor([3000.0, 0.0, 0.0, 0.0])
    codebook = offset + 1e-3 * torch.randn(groups, 300, 4, generator=generator)
    tokens = offset + 1e-3 * torch.randn(groups, 40, 4, generator=generator)
    exact = _brute_force(tokens, codebook)
    float32_winners = best_two_codes(tokens, codebook)[1]
    assert not torch.equal(float32_winners, exact)  # the float32 pass alone gets some wrong
    assert torch.equal(exact_nearest_codes_fused(tokens, codebook), exact)
    assert torch.equal(nearest_codes(tokens, codebook), exact)


def test_kernel_declines_what_it_does_not_handle():
    tokens, codebook = torch.randn(1, 2, 4), torch.randn(1, 8, 4)
    assert best_two_codes(tokens.double(), codebook.double()) is None
    wide = torch.randn(1, 2, 65), torch.randn(1, 8, 65)
    assert best_two_codes(*wide) is None and exact_nearest_codes_fused(*wide) is None
    assert torch.equal(nearest_codes(*wide), _brute_force(*wide))  # matmul form takes over


@pytest.mark.parametrize("codes,code_dim", [(40000, 4), (5000, 64), (2100, 64)])
def test_large_codebooks_far_apart_duplicates_and_late_winners(codes, code_dim):
    """Large K on the per-group path: the best code can sit near the end of the codebook, and a
    duplicate of an early code at the very end never takes its place."""
    generator = torch.Generator().manual_seed(codes + code_dim)
    groups, rows = 8, 10  # 8 >= 4 x threads: each thread takes whole groups
    tokens = torch.randn(groups, rows, code_dim, generator=generator)
    codebook = torch.randn(groups, codes, code_dim, generator=generator)
    codebook[:, codes - 1] = codebook[:, 3]  # the same code in the first and the last chunk
    tokens[:, 0] = codebook[:, 3]
    codebook[:, codes - 5] = tokens[:, 1] + 1e-4  # nearest code of row 1 in the last chunk
    best, ids, runner_up, _ = best_two_codes(tokens, codebook)
    expected = _brute_force(tokens, codebook)
    assert torch.equal(nearest_codes(tokens, codebook), expected)
    assert ids[:, 1].tolist() == [codes - 5] * groups and expected[:, 0].tolist() == [3] * groups
    # the float32 kernel may order the two duplicates either way (vector vs tail loop): its runner-up
    # must then be within rounding of its best, which sends the row to the exact float64 re-rank
    assert set(ids[:, 0].tolist()) <= {3, codes - 1}
    assert bool(((runner_up[:, 0] - best[:, 0]).abs() <= 1e-5 * (1 + best[:, 0].abs())).all())
    norms = codebook.pow(2).sum(-1)
    dense = (norms[:, None, :] - 2 * tokens @ codebook.transpose(1, 2)).double()
    assert torch.allclose(runner_up.double(), dense.scatter(-1, expected[..., None], float("inf")).amin(-1), atol=1e-4)


@pytest.mark.parametrize("groups,code_dim", [(1, 4), (8, 8), (3, 5)])
def test_best_and_runner_up_over_many_chunks_match_dense_scores(groups, code_dim):
    """K = 5000 spans 40 chunks of 128 codes over several cache tiles: the hot loop skips most chunks and
    re-scores the few that hold a score below the runner-up; best, its id and the runner-up must still be
    those of the dense score matrix."""
    generator = torch.Generator().manual_seed(groups * 10 + code_dim)
    tokens = torch.randn(groups, 37, code_dim, generator=generator)
    codebook = torch.randn(groups, 5000, code_dim, generator=generator)
    best, ids, runner_up, _ = best_two_codes(tokens, codebook)
    norms = codebook.pow(2).sum(-1)
    dense = (norms[:, None, :] - 2 * tokens @ codebook.transpose(1, 2)).double()  # (G, N, K)
    assert torch.equal(ids, nearest_codes(tokens, codebook))
    assert torch.allclose(best.double(), dense.amin(-1), atol=1e-4)
    assert torch.allclose(runner_up.double(), dense.scatter(-1, ids[..., None], float("inf")).amin(-1), atol=1e-4)


def test_ties_inside_one_vector_across_chunks_and_in_the_padding_go_to_the_lowest_index():
    codebook = torch.randn(2, 300, 4)  # 300 = 2 chunks of 128 + 44 codes and 84 padded slots
    for duplicate in (6, 7, 140, 299):  # same vector of 16, the next chunk, the last real code
        codebook[:, duplicate] = codebook[:, 5]
    tokens = torch.stack([codebook[:, 5], codebook[:, 299] + 1e-6, -codebook[:, 5]], dim=1)  # (2, 3, 4)
    _, ids, runner_up, _ = best_two_codes(tokens, codebook)
    assert ids[:, 0].tolist() == [5, 5]
    assert torch.equal(nearest_codes(tokens, codebook), _brute_force(tokens, codebook))


@pytest.mark.parametrize("groups", [1, 8])  # rows split across threads / whole groups per thread
def test_the_first_tile_s_runner_up_can_come_from_any_other_chunk(groups):
    """The first cache tile re-scores only the chunk holding each row's smallest score; the runner-up
    then comes from the other chunks' minima: an exact duplicate of the best two chunks later must make
    the runner-up equal to the best, and the best keep the lower id."""
    generator = torch.Generator().manual_seed(groups)
    codebook = torch.randn(groups, 1000, 4, generator=generator)
    codebook[:, 300] = codebook[:, 5]  # chunk 0 and chunk 2 of the first tile
    tokens = torch.cat([codebook[:, 5:6], torch.randn(groups, 20, 4, generator=generator)], dim=1)
    best, ids, runner_up, _ = best_two_codes(tokens, codebook)
    norms = codebook.pow(2).sum(-1)
    dense = (norms[:, None, :] - 2 * tokens @ codebook.transpose(1, 2)).double()
    assert ids[:, 0].tolist() == [5] * groups and torch.equal(runner_up[:, 0], best[:, 0])
    assert torch.equal(ids, _brute_force(tokens, codebook))
    assert torch.allclose(runner_up.double(), dense.scatter(-1, ids[..., None], float("inf")).amin(-1), atol=1e-4)


def test_exact_nearest_codes_equals_float64_brute_force():
    generator = torch.Generator().manual_seed(11)
    codebook = torch.randn(4, 777, 6, generator=generator)
    group_ids = torch.tensor([3, 0, 0, 2, 1])
    tokens = torch.randn(5, 6, generator=generator)
    tokens[1] = codebook[0, 500]
    codebook[0, 600] = codebook[0, 500]  # tie: the lower index
    expected = (tokens.double()[:, None] - codebook[group_ids].double()).pow(2).sum(-1).argmin(-1)
    found = exact_nearest_codes(tokens, codebook, group_ids)
    assert torch.equal(found, expected) and found[1] == 500
    assert exact_nearest_codes(tokens.double(), codebook.double(), group_ids) is None
