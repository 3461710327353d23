"""Data set -> token ids for a generator on the command line: the codes file a prior trains on
(its format: ``revq_core.data.codes``; the library: ``revq_core.generation.pretokenize``).

    python -m revq_core.pretokenize --embedded train val --out ids/embedded        # the shipped tokenizer's crops
    python -m revq_core.pretokenize --latents latents/train.npy --out ids/train     # cached latents: no VAE pass
    python -m revq_core.pretokenize --images imagenet/train --out ids/train --model DIR   # class folders -> labels
    torchrun --nproc_per_node=8 -m revq_core.pretokenize --images imagenet/train --out ids/train --device cuda

An ``--out`` ending in ``.npz`` is one file; any other is a memory-mapped directory (resumable: run the same
command again after an interruption; sharded over torchrun's ranks).
"""
from __future__ import annotations

import argparse
import sys

import torch

from revq_core.utils import distributed
from revq_core.utils.checks import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m revq_core.pretokenize", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--latents", help="a latent cache (.npy of encode_to_cache, or .safetensors)")
    source.add_argument("--images", help="an image folder in ImageNet layout (class folders become labels)")
    source.add_argument("--embedded", nargs="+", metavar="SPLIT",
                        help="the embedded photo crops' latents of these splits (train, val, test), concatenated")
    parser.add_argument("--out", required=True, help="a directory (memory-mapped, resumable) or a .npz file")
    parser.add_argument("--model", help="tokenizer: ReVQ directory or hub id; default the shipped one")
    parser.add_argument("--vae", help="VAE for --images; default the one the model records")
    parser.add_argument("--batch-size", type=int, default=None, help="default 256 for latents, 32 for images")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> None:
    from revq_core.generation.pretokenize import pretokenize_folder, pretokenize_latents

    args = build_parser().parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}.")
    device = distributed.init_from_env(args.device)
    progress = not args.no_progress
    try:
        if args.images:
            result = pretokenize_folder(args.images, args.out, args.model, args.vae, args.batch_size or 32,
                                        args.num_workers, device, progress)
        else:
            if args.embedded:
                from revq_core.data.latents import embedded_latents

                latents = torch.cat(list(embedded_latents(args.embedded, progress=progress)))
            else:
                latents = args.latents
            result = pretokenize_latents(latents, args.out, args.model, batch_size=args.batch_size or 256,
                                         device=device, progress=progress)
    finally:
        main_process = distributed.is_main_process()
        distributed.destroy()
    if main_process:
        classes = len(result.get("class_names") or [])
        print(f"wrote {args.out}: {result['num_images']} images x {result['tokens_per_image']} tokens "
              f"(K = {result['codes_per_group']}, {classes or 'no'} classes); model {result['model']}")


if __name__ == "__main__":
    sys.exit(run_cli(main, None))
