"""GPU checks and timings in one run (needs a CUDA GPU): exactness, quantizer, training step, projection.

Usage (one GPU, ~5 minutes including a torch.compile):
    python benchmarks/gpu.py                       # everything; prints a summary table last
    python benchmarks/gpu.py --skip-compile --quantizer-rounds 5

1. Exactness on the GPU: ``nearest_codes`` (fused Triton kernel, and the matmul form) equals a float64
   brute-force argmin, ties included; a 2-epoch ``train()`` of the tiny preset runs on CUDA.
2. Quantizer forward + backward at the paper's configurations (B = 256): revq_core with the fused
   kernel, revq_core's matmul form (``REVQ_GPU_KERNEL=0``), and the per-group ``torch.cdist`` reference
   of ``quantizer.py``; times are medians of CUDA-synchronised rounds; peak GPU memory per contender.
   Bounds from rates measured in the same run: FLOPs 2*B*G*K*D over the fp32 (no TF32) matmul rate,
   and the codebook's read (+ gradient write) over the device-to-device copy bandwidth.
3. The 512T training step (ViT rectifier 512 x 3) at B = 256, the paper's batch: the straightforward
   step of ``train_step.py`` (fp32, cdist, default AdamW), revq_core's default step, with
   ``fused_adamw + autocast_bf16``, and with ``compile_rectifier`` too; latents/s, peak memory, and
   the time of 100 epochs of ImageNet (1.28 M latents: 5004 steps/epoch) on this GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from quantizer import CONFIGS, LATENT_SHAPE, reference_step, revq_step  # noqa: E402
from train_step import ReferenceStep, RevqStep  # noqa: E402

from revq_core.modeling.quantizers.multigroup import MultiGroupQuantizer  # noqa: E402
from revq_core.ops import gpu_search  # noqa: E402
from revq_core.ops.search import brute_force_nearest_codes, nearest_codes  # noqa: E402
from revq_core.training.config import preset
from revq_core.training.trainer import train  # noqa: E402

STEPS_PER_EPOCH = 1_281_167 // 256  # ImageNet train at the paper's batch, drop_last
DEVICE = "cuda"
EXACTNESS_CASES = [(512, 256, 16384, 4), (256, 256, 65536, 8), (9, 77, 1000, 8), (3, 5, 1, 4)]  # (G, N, K, D)


def synchronized_seconds(function, *args):
    torch.cuda.synchronize()
    started = time.perf_counter()
    result = function(*args)
    torch.cuda.synchronize()
    return time.perf_counter() - started, result


def measured_rates() -> dict:
    """fp32 matmul FLOP/s without TF32 (the fused search's arithmetic is fp32 FMA), and copy bandwidth."""
    a, b = torch.randn(8192, 8192, device=DEVICE), torch.randn(8192, 8192, device=DEVICE)
    torch.backends.cuda.matmul.allow_tf32 = False
    a @ b
    seconds = min(synchronized_seconds(torch.matmul, a, b)[0] for _ in range(5))
    source = torch.randn(2**28, device=DEVICE)  # 1 GiB
    target = torch.empty_like(source)
    target.copy_(source)
    copy_seconds = min(synchronized_seconds(target.copy_, source)[0] for _ in range(5))
    return {"fp32_tflops": 2 * 8192**3 / seconds / 1e12, "copy_tb_per_s": 2 * source.numel() * 4 / copy_seconds / 1e12}


def check_exactness() -> dict:
    results = {}
    for groups, rows, codes, dim in EXACTNESS_CASES:
        generator = torch.Generator().manual_seed(groups + rows)
        tokens = torch.randn(groups, rows, dim, generator=generator)
        codebook = torch.randn(groups, codes, dim, generator=generator)
        codebook[:, -1] = codebook[:, 0]  # exact duplicate codes: ties must go to the lower id
        tokens[:, :3] = codebook[:, :3]
        expected = brute_force_nearest_codes(tokens.to(DEVICE), codebook.to(DEVICE), memory_mb=2048).cpu()
        fused = nearest_codes(tokens.to(DEVICE), codebook.to(DEVICE)).cpu()
        matmul = nearest_codes(tokens.to(DEVICE), codebook.to(DEVICE), use_kernel=False).cpu()
        results[f"G{groups}_N{rows}_K{codes}_D{dim}"] = {"fused_differ": int((fused != expected).sum()),
                                                         "matmul_differ": int((matmul != expected).sum())}
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(512, 32, 8, 8, generator=generator)
    with tempfile.TemporaryDirectory() as output_dir:  # one epoch, "interrupted", then resumed from the checkpoint
        config = preset("tiny", device=DEVICE, epochs=2)
        train(config, latents[:448], latents[448:], output_dir=output_dir, progress=False, stop_after=1)
        _, history = train(config, latents[:448], latents[448:], output_dir=output_dir, progress=False, resume=True)
        results["tiny_train_resumed_val_mse"] = [round(value, 5) for value in history.val_mse]
        results["tiny_train_saved_model"] = (Path(output_dir) / "model").is_dir()
    return results


@contextlib.contextmanager
def gpu_kernel(enabled: bool):
    """The fused kernel on or off (``REVQ_GPU_KERNEL``, read at every search) inside the block."""
    previous = os.environ.get("REVQ_GPU_KERNEL", "1")
    os.environ["REVQ_GPU_KERNEL"] = "1" if enabled else "0"
    try:
        yield
    finally:
        os.environ["REVQ_GPU_KERNEL"] = previous


def time_quantizer(config: str, batch: int, rounds: int, rates: dict) -> dict:
    groups, codes_per_group, code_dim, _ = CONFIGS[config]
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(batch, *LATENT_SHAPE, generator=generator).to(DEVICE)
    quantizer = MultiGroupQuantizer(groups, codes_per_group, code_dim, "channel", LATENT_SHAPE).to(DEVICE)
    with torch.no_grad():
        quantizer.codebook.normal_()
    reference_book = torch.nn.Parameter(quantizer.codebook.detach().clone())
    contenders = {
        "fused": lambda: gpu_kernel(True),
        "matmul": lambda: gpu_kernel(False),
    }
    times = {name: [] for name in [*contenders, "cdist"]}
    peaks, codes = {}, {}
    for round_index in range(rounds + 1):  # round 0: warm-up (Triton compile, allocator), untimed
        for name, switch in contenders.items():
            quantizer.zero_grad(set_to_none=True)
            torch.cuda.reset_peak_memory_stats()
            with switch():
                seconds, codes[name] = synchronized_seconds(revq_step, latent, quantizer)
            peaks[name] = torch.cuda.max_memory_allocated() / 2**30
            times[name].append(seconds)
        reference_book.grad = None
        torch.cuda.reset_peak_memory_stats()
        seconds, codes["cdist"] = synchronized_seconds(reference_step, latent, reference_book)
        peaks["cdist"] = torch.cuda.max_memory_allocated() / 2**30
        times["cdist"].append(seconds)
    medians = {name: statistics.median(values[1:]) for name, values in times.items()}
    flops = 2 * batch * groups * codes_per_group * code_dim
    codebook_bytes = groups * codes_per_group * code_dim * 4
    return {
        "config": config, "B": batch, "G": groups, "K": codes_per_group, "D": code_dim,
        "ms": {name: 1e3 * value for name, value in medians.items()},
        "peak_gib": peaks,
        "flop_bound_ms": 1e3 * flops / (rates["fp32_tflops"] * 1e12),
        "traffic_bound_ms": 1e3 * 3 * codebook_bytes / (rates["copy_tb_per_s"] * 1e12),  # read, grad write, grad read
        "fused_vs_cdist": medians["cdist"] / medians["fused"], "fused_vs_matmul": medians["matmul"] / medians["fused"],
        "fused_codes_equal_matmul": bool(torch.equal(codes["fused"], codes["matmul"])),
        "codes_differ_from_cdist": int((codes["fused"] != codes["cdist"]).sum()),
    }


def time_search_tiles(config: str, batch: int, rounds: int = 5) -> dict:
    """The fused search alone (G, B, D tokens) for its default tile (None) and a few others
    (block_rows, block_codes, num_warps): median ms."""
    groups, codes_per_group, code_dim, _ = CONFIGS[config]
    tokens = torch.randn(groups, batch, code_dim, device=DEVICE)
    codebook = torch.randn(groups, codes_per_group, code_dim, device=DEVICE)
    results = {}
    for tile in [None, (16, 64, 4), (32, 32, 4), (32, 64, 2), (32, 128, 4), (64, 64, 4), (64, 64, 8), (64, 128, 8)]:
        tile_arguments = {} if tile is None else dict(zip(("block_rows", "block_codes", "num_warps"), tile))
        search = lambda: gpu_search.best_two_codes(tokens, codebook, **tile_arguments)
        try:
            search()
            results[str(tile)] = 1e3 * statistics.median(synchronized_seconds(search)[0] for _ in range(rounds))
        except Exception as error:  # a tile that does not compile (registers, shared memory): say so, go on
            results[str(tile)] = f"{type(error).__name__}: {str(error)[:120]}"
    results["nearest_codes_default_ms"] = 1e3 * statistics.median(
        synchronized_seconds(nearest_codes, tokens, codebook)[0] for _ in range(rounds))
    return {"config": config, "B": batch, "search_ms_by_tile": results}


def time_rectifier(step: RevqStep, latent: torch.Tensor, rounds: int = 10) -> float:
    """Median ms of the rectifier's forward + backward alone (as in the step: autocast if configured)."""
    def forward_backward():
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=step.config.autocast_bf16):
            loss = (step.model.rectifier(latent) - latent).float().pow(2).mean()
        loss.backward()
    forward_backward()
    return 1e3 * statistics.median(synchronized_seconds(forward_backward)[0] for _ in range(rounds))


def time_train_step(batch: int, rounds: int, compile_rectifier: bool) -> dict:
    latents = torch.randn(8, batch, *LATENT_SHAPE, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    default = RevqStep(preset("paper_512T", batch_size=batch, device=DEVICE))
    contenders = {"straightforward": ReferenceStep(default), "revq_core": default,
                  "bf16+fused": RevqStep(preset("paper_512T", batch_size=batch, device=DEVICE, fused_adamw=True,
                                                autocast_bf16=True))}
    if compile_rectifier:
        for name, mode in [("bf16+fused+compile", True), ("bf16+fused+compile(reduce-overhead)", "reduce-overhead")]:
            contenders[name] = RevqStep(preset("paper_512T", batch_size=batch, device=DEVICE, fused_adamw=True,
                                               autocast_bf16=True, compile_rectifier=mode))
    first_losses, warm_up_s, failed = {}, {}, {}
    for name, step in list(contenders.items()):  # first steps (Adam state, compile): untimed
        try:
            warm_up_s[name], (_, first_losses[name]) = synchronized_seconds(step, latents[0])
            step(latents[1])
        except Exception as error:  # e.g. a compile mode this torch cannot do: report, time the others
            failed[name] = f"{type(error).__name__}: {str(error)[:300]}"
            del contenders[name]
    times = {name: [] for name in contenders}
    peaks = {}
    for round_index in range(rounds):
        for name, step in contenders.items() if round_index % 2 == 0 else list(contenders.items())[::-1]:
            torch.cuda.reset_peak_memory_stats()
            times[name].append(synchronized_seconds(step, latents[2 + round_index % 6])[0])
            peaks[name] = torch.cuda.max_memory_allocated() / 2**30
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "B": batch, "ms": {name: 1e3 * value for name, value in medians.items()},
        "latents_per_s": {name: batch / value for name, value in medians.items()},
        "speedup_vs_straightforward": {name: medians["straightforward"] / value for name, value in medians.items()},
        "hours_100_epochs": {name: value * STEPS_PER_EPOCH * 100 / 3600 for name, value in medians.items()},
        "peak_gib": peaks, "first_step_seconds": warm_up_s, "first_step_losses": first_losses, "failed": failed,
        "rectifier_fwd_bwd_ms": {name: time_rectifier(step, latents[0]) for name, step in contenders.items()
                                 if isinstance(step, RevqStep)},
    }


def time_train_loop(steps_per_epoch: int = 200, epochs: int = 3, batch: int = 256) -> dict:
    """``train()`` itself at 512T on random latents (kept on the CPU, as a memory-mapped cache would be):
    default settings vs ``speed_settings("cuda")``; seconds per epoch (the first includes compiling),
    steps/s of the later epochs, and the 100-epoch ImageNet time that gives; the saved model reloads."""
    from revq_core.modeling.revq import ReVQ
    from revq_core.training.config import speed_settings

    generator = torch.Generator().manual_seed(3)
    train_latents = torch.randn(steps_per_epoch * batch, *LATENT_SHAPE, generator=generator)
    val_latents = torch.randn(2560, *LATENT_SHAPE, generator=generator)
    results = {}
    for name, settings in (("default", {}), ("speed_settings", speed_settings(DEVICE))):
        config = preset("paper_512T", device=DEVICE, epochs=epochs, batch_size=batch, **settings)
        with tempfile.TemporaryDirectory() as output_dir:
            started = time.perf_counter()
            model, history = train(config, train_latents, val_latents, output_dir=output_dir, progress=False)
            total = time.perf_counter() - started
            reloaded = ReVQ.from_pretrained(Path(output_dir) / "model")
            same_codes = torch.equal(reloaded.to(DEVICE).tokenize(val_latents[:64].to(DEVICE)),
                                     model.tokenize(val_latents[:64].to(DEVICE)))
        later = history.seconds[1:]
        seconds_per_step = sum(later) / (len(later) * steps_per_epoch)  # includes validation, reset, checkpoint
        results[name] = {"epoch_seconds": history.seconds, "total_seconds": total, "val_mse": history.val_mse,
                         "usage": history.usage, "ms_per_step_with_epoch_overheads": 1e3 * seconds_per_step,
                         "hours_100_imagenet_epochs": seconds_per_step * STEPS_PER_EPOCH * 100 / 3600,
                         "reloaded_model_same_codes": same_codes}
        print("train_loop", name, json.dumps(results[name]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--quantizer-rounds", type=int, default=5)
    parser.add_argument("--step-rounds", type=int, default=10)
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write all results here")
    parser.add_argument("--sections", default="exactness,quantizer,tiles,step",
                        help="comma-separated: exactness, quantizer, tiles, step, train (train(): the whole loop)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA GPU; on a CPU run benchmarks/quantizer.py and train_step.py.")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rates": measured_rates()}
    print("rates", results["rates"], flush=True)
    sections = set(args.sections.split(","))
    if "exactness" in sections:
        results["exactness"] = check_exactness()
        print("exactness", json.dumps(results["exactness"]), flush=True)
    results["quantizer"] = []
    for config in CONFIGS if "quantizer" in sections else []:
        results["quantizer"].append(time_quantizer(config, args.batch, args.quantizer_rounds, results["rates"]))
        print("quantizer", json.dumps(results["quantizer"][-1]), flush=True)
    results["search_tiles"] = [time_search_tiles(config, args.batch) for config in ("512T", "256T_65k")] \
        if "tiles" in sections else []
    for row in results["search_tiles"]:
        print("search_tiles", json.dumps(row), flush=True)
    if "step" in sections:
        results["train_step"] = time_train_step(args.batch, args.step_rounds, not args.skip_compile)
        print("train_step", json.dumps(results["train_step"]), flush=True)
    if "train" in sections:
        results["train_loop"] = time_train_loop(batch=args.batch)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"\nSummary ({results['device']}, fp32 {results['rates']['fp32_tflops']:.0f} TFLOP/s, "
          f"copy {results['rates']['copy_tb_per_s']:.2f} TB/s)")
    for row in results["quantizer"]:
        ms = row["ms"]
        print(f"  quantizer {row['config']:>10} B={row['B']}: fused {ms['fused']:7.2f} ms | matmul {ms['matmul']:7.2f} | "
              f"cdist {ms['cdist']:7.2f} | x{row['fused_vs_cdist']:.1f} vs cdist | bounds: flop {row['flop_bound_ms']:.2f}, "
              f"traffic {row['traffic_bound_ms']:.2f} ms | peak GiB {row['peak_gib']['fused']:.1f}/"
              f"{row['peak_gib']['matmul']:.1f}/{row['peak_gib']['cdist']:.1f}")
    for row in results["search_tiles"]:
        print(f"  search alone {row['config']:>10}: " + ", ".join(
            f"{tile} {value:.2f}" if isinstance(value, float) else f"{tile} failed" for tile, value in row["search_ms_by_tile"].items()))
    for name, row in results.get("train_loop", {}).items():
        print(f"  train() 512T B={args.batch} {name:>15}: epochs {[round(value, 1) for value in row['epoch_seconds']]} s, "
              f"{row['ms_per_step_with_epoch_overheads']:.1f} ms/step with epoch overheads -> 100 ImageNet epochs "
              f"{row['hours_100_imagenet_epochs']:.2f} h; val MSE {[round(v, 4) for v in row['val_mse']]}; "
              f"reloaded model same codes: {row['reloaded_model_same_codes']}")
    if "train_step" not in results:
        return
    step = results["train_step"]
    if step["failed"]:
        print(f"  failed: {step['failed']}")
    for name in step["ms"]:
        print(f"  512T step B={step['B']} {name:>20}: {step['ms'][name]:7.1f} ms  {step['latents_per_s'][name]:7.0f} latents/s  "
              f"x{step['speedup_vs_straightforward'][name]:.2f}  100 epochs {step['hours_100_epochs'][name]:5.2f} h  "
              f"peak {step['peak_gib'][name]:.1f} GiB  rectifier fwd+bwd {step['rectifier_fwd_bwd_ms'].get(name, float('nan')):.1f} ms")


if __name__ == "__main__":
    main()
