"""The codes file: the token ids of a set of images, written by ``python -m revq_core.tokenize_images`` and read by
``python -m revq_core.detokenize`` (or by a generator's dataset: it needs numpy alone).

An ``.npz`` (``numpy.load(path)``; no pickled objects) of three arrays:

- ``codes``: (N, T) the token ids of N images, ``uint16`` when K <= 65,536, else ``int32`` (``codes_dtype``);
- ``names``: (N,) str, the images' names in the order of ``codes``: paths relative to the folder given, or the
  file names of files given one by one;
- ``meta``: a 0-d str array holding one JSON object:
  - ``format``: the version of this layout (``CODES_FORMAT_VERSION``, 1);
  - ``model``: the model that made the codes: "embedded" for the shipped tokenizer, else the name or path given;
  - ``model_sha1``: sha1 of that model's weights (``weights_sha1``), which ties the ids to the vectors they
    mean: another model, or the same name retrained, decodes them into other images;
  - ``tokens_per_image``: T; ``codes_per_group``: K, the model's largest per-position vocabulary (every id lies
    in [0, K); for the paper's quantizer, the codes per codebook);
  - ``quantizer``: the quantizer's name in ``QUANTIZERS`` ("revq" for the paper's); ``bits_per_image``: the sum
    over positions of log2 of each position's vocabulary (files written before these two fields lack them);
  - ``latent_shape``: [C, h, w] of the model's latent; ``image_size``: the side of the square images encoded;
  - ``vae``: the VAE the latents came from (name, path or hub id); ``vae_digest``: a short hash of its config and
    weights (``LatentAutoencoder.cache_key``; files written before it lack it), checked when the codes are decoded;
  - ``revq_version``: the ``revq_core`` version that wrote the file.

Optionally (files written for a generator) ``labels``: (N,) int64 class indices (-1: none) and, in ``meta``,
``class_names`` (the class folders' names, index = label).

## The memory-mapped layout (ImageNet scale: ``python -m revq_core.pretokenize``)

A directory instead of an ``.npz``, so that 1.28 M x 256 ids are written batch by batch and read back without
holding them in RAM (``open_codes`` gives a read-only memory map):

- ``codes.npy``: (N, T) ids as above (``codes_dtype``), written through ``numpy.lib.format.open_memmap``;
- ``labels.npy``: (N,) int64 class indices (-1 everywhere for unlabelled data);
- ``names.npy``: (N,) str, only when the rows came from image files;
- ``codebooks.safetensors``: the tokenizer's codebook vectors (``codebooks``: (G, K, D) float32, its
  ``quantizer.codebook``), so a generator embeds and scores ids through their vectors without tokenizer code;
- ``progress-<rank>of<world>.json`` while being written: the next row of that rank's contiguous share
  (an interrupted run resumes from it), and ``meta.partial.json`` (the meta it was started with: a resume with
  another tokenizer or data set is refused), both deleted at the end;
- ``meta.json``: the meta fields above plus ``num_images`` and ``class_names``, written **last**: a directory
  without it is incomplete (``load_codes`` refuses it and says how to resume).

``load_codes`` and ``load_labels`` read both layouts.

This module takes a model's metadata as plain values (it imports no model), so anything that holds token ids can
write and read the format.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from revq_core import __version__
from revq_core.utils.checks import first_line
from revq_core.utils.files import atomic_write

CODES_FORMAT_VERSION = 1
UINT16_CODES = 65536  # K up to this fits uint16 ids


class CodesFileError(ValueError):
    """A file that is not a codes file, or codes that a model cannot decode (another T, K or other weights)."""


def codes_dtype(codes_per_group: int) -> type[np.integer]:
    """The id type of the file: ``uint16`` when K <= 65,536, else ``int32``."""
    return np.uint16 if codes_per_group <= UINT16_CODES else np.int32


def weights_sha1(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha1 of a model's weights (every tensor of its ``state_dict()``, in key order): ties codes to their model."""
    digest = hashlib.sha1()
    for key, tensor in sorted(state_dict.items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_codes(path: str | os.PathLike, codes: torch.Tensor, names: Sequence[str], *, model: str, model_sha1: str,
               tokens_per_image: int, codes_per_group: int, latent_shape: Sequence[int], image_size: int,
               vae: str, quantizer: str = "revq", bits_per_image: float | None = None,
               vae_digest: str | None = None, labels: torch.Tensor | None = None,
               class_names: Sequence[str] = ()) -> dict:
    """Write the codes file (the fields: the module docstring) atomically; returns its meta.

    codes: (N, T) ids in [0, codes_per_group); names: N image names; labels: (N,) class indices or None."""
    if codes.ndim != 2 or codes.shape[1] != tokens_per_image or len(codes) != len(names):
        raise ValueError(f"codes must have shape (N, T) = ({len(names)}, {tokens_per_image}) for {len(names)} names, "
                         f"got {tuple(codes.shape)}.")
    meta = codes_meta(model=model, model_sha1=model_sha1, tokens_per_image=tokens_per_image,
                      codes_per_group=codes_per_group, quantizer=quantizer, bits_per_image=bits_per_image,
                      latent_shape=latent_shape, image_size=image_size, vae=vae, class_names=class_names)
    if not class_names:
        del meta["class_names"]  # the file of tokenize_images, as before
    meta["vae_digest"] = vae_digest
    ids = codes.cpu().numpy().astype(codes_dtype(codes_per_group))
    arrays = {"codes": ids, "names": np.array(list(names), dtype=str), "meta": np.array(json.dumps(meta))}
    if labels is not None:
        arrays["labels"] = np.asarray(labels, dtype=np.int64)
    atomic_write(path, lambda file: np.savez(file, **arrays))
    return meta


def load_codes(path: str | os.PathLike) -> tuple[torch.Tensor, list[str], dict]:
    """(codes (N, T) int64, names, meta) from a codes file (an ``.npz`` or a memory-mapped directory: the
    module docstring); CodesFileError if it is not one."""
    path = Path(path).expanduser()
    if path.is_dir():
        codes, meta = open_codes(path)
        names = _directory_names(path, len(codes))
        return torch.from_numpy(np.asarray(codes).astype(np.int64)), names, meta
    if not path.is_file():
        raise CodesFileError(f"{path} does not exist; pass the .npz written by `python -m revq_core.tokenize_images`.")
    try:
        with np.load(path, allow_pickle=False) as file:
            codes, names, meta = file["codes"], [str(name) for name in file["names"]], json.loads(str(file["meta"]))
    except Exception as error:  # not a zip, missing keys, bad JSON
        raise CodesFileError(f"{path} is not a codes file written by `python -m revq_core.tokenize_images` "
                             f"({first_line(error)}).") from None
    if codes.ndim != 2 or len(codes) != len(names):
        raise CodesFileError(f"{path} is damaged: codes of shape {codes.shape} for {len(names)} names.")
    if not (np.issubdtype(codes.dtype, np.integer) or np.issubdtype(codes.dtype, np.floating)):
        raise CodesFileError(f"{path} holds codes of dtype {codes.dtype}, not integer token ids.")
    if np.issubdtype(codes.dtype, np.floating):
        fractional = ~np.isfinite(codes) | (codes != np.round(codes))
        if fractional.any():
            first = tuple(int(index) for index in np.argwhere(fractional)[0])
            raise CodesFileError(f"{path} holds {codes.dtype} codes with {int(fractional.sum())} non-integer value(s) "
                                 f"(first {codes[first]!r} at {first}): token ids are integers; write them with "
                                 f"save_codes (uint16 / int32), not as rounded or averaged floats.")
    return torch.from_numpy(codes.astype(np.int64)), names, meta


def codes_file_digest(path: str | os.PathLike) -> str:
    """sha1 of a codes file's bytes: what a folder decoded from it records (``detokenize``'s manifest)."""
    digest = hashlib.sha1()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


META_JSON, CODES_NPY, LABELS_NPY, NAMES_NPY, CODEBOOKS_FILE = ("meta.json", "codes.npy", "labels.npy", "names.npy",
                                                           "codebooks.safetensors")
PARTIAL_META_JSON = "meta.partial.json"  # the meta of a pretokenization in progress (checked when it resumes)


def codes_meta(*, model: str, model_sha1: str, tokens_per_image: int, codes_per_group: int,
               latent_shape: Sequence[int], image_size: int, vae: str, quantizer: str = "revq",
               bits_per_image: float | None = None, class_names: Sequence[str] = ()) -> dict:
    """The meta fields of a codes file (the module docstring) as one dict."""
    return {"format": CODES_FORMAT_VERSION, "model": model, "model_sha1": model_sha1,
            "tokens_per_image": tokens_per_image, "codes_per_group": codes_per_group, "quantizer": quantizer,
            "bits_per_image": bits_per_image, "latent_shape": [int(side) for side in latent_shape],
            "image_size": image_size, "vae": vae, "revq_version": __version__, "class_names": list(class_names)}


def _progress_file(directory: Path, rank: int, world: int) -> Path:
    return directory / f"progress-{rank}of{world}.json"


class CodesWriter:
    """Writes the memory-mapped layout (the module docstring) resumably: rank ``rank`` of ``world`` writes its
    contiguous share [rank N / W, (rank + 1) N / W) of the N rows.

        writer = CodesWriter(directory, num_images, meta, rank, world)   # creates or reopens codes.npy
        for start in range(writer.next_row, writer.last_row, batch):    # resumes where a run stopped
            writer.write(start, ids, labels)                             # ids (n, T), labels (n,)
        writer.flush()                                                   # also every few batches
        writer.finish()        # on every rank; then rank 0 (after a barrier): writer.write_meta(codebooks)

    ``create`` (rank 0 before the others open the file) makes ``codes.npy`` and ``labels.npy``."""

    def __init__(self, directory: str | os.PathLike, num_images: int, meta: dict, rank: int = 0, world: int = 1):
        if num_images < 1:
            raise CodesFileError("there are no images to tokenize (an empty data set); nothing was written.")
        self.directory, self.num_images, self.meta = Path(directory), num_images, dict(meta)
        self.rank, self.world = rank, world
        self.first_row, self.last_row = rank * num_images // world, (rank + 1) * num_images // world
        self.progress_path = _progress_file(self.directory, rank, world)
        self.next_row = self.first_row
        if self.progress_path.is_file():
            self.next_row = int(json.loads(self.progress_path.read_text())["next_row"])
        self.codes = self.labels = None

    def create(self) -> None:
        """Make the arrays (once, on rank 0) and record the meta they are written with (``meta.partial.json``);
        resuming with another tokenizer or data set is an error."""
        self.directory.mkdir(parents=True, exist_ok=True)
        codes_path = self.directory / CODES_NPY
        partial = self.directory / PARTIAL_META_JSON
        if partial.is_file():
            started = json.loads(partial.read_text())
            keys = ("model_sha1", "tokens_per_image", "codes_per_group", "num_images")
            now = {**self.meta, "num_images": self.num_images}
            differ = [key for key in keys if started.get(key) != now.get(key)]
            if differ:
                raise CodesFileError(f"{self.directory} holds an interrupted pretokenization of other data or another "
                                     f"tokenizer ({', '.join(f'{key}: {started.get(key)} vs {now.get(key)}' for key in differ)}); "
                                     "delete it or choose another --out.")
        else:
            atomic_write_text_json(partial, {**self.meta, "num_images": self.num_images})
        if not codes_path.is_file():
            shape = (self.num_images, self.meta["tokens_per_image"])
            np.lib.format.open_memmap(codes_path, "w+", codes_dtype(self.meta["codes_per_group"]), shape).flush()
            labels = np.lib.format.open_memmap(self.directory / LABELS_NPY, "w+", np.int64, (self.num_images,))
            labels[:] = -1
            labels.flush()

    def open(self) -> None:
        self.codes = np.lib.format.open_memmap(self.directory / CODES_NPY, "r+")
        self.labels = np.lib.format.open_memmap(self.directory / LABELS_NPY, "r+")
        expected = (self.num_images, self.meta["tokens_per_image"])
        if self.codes.shape != expected:
            raise CodesFileError(f"{self.directory / CODES_NPY} holds codes of shape {self.codes.shape}, not {expected}: "
                                 "it belongs to another data set or tokenizer. Delete the directory or choose another.")

    def write(self, start: int, ids: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray | None = None) -> None:
        ids = np.asarray(ids)
        self.codes[start:start + len(ids)] = ids.astype(self.codes.dtype)
        if labels is not None:
            self.labels[start:start + len(ids)] = np.asarray(labels)
        self.next_row = start + len(ids)

    def flush(self) -> None:
        """Flush the rows written so far, then record them (in that order, atomically)."""
        self.codes.flush()
        self.labels.flush()
        atomic_write_text_json(self.progress_path, {"next_row": self.next_row})

    def finish(self) -> None:
        self.flush()
        self.codes = self.labels = None

    def write_meta(self, codebooks: torch.Tensor | None = None, names: Sequence[str] | None = None) -> dict:
        """Rank 0, once every share is written: codebooks, names, then ``meta.json`` last; returns the meta."""
        from safetensors.torch import save

        if codebooks is not None:
            data = save({"codebooks": codebooks.detach().float().cpu().contiguous()})
            atomic_write(self.directory / CODEBOOKS_FILE, lambda file: file.write(data))
        if names is not None:
            atomic_write(self.directory / NAMES_NPY,
                         lambda file: np.save(file, np.array(list(names), dtype=str), allow_pickle=False))
        meta = {**self.meta, "num_images": self.num_images}
        atomic_write_text_json(self.directory / META_JSON, meta)
        (self.directory / PARTIAL_META_JSON).unlink(missing_ok=True)
        for rank in range(self.world):
            _progress_file(self.directory, rank, self.world).unlink(missing_ok=True)
        return meta


def atomic_write_text_json(path: Path, value) -> None:
    data = json.dumps(value, indent=2).encode()
    atomic_write(path, lambda file: file.write(data))


def open_codes(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """(codes (N, T) as stored, uint16 or int32, meta) of a codes file without copying: a read-only memory map
    for the directory layout, the loaded array for an ``.npz``. CodesFileError for an incomplete directory."""
    path = Path(path).expanduser()
    if not path.is_dir():
        if not path.is_file():
            raise CodesFileError(f"{path} does not exist; pass the .npz written by `python -m revq_core.tokenize_images` "
                                 "or the directory written by `python -m revq_core.pretokenize`.")
        try:
            with np.load(path, allow_pickle=False) as file:
                return file["codes"], json.loads(str(file["meta"]))
        except Exception as error:
            raise CodesFileError(f"{path} is not a codes file written by `python -m revq_core.tokenize_images` "
                                 f"({first_line(error)}).") from None
    if not (path / META_JSON).is_file():
        raise CodesFileError(f"{path} is an incomplete codes directory (no {META_JSON}: its pretokenization was "
                             "interrupted); run the same `python -m revq_core.pretokenize` command again to resume it.")
    try:
        meta = json.loads((path / META_JSON).read_text())
        codes = np.load(path / CODES_NPY, mmap_mode="r", allow_pickle=False)
    except Exception as error:
        raise CodesFileError(f"{path} is a damaged codes directory ({first_line(error)}).") from None
    if codes.ndim != 2 or len(codes) != meta.get("num_images"):
        raise CodesFileError(f"{path} is damaged: codes of shape {codes.shape} for {meta.get('num_images')} images.")
    return codes, meta


def _directory_names(path: Path, count: int) -> list[str]:
    if (path / NAMES_NPY).is_file():
        return [str(name) for name in np.load(path / NAMES_NPY, allow_pickle=False)]
    return [f"{index:08d}" for index in range(count)]


def load_labels(path: str | os.PathLike) -> torch.Tensor | None:
    """Class labels (N,) int64 of a codes file (-1: none), or None when it has none (an unlabelled file)."""
    path = Path(path).expanduser()
    if path.is_dir():
        labels = np.load(path / LABELS_NPY, mmap_mode="r", allow_pickle=False) \
            if (path / LABELS_NPY).is_file() else None
    else:
        with np.load(path, allow_pickle=False) as file:
            labels = file["labels"] if "labels" in file.files else None
    if labels is None or not (np.asarray(labels) >= 0).any():
        return None
    return torch.from_numpy(np.asarray(labels).astype(np.int64))


def load_codebooks(path: str | os.PathLike) -> torch.Tensor | None:
    """The tokenizer's codebooks (G, K, D) stored beside the codes (``codebooks.safetensors`` in the directory, or
    beside an ``.npz`` as ``<name>.codebooks.safetensors``); None if there are none."""
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    file = path / CODEBOOKS_FILE if path.is_dir() else path.with_name(path.stem + ".codebooks.safetensors")
    return load_file(str(file))["codebooks"] if file.is_file() else None


def check_codes_fit(meta: dict, model_name: str, tokens_per_image: int, codes_per_group: int, model_sha1: str,
                    force: bool = False, vae: str | None = None, vae_digest: str | None = None) -> None:
    """Raise CodesFileError if codes made by ``meta['model']`` cannot be decoded by the model ``model_name`` (its T,
    K and weights' sha1 given): another T or K always, other weights unless ``force``; and, unless ``force``, a
    VAE other than the one the codes were made on: ``vae_digest`` (of the VAE that would decode) against the
    file's ``vae_digest`` where both exist, else the name ``vae`` given against the file's ``vae``."""
    made_by = meta.get("model", "an unknown model")
    for key, value in (("tokens_per_image", tokens_per_image), ("codes_per_group", codes_per_group)):
        if meta.get(key) != value:
            raise CodesFileError(f"these codes were made by {made_by} ({key} = {meta.get(key)}), but {model_name} "
                                 f"has {key} = {value}: decode them with --model {made_by}.")
    if meta.get("model_sha1") != model_sha1 and not force:
        raise CodesFileError(f"these codes were made by {made_by} (weights sha1 {str(meta.get('model_sha1'))[:12]}), "
                             f"but {model_name} has other weights ({model_sha1[:12]}): its ids mean other "
                             f"vectors. Decode with the model that made them, or pass --force.")
    if force:
        return
    made_on = meta.get("vae")
    if vae_digest is not None and meta.get("vae_digest") is not None:
        other_vae = vae_digest != meta["vae_digest"]
    else:
        other_vae = vae is not None and made_on is not None and str(vae) != str(made_on)
    if other_vae:
        raise CodesFileError(f"these codes were made on the VAE {made_on!r} (digest {meta.get('vae_digest')}), but "
                             f"they would be decoded with {str(vae or made_on)!r} (digest {vae_digest}): another VAE "
                             f"decodes the latents into other images. Decode with --vae {made_on}, or pass --force.")
