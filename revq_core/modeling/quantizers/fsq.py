"""Finite scalar quantization on the frozen VAE's latent: ``fsq`` (Mentzer et al. 2023, tanh bound) and ``ifsq``
(the distribution-matching bound 2 * Phi(x) - 1 in place of tanh, after arXiv 2601.17124).

Layout and ids as ``quantizers/scalar.py``: L = ``ModelConfig.levels_per_dim`` levels for every number, a token is
D consecutive numbers of the channel layout, its id the mixed-radix number of its D level indices (L ** D per
position), C*H*W * log2(L) bits per image whatever T.

What FSQ becomes here. FSQ is meant to sit after a trained encoder that learns to place its outputs on the grid.
ReVQ's input is the frozen VAE's normalized latent (unit variance per number), so there is no encoder to learn
and, with FSQ's levels list of length D (the token's own D numbers), vector-quantize-pytorch builds no projection:
``FSQ(levels=[L] * D)`` has no parameters. Each number is bounded and rounded to one of L levels, and a level
decodes back into the latent space to one value inside its bin (below); training fits only the rectifier. The
straight-through gradient of the library's rounding would reach only the frozen latent, so none is kept.

- ``fsq``: levels from vector-quantize-pytorch 1.32.0's ``FSQ`` (its ``quantize``: ``round(tanh(x + shift) * h
  - offset)`` with h = (L-1)(1+1e-3)/2 and, for even L, offset 1/2 and shift atanh(offset / h)), run on the (B, T, D)
  tokens with ``return_indices=False`` (its implicit codebook would hold L ** D rows and its int32 indices
  overflow beyond 2 ** 31; the ids are made here in int64). L >= 3 (the library's L = 2 needs its symmetry-
  preserving variant; use ``scalar`` or ``ifsq`` for 1 bit per number). Written here: the decoding value of
  level j (centred, j = k - L // 2): the inverse bound at the middle of the level's bin in bounded space,
  ``atanh((m + offset) / h) - shift`` with m the middle of [j - 1/2, j + 1/2] clipped to [-h - offset, h - offset].
- ``ifsq`` (written here; vector-quantize-pytorch 1.32.0 has no distribution-matching bound: its FSQ knows tanh,
  a hard clamp and the symmetry-preserving tanh variant only). For a standard normal input, u = Phi(x) is
  uniform on (0, 1), so L equal-width levels of the bounded value 2u - 1 are equal-mass: level
  ``k = min(floor(L * Phi(x)), L - 1)``, exactly the 1/L quantiles of N(0, 1) as edges (the library's ``round``
  on [-h, h] would give the two end levels half the mass). Level k decodes to the median of its bin,
  ``Phi^-1((k + 1/2) / L)``. About 4 bits per number (L = 16) is the paper's reported sweet spot.
"""
from __future__ import annotations

import math

import torch

from revq_core.modeling.quantizers.scalar import ScalarGridQuantizer, normal_medians

FSQ_EPS = 1e-3  # vector-quantize-pytorch's FSQ.bound default


class FSQQuantizer(ScalarGridQuantizer):
    """FSQ's tanh grid (vector-quantize-pytorch ``FSQ``) on the normalized latent; no parameters."""

    name = "fsq"
    minimum_levels = 3

    def __init__(self, latent_shape: tuple[int, int, int], tokens_per_image: int, levels: int):
        super().__init__(latent_shape, tokens_per_image, levels)
        from vector_quantize_pytorch import FSQ

        self.fsq = FSQ(levels=[levels] * self.code_dim, return_indices=False)
        self.register_buffer("level_values", _fsq_level_values(levels), persistent=False)  # (L,)

    def levels_of(self, numbers: torch.Tensor) -> torch.Tensor:
        tokens = numbers.reshape(numbers.shape[0], self.tokens_per_image, self.code_dim)  # (B, T, D)
        bounded = self.fsq.quantize(tokens[:, :, None, :])  # (B, T, 1, D) in [-1, 1], the library's levels
        half_width = self.levels // 2
        return (bounded * half_width + half_width).round().long().reshape(numbers.shape)

    def values_of(self, levels: torch.Tensor) -> torch.Tensor:
        return self.level_values[levels]


class IFSQQuantizer(ScalarGridQuantizer):
    """FSQ with the bound 2 * Phi(x) - 1: equal-mass levels for N(0, 1) numbers (module docstring); no parameters."""

    name = "ifsq"
    minimum_levels = 2

    def __init__(self, latent_shape: tuple[int, int, int], tokens_per_image: int, levels: int):
        super().__init__(latent_shape, tokens_per_image, levels)
        self.register_buffer("level_values", torch.tensor(normal_medians(levels)), persistent=False)  # (L,)

    def levels_of(self, numbers: torch.Tensor) -> torch.Tensor:
        uniform = torch.special.ndtr(numbers)  # Phi(x) in [0, 1]
        return (uniform * self.levels).floor().long().clamp(0, self.levels - 1)

    def values_of(self, levels: torch.Tensor) -> torch.Tensor:
        return self.level_values[levels]


def _fsq_level_values(levels: int) -> torch.Tensor:
    """(L,) the latent value each FSQ level decodes to: the inverse of the library's bound at its bin's middle."""
    half = (levels - 1) * (1 + FSQ_EPS) / 2
    offset = 0.5 if levels % 2 == 0 else 0.0
    shift = math.atanh(offset / half)
    values = []
    for level in range(levels):
        centred = level - levels // 2
        low, high = max(centred - 0.5, -half - offset), min(centred + 0.5, half - offset)
        values.append(math.atanh(((low + high) / 2 + offset) / half) - shift)
    return torch.tensor(values, dtype=torch.float32)
