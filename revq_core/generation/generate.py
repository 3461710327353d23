"""Sampling images: a token prior's codes decoded by its tokenizer, written as PNG files, a grid and the codes file.

    paths = generate_images("samples/", num_images=16, seed=0)           # the shipped prior and tokenizer
    paths = generate_images("samples/", prior="runs/prior/model", class_index=3, cfg_scale=2.0, top_k=100)

Everything is checked before anything is written: the prior's recorded tokenizer sha1 against the tokenizer's
weights, the class against the prior's classes, and the output folder (an existing file there is never replaced
without ``overwrite``).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from revq_core.generation.evaluation import save_grid
from revq_core.generation.prior import PriorInputError, TokenPrior

GRID = "grid.png"
CODES = "codes.npz"


def resolve_class(prior: TokenPrior, class_index: int | str | None) -> int | None:
    """A class index (or a class name the prior knows) -> the index; PriorInputError when out of range or when the
    prior is unconditional."""
    if class_index is None:
        return None
    classes = prior.config.num_classes
    if not classes:
        raise PriorInputError(f"--class {class_index} was given, but this prior is unconditional (it knows no "
                              "classes): leave --class out.")
    if isinstance(class_index, str) and not class_index.lstrip("-").isdigit():
        if class_index not in prior.class_names:
            raise PriorInputError(f"class {class_index!r} is not one of the prior's classes "
                                  f"({', '.join(prior.class_names[:5])}, ...).")
        return prior.class_names.index(class_index)
    index = int(class_index)
    if not 0 <= index < classes:
        raise PriorInputError(f"class index {index} is out of range: the prior knows {classes} classes "
                              f"(0 .. {classes - 1}).")
    return index


def output_paths(out: Path, num_images: int) -> list[Path]:
    return [out / f"sample_{index:05d}.png" for index in range(num_images)] + [out / GRID, out / CODES]


def generate_images(out: str | os.PathLike, prior: str | os.PathLike | TokenPrior | None = None,
                    model: str | None = None, vae: str | None = None, num_images: int = 16,
                    class_index: int | str | None = None, temperature: float = 1.0, top_k: int | None = None,
                    top_p: float | None = None, cfg_scale: float = 1.0, seed: int = 0, batch_size: int = 16,
                    device: str = "cpu", overwrite: bool = False, force: bool = False) -> list[Path]:
    """Sample ``num_images`` images into ``out`` (``sample_NNNNN.png``, ``grid.png``, ``codes.npz`` for
    ``python -m revq_core.detokenize``); returns the written paths. ``model``: the tokenizer, default the one
    the prior records ("embedded": the shipped one). ``force`` decodes with a tokenizer whose weights differ
    from the prior's recorded sha1 (its ids then mean other vectors)."""
    from revq_core.data.codes import save_codes, weights_sha1
    from revq_core.data.images import tensor_to_pil
    from revq_core.generation.pretokenize import tokenizer_meta
    from revq_core.modeling.loading import load_tokenizer

    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"--num-images must be a positive integer, got {num_images!r}.")
    out = Path(out)
    existing = [path for path in output_paths(out, num_images) if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {existing[0].name} (and {len(existing) - 1} more of the files "
                              "this would write): pass --overwrite to replace them, or choose another --out.")
    if not isinstance(prior, TokenPrior):
        prior = TokenPrior.from_pretrained(prior, device)
    label = resolve_class(prior, class_index)
    if cfg_scale != 1.0 and label is None:
        raise PriorInputError("--cfg-scale needs --class (guidance mixes one class's logits with the unconditional).")
    tokenizer, model_name = load_tokenizer(model or prior.tokenizer.get("model"), vae or prior.tokenizer.get("vae"),
                                           device)
    sha1 = weights_sha1(tokenizer.state_dict())
    recorded = prior.tokenizer.get("model_sha1")
    if recorded and recorded != sha1 and not force:
        raise PriorInputError(f"the prior was trained on the codes of tokenizer {prior.tokenizer.get('model')} "
                              f"(weights sha1 {recorded[:12]}), but {model_name} has other weights ({sha1[:12]}): its "
                              "ids would decode into other images. Pass the prior's tokenizer, or --force.")
    if (tokenizer.tokens_per_image, tokenizer.vocabulary_size) != (prior.config.tokens_per_image, prior.codes_per_group):
        raise PriorInputError(f"the tokenizer {model_name} has T = {tokenizer.tokens_per_image}, K = "
                              f"{tokenizer.vocabulary_size}; the prior models T = {prior.config.tokens_per_image}, "
                              f"K = {prior.codes_per_group}.")
    codes, images = [], []
    for start in range(0, num_images, batch_size):
        count = min(batch_size, num_images - start)
        labels = None if label is None else torch.full((count,), label)
        part = prior.sample(count, labels, temperature=temperature, top_k=top_k, top_p=top_p, cfg_scale=cfg_scale,
                            seed=seed + start)
        codes.append(part.cpu())
        images.append(tokenizer.decode_codes(part.to(device)).cpu())
    codes, images = torch.cat(codes), torch.cat(images)
    out.mkdir(parents=True, exist_ok=True)
    paths = output_paths(out, num_images)
    for path, image in zip(paths, images):
        tensor_to_pil(image).save(path)
    save_grid(images, out / GRID)
    meta = tokenizer_meta(tokenizer, model_name, vae or prior.tokenizer.get("vae"))
    for key in ("format", "revq_version", "class_names"):
        meta.pop(key)
    save_codes(out / CODES, codes, [path.stem for path in paths[:num_images]],
               labels=None if label is None else torch.full((num_images,), label), **meta)
    return paths
