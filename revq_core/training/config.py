"""What a training run is: ``TrainConfig`` (the model's ``ModelConfig``, the recipe, machine and speed
settings), the named presets (the paper's three ImageNet settings, the CPU demo, a seconds-long tiny run).
A config checks itself when it is made (``ModelConfig`` its fields, ``TrainConfig`` the recipe's), so no
caller re-checks it.

    config = preset("paper_512T", epochs=10)            # model fields are accepted too:
    config = preset("demo", codes_per_group=4096)       # -> config.model.codes_per_group == 4096"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from numbers import Integral, Real

from revq_core.modeling.config import ModelConfig
from revq_core.modeling.quantizers.base import INIT_METHODS

MACHINE_FIELDS = ("device", "num_threads", "val_batch_size", "fused_adamw", "autocast_bf16", "compile_rectifier")


@dataclass(frozen=True)
class TrainConfig:
    """A training run: ``model`` (the architecture, ``ModelConfig``), then the recipe, the machine and the speed
    settings. Build one with ``preset(name, **overrides)``, or ``TrainConfig(model=ModelConfig(...), ...)``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    # recipe
    epochs: int = 100
    batch_size: int = 256
    quantizer_lr: float = 1e-2
    rectifier_lr_ratio: float = 0.05  # rectifier lr = ratio x quantizer lr
    rectifier_weight_decay: float = 1e-4
    betas: tuple = (0.9, 0.999)
    final_lr_fraction: float = 0.05  # ExponentialLR gamma = final_lr_fraction ** (1 / epochs)
    grad_clip: float = 1.0  # per parameter group (quantizer, rectifier)
    reset: bool = True  # non-activation reset after each epoch
    reset_ratio: float = 0.2
    reset_noise: float = 0.1
    init: str = "samples"  # codebook init: "samples" (paper), "kmeans", or "random" (N(0, 1), no data)
    # How many training latents (a random subset) the codebook init draws its codes from; None: all. The
    # authors cache 524,288 for it. Fewer tokens per group than K: codes drawn with replacement.
    init_latents: int | None = 524_288
    seed: int = 42
    # machine
    device: str = "cpu"
    num_threads: int | None = None  # torch.set_num_threads on CPU; None leaves it
    val_batch_size: int = 256
    # speed settings (off by default: results then stay bit-identical; benchmarks/README.md has measurements)
    fused_adamw: bool = False  # torch's fused AdamW kernel (CPU and GPU); same maths, last-bit differences
    autocast_bf16: bool = False  # GPU: bf16 autocast of the rectifier and losses; the code search stays float32
    # GPU: torch.compile the rectifier (nn.Module.compile; state-dict keys unchanged); True: the default
    # mode, or a mode name ("reduce-overhead": CUDA graphs, measured fastest on an H100)
    compile_rectifier: bool | str = False

    def __post_init__(self):
        if not isinstance(self.model, ModelConfig):
            raise TypeError(f"model must be a ModelConfig, got {type(self.model).__name__}.")
        object.__setattr__(self, "betas", tuple(self.betas) if isinstance(self.betas, (tuple, list)) else self.betas)
        _check_recipe(self)

    def recipe_dict(self) -> dict:
        """What defines the result, flat: the model's fields, then the recipe's (not the machine and speed
        settings). Checkpoints store it, and a resume compares it field by field."""
        recipe = {name: _jsonable(getattr(self, name)) for name in self.field_names()
                  if name not in MACHINE_FIELDS and name != "model"}
        return {**self.model.to_dict(), **recipe}

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    def replace(self, **overrides) -> "TrainConfig":
        """A copy with fields overridden; ``ModelConfig`` field names go to ``model``
        (``config.replace(epochs=3, tokens_per_image=256)``). Unknown names are an error."""
        model_names, train_names = set(ModelConfig.field_names()), set(self.field_names()) - {"model"}
        unknown = sorted(set(overrides) - model_names - train_names - {"model"})
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; TrainConfig has {sorted(train_names)} and its "
                             f"model (ModelConfig) has {sorted(model_names)}.")
        model_changes = {name: value for name, value in overrides.items() if name in model_names}
        model = overrides.get("model", self.model)
        if model_changes:
            model = model.replace(**model_changes)
        return dataclasses.replace(self, **{name: value for name, value in overrides.items() if name in train_names},
                                   model=model)


def _check_recipe(config: TrainConfig) -> None:
    """Raise a one-line ValueError (TypeError for a wrong type) naming the recipe or machine field that cannot
    work; the model's fields were checked by ``ModelConfig``."""
    def is_whole(value) -> bool:
        return isinstance(value, Integral) and not isinstance(value, bool)

    def is_number(value) -> bool:
        return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)

    for name in ("epochs", "batch_size", "val_batch_size"):
        value = getattr(config, name)
        if not is_whole(value) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}; set it with preset(..., {name}=<n>).")
    if not is_whole(config.seed):
        raise TypeError(f"seed must be an integer, got {config.seed!r}.")
    for name in ("quantizer_lr", "rectifier_lr_ratio", "grad_clip"):
        value = getattr(config, name)
        if not is_number(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    for name in ("rectifier_weight_decay", "reset_noise"):
        value = getattr(config, name)
        if not is_number(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    if not is_number(config.reset_ratio) or not 0 <= config.reset_ratio <= 1:
        raise ValueError(f"reset_ratio must be in [0, 1] (the most codes a reset moves, as a fraction of K), "
                         f"got {config.reset_ratio!r}.")
    fraction = config.final_lr_fraction
    if not is_number(fraction) or not 0 < fraction <= 1:
        raise ValueError(f"final_lr_fraction must be in (0, 1] (the learning rate at the end over the one at the start; "
                         f"1 keeps it constant), got {fraction!r}.")
    betas = config.betas
    if not isinstance(betas, tuple) or len(betas) != 2 or not all(is_number(beta) and 0 <= beta < 1 for beta in betas):
        raise ValueError(f"betas must be two numbers in [0, 1) (AdamW's moment decays), got {betas!r}.")
    if config.init not in INIT_METHODS:
        raise ValueError(f"init must be one of {INIT_METHODS}, got {config.init!r}.")
    if config.init_latents is not None and (not is_whole(config.init_latents) or config.init_latents < 1):
        raise ValueError(f"init_latents must be a positive integer or None (all), got {config.init_latents!r}.")
    if config.num_threads is not None and (not is_whole(config.num_threads) or config.num_threads < 1):
        raise ValueError(f"num_threads must be a positive integer or None, got {config.num_threads!r}.")


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


PRESETS = {
    # The paper's three ImageNet settings (authors' released configs).
    "paper_512T": TrainConfig(),
    "paper_256T_65k": TrainConfig(ModelConfig(tokens_per_image=256, codes_per_group=65536, rectifier_width=1024,
                                              rectifier_depth=4)),
    "paper_256T_262k": TrainConfig(ModelConfig(tokens_per_image=256, codes_per_group=262144, rectifier_width=512,
                                               rectifier_depth=4), batch_size=128),
    # The embedded default on a 2-core CPU: the paper's 512 tokens of D = 4, a smaller K and rectifier
    # (8 epochs on the 8192 embedded training latents: ~30 s on 2 cores). K: measured on those latents,
    # validation MSE 0.098 at K = 256, 0.059 at 1024, 0.046 at 2048, 0.035 at 4096 (usage 99 %).
    # In 512 steps a rectifier this small cannot first learn the identity: measured, the paper's form ends
    # far above the quantizer's own validation MSE (0.318 vs 0.047 at K = 2048), so the demo's starts at the
    # identity (rectifier_residual) and ends below it (0.046).
    "demo": TrainConfig(ModelConfig(codes_per_group=2048, rectifier_width=32, rectifier_depth=1,
                                    rectifier_residual=True), epochs=8, batch_size=128, init_latents=None),
    # Seconds-long runs for tests and smoke checks.
    "tiny": TrainConfig(ModelConfig(tokens_per_image=64, codes_per_group=16, rectifier_width=32, rectifier_depth=1),
                        epochs=2, batch_size=16, init_latents=None),
}


def preset(name: str, **overrides) -> TrainConfig:
    """A copy of a named preset with fields overridden, e.g. ``preset("demo", epochs=3)``; model fields go to
    its ``model`` (``preset("demo", quantizer="revq", codes_per_group=4096)``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return PRESETS[name].replace(**overrides)


def preset_for_latent(name: str, latent_shape: tuple[int, int, int], code_dim: int = 4, **overrides) -> TrainConfig:
    """A preset resized for another VAE's latent (C, H, W): the paper's token layout carried over.

    ``tokens_per_image`` = C*H*W / ``code_dim`` (the paper's 512T layout has D = 4: each token is 4 channels of
    one position), and the rectifier width rounded up to a multiple of C and of the ViT's attention head
    dimension (32). E.g. an SD VAE at 256 x 256 (4 x 32 x 32): 1024 tokens of D = 4; FLUX (16 x 32 x 32): 4096.
    ``overrides`` as in ``preset``, applied last.
    """
    latent_shape = tuple(int(size) for size in latent_shape)
    numbers_per_latent = math.prod(latent_shape)
    if len(latent_shape) != 3 or numbers_per_latent % code_dim or latent_shape[0] % code_dim:
        raise ValueError(f"code_dim {code_dim} must divide the latent's channels C (latent_shape (C, H, W) = "
                         f"{latent_shape}): each token takes code_dim channels of one position.")
    base = preset(name)
    step = math.lcm(latent_shape[0], 32)
    width = -(-base.model.rectifier_width // step) * step
    sized = {"latent_shape": latent_shape, "tokens_per_image": numbers_per_latent // code_dim, "rectifier_width": width}
    return preset(name, **{**sized, **overrides})


def speed_settings(device: str) -> dict:
    """The speed settings that pay on ``device`` (TrainConfig overrides): on CUDA bf16 autocast, fused
    AdamW and the rectifier compiled with CUDA graphs (measured 2.7x revq's fp32 step on an H100,
    benchmarks/README.md); none on the CPU, where results then stay bit-identical and compiling costs
    minutes. Use as ``preset("paper_512T", device="cuda", **speed_settings("cuda"))``."""
    if not str(device).startswith("cuda"):
        return {}
    return {"fused_adamw": True, "autocast_bf16": True, "compile_rectifier": "reduce-overhead"}
