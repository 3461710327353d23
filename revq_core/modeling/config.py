"""The architecture of a ReVQ tokenizer in one place: ``ModelConfig``.

Every field of the model is listed here once, with its default (the paper's 512-token setting) and a
one-line comment; the config checks itself when it is made, so no builder re-checks it. ``ReVQ(config)``
builds the model from it, the quantizer and rectifier builders read it (``QUANTIZERS[config.quantizer]``,
``RECTIFIERS[config.rectifier]``), ``save_pretrained`` writes ``to_dict()`` (plus the VAE's name) to
config.json and ``from_dict`` reads it back; ``TrainConfig`` holds one as its ``model`` field.

A new hyper-parameter is one field here plus its use in the builder that needs it (docs/extending.md).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from numbers import Integral, Real


@dataclass(frozen=True)
class ModelConfig:
    latent_shape: tuple[int, int, int] = (32, 8, 8)  # (C, H, W) of the VAE latent
    tokens_per_image: int = 512  # T; each token holds D = C*H*W / T numbers
    quantizer: str = "revq"  # an entry of modeling.quantizers.QUANTIZERS
    codes_per_group: int = 16384  # K, codes per codebook (codebook quantizers)
    num_groups: int | None = None  # G codebooks, token t uses t % G; None: T (or 1 for split="single")
    split: str = "channel"  # how tokens are cut: "channel" (paper), "spatial", "single" (one shared codebook)
    levels_per_dim: int = 16  # L, levels per latent number of the scalar quantizers ("scalar", "fsq", "ifsq")
    residual_depth: int = 2  # S, residual stages of "rvq" (K codes each)
    rectifier: str = "vit"  # an entry of modeling.rectifiers.RECTIFIERS: "vit" (paper), "cnn", "mlp", "identity"
    rectifier_width: int = 512
    rectifier_depth: int = 3
    rectifier_residual: bool = False  # latent + rectifier(latent), starting at the identity (not the paper's)
    pre_encoder: str | None = None  # the paper's "extra encoder" ablation: a rectifier kind before the quantizer
    commitment_weight: float = 0.25  # weight of the pre-encoder's commitment loss (unused without one)

    def __post_init__(self):
        shape = tuple(self.latent_shape) if isinstance(self.latent_shape, (tuple, list)) else None
        if shape is None or len(shape) != 3 or not all(_is_whole(size) and size > 0 for size in shape):
            raise ValueError(f"latent_shape must be (C, H, W), three positive integers, got {self.latent_shape!r}.")
        object.__setattr__(self, "latent_shape", tuple(int(size) for size in shape))
        for name in ("tokens_per_image", "rectifier_width", "rectifier_depth"):
            value = getattr(self, name)
            if not _is_whole(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        numbers_per_latent = math.prod(self.latent_shape)
        if numbers_per_latent % self.tokens_per_image:
            divisors = [count for count in range(1, numbers_per_latent + 1) if numbers_per_latent % count == 0]
            raise ValueError(f"tokens_per_image T = {self.tokens_per_image} does not divide C*H*W = "
                             f"{numbers_per_latent} of latent_shape {self.latent_shape}: each token takes "
                             f"D = C*H*W / T numbers; choose T among {divisors[-8:]} (or another divisor).")
        if not isinstance(self.rectifier_residual, bool):
            raise ValueError(f"rectifier_residual must be True or False, got {self.rectifier_residual!r}.")
        weight = self.commitment_weight
        if not isinstance(weight, Real) or isinstance(weight, bool) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"commitment_weight must be a finite number >= 0, got {weight!r}.")
        from revq_core.modeling.quantizers import QUANTIZERS
        from revq_core.modeling.rectifiers import RECTIFIERS

        for name, kind in (("rectifier", self.rectifier), ("pre_encoder", self.pre_encoder)):
            if (kind is not None or name == "rectifier") and kind not in RECTIFIERS:
                raise ValueError(f"{name} must be one of {sorted(RECTIFIERS)}, got {kind!r}.")
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"unknown quantizer {self.quantizer!r}; choose one of {sorted(QUANTIZERS)}.")
        QUANTIZERS[self.quantizer].check_config(self)

    # ---- derived values, computed from the fields (never stored) -------------------------------
    @property
    def code_dim(self) -> int:
        """D = C*H*W / T, the numbers per token."""
        return math.prod(self.latent_shape) // self.tokens_per_image

    @property
    def groups(self) -> int:
        """G, the number of codebooks: ``num_groups``, else one per token position (one for ``split="single"``)."""
        if self.num_groups is not None:
            return self.num_groups
        return 1 if self.split == "single" else self.tokens_per_image

    # ---- config.json ---------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    def to_dict(self) -> dict:
        """The fields as JSON values (``latent_shape`` as a list)."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in ((name, getattr(self, name)) for name in self.field_names())}

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        """A config from ``to_dict()``'s form (config.json, a checkpoint's recipe). Fields missing from ``values``
        take their defaults, so files written before a field existed still load (a field is only ever added
        with the default that reproduces the older behaviour); unknown keys are an error."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {unknown}; the known ones are {list(cls.field_names())}.")
        return cls(**values)

    def replace(self, **changes) -> "ModelConfig":
        """A copy with ``changes`` applied (and checked), e.g. ``config.replace(tokens_per_image=256)``."""
        return dataclasses.replace(self, **changes)


def _is_whole(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)
