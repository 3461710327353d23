"""Images -> token ids on the command line: a codes file (its format: ``revq_core.data.codes``).

    python -m revq_core.tokenize_images photo.jpg more_photos/ --out codes.npz            # the shipped tokenizer
    python -m revq_core.tokenize_images <imagenet>/val --out codes.npz --model DIR|hub-id --vae DIR|hub-id
    python -m revq_core.detokenize codes.npz --out reconstructions/

Every image is resized (short side to the model's image size, bilinear, antialiased) and centre-cropped
to a square, as the model expects (``data.images.resize_center_crop``: the paper's preprocessing): 128 x 128
for the shipped tokenizer (f16 VAE, 8 x 8 latent), 256 x 256 for a DC-AE f32 model. Folders are read
recursively (image files only, hidden files skipped); a file named on the command line must be an image.
(The module is not named ``tokenize``, which would shadow the standard library's module of that name.)
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from tqdm.auto import tqdm

from revq_core.autoencoders.embedded import DEFAULT_EMBEDDED_VAE
from revq_core.data.codes import codes_dtype, save_codes, weights_sha1
from revq_core.data.images import ImageInputError, find_images, image_batches
from revq_core.modeling.loading import load_tokenizer
from revq_core.utils.checks import run_cli
from revq_core.utils.files import check_output_file


def tokenize_images(inputs: list[str | os.PathLike], out: str | os.PathLike, model: str | None = None,
                    vae: str | None = None, batch_size: int = 32, device: str = "cpu",
                    skip_unreadable: bool = False, progress: bool = True, overwrite: bool = False) -> dict:
    """Tokenize images and folders into the codes file ``out``; returns its meta (plus the skipped files).
    ``out`` is checked before any work: never one of the inputs, and an existing file only with ``overwrite``."""
    images = find_images(inputs)
    check_output_file(out, overwrite, inputs=[path for _, path in images])
    revq, model_name = load_tokenizer(model, vae, device)
    size = revq.vae.image_size(revq.latent_shape)  # latent side x the VAE's downsampling factor
    codes, names, skipped = [], [], []
    with tqdm(total=len(images), desc="tokenize", unit="image", disable=not progress) as bar:
        for batch in image_batches(images, size, batch_size, skip_unreadable):
            for name, why in batch.skipped:
                print(f"warning: skipped {why}.", file=sys.stderr)
            if batch.names:
                codes.append(revq.encode_images(batch.images.to(device)).cpu())
            names += batch.names
            skipped += [name for name, _ in batch.skipped]
            bar.update(len(batch.names) + len(batch.skipped))
    if not codes:
        raise ImageInputError("none of the inputs could be read as an image; nothing was written.")
    meta = save_codes(out, torch.cat(codes), names, model=model_name, model_sha1=weights_sha1(revq.state_dict()),
                      tokens_per_image=revq.tokens_per_image, codes_per_group=revq.vocabulary_size,
                      quantizer=revq.config.quantizer, bits_per_image=revq.bits_per_image,
                      latent_shape=revq.latent_shape, image_size=size,
                      vae=str(vae or revq.vae_name or DEFAULT_EMBEDDED_VAE), vae_digest=revq.vae.cache_key())
    return {**meta, "num_images": len(names), "skipped": skipped}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m revq_core.tokenize_images", description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images (read recursively)")
    parser.add_argument("--out", required=True, help="the codes file to write (.npz)")
    parser.add_argument("--model", help="ReVQ directory (save_pretrained) or hub id, or one of the authors' models; "
                                        "default: the shipped tokenizer in data/embedded_tokenizer")
    parser.add_argument("--vae", help="VAE directory or hub id; default: the one the model records")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="skip files that cannot be read as images (with a warning) instead of stopping")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}.")
    result = tokenize_images(args.inputs, args.out, args.model, args.vae, args.batch_size, args.device,
                             args.skip_unreadable, progress=not args.no_progress, overwrite=args.overwrite)
    print(f"wrote {args.out}: {result['num_images']} images x {result['tokens_per_image']} tokens "
          f"({codes_dtype(result['codes_per_group']).__name__}, K = {result['codes_per_group']}), images resized "
          f"and centre-cropped to {result['image_size']} x {result['image_size']}; model {result['model']}"
          + (f"; skipped {len(result['skipped'])} unreadable file(s)" if result["skipped"] else ""))


if __name__ == "__main__":
    sys.exit(run_cli(main, None))
