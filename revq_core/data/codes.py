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
               vae_digest: str | None = None) -> dict:
    """Write the codes file (the fields: the module docstring) atomically; returns its meta.

    codes: (N, T) ids in [0, codes_per_group); names: N image names."""
    if codes.ndim != 2 or codes.shape[1] != tokens_per_image or len(codes) != len(names):
        raise ValueError(f"codes must have shape (N, T) = ({len(names)}, {tokens_per_image}) for {len(names)} names, "
                         f"got {tuple(codes.shape)}.")
    meta = {"format": CODES_FORMAT_VERSION, "model": model, "model_sha1": model_sha1,
            "tokens_per_image": tokens_per_image, "codes_per_group": codes_per_group, "quantizer": quantizer,
            "bits_per_image": bits_per_image,
            "latent_shape": [int(side) for side in latent_shape], "image_size": image_size, "vae": vae,
            "vae_digest": vae_digest, "revq_version": __version__}
    ids = codes.cpu().numpy().astype(codes_dtype(codes_per_group))
    atomic_write(path, lambda file: np.savez(file, codes=ids, names=np.array(list(names), dtype=str),
                                             meta=np.array(json.dumps(meta))))
    return meta


def load_codes(path: str | os.PathLike) -> tuple[torch.Tensor, list[str], dict]:
    """(codes (N, T) int64, names, meta) from a codes file; CodesFileError if it is not one."""
    path = Path(path).expanduser()
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
