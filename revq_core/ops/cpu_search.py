"""A fused CPU kernel for the nearest-code search: best and runner-up score per token in one pass.

With code dimensions as small as the paper's (D = 4 at 512 tokens), the matmul form of the search
spends its time writing and re-reading a (G, N, K) score tensor: a batched GEMM with an inner
dimension of 4 runs far below the machine's matmul rate. This kernel computes each score
``||c||^2 - 2 x.c`` in registers and keeps, per token, the best score, its code id and the
runner-up score, so nothing of size K is ever stored. The runner-up gives the exactness check of
``search._rerank_near_ties``: a row whose runner-up lies within the float32 error bound of its best
is re-ranked in float64. ``exact_nearest_codes_fused`` (what ``search.nearest_codes`` uses) does that
check and re-rank inside the kernel, group by group while the group's codes are still in cache, so
the result is exactly the brute-force argmin.

How it is fast (benchmarks/README.md has the measurements):
- codes are scored 16 at a time (one vector) for 8 tokens sharing each load of codes;
- the hot loop keeps only a running minimum per token over each chunk of 128 codes; once per cache
  tile a token compares the tile's smallest score with its runner-up so far, and only when it beats
  it is one chunk (the one holding that score) scored again with full best / id / runner-up
  bookkeeping: once per token in the first tile, rarely after (about 2 ln(tiles) times per token);
  that re-scoring has no data-dependent branches (lane-wise best two, then merged), since which
  tokens need it is random and the CPU would mispredict it;
- each group's codebook is transposed once to (D, K) and scanned in L1-sized tiles, every tile by
  all tokens of the group in turn, so the codes stream from memory once per group; the next tile is
  prefetched into L2 while one is scanned;
- threads claim runs of groups as they go, so one slowed by other work does not hold up the rest.

The kernel is C++ (``cpu_search.cpp`` beside this file, registered as torch operators) built once with
``torch.utils.cpp_extension.load_inline`` (needs a C++ compiler and ninja; the build is cached under
``TORCH_EXTENSIONS_DIR``, by default ~/.cache/torch_extensions).
Where it cannot be built, ``best_two_codes`` returns None and the search uses the matmul form.
Set ``REVQ_CPU_KERNEL=0`` to turn the kernel off.
"""
from __future__ import annotations

import hashlib
import os
import threading
import warnings
from pathlib import Path

import torch

# The C++ source, beside this file; the build is named by a hash of it and the flags (an edit rebuilds).
SOURCE_PATH = Path(__file__).with_name("cpu_search.cpp")

_lock = threading.Lock()
_module = None
_failed = False
MAX_CODE_DIM = 64


def _load():
    """Build (first time) or load the extension; None where that is impossible."""
    global _module, _failed
    if _module is not None or _failed:
        return _module
    with _lock:
        if _module is None and not _failed:
            try:
                # $REVQ_CPU_KERNEL_ARCH (default native) builds for another -march, e.g. x86-64-v3: the AVX2
                # path on an AVX-512 machine, as the notebooks' cross-machine checks run it (notebooks/README.md)
                arch = os.environ.get("REVQ_CPU_KERNEL_ARCH", "native")
                _module = build_kernel(SOURCE_PATH.read_text(), ["-O3", f"-march={arch}", "-fopenmp"])
            except Exception as error:  # no compiler, no ninja, read-only cache...: fall back, say why once
                _failed = True
                warnings.warn(f"revq: the fused CPU search kernel could not be built ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''}); using the slower matmul "
                              "search. Install a C++ compiler and ninja, or set REVQ_CPU_KERNEL=0 to silence this.",
                              RuntimeWarning, stacklevel=3)
    return _module


def build_kernel(source: str, cflags: list[str]):
    """Build (or load from the cache) one version of the kernel's C++ and return its operators, an object with
    ``best_two`` and ``exact_nearest``. The source registers them with ``TORCH_LIBRARY`` under the namespace
    ``REVQ_OPS_NAMESPACE``, defined here as the build's name; no pybind11 module and no implicit
    ``<torch/extension.h>``, whose parsing was most of a first build (19 s -> 5-7 s on 2 Zen 5 cores)."""
    from torch.utils.cpp_extension import load_inline

    name = build_name(source, cflags)
    load_inline(name=name, cpp_sources=[source], extra_cflags=[*cflags, f"-DREVQ_OPS_NAMESPACE={name}"],
                extra_ldflags=["-fopenmp"], is_python_module=False, no_implicit_headers=True, verbose=False)
    return getattr(torch.ops, name)


def build_name(source: str, cflags: list[str]) -> str:
    """The extension's name: a hash of its source and flags, so a changed kernel (or another -march) never
    loads a stale build from the cache."""
    return "revq_cpu_search_" + hashlib.sha1("\n".join([source, *cflags]).encode()).hexdigest()[:12]


def kernel_enabled() -> bool:
    """Whether the fused kernel is wanted (``REVQ_CPU_KERNEL`` is not 0) and can be built here."""
    if os.environ.get("REVQ_CPU_KERNEL", "1") == "0":
        return False
    return _load() is not None


def _applies(tokens: torch.Tensor, codes: torch.Tensor) -> bool:
    """Whether the kernel takes these: float32 CPU tensors, 1 <= K, D <= 64, the kernel on and built."""
    return (tokens.device.type == "cpu" and codes.device.type == "cpu" and tokens.dtype == torch.float32
            and codes.dtype == torch.float32 and tokens.shape[-1] <= MAX_CODE_DIM and codes.shape[1] > 0
            and kernel_enabled())


def best_two_codes(tokens: torch.Tensor, codes: torch.Tensor):
    """Best score, its code id and the runner-up score for every token, or None when not applicable.

    Args:
        tokens: (G, N, D) float32 CPU tokens.
        codes: (G, K, D) float32 CPU codebook.
    Returns:
        (best (G, N) float32, best_ids (G, N) int64, runner_up (G, N) float32, largest_sq_norm (G,)
        float32), scores being ``||c||^2 - 2 x.c`` and largest_sq_norm each group's max ``||c||^2``;
        or None if the inputs are not float32 CPU tensors with D <= 64, or the kernel is off or
        cannot be built.
    """
    if not _applies(tokens, codes):
        return None
    return tuple(_module.best_two(tokens.contiguous(), codes.contiguous(), 0.0))


def exact_nearest_codes_fused(tokens: torch.Tensor, codes: torch.Tensor, unit_roundoff: float = 2.0 ** -24):
    """Exact nearest code of every token in one pass, or None when not applicable (as ``best_two_codes``).

    The fused search, then, for each group while its codes are still in cache, the float64 re-rank of the
    rows whose runner-up lies within the rounding bound (``search._rerank_near_ties``'s check).

    Args:
        tokens: (G, N, D) float32 CPU tokens.
        codes: (G, K, D) float32 CPU codebook.
        unit_roundoff: rounding unit of the float32 scores.
    Returns:
        (G, N) int64 ids: the first minimum of the float64 squared difference.
    """
    if not _applies(tokens, codes):
        return None
    return _module.best_two(tokens.contiguous(), codes.contiguous(), float(unit_roundoff))[1]


def exact_nearest_codes(tokens: torch.Tensor, codes: torch.Tensor, group_ids: torch.Tensor):
    """Float64 nearest code (first minimum of the squared difference) for selected tokens, or None.

    Args:
        tokens: (A, D) float32 CPU tokens.
        codes: (G, K, D) float32 CPU codebook.
        group_ids: (A,) the codebook of each token.
    Returns:
        (A,) int64 code ids, or None where the kernel does not apply (as ``best_two_codes``).
    """
    if not _applies(tokens, codes):
        return None
    return _module.exact_nearest(tokens.contiguous(), codes.contiguous(), group_ids.long().contiguous())
