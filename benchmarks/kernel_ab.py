"""A/B of two versions of the fused CPU search kernel: the kernel alone, interleaved in one process.

Usage (a minute per configuration on 2 cores):
    git show HEAD~1:revq_core/ops/cpu_search.cpp > /tmp/before.cpp
    .venv/bin/python benchmarks/kernel_ab.py /tmp/before.cpp revq_core/ops/cpu_search.cpp --configs 512T 256T_65k
    .venv/bin/python benchmarks/kernel_ab.py ... --arch x86-64-v3     # both built for AVX2 (no AVX-512)

Each file is a version of the kernel: ``revq_core/ops/cpu_search.cpp``, or an older ``cpu_search.py`` that
held the C++ in a string (``git show 250f21a:revq_core/cpu_search.py``); it is built under its own name
(the first run of a new version compiles it, ~40 s). The two kernels then search the same random
tokens and codebook (``benchmarks/quantizer.py``'s configurations: G codebooks of K codes, D, B = 64
tokens per codebook) in alternating order, with a 300 MB write before every call so both start with
the codebook out of cache. Prints min and median per version, the median ratio, and whether the two
give the same ids, best and runner-up scores. On a shared machine only such interleaved runs compare:
its speed swings by +-25 % from one run to the next.
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.cpp_extension import load_inline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quantizer import CONFIGS  # noqa: E402

from revq_core.ops.cpu_search import build_kernel  # noqa: E402


def build(path: str, arch: str = "native"):
    """The kernel of one version, built (or loaded from the cache) under a name of its own: a ``cpu_search.cpp``
    (today's layout) or an older ``cpu_search.py`` that held its C++ in a ``_SOURCE`` string."""
    text = Path(path).read_text()
    if path.endswith(".cpp"):
        source = text
    else:
        start = text.index('_SOURCE = r"""') + len('_SOURCE = r"""')
        source = text[start:text.index('"""', start)]
    cflags = ["-O3", f"-march={arch}", "-fopenmp"]
    if "REVQ_OPS_NAMESPACE" in source:  # registered as torch operators (today's layout): built as the library builds it
        return build_kernel(source, cflags)
    name = "revq_kernel_ab_" + hashlib.sha1((source + arch).encode()).hexdigest()[:12]
    return load_inline(name=name, cpp_sources=[source], functions=["best_two"], extra_cflags=cflags,
                       extra_ldflags=["-fopenmp"])


def search(module, tokens: torch.Tensor, codes: torch.Tensor):
    """best_two without the in-kernel re-rank (versions before it take two arguments)."""
    try:
        return module.best_two(tokens, codes, 0.0)
    except (TypeError, RuntimeError):
        return module.best_two(tokens, codes)


def compare(modules, config: str, rounds: int) -> None:
    groups, codes_per_group, code_dim, batch = CONFIGS[config]
    generator = torch.Generator().manual_seed(0)
    codes = torch.randn(groups, codes_per_group, code_dim, generator=generator)
    tokens = torch.randn(groups, batch, code_dim, generator=generator)
    flush = torch.empty(300 * 2**20 // 4)
    times, outputs = ([], []), [None, None]
    for round_index in range(rounds):
        for version in ((0, 1) if round_index % 2 == 0 else (1, 0)):
            flush.fill_(round_index)
            started = time.perf_counter()
            outputs[version] = search(modules[version], tokens, codes)
            times[version].append(time.perf_counter() - started)
    same = all(torch.equal(a, b) for a, b in zip(outputs[0][:3], outputs[1][:3]))
    medians = [statistics.median(t) for t in times]
    print(f"{config}: A min {min(times[0]) * 1e3:.1f} median {medians[0] * 1e3:.1f} ms | "
          f"B min {min(times[1]) * 1e3:.1f} median {medians[1] * 1e3:.1f} ms | B / A {medians[1] / medians[0]:.2f} | "
          f"same results: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="version A of revq_core/ops/cpu_search.py")
    parser.add_argument("b", help="version B")
    parser.add_argument("--configs", nargs="+", default=["512T"], choices=list(CONFIGS))
    parser.add_argument("--arch", default="native", help="-march of both builds, e.g. x86-64-v3 for the AVX2 path")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    modules = build(args.a, args.arch), build(args.b, args.arch)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; A = {args.a}, B = {args.b}")
    for config in args.configs:
        compare(modules, config, args.rounds)


if __name__ == "__main__":
    main()
