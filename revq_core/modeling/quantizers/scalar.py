"""Per-dimension scalar quantization of the normalized latent: ``scalar`` (bins from the training latents'
quantiles, training-free, as TokenBridge quantizes a trained VAE after the fact), and the base class of the
fixed-grid ``fsq`` / ``ifsq`` (``quantizers/fsq.py``).

Every one of the latent's C*H*W numbers is mapped to one of L levels (``ModelConfig.levels_per_dim``). A token
is D = C*H*W / T consecutive numbers in the channel layout (the cut of ``revq``: token t holds the numbers
[t*D, (t+1)*D) of the flattened (C, H, W) latent), and its id is the mixed-radix number of its D level
indices, the first number least significant:

    id = sum_d level[t*D + d] * L ** d,       vocabulary L ** D per position, bits per image C*H*W * log2(L)

so the bits do not depend on T (T only groups the numbers into ids; L ** D must stay below 2 ** 31, the codes
file's int32). Below 1 bit per number (L = 2) no scalar quantizer of this latent can go: 2048 bits for the
embedded 32 x 8 x 8 latent.

``scalar`` (written here; vector-quantize-pytorch has no post-training quantile quantizer): per channel c
(its H*W positions pooled, the statistics a convolutional VAE shares over space), ``init_from_samples`` sorts
the M = N*H*W training values and sets L - 1 equal-mass edges ``edge_k = sorted[floor(k * M / L)]``, k = 1 .. L-1;
a number x falls in bin ``#{k: edge_k <= x}`` (so bin k holds the sorted values [floor(k M / L), floor((k+1) M / L))),
and decodes to its bin's centre: the **conditional mean** of the training values in the bin (the MSE-optimal
value for fixed edges, always inside its bin; an empty bin, possible only with tied values, takes its lower
edge, or edge_1 - 1 for bin 0). No trainable parameters: the edges and centres are persistent buffers
(``quantizer.edges`` (C, L-1), ``quantizer.centres`` (C, L)), so a saved model keeps its bins; training
only fits the rectifier. Usage counts the levels each of the C*H*W numbers takes in training-mode forwards.
"""
from __future__ import annotations

import math
from statistics import NormalDist

import torch
import torch.nn.functional as F

from revq_core.modeling.quantizers.base import MAX_VOCABULARY, LatentQuantizer, QuantizerOutput
from revq_core.modeling.quantizers.reset import CodeUsage
from revq_core.utils.checks import check_codes, check_latent_shape, check_latents, check_not_empty


def check_scalar_layout(latent_shape: tuple[int, ...], tokens_per_image: int, levels: int, minimum: int = 2,
                        name: str = "scalar") -> None:
    """Raise a one-line ValueError if L levels per number cannot make ids of T tokens (shared by the family)."""
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < minimum:
        raise ValueError(f"levels_per_dim must be an integer >= {minimum} for quantizer {name!r}, got {levels!r}.")
    code_dim = math.prod(latent_shape) // tokens_per_image
    if levels ** code_dim > MAX_VOCABULARY:
        most = max(count for count in range(minimum, levels) if count ** code_dim <= MAX_VOCABULARY) \
            if minimum ** code_dim <= MAX_VOCABULARY else None
        hint = f"use levels_per_dim <= {most} or more tokens" if most else "use more tokens_per_image (smaller D)"
        raise ValueError(f"quantizer {name!r}: levels_per_dim ** D = {levels} ** {code_dim} ids per position "
                         f"overflow the int32 codes (2 ** 31); {hint}.")


def normal_medians(levels: int) -> list[float]:
    """The medians of the L equal-mass bins of N(0, 1): Phi^-1((k + 1/2) / L), k = 0 .. L-1."""
    return [NormalDist().inv_cdf((k + 0.5) / levels) for k in range(levels)]


class ScalarGridQuantizer(LatentQuantizer):
    """L levels per number, ids = D level indices in mixed radix. Subclasses say how a number (B, N) becomes a
    level (``levels_of``) and what a level decodes to (``values_of``); N = C*H*W in channel order."""

    name = "scalar"
    minimum_levels = 2

    def __init__(self, latent_shape: tuple[int, int, int], tokens_per_image: int, levels: int):
        super().__init__()
        self.latent_shape = tuple(int(size) for size in latent_shape)
        self.tokens_per_image = tokens_per_image
        check_scalar_layout(self.latent_shape, tokens_per_image, levels, self.minimum_levels, self.name)
        self.levels = levels
        self.numbers = math.prod(self.latent_shape)
        self.code_dim = self.numbers // tokens_per_image
        self.register_buffer("place", levels ** torch.arange(self.code_dim, dtype=torch.long), persistent=False)
        self.level_usage: CodeUsage | None = None  # this epoch's (number, level) counts, made by the first forward

    @classmethod
    def from_config(cls, config) -> "ScalarGridQuantizer":
        return cls(config.latent_shape, config.tokens_per_image, config.levels_per_dim)

    @classmethod
    def check_config(cls, config) -> None:
        check_scalar_layout(config.latent_shape, config.tokens_per_image, config.levels_per_dim,
                            cls.minimum_levels, cls.name)

    @property
    def vocabulary_sizes(self) -> torch.Tensor:
        return torch.full((self.tokens_per_image,), self.levels ** self.code_dim, dtype=torch.long)

    # ---- to be defined by the subclass ------------------------------------------------------------
    def levels_of(self, numbers: torch.Tensor) -> torch.Tensor:
        """(B, N) normalized latent numbers -> (B, N) int64 level indices in [0, L)."""
        raise NotImplementedError

    def values_of(self, levels: torch.Tensor) -> torch.Tensor:
        """(B, N) level indices -> (B, N) the latent values they decode to."""
        raise NotImplementedError

    # ---- ids ----------------------------------------------------------------------------------------
    def pack(self, levels: torch.Tensor) -> torch.Tensor:
        """(B, N) level indices -> (B, T) ids."""
        return (levels.view(levels.shape[0], self.tokens_per_image, self.code_dim) * self.place).sum(-1)

    def unpack(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, N) level indices."""
        return (codes[..., None] // self.place % self.levels).reshape(codes.shape[0], self.numbers)

    @torch.no_grad()
    def encode(self, latent: torch.Tensor) -> torch.Tensor:
        check_latents(latent, self.latent_shape)
        return self.pack(self.levels_of(latent.detach().reshape(latent.shape[0], self.numbers).float()))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        check_codes(codes, self.tokens_per_image, self.vocabulary_size)
        levels = self.unpack(codes.to(self.place.device).long())
        return self.values_of(levels).reshape(codes.shape[0], *self.latent_shape)

    def forward(self, latent: torch.Tensor) -> QuantizerOutput:
        """No gradient to anything: the grid is fixed (or fitted once), and the latent is the frozen VAE's."""
        check_latent_shape(latent, self.latent_shape)
        with torch.no_grad():
            levels = self.levels_of(latent.detach().reshape(latent.shape[0], self.numbers).float())  # (B, N)
            quantized = self.values_of(levels).reshape(latent.shape).to(latent.dtype)
        if self.training:
            self._counts(levels.device).update(levels)
        return QuantizerOutput(quantized, self.pack(levels), F.mse_loss(quantized, latent.detach()))

    # ---- usage: levels taken by each number ---------------------------------------------------------
    def _counts(self, device: torch.device) -> CodeUsage:
        if self.level_usage is None:
            self.level_usage = CodeUsage(self.numbers, self.levels, torch.arange(self.numbers, device=device))
        return self.level_usage

    def usage(self) -> float:
        """Fraction of the L levels each number took since the last ``end_epoch``, averaged over the numbers."""
        return self._counts(self.place.device).usage()

    def end_epoch(self, reset=True, reset_ratio=0.2, reset_noise=0.1, generator=None, all_reduce=None):
        counts = self._counts(self.place.device)
        if all_reduce is not None:
            all_reduce(counts.counts)
        stats = super().end_epoch()
        stats.usage = counts.usage()
        counts.zero_()
        return stats

    def extra_repr(self) -> str:
        return (f"levels={self.levels}, tokens_per_image={self.tokens_per_image}, code_dim={self.code_dim}, "
                f"latent_shape={self.latent_shape}")


class ScalarQuantizer(ScalarGridQuantizer):
    """Training-free quantile bins per channel (module docstring); ``init_from_samples`` fits them."""

    name = "scalar"

    def __init__(self, latent_shape: tuple[int, int, int], tokens_per_image: int, levels: int):
        super().__init__(latent_shape, tokens_per_image, levels)
        channels = self.latent_shape[0]
        # Until fitted: the N(0, 1) quantiles (the normalized latent's scale), so an unfitted model still works.
        normal = NormalDist()  # plain Python: the model may be built on the 'meta' device (from_pretrained)
        edges = torch.tensor([normal.inv_cdf(k / levels) for k in range(1, levels)])
        centres = torch.tensor(normal_medians(levels))
        self.register_buffer("edges", edges.repeat(channels, 1))  # (C, L-1), ascending
        self.register_buffer("centres", centres.repeat(channels, 1))  # (C, L)
        self.register_buffer("channel_of_number", torch.arange(self.numbers) // (self.numbers // channels),
                             persistent=False)  # (N,)

    def levels_of(self, numbers: torch.Tensor) -> torch.Tensor:
        channels, _, _ = self.latent_shape
        per_channel = numbers.reshape(numbers.shape[0], channels, -1).transpose(0, 1).reshape(channels, -1)
        levels = torch.searchsorted(self.edges, per_channel.contiguous(), right=True)  # (C, B*H*W)
        return levels.reshape(channels, numbers.shape[0], -1).transpose(0, 1).reshape(numbers.shape)

    def values_of(self, levels: torch.Tensor) -> torch.Tensor:
        rows = self.channel_of_number.to(levels.device) * self.levels + levels  # (B, N) into centres.view(-1)
        return self.centres.reshape(-1)[rows]

    def wants_init_samples(self, method: str) -> bool:
        return True  # the bins come from data whatever the init method

    @torch.no_grad()
    def init_from_samples(self, latents, method="samples", generator=None) -> None:
        """Equal-mass edges and conditional-mean centres per channel from training latents (N, C, H, W)."""
        check_latents(latents, self.latent_shape)
        check_not_empty(latents, "latents (the scalar quantizer's bins come from training latents)")
        channels = self.latent_shape[0]
        values = latents.detach().to(self.edges.device, torch.float32).transpose(0, 1).reshape(channels, -1)
        ordered = values.sort(dim=1).values  # (C, M)
        count = ordered.shape[1]
        picks = torch.arange(1, self.levels, device=ordered.device) * count // self.levels  # (L-1,)
        edges = ordered[:, picks]  # (C, L-1)
        bins = torch.searchsorted(edges, ordered, right=True)  # (C, M)
        rows = (torch.arange(channels, device=bins.device)[:, None] * self.levels + bins).reshape(-1)
        sums = torch.zeros(channels * self.levels, dtype=torch.float64, device=bins.device)
        sums.index_add_(0, rows, ordered.reshape(-1).double())
        counts = torch.bincount(rows, minlength=channels * self.levels).view(channels, self.levels)
        empty_value = torch.cat([edges[:, :1] - 1, edges], dim=1)  # (C, L): a value inside each bin
        centres = torch.where(counts > 0, (sums.view(channels, self.levels) / counts.clamp(min=1)).float(), empty_value)
        self.edges.copy_(edges)
        self.centres.copy_(centres)
