"""Import a checkpoint of the authors' released ReVQ models (github.com/Neur-IO/ReVQ) as a ``ReVQ``.

Their layout, learned from their public repository (no code of theirs is used here):
- ``ckpt.pth``: a dict with ``"quantizer"`` and ``"decoder"`` state dicts (plus optimizer/scheduler
  states, ignored here).
  - quantizer: ``embeddings`` (G, K, D) codebooks, token t of the (B, T, D) channel-split view uses
    codebook t % G (as ours); ``index_offset`` (G,) and ``count`` (G, K) are bookkeeping, dropped.
  - decoder (the rectifier): a one-stage DC-AE decoder built from diffusers ``EfficientViTBlock``s,
    keys ``conv_in.*``, ``up_blocks.0.<i>.*``, ``norm_out.*``, ``conv_out.*``: the same keys as
    ``revq_core.modeling.rectifiers.ViTRectifier``, so they map one to one onto ``rectifier.*``.
- ``preprocessor.pth``: ``mean`` and ``std`` of shape (C*H*W,) = (2048,), the per-dimension latent
  statistics (std is the square root of the variance); they become ``normalizer.mean/std`` (C, H, W).

- Their Hugging Face Hub repositories (``AUTHORS_MODELS``; it and the other ``AUTHORS_*`` names are defined in
  ``modeling.pretrained`` and importable from here) each hold ``ckpt.pth`` beside the training yaml
  (``512T_NC=16384.yaml``, ...); the architecture is read off the checkpoint's shapes, so only ``ckpt.pth``
  is fetched. A DDP run saves its keys with a ``module.`` prefix, which is dropped.

Their released models by name (downloaded with huggingface_hub, converted on the fly); a local copy of a
hub repository (``hf download AndyRaoTHU/revq-512T --local-dir revq-512T``) or their
``ckpt.pth`` itself works the same way:

    model = load_authors_model("AndyRaoTHU/revq-512T", preprocessor=AUTHORS_PREPROCESSOR_URL)
    model = load_authors_model("revq-512T/", statistics=latent_cache_statistics("latents/train.npy"))
    python -m revq_core.convert AndyRaoTHU/revq-512T out_dir --preprocessor preprocessor.pth   # the command line
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import pickle
import warnings
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse

import torch

from revq_core.modeling.pretrained import (  # noqa: F401 (AUTHORS_PREPROCESSOR_URL: importable from here)
    AUTHORS_CHECKPOINT,
    AUTHORS_MODELS,
    AUTHORS_PREPROCESSOR_URL,
    AUTHORS_VAE,
    is_hub_id,
)
from revq_core.modeling.revq import ReVQ

LATENT_SHAPE = (32, 8, 8)  # DC-AE f32c32 at 256 x 256, the only latent the authors release models for
IGNORED_QUANTIZER_KEYS = ("index_offset", "count")  # offsets into the flat codebook, usage counts
DDP_PREFIX = "module."  # keys of a state dict saved from a DistributedDataParallel wrapper
EXPECTED_CONTENTS = {  # what _load says each file should hold
    "checkpoint": "a dict {'quantizer': {'embeddings': (G, K, D) tensor, ...}, 'decoder': {rectifier tensors}, ...} "
                  "(their ckpt.pth)",
    "preprocessor": "a dict {'mean': (2048,) tensor, 'std': (2048,) tensor} (their preprocessor.pth)",
}


class CheckpointConversionError(ValueError):
    """The state dict does not have the authors' layout (missing/unexpected keys or wrong shapes)."""


class AuthorsModelUnavailable(OSError):
    """The authors' files could not be fetched (offline, a typo, no such file); the message says what was
    tried and how to point at a local copy."""


def _load(source, what: str) -> dict:
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"{what} file {os.fspath(source)!r} does not exist.")
        try:  # tensors and plain containers only: a checkpoint never needs code to run when it is read
            state = _torch_load(source)
        except Exception as error:  # not a torch.save file, truncated, or pickled objects other than tensors
            reason = ("it holds Python objects other than tensors and plain containers, which are not read, for "
                      "safety" if isinstance(error, pickle.UnpicklingError) else
                      f"it is not a torch.save file or is truncated: {type(error).__name__}")
            raise CheckpointConversionError(
                f"{what} file {os.fspath(source)!r} is not a checkpoint in the authors' format ({reason}); "
                f"expected a torch.save file of {EXPECTED_CONTENTS[what]}.") from None
        if not isinstance(state, Mapping):
            raise CheckpointConversionError(f"{what} file {os.fspath(source)!r} holds a {type(state).__name__}, "
                                            "not a state dict.")
        return dict(state)
    raise TypeError(f"{what} must be a state dict or a path, got {type(source).__name__}.")


def _torch_load(path) -> object:
    """``torch.load`` of a file on the CPU (their files hold CUDA tensors), tensors and plain containers only,
    memory-mapped where the file allows it: tensors that are never used (their optimizer state) are never read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:  # files in torch's legacy (pre-zip) format cannot be memory-mapped
        if "mmap" not in str(error):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def split_authors_state(checkpoint: Mapping) -> tuple[dict, dict]:
    """(quantizer state, decoder state) from their ``ckpt.pth`` dict, nested or with 'quantizer.'/'decoder.' prefixes."""
    if "quantizer" in checkpoint and "decoder" in checkpoint:
        quantizer, decoder = dict(checkpoint["quantizer"]), dict(checkpoint["decoder"])
    else:
        quantizer = {key[len("quantizer."):]: value for key, value in checkpoint.items()
                     if key.startswith("quantizer.")}
        decoder = {key[len("decoder."):]: value for key, value in checkpoint.items() if key.startswith("decoder.")}
    if not quantizer:
        raise CheckpointConversionError(
            f"not a ReVQ checkpoint of the authors' layout: expected the keys 'quantizer' and 'decoder' "
            f"(or 'quantizer.*'/'decoder.*'), got {sorted(checkpoint)[:10]}{' ...' if len(checkpoint) > 10 else ''}.")
    return _without_ddp_prefix(quantizer), _without_ddp_prefix(decoder)


def _without_ddp_prefix(state: dict) -> dict:
    """A state dict saved from a DistributedDataParallel wrapper ('module.' before every key) without it."""
    if state and all(key.startswith(DDP_PREFIX) for key in state):
        return {key[len(DDP_PREFIX):]: value for key, value in state.items()}
    return state


def convert_authors_checkpoint(checkpoint, preprocessor=None, vae: str | None = None) -> ReVQ:
    """Build a ``ReVQ`` holding the authors' weights.

    Args:
        checkpoint: their ``ckpt.pth`` (path or loaded dict): ``{"quantizer": {"embeddings": (G, K, D), ...},
            "decoder": ViT rectifier state}``. An empty decoder state means no rectifier (identity).
        preprocessor: their ``preprocessor.pth`` (path or dict with ``mean``/``std`` of shape (2048,)).
            Without it the normalizer stays the identity (mean 0, std 1) and a warning says so.
        vae: recorded as the model's VAE name (e.g. "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers").
    Raises:
        CheckpointConversionError naming missing/unexpected keys and mismatched shapes.
    """
    quantizer_state, decoder_state = split_authors_state(_load(checkpoint, "checkpoint"))
    embeddings = _codebook(quantizer_state)
    num_groups, codes_per_group, code_dim = embeddings.shape
    numbers_per_latent = math.prod(LATENT_SHAPE)
    if numbers_per_latent % code_dim or (numbers_per_latent // code_dim) % num_groups:
        raise CheckpointConversionError(f"quantizer.embeddings of shape {tuple(embeddings.shape)} (G, K, D) does not "
                                        f"fit a {LATENT_SHAPE} latent: D must divide {numbers_per_latent} and G the "
                                        "token count.")
    rectifier, width, depth = _rectifier_architecture(decoder_state)
    model = ReVQ(latent_shape=LATENT_SHAPE, tokens_per_image=numbers_per_latent // code_dim,
                 codes_per_group=codes_per_group, num_groups=num_groups, split="channel", rectifier=rectifier,
                 rectifier_width=width, rectifier_depth=depth, vae=vae)
    state = {"quantizer.codebook": embeddings}
    state.update({f"rectifier.{key}": value for key, value in decoder_state.items()})
    if preprocessor is not None:
        state.update(_normalizer_state(_load(preprocessor, "preprocessor")))
    else:
        warnings.warn("no preprocessor given: the normalizer is left at mean 0, std 1; pass the authors' "
                      "preprocessor.pth for real latents.", UserWarning, stacklevel=2)
        state.update({f"normalizer.{key}": value for key, value in model.normalizer.state_dict().items()})
    _check_against(model, state)
    model.load_state_dict({key: value.float() for key, value in state.items()})
    return model.eval()


def load_authors_model(name_or_path: str | os.PathLike, preprocessor=None, statistics=None,
                       vae: str | None = AUTHORS_VAE, revision: str | None = None,
                       cache_dir: str | os.PathLike | None = None) -> ReVQ:
    """One of the authors' released tokenizers as a ``ReVQ``, converted from their format on the fly.

    Args:
        name_or_path: a Hugging Face Hub id of theirs (``AUTHORS_MODELS``, e.g. "AndyRaoTHU/revq-512T"), whose
            ``ckpt.pth`` is downloaded with huggingface_hub (or read from its cache: ``HF_HOME``, ``cache_dir``);
            a local directory in their layout (a copy of the hub repository, holding ``ckpt.pth``); or their
            ``ckpt.pth`` itself.
        preprocessor: their normalization statistics ``preprocessor.pth`` (``mean``/``std`` of shape (2048,)):
            a path, or a URL (e.g. ``AUTHORS_PREPROCESSOR_URL``) downloaded once into torch's hub directory.
        statistics: instead, (mean, var) of the training latents, each (32, 8, 8) or (2048,), e.g.
            ``revq_core.data.latents.latent_cache_statistics("latents/train.npy")``.
            With neither, the normalizer stays the identity and a warning says so.
        vae: the VAE name recorded in the model (their models quantize DC-AE sana-1.1 latents).
        revision, cache_dir: passed to ``huggingface_hub.hf_hub_download``.
    Raises:
        AuthorsModelUnavailable (an OSError): the checkpoint or preprocessor could not be fetched (offline, a
            typo); the one-line message says what was tried and how to point at a local copy.
        FileNotFoundError: a local path that does not hold their checkpoint.
        CheckpointConversionError: the checkpoint is not in their layout or has the wrong shapes.
    """
    if preprocessor is not None and statistics is not None:
        raise ValueError("pass preprocessor= (their preprocessor.pth) or statistics= ((mean, var) of your latents), "
                         "not both.")
    checkpoint_file = _authors_checkpoint_file(name_or_path, revision, cache_dir)
    if isinstance(preprocessor, str) and urlparse(preprocessor).scheme in ("http", "https"):
        preprocessor = _downloaded(preprocessor)
    with warnings.catch_warnings():
        if statistics is not None:  # the identity normalizer is replaced below
            warnings.filterwarnings("ignore", message="no preprocessor given")
        try:
            model = convert_authors_checkpoint(checkpoint_file, preprocessor, vae=vae)
        except CheckpointConversionError as error:
            raise CheckpointConversionError(f"cannot convert the authors' model {os.fspath(name_or_path)!r} "
                                            f"({checkpoint_file}): {error}") from None
    if statistics is not None:
        mean, var = statistics
        model.normalizer.set_statistics(torch.as_tensor(mean).float(), torch.as_tensor(var).float())
    return model


def _authors_checkpoint_file(name_or_path, revision: str | None, cache_dir) -> Path:
    """The local path of their ``ckpt.pth`` for a file, a directory in their layout or a hub id (downloaded)."""
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    hub_id = name if is_hub_id(name) else "<id>"
    local_copy = (f"download it where there is network (hf download {hub_id} --local-dir <dir>) and pass "
                  f"load_authors_model('<dir>', ...); their models: {', '.join(AUTHORS_MODELS)}")
    if path.is_file():
        return path
    if path.is_dir():
        if (path / AUTHORS_CHECKPOINT).is_file():
            return path / AUTHORS_CHECKPOINT
        found = sorted(child.name for child in path.iterdir())[:8]
        hint = (" It holds a model of this project's format: load it with ReVQ.from_pretrained."
                if (path / "config.json").is_file() else "")
        raise FileNotFoundError(f"{path} holds no {AUTHORS_CHECKPOINT} (found {found}): a directory in the authors' "
                                f"layout is a copy of their hub repository, with their {AUTHORS_CHECKPOINT}.{hint}")
    if hub_id == "<id>":
        raise FileNotFoundError(f"{name!r} is not a file, a directory or a Hugging Face Hub id: {local_copy}.")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    url = f"https://huggingface.co/{name}/resolve/{revision or 'main'}/{AUTHORS_CHECKPOINT}"
    hub_logger = logging.getLogger("huggingface_hub")  # its retry warnings would bury the one-line error below
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        return Path(hf_hub_download(name, AUTHORS_CHECKPOINT, revision=revision, cache_dir=cache_dir))
    except LocalEntryNotFoundError:  # offline, or the Hub unreachable, and no copy in the cache
        reason = "the Hub cannot be reached (offline?) and the Hugging Face cache has no copy"
    except RepositoryNotFoundError:
        reason = "no such repository on the Hub (a typo?)"
    except RevisionNotFoundError:
        reason = f"the repository has no revision {revision!r}"
    except EntryNotFoundError:
        reason = f"the repository holds no {AUTHORS_CHECKPOINT}"
    except Exception as error:  # HTTP errors, a full disk, ...
        reason = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"
    finally:
        hub_logger.setLevel(level)
    raise AuthorsModelUnavailable(f"could not get the authors' model {name!r}: tried {url} and the Hugging Face "
                                  f"cache; {reason}. Check the id, or {local_copy}.")


def _downloaded(url: str) -> Path:
    """A file at ``url``, downloaded once into ``<torch hub dir>/revq/<hash of url>/`` (``torch.hub.get_dir``)."""
    target = (Path(torch.hub.get_dir()) / "revq" / hashlib.sha256(url.encode()).hexdigest()[:16]
              / (Path(urlparse(url).path).name or "download"))
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(target), progress=False)
        except Exception as error:  # URLError (offline), HTTPError (404), ...
            reason = (str(error).strip().splitlines() or [""])[0]
            raise AuthorsModelUnavailable(f"could not download {url} ({type(error).__name__}: {reason}); download it "
                                          f"where there is network and pass its path, e.g. "
                                          f"preprocessor='preprocessor.pth'.") from None
    return target


def _codebook(quantizer_state: dict) -> torch.Tensor:
    unexpected = sorted(set(quantizer_state) - {"embeddings", *IGNORED_QUANTIZER_KEYS})
    if "embeddings" not in quantizer_state or unexpected:
        raise CheckpointConversionError(
            f"quantizer state: missing keys {[] if 'embeddings' in quantizer_state else ['embeddings']}, unexpected "
            f"keys {unexpected}; expected 'embeddings' (G, K, D) and optionally {list(IGNORED_QUANTIZER_KEYS)}.")
    embeddings = quantizer_state["embeddings"]
    if embeddings.ndim != 3:
        raise CheckpointConversionError(f"quantizer.embeddings must have shape (G, K, D), got {tuple(embeddings.shape)}.")
    return embeddings


def _rectifier_architecture(decoder_state: dict) -> tuple[str, int, int]:
    """(kind, width, depth) read off the decoder keys: width from conv_in, depth from up_blocks.0.<i>."""
    if not decoder_state:
        return "identity", 512, 1
    if "conv_in.weight" not in decoder_state:
        raise CheckpointConversionError(f"decoder state has no 'conv_in.weight': not a DC-AE rectifier (keys: "
                                        f"{sorted(decoder_state)[:8]} ...).")
    width = int(decoder_state["conv_in.weight"].shape[0])
    layers = {int(key.split(".")[2]) for key in decoder_state if key.startswith("up_blocks.0.")}
    if not layers:
        raise CheckpointConversionError("decoder state has no 'up_blocks.0.*' keys: not a one-stage DC-AE rectifier.")
    if not any(".attn." in key for key in decoder_state):
        raise CheckpointConversionError("decoder blocks are not EfficientViTBlocks (no '.attn.' keys): only the "
                                        "authors' ViT rectifier (block_type EfficientViTBlock) can be imported.")
    return "vit", width, max(layers) + 1


def _normalizer_state(preprocessor_state: dict) -> dict:
    missing = sorted({"mean", "std"} - set(preprocessor_state))
    unexpected = sorted(set(preprocessor_state) - {"mean", "std"})
    if missing or unexpected:
        raise CheckpointConversionError(f"preprocessor state: missing keys {missing}, unexpected keys {unexpected}; "
                                        "expected 'mean' and 'std' of shape (2048,).")
    numbers = math.prod(LATENT_SHAPE)
    shapes = {key: tuple(preprocessor_state[key].shape) for key in ("mean", "std")}
    if any(math.prod(shape) != numbers for shape in shapes.values()):
        raise CheckpointConversionError(f"preprocessor mean/std must hold {numbers} numbers each, got shapes {shapes}.")
    return {f"normalizer.{key}": preprocessor_state[key].reshape(LATENT_SHAPE) for key in ("mean", "std")}


def _check_against(model: ReVQ, state: dict) -> None:
    """Compare key sets and shapes with the model the checkpoint describes; one error naming every problem."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{key}: checkpoint {tuple(state[key].shape)} vs model {expected[key]}"
                  for key in sorted(set(expected) & set(state)) if tuple(state[key].shape) != expected[key]]
    if missing or unexpected or mismatched:
        parts = [f"missing keys {missing}" if missing else "", f"unexpected keys {unexpected}" if unexpected else "",
                 f"shape mismatches [{'; '.join(mismatched)}]" if mismatched else ""]
        raise CheckpointConversionError("the authors' checkpoint does not match the ReVQ it describes (keys named "
                                        "as ReVQ's, 'rectifier.*' = their 'decoder.*'): "
                                        + ", ".join(part for part in parts if part) + ".")
