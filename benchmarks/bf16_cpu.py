"""bf16 autocast on the CPU: what the opt-in ``TrainConfig(autocast_bf16=True)`` costs in results and buys in time.

    .venv/bin/python benchmarks/bf16_cpu.py --threads 2          # ~14 min on 2 cores (the 512 x 3 runs: 13)

Trains each configuration twice on the embedded default latents (8192 train, 1024 val crops): fp32 (the
default, exact) and with bf16 autocast of the rectifier and the losses (the code search stays float32). The
two runs of a configuration follow each other (``train()`` cannot interleave them), so compare the times only
on a quiet machine. Prints each run's final validation latent MSE (with the rectifier, and the quantizer's
own), its seconds, and the ratios. bf16 pays only on CPUs with native bf16 (AVX512-BF16 or AMX); on AVX2-only
CPUs it is emulated and slower.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from revq_core.data.latents import embedded_latents  # noqa: E402
from revq_core.training.config import preset  # noqa: E402
from revq_core.training.trainer import train  # noqa: E402

CONFIGS = {  # name -> preset overrides
    "demo": {},
    "vit 512 x 3 (the paper's rectifier), residual": {"rectifier_width": 512, "rectifier_depth": 3, "epochs": 2},
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    train_latents, val_latents = embedded_latents(["train", "val"], progress=False)
    for name, overrides in CONFIGS.items():
        results = {}
        for bf16 in (False, True):
            config = preset("demo", seed=42, num_threads=args.threads, autocast_bf16=bf16, **overrides)
            started = time.perf_counter()
            _, history = train(config, train_latents, val_latents, progress=False)
            results[bf16] = (history.val_mse[-1], history.val_quant_mse[-1], time.perf_counter() - started)
        (fp32_mse, fp32_quant, fp32_s), (bf16_mse, bf16_quant, bf16_s) = results[False], results[True]
        print(f"{name}, {config.epochs} epochs of B = {config.batch_size}, K = {config.model.codes_per_group}, "
              f"{args.threads} threads:")
        print(f"  fp32  val MSE {fp32_mse:.5f} (quantizer alone {fp32_quant:.5f})  {fp32_s:6.1f} s")
        print(f"  bf16  val MSE {bf16_mse:.5f} (quantizer alone {bf16_quant:.5f})  {bf16_s:6.1f} s")
        print(f"  bf16 / fp32: val MSE x{bf16_mse / fp32_mse:.5f}, time x{bf16_s / fp32_s:.2f}")


if __name__ == "__main__":
    main()
