"""Exact, memory-bounded nearest-code search for many codebooks at once.

Distances are ranked with the matmul form ||c||^2 - 2 x.c (||x||^2 is the same for every code of
a row), computed in float32 chunks of groups and rows so the (G, N, K) distance tensor never
exists whole. The matmul form rounds, so a row whose runner-up lies within a rigorous float32
error bound of its best code is re-ranked with direct float64 differences: the result equals a
brute-force argmin of ((x - c) ** 2).sum(), ties going to the lowest index.

Fused kernels compute the same scores without storing them and return each token's best and
runner-up score, to which the same exactness check applies: C++ on the CPU (``cpu_search``, which
also does the check and the float64 re-rank itself, group by group while the codes are in cache),
Triton on CUDA GPUs (``gpu_search``). Where neither applies (no compiler, no Triton, or
``REVQ_CPU_KERNEL=0`` / ``REVQ_GPU_KERNEL=0``), the chunked matmul form runs.
"""
from __future__ import annotations

import torch

from revq_core.ops import cpu_search, gpu_search


@torch.no_grad()
def nearest_codes(grouped_tokens: torch.Tensor, codebook: torch.Tensor, memory_mb: int = 256,
                  use_kernel: bool = True) -> torch.Tensor:
    """Index of the nearest code for every token of every group.

    Args:
        grouped_tokens: (G, N, D) tokens, one row per token, one slab per codebook.
        codebook: (G, K, D).
        memory_mb: bound on the (groups, rows, K) float32 score chunk of the matmul form.
        use_kernel: use a fused kernel where one applies (False: always the matmul form).
    Returns:
        (G, N) int64 code ids.
    """
    num_groups, num_rows, code_dim = grouped_tokens.shape
    codes_per_group = codebook.shape[1]
    tokens = grouped_tokens.float()
    codes = codebook.float()
    if use_kernel and not tokens.is_cuda:  # the C++ kernel re-ranks near ties itself, group by group
        exact_codes = cpu_search.exact_nearest_codes_fused(tokens, codes, unit_roundoff=2.0 ** -24)
        if exact_codes is not None:
            return exact_codes
    fused = gpu_search.best_two_codes(tokens, codes) if use_kernel and tokens.is_cuda else None
    if fused is not None:  # scores never stored, O(G * N) memory whatever K; float32 multiply-adds
        best_scores, best_codes, runner_up_scores, max_code_sq_norm = fused
        return _rerank_near_ties(tokens, codes, best_scores, best_codes, runner_up_scores, max_code_sq_norm[:, None],
                                 unit_roundoff=2.0 ** -24)
    code_sq_norms = codes.pow(2).sum(-1)  # (G, K)
    rows_per_chunk, groups_per_chunk = _chunk_sizes(num_groups, num_rows, codes_per_group, memory_mb)
    out = torch.empty(num_groups, num_rows, dtype=torch.long, device=grouped_tokens.device)
    for group_start in range(0, num_groups, groups_per_chunk):
        groups = slice(group_start, group_start + groups_per_chunk)
        max_code_sq_norm = code_sq_norms[groups].amax(dim=1, keepdim=True)  # (g, 1)
        for row_start in range(0, num_rows, rows_per_chunk):
            rows = slice(row_start, row_start + rows_per_chunk)
            out[groups, rows] = _nearest_in_chunk(tokens[groups, rows], codes[groups], code_sq_norms[groups],
                                                  max_code_sq_norm)
    return out


@torch.no_grad()
def brute_force_nearest_codes(grouped_tokens: torch.Tensor, codebook: torch.Tensor,
                              memory_mb: int = 1024) -> torch.Tensor:
    """The float64 reference the fast paths are checked against (tests, benchmarks): for every token the
    first k minimising sum_d (x_d - c_kd)^2, from all differences in float64. Slow: G * N * K * D float64
    differences, made a few groups at a time (at most ``memory_mb``).

    Args:
        grouped_tokens: (G, N, D) tokens; the work runs on their device.
        codebook: (G, K, D).
    Returns:
        (G, N) int64 code ids.
    """
    num_groups, num_rows, code_dim = grouped_tokens.shape
    groups_per_chunk = max(1, memory_mb * 2**20 // (8 * num_rows * codebook.shape[1] * code_dim))
    ids = []
    for start in range(0, num_groups, groups_per_chunk):
        tokens = grouped_tokens[start:start + groups_per_chunk].double()
        codes = codebook[start:start + groups_per_chunk].to(tokens.device, torch.float64)
        ids.append((tokens[:, :, None] - codes[:, None]).pow(2).sum(-1).argmin(-1))  # argmin: first minimum
    return torch.cat(ids)


def _nearest_in_chunk(tokens: torch.Tensor, codes: torch.Tensor, code_sq_norms: torch.Tensor,
                      max_code_sq_norm: torch.Tensor) -> torch.Tensor:
    """tokens (g, n, D), codes (g, K, D), code_sq_norms (g, K) -> (g, n) exact nearest ids."""
    # scores (g, n, K) = ||c||^2 - 2 x.c, the squared distance less ||x||^2.
    scores = torch.baddbmm(code_sq_norms[:, None, :], tokens, codes.transpose(1, 2), alpha=-2.0)
    best_scores, best_codes = scores.min(dim=-1)  # (g, n)
    runner_up_scores = scores.scatter_(-1, best_codes[..., None], float("inf")).amin(dim=-1)  # (g, n)
    return _rerank_near_ties(tokens, codes, best_scores, best_codes, runner_up_scores, max_code_sq_norm)


def _rerank_near_ties(tokens: torch.Tensor, codes: torch.Tensor, best_scores: torch.Tensor,
                      best_codes: torch.Tensor, runner_up_scores: torch.Tensor,
                      max_code_sq_norm: torch.Tensor, unit_roundoff: float | None = None) -> torch.Tensor:
    """Make float32 winners exact: tokens (g, n, D), codes (g, K, D); best/runner-up scores and
    best_codes (g, n); max_code_sq_norm (g, 1); unit_roundoff of the score arithmetic (None: that of
    the matmul on this device). Returns best_codes (g, n), corrected in place."""
    # Error bound of each float32 score (dot product and norms of length D, then two additions):
    # |err| <= (D + 2) u (||x||^2 + 2||x|| ||c|| + ||c||^2) <= 2 (D + 2) u (||x||^2 + ||c||^2).
    # Two scores closer than twice that can be in the wrong order: re-rank those rows exactly.
    unit_roundoff = _unit_roundoff(tokens) if unit_roundoff is None else unit_roundoff
    token_sq_norms = tokens.pow(2).sum(-1)  # (g, n)
    tolerance = 4 * (tokens.shape[-1] + 2) * unit_roundoff * (token_sq_norms + max_code_sq_norm)
    ambiguous = runner_up_scores <= best_scores + tolerance  # (g, n)
    if ambiguous.any():
        group_ids, row_ids = ambiguous.nonzero(as_tuple=True)
        exact = cpu_search.exact_nearest_codes(tokens[group_ids, row_ids], codes, group_ids)
        if exact is not None:  # C++, no temporaries of size K
            best_codes[group_ids, row_ids] = exact
            return best_codes
        codes_per_group, code_dim = codes.shape[1:]
        rows_per_pass = max(1, 2**26 // (codes_per_group * code_dim))  # float64 differences: <= 512 MB
        for start in range(0, len(group_ids), rows_per_pass):
            groups, rows = group_ids[start:start + rows_per_pass], row_ids[start:start + rows_per_pass]
            differences = tokens[groups, rows].double()[:, None, :] - codes[groups].double()  # (a, K, D)
            best_codes[groups, rows] = differences.pow(2).sum(-1).argmin(dim=-1)  # first minimum: lowest index
    return best_codes


def _unit_roundoff(tensor: torch.Tensor) -> float:
    """Rounding unit of the matmul: 2^-24 for float32, 2^-11 where CUDA may use TF32."""
    if tensor.is_cuda and torch.backends.cuda.matmul.allow_tf32:
        return 2.0 ** -11
    return 2.0 ** -24


def _chunk_sizes(num_groups: int, num_rows: int, codes_per_group: int, memory_mb: int) -> tuple[int, int]:
    """(rows per chunk, groups per chunk) so a (groups, rows, K) float32 chunk fits ``memory_mb``."""
    budget_floats = max(1, memory_mb * 2**20 // 4)
    rows_per_chunk = max(1, min(num_rows, budget_floats // codes_per_group))
    groups_per_chunk = max(1, min(num_groups, budget_floats // (rows_per_chunk * codes_per_group)))
    return rows_per_chunk, groups_per_chunk
