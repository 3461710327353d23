"""DC-AE (diffusers ``AutoencoderDC``): the paper's VAE family, and the embedded VAE's.

The encoder is deterministic (``encode(x).latent``); f = 2 ** (number of encoder stages - 1): 32 for
DC-AE f32c32 (256 x 256 x 3 -> 32 x 8 x 8), 8 and 16 for the embedded VAEs.
"""
from __future__ import annotations

import torch

from revq_core.autoencoders.base import LatentAutoencoder

# The DC-AE checkpoints of the paper's family on the Hugging Face hub (diffusers format).
DC_AE_HUB_IDS = ("mit-han-lab/dc-ae-f32c32-in-1.0-diffusers", "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers")


class DCAutoencoder(LatentAutoencoder):
    family = "dc-ae"

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        if images.device.type == "cpu":  # speed only: oneDNN's convolutions, channels-last input: 2-10 % faster
            images = images.contiguous(memory_format=torch.channels_last)  # (benchmarks/README.md "The first run")
        return self.model.encode(images).latent.contiguous()

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.model.decode(latents).sample

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.config.encoder_block_out_channels) - 1)
