"""What a saved model is, before any is loaded: the authors' released models (their hub ids and file names), the
hub-id test, and the checks ``ReVQ.from_pretrained`` runs on a directory. Imports no model class, so
``modeling/revq.py`` (``from_pretrained``) and ``authors_format`` / ``loading`` (which import ReVQ) can all use it.
"""
from __future__ import annotations

import json
from pathlib import Path

from revq_core.modeling.config import ModelConfig

AUTHORS_MODELS = (  # their released tokenizers on the Hugging Face Hub
    "AndyRaoTHU/revq-512T",  # 512 tokens, K = 16,384
    "AndyRaoTHU/revq-256T-B",  # 256 tokens, K = 65,536
    "AndyRaoTHU/revq-256T-L",  # 256 tokens, K = 262,144
)
AUTHORS_CHECKPOINT = "ckpt.pth"  # the weights file of each of their hub repositories
# Their normalization statistics (DC-AE sana-1.1 latents of ImageNet train), in their GitHub repository:
AUTHORS_PREPROCESSOR_URL = "https://github.com/Neur-IO/ReVQ/raw/main/ckpt/preprocessor.pth"
AUTHORS_VAE = "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers"  # the VAE their models quantize


def is_hub_id(name: str) -> bool:
    """True if ``name`` can be a Hugging Face Hub id ('owner/name' or 'name'); False for what can only be a
    local path ('./x', '/x', '~/x', 'a/b/c', 'a\\b', ...) or names a file ('ckpt.pth', 'model.safetensors')."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.lower().endswith((".pth", ".pt", ".ckpt", ".bin", ".safetensors", ".pkl", ".npy", ".json")):
        return False  # a checkpoint file's name: never worth a round of Hub requests and their retries

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def refuse_authors_format(name: str, path: Path) -> None:
    """Raise a ValueError naming ``load_authors_model`` for one of the authors' hub ids or a directory in their
    layout (their ckpt.pth, no config.json): those hold their format, which is converted, not read as ours."""
    theirs = name.lower() in {model_id.lower() for model_id in AUTHORS_MODELS} and not path.exists()
    theirs = theirs or (path.is_dir() and (path / AUTHORS_CHECKPOINT).is_file() and not (path / "config.json").exists())
    if theirs:
        raise ValueError(f"{name!r} holds the authors' own format ({AUTHORS_CHECKPOINT}, no config.json): load and "
                         f"convert it with revq_core.modeling.authors_format.load_authors_model({name!r}, "
                         f"preprocessor=<their preprocessor.pth, a path or URL>), e.g. "
                         f"preprocessor=revq_core.modeling.authors_format.AUTHORS_PREPROCESSOR_URL.")


def check_pretrained_dir(path: Path) -> tuple[ModelConfig, dict[str, tuple[int, ...]]]:
    """Fail early, and readably, on a directory that is not a complete ReVQ checkpoint; return the model config
    its config.json describes and the shape of each tensor its model.safetensors stores (for ``check_weights_fit``)."""
    config_path, weights_path = path / "config.json", path / "model.safetensors"
    for required in (config_path, weights_path):
        if not required.is_file():
            raise FileNotFoundError(f"{required} is missing: {path} is not a ReVQ checkpoint written by "
                                    "ReVQ.save_pretrained (it needs config.json and model.safetensors).")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path} is not valid JSON ({error}); the checkpoint is damaged.") from error
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} holds {type(config).__name__}, not a JSON object of model fields.")
    try:
        architecture = ModelConfig.from_dict({key: value for key, value in config.items() if key != "vae"})
    except (TypeError, ValueError) as error:
        raise ValueError(f"{config_path} does not describe a model this version can build: {error}") from error
    from safetensors import safe_open

    try:
        with safe_open(weights_path, framework="pt") as weights:
            stored = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except Exception as error:
        raise ValueError(f"{weights_path} cannot be read ({type(error).__name__}: {error}); the file is truncated "
                         "or damaged. Save the model again or copy the file anew.") from error
    return architecture, stored


def check_weights_fit(path: Path, architecture: ModelConfig, stored: dict[str, tuple[int, ...]],
                      expected: dict[str, tuple[int, ...]]) -> None:
    """Raise a ValueError unless the tensors a checkpoint directory stores (name -> shape) are exactly those the
    model of its config.json has (``expected``, e.g. from a model built on the meta device): another quantizer's
    or another size's weights are named, not half loaded."""
    missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    reshaped = sorted(name for name in set(expected) & set(stored) if expected[name] != stored[name])
    if missing or unexpected or reshaped:
        details = [f"{label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}" for label, names in
                   (("missing", missing), ("unexpected", unexpected), ("other shapes", reshaped)) if names]
        shapes = [f"{name} {stored[name]} vs {expected[name]}" for name in reshaped[:2]]
        raise ValueError(f"{path / 'model.safetensors'} does not hold the weights of the model {path / 'config.json'} "
                         f"describes (quantizer {architecture.quantizer!r}, T = {architecture.tokens_per_image}; "
                         f"{'; '.join(details)}{'; ' + ', '.join(shapes) if shapes else ''}): the weights belong to "
                         "another configuration or quantizer.")
