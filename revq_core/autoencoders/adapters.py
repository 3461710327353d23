"""Any VAE behind its family's adapter: ``as_latent_autoencoder`` picks ``dc_ae.DCAutoencoder`` for a diffusers
``AutoencoderDC``, ``kl.KLAutoencoder`` for an ``AutoencoderKL``, the generic ``base.LatentAutoencoder`` otherwise;
and the batched ``encode`` / ``decode`` that accept any of them.

    vae = as_latent_autoencoder(AutoencoderDC(...))     # or load_vae(...), which returns one
    latents = encode(vae, images, batch_size=64)        # (N, C, H/f, W/f) float32 on the CPU
"""
from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from revq_core.autoencoders.base import LatentAutoencoder
from revq_core.autoencoders.dc_ae import DCAutoencoder
from revq_core.autoencoders.kl import KLAutoencoder


def as_latent_autoencoder(vae: nn.Module) -> LatentAutoencoder:
    """``vae`` as a ``LatentAutoencoder``: returned as is if it is one; a diffusers ``AutoencoderDC`` or
    ``AutoencoderKL`` gets its family's adapter; any other module with ``encode(x)`` (returning ``.latent``,
    ``.latent_dist`` or a tensor) and, to decode, ``decode(z)`` (``.sample`` or a tensor) the generic one."""
    if isinstance(vae, LatentAutoencoder):
        return vae
    from diffusers import AutoencoderDC, AutoencoderKL

    if isinstance(vae, AutoencoderDC):
        adapter = DCAutoencoder(vae)
    elif isinstance(vae, AutoencoderKL):
        adapter = KLAutoencoder(vae)
    elif callable(getattr(vae, "encode", None)):  # decode(latents) is needed only to decode
        adapter = LatentAutoencoder(vae)
    else:
        raise TypeError(f"a VAE must be a LatentAutoencoder, a diffusers AutoencoderDC / AutoencoderKL, or a module "
                        f"with encode(images) (and decode(latents) to decode); got {type(vae).__name__}.")
    return adapter.train(vae.training)  # the adapter is in the mode of the model it wraps


def downsampling_factor(vae) -> int | None:
    """The spatial downsampling factor f of a VAE (image side / latent side), or None if it does not say."""
    return as_latent_autoencoder(vae).downsampling_factor


@torch.no_grad()
def encode(vae, images: torch.Tensor, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] (or uint8) -> latents (N, C, H/f, W/f) float32 on the CPU, in batches."""
    if len(images) == 0:
        raise ValueError("No images to encode: got an empty batch.")
    vae = as_latent_autoencoder(vae)
    vae.check_image_size(images)
    return torch.cat([vae.encode(images[start:start + batch_size]).cpu()
                      for start in tqdm(range(0, len(images), batch_size), desc="encode", disable=not progress)])


@torch.no_grad()
def decode(vae, latents: torch.Tensor, batch_size: int = 64, clamp: bool = True, progress: bool = False) -> torch.Tensor:
    """Latents (N, C, h, w) -> images (N, 3, h*f, w*f) float32 on the CPU in [-1, 1] (clamped), in batches."""
    vae = as_latent_autoencoder(vae)
    return torch.cat([vae.decode(latents[start:start + batch_size], clamp).cpu()
                      for start in tqdm(range(0, len(latents), batch_size), desc="decode", disable=not progress)])
