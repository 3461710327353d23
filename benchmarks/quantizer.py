"""Quantizer forward + backward: revq_core's Quantizer against a straightforward cdist reference.

Usage (2-core CPU, a few minutes):
    .venv/bin/python benchmarks/quantizer.py                      # the three paper configurations
    .venv/bin/python benchmarks/quantizer.py --configs 512T --rounds 5

For each configuration (G codebooks of K codes of dimension D, T = G tokens, batch B) one step is
    codes = nearest code of every token; q = codebook[codes]; loss = MSE(q, tokens); loss.backward()
timed for both contenders in interleaved rounds (median reported), together with a 2048^3 matmul
whose FLOP/s gives the lower bound FLOPs / rate, FLOPs = 2 * B * G * K * D (the score matmul), and
a warm 256 MiB copy whose rate gives a memory floor: reading the (G, K, D) codebook once (the step
cannot move less; revq_core writes only the gradient rows of the batch's codes, the reference a fresh
dense gradient).
The reference is the obvious code: per group ``torch.cdist`` + argmin + gather, processed in group
chunks of bounded memory. When ``--reference-groups`` is below G the reference is timed on that many
groups and scaled by G / reference_groups (its work is linear in G); this is printed.
Peak memory: each contender runs once more in a fresh child process holding only its own inputs,
which reports the rise of its peak RSS (ru_maxrss) over its RSS before the step (the fused kernel is
loaded in the first step there, a few MiB).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from revq_core.modeling.quantizers.multigroup import MultiGroupQuantizer
from revq_core.ops import codebook_grad  # noqa: E402

LATENT_SHAPE = (32, 8, 8)
CONFIGS = {  # name: (G, K, D, B); T = G (the paper's one codebook per token position)
    "512T": (512, 16384, 4, 64),
    "256T_65k": (256, 65536, 8, 64),
    "256T_262k": (256, 262144, 8, 64),
}


def reference_step(latent: torch.Tensor, codebook: torch.nn.Parameter, memory_mb: int = 512) -> torch.Tensor:
    """Straightforward quantizer step. latent (B, C, H, W), codebook (G, K, D) with G = T. Returns codes (G, B)."""
    groups, codes_per_group, code_dim = codebook.shape
    tokens = latent.reshape(latent.shape[0], groups, code_dim).transpose(0, 1)  # (G, B, D)
    chunk = max(1, memory_mb * 2**20 // (4 * tokens.shape[1] * codes_per_group))
    with torch.no_grad():
        codes = torch.cat([torch.cdist(tokens[start:start + chunk], codebook[start:start + chunk]).argmin(-1)
                           for start in range(0, groups, chunk)])  # (G, B)
    quantized = torch.gather(codebook, 1, codes[..., None].expand(-1, -1, code_dim))  # (G, B, D)
    F.mse_loss(quantized, tokens).backward()
    return codes


def revq_step(latent: torch.Tensor, quantizer: Quantizer) -> torch.Tensor:
    """revq_core's quantizer step as ``train()`` runs it on the CPU in one process (``InPlaceCodebookGrad``, "rows":
    the rows the last step wrote are zeroed in place, then this step's rows are added into the same
    gradient tensor); returns codes (G, B) (the layout of ``reference_step``)."""
    quantizer.in_place_grad.zero_grad()
    output = quantizer(latent)
    output.loss.backward()
    return output.codes.T


def _setup(config: str, groups_used: int | None = None):
    groups, codes_per_group, code_dim, batch = CONFIGS[config]
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(batch, *LATENT_SHAPE, generator=generator)
    quantizer = MultiGroupQuantizer(groups, codes_per_group, code_dim, "channel", LATENT_SHAPE)
    codebook_grad.install(quantizer, "rows")  # as train() does on the CPU in one process
    with torch.no_grad():
        quantizer.codebook.normal_(generator=generator)  # in place: no codebook-sized temporary
    reference_book = torch.nn.Parameter(quantizer.codebook.detach()[:groups_used].clone())
    reference_latent = latent.reshape(batch, groups, code_dim)[:, :groups_used].contiguous()
    return latent, quantizer, reference_latent, reference_book


def _timed(function, *args) -> tuple[float, torch.Tensor]:
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def matmul_flops_per_second(size: int = 2048) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    started = time.perf_counter()
    a @ b
    return 2 * size**3 / (time.perf_counter() - started)


def copy_bytes_per_second(size_mib: int = 256) -> float:
    """Bytes read + written per second by a warm ``copy_`` of ``size_mib`` MiB (the memory bandwidth)."""
    source, target = torch.ones(size_mib * 2**18), torch.zeros(size_mib * 2**18)
    target.copy_(source)
    started = time.perf_counter()
    target.copy_(source)
    return 2 * source.numel() * 4 / (time.perf_counter() - started)


def child_peak_memory(config: str, contender: str, reference_groups: int) -> None:
    """Run one step of one contender; print the rise of peak RSS in MiB (Linux ru_maxrss is in KiB)."""
    import psutil

    latent, quantizer, reference_latent, reference_book = _setup(config, reference_groups)
    if contender == "revq":
        del reference_book
    else:
        del quantizer
    # Peak RSS so far comes from the setup (codebooks); the step's own peak must rise above it.
    before = psutil.Process().memory_info().rss
    if contender == "revq":
        revq_step(latent, quantizer)
    else:
        reference_step(reference_latent, reference_book)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_rise_mib": max(0, peak - before) / 2**20}))


def measure_memory(config: str, contender: str, reference_groups: int) -> float:
    command = [sys.executable, __file__, "--child", contender, "--configs", config,
               "--reference-groups", str(reference_groups)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])["peak_rise_mib"]


def run(config: str, rounds: int, reference_groups: int | None, memory: bool) -> dict:
    groups, codes_per_group, code_dim, batch = CONFIGS[config]
    reference_groups = min(reference_groups or groups, groups)
    latent, quantizer, reference_latent, reference_book = _setup(config, reference_groups)
    revq_step(latent[:2], quantizer)  # warm-up: kernel build/load, allocator
    revq_times, reference_times, rates, bandwidths = [], [], [], []
    for _ in range(rounds):  # interleaved: the machine's load hits all contenders alike
        reference_book.grad = None  # the reference's best: index_select/gather's fresh gradient is stolen
        seconds, reference_codes = _timed(reference_step, reference_latent, reference_book)
        reference_times.append(seconds * groups / reference_groups)
        seconds, revq_codes = _timed(revq_step, latent, quantizer)
        revq_times.append(seconds)
        rates.append(matmul_flops_per_second())
        bandwidths.append(copy_bytes_per_second())
    flops = 2 * batch * groups * codes_per_group * code_dim
    bound = flops / max(rates)
    # The step cannot move less than reading the codebook once (the copy rate counts bytes read + written).
    memory_floor = groups * codes_per_group * code_dim * 4 / max(bandwidths)
    result = {
        "config": config, "G": groups, "K": codes_per_group, "D": code_dim, "B": batch,
        "reference_groups_timed": reference_groups,
        "reference_s": statistics.median(reference_times), "revq_s": statistics.median(revq_times),
        "matmul_gflops": max(rates) / 1e9, "bound_s": bound,
        "copy_gb_per_s": max(bandwidths) / 1e9, "memory_floor_s": memory_floor,
        "codes_differ_from_cdist": int((revq_codes[:reference_groups] != reference_codes).sum()),
    }
    result["speedup_vs_reference"] = result["reference_s"] / result["revq_s"]
    result["revq_over_bound"] = result["revq_s"] / bound
    if memory:
        result["revq_peak_rise_mib"] = measure_memory(config, "revq", reference_groups)
        result["reference_peak_rise_mib"] = measure_memory(config, "reference", reference_groups)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reference-groups", type=int, default=None,
                        help="time the reference on this many groups and scale (default: 512T all, others 32)")
    parser.add_argument("--no-memory", action="store_true", help="skip the child-process peak-memory runs")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--child", choices=["revq", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child_peak_memory(args.configs[0], args.child, args.reference_groups)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for config in args.configs:
        reference_groups = args.reference_groups or (None if config == "512T" else 32)
        result = run(config, args.rounds, reference_groups, not args.no_memory)
        scaled = "" if result["reference_groups_timed"] == result["G"] else \
            f" (reference timed on {result['reference_groups_timed']} groups, scaled x{result['G'] // result['reference_groups_timed']})"
        print(f"{config}: G={result['G']} K={result['K']} D={result['D']} B={result['B']}{scaled}\n"
              f"  cdist reference {result['reference_s'] * 1e3:9.1f} ms\n"
              f"  revq_core       {result['revq_s'] * 1e3:9.1f} ms   speed-up x{result['speedup_vs_reference']:.1f}\n"
              f"  matmul bound    {result['bound_s'] * 1e3:9.1f} ms   ({result['matmul_gflops']:.0f} GFLOP/s measured); "
              f"revq_core = {result['revq_over_bound']:.1f} x bound\n"
              f"  memory floor    {result['memory_floor_s'] * 1e3:9.1f} ms   (codebook read once at "
              f"{result['copy_gb_per_s']:.1f} GB/s copy); bound + floor = "
              f"{(result['bound_s'] + result['memory_floor_s']) * 1e3:.1f} ms\n"
              f"  codes differing from cdist's: {result['codes_differ_from_cdist']} (cdist is not exact)")
        if "revq_peak_rise_mib" in result:
            print(f"  peak RSS rise: revq_core {result['revq_peak_rise_mib']:.0f} MiB, reference "
                  f"{result['reference_peak_rise_mib']:.0f} MiB (reference on its timed groups)")
        print("  json " + json.dumps(result))


if __name__ == "__main__":
    main()
