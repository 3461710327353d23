"""Sample images from a token prior on the command line: PNG files, a grid image and their codes file.

    python -m revq_core.generate --out samples/                        # the shipped prior and tokenizer, offline
    python -m revq_core.generate --out samples/ --num-images 64 --temperature 0.9 --top-k 200 --seed 1
    python -m revq_core.generate --out samples/ --prior runs/prior/model --class 3 --cfg-scale 2.0

Writes ``sample_NNNNN.png``, ``grid.png`` and ``codes.npz`` (``python -m revq_core.detokenize`` reads it); an
existing file there is never replaced without --overwrite. The tokenizer defaults to the one the prior records;
one with other weights is refused (its ids mean other vectors) unless --force.
"""
from __future__ import annotations

import argparse
import sys

import torch

from revq_core.utils.checks import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m revq_core.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the images")
    parser.add_argument("--prior", help="a TokenPrior directory (save_pretrained); default data/embedded_prior")
    parser.add_argument("--model", help="the tokenizer; default the one the prior records")
    parser.add_argument("--vae", help="default: the one the tokenizer records")
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument("--class", dest="class_index", help="class index (or name) for a class-conditional prior")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--cfg-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run in --out")
    parser.add_argument("--force", action="store_true", help="decode with a tokenizer of other weights")
    return parser


def main(argv: list[str] | None = None) -> None:
    from revq_core.generation.generate import generate_images

    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}.")
    paths = generate_images(args.out, args.prior, args.model, args.vae, args.num_images, args.class_index,
                            args.temperature, args.top_k, args.top_p, args.cfg_scale, args.seed, args.batch_size,
                            args.device, args.overwrite, args.force)
    print(f"wrote {args.num_images} images, {paths[-2].name} and {paths[-1].name} to {args.out}")


if __name__ == "__main__":
    sys.exit(run_cli(main, None))
