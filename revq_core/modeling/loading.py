"""Loading a model by name: ``load_model`` (a directory written by ``save_pretrained``, a hub id, or one of the
authors' released models, converted on the fly) and ``load_tokenizer`` (the same, with its VAE attached; the
shipped tokenizer by default), as the command lines take them.

    model = load_model("runs/512T/model")                       # or "AndyRaoTHU/revq-512T", or their ckpt.pth
    tokenizer, name = load_tokenizer()                          # data/embedded_tokenizer + the embedded VAE
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from revq_core.autoencoders.embedded import DEFAULT_EMBEDDED_VAE
from revq_core.autoencoders.loading import load_vae
from revq_core.modeling.authors_format import load_authors_model
from revq_core.modeling.pretrained import AUTHORS_CHECKPOINT, AUTHORS_MODELS, AUTHORS_PREPROCESSOR_URL
from revq_core.modeling.revq import ReVQ
from revq_core.utils.checks import check_device
from revq_core.utils.files import REPO_ROOT

# The tokenizer shipped with the repository (trained on the embedded photos): the default model.
EMBEDDED_TOKENIZER_DIR = REPO_ROOT / "data" / "embedded_tokenizer"


def load_model(name_or_path: str, preprocessor: str | None = None) -> ReVQ:
    """A ReVQ: one of the authors' released models (their hub ids, a local copy of their hub repository, or their
    ckpt.pth; converted by ``authors_format.load_authors_model`` with their normalization statistics from
    ``preprocessor``, default their repository's file) or one written by ``save_pretrained`` (a directory or a
    hub id)."""
    path = Path(name_or_path).expanduser()
    theirs = (name_or_path in AUTHORS_MODELS or path.name == AUTHORS_CHECKPOINT
              or (path.is_dir() and (path / AUTHORS_CHECKPOINT).is_file() and not (path / "config.json").is_file()))
    if theirs:
        return load_authors_model(name_or_path, preprocessor=preprocessor or AUTHORS_PREPROCESSOR_URL)
    return ReVQ.from_pretrained(name_or_path)


def load_tokenizer(model: str | os.PathLike | None = None, vae: str | os.PathLike | None = None,
                   device: str | torch.device = "cpu") -> tuple[ReVQ, str]:
    """(ReVQ with its VAE attached, in eval mode, the model's name) for the command lines.

    model: None or "embedded" for the shipped tokenizer (``data/embedded_tokenizer``), a directory written
    by ``save_pretrained``, a hub id, or one of the authors' released models (converted on the fly).
    vae: None for the VAE the model records. Raises FileNotFoundError if the shipped tokenizer is missing.
    """
    check_device(device)  # a clear line for 'cuda' without CUDA, before any loading
    model_name = "embedded" if model in (None, "embedded") else str(model)
    if model_name == "embedded":
        if not (EMBEDDED_TOKENIZER_DIR / "config.json").is_file():
            raise FileNotFoundError(f"the shipped tokenizer is missing from {EMBEDDED_TOKENIZER_DIR}; restore it "
                                    f"with `git checkout -- data/embedded_tokenizer`, or pass --model DIR.")
        model = EMBEDDED_TOKENIZER_DIR
    revq = load_model(str(model)).to(device).eval()
    revq.attach_vae(load_vae(vae or revq.vae_name or DEFAULT_EMBEDDED_VAE, device=device))
    return revq, model_name


def same_vae(first: str | os.PathLike | None, second: str | os.PathLike | None) -> bool:
    """Whether two VAE names mean the same VAE: equal names (None is the default embedded VAE), or the same
    existing directory."""
    first, second = str(first or DEFAULT_EMBEDDED_VAE), str(second or DEFAULT_EMBEDDED_VAE)
    if first == second:
        return True
    one, other = Path(first).expanduser(), Path(second).expanduser()
    return one.is_dir() and other.is_dir() and one.resolve() == other.resolve()


def check_model_vae(model: ReVQ, vae: str | os.PathLike | None, force: bool = False) -> None:
    """Raise a ValueError if ``vae`` (a name, path or hub id; None: the model's own) is not the VAE the model
    records (``model.vae_name``, config.json's ``vae``), unless ``force``: another VAE's latents, even of the
    same shape, are other vectors, and its images another size."""
    if force or vae is None or model.vae_name is None or same_vae(model.vae_name, vae):
        return
    raise ValueError(f"the model was trained on the latents of the VAE {model.vae_name!r}, but --vae {vae} was "
                     f"given: another VAE's latents mean other images. Pass --vae {model.vae_name} (or leave --vae "
                     f"out), or --force to use {vae} anyway.")
