"""Token ids -> images on the command line: the inverse of ``python -m revq_core.tokenize_images``.

    python -m revq_core.detokenize codes.npz --out reconstructions/            # the model named in codes.npz
    python -m revq_core.detokenize codes.npz --out reconstructions/ --model DIR|hub-id

Each image is written as ``<out>/<name>.png`` (its name from the codes file, subfolders kept), at the
model's image size. The model defaults to the one the codes file names; a model whose weights differ
from the ones that made the codes (another model, or the same name retrained) is refused, since its ids
mean other vectors. ``--force`` decodes anyway when only the weights differ (same T and K). The codes file's
format: ``revq_core.data.codes``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from revq_core.data.codes import check_codes_fit, load_codes, weights_sha1
from revq_core.data.images import tensor_to_pil
from revq_core.modeling.loading import load_tokenizer
from revq_core.utils.checks import run_cli


def detokenize_file(codes_path, out, model: str | None = None, vae: str | None = None, batch_size: int = 32,
                    device: str = "cpu", force: bool = False, progress: bool = True) -> list[Path]:
    """Decode a codes file into PNG images under ``out``; returns the written paths."""
    codes, names, meta = load_codes(codes_path)
    revq, model_name = load_tokenizer(model or meta.get("model"), vae or meta.get("vae"), device)
    check_codes_fit(meta, model_name, revq.tokens_per_image, revq.vocabulary_size, weights_sha1(revq.state_dict()),
                    force)
    out = Path(out)
    written = []
    for start in tqdm(range(0, len(codes), batch_size), desc="detokenize", unit="batch", disable=not progress):
        images = revq.decode_codes(codes[start:start + batch_size].to(device)).cpu()
        for name, image in zip(names[start:start + batch_size], images):
            path = (out / name).with_suffix(".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            tensor_to_pil(image).save(path)  # rounded 8-bit levels
            written.append(path)
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m revq_core.detokenize", description=__doc__.split("\n")[0])
    parser.add_argument("codes", help="the codes file written by `python -m revq_core.tokenize_images`")
    parser.add_argument("--out", required=True, help="folder for the decoded images (PNG)")
    parser.add_argument("--model", help="default: the model named in the codes file")
    parser.add_argument("--vae", help="default: the VAE named in the codes file")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--force", action="store_true", help="decode with a model whose weights differ (same T, K)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}.")
    written = detokenize_file(args.codes, args.out, args.model, args.vae, args.batch_size, args.device, args.force,
                              progress=not args.no_progress)
    print(f"wrote {len(written)} images to {args.out}")


if __name__ == "__main__":
    sys.exit(run_cli(main, None))
