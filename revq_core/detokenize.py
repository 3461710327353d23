"""Token ids -> images on the command line: the inverse of ``python -m revq_core.tokenize_images``.

    python -m revq_core.detokenize codes.npz --out reconstructions/            # the model named in codes.npz
    python -m revq_core.detokenize codes.npz --out reconstructions/ --model DIR|hub-id

Each image is written as ``<out>/<name>.png`` (its name from the codes file, subfolders kept), at the
model's image size. The model defaults to the one the codes file names; a model whose weights differ
from the ones that made the codes (another model, or the same name retrained) is refused, since its ids
mean other vectors. ``--force`` decodes anyway when only the weights differ (same T and K).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from revq_core.evaluation.metrics import to_uint8, to_unit_range
from revq_core.tokenize_images import TokenizerInputError, load_codes, load_tokenizer, model_digest, run_cli


def check_codes_fit(meta: dict, model, model_name: str, force: bool = False) -> None:
    """Raise TokenizerInputError if codes made by ``meta['model']`` cannot be decoded by ``model``."""
    made_by = meta.get("model", "an unknown model")
    for key, value in (("tokens_per_image", model.tokens_per_image), ("codes_per_group", model.codes_per_group)):
        if meta.get(key) != value:
            raise TokenizerInputError(f"these codes were made by {made_by} ({key} = {meta.get(key)}), but {model_name} "
                                      f"has {key} = {value}: decode them with --model {made_by}.")
    digest = model_digest(model)
    if meta.get("model_sha1") != digest and not force:
        raise TokenizerInputError(f"these codes were made by {made_by} (weights sha1 {str(meta.get('model_sha1'))[:12]}), "
                                  f"but {model_name} has other weights ({digest[:12]}): its ids mean other "
                                  f"vectors. Decode with the model that made them, or pass --force.")


def detokenize_file(codes_path, out, model: str | None = None, vae: str | None = None, batch_size: int = 32,
                    device: str = "cpu", force: bool = False, progress: bool = True) -> list[Path]:
    """Decode a codes file into PNG images under ``out``; returns the written paths."""
    codes, names, meta = load_codes(codes_path)
    revq, model_name = load_tokenizer(model or meta.get("model"), vae or meta.get("vae"), device)
    check_codes_fit(meta, revq, model_name, force)
    out = Path(out)
    written = []
    for start in tqdm(range(0, len(codes), batch_size), desc="detokenize", unit="batch", disable=not progress):
        images = revq.decode_codes(codes[start:start + batch_size].to(device)).cpu()
        for name, image in zip(names[start:start + batch_size], images):
            path = (out / name).with_suffix(".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            array = to_uint8(to_unit_range(image)).permute(1, 2, 0).numpy()  # (H, W, 3), rounded 8-bit levels
            Image.fromarray(array).save(path)
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
        raise TokenizerInputError(f"--batch-size must be at least 1, got {args.batch_size}.")
    written = detokenize_file(args.codes, args.out, args.model, args.vae, args.batch_size, args.device, args.force,
                              progress=not args.no_progress)
    print(f"wrote {len(written)} images to {args.out}")


if __name__ == "__main__":
    sys.exit(run_cli(main, None))
