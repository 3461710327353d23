"""The embedded VAEs: small DC-AE models trained on the embedded photos, shipped in ``data/``.

- ``embedded-v2`` (``data/embedded_vae_v2``), **the default** (``load_vae()``, every notebook and default
  run): f16c32, 128 x 128 x 3 -> 32 x 8 x 8 (24x), on the 97 photos of ``data/photos``: closer to DC-AE's
  96x, in the paper's latent shape so every quantizer carries over.
- ``embedded`` (``data/embedded_vae``), the first one (v1), kept so that runs made with it still decode:
  f8c32, 64 x 64 x 3 -> 32 x 8 x 8 (6x), on the 12 photos bundled in pip packages. Its name stays
  "embedded" because tokenizers saved with it record that name.

Both are ResBlock stages then EfficientViT blocks, pixel_unshuffle down and pixel_shuffle up, no blocks at
full resolution (as DC-AE in-1.0); both are rebuilt on CPU by ``scripts/pretrain_vae.py`` (``--version v2`` / ``v1``).
"""
from __future__ import annotations

import os
from pathlib import Path

from revq_core.utils.files import REPO_ROOT

# Names load_vae accepts for the VAEs shipped in this repository (a tokenizer records one in its config).
EMBEDDED_VAE_DIRS = {"embedded-v2": Path("data") / "embedded_vae_v2", "embedded": Path("data") / "embedded_vae"}
# The one load_vae() returns and every default run (notebooks, train, tokenize) encodes with.
DEFAULT_EMBEDDED_VAE = "embedded-v2"
# The photo crops each embedded VAE is trained on and encodes (``build_photo_dataset(corpus=...)``).
EMBEDDED_VAE_CORPUS = {"embedded-v2": "v2", "embedded": "v1"}
PRETRAIN_COMMANDS = {"embedded-v2": "python scripts/pretrain_vae.py --minutes 90",
                     "embedded": "python scripts/pretrain_vae.py --version v1 --minutes 120"}


def is_embedded_vae(name) -> bool:
    """True for None (the default) and the names of the embedded VAEs."""
    return name is None or (isinstance(name, str) and name in EMBEDDED_VAE_DIRS)


def embedded_vae_config() -> dict:
    """Config of the first embedded VAE (v1): a small f8c32 ``AutoencoderDC`` (64 x 64 x 3 -> 32 x 8 x 8).

    Four stages at 32, 32, 16 and 8 pixels for a 64 x 64 input: no blocks at full resolution
    (layers_per_block[0] = 0: the input conv pixel-unshuffles straight to 32 x 32, as in DC-AE in-1.0),
    ResBlocks at 32 x 32 and 16 x 16, EfficientViT blocks (linear attention with a 5 x 5 multi-scale
    branch) at 8 x 8. Widths chosen for CPU throughput (see data/README.md for the timings).
    """
    return dict(
        in_channels=3,
        latent_channels=32,
        attention_head_dim=32,
        encoder_block_types=("ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(32, 48, 96, 192),
        decoder_block_out_channels=(32, 48, 96, 192),
        encoder_layers_per_block=(0, 1, 2, 2),
        decoder_layers_per_block=(0, 2, 2, 2),
        encoder_qkv_multiscales=((), (), (), (5,)),
        decoder_qkv_multiscales=((), (), (), (5,)),
        upsample_block_type="pixel_shuffle",
        downsample_block_type="pixel_unshuffle",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=1.0,
    )


def embedded_vae_v2_config() -> dict:
    """Config of the embedded VAE v2: an f16c32 ``AutoencoderDC`` (128 x 128 x 3 -> 32 x 8 x 8, 24x compression).

    Five stages at 64, 64, 32, 16 and 8 pixels for a 128 x 128 input (the input conv pixel-unshuffles to
    64 x 64; no blocks at full resolution), ResBlocks on the first four, EfficientViT blocks (linear
    attention with a 5 x 5 multi-scale branch) at 8 x 8; 10.9 M parameters. Being convolutional with
    linear attention it also runs on 64 x 64 patches (-> 32 x 4 x 4), which is how most of its training
    steps are taken (4x cheaper; see ``scripts/pretrain_vae.py``).
    """
    return dict(
        in_channels=3,
        latent_channels=32,
        attention_head_dim=32,
        encoder_block_types=("ResBlock", "ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(32, 48, 96, 192, 256),
        decoder_block_out_channels=(32, 48, 96, 192, 256),
        encoder_layers_per_block=(0, 1, 1, 2, 2),
        decoder_layers_per_block=(0, 1, 2, 2, 2),
        encoder_qkv_multiscales=((), (), (), (), (5,)),
        decoder_qkv_multiscales=((), (), (), (), (5,)),
        upsample_block_type="pixel_shuffle",
        downsample_block_type="pixel_unshuffle",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=1.0,
    )


def build_embedded_vae(config: dict | None = None):
    """A freshly initialised embedded VAE (``AutoencoderDC``), for training."""
    from diffusers import AutoencoderDC

    return AutoencoderDC(**(config or embedded_vae_config()))


def embedded_vae_path(name: str | None = None) -> Path:
    """The directory of an embedded VAE by name (None: the default, ``DEFAULT_EMBEDDED_VAE``).

    ``$REVQ_EMBEDDED_VAE``, when set, replaces the default's directory (e.g. to try a retrained VAE).
    """
    name = name or DEFAULT_EMBEDDED_VAE
    if name not in EMBEDDED_VAE_DIRS:
        raise ValueError(f"{name!r} is not an embedded VAE; the embedded VAEs are {sorted(EMBEDDED_VAE_DIRS)}.")
    if name == DEFAULT_EMBEDDED_VAE and os.environ.get("REVQ_EMBEDDED_VAE"):
        return Path(os.environ["REVQ_EMBEDDED_VAE"])
    return REPO_ROOT / EMBEDDED_VAE_DIRS[name]
