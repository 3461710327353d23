"""Evaluating a token prior: held-out bits per token beside the per-position unigram baseline, a sample grid, and at
paper scale 50,000 samples in the ADM evaluation suite's ``.npz`` with gFID / IS through torch-fidelity.

The **unigram baseline** is what any prior must beat: position t's ids drawn independently from the training
set's frequencies of position t (add-one smoothed), ``unigram_bits_per_token``. A prior that learns nothing of the
dependencies between tokens scores this; the gap is what it learned.

    bits = prior.bits_per_token(held_out)
    baseline = unigram_bits_per_token(train_codes, held_out, prior.codes_per_group)
    images = decode_samples(prior.sample(16, seed=0))                  # (16, 3, H, W) in [-1, 1]
    save_grid(images, "figures/samples.png")
    write_adm_npz(images_uint8, "samples.npz")                          # N x H x W x 3 uint8, key arr_0
    fidelity_metrics("samples_dir/", reference="imagenet_train_stats")   # gFID / IS (torch-fidelity)
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from revq_core.utils.files import atomic_write

# Where torch-fidelity looks for its Inception weights (its own cache, under torch hub's directory).
FIDELITY_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"


def unigram_counts(codes, codes_per_group: int, chunk: int = 65536) -> torch.Tensor:
    """Per-position id counts (T, K) int64 of codes (N, T) (a tensor or a memory-mapped array), in chunks."""
    tokens = codes.shape[1]
    counts = torch.zeros(tokens * codes_per_group, dtype=torch.int64)
    offsets = torch.arange(tokens) * codes_per_group
    for start in range(0, len(codes), chunk):
        part = codes[start:start + chunk]
        part = part.long() if isinstance(part, torch.Tensor) else torch.from_numpy(np.asarray(part).astype(np.int64))
        counts += torch.bincount((part + offsets).flatten(), minlength=tokens * codes_per_group)
    return counts.view(tokens, codes_per_group)


def unigram_bits_per_token(train_codes, held_out: torch.Tensor, codes_per_group: int) -> float:
    """Bits per token of ``held_out`` (M, T) under the per-position unigram of ``train_codes`` (N, T): position t's
    training frequencies of each of the K ids, add-one smoothed (an id never seen costs log2(N + K) bits)."""
    if len(held_out) == 0 or len(train_codes) == 0:
        raise ValueError("unigram_bits_per_token needs training and held-out codes (got an empty set).")
    counts = unigram_counts(train_codes, codes_per_group).double() + 1  # (T, K)
    log_probabilities = (counts / counts.sum(1, keepdim=True)).log2()
    held_out = torch.as_tensor(held_out).long()
    return float(-log_probabilities.gather(1, held_out.T).mean())  # gather: (T, M)


def save_grid(images: torch.Tensor, path: str | os.PathLike, columns: int | None = None) -> Path:
    """Images (N, 3, H, W) in [-1, 1] -> one PNG grid (``columns`` per row, default ~sqrt N), written atomically."""
    from PIL import Image

    count, _, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    pixels = to_uint8(images)  # (N, H, W, 3)
    grid = np.full((rows * height, columns * width, 3), 255, dtype=np.uint8)
    for index, image in enumerate(pixels):
        row, column = divmod(index, columns)
        grid[row * height:(row + 1) * height, column * width:(column + 1) * width] = image
    return atomic_write(path, lambda file: Image.fromarray(grid).save(file, format="PNG"))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images (N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8, rounded (as ``tensor_to_pil``)."""
    unit = (images.detach().float().cpu().clamp(-1, 1) + 1) / 2
    return torch.round(unit * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_adm_npz(images: np.ndarray, path: str | os.PathLike) -> Path:
    """Samples (N, H, W, 3) uint8 -> the ADM evaluation suite's ``.npz`` (key ``arr_0``), written atomically."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"ADM's sample file holds uint8 images (N, H, W, 3), got {images.dtype} {images.shape}.")
    return atomic_write(path, lambda file: np.savez(file, arr_0=images))


@torch.no_grad()
def sample_to_adm_npz(prior, tokenizer, path: str | os.PathLike, num_images: int = 50_000, batch_size: int = 250,
                      num_classes: int | None = None, seed: int = 0, progress: bool = True, **sampling) -> Path:
    """The paper-scale protocol: ``num_images`` samples (classes cycled 0..C-1 for a class-conditional prior, 50 per
    class for ImageNet), decoded with ``tokenizer`` (a ReVQ with its VAE) and written as ADM's ``.npz``."""
    from tqdm.auto import tqdm

    classes = prior.config.num_classes if num_classes is None else num_classes
    parts = []
    for start in tqdm(range(0, num_images, batch_size), desc="sample", disable=not progress):
        count = min(batch_size, num_images - start)
        labels = (torch.arange(start, start + count) % classes) if classes else None
        codes = prior.sample(count, labels, seed=seed + start, **sampling)
        parts.append(to_uint8(tokenizer.decode_codes(codes.to(tokenizer.normalizer.mean.device))))
    return write_adm_npz(np.concatenate(parts), path)


class FidelityUnavailable(RuntimeError):
    """torch-fidelity, or its Inception weights, are not on this machine."""


def fidelity_weights_path() -> Path:
    """Where torch-fidelity expects its Inception weights: ``$TORCH_HOME/hub/checkpoints/`` (torch hub's cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FIDELITY_WEIGHTS


def fidelity_metrics(samples: str | os.PathLike, reference: str | os.PathLike, cuda: bool | None = None) -> dict:
    """gFID and IS of a folder of sample images against a reference folder (or torch-fidelity's registered
    statistics), through torch-fidelity; ``FidelityUnavailable`` naming what to install and where to put the
    Inception weights when they are missing (this function never downloads them)."""
    try:
        import torch_fidelity
    except ImportError:
        raise FidelityUnavailable("gFID / IS need torch-fidelity, which is not installed: "
                                  "`pip install torch-fidelity`, then put its Inception weights at "
                                  f"{fidelity_weights_path()}.") from None
    weights = fidelity_weights_path()
    if not weights.is_file():
        raise FidelityUnavailable(f"torch-fidelity's Inception weights are missing: put {FIDELITY_WEIGHTS} at "
                                  f"{weights} (from torch-fidelity's GitHub releases); nothing is downloaded here.")
    metrics = torch_fidelity.calculate_metrics(input1=str(samples), input2=str(reference),
                                               cuda=torch.cuda.is_available() if cuda is None else cuda,
                                               fid=True, isc=True, verbose=False)
    return {"gfid": metrics["frechet_inception_distance"], "is": metrics["inception_score_mean"],
            "is_std": metrics["inception_score_std"]}


def codes_file_bits_per_token(prior, path: str | os.PathLike, batch_size: int = 64) -> float:
    """Held-out bits per token of a codes file under ``prior``: checked first against the prior's tokenizer (T, K,
    weights sha1: ``TokenPrior.check_codes_meta``), its labels used for a class-conditional prior."""
    from revq_core.data.codes import load_codes, load_labels
    from revq_core.generation.prior import PriorInputError

    codes, _, meta = load_codes(path)
    if len(codes) == 0:
        raise PriorInputError(f"{path} holds no images (N = 0): there is nothing to score.")
    prior.check_codes_meta(meta)
    labels = load_labels(path) if prior.config.num_classes else None
    return prior.bits_per_token(codes, labels, batch_size)
