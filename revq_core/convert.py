"""The authors' released models (github.com/Neur-IO/ReVQ) as this project's model directories, on the command line.

    python -m revq_core.convert AndyRaoTHU/revq-512T out_dir --preprocessor preprocessor.pth
    python -m revq_core.convert ckpt.pth out_dir --preprocessor preprocessor.pth   # their ckpt.pth, read locally

The library behind it (their checkpoint layout, the conversion, ``load_authors_model``) is
``revq_core.modeling.authors_format``.
"""
from __future__ import annotations

import argparse

from revq_core.modeling.authors_format import (
    AUTHORS_PREPROCESSOR_URL,
    AUTHORS_VAE,
    AuthorsModelUnavailable,
    CheckpointConversionError,
    load_authors_model,
)
from revq_core.utils.files import check_output_folder


def main(argv: list[str] | None = None) -> None:
    """``python -m revq_core.convert SRC DST [--preprocessor P]``: write the authors' model SRC (their ckpt.pth,
    a directory in their layout or their hub id) as a save_pretrained directory DST (config.json +
    model.safetensors)."""
    parser = argparse.ArgumentParser(prog="python -m revq_core.convert", description=main.__doc__)
    parser.add_argument("src", help="the authors' ckpt.pth, a directory holding it, or a hub id (AndyRaoTHU/revq-512T)")
    parser.add_argument("dst", help="output directory")
    parser.add_argument("--preprocessor", help=f"the authors' preprocessor.pth (latent mean/std): a path or a URL, "
                                               f"e.g. {AUTHORS_PREPROCESSOR_URL}")
    parser.add_argument("--vae", default=AUTHORS_VAE, help=f"VAE name to record (default {AUTHORS_VAE})")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of a dst that is not empty")
    args = parser.parse_args(argv)
    try:
        check_output_folder(args.dst, args.overwrite)  # before any download or conversion
        model = load_authors_model(args.src, args.preprocessor, vae=args.vae)
    except (CheckpointConversionError, FileNotFoundError, AuthorsModelUnavailable, NotADirectoryError,
            FileExistsError) as error:
        raise SystemExit(f"revq_core.convert: error: {error}") from None
    model.save_pretrained(args.dst)
    print(f"converted {args.src}: {model.tokens_per_image} tokens, K = {model.codes_per_group}, "
          f"G = {model.quantizer.num_groups}; saved to {args.dst}")


if __name__ == "__main__":
    main()
