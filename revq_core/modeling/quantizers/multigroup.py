"""Channel multi-group vector quantizer (the paper's CMGQ), with spatial and single-group variants.

A latent (B, C, H, W) is cut into T tokens of D = C*H*W / T numbers. Token t is quantized with
codebook ``t % G`` (G = T: every token position has its own codebook of K codes; G = 1: one shared
codebook, the classic VQ-VAE). The codebook is one parameter of shape (G, K, D).

Split axis (docs/method.md, "Quantizer"):
- ``channel``: flatten the latent in its natural (C, H, W) order and cut it into T consecutive
  chunks, so a token never mixes channels while D <= H*W.
- ``spatial``: flatten in (H, W, C) order (a token is the C-vector at one position); when T > H*W
  each vector is split again along channels (the paper's secondary split), when T < H*W a token
  holds the C-vectors of D/C neighbouring positions.
- ``single``: channel layout with a single codebook shared by all tokens (G must be 1).

Training (docs/method.md, "Quantizer"): loss = MSE(tokens, codebook[codes]). The nearest-neighbour search runs
without autograd, the gather does not, so the gradient moves only the selected codes toward their
data (online k-means by SGD). Nothing upstream is trained, so no straight-through estimator.

The codebook maintains itself (the contract's hooks, ``quantizers/base.py``): in training mode the forward
counts the codes it selects, ``end_epoch`` applies the non-activation reset (``reset.py``) and zeroes the
counts, ``init_from_samples`` starts the codebooks from training tokens, and ``prepare_training`` turns on
the CPU speed trick of ``ops/codebook_grad.py`` (same numbers) for the duration of ``train()``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from revq_core.modeling.quantizers.base import INIT_METHODS, EpochStats, LatentQuantizer, QuantizerOutput
from revq_core.modeling.quantizers.reset import CodeUsage, reset_unused_codes
from revq_core.ops import codebook_grad
from revq_core.ops.search import nearest_codes
from revq_core.utils.checks import check_codes, check_latent_shape, check_latents, check_not_empty

SPLITS = ("channel", "spatial", "single")


class MultiGroupQuantizer(LatentQuantizer):
    """Multi-group nearest-neighbour quantizer over a latent of shape ``latent_shape`` = (C, H, W).

    Args:
        num_groups: G, the number of codebooks; must divide T. T for the paper's CMGQ, 1 for ``single``.
        codes_per_group: K, codes in each codebook.
        code_dim: D, numbers per token; T = C*H*W / D.
        split: "channel" (paper), "spatial" or "single".
        latent_shape: (C, H, W) of one latent, (32, 8, 8) for DC-AE f32c32 at 256 x 256.
        search_memory_mb: bound on the distance matrix built per search chunk.

    ``in_place_grad``: None (a fresh codebook gradient each backward, as any module), or the
    ``ops.codebook_grad.InPlaceCodebookGrad`` that ``prepare_training`` sets on the CPU (same numbers).
    ``code_usage``: the ``reset.CodeUsage`` counts of the current epoch (made by the first training forward).
    """

    def __init__(self, num_groups: int, codes_per_group: int, code_dim: int, split: str = "channel",
                 latent_shape: tuple[int, int, int] = (32, 8, 8), search_memory_mb: int = 256):
        super().__init__()
        latent_shape = tuple(int(size) for size in latent_shape)
        tokens_per_image = _check_layout(num_groups, codes_per_group, code_dim, split, latent_shape)
        self.num_groups = num_groups
        self.codes_per_group = codes_per_group
        self.code_dim = code_dim
        self.split = split
        self.latent_shape = latent_shape
        self.tokens_per_image = tokens_per_image
        self.search_memory_mb = search_memory_mb
        self.in_place_grad = None  # ops.codebook_grad.InPlaceCodebookGrad, set by prepare_training on the CPU
        self.code_usage: CodeUsage | None = None  # this epoch's counts, made by the first training forward
        self.codebook = nn.Parameter(torch.randn(num_groups, codes_per_group, code_dim))  # (G, K, D)
        # Token t uses codebook t % G; as a flat row offset into codebook.view(G*K, D):
        self.register_buffer("group_of_token", torch.arange(tokens_per_image) % num_groups, persistent=False)

    @classmethod
    def from_config(cls, config) -> "MultiGroupQuantizer":
        """The quantizer a ``ModelConfig`` describes: G = ``config.groups`` codebooks of K codes of D numbers."""
        return cls(config.groups, config.codes_per_group, config.code_dim, config.split, config.latent_shape)

    @staticmethod
    def check_config(config) -> None:
        _check_layout(config.groups, config.codes_per_group, config.code_dim, config.split, config.latent_shape)

    @property
    def vocabulary_sizes(self) -> torch.Tensor:
        """(T,): K at every position (each position's codebook has K codes)."""
        return torch.full((self.tokens_per_image,), self.codes_per_group, dtype=torch.long)

    # ---- layout -------------------------------------------------------------------------------
    def to_tokens(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, T, D) in the order of ``split``."""
        if self.split == "spatial":
            latent = latent.permute(0, 2, 3, 1)  # (B, H, W, C)
        return latent.reshape(latent.shape[0], self.tokens_per_image, self.code_dim)

    def to_latent(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, C, H, W), the inverse of ``to_tokens``."""
        channels, height, width = self.latent_shape
        if self.split == "spatial":
            return tokens.reshape(-1, height, width, channels).permute(0, 3, 1, 2).contiguous()
        return tokens.reshape(-1, channels, height, width)

    def group_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (G, B * T/G, D): the tokens each codebook sees, rows in (b, t // G) order."""
        batch = tokens.shape[0]
        tokens_per_group = self.tokens_per_image // self.num_groups
        grouped = tokens.reshape(batch, tokens_per_group, self.num_groups, self.code_dim)
        return grouped.permute(2, 0, 1, 3).reshape(self.num_groups, batch * tokens_per_group, self.code_dim)

    def ungroup_codes(self, grouped_codes: torch.Tensor, batch: int) -> torch.Tensor:
        """(G, B * T/G) -> (B, T), the inverse of ``group_tokens`` for code ids."""
        tokens_per_group = self.tokens_per_image // self.num_groups
        codes = grouped_codes.reshape(self.num_groups, batch, tokens_per_group).permute(1, 2, 0)
        return codes.reshape(batch, self.tokens_per_image)

    # ---- quantization -------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, latent: torch.Tensor) -> torch.Tensor:
        """Nearest code per token: (B, C, H, W) -> (B, T) int64. Exact; ties go to the lowest index."""
        check_latents(latent, self.latent_shape)
        return self._encode_tokens(self.to_tokens(latent))

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        grouped = self.group_tokens(tokens.detach().to(self.codebook.dtype))  # (G, N, D)
        with torch.autocast(tokens.device.type, enabled=False):  # exact search: never in bf16/fp16 autocast
            grouped_codes = nearest_codes(grouped, self.codebook.detach(), self.search_memory_mb)  # (G, N)
        return self.ungroup_codes(grouped_codes, tokens.shape[0])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, T) -> token vectors (B, T, D), differentiable w.r.t. the codebook."""
        flat_rows = self.group_of_token * self.codes_per_group + codes  # (B, T) rows of (G*K, D)
        # index_select: its backward (index_add) is deterministic on CPU, unlike advanced indexing's.
        if self.in_place_grad is not None and self.codebook.requires_grad and torch.is_grad_enabled():
            rows = self.in_place_grad.lookup(flat_rows.reshape(-1))  # (B*T, D), gradient added in place
        else:
            rows = self.codebook.reshape(-1, self.code_dim).index_select(0, flat_rows.reshape(-1))  # (B*T, D)
        return rows.view(*codes.shape, self.code_dim)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, T) -> quantized latent (B, C, H, W)."""
        check_codes(codes, self.tokens_per_image, self.codes_per_group)
        return self.to_latent(self.lookup(codes.to(self.codebook.device)))

    def forward(self, latent: torch.Tensor) -> QuantizerOutput:
        """Quantize (B, C, H, W); the loss trains only the selected codes. Only the shape is checked (a
        training step; ``encode`` also checks the values). In training mode the codes are counted for
        ``end_epoch``."""
        check_latent_shape(latent, self.latent_shape)
        tokens = self.to_tokens(latent)  # (B, T, D)
        codes = self._encode_tokens(tokens)  # (B, T)
        quantized_tokens = self.lookup(codes)  # (B, T, D)
        loss = F.mse_loss(quantized_tokens, tokens.detach().to(quantized_tokens.dtype))
        if self.training:
            self._counts(codes.device).update(codes)
        return QuantizerOutput(self.to_latent(quantized_tokens), codes, loss)

    # ---- code usage and the non-activation reset ------------------------------------------------
    def _counts(self, device: torch.device) -> CodeUsage:
        if self.code_usage is None:
            self.code_usage = CodeUsage(self.num_groups, self.codes_per_group, self.group_of_token.to(device))
        return self.code_usage

    def usage(self) -> float:
        """Fraction of codes selected since the last ``end_epoch``, averaged over the G codebooks."""
        return self._counts(self.codebook.device).usage()

    @torch.no_grad()
    def end_epoch(self, reset: bool = True, reset_ratio: float = 0.2, reset_noise: float = 0.1,
                  generator: torch.Generator | None = None,
                  all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> EpochStats:
        """The non-activation reset of this epoch's unused codes (``reset.reset_unused_codes``; ``reset=False``
        only reads the usage), then the counts go back to zero. Over ranks, ``all_reduce`` sums the counts
        (G, K) first, so every rank resets the same codes."""
        counts = self._counts(self.codebook.device)
        if all_reduce is not None:
            all_reduce(counts.counts)
        if reset:
            stats = reset_unused_codes(self.codebook.data, counts.counts, reset_ratio, reset_noise, generator)
            result = EpochStats(usage=stats.usage, codes_reset=stats.codes_reset)
        else:
            result = EpochStats(usage=counts.usage(), codes_reset=0)
        counts.zero_()
        return result

    # ---- training-time speed settings ------------------------------------------------------------
    def prepare_training(self, device: torch.device, distributed: bool = False) -> None:
        """On the CPU, the codebook gradient is added in place into one kept tensor (``ops/codebook_grad.py``:
        no fresh codebook-sized page faults per step, the same numbers): straight into the rows the batch
        touched in one process, through autograd (so DDP's all-reduce sees it) over several ranks. On CUDA
        the caching allocator already reuses the memory: the plain lookup stays."""
        if torch.device(device).type != "cpu":
            self.finish_training()
        else:
            self.in_place_grad = codebook_grad.InPlaceCodebookGrad(self.codebook, "sparse" if distributed else "rows")

    def finish_training(self) -> None:
        self.in_place_grad = None

    def release_gradients(self) -> None:
        """Zero the kept codebook gradient in place where ``prepare_training`` set one up, else drop it."""
        if self.in_place_grad is not None:
            self.in_place_grad.zero_grad()
        else:
            super().release_gradients()

    # ---- initialisation -----------------------------------------------------------------------
    def wants_init_samples(self, method: str) -> bool:
        return method != "random"

    @torch.no_grad()
    def init_from_samples(self, latents: torch.Tensor | None, method: str = "samples",
                          generator: torch.Generator | None = None, kmeans_iters: int = 10) -> None:
        """Set each codebook from training data: latents (N, C, H, W), N >= 1, any N.

        ``samples`` (the paper): the K codes of group g are copies of group-g tokens of ``latents`` (there are
        M = N * T/G of them). Where M >= K they are K distinct tokens, drawn without replacement; where M < K
        they are drawn with replacement, as the authors draw theirs from a cached subset of training latents
        (so any K works with any amount of data; the duplicate codes are spread out by the first resets).
        ``kmeans``: start there, then ``kmeans_iters`` Lloyd steps per group (empty clusters keep their code).
        ``random``: N(0, 1) codes, the scale of normalized latents, no data (``latents`` may be None); the
        toy / ablation setting.
        The draws come from ``generator`` (default: seeded with 0), group after group.
        """
        if method not in INIT_METHODS:
            raise ValueError(f"method must be one of {INIT_METHODS}, got {method!r}.")
        generator = generator or torch.Generator().manual_seed(0)
        if method == "random":
            self.codebook.copy_(torch.randn(self.codebook.shape, generator=generator))
            return
        check_latents(latents, self.latent_shape)
        check_not_empty(latents, "latents (init_from_samples needs at least one training latent)")
        tokens = self.to_tokens(latents)  # (N, T, D): a view of latents for the channel and single splits
        tokens_per_group = self.tokens_per_image // self.num_groups
        by_group = tokens.reshape(latents.shape[0], tokens_per_group, self.num_groups, self.code_dim)
        for group in range(self.num_groups):
            samples = by_group[:, :, group].flatten(0, 1)  # (M, D), M = N * T/G, in group_tokens' order
            if samples.shape[0] >= self.codes_per_group:
                picks = torch.randperm(samples.shape[0], generator=generator)[: self.codes_per_group]
            else:
                picks = torch.randint(samples.shape[0], (self.codes_per_group,), generator=generator)
            self.codebook[group] = samples.index_select(0, picks.to(samples.device)).to(self.codebook)
        if method == "kmeans":
            grouped = self.group_tokens(tokens.to(self.codebook.dtype))  # (G, M, D)
            self._kmeans(grouped.to(self.codebook.device), kmeans_iters)

    def _kmeans(self, grouped: torch.Tensor, iterations: int) -> None:
        """Lloyd iterations on grouped tokens (G, M, D), all groups at once."""
        group_rows = torch.arange(self.num_groups, device=grouped.device)[:, None] * self.codes_per_group
        for _ in range(iterations):
            codes = nearest_codes(grouped, self.codebook, self.search_memory_mb)  # (G, M)
            flat = (codes + group_rows).reshape(-1)
            sums = torch.zeros(self.num_groups * self.codes_per_group, self.code_dim,
                               dtype=grouped.dtype, device=grouped.device)
            sums.index_add_(0, flat, grouped.reshape(-1, self.code_dim))
            counts = torch.bincount(flat, minlength=sums.shape[0]).to(grouped.dtype)[:, None]
            means = (sums / counts.clamp(min=1)).view_as(self.codebook)
            self.codebook.copy_(torch.where(counts.view(self.num_groups, -1, 1) > 0, means, self.codebook))

    def extra_repr(self) -> str:
        return (f"split={self.split}, tokens_per_image={self.tokens_per_image}, num_groups={self.num_groups}, "
                f"codes_per_group={self.codes_per_group}, code_dim={self.code_dim}, latent_shape={self.latent_shape}")


def _check_layout(num_groups: int, codes_per_group: int, code_dim: int, split: str,
                  latent_shape: tuple[int, ...]) -> int:
    """Validate a multi-group layout (the one check of both ``check_config`` and the constructor); return T."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    if len(latent_shape) != 3:
        raise ValueError(f"latent_shape must be (C, H, W), got {latent_shape}.")
    numbers_per_latent = math.prod(latent_shape)
    for name, value in (("num_groups", num_groups), ("codes_per_group", codes_per_group), ("code_dim", code_dim)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if numbers_per_latent % code_dim:
        raise ValueError(f"code_dim D = {code_dim} does not divide C*H*W = {numbers_per_latent} of latent_shape "
                         f"{latent_shape}; T = C*H*W / D must be a whole number of tokens "
                         f"(e.g. D = {numbers_per_latent // 512} for 512 tokens).")
    tokens_per_image = numbers_per_latent // code_dim
    if tokens_per_image % num_groups:
        raise ValueError(f"num_groups G = {num_groups} must divide the T = {tokens_per_image} tokens "
                         f"(token t uses codebook t % G); use G = T = {tokens_per_image} for the paper's setting.")
    if split == "single" and num_groups != 1:
        raise ValueError(f"split='single' shares one codebook among all tokens: num_groups must be 1, got {num_groups}.")
    if split == "spatial":
        channels = latent_shape[0]
        if code_dim < channels and channels % code_dim or code_dim > channels and code_dim % channels:
            raise ValueError(f"split='spatial' needs D = {code_dim} to divide C = {channels} (secondary split) "
                             f"or be a multiple of it (several positions per token).")
    return tokens_per_image

