"""Classic single-codebook VQ (``vq``): one codebook of K codes shared by all T tokens, k-means initialisation, the
recipe's training (AdamW on the codebook, latent MSE) and the non-activation reset as its dead-code expiry.

This is the paper's "single group" ablation: ``MultiGroupQuantizer`` with ``split="single"``, G = 1, except that
``init="samples"`` (the recipe's default) starts the codebook with k-means (10 Lloyd steps from sampled tokens),
the usual start of a VQ-VAE codebook; ``init="kmeans"`` / ``"random"`` are as for ``revq``.

Why not vector-quantize-pytorch's ``VectorQuantize`` (1.32.0): its two training modes fight the common recipe.
Its default EMA mode updates the codebook inside the forward, outside the optimizer (so not "same recipe, same
steps"); its learnable-codebook mode (``learnable_codebook=True, ema_update=False``) trains with AdamW but then
dead-code expiry (``threshold_ema_dead_code``) never runs, since the cluster-size EMA it reads is updated only
in EMA mode; and its ``kmeans_init`` runs on the first training batch with the global RNG, not on the trainer's
seeded initialisation pool. The contract's own single-codebook quantizer has the same nearest-neighbour search,
loss and reset as ``revq``, so the comparison isolates the one difference: one codebook for all positions
versus one per position. Checkpoint key ``quantizer.codebook`` (1, K, D).
"""
from __future__ import annotations

from revq_core.modeling.quantizers.multigroup import MultiGroupQuantizer, _check_layout


class SingleCodebookQuantizer(MultiGroupQuantizer):
    """One shared codebook (G = 1, channel layout); ``ModelConfig.codes_per_group`` codes of D numbers."""

    def __init__(self, codes_per_group: int, code_dim: int, latent_shape=(32, 8, 8), search_memory_mb: int = 256):
        super().__init__(1, codes_per_group, code_dim, "single", latent_shape, search_memory_mb)

    @classmethod
    def from_config(cls, config) -> "SingleCodebookQuantizer":
        return cls(config.codes_per_group, config.code_dim, config.latent_shape)

    @staticmethod
    def check_config(config) -> None:
        if config.num_groups not in (None, 1) or config.split not in ("channel", "single"):
            raise ValueError(f"quantizer 'vq' has one codebook in the channel layout: leave num_groups (got "
                             f"{config.num_groups!r}) and split (got {config.split!r}) at their defaults.")
        _check_layout(1, config.codes_per_group, config.code_dim, "single", config.latent_shape)

    def init_from_samples(self, latents, method="samples", generator=None, kmeans_iters: int = 10) -> None:
        """k-means for the recipe's default ``samples`` (module docstring); the other methods as ``revq``."""
        super().init_from_samples(latents, "kmeans" if method == "samples" else method, generator, kmeans_iters)
