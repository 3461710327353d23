"""The latent pipeline: encode images once with the frozen VAE, cache the latents, take their statistics.

ReVQ never runs the VAE during training: every training image is encoded once, the latents
(N, 32, 8, 8) are cached, and each of the 2048 latent dimensions is normalized with its mean and
variance over the whole training set (``latent_statistics``, one streaming float64 pass).

    train_latents, val_latents = embedded_latents(["train", "val"])   # offline default: shipped (data/embedded_latents)
    latents = encode_image_folder(load_vae("mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers"), "imagenet/val")
    mean, var = latent_statistics(train_latents)                       # each (32, 8, 8) float32

Two cache formats, one module: a safetensors file (``save_latents`` / ``load_latents``: small sets, held in
RAM) and, at ImageNet scale, a memory-mapped ``.npy`` written resumably (``encode_to_cache``, below);
``read_latents`` opens either by its suffix.

## The ImageNet-scale cache

1.28 M latents of 32 x 8 x 8 float32 are 10.5 GB: ``encode_to_cache`` writes them batch by batch into
a ``.npy`` file (``numpy.lib.format.open_memmap``), accumulates per-dimension mean and variance in
float64 as it goes (Chan et al.'s parallel update), and after every ``flush_every`` batches records
its progress (rows written + the running statistics) in a sidecar file, atomically. Interrupted, it
resumes from the last recorded row. ``load_latent_cache`` opens the finished file memory-mapped
(copy-on-write: nothing is read until used, the file is never modified), so ``train()`` gathers its
batches from disk/page cache and never needs all latents in RAM.

Under torchrun every rank encodes its contiguous share of the images into the same file (a shared
file system), with its own progress file; rank 0 merges the shares' statistics at the end. A script
``encode.py`` run as ``torchrun --nproc_per_node=8 encode.py``:

    device = distributed.init_from_env("cuda")                  # cuda:LOCAL_RANK, NCCL
    vae = load_vae("mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers").to(device)
    encode_to_cache(vae, ImageFolderDataset("imagenet/train"), "latents/train.npy", num_workers=8)
    distributed.destroy()

Files for ``path`` = ``train.npy``: ``train.npy`` (N, C, h, w) float32, ``train.npy.stats.npz``
(mean, var (population), count) once complete, ``train.npy.progress-<rank>of<world>.npz`` while running.

    path = encode_to_cache(vae, ImageFolderDataset("imagenet/train"), "latents/train.npy", num_workers=8)
    latents = load_latent_cache(path)              # torch tensor backed by the file
    mean, var = latent_cache_statistics(path)       # each (C, h, w) float32
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save
from tqdm.auto import tqdm

from revq_core.autoencoders.adapters import encode
from revq_core.autoencoders.embedded import DEFAULT_EMBEDDED_VAE, EMBEDDED_VAE_CORPUS, embedded_vae_path
from revq_core.autoencoders.loading import load_vae
from revq_core.data.images import ImageFolderDataset
from revq_core.data.photos import CORPUS_CROPS, build_photo_dataset, photo_crops_key
from revq_core.utils import distributed
from revq_core.utils.checks import check_num_workers, first_line
from revq_core.utils.files import REPO_ROOT, atomic_write, atomic_write_bytes, cache_dir
from revq_core.utils.moments import RunningMoments


def _as_batch(batch) -> torch.Tensor:
    """Images of a batch (n, 3, H, W) from a tensor, a DataLoader's (images, labels) or one dataset item."""
    images = batch[0] if isinstance(batch, (tuple, list)) else batch
    return images[None] if images.ndim == 3 else images


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
    latents = [encode(vae, _as_batch(batch), batch_size) for batch in tqdm(loader, desc="encode", disable=not progress)]
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
        moments.add(_as_batch(batch).double())
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


def _embedded_vae_digest(vae: str = DEFAULT_EMBEDDED_VAE) -> str:
    """A short hash of an embedded VAE's weights, so a retrained VAE never reuses stale latents."""
    files = sorted(embedded_vae_path(vae).glob("*.safetensors"))
    if not files:
        load_vae(vae)  # raises the error that explains how to build the weights
    return "-".join(_file_digest(path) for path in files)


# The default splits' latents ship with the repository (``data/embedded_latents/``, float16): the encoder is
# most of a first run's time on a slow CPU (9216 crops, 17.7 TFLOP: 2-3 minutes on 2 cores), and every fresh
# clone would compute the same numbers. A shipped file is used only when it records the VAE digest and the
# crops' key (``photo_crops_key``) of what ``embedded_latents`` would encode; anything else is encoded.
SHIPPED_LATENTS_DIR = REPO_ROOT / "data" / "embedded_latents"


SHIPPED_LATENTS_PER_FILE = 4096  # 16 MiB of float16 latents: every shipped file stays far below 30 MB


def shipped_latents_path(split: str, index: int, count: int) -> Path:
    """File ``index`` of the ``count`` that hold the shipped float16 latents of an embedded split (VAE v2, the
    corpus's default crops), each at most ``SHIPPED_LATENTS_PER_FILE`` latents, in order."""
    return SHIPPED_LATENTS_DIR / f"latents_v2_{split}-{index}of{count}.safetensors"


def shipped_latents_paths(split: str) -> list[Path]:
    """The shipped files of a split that exist, in their order (``latents_v2_<split>-<index>of<count>``)."""
    paths = SHIPPED_LATENTS_DIR.glob(f"latents_v2_{split}-*of*.safetensors")
    return sorted(paths, key=lambda path: int(path.stem.rsplit("-", 1)[1].split("of")[0]))


def shipped_latents_record(split: str, num_crops: int, seed: int, vae: str, vae_digest: str) -> dict[str, str]:
    """The metadata a shipped latent file must hold to stand for ``embedded_latents(split, num_crops, seed,
    vae=vae)``: what made the crops and the VAE's weights."""
    corpus = EMBEDDED_VAE_CORPUS[vae]
    return {"split": split, "num_crops": str(num_crops), "seed": str(seed), "vae": vae, "vae_digest": vae_digest,
            "crops_key": photo_crops_key(split, num_crops, seed, corpus=corpus)}


def _read_shipped_latents(split: str, record: dict[str, str]) -> torch.Tensor | None:
    """The shipped latents of ``split`` as float32 if every file's metadata matches ``record``, else None (a
    warning says why when the files exist but cannot be used)."""
    parts = []
    for path in shipped_latents_paths(split):
        try:
            with safe_open(str(path), framework="pt") as file:
                metadata = file.metadata() or {}
                if any(metadata.get(name) != value for name, value in record.items()):
                    return None  # another VAE's or other crops': encode (the caller's progress bar shows it)
                parts.append(file.get_tensor("latents"))
        except Exception as error:  # truncated, a Git LFS pointer, not safetensors
            shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
            warnings.warn(f"{path} is unreadable ({first_line(error)}): encoding the crops instead. Restore it with "
                          f"`git checkout -- {shown}`.", stacklevel=3)
            return None
    if not parts:
        return None
    latents = torch.cat(parts)
    if latents.ndim != 4 or len(latents) != int(record["num_crops"]):
        warnings.warn(f"{SHIPPED_LATENTS_DIR}'s {len(parts)} file(s) of {split!r} hold latents of shape "
                      f"{tuple(latents.shape)}, not {record['num_crops']} latents (N, C, h, w) (a file missing?): "
                      f"encoding the crops instead.", stacklevel=3)
        return None
    return latents.float()


def embedded_latents(split: str | Sequence[str] = "train", num_crops: int | None = None, seed: int = 0,
                     batch_size: int = 16, progress: bool = True, vae: str = DEFAULT_EMBEDDED_VAE,
                     shipped: bool = True):
    """Latents of the embedded photo crops: the shipped ones, else encoded with an embedded VAE and cached
    under ``.cache/``.

    Args:
        split: "train", "val" or "test", or a list of them, e.g. ``["train", "val"]``.
        num_crops, seed: as in ``revq_core.data.photos.build_photo_dataset`` (default sizes: the corpus's, for
            the default v2: 8192 / 1024 / 1024 crops for train / val / test).
        vae: "embedded-v2" (the default: 128 x 128 crops of the photo corpus v2 in ``data/photos``) or
            "embedded" (the first VAE: 64 x 64 crops of the corpus v1); ``EMBEDDED_VAE_CORPUS``.
        batch_size: crops encoded at once; small batches keep the activations in the CPU's cache (VAE v2 on
            2 cores: ~7 ms a crop at 16, ~14 ms at 128).
        shipped: use the latents shipped in ``data/embedded_latents/`` when they are those of these crops
            and this VAE (the VAE v2's default splits, seed 0): the encoder's float32 output rounded to
            float16 (relative error <= 2**-11; absolute <= 3e-8 below float16's smallest normal, 6.1e-5).
            ``scripts/ship_embedded_latents.py`` makes them, tests/data/test_shipped_latents.py re-encodes a
            sample. False, or ``REVQ_SHIPPED_LATENTS=0`` in the environment: encode (or read the cache).

    Returns:
        float32 latents (N, 32, 8, 8); a tuple of them, one per split, when ``split`` is a list.
    """
    if vae not in EMBEDDED_VAE_CORPUS:
        raise ValueError(f"vae must be one of {sorted(EMBEDDED_VAE_CORPUS)} (the embedded VAEs), got {vae!r}.")
    if not isinstance(split, str):
        return tuple(embedded_latents(name, num_crops, seed, batch_size, progress, vae, shipped) for name in split)
    corpus = EMBEDDED_VAE_CORPUS[vae]
    num_crops = CORPUS_CROPS[corpus].num_crops.get(split) if num_crops is None else num_crops
    vae_digest = _embedded_vae_digest(vae)
    if shipped and os.environ.get("REVQ_SHIPPED_LATENTS", "1").strip() != "0" and vae == DEFAULT_EMBEDDED_VAE \
            and num_crops is not None:
        latents = _read_shipped_latents(split, shipped_latents_record(split, num_crops, seed, vae, vae_digest))
        if latents is not None:
            return latents
    prefix = "latents" if vae == "embedded" else "latents_v2"
    path = cache_dir() / f"{prefix}_{split}_{num_crops}_seed{seed}_vae{vae_digest}.safetensors"
    if path.is_file():
        return load_latents(path)
    images = build_photo_dataset(split, num_crops, seed=seed, as_uint8=True, progress=progress, corpus=corpus)
    latents = encode_dataset(load_vae(vae), images, batch_size, progress=progress)
    save_latents(path, latents, {"split": split, "num_crops": len(images), "seed": seed, "vae": vae,
                                 "vae_digest": vae_digest})
    return latents


def encode_image_folder(vae, root: str | os.PathLike, image_size: int = 256, batch_size: int = 32,
                        num_workers: int = 2, cache_path: str | os.PathLike | None = None,
                        progress: bool = True) -> torch.Tensor:
    """Latents of an ImageNet-layout folder (short side resized to ``image_size``, centre crop).

    With ``cache_path`` the latents are read from it when it exists, else encoded and written to it. A ``.npy``
    path is the memory-mapped, resumable cache of ``revq_core.data.latents`` (for ImageNet: latents written
    batch by batch, never all in RAM, an interrupted encoding resumes where it stopped, statistics in
    ``latent_cache_statistics``); any other path (``.safetensors``) is written whole at the end.
    Returns float32 latents (N, C, image_size / f, image_size / f), in the folder's sorted order
    (memory-mapped from the file for a ``.npy`` cache).
    """
    check_num_workers(num_workers)
    if cache_path is not None and Path(cache_path).suffix == ".npy":
        if cache_is_complete(cache_path):  # the key needs the folder's listing only, not its files checked
            key = cache_key(vae, ImageFolderDataset(root, size=image_size, check_files=False))
            _check_key(Path(cache_path), _recorded_key(_stats_path(Path(cache_path))), key, "was written")
        else:  # listing and checking a folder of ImageNet's size takes minutes
            encode_to_cache(vae, ImageFolderDataset(root, size=image_size), cache_path, batch_size, num_workers,
                            progress=progress)
        return load_latent_cache(cache_path)
    dataset = ImageFolderDataset(root, size=image_size)
    key = cache_key(vae, dataset)
    if cache_path is not None and Path(cache_path).is_file():
        _check_key(Path(cache_path), _safetensors_key(Path(cache_path)), key, "was written")
        return load_latents(cache_path)
    latents = encode_dataset(vae, dataset, batch_size, num_workers=num_workers, progress=progress)
    if cache_path is not None:
        vae_config = json.dumps(dict(vae.config), default=str)  # default: paths (a VAE loaded from a directory)
        save_latents(cache_path, latents, {"root": str(Path(root).resolve()), "image_size": image_size,
                                           "num_images": len(dataset), "vae": vae_config[:4000], "key": key})
    return latents


def _safetensors_key(path: Path) -> str:
    """The ``cache_key`` a safetensors latent file records; a key that matches nothing for a file written
    before keys existed (its VAE and images are unknown, so it is not reused)."""
    try:
        with safe_open(str(path), framework="pt") as file:
            recorded = (file.metadata() or {}).get("key")
    except Exception:  # unreadable: load_latents says so
        return ""
    return recorded or json.dumps({"vae": "unknown (written before caches recorded it)", "images": "unknown"})


def read_latents(path: str | os.PathLike) -> torch.Tensor:
    """Latents (N, C, H, W) from either cache format: a ``.npy`` cache (``encode_to_cache``, memory-mapped) or a
    safetensors file (``save_latents``)."""
    return load_latent_cache(path) if str(path).endswith(".npy") else load_latents(path)


# ---------------------------------------------------------------------------------------------------------------
# The ImageNet-scale cache: memory-mapped .npy, written resumably, statistics in the same pass
# ---------------------------------------------------------------------------------------------------------------


def _stats_path(path: Path) -> Path:
    return path.with_name(path.name + ".stats.npz")


def _progress_path(path: Path, rank: int, world: int) -> Path:
    return path.with_name(f"{path.name}.progress-{rank}of{world}.npz")


def _save_npz_atomically(path: Path, **arrays) -> None:
    atomic_write(path, lambda file: np.savez(file, **arrays))


def encode_to_cache(vae, images_or_dataset, path: str | os.PathLike, batch_size: int = 64, num_workers: int = 0,
                    flush_every: int = 16, progress: bool = True) -> Path:
    """Encode every image into a memory-mapped latent cache at ``path`` (.npy); resumable; returns the path.

    Args:
        vae: a frozen VAE as for ``revq_core.autoencoders.adapters.encode`` (``vae.encode(x).latent``).
        images_or_dataset: a tensor (N, 3, H, W) (float in [-1, 1] or uint8) or a Dataset of such images
            (3, H, W) or ``(image, label)`` pairs, in a fixed order (row i of the cache is item i).
        batch_size: images per encoder call; num_workers: DataLoader workers decoding the images.
        flush_every: batches between progress records (work lost to an interruption is at most this).
    Inside a torch.distributed process group, each rank encodes rows [rank * N / W, (rank + 1) * N / W).
    A complete cache (its ``.stats.npz`` exists) is returned as is.
    """
    path = Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"the latent cache path must end in .npy, got {path}.")
    count = len(images_or_dataset)
    if count == 0:
        raise ValueError("No images to encode: the tensor or dataset is empty.")
    key = cache_key(vae, images_or_dataset)
    if _stats_path(path).is_file():
        _check_key(path, _recorded_key(_stats_path(path)), key, "was written")
        return path
    rank, world = distributed.rank(), distributed.world_size()
    first, last = rank * count // world, (rank + 1) * count // world
    progress_path = _progress_path(path, rank, world)
    if rank == 0 and not path.is_file():
        sample = encode(vae, _as_batch(_item(images_or_dataset, 0)), 1)  # (1, C, h, w): the latent shape
        path.parent.mkdir(parents=True, exist_ok=True)
        np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(count, *sample.shape[1:])).flush()
    distributed.barrier()  # the file exists for every rank
    cache = np.lib.format.open_memmap(path, mode="r+")
    if cache.shape[0] != count:
        raise ValueError(f"{path} holds {cache.shape[0]} latents but the dataset has {count} images: it belongs to "
                         "another dataset. Delete it (and its .progress files) or choose another path.")
    row, moments = first, RunningMoments()
    if progress_path.is_file():  # resume
        _check_key(path, _recorded_key(progress_path), key, "was started")
        with np.load(progress_path) as saved:
            row = int(saved["next_row"])
            if int(saved["count"]):
                moments = RunningMoments(int(saved["count"]), saved["mean"], saved["squared_deviations"])
    subset = torch.utils.data.Subset(images_or_dataset, range(row, last)) \
        if not isinstance(images_or_dataset, torch.Tensor) else images_or_dataset[row:last]
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers) \
        if not isinstance(subset, torch.Tensor) else subset.split(batch_size)
    bar = tqdm(loader, desc=f"encode rows {row}-{last}", disable=not (progress and distributed.is_main_process()))
    for batch_index, batch in enumerate(bar, start=1):
        latents = encode(vae, _as_batch(batch), len(_as_batch(batch))).numpy()  # (n, C, h, w)
        cache[row:row + len(latents)] = latents
        moments.add(latents)
        row += len(latents)
        if batch_index % flush_every == 0:
            _record_progress(cache, progress_path, row, moments, key)
    _record_progress(cache, progress_path, row, moments, key)  # also for a share with no rows
    del cache
    distributed.barrier()  # every share is written
    if rank == 0:
        _merge_statistics(path, world)
    distributed.barrier()
    return path


def _record_progress(cache: np.memmap, progress_path: Path, next_row: int, moments: RunningMoments,
                     key: str) -> None:
    """Flush the rows written so far, then record them, their statistics and the cache's key (atomically, in
    that order)."""
    cache.flush()
    _save_npz_atomically(progress_path, next_row=next_row, count=moments.count,
                         mean=moments.mean if moments.count else np.zeros(0),
                         squared_deviations=moments.squared_deviations if moments.count else np.zeros(0), key=key)


def _recorded_key(npz_path: Path) -> str:
    """The ``cache_key`` a progress or statistics file records; '' for files written before keys existed."""
    try:
        with np.load(npz_path, allow_pickle=False) as saved:
            return str(saved["key"]) if "key" in saved else ""
    except Exception:  # unreadable: the readers that need it say so
        return ""


def _item(images_or_dataset, index: int):
    return images_or_dataset[index:index + 1] if isinstance(images_or_dataset, torch.Tensor) \
        else images_or_dataset[index]


def cache_key(vae, images_or_dataset) -> str:
    """What made a latent cache, as JSON: the VAE's digest (``LatentAutoencoder.cache_key``, or a hash of a plain
    module's weights) and the images' (``ImageFolderDataset.content_key``: names, file sizes, image size; the
    bytes of a tensor; for another Dataset its length and its first and last items). A cache whose key differs
    is refused, never mixed or reused."""
    return json.dumps({"vae": _vae_digest(vae), "images": _images_digest(images_or_dataset)}, sort_keys=True)


def _vae_digest(vae) -> str | None:
    from revq_core.autoencoders.adapters import as_latent_autoencoder

    try:
        return as_latent_autoencoder(vae).cache_key()
    except (TypeError, ValueError, AttributeError):
        if not isinstance(vae, torch.nn.Module):
            return None
        digest = hashlib.sha1(type(vae).__name__.encode())
        for name, tensor in sorted(vae.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().reshape(-1)[:64].float().cpu().numpy().tobytes())
        return digest.hexdigest()[:10]


def _images_digest(images_or_dataset) -> str:
    if hasattr(images_or_dataset, "content_key"):
        return images_or_dataset.content_key()
    digest = hashlib.sha1(str(len(images_or_dataset)).encode())
    if isinstance(images_or_dataset, torch.Tensor):
        for part in images_or_dataset.split(4096):
            digest.update(part.contiguous().cpu().numpy().tobytes())
    elif len(images_or_dataset):
        for index in (0, len(images_or_dataset) - 1):
            digest.update(_as_batch(_item(images_or_dataset, index)).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _check_key(path: Path, recorded: str, key: str, what: str) -> None:
    """Raise a ValueError if a cache's recorded key (``cache_key``) is not ``key``; '' (older files) passes."""
    if not recorded or recorded == key:
        return
    saved, now = json.loads(recorded), json.loads(key)
    differs = [name for name in ("vae", "images") if saved.get(name) != now.get(name)]
    reasons = {"vae": "another VAE (or other VAE weights)", "images": "other images"}
    raise ValueError(f"{path} {what} with {' and '.join(reasons[name] for name in differs)} than these "
                     f"({', '.join(f'{name}: {saved.get(name)} vs now {now.get(name)}' for name in differs)}): its "
                     f"latents are not theirs. Delete it (and its .stats.npz / .progress files) or choose another "
                     f"path.")


def _merge_statistics(path: Path, world: int) -> None:
    total = RunningMoments()
    for rank in range(world):
        with np.load(_progress_path(path, rank, world)) as saved:
            if int(saved["count"]):
                total.merge(RunningMoments(int(saved["count"]), saved["mean"], saved["squared_deviations"]))
    with np.load(_progress_path(path, 0, world), allow_pickle=False) as saved:
        key = str(saved["key"]) if "key" in saved else ""
    _save_npz_atomically(_stats_path(path), mean=total.mean.astype(np.float32),
                         var=(total.squared_deviations / total.count).astype(np.float32), count=total.count,
                         rows_digest=_rows_digest(np.load(path, mmap_mode="r")), key=key)
    for rank in range(world):
        _progress_path(path, rank, world).unlink()


def load_latent_cache(path: str | os.PathLike) -> torch.Tensor:
    """The latents (N, C, h, w) float32 of a complete cache, memory-mapped copy-on-write (the file is never
    modified; pages are read when indexed). Raises ValueError naming the file if it is truncated or not a
    .npy array of shape (N, C, h, w)."""
    path = Path(path)
    _require_complete(path)
    try:
        latents = np.load(path, mmap_mode="c", allow_pickle=False)
    except Exception as error:  # numpy raises ValueError, OSError, EOFError, ... depending on the damage
        reason = first_line(error)
        if "pickle" in reason:  # numpy's advice to load it unsafely: not for a latent cache
            reason = "no .npy header"
        raise ValueError(f"{path} is not a readable .npy latent cache ({reason}): it is truncated or not a "
                         f".npy file. Delete it and its .stats.npz, then write it again with encode_to_cache(...)."
                         ) from None
    if latents.ndim != 4:
        raise ValueError(f"{path} holds an array of shape {latents.shape}, not latents (N, C, h, w); was it written "
                         f"by encode_to_cache?")
    return torch.from_numpy(latents)


def latent_cache_statistics(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, population variance), each (C, h, w) float32, computed while the cache was written. A ValueError if
    the statistics file belongs to another cache (its count, shape or sampled rows differ from the .npy's)."""
    path = Path(path)
    _require_complete(path)
    try:
        with np.load(_stats_path(path), allow_pickle=False) as saved:
            mean, var = torch.from_numpy(saved["mean"]), torch.from_numpy(saved["var"])
            count = int(saved["count"]) if "count" in saved else None
            rows = str(saved["rows_digest"]) if "rows_digest" in saved else None
    except Exception as error:  # a truncated or foreign .npz: zipfile, numpy and key errors
        raise ValueError(f"{_stats_path(path)} is not a readable statistics file ({type(error).__name__}): it is "
                         f"truncated or damaged. Delete it and call encode_to_cache(...) again.") from None
    latents = load_latent_cache(path).numpy()
    differences = []
    if count is not None and count != len(latents):
        differences.append(f"it counts {count} latents, the cache holds {len(latents)}")
    if tuple(mean.shape) != tuple(latents.shape[1:]):
        differences.append(f"its mean has shape {tuple(mean.shape)}, the latents {tuple(latents.shape[1:])}")
    if rows is not None and not differences and rows != _rows_digest(latents):  # files written before lack it
        differences.append("the sampled rows it was computed with are not the cache's")
    if differences:
        raise ValueError(f"{_stats_path(path)} belongs to another cache than {path} ({'; '.join(differences)}): "
                         f"delete both and write the cache again with encode_to_cache(...), or put the cache's own "
                         f"statistics file beside it.")
    return mean, var


def _rows_digest(latents: np.ndarray, samples: int = 64) -> str:
    """sha1 of ``samples`` rows spread evenly over a cache (N, C, h, w): ties a statistics file to its cache
    without reading all of it."""
    digest = hashlib.sha1(repr(tuple(latents.shape)).encode())
    for row in np.unique(np.linspace(0, len(latents) - 1, min(samples, len(latents))).astype(np.int64)):
        digest.update(np.ascontiguousarray(latents[row], dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def cache_is_complete(path: str | os.PathLike) -> bool:
    """True if the cache at ``path`` is finished (its statistics file exists): ``load_latent_cache`` reads it."""
    path = Path(path)
    return path.is_file() and _stats_path(path).is_file()


def _require_complete(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"No latent cache at {path}. Write one with encode_to_cache(vae, dataset, {str(path)!r}).")
    if not _stats_path(path).is_file():
        partial = sorted(path.parent.glob(path.name + ".progress-*.npz"))
        if not partial:
            raise RuntimeError(f"{path} has no statistics file {_stats_path(path).name} and no progress file: it was "
                               "not written by encode_to_cache, or its statistics file was moved or deleted. Write "
                               "it with encode_to_cache(vae, dataset, path) (after deleting it), or pass the "
                               "statistics yourself (train(..., normalizer_statistics=(mean, var))).")
        raise RuntimeError(f"{path} is incomplete (its encoding was interrupted: {len(partial)} progress file(s)); "
                           "call encode_to_cache again with the same arguments to resume it.")
