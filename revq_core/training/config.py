"""What a training run is: ``TrainConfig`` (model, recipe, machine and speed settings), the named presets
(the paper's three ImageNet settings, the CPU demo, a seconds-long tiny run) and the checks of a config.

    config = preset("paper_512T", epochs=10)"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from revq_core.modeling.config import ModelConfig


@dataclass
class TrainConfig(ModelConfig):
    """A training run: the model's architecture (``ModelConfig``'s fields: latent_shape, tokens_per_image,
    codes_per_group, num_groups, split, rectifier, rectifier_width, rectifier_depth, rectifier_residual,
    pre_encoder), then the recipe, the machine and the speed settings."""

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

    def recipe_dict(self) -> dict:
        """Fields that define the result (everything but the machine and speed settings)."""
        machine = {"device", "num_threads", "val_batch_size", "fused_adamw", "autocast_bf16", "compile_rectifier"}
        return {key: _jsonable(value) for key, value in dataclasses.asdict(self).items() if key not in machine}


PRESETS = {
    # The paper's three ImageNet settings (authors' released configs).
    "paper_512T": TrainConfig(),
    "paper_256T_65k": TrainConfig(tokens_per_image=256, codes_per_group=65536, rectifier_width=1024,
                                  rectifier_depth=4),
    "paper_256T_262k": TrainConfig(tokens_per_image=256, codes_per_group=262144, rectifier_width=512,
                                   rectifier_depth=4, batch_size=128),
    # The embedded default on a 2-core CPU: the paper's 512 tokens of D = 4, a smaller K and rectifier
    # (8 epochs on the 8192 embedded training latents: ~30 s on 2 cores). K: measured on those latents,
    # validation MSE 0.098 at K = 256, 0.059 at 1024, 0.046 at 2048, 0.035 at 4096 (usage 99 %).
    # In 512 steps a rectifier this small cannot first learn the identity: measured, the paper's form ends
    # far above the quantizer's own validation MSE (0.318 vs 0.047 at K = 2048), so the demo's starts at the
    # identity (rectifier_residual) and ends below it (0.046).
    "demo": TrainConfig(codes_per_group=2048, rectifier_width=32, rectifier_depth=1, rectifier_residual=True,
                        epochs=8, batch_size=128,
                        init_latents=None),
    # Seconds-long runs for tests and smoke checks.
    "tiny": TrainConfig(tokens_per_image=64, codes_per_group=16, rectifier_width=32, rectifier_depth=1, epochs=2,
                        batch_size=16, init_latents=None),
}


def preset(name: str, **overrides) -> TrainConfig:
    """A copy of a named preset with fields overridden, e.g. ``preset("demo", epochs=3)``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {sorted(unknown)}.")
    return dataclasses.replace(PRESETS[name], **overrides)


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
    width = -(-base.rectifier_width // step) * step
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



def _check_config(config: TrainConfig) -> None:
    """Raise a one-line ValueError (TypeError for a wrong type) naming the TrainConfig field that cannot work."""
    from numbers import Integral, Real

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (e.g. preset('demo')), got {type(config).__name__}.")

    def is_whole(value) -> bool:
        return isinstance(value, Integral) and not isinstance(value, bool)

    latent_shape = tuple(config.latent_shape)
    if len(latent_shape) != 3 or not all(is_whole(size) and size > 0 for size in latent_shape):
        raise ValueError(f"latent_shape must be (C, H, W), three positive integers, got {config.latent_shape!r}.")
    for name in ("epochs", "batch_size", "val_batch_size", "tokens_per_image", "codes_per_group"):
        value = getattr(config, name)
        if not is_whole(value) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}; set it with preset(..., {name}=<n>).")
    numbers_per_latent = math.prod(latent_shape)
    if numbers_per_latent % config.tokens_per_image:
        divisors = [count for count in range(1, numbers_per_latent + 1) if numbers_per_latent % count == 0]
        raise ValueError(f"tokens_per_image T = {config.tokens_per_image} does not divide C*H*W = {numbers_per_latent} "
                         f"of latent_shape {latent_shape}: each token takes D = C*H*W / T numbers; choose T among "
                         f"{divisors[-8:]} (or another divisor).")
    fraction = config.final_lr_fraction
    if not isinstance(fraction, Real) or isinstance(fraction, bool) or not 0 < fraction <= 1:
        raise ValueError(f"final_lr_fraction must be in (0, 1] (the learning rate at the end over the one at the start; "
                         f"1 keeps it constant), got {fraction!r}.")


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


