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
    model_name = "embedded" if model in (None, "embedded") else str(model)
    if model_name == "embedded":
        if not (EMBEDDED_TOKENIZER_DIR / "config.json").is_file():
            raise FileNotFoundError(f"the shipped tokenizer is missing from {EMBEDDED_TOKENIZER_DIR}; restore it "
                                    f"with `git checkout -- data/embedded_tokenizer`, or pass --model DIR.")
        model = EMBEDDED_TOKENIZER_DIR
    revq = load_model(str(model)).to(device).eval()
    revq.attach_vae(load_vae(vae or revq.vae_name or DEFAULT_EMBEDDED_VAE, device=device))
    return revq, model_name
