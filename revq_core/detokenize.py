"""Token ids -> images on the command line: the inverse of ``python -m revq_core.tokenize_images``.

    python -m revq_core.detokenize codes.npz --out reconstructions/            # the model named in codes.npz
    python -m revq_core.detokenize codes.npz --out reconstructions/ --model DIR|hub-id

Each image is written as ``<out>/<name>.png`` (its name from the codes file, subfolders kept), at the
model's image size. The model defaults to the one the codes file names; a model whose weights differ
from the ones that made the codes (another model, or the same name retrained) is refused, since its ids
mean other vectors, and so is a ``--vae`` other than the one the codes were made on. ``--force`` decodes anyway
when only the weights or the VAE differ (same T and K). The codes file's format: ``revq_core.data.codes``.

Nothing outside ``--out`` is written (a name with '..' or an absolute one is refused), and no existing file is
replaced without ``--overwrite`` (decoding into the folder of the originals is refused). Each PNG is written
atomically and ``<out>/.revq-manifest.json`` records the decoding: written first as incomplete, last as
complete, so a rerun after a kill resumes (the finished files are kept) and a finished one is refused.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from revq_core.data.codes import check_codes_fit, codes_file_digest, load_codes, weights_sha1
from revq_core.data.images import tensor_to_pil
from revq_core.modeling.loading import load_tokenizer
from revq_core.utils.checks import run_cli
from revq_core.utils.files import (OutputExistsError, atomic_write, child_path, read_manifest, remove_temporaries,
                                   write_manifest)


def detokenize_file(codes_path, out, model: str | None = None, vae: str | None = None, batch_size: int = 32,
                    device: str = "cpu", force: bool = False, progress: bool = True,
                    overwrite: bool = False) -> list[Path]:
    """Decode a codes file into PNG images under ``out``; returns the paths of the images (written now or by the
    interrupted run this one resumes)."""
    codes, names, meta = load_codes(codes_path)
    out = Path(out)
    targets = output_paths(out, names)
    source = codes_file_digest(codes_path)
    todo = _images_to_write(out, targets, source, overwrite)
    revq, model_name = load_tokenizer(model or meta.get("model"), vae or meta.get("vae"), device)
    check_codes_fit(meta, model_name, revq.tokens_per_image, revq.vocabulary_size, weights_sha1(revq.state_dict()),
                    force, vae=vae, vae_digest=revq.vae.cache_key())
    write_manifest(out, source, complete=False)
    for start in tqdm(range(0, len(codes), batch_size), desc="detokenize", unit="batch", disable=not progress):
        batch = [index for index in range(start, min(start + batch_size, len(codes))) if todo[index]]
        if not batch:
            continue
        images = revq.decode_codes(codes[batch].to(device)).cpu()
        for index, image in zip(batch, images):
            picture = tensor_to_pil(image)  # rounded 8-bit levels
            atomic_write(targets[index], lambda file, picture=picture: picture.save(file, format="PNG"))
    write_manifest(out, source, complete=True, files=[path.relative_to(out).as_posix() for path in targets])
    return targets


def output_paths(out: Path, names: list[str]) -> list[Path]:
    """``<out>/<name>.png`` for each name of a codes file, each checked to stay inside ``out`` (``child_path``)
    and to be distinct (``a.jpg`` and ``a.png`` would be one file)."""
    targets = [child_path(out, name).with_suffix(".png") for name in names]
    seen = {}
    for name, path in zip(names, targets):
        if path in seen:
            raise ValueError(f"the codes file's images {seen[path]!r} and {name!r} both decode to {path}; rename "
                             f"one of them in the codes file, or decode them separately.")
        seen[path] = name
    return targets


def _images_to_write(out: Path, targets: list[Path], source: str, overwrite: bool) -> list[bool]:
    """For each target, whether to write it: all with ``overwrite``; the missing ones when ``out``'s manifest
    says an earlier decoding of the same codes file was interrupted; else an existing target, or a finished
    decoding, is refused (``OutputExistsError``)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder; choose a folder for the decoded images.")
    manifest = read_manifest(out) if out.is_dir() else None
    if overwrite:
        return [True] * len(targets)
    if manifest is not None and manifest.get("source") == source:
        if manifest.get("complete"):
            raise OutputExistsError(f"{out} already holds the finished decoding of this codes file; pass --overwrite "
                                    f"to write it again, or choose another --out.")
        for directory in {path.parent for path in targets}:  # left by writes the kill interrupted
            remove_temporaries(directory, [path.name for path in targets if path.parent == directory])
        return [not path.is_file() for path in targets]  # each file was written atomically: present = finished
    existing = [path for path in targets if path.exists()]
    if existing:
        raise OutputExistsError(f"{out} already holds {len(existing)} of the {len(targets)} files this would write "
                                f"(e.g. {existing[0]}); pass --overwrite to replace them, or choose an empty --out.")
    if manifest is not None:
        raise OutputExistsError(f"{out} holds the decoding of another codes file ({out / '.revq-manifest.json'}); "
                                f"pass --overwrite to add to it, or choose an empty --out.")
    return [True] * len(targets)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m revq_core.detokenize", description=__doc__.split("\n")[0])
    parser.add_argument("codes", help="the codes file written by `python -m revq_core.tokenize_images`")
    parser.add_argument("--out", required=True, help="folder for the decoded images (PNG)")
    parser.add_argument("--model", help="default: the model named in the codes file")
    parser.add_argument("--vae", help="default: the VAE named in the codes file")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--force", action="store_true",
                        help="decode with a model whose weights, or a VAE that, differ from the codes' (same T, K)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files in --out")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}.")
    written = detokenize_file(args.codes, args.out, args.model, args.vae, args.batch_size, args.device, args.force,
                              progress=not args.no_progress, overwrite=args.overwrite)
    print(f"wrote {len(written)} images to {args.out}")


if __name__ == "__main__":
    sys.exit(run_cli(main, None))
