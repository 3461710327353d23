"""Train ReVQ from the command line (the library is ``revq_core.training``).

    python -m revq_core.train --preset demo --output runs/demo
    torchrun --nproc_per_node=8 -m revq_core.train --preset paper_512T --train-latents latents/train.npy \\
        --val-latents latents/val.npy --device cuda --output runs/512T
"""
from __future__ import annotations

from revq_core.modeling.quantizers import QUANTIZERS
from revq_core.training.checkpoint import CheckpointError
from revq_core.training.config import PRESETS, preset, speed_settings
from revq_core.training.run_dir import RunDirectoryError
from revq_core.training.trainer import train
from revq_core.utils import distributed


def main(argv: list[str] | None = None) -> None:
    """``python -m revq_core.train --preset demo --output runs/demo``: train on the embedded photo latents
    (or on latent files made by ``revq_core.data.latents.save_latents``) and print the validation MSE.
    ``torchrun --nproc_per_node=N -m revq_core.train ... --device cuda`` trains on N GPUs (DDP).
    An ``--output`` that holds a run needs ``--resume`` (continue it) or ``--overwrite`` (start over)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    parser.add_argument("--output", default="runs/demo", help="output directory (checkpoint, history, model)")
    parser.add_argument("--train-latents", help="latent file (N, C, H, W): safetensors (save_latents) or a .npy "
                        "cache (revq_core.data.latents.encode_to_cache, memory-mapped); default: the embedded photo crops")
    parser.add_argument("--val-latents", help="latent file for validation (same formats); default: the embedded held-out crops")
    parser.add_argument("--quantizer", choices=sorted(QUANTIZERS), help="an entry of QUANTIZERS (default: the preset's, revq)")
    parser.add_argument("--tokens-per-image", type=int, help="T (D = C*H*W / T numbers per token)")
    parser.add_argument("--codes-per-group", type=int, help="K, codes per codebook (revq, vq, rvq per stage)")
    parser.add_argument("--levels-per-dim", type=int, help="L, levels per latent number (scalar, fsq, ifsq)")
    parser.add_argument("--residual-depth", type=int, help="stages of rvq")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    existing_run = parser.add_mutually_exclusive_group()
    existing_run.add_argument("--resume", action="store_true",
                              help="continue the run in --output from its checkpoint (starts fresh if there is none)")
    existing_run.add_argument("--overwrite", action="store_true", help="delete the run in --output and start over")
    parser.add_argument("--fused-adamw", action="store_true", help="fused AdamW kernel (last-bit differences)")
    parser.add_argument("--autocast-bf16", action="store_true",
                        help="bf16 autocast of the rectifier and losses (GPUs; CPUs with native bf16: AVX512-BF16 "
                             "or AMX; changes results in the last bf16 digits)")
    parser.add_argument("--compile-rectifier", nargs="?", const=True, default=False, metavar="MODE",
                        help="torch.compile the rectifier (GPU); optionally a mode, e.g. reduce-overhead")
    parser.add_argument("--fast", action="store_true",
                        help="the speed settings that pay on --device (CUDA: all three above; CPU: none)")
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                                ("seed", args.seed), ("quantizer", args.quantizer),
                                                ("tokens_per_image", args.tokens_per_image),
                                                ("codes_per_group", args.codes_per_group),
                                                ("levels_per_dim", args.levels_per_dim),
                                                ("residual_depth", args.residual_depth)) if value is not None}
    overrides.update({name: True for name in ("fused_adamw", "autocast_bf16") if getattr(args, name)})
    if args.compile_rectifier:
        overrides["compile_rectifier"] = args.compile_rectifier
    device = distributed.init_from_env(args.device)  # torchrun: join the group, cuda:LOCAL_RANK per rank
    if args.fast:
        overrides = {**speed_settings(device), **overrides}
    try:
        config = preset(args.preset, device=device, num_threads=args.threads, **overrides)
    except (ValueError, TypeError) as error:  # a field out of range (--threads -3, --epochs 0, levels that overflow)
        distributed.destroy()
        raise SystemExit(f"error: {error}") from None
    from revq_core.autoencoders.embedded import DEFAULT_EMBEDDED_VAE
    from revq_core.data.latents import (
        embedded_latents,
        latent_cache_statistics,
        read_latents,
    )

    statistics = None  # from a .npy cache: computed while it was written, no extra pass
    main_process = distributed.is_main_process()
    try:  # bad inputs end in one line that says what to do, never a traceback
        if args.train_latents:
            train_latents = read_latents(args.train_latents)
            val_latents = read_latents(args.val_latents) if args.val_latents else None
            statistics = latent_cache_statistics(args.train_latents) if args.train_latents.endswith(".npy") else None
            vae = None
        else:
            train_latents, val_latents = embedded_latents(["train", "val"])
            vae = DEFAULT_EMBEDDED_VAE
        model, history = train(config, train_latents, val_latents, output_dir=args.output,
                               resume=args.resume, overwrite=args.overwrite, vae=vae,
                               normalizer_statistics=statistics)
    except (RunDirectoryError, CheckpointError, OSError, ValueError, TypeError) as error:  # OSError: a full disk
        raise SystemExit(f"error: {error}") from None
    finally:
        distributed.destroy()
    if not main_process:
        return
    print(f"preset {args.preset}: {len(history.epoch)} epochs, validation latent MSE {history.val_mse[-1]:.4f} "
          f"(quantizer only {history.val_quant_mse[-1]:.4f}), codebook usage {history.usage[-1]:.1%}; "
          f"model saved to {args.output}/model")


if __name__ == "__main__":
    main()
