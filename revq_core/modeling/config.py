"""The architecture of a ReVQ in one place: ``ModelConfig``.

``ReVQ(**fields)`` builds it (and ``save_pretrained`` writes these fields to config.json), ``TrainConfig``
extends it with the recipe, and a saved directory is checked against it. A new architecture field is added
here (and to ``ReVQ.__init__``, which passes it on); the defaults are the paper's 512-token setting.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass
class ModelConfig:
    latent_shape: tuple = (32, 8, 8)  # (C, H, W) of the VAE latent
    tokens_per_image: int = 512  # T; code dimension D = C*H*W / T
    codes_per_group: int = 16384  # K, codes per codebook
    num_groups: int | None = None  # G; None: T (or 1 for split="single")
    split: str = "channel"  # "channel" (paper), "spatial", "single"
    rectifier: str = "vit"  # "vit" (paper), "cnn", "mlp", "identity"
    rectifier_width: int = 512
    rectifier_depth: int = 3
    rectifier_residual: bool = False  # latent + rectifier(latent), starting at the identity (not the paper's)
    pre_encoder: str | None = None  # the paper's "extra encoder" ablation

    @property
    def groups(self) -> int:
        """G, the number of codebooks: ``num_groups``, else one per token position (one for ``single``)."""
        if self.num_groups is not None:
            return self.num_groups
        return 1 if self.split == "single" else self.tokens_per_image

    @property
    def code_dim(self) -> int:
        """D = C*H*W / T."""
        return math.prod(self.latent_shape) // self.tokens_per_image

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(ModelConfig))

    @classmethod
    def of(cls, config) -> "ModelConfig":
        """The model fields of ``config``: a TrainConfig, a dict (config.json) or any object with them;
        missing ones take their defaults."""
        get = config.get if isinstance(config, dict) else (lambda name, default: getattr(config, name, default))
        defaults = ModelConfig()
        values = {name: get(name, getattr(defaults, name)) for name in cls.field_names()}
        values["latent_shape"] = tuple(values["latent_shape"])
        return ModelConfig(**values)

    def as_kwargs(self) -> dict:
        """The fields as ``ReVQ(**kwargs)`` arguments."""
        return {name: getattr(self, name) for name in self.field_names()}
