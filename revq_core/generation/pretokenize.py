"""Pretokenization: a data set -> the token ids (and class labels) a prior trains on, written once.

Two sources, one output (the codes file of ``revq_core.data.codes``, either layout):

- **cached latents** (``pretokenize_latents``): a latent cache (``.npy`` of ``encode_to_cache`` or a
  safetensors file, or a tensor) quantized with ``ReVQ.tokenize`` batch by batch: no second VAE pass;
- **an image folder** (``pretokenize_folder``): ImageNet layout ``root/<class>/<image>``
  (``ImageFolderDataset``), encoded with the tokenizer's VAE; the class folders become the labels and their
  names ``class_names``.

An output path ending in ``.npz`` is written whole at the end (small sets); any other path is the memory-mapped
directory layout, written batch by batch with a progress marker (an interrupted run resumes where it stopped)
and, inside a ``torch.distributed`` process group (torchrun), sharded: each rank its contiguous share of rows,
rank 0 writing ``meta.json`` last. Both store the tokenizer's codebooks (``codebooks.safetensors``) so that the
prior needs no tokenizer code to train:

    pretokenize_latents(embedded_latents("train"), "runs/ids_train")              # the shipped tokenizer
    pretokenize_folder("imagenet/train", "ids/imagenet_train", model="runs/256T/model", num_workers=8)
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from revq_core.data.codes import CodesFileError, CodesWriter, codes_meta, save_codes
from revq_core.utils import distributed

FLUSH_EVERY = 16  # batches between progress records (the work an interruption can lose)


def tokenizer_meta(revq, model_name: str, vae: str | None = None, class_names: Sequence[str] = ()) -> dict:
    """The codes-file meta fields of a loaded tokenizer (``modeling.loading.load_tokenizer``)."""
    from revq_core.autoencoders.embedded import DEFAULT_EMBEDDED_VAE
    from revq_core.data.codes import weights_sha1

    factor = getattr(getattr(revq, "vae", None), "downsampling_factor", None)
    size = revq.vae.image_size(revq.latent_shape) if factor else None
    return codes_meta(model=model_name, model_sha1=weights_sha1(revq.state_dict()),
                      tokens_per_image=revq.tokens_per_image, codes_per_group=revq.vocabulary_size,
                      quantizer=revq.config.quantizer, bits_per_image=revq.bits_per_image,
                      latent_shape=revq.latent_shape, image_size=size,
                      vae=str(vae or revq.vae_name or DEFAULT_EMBEDDED_VAE), class_names=class_names)


def tokenizer_codebooks(revq) -> torch.Tensor:
    """The tokenizer's codebook vectors (G, K, D) float32 (its quantizer's ``codebook``)."""
    codebook = getattr(revq.quantizer, "codebook", None)
    if codebook is None or codebook.ndim != 3:
        raise ValueError(f"the tokenizer's quantizer ({type(revq.quantizer).__name__}) has no (G, K, D) codebook: "
                         "the token prior embeds ids through their code vectors.")
    return codebook.detach().float().cpu().clone()


def _write(out: Path, count: int, meta: dict, codebooks: torch.Tensor, batches, names=None,
           progress: bool = True) -> dict:
    """Drive ``batches(start, stop)`` -> iterator of (ids (n, T), labels (n,)) into ``out`` (either layout)."""
    if count == 0:
        raise CodesFileError("there are no images to tokenize (an empty data set); nothing was written.")
    if out.suffix == ".npz":
        if distributed.is_distributed():
            raise ValueError("an .npz output is written by one process; under torchrun pass a directory as --out.")
        ids, labels = zip(*batches(0, count))
        meta_fields = {key: meta[key] for key in meta if key not in ("format", "revq_version")}
        written = save_codes(out, torch.cat([torch.as_tensor(part) for part in ids]),
                             names or [f"{index:08d}" for index in range(count)],
                             labels=torch.cat([torch.as_tensor(part) for part in labels]), **meta_fields)
        from safetensors.torch import save_file
        save_file({"codebooks": codebooks.contiguous()}, str(out.with_name(out.stem + ".codebooks.safetensors")))
        return {**written, "num_images": count}
    if (out / "meta.json").is_file():
        raise FileExistsError(f"{out} already holds finished codes (meta.json); delete it or choose another --out.")
    writer = CodesWriter(out, count, meta, distributed.rank(), distributed.world_size())
    if distributed.is_main_process():
        writer.create()
    distributed.barrier()  # the arrays exist for every rank
    writer.open()
    bar = tqdm(total=writer.last_row - writer.first_row, initial=writer.next_row - writer.first_row,
               desc="pretokenize", unit="image", disable=not (progress and distributed.is_main_process()))
    start = writer.next_row
    for index, (ids, labels) in enumerate(batches(writer.next_row, writer.last_row), start=1):
        writer.write(start, ids, labels)
        start += len(ids)
        bar.update(len(ids))
        if index % FLUSH_EVERY == 0:
            writer.flush()
    bar.close()
    writer.finish()
    distributed.barrier()  # every share is written
    result = writer.write_meta(codebooks, names) if distributed.is_main_process() else {**meta, "num_images": count}
    distributed.barrier()
    return result


def pretokenize_latents(latents: torch.Tensor | str | os.PathLike, out: str | os.PathLike, model=None,
                        labels: torch.Tensor | None = None, class_names: Sequence[str] = (),
                        batch_size: int = 256, device: str = "cpu", progress: bool = True) -> dict:
    """Token ids of cached VAE latents (N, C, h, w) (a tensor, or a cache path for ``read_latents``) -> ``out``.

    ``model``: a loaded ReVQ, or a name for ``load_tokenizer`` (None: the shipped tokenizer); ``labels`` (N,)
    optional class indices. Returns the meta written (plus ``num_images``)."""
    from revq_core.data.latents import read_latents

    if not isinstance(latents, torch.Tensor):
        latents = read_latents(latents)
    revq, model_name = _tokenizer(model, device)
    if labels is not None and len(labels) != len(latents):
        raise ValueError(f"labels has {len(labels)} entries for {len(latents)} latents.")
    meta = tokenizer_meta(revq, model_name, class_names=class_names)

    def batches(first, last):
        for start in range(first, last, batch_size):
            stop = min(start + batch_size, last)
            ids = revq.tokenize(latents[start:stop].to(device).float()).cpu()
            yield ids, (torch.full((stop - start,), -1) if labels is None else torch.as_tensor(labels[start:stop]))

    return _write(Path(out), len(latents), meta, tokenizer_codebooks(revq), batches, progress=progress)


def pretokenize_folder(root: str | os.PathLike, out: str | os.PathLike, model=None, vae: str | None = None,
                       batch_size: int = 32, num_workers: int = 0, device: str = "cpu",
                       progress: bool = True) -> dict:
    """Token ids and class labels of an ImageNet-layout folder (``root/<class>/<image>``; a flat folder: label 0)
    -> ``out``, images resized and centre-cropped to the tokenizer's image size."""
    from revq_core.data.images import ImageFolderDataset

    revq, model_name = _tokenizer(model, device, vae)
    size = revq.vae.image_size(revq.latent_shape)
    dataset = ImageFolderDataset(root, size=size)
    meta = tokenizer_meta(revq, model_name, vae, class_names=dataset.classes)

    def batches(first, last):
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(first, last)),
                                             batch_size=batch_size, num_workers=num_workers)
        for images, labels in loader:
            yield revq.encode_images(images.to(device)).cpu(), labels

    names = [str(path.relative_to(dataset.root)) for path, _ in dataset.samples]
    return _write(Path(out), len(dataset), meta, tokenizer_codebooks(revq), batches, names, progress)


def _tokenizer(model, device: str, vae: str | None = None):
    if model is not None and not isinstance(model, (str, os.PathLike)):
        return model.to(device).eval(), getattr(model, "name_or_path", "in-memory model")
    from revq_core.modeling.loading import load_tokenizer

    return load_tokenizer(model, vae, device)


def codes_array(codes: np.ndarray) -> torch.Tensor:
    """Stored ids (uint16 or int32, possibly memory-mapped) -> int64 tensor (a copy)."""
    return torch.from_numpy(np.asarray(codes).astype(np.int64))
