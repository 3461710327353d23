"""KL autoencoders (diffusers ``AutoencoderKL``): the VAEs of Stable Diffusion, SDXL, SD3 and FLUX.

Beyond the paper: ReVQ quantizes any latent, so any of these can become a tokenizer. The latent is the
mode (mean) of the encoder's Gaussian, so tokenizing is deterministic; ``scaling_factor`` and
``shift_factor`` are not applied (ReVQ normalizes each latent dimension itself). f = 2 ** (number of
blocks - 1): 8 for all four families (SD / SDXL: 4 x 32 x 32 for 256 x 256; SD3 / FLUX: 16 x 32 x 32).

    vae = load_vae("stabilityai/sdxl-vae")               # a hub id or directory holding an AutoencoderKL
    vae = load_vae("black-forest-labs/FLUX.1-dev")       # a pipeline repository: its vae/ subfolder
"""
from __future__ import annotations

import torch

from revq_core.autoencoders.base import LatentAutoencoder


class KLAutoencoder(LatentAutoencoder):
    family = "kl"

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode(images).latent_dist.mode()

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.model.decode(latents).sample

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)
