"""The adapter every frozen VAE goes through: images (B, 3, H, W) in [-1, 1] <-> latents (B, C, H/f, W/f).

ReVQ needs five things from a VAE, whatever its family: encode images to a deterministic latent,
decode a latent to images, the downsampling factor f, the latent channels C (so the latent shape and
the expected image size follow), and a key that tells its latents apart from another VAE's (for caches).
``LatentAutoencoder`` is that interface around a diffusers model; each family has one small subclass
(``dc_ae.DCAutoencoder``, ``kl.KLAutoencoder``), and ``adapters.as_latent_autoencoder`` picks it (this
module imports no family). Latents are never scaled or shifted (a config's ``scaling_factor`` /
``shift_factor`` are not applied): ReVQ normalizes every latent dimension itself.

    vae = as_latent_autoencoder(AutoencoderDC(...))     # or load_vae(...), which returns one
    latents = vae.encode(images)                        # (B, C, H/f, W/f), float32
    images = vae.decode(latents)                        # (B, 3, H, W), clamped to [-1, 1]
    vae.latent_shape(256), vae.image_size((32, 8, 8))   # (32, 8, 8), 256 for DC-AE f32c32
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn


class LatentAutoencoder(nn.Module):
    """A frozen image autoencoder as ReVQ sees it. Subclasses implement ``_encode``, ``_decode`` and say
    their ``downsampling_factor`` and ``latent_channels``; the wrapped diffusers model is ``.model``.
    """

    family = "generic"

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    # ---- what each family defines -------------------------------------------------------------------
    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in the model's dtype and device -> latents (B, C, h, w)."""
        output = self.model.encode(images)
        if isinstance(output, torch.Tensor):
            return output
        if hasattr(output, "latent"):
            return output.latent
        return output.latent_dist.mode()

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        output = self.model.decode(latents)
        return output if isinstance(output, torch.Tensor) else output.sample

    @property
    def downsampling_factor(self) -> int | None:
        """Image side / latent side (None when the model's config does not say)."""
        return None

    @property
    def latent_channels(self) -> int | None:
        return getattr(self.config, "latent_channels", None)

    # ---- shared ---------------------------------------------------------------------------------------
    @property
    def config(self):
        """The wrapped model's config (diffusers ``FrozenDict``), or an empty dict."""
        return getattr(self.model, "config", {})

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] (uint8 in [0, 255] accepted) -> latents (B, C, H/f, W/f) float32, on
        the model's device. H and W must be multiples of f."""
        self.check_image_size(images)
        if images.dtype == torch.uint8:
            images = images.float() / 127.5 - 1.0
        return self._encode(self._to_model(images)).float()

    def decode(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Latents (B, C, h, w) -> images (B, 3, h*f, w*f) float32 in [-1, 1] (clamped unless ``clamp=False``)."""
        images = self._decode(self._to_model(latents)).float()
        return images.clamp(-1, 1) if clamp else images

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        """(C, h, w) of the latent of a square image of side ``image_size``."""
        factor = self._known_factor()
        if image_size % factor:
            raise ValueError(f"image_size {image_size} is not a multiple of this VAE's downsampling factor {factor}.")
        return (int(self.latent_channels), image_size // factor, image_size // factor)

    def image_size(self, latent_shape: tuple[int, int, int]) -> int:
        """Side of the square images whose latent has ``latent_shape`` (C, h, w)."""
        return int(latent_shape[1]) * self._known_factor()

    def check_image_size(self, images: torch.Tensor) -> None:
        """Raise a ValueError if the height or width of images (N, 3, H, W) is not a multiple of f."""
        factor = self.downsampling_factor
        height, width = images.shape[-2:]
        if factor and (height % factor or width % factor):
            raise ValueError(f"images are {height} x {width} pixels, but this VAE downsamples by {factor}: height "
                             f"and width must be multiples of {factor} (resize or crop them, e.g. to "
                             f"{max(factor, height // factor * factor)} x {max(factor, width // factor * factor)}).")

    def cache_key(self) -> str:
        """A short hash of the config and the weights (the first values of every parameter tensor): latents
        cached for one VAE are never reused for another of the same architecture (other weights)."""
        digest = hashlib.sha1(repr(sorted(dict(self.config).items())).encode())
        for parameter in self.model.parameters():
            digest.update(parameter.detach().reshape(-1)[:64].float().cpu().numpy().tobytes())
        return digest.hexdigest()[:10]

    def _to_model(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on the model's device, in its dtype (as is for a model without parameters)."""
        parameter = next(self.model.parameters(), None)
        return tensor if parameter is None else tensor.to(device=parameter.device, dtype=parameter.dtype)

    def _known_factor(self) -> int:
        if not self.downsampling_factor:
            raise ValueError(f"this {type(self.model).__name__}'s config does not give its downsampling factor; "
                             f"wrap it in a LatentAutoencoder subclass that does.")
        return self.downsampling_factor
