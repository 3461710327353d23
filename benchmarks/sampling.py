"""Token prior speed: sampling 16 images of 512 tokens with the shipped prior, KV-cached vs uncached, and training
throughput, in tokens per second (the issue's goal: 16 images within 10 s with the cache on 2 CPU cores).

    .venv/bin/python benchmarks/sampling.py --threads 2                    # ~1 min on 2 quiet cores
    .venv/bin/python benchmarks/sampling.py --threads 2 --uncached-images 4 --device cuda

Cached and uncached draw the same tokens (tests/generation/test_prior.py); the uncached path recomputes every
step from the whole prefix (its cost per token grows with the prefix); it is timed on the model's steps alone
(no draws, so the speed-up printed is a lower bound), on ``--uncached-images`` images and the first
``--uncached-steps`` steps (default: all). Training: ``--train-steps`` steps of the shipped prior's architecture on random ids with its
codebooks, batch ``--batch-size``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from revq_core.generation import TokenPrior  # noqa: E402


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--uncached-images", type=int, default=16)
    parser.add_argument("--uncached-steps", type=int, default=512)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prior", help="default: the shipped prior")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prior = TokenPrior.from_pretrained(args.prior, args.device)
    tokens = prior.config.tokens_per_image
    print(f"prior: width {prior.config.width}, depth {prior.config.depth}, T = {tokens}, K = {prior.codes_per_group}, "
          f"order {prior.config.order}; {torch.get_num_threads()} threads, device {args.device}")

    prior.sample(2, seed=0)  # warm-up
    _sync(args.device)
    started = time.perf_counter()
    prior.sample(args.images, seed=0)
    _sync(args.device)
    cached = time.perf_counter() - started
    print(f"cached:   {args.images} images x {tokens} tokens in {cached:.2f} s = {args.images * tokens / cached:.0f} "
          f"tokens/s")

    # uncached: what sample(use_cache=False) does per step (the whole prefix through every block), first N steps
    codes = torch.randint(prior.codes_per_group, (args.uncached_images, tokens), device=args.device)
    with torch.no_grad():
        inputs = prior._inputs(codes, None)  # (B, T, width): class token, then the embedded steps
        _sync(args.device)
        started = time.perf_counter()
        for step in range(1, args.uncached_steps + 1):
            prior.step_logits(inputs[:, :step] - prior.positions[:step], None, 0)
        _sync(args.device)
    uncached = time.perf_counter() - started
    rate = args.uncached_images * args.uncached_steps / uncached
    which = f"all {tokens}" if args.uncached_steps >= tokens else f"first {args.uncached_steps} (an upper bound for all)"
    print(f"uncached: {args.uncached_images} images x {which} tokens in {uncached:.2f} s = {rate:.0f} tokens/s "
          "(the model's steps only, no draws)")
    print(f"cache speed-up: >= {args.images * tokens / cached / rate:.1f}x")

    prior.train()
    optimizer = torch.optim.AdamW(prior.parameters(), lr=1e-4)
    codes = torch.randint(prior.codes_per_group, (args.batch_size, tokens), device=args.device)
    times = []
    for step in range(args.train_steps + 1):
        _sync(args.device)
        started = time.perf_counter()
        with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.device.startswith("cuda")):
            logits = prior(codes)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), codes[:, prior.order].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        _sync(args.device)
        if step:  # the first is warm-up
            times.append(time.perf_counter() - started)
    step_time = sorted(times)[len(times) // 2]
    print(f"training: batch {args.batch_size} x {tokens} tokens, median step {step_time:.2f} s = "
          f"{args.batch_size * tokens / step_time:.0f} tokens/s")


if __name__ == "__main__":
    main()
