"""The quantizer contract: what every entry of ``QUANTIZERS`` does, and all that the rest of revq may use.

A quantizer turns a normalized VAE latent (B, C, H, W) into T integer codes per image and back:

    output = quantizer(latent)          # QuantizerOutput(quantized (B, C, H, W), codes (B, T) int64, loss scalar)
    codes = quantizer.encode(latent)    # (B, T) int64, position t in [0, vocabulary_sizes[t])
    latent = quantizer.decode(codes)    # (B, C, H, W), the quantized latent
    quantizer.vocabulary_sizes          # (T,) int64: how many ids position t can take
    quantizer.bits_per_image            # sum over positions of log2(vocabulary_sizes[t])

``loss`` is the quantizer's own training loss (for ReVQ's codebooks: MSE between the latent and its
quantized form); ``quantized`` carries whatever gradient the quantizer wants upstream (none for ReVQ,
whose input is the frozen VAE's latent). The trainer, save / load, the tokenizer command lines and the
evaluation use only this contract.

Optional hooks, each a no-op here; a quantizer that needs one overrides it:
- ``wants_init_samples(method)`` / ``init_from_samples(latents, method, generator)``: initialisation from a
  pool of normalized training latents (N, C, H, W) before the first step;
- usage counting: a quantizer in training mode counts the codes its forward selects (``usage()`` reads
  the fraction used so far this epoch);
- ``end_epoch(...)``: called once after each training epoch (ReVQ: the non-activation reset), returns
  ``EpochStats``;
- ``prepare_training(device, distributed)`` / ``finish_training()``: speed settings for the duration of
  ``train()`` (ReVQ on the CPU: its codebook gradient added in place);
- ``release_gradients()``: drop (or zero in place) its parameters' gradients before a backward.

A registry entry is a subclass with ``from_config(config)`` (build from a ``ModelConfig``) and
``check_config(config)`` (raise a one-line ValueError for fields it cannot work with; ``ModelConfig``
calls it when a config is made). docs/extending.md shows a new one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn as nn


# The ``TrainConfig.init`` names: from training tokens ("samples", the paper), then Lloyd steps ("kmeans"), or
# N(0, 1) codes with no data ("random"). A quantizer without a codebook to start ignores them.
INIT_METHODS = ("samples", "kmeans", "random")
# The largest per-position vocabulary a quantizer may have: a codes file stores ids as int32 (data/codes.py), so
# every id must be below 2 ** 31; check_config raises when a configuration would go past it.
MAX_VOCABULARY = 2 ** 31


class QuantizerOutput(NamedTuple):
    quantized: torch.Tensor  # (B, C, H, W) quantized latent, differentiable where the quantizer trains
    codes: torch.Tensor  # (B, T) int64
    loss: torch.Tensor  # scalar: the quantizer's own loss


@dataclass
class EpochStats:
    usage: float  # fraction of codes used during the epoch, averaged over positions (before any reset)
    codes_reset: int  # codes moved by the end-of-epoch maintenance (0 when there is none)


class LatentQuantizer(nn.Module):
    """Base class of the quantizers: the contract above, with its optional hooks as no-ops.

    Subclasses set ``latent_shape`` (C, H, W) and ``tokens_per_image`` (T) and implement ``forward``,
    ``encode``, ``decode``, ``vocabulary_sizes``, ``from_config`` and ``check_config``."""

    latent_shape: tuple[int, int, int]
    tokens_per_image: int
    # encode(decode(codes)) == codes: true of every nearest-code or fixed-grid quantizer; a greedy residual
    # quantizer (``rvq``) does not promise it (a later stage can move the sum into another first-stage cell).
    reencodes_exactly: bool = True

    # ---- required --------------------------------------------------------------------------------
    def forward(self, latent: torch.Tensor) -> QuantizerOutput:
        raise NotImplementedError

    def encode(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalized latent (B, C, H, W) -> codes (B, T) int64."""
        raise NotImplementedError

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, T) -> quantized latent (B, C, H, W)."""
        raise NotImplementedError

    @property
    def vocabulary_sizes(self) -> torch.Tensor:
        """(T,) int64 on the CPU: the number of ids position t can take."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config) -> "LatentQuantizer":
        raise NotImplementedError

    @staticmethod
    def check_config(config) -> None:
        """Raise a one-line ValueError naming the ``ModelConfig`` field this quantizer cannot work with."""

    # ---- derived from the vocabulary ---------------------------------------------------------------
    @property
    def vocabulary_size(self) -> int:
        """The largest per-position vocabulary: every id is below it (what a codes file's dtype must hold)."""
        return int(self.vocabulary_sizes.max())

    @property
    def bits_per_image(self) -> float:
        """The sum over the T positions of log2(vocabulary size): the bits one image's codes can carry."""
        return float(sum(math.log2(int(size)) for size in self.vocabulary_sizes))

    # ---- optional hooks ----------------------------------------------------------------------------
    def wants_init_samples(self, method: str) -> bool:
        """True if ``init_from_samples(latents, method, ...)`` needs training latents."""
        return False

    def init_from_samples(self, latents: torch.Tensor | None, method: str = "samples",
                          generator: torch.Generator | None = None) -> None:
        """Initialise from normalized training latents (N, C, H, W) before training (None: no data needed)."""

    def usage(self) -> float:
        """Fraction of codes used since the last ``end_epoch``, averaged over positions (nan: not counted)."""
        return math.nan

    def end_epoch(self, reset: bool = True, reset_ratio: float = 0.2, reset_noise: float = 0.1,
                  generator: torch.Generator | None = None,
                  all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> EpochStats:
        """After each training epoch. ``all_reduce`` sums a tensor over ranks in place (DDP: every rank must
        maintain itself identically); None in a single process."""
        return EpochStats(usage=self.usage(), codes_reset=0)

    def prepare_training(self, device: torch.device, distributed: bool = False) -> None:
        """Speed settings for the duration of ``train()`` (undone by ``finish_training``)."""

    def finish_training(self) -> None:
        """Undo ``prepare_training``: the quantizer behaves like any module in users' loops again."""

    def release_gradients(self) -> None:
        """Before a backward: drop this quantizer's gradients (``optimizer.zero_grad(set_to_none=True)``'s
        effect on its parameters)."""
        for parameter in self.parameters():
            parameter.grad = None


def code_entropy(codes: torch.Tensor) -> float:
    """Bits the codes actually use: the empirical entropy of each position's ids over the N items of ``codes``
    (N, T), in bits, summed over the T positions. At most T * log2(N) (each position sees N ids), so it measures
    a vocabulary larger than N only from below; compare it with ``bits_per_image`` knowing N."""
    codes = codes.detach().long().cpu()
    if codes.ndim != 2 or not codes.numel():
        raise ValueError(f"codes must be a non-empty (N, T) tensor, got shape {tuple(codes.shape)}.")
    positions = codes.shape[1]
    keys = torch.arange(positions, dtype=torch.long) * MAX_VOCABULARY + codes  # (N, T) distinct per (t, id)
    unique, counts = torch.unique(keys.reshape(-1), return_counts=True)
    probabilities = counts.double() / codes.shape[0]
    return float(-(probabilities * probabilities.log2()).sum())


def code_usage(codes: torch.Tensor, vocabulary_sizes: torch.Tensor) -> float:
    """Fraction of each position's vocabulary that ``codes`` (N, T) hit at least once, averaged over positions
    (at most N / vocabulary size: a set of N items cannot use more)."""
    codes = codes.detach().long().cpu()
    keys = torch.arange(codes.shape[1], dtype=torch.long) * MAX_VOCABULARY + codes
    distinct_per_position = torch.bincount(torch.unique(keys.reshape(-1)) // MAX_VOCABULARY, minlength=codes.shape[1])
    return float((distinct_per_position.double() / vocabulary_sizes.double()).mean())


def check_codes_in_vocabulary(codes: torch.Tensor, vocabulary_sizes: torch.Tensor, name: str = "codes") -> None:
    """Raise a ValueError if any id of ``codes`` (B, T) is outside [0, vocabulary_sizes[t]) at its position t."""
    if not codes.numel():
        return
    sizes = vocabulary_sizes.to(codes.device)
    outside = (codes < 0) | (codes >= sizes)
    if bool(outside.any()):
        batch, position = (int(index) for index in outside.nonzero()[0])
        raise ValueError(f"{name} holds ids outside their position's vocabulary: e.g. {int(codes[batch, position])} "
                         f"at item {batch}, position {position}, which takes ids in [0, {int(sizes[position])}). "
                         "Were they made by a model with another codebook size or quantizer?")
