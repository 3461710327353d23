"""The frozen VAE behind ReVQ, behind one adapter (``LatentAutoencoder``): images <-> latents.

``base`` (the adapter), ``dc_ae`` (DC-AE: the paper's family and the embedded VAEs), ``kl`` (diffusers
``AutoencoderKL``: SD, SDXL, SD3, FLUX), ``adapters`` (``as_latent_autoencoder``: any VAE behind its family's
adapter; batched encode / decode), ``embedded`` (the VAEs shipped in ``data/``), ``loading`` (``load_vae`` by
name, directory or hub id).
"""
from revq_core.autoencoders.adapters import as_latent_autoencoder, decode, encode
from revq_core.autoencoders.base import LatentAutoencoder
from revq_core.autoencoders.loading import VAENotFoundError, load_vae

__all__ = ["LatentAutoencoder", "VAENotFoundError", "as_latent_autoencoder", "decode", "encode", "load_vae"]
