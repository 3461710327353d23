"""Helpers shared by test files (tests/ is on sys.path: ``from helpers import ...``)."""
from pathlib import Path

import torch
from diffusers import AutoencoderDC

from revq_core.modeling.revq import ReVQ

REPO_ROOT = Path(__file__).resolve().parent.parent


def small_model(**kwargs):
    settings = dict(latent_shape=(32, 8, 8), tokens_per_image=128, codes_per_group=16, rectifier_width=32,
                    rectifier_depth=1)
    settings.update(kwargs)
    return ReVQ(**settings)


def tiny_vae():
    """A random f8c32 AutoencoderDC (4 stages): 64 x 64 x 3 -> 32 x 8 x 8, built in milliseconds."""
    return AutoencoderDC(in_channels=3, latent_channels=32, encoder_block_types="ResBlock",
                         decoder_block_types="ResBlock", encoder_block_out_channels=(8, 16, 32, 32),
                         decoder_block_out_channels=(8, 16, 32, 32), encoder_layers_per_block=(1, 1, 1, 1),
                         decoder_layers_per_block=(1, 1, 1, 1), encoder_qkv_multiscales=((),) * 4,
                         decoder_qkv_multiscales=((),) * 4, decoder_norm_types="rms_norm", decoder_act_fns="silu")


def tiny_autoencoder_dc() -> AutoencoderDC:
    """A randomly initialised AutoencoderDC small enough to build in milliseconds (f2c4)."""
    torch.manual_seed(0)
    return AutoencoderDC(in_channels=3, latent_channels=4, attention_head_dim=8,
                         encoder_block_types=("ResBlock", "EfficientViTBlock"),
                         decoder_block_types=("ResBlock", "EfficientViTBlock"),
                         encoder_block_out_channels=(8, 16), decoder_block_out_channels=(8, 16),
                         encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1),
                         encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)))


def brute_force_codes(tokens: torch.Tensor, codebook: torch.Tensor, group_of_token: torch.Tensor) -> torch.Tensor:
    """Reference nearest neighbour: tokens (B, T, D), codebook (G, K, D) -> (B, T) by float64 argmin."""
    books = codebook.double()[group_of_token]  # (T, K, D)
    distances = (tokens.double()[:, :, None, :] - books[None]).pow(2).sum(-1)  # (B, T, K)
    return distances.argmin(-1)
