"""Train a token prior on a codes file on the command line (the library: ``revq_core.generation.train_prior``).

    python -m revq_core.pretokenize --embedded train --out ids/train
    python -m revq_core.pretokenize --embedded val --out ids/val
    python -m revq_core.train_prior --codes ids/train --held-out ids/val --out runs/prior --preset embedded
    python -m revq_core.train_prior --codes ids/train --out runs/prior --resume      # after an interruption
    torchrun --nproc_per_node=8 -m revq_core.train_prior --codes ids/imagenet --out runs/b --preset imagenet_b

The finished prior is ``OUT/model`` (``TokenPrior.from_pretrained``); ``OUT/history.json`` holds held-out bits per
token beside the unigram baseline's after every epoch. An OUT that holds a run is refused without --resume or
--overwrite.
"""
from __future__ import annotations

import argparse
import sys

import torch

from revq_core.utils import distributed
from revq_core.utils.checks import run_cli


def build_parser() -> argparse.ArgumentParser:
    from revq_core.generation.train_prior import PRIOR_PRESETS

    parser = argparse.ArgumentParser(prog="python -m revq_core.train_prior", description=__doc__.split("\n")[0])
    parser.add_argument("--codes", required=True, help="codes file or directory (python -m revq_core.pretokenize)")
    parser.add_argument("--held-out", help="codes to score after every epoch; default: a share of --codes")
    parser.add_argument("--out", required=True, help="the run directory")
    parser.add_argument("--preset", default="embedded", choices=sorted(PRIOR_PRESETS))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--steps-per-epoch", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--width", type=int)
    parser.add_argument("--depth", type=int)
    parser.add_argument("--order", choices=["channel", "position"])
    parser.add_argument("--seed", type=int)
    parser.add_argument("--unconditional", action="store_true", help="ignore the codes' labels")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--stop-after", type=int, help="end after this many epochs (resume later)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> None:
    from revq_core.data.codes import load_codebooks, load_labels, open_codes
    from revq_core.generation.train_prior import PRIOR_PRESETS, train_prior

    args = build_parser().parse_args(argv)
    config = PRIOR_PRESETS[args.preset].replace(device=args.device)
    changes = {key: value for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                              ("steps_per_epoch", args.steps_per_epoch), ("lr", args.lr),
                                              ("seed", args.seed)) if value is not None}
    architecture = {**config.architecture, **{key: value for key, value in (
        ("width", args.width), ("depth", args.depth), ("order", args.order)) if value is not None}}
    config = config.replace(architecture=architecture, **changes)
    codes, meta = open_codes(args.codes)
    labels = None if args.unconditional else load_labels(args.codes)
    held_out = held_out_labels = None
    if args.held_out:
        held_out, held_meta = open_codes(args.held_out)
        if held_meta.get("model_sha1") != meta.get("model_sha1"):
            raise ValueError(f"--held-out {args.held_out} was made by another tokenizer than --codes {args.codes}.")
        held_out_labels = None if args.unconditional else load_labels(args.held_out)
    config = config.replace(device=distributed.init_from_env(args.device))
    try:
        prior, history = train_prior(codes, config, load_codebooks(args.codes), meta, labels, held_out,
                                     held_out_labels, output_dir=args.out, resume=args.resume,
                                     overwrite=args.overwrite, stop_after=args.stop_after,
                                     progress=not args.no_progress)
    finally:
        main_process = distributed.is_main_process()
        distributed.destroy()
    if main_process and history.epoch:
        print(f"epoch {history.epoch[-1] + 1}/{config.epochs}: held-out {history.held_out_bits[-1]:.4f} bits per "
              f"token (unigram baseline {history.unigram_bits[-1]:.4f}); {history.tokens_per_second[-1]:.0f} "
              f"training tokens/s; wrote {args.out}")


if __name__ == "__main__":
    sys.exit(run_cli(main, None))
