"""Per-dimension latent normalization with dataset statistics (docs/method.md, "Pipeline").

Each of the C*H*W latent dimensions gets its own mean and standard deviation, measured over the
training latents; the inverse runs before the VAE decoder.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from revq_core.utils.checks import check_finite
from revq_core.utils.moments import RunningMoments


class LatentNormalizer(nn.Module):
    """x -> (x - mean) / std per dimension; buffers ``mean`` and ``std`` have shape (C, H, W)."""

    def __init__(self, latent_shape: tuple[int, int, int] = (32, 8, 8)):
        super().__init__()
        self.latent_shape = tuple(latent_shape)
        self.register_buffer("mean", torch.zeros(self.latent_shape))
        self.register_buffer("std", torch.ones(self.latent_shape))

    @torch.no_grad()
    def set_statistics(self, mean: torch.Tensor, var: torch.Tensor, min_std: float = 1e-6) -> None:
        """Load per-dimension mean and variance, each of shape (C, H, W) or (C*H*W,). A ValueError for a dimension
        whose variance is at most ``min_std`` squared (constant latents, or a damaged or foreign statistics file)."""
        for name, value in (("mean", mean), ("var", var)):
            if value.numel() != self.mean.numel():
                raise ValueError(f"{name} has {value.numel()} entries, expected one per latent dimension: "
                                 f"{self.mean.numel()} = prod{self.latent_shape}.")
            check_finite(value, name)
        if bool((var < 0).any()):
            raise ValueError("var has negative entries: pass the variance, not a difference of moments that underflowed.")
        flat = var.reshape(-1)
        constant = flat <= min_std**2
        if bool(constant.any()):
            first = tuple(int(index) for index in torch.unravel_index(constant.nonzero()[0, 0], self.latent_shape))
            raise ValueError(f"{int(constant.sum())} of the {flat.numel()} latent dimensions have (near) zero variance "
                             f"(<= {min_std**2:g}; first at (c, h, w) = {first}): the latents do not vary there "
                             f"(constant or all-equal latents, or statistics of another or a damaged cache), and "
                             f"normalizing would scale them by up to {1 / min_std:g}. Check the VAE encoding and the "
                             f"statistics (write the cache again with encode_to_cache).")
        self.mean.copy_(mean.reshape(self.latent_shape))
        self.std.copy_(var.reshape(self.latent_shape).sqrt())

    @torch.no_grad()
    def fit(self, latents: torch.Tensor, chunk_size: int = 16384) -> None:
        """Statistics from latents (N, C, H, W), possibly memory-mapped: a streaming pass in chunks with
        float64 moments (``utils.moments``; population variance, as the authors' running mean/variance)."""
        moments = RunningMoments()
        for start in range(0, latents.shape[0], chunk_size):
            moments.add(latents[start:start + chunk_size].to(self.mean.device, torch.float64))
        mean, var = moments.mean, moments.variance(correction=0)
        self.set_statistics(mean.float(), var.float())

    def normalize(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) VAE latent -> normalized latent."""
        return (latent - self.mean) / self.std

    def denormalize(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalized latent -> VAE latent."""
        return latent * self.std + self.mean
