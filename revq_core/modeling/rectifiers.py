"""Post rectifiers: map a quantized latent (B, C, H, W) back toward the original latent.

The ViT rectifier is the paper's default (docs/method.md, "Post rectifier"): a 3x3 conv C -> width with a
channel-repeat shortcut, ``depth`` diffusers ``EfficientViTBlock``s (attention_head_dim 32,
qkv_multiscales (5,), RMSNorm), RMSNorm, ReLU and a 3x3 conv width -> C. That is exactly a
one-stage diffusers DC-AE ``Decoder``, so we build it as one: no rewritten blocks, and the state
dict keys (conv_in, up_blocks.0.*, norm_out, conv_out) are those of the authors' checkpoints.
The CNN ablation is the same decoder with ``ResBlock``s; the MLP ablation works on the flattened
C*H*W vector with residual MLP blocks.

``residual=True`` (not the paper's architecture; off in the paper presets) makes a rectifier compute
``latent + correction(latent)`` with the correction's output layer zero-initialised, so it starts as
the identity and learns only the correction. The paper's rectifier maps the quantized latent
directly and must first learn the identity: over 100 ImageNet epochs that costs nothing, but in the
few hundred steps of a CPU demo a small rectifier never gets past it (see the ``demo`` preset).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from diffusers.models.autoencoders.autoencoder_dc import Decoder


class _OneStageDecoder(Decoder):
    """A single-resolution DC-AE decoder stage used as a latent-to-latent map."""

    def __init__(self, block_type: str, latent_channels: int, width: int, depth: int,
                 attention_head_dim: int = 32, qkv_multiscales: tuple[int, ...] = (5,)):
        if width % latent_channels:
            raise ValueError(f"rectifier width {width} must be a multiple of latent_channels {latent_channels} "
                             f"(the input shortcut repeats each channel width / latent_channels times).")
        if block_type == "EfficientViTBlock" and width % attention_head_dim:
            raise ValueError(f"rectifier width {width} must be a multiple of attention_head_dim {attention_head_dim}.")
        if depth < 1:
            raise ValueError(f"rectifier depth must be at least 1, got {depth}.")
        super().__init__(in_channels=latent_channels, latent_channels=latent_channels,
                         attention_head_dim=attention_head_dim, block_type=block_type,
                         block_out_channels=(width,), layers_per_block=(depth,),
                         qkv_multiscales=(tuple(qkv_multiscales),), norm_type="rms_norm", act_fn="silu",
                         upsample_block_type="interpolate", in_shortcut=True, conv_act_fn="relu")


class ViTRectifier(_OneStageDecoder):
    """EfficientViT rectifier: (B, C, H, W) -> (B, C, H, W). 512 tokens: width 512, depth 3 (~14 M params)."""

    def __init__(self, latent_channels: int = 32, width: int = 512, depth: int = 3, attention_head_dim: int = 32,
                 qkv_multiscales: tuple[int, ...] = (5,)):
        super().__init__("EfficientViTBlock", latent_channels, width, depth, attention_head_dim, qkv_multiscales)


class CNNRectifier(_OneStageDecoder):
    """Residual-conv rectifier (the paper's CNN ablation): (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, latent_channels: int = 32, width: int = 512, depth: int = 3):
        super().__init__("ResBlock", latent_channels, width, depth)


class _ResidualMLPBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.act = nn.SiLU()
        self.fc2 = nn.Linear(width, width)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, width)
        return hidden + self.fc2(self.act(self.fc1(self.norm(hidden))))


class MLPRectifier(nn.Module):
    """Residual-MLP rectifier on the flattened latent (the paper's MLP ablation).

    (B, C, H, W) -> flatten (B, C*H*W) -> Linear -> ``depth`` pre-norm residual MLP blocks -> Linear,
    added to the input (the rectifier starts near the identity).
    """

    def __init__(self, latent_shape: tuple[int, int, int] = (32, 8, 8), width: int = 2048, depth: int = 3):
        super().__init__()
        numbers_per_latent = math.prod(latent_shape)
        self.fc_in = nn.Linear(numbers_per_latent, width)
        self.blocks = nn.Sequential(*[_ResidualMLPBlock(width) for _ in range(depth)])
        self.norm_out = nn.LayerNorm(width)
        self.fc_out = nn.Linear(width, numbers_per_latent)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        flat = latent.flatten(1)  # (B, C*H*W)
        hidden = self.blocks(self.fc_in(flat))  # (B, width)
        return (flat + self.fc_out(self.norm_out(hidden))).view_as(latent)


class ResidualRectifier(nn.Module):
    """``latent + body(latent)``, (B, C, H, W) -> (B, C, H, W); the body's ``conv_out`` starts at zero,
    so the rectifier starts as the identity."""

    def __init__(self, body: _OneStageDecoder):
        super().__init__()
        self.body = body
        nn.init.zeros_(body.conv_out.weight)
        nn.init.zeros_(body.conv_out.bias)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return latent + self.body(latent)


# The registry: kind -> builder(config) -> module (B, C, H, W) -> (B, C, H, W), reading the ``ModelConfig`` fields
# it needs. A new rectifier is one entry here; a new hyper-parameter is one ModelConfig field read by its builder.
RECTIFIERS = {
    "vit": lambda config: ViTRectifier(config.latent_shape[0], config.rectifier_width, config.rectifier_depth),
    "cnn": lambda config: CNNRectifier(config.latent_shape[0], config.rectifier_width, config.rectifier_depth),
    "mlp": lambda config: MLPRectifier(tuple(config.latent_shape), config.rectifier_width, config.rectifier_depth),
    "identity": lambda config: nn.Identity(),
}


def build_rectifier(config, kind: str | None = None, residual: bool | None = None) -> nn.Module:
    """The rectifier a ``ModelConfig`` describes: ``RECTIFIERS[kind or config.rectifier]`` sized by the config.

    ``residual`` (default ``config.rectifier_residual``) makes it start as the identity (see the module
    docstring): ViT and CNN are wrapped as ``ResidualRectifier``; the MLP, residual already, gets its output
    layer zero-initialised. ``kind`` / ``residual`` build another from the same sizes (the pre-encoder).
    """
    kind = config.rectifier if kind is None else kind
    residual = config.rectifier_residual if residual is None else residual
    if kind not in RECTIFIERS:
        raise ValueError(f"rectifier kind must be one of {tuple(RECTIFIERS)}, got {kind!r}.")
    rectifier = RECTIFIERS[kind](config)
    if not residual or kind == "identity":
        return rectifier
    if isinstance(rectifier, MLPRectifier):
        nn.init.zeros_(rectifier.fc_out.weight)
        nn.init.zeros_(rectifier.fc_out.bias)
        return rectifier
    return ResidualRectifier(rectifier)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(parameter.numel() for parameter in module.parameters() if parameter.requires_grad)
