"""The ViT rectifier's forward + backward on the CPU: the plain module against the speed-ups tried for it.

    .venv/bin/python benchmarks/rectifier_cpu.py --threads 2 --rounds 5      # ~3 min (the compile ~40 s)

The rectifier is ~90 % of a 512T training step on the CPU in both our train() and the authors' loop
(benchmarks/README.md, vs_authors), so a faster step on the CPU means a faster rectifier. Contenders, each
a copy of the same module with the same weights, stepped on the same batch (B latents of 32 x 8 x 8, MSE to
the input, backward), interleaved round by round:
- ``plain``: the module as train() runs it (fp32, NCHW);
- ``channels_last``: module and input in channels-last memory format;
- ``depthwise_cl``: only the depthwise convolutions (the 5 x 5 multi-scale and the 3 x 3 of the MBConv,
  whose backward is slow in oneDNN) run in channels-last, converted in and out;
- ``compiled``: ``nn.Module.compile()`` (inductor's C++ backend), compile time reported apart;
- ``bf16_autocast``: the plain module under ``torch.autocast("cpu", torch.bfloat16)``, what
  ``TrainConfig(autocast_bf16=True)`` does in ``train()``: it changes results (an opt-in, not the default), and
  pays only on CPUs with native bf16 (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower.
Prints the median seconds per step, each contender's ratio to plain (< 1: faster), and the largest
difference of its gradients from plain's (a speed-up must not change results beyond float rounding).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from revq_core.modeling.config import ModelConfig  # noqa: E402
from revq_core.modeling.rectifiers import build_rectifier  # noqa: E402


def depthwise_channels_last(module: nn.Module) -> nn.Module:
    """Run every depthwise Conv2d of ``module`` in channels-last (input converted, output back to NCHW)."""
    def forward(self, x):
        return self._conv_forward(x.contiguous(memory_format=torch.channels_last), self.weight, self.bias).contiguous()

    for layer in module.modules():
        if isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels:
            layer.forward = types.MethodType(forward, layer)
    return module


def step(module: nn.Module, latent: torch.Tensor, bf16: bool = False) -> None:
    module.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = (module(latent) - latent).pow(2).mean()
    loss.backward()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled contender")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16-autocast contender")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    plain = build_rectifier(ModelConfig(rectifier="vit", rectifier_width=args.width, rectifier_depth=args.depth))
    latent = torch.randn(args.batch_size, 32, 8, 8)
    contenders = {"plain": (plain, latent, False),
                  "channels_last": (copy.deepcopy(plain).to(memory_format=torch.channels_last),
                                    latent.contiguous(memory_format=torch.channels_last), False),
                  "depthwise_cl": (depthwise_channels_last(copy.deepcopy(plain)), latent, False)}
    if not args.no_bf16:
        contenders["bf16_autocast"] = (copy.deepcopy(plain), latent, True)
    if not args.no_compile:
        compiled = copy.deepcopy(plain)
        compiled.compile()
        started = time.perf_counter()
        step(compiled, latent)
        print(f"compile (first step): {time.perf_counter() - started:.1f} s")
        contenders["compiled"] = (compiled, latent, False)
    for module, batch, bf16 in contenders.values():  # warm-up
        step(module, batch, bf16)
    times = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, (module, batch, bf16) in contenders.items():
            started = time.perf_counter()
            step(module, batch, bf16)
            times[name].append(time.perf_counter() - started)
    reference = [parameter.grad for parameter in plain.parameters()]
    base = statistics.median(times["plain"])
    print(f"ViT rectifier {args.width} x {args.depth}, B = {args.batch_size}, {args.threads} thread(s), "
          f"median of {args.rounds} interleaved rounds:")
    for name, (module, _, _) in contenders.items():
        difference = max(float((parameter.grad - grad).abs().max() / grad.abs().max().clamp(min=1e-30))
                         for parameter, grad in zip(module.parameters(), reference))
        median = statistics.median(times[name])
        print(f"  {name:14s} {median:7.3f} s/step   x{median / base:5.2f} of plain   gradients differ by "
              f"{difference:.1e} (relative)")


if __name__ == "__main__":
    main()
