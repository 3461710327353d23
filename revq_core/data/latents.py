"""The latent pipeline: encode images once with the frozen VAE, cache the latents, take their statistics.

ReVQ never runs the VAE during training: every training image is encoded once, the latents
(N, 32, 8, 8) are cached, and each of the 2048 latent dimensions is normalized with its mean and
variance over the whole training set (``latent_statistics``, one streaming float64 pass).

    train_latents, val_latents = embedded_latents(["train", "val"])   # offline default, cached in .cache/
    latents = encode_image_folder(load_vae("mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers"), "imagenet/val")
    mean, var = latent_statistics(train_latents)                       # each (32, 8, 8) float32

Latent caches are safetensors files holding one tensor ``latents`` and string metadata.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from tqdm.auto import tqdm

from revq_core.autoencoders.base import encode
from revq_core.autoencoders.embedded import embedded_vae_path
from revq_core.autoencoders.loading import load_vae
from revq_core.checks import first_line
from revq_core.data.files import atomic_write_bytes, cache_dir
from revq_core.data.images import ImageFolderDataset
from revq_core.data.latent_cache import (
    cache_is_complete,
    encode_to_cache,
    load_latent_cache,
)
from revq_core.data.moments import RunningMoments
from revq_core.data.photos import CORPUS_V2_CROP_SCALES, build_photo_dataset


def _images_of(batch) -> torch.Tensor:
    """The image tensor of a DataLoader batch: the batch itself or the first element of (images, labels)."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def encode_dataset(vae, images_or_dataset, batch_size: int = 64, num_workers: int = 0,
                   progress: bool = True) -> torch.Tensor:
    """Encode every image once: -> latents (N, C, h, w) float32 on the CPU.

    Args:
        vae: a frozen ``AutoencoderDC`` (see ``revq_core.autoencoders.loading.load_vae``).
        images_or_dataset: a tensor (N, 3, H, W), float in [-1, 1] or uint8 in [0, 255], or a torch Dataset
            whose items are such images (3, H, W) or ``(image, label)`` pairs (e.g. ``ImageFolderDataset``).
        batch_size: images per encoder call.
        num_workers: DataLoader workers that decode the images of a Dataset.
    """
    if isinstance(images_or_dataset, torch.Tensor):
        images = images_or_dataset
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}; "
                             f"for channels-last arrays use images.permute(0, 3, 1, 2).")
        return encode(vae, images, batch_size, progress=progress)
    loader = torch.utils.data.DataLoader(images_or_dataset, batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers)
    latents = [encode(vae, _images_of(batch), batch_size) for batch in tqdm(loader, desc="encode", disable=not progress)]
    if not latents:
        raise ValueError("No images to encode: the tensor or dataset is empty.")
    return torch.cat(latents)


def save_latents(path: str | os.PathLike, latents: torch.Tensor, metadata: dict | None = None) -> Path:
    """Write latents (N, C, h, w) to a safetensors file, atomically (tmp file + rename). Returns the path."""
    data = save({"latents": latents.contiguous()}, metadata={key: str(value) for key, value in (metadata or {}).items()})
    return atomic_write_bytes(path, data)


def load_latents(path: str | os.PathLike) -> torch.Tensor:
    """Read latents (N, C, h, w) written by ``save_latents``.

    Raises FileNotFoundError if there is no file, ValueError naming the file if it is truncated, not a
    safetensors file, or holds no tensor named ``latents``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No latent cache at {path}. Make one with encode_dataset(...) + save_latents(...), "
                                f"or embedded_latents(...) for the embedded photo set.")
    try:
        with safe_open(str(path), framework="pt") as file:
            names = list(file.keys())
            latents = file.get_tensor("latents") if "latents" in names else None
    except Exception as error:  # safetensors raises its own SafetensorError (header, size, dtype problems)
        raise ValueError(f"{path} is not a readable safetensors latent file ({first_line(error)}): it is truncated or not "
                         f"a safetensors file. Delete it and write it again with save_latents(...) (a cache made "
                         f"by embedded_latents or encode_image_folder is re-encoded when missing).") from None
    if latents is None:
        raise ValueError(f"{path} holds no tensor named 'latents' (found {names}); was it written by save_latents?")
    return latents


def latent_statistics(latents: torch.Tensor | Iterable[torch.Tensor], batch_size: int = 4096,
                      correction: int = 1, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and variance of latents in one streaming pass with float64 accumulators.

    Batches are merged with Chan et al.'s parallel update (count, mean, sum of squared deviations),
    so the result equals ``latents.mean(0)`` / ``latents.var(0, correction=correction)`` of the whole set
    without holding it in float64.

    Args:
        latents: a tensor (N, C, h, w), cut into ``batch_size`` chunks, or an iterable of such batches
            (e.g. a DataLoader over a memory-mapped cache).
        correction: 1 for the unbiased variance (torch.var's default), 0 for the population variance.

    Returns:
        (mean, var), each float32 of the per-sample shape (C, h, w).
    """
    if isinstance(latents, torch.Tensor):
        batches: Iterable = (latents[start:start + batch_size] for start in range(0, len(latents), batch_size))
    else:
        batches = latents
    moments = RunningMoments()
    for batch in tqdm(batches, desc="latent statistics", disable=not progress):
        moments.add(_images_of(batch).double())
    if moments.count == 0:
        raise ValueError("latent_statistics got no latents.")
    if moments.count - correction <= 0:
        raise ValueError(f"Need more than {correction} latent(s) for a variance with correction={correction}, "
                         f"got {moments.count}.")
    return moments.mean.float(), moments.variance(correction).float()


# ---------------------------------------------------------------------------------------------------------------
# Data sources
# ---------------------------------------------------------------------------------------------------------------


def _file_digest(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:10]


# The photo crops each embedded VAE is trained on and encodes: corpus, crop side, crop scales.
EMBEDDED_PHOTO_SETTINGS = {"embedded": {"corpus": "v1", "size": 64},
                           "embedded-v2": {"corpus": "v2", "size": 128, "scales": CORPUS_V2_CROP_SCALES}}


def _embedded_vae_digest(vae: str = "embedded") -> str:
    """A short hash of an embedded VAE's weights, so a retrained VAE never reuses stale latents."""
    files = sorted(embedded_vae_path(vae).glob("*.safetensors"))
    if not files:
        load_vae(vae)  # raises the error that explains how to build the weights
    return "-".join(_file_digest(path) for path in files)


def embedded_latents(split: str | Sequence[str] = "train", num_crops: int | None = None, seed: int = 0,
                     batch_size: int = 128, progress: bool = True, vae: str = "embedded"):
    """Latents of the embedded photo crops, encoded with an embedded VAE and cached under ``.cache/``.

    Args:
        split: "train", "val" or "test", or a list of them, e.g. ``["train", "val"]``.
        num_crops, seed: as in ``revq_core.data.photos.build_photo_dataset`` (default sizes: 16384 / 1024 / 1024).
        vae: "embedded" (64 x 64 crops of the photo corpus v1) or "embedded-v2" (128 x 128 crops of the corpus
            v2 in ``data/photos``); ``EMBEDDED_PHOTO_SETTINGS``.

    Returns:
        float32 latents (N, 32, 8, 8); a tuple of them, one per split, when ``split`` is a list.
    """
    if vae not in EMBEDDED_PHOTO_SETTINGS:
        raise ValueError(f"vae must be one of {sorted(EMBEDDED_PHOTO_SETTINGS)} (the embedded VAEs), got {vae!r}.")
    if not isinstance(split, str):
        return tuple(embedded_latents(name, num_crops, seed, batch_size, progress, vae) for name in split)
    vae_digest = _embedded_vae_digest(vae)
    prefix = "latents" if vae == "embedded" else "latents_v2"
    path = cache_dir() / f"{prefix}_{split}_{num_crops or 'default'}_seed{seed}_vae{vae_digest}.safetensors"
    if path.is_file():
        return load_latents(path)
    images = build_photo_dataset(split, num_crops, seed=seed, as_uint8=True, progress=progress,
                                 **EMBEDDED_PHOTO_SETTINGS[vae])
    latents = encode_dataset(load_vae(vae), images, batch_size, progress=progress)
    save_latents(path, latents, {"split": split, "num_crops": len(images), "seed": seed, "vae": vae,
                                 "vae_digest": vae_digest})
    return latents


def encode_image_folder(vae, root: str | os.PathLike, image_size: int = 256, batch_size: int = 32,
                        num_workers: int = 2, cache_path: str | os.PathLike | None = None,
                        progress: bool = True) -> torch.Tensor:
    """Latents of an ImageNet-layout folder (short side resized to ``image_size``, centre crop).

    With ``cache_path`` the latents are read from it when it exists, else encoded and written to it. A ``.npy``
    path is the memory-mapped, resumable cache of ``revq_core.data.latent_cache`` (for ImageNet: latents written
    batch by batch, never all in RAM, an interrupted encoding resumes where it stopped, statistics in
    ``latent_cache_statistics``); any other path (``.safetensors``) is written whole at the end.
    Returns float32 latents (N, C, image_size / f, image_size / f), in the folder's sorted order
    (memory-mapped from the file for a ``.npy`` cache).
    """
    if cache_path is not None and Path(cache_path).suffix == ".npy":
        if not cache_is_complete(cache_path):  # listing and checking a folder of ImageNet's size takes minutes
            encode_to_cache(vae, ImageFolderDataset(root, size=image_size), cache_path, batch_size, num_workers,
                            progress=progress)
        return load_latent_cache(cache_path)
    if cache_path is not None and Path(cache_path).is_file():
        return load_latents(cache_path)
    dataset = ImageFolderDataset(root, size=image_size)
    latents = encode_dataset(vae, dataset, batch_size, num_workers=num_workers, progress=progress)
    if cache_path is not None:
        vae_config = json.dumps(dict(vae.config), default=str)  # default: paths (a VAE loaded from a directory)
        save_latents(cache_path, latents, {"root": str(Path(root).resolve()), "image_size": image_size,
                                           "num_images": len(dataset), "vae": vae_config[:4000]})
    return latents
