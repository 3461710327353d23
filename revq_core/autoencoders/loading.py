"""``load_vae``: a frozen VAE by name, directory or hub id, as a ``LatentAutoencoder``.

    load_vae()                                                  # the embedded VAE v2 (data/embedded_vae_v2), offline
    load_vae("embedded")                                        # the first embedded VAE, v1 (data/embedded_vae)
    load_vae("mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers")     # the paper's DC-AE, from the Hugging Face cache
    load_vae("/path/to/dir")                                    # a save_pretrained / hf download directory
    load_vae("stabilityai/sdxl-vae")                            # any diffusers AutoencoderKL (beyond the paper)

The family (``AutoencoderDC`` or ``AutoencoderKL``) is read from the directory's ``config.json``
(``_class_name``); a pipeline repository or directory (SD, FLUX) is read from its ``vae/`` subfolder.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from revq_core.autoencoders.adapters import as_latent_autoencoder
from revq_core.autoencoders.base import LatentAutoencoder
from revq_core.autoencoders.dc_ae import DC_AE_HUB_IDS
from revq_core.autoencoders.embedded import (DEFAULT_EMBEDDED_VAE, EMBEDDED_VAE_DIRS, PRETRAIN_COMMANDS,
                                             embedded_vae_path, is_embedded_vae)

AUTOENCODER_CLASSES = ("AutoencoderDC", "AutoencoderKL")


class VAENotFoundError(FileNotFoundError):
    """The requested VAE weights are not on this machine; the message says how to get them."""


class DamagedVAEError(OSError):
    """The VAE's weights are on this machine but cannot be read (truncated or damaged)."""


def _is_model_dir(path: Path) -> bool:
    """True if ``path`` holds a diffusers model: config.json and weights (safetensors or .bin)."""
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    return (path / "config.json").is_file() and has_weights


def load_vae(name_or_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32) -> LatentAutoencoder:
    """A frozen VAE (eval mode, no gradients) as a ``LatentAutoencoder``.

    Args:
        name_or_path: None or "embedded-v2" for the embedded VAE v2 (``data/embedded_vae_v2``, f16c32,
            128 x 128 images), "embedded" for the first one (``data/embedded_vae``, f8c32, 64 x 64); a local
            directory made by ``save_pretrained`` or ``hf download <id> --local-dir <dir>`` (or a pipeline directory with a ``vae/`` subfolder); or a
            hub id such as ``mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers``, read from the Hugging Face cache
            (HF_HOME) and downloaded when online. ``AutoencoderDC`` and ``AutoencoderKL`` are supported.
        device, dtype: where and in which precision to put the weights.

    Raises:
        VAENotFoundError (a FileNotFoundError): the weights are not on this machine; the message says
            what was tried and how to provide them.
    """
    if is_embedded_vae(name_or_path):
        name = name_or_path or DEFAULT_EMBEDDED_VAE
        path = embedded_vae_path(name)
        if not _is_model_dir(path):
            raise VAENotFoundError(f"The {name} VAE weights are missing from {path} (no config.json + *.safetensors). "
                                   f"Restore them with `git checkout -- {EMBEDDED_VAE_DIRS[name]}`, build them with "
                                   f"`{PRETRAIN_COMMANDS[name]}` (2 CPU cores), or pass load_vae(<directory or hub id>).")
        model = _from_directory(path, dtype)
    elif Path(name_or_path).expanduser().is_dir():
        model = _from_directory(Path(name_or_path).expanduser(), dtype)
    else:
        model = _load_from_hub(str(name_or_path), dtype)
    return as_latent_autoencoder(model.to(device=device).eval().requires_grad_(False))


def _autoencoder_class(config_path: Path, where: str):
    """The diffusers class named by a config.json's ``_class_name`` (AutoencoderDC or AutoencoderKL)."""
    import diffusers

    class_name = json.loads(Path(config_path).read_text()).get("_class_name")
    if class_name not in AUTOENCODER_CLASSES:
        raise VAENotFoundError(f"{where} holds a {class_name or 'model without _class_name'}, not one of "
                               f"{', '.join(AUTOENCODER_CLASSES)}: point load_vae at a VAE.")
    return getattr(diffusers, class_name)


def _from_directory(path: Path, dtype: torch.dtype):
    """A diffusers autoencoder from a directory, or from its ``vae/`` subfolder (a pipeline directory)."""
    if not _is_model_dir(path) and _is_model_dir(path / "vae"):
        path = path / "vae"
    if not _is_model_dir(path):
        raise VAENotFoundError(f"{path} is a directory but holds no diffusers model (config.json + *.safetensors). "
                               f"Point load_vae at the folder made by `save_pretrained` or by "
                               f"`hf download <id> --local-dir {path}`.")
    model_class = _autoencoder_class(path / "config.json", str(path))
    try:
        return model_class.from_pretrained(path, torch_dtype=dtype, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError) as error:  # diffusers: "Unable to load weights from checkpoint file"
        damaged = _unreadable_weights(path)
        if damaged is None:
            raise
        restore = next((f"`git checkout -- {folder}`" for name, folder in EMBEDDED_VAE_DIRS.items()
                        if embedded_vae_path(name).resolve() == path.resolve()), "`hf download <id> --local-dir <dir>`")
        raise DamagedVAEError(f"{damaged[0]} cannot be read ({damaged[1]}): the VAE's weights are truncated or "
                              f"damaged; restore them with {restore} or copy them again.") from error


def _unreadable_weights(path: Path) -> tuple[Path, str] | None:
    """(file, why) for the first safetensors file in ``path`` that cannot be read through, else None."""
    from safetensors import safe_open

    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as weights:
                for key in weights.keys():
                    weights.get_slice(key)
        except Exception as error:  # safetensors' own SafetensorError for a short or corrupt file
            return file, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return None


def _from_hub(model_id: str, dtype: torch.dtype, local_files_only: bool):
    """A hub id's autoencoder (its root or its ``vae/`` subfolder); OSError / ValueError when not available."""
    from huggingface_hub import hf_hub_download

    error = None
    for subfolder in (None, "vae"):
        try:
            config_path = hf_hub_download(model_id, "config.json", subfolder=subfolder,
                                          local_files_only=local_files_only)
        except (OSError, ValueError) as missing:
            error = error or missing
            continue
        model_class = _autoencoder_class(config_path, model_id + (f"/{subfolder}" if subfolder else ""))
        with warnings.catch_warnings():  # diffusers passes an argument huggingface_hub deprecated
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            return model_class.from_pretrained(model_id, subfolder=subfolder, local_files_only=local_files_only,
                                               torch_dtype=dtype, low_cpu_mem_usage=False)
    raise error


def _load_from_hub(model_id: str, dtype: torch.dtype):
    """Load a hub id from the local Hugging Face cache, else download it (when online)."""
    from huggingface_hub import constants

    parent = Path(model_id).expanduser().parent
    if not os.path.exists(model_id) and parent != Path(".") and parent.is_dir():  # 'runs/vae' with runs/ here
        raise VAENotFoundError(f"{model_id!r} does not exist: the folder {str(parent)!r} holds no "
                               f"{Path(model_id).name!r}. Pass a VAE directory (config.json + *.safetensors) or a "
                               f"hub id.")
    if os.path.exists(model_id) or model_id.count("/") != 1:
        raise VAENotFoundError(f"{model_id!r} is neither an existing directory nor a hub id of the form 'owner/name' "
                               f"(e.g. {DC_AE_HUB_IDS[1]}).")
    try:  # the cache first: fast, and the only option offline
        return _from_hub(model_id, dtype, local_files_only=True)
    except (OSError, ValueError) as error:
        if isinstance(error, VAENotFoundError):
            raise
    if constants.HF_HUB_OFFLINE:
        reason = "HF_HUB_OFFLINE is set, so nothing is downloaded"
    else:
        try:
            return _from_hub(model_id, dtype, local_files_only=False)
        except VAENotFoundError:
            raise
        except (OSError, ValueError) as error:  # no network, no such repository, ...
            reason = f"the download failed: {str(error).strip().splitlines()[0] if str(error).strip() else error!r}"
    raise VAENotFoundError(
        f"Cannot load the VAE {model_id!r}: it is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {reason}. "
        f"On a machine with internet run `hf download {model_id} --local-dir <dir>`, copy <dir> here and "
        f"pass load_vae('<dir>') (or copy the whole cache and set HF_HOME); load_vae() with no argument uses the "
        f"embedded offline VAE.") from None
