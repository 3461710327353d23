"""Every quantizer of ``QUANTIZERS``: forward + backward time of one training step at 512 tokens, ratios to revq.

    .venv/bin/python benchmarks/quantizers.py --threads 2                # CPU
    .venv/bin/python benchmarks/quantizers.py --device cuda --batch 256  # a GPU

The step is what ``train()`` runs on the quantizer: ``prepare_training`` (revq's in-place codebook gradient on the
CPU), then per step ``release_gradients``, the training-mode forward (code search, usage counting, loss) and the
backward of its loss where it has one (the parameter-free scalar quantizers have none). The settings sit near the
paper's 512T budget, 512 * 14 = 7168 bits per image, on the embedded default's (32, 8, 8) latent (D = 4):
revq and vq K = 16384, rvq 2 stages of K = 128, scalar / fsq / ifsq L = 11 (7085 bits). Contenders are interleaved,
``--rounds`` rounds of ``--steps`` steps each; the medians are printed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from revq_core.modeling import build_quantizer  # noqa: E402
from revq_core.modeling.config import ModelConfig  # noqa: E402

SETTINGS = {  # name -> ModelConfig fields, all at T = 512
    "revq": dict(codes_per_group=16384),
    "vq": dict(codes_per_group=16384),
    "rvq": dict(codes_per_group=128, residual_depth=2),
    "scalar": dict(levels_per_dim=11),
    "fsq": dict(levels_per_dim=11),
    "ifsq": dict(levels_per_dim=11),
}


def step(quantizer, latent: torch.Tensor) -> None:
    quantizer.release_gradients()
    output = quantizer(latent)
    if output.loss.requires_grad:
        output.loss.backward()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    pool = torch.randn(256, 32, 8, 8, generator=generator)
    latent = torch.randn(args.batch, 32, 8, 8, generator=generator).to(device)
    quantizers = {}
    for name, fields in SETTINGS.items():
        quantizer = build_quantizer(ModelConfig(quantizer=name, tokens_per_image=512, **fields)).to(device).train()
        # N(0, 1) codes for the codebook quantizers (a pool of 256 latents would give K = 16384 codes ~64 exact
        # duplicates each, and every token exact ties, the search kernel's slow re-ranking path); data bins for scalar.
        quantizer.init_from_samples(pool.to(device), method="random", generator=torch.Generator().manual_seed(0))
        quantizer.prepare_training(device)
        step(quantizer, latent)  # warm-up
        quantizers[name] = quantizer
    times = {name: [] for name in quantizers}
    for _ in range(args.rounds):
        for name, quantizer in quantizers.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(args.steps):
                step(quantizer, latent)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - started) / args.steps)
    reference = statistics.median(times["revq"])
    print(f"forward + backward of one training step, B = {args.batch}, T = 512, {args.device}, "
          f"{args.threads} threads, medians of {args.rounds} rounds")
    print(f"| quantizer | setting | bits per image | ms per step | / revq |")
    print(f"|---|---|---|---|---|")
    for name, quantizer in quantizers.items():
        median = statistics.median(times[name])
        setting = ", ".join(f"{key}={value}" for key, value in SETTINGS[name].items())
        print(f"| {name} | {setting} | {quantizer.bits_per_image:.0f} | {1000 * median:.2f} | {median / reference:.3f} |")


if __name__ == "__main__":
    main()
