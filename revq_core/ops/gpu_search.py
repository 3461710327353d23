"""A fused GPU kernel (Triton) for the nearest-code search: best and runner-up score per token.

The GPU analogue of ``cpu_search``. The matmul form of the search writes a (G, N, K) float32 score
tensor and reads it back to find each row's minimum: at the paper's 512T configuration and B = 256
that is 8.6 GB of traffic per step for 17 GFLOP of arithmetic, so the search is bound by memory.
This kernel scores a tile of tokens against a tile of codes in registers (``||c||^2 - 2 x.c`` with
float32 multiply-adds, no TF32) and keeps, per token, the best score, its code id and the runner-up
score; nothing of size K is stored. ``search.nearest_codes`` turns the runner-up into its exactness
check (rows whose runner-up lies within the float32 error bound are re-ranked in float64), so the
result is still exactly the brute-force argmin, ties to the lowest index.

Needs Triton (shipped with CUDA builds of PyTorch). ``best_two_codes`` returns None where it does
not apply (CPU tensors, no Triton, D > 64, or ``REVQ_GPU_KERNEL=0``) and the matmul form runs.
"""
from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU builds of torch come without Triton: the matmul form runs
    triton = None

MAX_CODE_DIM = 64

if triton is not None:

    @triton.jit
    def _best_two_kernel(tokens_ptr, codes_ptr, sq_norms_ptr, best_ptr, best_id_ptr, runner_up_ptr,
                         num_rows, num_codes, CODE_DIM: tl.constexpr, BLOCK_ROWS: tl.constexpr,
                         BLOCK_CODES: tl.constexpr):
        """One program: BLOCK_ROWS tokens of one group against all K codes of its codebook.

        Each (row, lane) of the tile keeps its own best score, code id and runner-up over the codes
        lane, lane + BLOCK_CODES, ...: the loop is element-wise (no reduction across threads); one
        reduction over the lanes at the end gives each row's best, lowest id among ties, and runner-up.
        """
        group = tl.program_id(1).to(tl.int64)
        rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        row_mask = rows < num_rows
        token_base = tokens_ptr + group * num_rows * CODE_DIM + rows * CODE_DIM  # (BLOCK_ROWS,) pointers
        code_base = codes_ptr + group * num_codes * CODE_DIM
        lanes = tl.arange(0, BLOCK_CODES)
        inf = float("inf")
        best = tl.full([BLOCK_ROWS, BLOCK_CODES], inf, tl.float32)
        runner_up = tl.full([BLOCK_ROWS, BLOCK_CODES], inf, tl.float32)
        best_id = tl.zeros([BLOCK_ROWS, BLOCK_CODES], tl.int32)
        for code_start in range(0, num_codes, BLOCK_CODES):
            code_ids = code_start + lanes
            code_mask = code_ids < num_codes
            norms = tl.load(sq_norms_ptr + group * num_codes + code_ids, mask=code_mask, other=inf)
            scores = tl.zeros([BLOCK_ROWS, BLOCK_CODES], tl.float32) + norms[None, :]  # codes past K: inf
            for d in tl.static_range(CODE_DIM):
                scaled_token = tl.load(token_base + d, mask=row_mask, other=0.0) * -2.0
                code_column = tl.load(code_base + code_ids * CODE_DIM + d, mask=code_mask, other=0.0)
                scores = scores + scaled_token[:, None] * code_column[None, :]
            runner_up = tl.minimum(runner_up, tl.maximum(best, scores))
            best_id = tl.where(scores < best, code_ids[None, :], best_id)  # strict: earlier code wins ties
            best = tl.minimum(best, scores)
        row_best = tl.min(best, axis=1)  # (BLOCK_ROWS,)
        is_best = best == row_best[:, None]
        row_id = tl.min(tl.where(is_best, best_id, num_codes), axis=1)  # lowest id among tied lanes
        is_winner = is_best & (best_id == row_id[:, None])  # exactly one lane per row
        row_runner_up = tl.minimum(tl.min(runner_up, axis=1), tl.min(tl.where(is_winner, inf, best), axis=1))
        out = group * num_rows + rows
        tl.store(best_ptr + out, row_best, mask=row_mask)
        tl.store(best_id_ptr + out, row_id.to(tl.int64), mask=row_mask)
        tl.store(runner_up_ptr + out, row_runner_up, mask=row_mask)


def kernel_enabled() -> bool:
    """Whether Triton is importable and the kernel is wanted (``REVQ_GPU_KERNEL`` is not 0)."""
    return triton is not None and os.environ.get("REVQ_GPU_KERNEL", "1") != "0"


def best_two_codes(tokens: torch.Tensor, codes: torch.Tensor, interpret: bool = False,
                   block_rows: int = 16, block_codes: int | None = None, num_warps: int = 4):
    """Best score, its code id and the runner-up score for every token, or None when not applicable.

    Args:
        tokens: (G, N, D) float32 CUDA tokens.
        codes: (G, K, D) float32 CUDA codebook.
        interpret: allow CPU tensors (for Triton's interpreter, ``TRITON_INTERPRET=1``; tests only).
        block_rows, block_codes, num_warps: the tile (powers of two; the defaults, 16 rows and 64
            codes at D <= 16, were measured fastest on an H100 by ``benchmarks/gpu.py``).
    Returns:
        (best (G, N) float32, best_ids (G, N) int64, runner_up (G, N) float32, largest_sq_norm (G,)
        float32), scores being ``||c||^2 - 2 x.c`` and largest_sq_norm each group's max ``||c||^2``;
        or None if the inputs are not float32 CUDA tensors with D <= 64 or Triton is missing.
    """
    on_gpu = tokens.is_cuda and codes.is_cuda
    if ((not on_gpu and not interpret) or tokens.dtype != torch.float32 or codes.dtype != torch.float32
            or tokens.shape[-1] > MAX_CODE_DIM or codes.shape[1] == 0 or tokens.shape[1] == 0
            or not kernel_enabled()):
        return None
    tokens, codes = tokens.contiguous(), codes.contiguous()
    num_groups, num_rows, code_dim = tokens.shape
    num_codes = codes.shape[1]
    sq_norms = codes.pow(2).sum(-1)  # (G, K)
    best = torch.empty(num_groups, num_rows, dtype=torch.float32, device=tokens.device)
    runner_up = torch.empty_like(best)
    best_ids = torch.empty(num_groups, num_rows, dtype=torch.long, device=tokens.device)
    if block_codes is None:
        block_codes = 64 if code_dim <= 16 else 32  # three (rows, codes) accumulators stay in registers
    grid = (triton.cdiv(num_rows, block_rows), num_groups)
    _best_two_kernel[grid](tokens, codes, sq_norms, best, best_ids, runner_up, num_rows, num_codes,
                           CODE_DIM=code_dim, BLOCK_ROWS=block_rows, BLOCK_CODES=block_codes, num_warps=num_warps)
    return best, best_ids, runner_up, sq_norms.amax(dim=1)
