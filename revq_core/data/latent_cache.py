"""An ImageNet-scale latent cache: a memory-mapped .npy file, written resumably, statistics in the same pass.

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

import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from revq_core.autoencoders.base import encode
from revq_core.checks import first_line
from revq_core.data.files import atomic_write
from revq_core.data.moments import RunningMoments
from revq_core.training import distributed


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
        vae: a frozen VAE as for ``revq_core.autoencoders.base.encode`` (``vae.encode(x).latent``).
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
    if _stats_path(path).is_file():
        return path
    count = len(images_or_dataset)
    if count == 0:
        raise ValueError("No images to encode: the tensor or dataset is empty.")
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
            _record_progress(cache, progress_path, row, moments)
    _record_progress(cache, progress_path, row, moments)  # also for a share with no rows
    del cache
    distributed.barrier()  # every share is written
    if rank == 0:
        _merge_statistics(path, world)
    distributed.barrier()
    return path


def _record_progress(cache: np.memmap, progress_path: Path, next_row: int, moments: RunningMoments) -> None:
    """Flush the rows written so far, then record them and their statistics (atomically, in that order)."""
    cache.flush()
    _save_npz_atomically(progress_path, next_row=next_row, count=moments.count,
                         mean=moments.mean if moments.count else np.zeros(0),
                         squared_deviations=moments.squared_deviations if moments.count else np.zeros(0))


def _item(images_or_dataset, index: int):
    return images_or_dataset[index:index + 1] if isinstance(images_or_dataset, torch.Tensor) \
        else images_or_dataset[index]


def _as_batch(batch) -> torch.Tensor:
    """Images of a batch (n, 3, H, W) from a tensor, a DataLoader's (images, labels) or one dataset item."""
    images = batch[0] if isinstance(batch, (tuple, list)) else batch
    return images[None] if images.ndim == 3 else images


def _merge_statistics(path: Path, world: int) -> None:
    total = RunningMoments()
    for rank in range(world):
        with np.load(_progress_path(path, rank, world)) as saved:
            if int(saved["count"]):
                total.merge(RunningMoments(int(saved["count"]), saved["mean"], saved["squared_deviations"]))
    _save_npz_atomically(_stats_path(path), mean=total.mean.astype(np.float32),
                         var=(total.squared_deviations / total.count).astype(np.float32), count=total.count)
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
    """(mean, population variance), each (C, h, w) float32, computed while the cache was written."""
    path = Path(path)
    _require_complete(path)
    try:
        with np.load(_stats_path(path), allow_pickle=False) as saved:
            return torch.from_numpy(saved["mean"]), torch.from_numpy(saved["var"])
    except Exception as error:  # a truncated or foreign .npz: zipfile, numpy and key errors
        raise ValueError(f"{_stats_path(path)} is not a readable statistics file ({type(error).__name__}): it is "
                         f"truncated or damaged. Delete it and call encode_to_cache(...) again.") from None


def cache_is_complete(path: str | os.PathLike) -> bool:
    """True if the cache at ``path`` is finished (its statistics file exists): ``load_latent_cache`` reads it."""
    path = Path(path)
    return path.is_file() and _stats_path(path).is_file()


def _require_complete(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"No latent cache at {path}. Write one with encode_to_cache(vae, dataset, {str(path)!r}).")
    if not _stats_path(path).is_file():
        partial = sorted(path.parent.glob(path.name + ".progress-*.npz"))
        raise RuntimeError(f"{path} is incomplete (its encoding was interrupted: {len(partial)} progress file(s)); "
                           "call encode_to_cache again with the same arguments to resume it.")
