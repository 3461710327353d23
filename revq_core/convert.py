"""Import a checkpoint of the authors' released ReVQ models (github.com/Neur-IO/ReVQ) as a ``ReVQ``.

Their layout, learned from their public repository (no code of theirs is used here):
- ``ckpt.pth``: a dict with ``"quantizer"`` and ``"decoder"`` state dicts (plus optimizer/scheduler
  states, ignored here).
  - quantizer: ``embeddings`` (G, K, D) codebooks, token t of the (B, T, D) channel-split view uses
    codebook t % G (as ours); ``index_offset`` (G,) and ``count`` (G, K) are bookkeeping, dropped.
  - decoder (the rectifier): a one-stage DC-AE decoder built from diffusers ``EfficientViTBlock``s,
    keys ``conv_in.*``, ``up_blocks.0.<i>.*``, ``norm_out.*``, ``conv_out.*``: the same keys as
    ``revq_core.rectifier.ViTRectifier``, so they map one to one onto ``rectifier.*``.
- ``preprocessor.pth``: ``mean`` and ``std`` of shape (C*H*W,) = (2048,), the per-dimension latent
  statistics (std is the square root of the variance); they become ``normalizer.mean/std`` (C, H, W).

    model = convert_authors_checkpoint("ckpt.pth", preprocessor="preprocessor.pth")
    python -m revq_core.convert ckpt.pth out_dir --preprocessor preprocessor.pth
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Mapping

import torch

from .model import ReVQ

LATENT_SHAPE = (32, 8, 8)  # DC-AE f32c32 at 256 x 256, the only latent the authors release models for
IGNORED_QUANTIZER_KEYS = ("index_offset", "count")  # offsets into the flat codebook, usage counts


class CheckpointConversionError(ValueError):
    """The state dict does not have the authors' layout (missing/unexpected keys or wrong shapes)."""


def _load(source, what: str) -> dict:
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"{what} file {os.fspath(source)!r} does not exist.")
        state = torch.load(source, map_location="cpu", weights_only=True)  # their files hold CUDA tensors
        if not isinstance(state, Mapping):
            raise CheckpointConversionError(f"{what} file {os.fspath(source)!r} holds a {type(state).__name__}, "
                                            "not a state dict.")
        return dict(state)
    raise TypeError(f"{what} must be a state dict or a path, got {type(source).__name__}.")


def split_authors_state(checkpoint: Mapping) -> tuple[dict, dict]:
    """(quantizer state, decoder state) from their ``ckpt.pth`` dict, nested or with 'quantizer.'/'decoder.' prefixes."""
    if "quantizer" in checkpoint and "decoder" in checkpoint:
        return dict(checkpoint["quantizer"]), dict(checkpoint["decoder"])
    quantizer = {key[len("quantizer."):]: value for key, value in checkpoint.items() if key.startswith("quantizer.")}
    decoder = {key[len("decoder."):]: value for key, value in checkpoint.items() if key.startswith("decoder.")}
    if not quantizer:
        raise CheckpointConversionError(
            f"not a ReVQ checkpoint of the authors' layout: expected the keys 'quantizer' and 'decoder' "
            f"(or 'quantizer.*'/'decoder.*'), got {sorted(checkpoint)[:10]}{' ...' if len(checkpoint) > 10 else ''}.")
    return quantizer, decoder


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


def main(argv: list[str] | None = None) -> None:
    """``python -m revq_core.convert SRC DST [--preprocessor P]``: write the authors' checkpoint SRC as a
    save_pretrained directory DST (config.json + model.safetensors)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("src", help="the authors' ckpt.pth")
    parser.add_argument("dst", help="output directory")
    parser.add_argument("--preprocessor", help="the authors' preprocessor.pth (latent mean/std)")
    parser.add_argument("--vae", help="VAE name to record, e.g. mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers")
    args = parser.parse_args(argv)
    model = convert_authors_checkpoint(args.src, args.preprocessor, vae=args.vae)
    model.save_pretrained(args.dst)
    print(f"converted {args.src}: {model.tokens_per_image} tokens, K = {model.codes_per_group}, "
          f"G = {model.quantizer.num_groups}; saved to {args.dst}")


if __name__ == "__main__":
    main()
