"""Residual VQ (``rvq``): ``ModelConfig.residual_depth`` = S stages, each one codebook of K codes shared by all T
tokens; stage s quantizes what the stages before it left over (Zeghidour et al. 2021, SoundStream).

    r_0 = token;  c_s = nearest(codebook_s, r_s);  r_{s+1} = r_s - codebook_s[c_s];  quantized = sum_s codebook_s[c_s]

Ids: the S stage codes of a token in mixed radix, ``id = sum_s c_s * K ** s`` (stage 0 least significant), so
a position takes K ** S ids (below 2 ** 31: K ** S <= 2 ** 31) and an image carries T * S * log2(K) bits.

Written here, each stage a ``SingleCodebookQuantizer`` (``quantizers/vq.py``: k-means start, AdamW on the codebook
with the latent MSE of its own residual, the non-activation reset per stage at the end of each epoch), rather
than vector-quantize-pytorch's ``ResidualVQ``, whose layers are its ``VectorQuantize`` with the training modes
that fight the common recipe (vq.py's docstring). Stage s trains on the residual left by the stages before it
(detached), its loss ``MSE(r_s, codebook_s[c_s])``; the loss is the sum over stages. The initialisation is
greedy: stage s starts from k-means on the pool's residuals after stages 0 .. s-1. Usage is the stages'
mean. Checkpoint keys ``quantizer.stages.{s}.codebook`` (1, K, D).

Re-encoding a decoded latent gives its codes back when every stage's code is the nearest to the residual
it sees, which greedy residual search does not promise in general (a later stage's code can move the sum
into another stage-0 cell); in practice it holds for the trained or k-means-initialised codebooks tested.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from revq_core.modeling.quantizers.base import MAX_VOCABULARY, EpochStats, LatentQuantizer, QuantizerOutput
from revq_core.modeling.quantizers.multigroup import _check_layout
from revq_core.modeling.quantizers.vq import SingleCodebookQuantizer
from revq_core.utils.checks import check_codes, check_latent_shape, check_latents


def _check_residual(codes_per_group: int, depth, config_like_shape, code_dim: int) -> None:
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"residual_depth must be a positive integer, got {depth!r}.")
    _check_layout(1, codes_per_group, code_dim, "single", config_like_shape)
    if codes_per_group ** depth > MAX_VOCABULARY:
        raise ValueError(f"quantizer 'rvq': codes_per_group ** residual_depth = {codes_per_group} ** {depth} ids per "
                         f"position overflow the int32 codes (2 ** 31); use fewer codes or stages.")


class ResidualQuantizer(LatentQuantizer):
    """S single-codebook stages on the residuals (module docstring)."""

    reencodes_exactly = False  # greedy residual search (module docstring)

    def __init__(self, depth: int, codes_per_group: int, code_dim: int, latent_shape=(32, 8, 8)):
        super().__init__()
        _check_residual(codes_per_group, depth, tuple(latent_shape), code_dim)
        self.stages = nn.ModuleList(SingleCodebookQuantizer(codes_per_group, code_dim, latent_shape)
                                    for _ in range(depth))
        self.depth, self.codes_per_group, self.code_dim = depth, codes_per_group, code_dim
        self.latent_shape, self.tokens_per_image = self.stages[0].latent_shape, self.stages[0].tokens_per_image
        self.register_buffer("place", codes_per_group ** torch.arange(depth, dtype=torch.long), persistent=False)

    @classmethod
    def from_config(cls, config) -> "ResidualQuantizer":
        return cls(config.residual_depth, config.codes_per_group, config.code_dim, config.latent_shape)

    @staticmethod
    def check_config(config) -> None:
        if config.num_groups not in (None, 1) or config.split not in ("channel", "single"):
            raise ValueError(f"quantizer 'rvq' has one codebook per stage in the channel layout: leave num_groups "
                             f"(got {config.num_groups!r}) and split (got {config.split!r}) at their defaults.")
        _check_residual(config.codes_per_group, config.residual_depth, config.latent_shape, config.code_dim)

    @property
    def vocabulary_sizes(self) -> torch.Tensor:
        return torch.full((self.tokens_per_image,), self.codes_per_group ** self.depth, dtype=torch.long)

    @torch.no_grad()
    def encode(self, latent: torch.Tensor) -> torch.Tensor:
        check_latents(latent, self.latent_shape)
        residual, codes = latent.detach(), 0
        for stage, place in zip(self.stages, self.place.tolist()):
            stage_codes = stage.encode(residual)
            residual = residual - stage.decode(stage_codes)
            codes = codes + stage_codes * place
        return codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        check_codes(codes, self.tokens_per_image, self.vocabulary_size)
        codes = codes.long()
        return sum(stage.decode(codes // place % self.codes_per_group)
                   for stage, place in zip(self.stages, self.place.tolist()))

    def forward(self, latent: torch.Tensor) -> QuantizerOutput:
        check_latent_shape(latent, self.latent_shape)
        residual, quantized, codes, loss = latent.detach(), 0, 0, 0
        for stage, place in zip(self.stages, self.place.tolist()):
            output = stage(residual)  # counts its codes in training mode
            residual = residual - output.quantized.detach()
            quantized = quantized + output.quantized
            codes = codes + output.codes * place
            loss = loss + output.loss
        return QuantizerOutput(quantized, codes, loss)

    def usage(self) -> float:
        return sum(stage.usage() for stage in self.stages) / self.depth

    def end_epoch(self, reset=True, reset_ratio=0.2, reset_noise=0.1, generator=None, all_reduce=None) -> EpochStats:
        stats = [stage.end_epoch(reset, reset_ratio, reset_noise, generator, all_reduce) for stage in self.stages]
        return EpochStats(usage=sum(stat.usage for stat in stats) / self.depth,
                          codes_reset=sum(stat.codes_reset for stat in stats))

    def prepare_training(self, device, distributed: bool = False) -> None:
        for stage in self.stages:
            stage.prepare_training(device, distributed)

    def finish_training(self) -> None:
        for stage in self.stages:
            stage.finish_training()

    def release_gradients(self) -> None:
        for stage in self.stages:
            stage.release_gradients()

    def wants_init_samples(self, method: str) -> bool:
        return method != "random"

    @torch.no_grad()
    def init_from_samples(self, latents, method="samples", generator=None) -> None:
        """Greedy: stage s from the pool's residuals after the stages before it (module docstring)."""
        residual = latents
        for stage in self.stages:
            stage.init_from_samples(residual, method, generator)
            if residual is not None:
                residual = residual - stage.decode(stage.encode(residual))

    def extra_repr(self) -> str:
        return (f"depth={self.depth}, codes_per_group={self.codes_per_group}, tokens_per_image={self.tokens_per_image}, "
                f"code_dim={self.code_dim}")
