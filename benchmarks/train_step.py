"""One full training step at the paper's 512T configuration: revq_core's step against a straightforward one.

Usage (2-core CPU, ~2 minutes):
    .venv/bin/python benchmarks/train_step.py                   # B = 32, 3 interleaved rounds + memory
    .venv/bin/python benchmarks/train_step.py --rounds 5 --no-memory
    .venv/bin/python benchmarks/train_step.py --fast --no-memory  # + revq_core with its speed settings

Configuration: G = T = 512 codebooks of K = 16384 codes of D = 4 (a 32M-number codebook), ViT
rectifier of width 512 and depth 3, global batch B = 32 of normalized latents (32, 8, 8).
A step is what ``revq_core.training.trainer._train_epoch`` does per batch:
    forward (quantize, rectify the detached quantized latent, both MSE losses), finite-loss check,
    zero_grad, backward, gradient-norm clipping at 1.0 for quantizer and rectifier, AdamW,
    code-usage counts, the three losses read back with .item().
revq_core: the objects and functions train() uses (``build_model``, ``optimizer_and_scheduler``,
``optimizer_step``). Reference, written here the obvious way: fp32, per-group ``torch.cdist`` + argmin
in memory-bounded group chunks, a gather from the codebook, the same rectifier module (a copy with
the same weights), torch's default AdamW (for-loop on CPU). Both start from the same weights; the
first step's codes and losses are compared. Times are medians of interleaved rounds, reported as
latents/s. Peak memory: each contender runs two steps in a fresh child process that reports the
rise of its peak RSS over its RSS after setup (Adam's state is allocated in the first step).
``--fast`` adds a third contender: revq_core with TrainConfig(fused_adamw=True, autocast_bf16=True)
(not bit-identical to the default: fused AdamW differs in last bits, the rectifier runs in bf16).
"""
from __future__ import annotations

import argparse
import copy
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
from revq_core.training.config import preset  # noqa: E402
from revq_core.training.trainer import build_model, compile_rectifier, optimizer_and_scheduler, train_step  # noqa: E402


class RevqStep:
    """revq_core's training step on a normalized latent batch (B, 32, 8, 8)."""

    def __init__(self, config):
        torch.manual_seed(0)
        self.config = config
        self.model = build_model(config)
        with torch.no_grad():
            self.model.quantizer.codebook.normal_(generator=torch.Generator().manual_seed(1))
        self.model.to(config.device)
        compile_rectifier(self.model, config)  # as train() does, if config.compile_rectifier asks
        self.model.quantizer.prepare_training(torch.device(config.device))  # as train() does
        self.optimizer, _ = optimizer_and_scheduler(self.model, config)
        self.quantizer_params, self.rectifier_params = self.model.parameter_groups()

    def __call__(self, latent: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        """Returns (codes (B, T), [loss, loss_quant, loss_rect])."""
        output = train_step(self.model, self.model, self.model.normalizer.normalize(latent), self.optimizer,
                            self.quantizer_params, self.rectifier_params, self.config)
        return output.codes, [output.loss.item(), output.loss_quant.item(), output.loss_rect.item()]


class ReferenceStep:
    """The same step written straightforwardly: cdist + argmin quantizer, default AdamW, fp32."""

    def __init__(self, revq: RevqStep, memory_mb: int = 512):
        config = revq.config
        self.codebook = torch.nn.Parameter(revq.model.quantizer.codebook.detach().clone())  # (G, K, D)
        self.rectifier = copy.deepcopy(revq.model.rectifier)
        self.memory_mb = memory_mb
        self.grad_clip = config.grad_clip
        self.counts = torch.zeros(self.codebook.shape[:2], dtype=torch.long, device=self.codebook.device)  # (G, K)
        self.optimizer = torch.optim.AdamW([
            {"params": [self.codebook], "lr": config.quantizer_lr, "weight_decay": 0.0},
            {"params": list(self.rectifier.parameters()), "lr": config.quantizer_lr * config.rectifier_lr_ratio,
             "weight_decay": config.rectifier_weight_decay}], betas=tuple(config.betas))

    def __call__(self, latent: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        groups, codes_per_group, code_dim = self.codebook.shape
        batch = latent.shape[0]
        tokens = latent.reshape(batch, groups, code_dim).transpose(0, 1)  # (G, B, D), channel split
        chunk = max(1, self.memory_mb * 2**20 // (4 * batch * codes_per_group))
        with torch.no_grad():
            codes = torch.cat([torch.cdist(tokens[start:start + chunk], self.codebook[start:start + chunk]).argmin(-1)
                               for start in range(0, groups, chunk)])  # (G, B)
        quantized_tokens = torch.gather(self.codebook, 1, codes[..., None].expand(-1, -1, code_dim))  # (G, B, D)
        loss_quant = F.mse_loss(quantized_tokens, tokens)
        quantized = quantized_tokens.transpose(0, 1).reshape(latent.shape)  # (B, C, H, W)
        loss_rect = F.mse_loss(self.rectifier(quantized.detach()), latent)
        loss = loss_quant + loss_rect
        if not torch.isfinite(loss):
            raise RuntimeError("non-finite loss")
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([self.codebook], self.grad_clip)
        torch.nn.utils.clip_grad_norm_(list(self.rectifier.parameters()), self.grad_clip)
        self.optimizer.step()
        group_offsets = torch.arange(groups, device=codes.device)[:, None] * codes_per_group
        self.counts += torch.bincount((codes + group_offsets).reshape(-1),
                                      minlength=groups * codes_per_group).view(groups, codes_per_group)
        return codes.T, [loss.item(), loss_quant.item(), loss_rect.item()]


def _setup(batch: int, contender: str | None = None):
    config = preset("paper_512T", batch_size=batch)
    latents = torch.randn(8, batch, *config.model.latent_shape, generator=torch.Generator().manual_seed(2))
    revq = RevqStep(config)
    reference = ReferenceStep(revq) if contender in (None, "reference") else None
    if contender == "reference":
        revq = None
    return latents, revq, reference


def _fast_step(batch: int) -> RevqStep:
    """revq_core's step with its speed settings on, from the same initial weights."""
    return RevqStep(preset("paper_512T", batch_size=batch, fused_adamw=True, autocast_bf16=True))


def _timed(step, latent) -> tuple[float, tuple]:
    started = time.perf_counter()
    result = step(latent)
    return time.perf_counter() - started, result


def child_peak_memory(batch: int, contender: str) -> None:
    """Two steps of one contender in this fresh process; print the rise of peak RSS in MiB."""
    import psutil

    latents, revq, reference = _setup(batch, contender)
    step = revq if contender == "revq" else reference
    before = psutil.Process().memory_info().rss
    for latent in latents[:2]:
        step(latent)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"peak_rise_mib": max(0, peak - before) / 2**20}))


def measure_memory(batch: int, contender: str, threads: int | None) -> float:
    command = [sys.executable, __file__, "--child", contender, "--batch", str(batch)]
    command += ["--threads", str(threads)] if threads else []
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])["peak_rise_mib"]


def run(batch: int, rounds: int, memory: bool, threads: int | None, fast: bool = False) -> dict:
    latents, revq, reference = _setup(batch)
    first_codes_revq, first_losses_revq = revq(latents[0])  # first step: same weights in both
    first_codes_reference, first_losses_reference = reference(latents[0])
    revq_times, reference_times, fast_times = [], [], []
    contenders = [(reference, reference_times), (revq, revq_times)]
    if fast:
        fast_revq = _fast_step(batch)
        fast_revq(latents[0])  # its first step (Adam state), untimed like the others'
        contenders.append((fast_revq, fast_times))
    for round_index in range(rounds):  # interleaved, order alternating: the machine's load hits all alike
        latent = latents[1 + round_index % 7]
        for step, times in contenders if round_index % 2 == 0 else contenders[::-1]:
            times.append(_timed(step, latent)[0])
    result = {
        "B": batch, "G": 512, "K": 16384, "D": 4, "rectifier": "vit 512 x 3", "rounds": rounds,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "revq_s": statistics.median(revq_times), "reference_s": statistics.median(reference_times),
        "revq_times_s": revq_times, "reference_times_s": reference_times,
        "first_step_codes_differing": int((first_codes_revq != first_codes_reference).sum()),
        "first_step_losses_revq": first_losses_revq, "first_step_losses_reference": first_losses_reference,
    }
    result["revq_latents_per_s"] = batch / result["revq_s"]
    result["reference_latents_per_s"] = batch / result["reference_s"]
    result["speedup"] = result["reference_s"] / result["revq_s"]
    # the same round's times share the machine's load: the median of per-round ratios is the steadier figure
    result["speedup_round_median"] = statistics.median(r / v for r, v in zip(reference_times, revq_times))
    if fast:
        result["fast_s"] = statistics.median(fast_times)
        result["fast_times_s"] = fast_times
        result["fast_speedup"] = result["reference_s"] / result["fast_s"]
        result["fast_speedup_round_median"] = statistics.median(r / f for r, f in zip(reference_times, fast_times))
    if memory:
        result["revq_peak_rise_mib"] = measure_memory(batch, "revq", threads)
        result["reference_peak_rise_mib"] = measure_memory(batch, "reference", threads)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true", help="skip the child-process peak-memory runs")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--fast", action="store_true", help="also time revq_core with fused AdamW + bf16 autocast")
    parser.add_argument("--child", choices=["revq", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_flush_denormal(True)  # as train() does on the CPU
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child_peak_memory(args.batch, args.child)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    result = run(args.batch, args.rounds, not args.no_memory, args.threads, args.fast)
    print(f"512T training step, B={result['B']} (G=512, K=16384, D=4, ViT rectifier 512 x 3), "
          f"median of {result['rounds']} interleaved rounds")
    print(f"  straightforward {result['reference_s'] * 1e3:8.0f} ms  {result['reference_latents_per_s']:6.1f} latents/s")
    print(f"  revq_core       {result['revq_s'] * 1e3:8.0f} ms  {result['revq_latents_per_s']:6.1f} latents/s   "
          f"speed-up x{result['speedup']:.2f} (median of per-round ratios x{result['speedup_round_median']:.2f})")
    if "fast_s" in result:
        print(f"  revq_core fast  {result['fast_s'] * 1e3:8.0f} ms  {result['B'] / result['fast_s']:6.1f} latents/s   "
              f"speed-up x{result['fast_speedup']:.2f} (per-round x{result['fast_speedup_round_median']:.2f}); "
              "fused AdamW + bf16 autocast, not bit-identical")
    print(f"  first step: {result['first_step_codes_differing']} of {result['B'] * 512} codes differ (cdist is "
          f"not exact); losses revq {result['first_step_losses_revq']} vs reference "
          f"{result['first_step_losses_reference']}")
    if "revq_peak_rise_mib" in result:
        print(f"  peak RSS rise over 2 steps: revq_core {result['revq_peak_rise_mib']:.0f} MiB, "
              f"straightforward {result['reference_peak_rise_mib']:.0f} MiB")
    print("  json " + json.dumps(result))


if __name__ == "__main__":
    main()
