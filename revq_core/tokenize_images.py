"""Images -> token ids on the command line, and the codes file both directions share.

    python -m revq_core.tokenize_images photo.jpg more_photos/ --out codes.npz            # the shipped tokenizer
    python -m revq_core.tokenize_images <imagenet>/val --out codes.npz --model DIR|hub-id --vae DIR|hub-id
    python -m revq_core.detokenize codes.npz --out reconstructions/

Every image is resized (short side to the model's image size, bilinear, antialiased) and centre-cropped
to a square, as the model expects (``data.resize_center_crop``: the paper's preprocessing): 128 x 128
for the shipped tokenizer (f16 VAE, 8 x 8 latent), 256 x 256 for a DC-AE f32 model. Folders are read
recursively (image files only, hidden files skipped); a file named on the command line must be an image.

The codes file (``.npz``, read with ``numpy.load(path)``; no pickled objects):
- ``codes``: (N, T) token ids, ``uint16`` when K <= 65,536, else ``int32``;
- ``names``: (N,) the images' names (paths relative to the folder given, or the file names);
- ``meta``: a JSON string: model ("embedded" for the shipped one, else the name or path given), model_sha1 (of its weights), tokens_per_image T,
  codes_per_group K, latent_shape, image_size, vae, revq version.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from revq_core import __version__
from revq_core.autoencoders.embedded import DEFAULT_EMBEDDED_VAE
from revq_core.utils.checks import first_line
from revq_core.utils.files import REPO_ROOT, atomic_write
from revq_core.data.images import IMAGE_EXTENSIONS, _is_hidden, pil_to_tensor

# The tokenizer shipped with the repository (trained on the embedded photos): the default model.
EMBEDDED_TOKENIZER_DIR = REPO_ROOT / "data" / "embedded_tokenizer"
CODES_FORMAT_VERSION = 1


class TokenizerInputError(ValueError):
    """A bad input to the tokenizer command line (not an image, no images, codes of another model...)."""


# ---- finding and reading images -----------------------------------------------------------------------------


def find_images(inputs: list[str | os.PathLike]) -> list[tuple[str, Path]]:
    """[(name, path)] of the images to tokenize, in a stable order.

    A folder contributes its image files (by extension), recursively and sorted, named by their path
    relative to it; a file is named by its file name. Raises TokenizerInputError for a missing input, a
    folder without images, or two images of the same name.
    """
    found: list[tuple[str, Path]] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            files = sorted(file for file in path.rglob("*") if file.is_file()
                           and file.suffix.lower() in IMAGE_EXTENSIONS and not _is_hidden(file.relative_to(path)))
            if not files:
                raise TokenizerInputError(f"{path} holds no image files ({', '.join(IMAGE_EXTENSIONS)}); "
                                          f"point at a folder of images or at image files.")
            found += [(file.relative_to(path).as_posix(), file) for file in files]
        elif path.is_file():
            found.append((path.name, path))
        else:
            raise TokenizerInputError(f"{path} does not exist; pass image files or folders of images.")
    names = [name for name, _ in found]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise TokenizerInputError(f"two inputs have the same name {duplicates[0]!r} (names identify images in the "
                                  f"codes file); tokenize them separately or rename one.")
    return found


def read_image(path: Path, size: int) -> torch.Tensor:
    """One image file -> (3, size, size) float32 in [-1, 1] (short side resized to ``size``, centre crop)."""
    try:
        with Image.open(path) as image:
            return pil_to_tensor(image, size)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise TokenizerInputError(f"{path} is not a readable image ({first_line(error)})") from None


# ---- models ------------------------------------------------------------------------------------------------


def load_tokenizer(model: str | os.PathLike | None = None, vae: str | os.PathLike | None = None,
                   device: str | torch.device = "cpu"):
    """(ReVQ with its VAE attached, the model's name) for the command lines.

    model: None or "embedded" for the shipped tokenizer (``data/embedded_tokenizer``), a directory written
    by ``save_pretrained``, a hub id, or one of the authors' released models (converted on the fly).
    vae: None for the VAE the model records.
    """
    from revq_core.autoencoders.loading import load_vae
    from revq_core.modeling.loading import load_model

    model_name = "embedded" if model in (None, "embedded") else str(model)
    if model_name == "embedded":
        if not (EMBEDDED_TOKENIZER_DIR / "config.json").is_file():
            raise TokenizerInputError(f"the shipped tokenizer is missing from {EMBEDDED_TOKENIZER_DIR}; restore it "
                                      f"with `git checkout -- data/embedded_tokenizer`, or pass --model DIR.")
        model = EMBEDDED_TOKENIZER_DIR
    revq = load_model(str(model)).to(device).eval()
    revq.attach_vae(load_vae(vae or revq.vae_name or DEFAULT_EMBEDDED_VAE, device=device))
    return revq, model_name


def model_digest(model) -> str:
    """sha1 of a ReVQ's weights (every tensor of its state dict, in key order): ties codes to their model."""
    digest = hashlib.sha1()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ---- the codes file ----------------------------------------------------------------------------------------


def save_codes(path: str | os.PathLike, codes: torch.Tensor, names: list[str], meta: dict) -> None:
    """Write the codes file (see the module docstring); uint16 ids when K <= 65,536. Atomic."""
    dtype = np.uint16 if meta["codes_per_group"] <= 65536 else np.int32
    atomic_write(path, lambda file: np.savez(file, codes=codes.cpu().numpy().astype(dtype),
                                             names=np.array(names, dtype=str), meta=np.array(json.dumps(meta))))


def load_codes(path: str | os.PathLike) -> tuple[torch.Tensor, list[str], dict]:
    """(codes (N, T) int64, names, meta) from a codes file; TokenizerInputError if it is not one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TokenizerInputError(f"{path} does not exist; pass the .npz written by `python -m revq_core.tokenize_images`.")
    try:
        with np.load(path, allow_pickle=False) as file:
            codes, names, meta = file["codes"], [str(name) for name in file["names"]], json.loads(str(file["meta"]))
    except Exception as error:  # not a zip, missing keys, bad JSON
        raise TokenizerInputError(f"{path} is not a codes file written by `python -m revq_core.tokenize_images` "
                                  f"({first_line(error)}).") from None
    if codes.ndim != 2 or len(codes) != len(names):
        raise TokenizerInputError(f"{path} is damaged: codes of shape {codes.shape} for {len(names)} names.")
    return torch.from_numpy(codes.astype(np.int64)), names, meta


# ---- the command line --------------------------------------------------------------------------------------


def tokenize_images(inputs: list[str | os.PathLike], out: str | os.PathLike, model: str | None = None,
                    vae: str | None = None, batch_size: int = 32, device: str = "cpu",
                    skip_unreadable: bool = False, progress: bool = True) -> dict:
    """Tokenize images and folders into the codes file ``out``; returns its meta (plus the skipped files)."""
    images = find_images(inputs)
    revq, model_name = load_tokenizer(model, vae, device)
    size = revq.vae.image_size(revq.latent_shape)  # latent side x the VAE's downsampling factor
    codes, names, skipped = [], [], []
    with tqdm(total=len(images), desc="tokenize", unit="image", disable=not progress) as bar:
        for start in range(0, len(images), batch_size):
            batch, batch_names = [], []
            for name, path in images[start:start + batch_size]:
                try:
                    batch.append(read_image(path, size))
                    batch_names.append(name)
                except TokenizerInputError as error:
                    if not skip_unreadable:
                        raise TokenizerInputError(f"{error}; remove it or pass --skip-unreadable.") from None
                    skipped.append(name)
                    print(f"warning: skipped {error}.", file=sys.stderr)
            if batch:
                codes.append(revq.encode_images(torch.stack(batch).to(device)).cpu())
                names += batch_names
            bar.update(len(images[start:start + batch_size]))
    if not codes:
        raise TokenizerInputError("none of the inputs could be read as an image; nothing was written.")
    meta = {"format": CODES_FORMAT_VERSION, "model": model_name, "model_sha1": model_digest(revq),
            "tokens_per_image": revq.tokens_per_image, "codes_per_group": revq.codes_per_group,
            "latent_shape": list(revq.latent_shape), "image_size": size,
            "vae": vae or revq.vae_name or DEFAULT_EMBEDDED_VAE, "revq_version": __version__}
    save_codes(out, torch.cat(codes), names, meta)
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
    parser.add_argument("--no-progress", action="store_true")
    return parser


def run_cli(main_function, argv) -> int:
    """Run a command line's body; known input errors become one line on stderr and exit status 2."""
    from revq_core.autoencoders.loading import VAENotFoundError

    try:
        main_function(argv)
    except (TokenizerInputError, VAENotFoundError, FileNotFoundError, NotADirectoryError, ValueError, OSError,
            RuntimeError) as error:
        print(f"error: {first_line(error)}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise TokenizerInputError(f"--batch-size must be at least 1, got {args.batch_size}.")
    result = tokenize_images(args.inputs, args.out, args.model, args.vae, args.batch_size, args.device,
                             args.skip_unreadable, progress=not args.no_progress)
    dtype = "uint16" if result["codes_per_group"] <= 65536 else "int32"
    print(f"wrote {args.out}: {result['num_images']} images x {result['tokens_per_image']} tokens ({dtype}, "
          f"K = {result['codes_per_group']}), images resized and centre-cropped to {result['image_size']} x "
          f"{result['image_size']}; model {result['model']}"
          + (f"; skipped {len(result['skipped'])} unreadable file(s)" if result["skipped"] else ""))


if __name__ == "__main__":
    sys.exit(run_cli(main, None))
