"""2-D toy examples of the paper: single- vs multi-group quantization and the non-activation reset.

A 2-D point (x, y) is a latent of shape (2, 1, 1): channel split into T = 2 tokens of D = 1 number.
- single group (split="single", G = 1): one 1-D codebook of K values serves both x and y, so the
  reachable reconstructions are the K x K grid {(a, b): a, b in codebook}, symmetric about y = x.
- multi-group (split="channel", G = 2): x has its own K values and y its own, a K x K grid that can
  stretch differently along each axis.

The loop is the ReVQ recipe for the quantizer alone (``revq_core.train`` uses the same pieces):
loss = MSE(tokens, selected codes), AdamW (lr 1e-2, no weight decay), ExponentialLR to 5 % of the
rate, gradient clipping at 1.0, and the non-activation reset after every epoch. It lives here rather
than in ``train()`` because the toy needs a deliberately poor codebook initialisation (codes far from
the data) and raw, unnormalized coordinates, which ``train()`` does not offer.

    points = make_toy_points("blobs", 4096, seed=0)           # (N, 2)
    quantizer = build_toy_quantizer(multi_group=True, codes_per_group=8)
    init_codes_far(quantizer, offset=4.0, spread=1.0, seed=0)
    history = train_toy_quantizer(quantizer, points, epochs=30, reset=True, seed=0)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from revq_core.modeling.quantizers.multigroup import MultiGroupQuantizer
from revq_core.modeling.quantizers.reset import CodeUsage, reset_unused_codes

TOY_LATENT_SHAPE = (2, 1, 1)
TOY_DISTRIBUTIONS = ("blobs", "ring", "anisotropic")


def make_toy_points(name: str, num_points: int, seed: int = 0) -> torch.Tensor:
    """Seeded 2-D points (N, 2).

    ``blobs``: three Gaussian blobs (std 0.25) at (-1.5, -0.5), (0.5, 1.5), (1.5, -1.0), off the diagonal;
    ``ring``: radius 2 with radial std 0.1; ``anisotropic``: x ~ N(0, 2^2), y ~ N(0.5, 0.3^2).
    """
    generator = torch.Generator().manual_seed(seed)
    if name == "blobs":
        centers = torch.tensor([[-1.5, -0.5], [0.5, 1.5], [1.5, -1.0]])
        which = torch.randint(len(centers), (num_points,), generator=generator)
        return centers[which] + 0.25 * torch.randn(num_points, 2, generator=generator)
    if name == "ring":
        angle = 2 * math.pi * torch.rand(num_points, generator=generator)
        radius = 2.0 + 0.1 * torch.randn(num_points, generator=generator)
        return torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)
    if name == "anisotropic":
        noise = torch.randn(num_points, 2, generator=generator)
        return torch.stack([2.0 * noise[:, 0], 0.5 + 0.3 * noise[:, 1]], dim=1)
    raise ValueError(f"unknown toy distribution {name!r}; choose one of {TOY_DISTRIBUTIONS}.")


def points_to_latents(points: torch.Tensor) -> torch.Tensor:
    """(N, 2) points -> (N, 2, 1, 1) latents: channel 0 holds x, channel 1 holds y."""
    return points.reshape(-1, 2, 1, 1)


def build_toy_quantizer(multi_group: bool, codes_per_group: int) -> Quantizer:
    """T = 2 tokens of D = 1: G = 2 codebooks (one per coordinate, "channel") or G = 1 shared ("single")."""
    if multi_group:
        return MultiGroupQuantizer(2, codes_per_group, 1, split="channel", latent_shape=TOY_LATENT_SHAPE)
    return MultiGroupQuantizer(1, codes_per_group, 1, split="single", latent_shape=TOY_LATENT_SHAPE)


@torch.no_grad()
def init_codes_far(quantizer: Quantizer, offset: float, spread: float, seed: int = 0) -> None:
    """A poor initialisation: every code value = ``offset`` + ``spread`` * N(0, 1), far from centred data."""
    generator = torch.Generator().manual_seed(seed)
    quantizer.codebook.copy_(offset + spread * torch.randn(quantizer.codebook.shape, generator=generator))


def code_grid(quantizer: Quantizer) -> torch.Tensor:
    """(K_x * K_y, 2) every point the quantizer can output: the product of the x and y codebooks."""
    codebook = quantizer.codebook.detach()[..., 0]  # (G, K)
    x_codes, y_codes = (codebook[0], codebook[0]) if quantizer.num_groups == 1 else (codebook[0], codebook[1])
    grid_x, grid_y = torch.meshgrid(x_codes, y_codes, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)


@torch.no_grad()
def quantize_points(quantizer: Quantizer, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2) points -> (reconstructed points (N, 2), codes (N, 2): the code of x and of y)."""
    codes = quantizer.encode(points_to_latents(points))
    return quantizer.decode(codes).reshape(-1, 2), codes


@torch.no_grad()
def codes_used(quantizer: Quantizer, points: torch.Tensor) -> dict[str, int]:
    """How many codes the points select: ``codes`` summed over codebooks, ``codebook_size`` G * K,
    and ``grid_points``, the distinct (x, y) reconstructions in use."""
    reconstructed, codes = quantize_points(quantizer, points)
    usage = CodeUsage(quantizer.num_groups, quantizer.codes_per_group, quantizer.group_of_token)
    usage.update(codes)
    return {"codes": int((usage.counts > 0).sum()), "codebook_size": quantizer.num_groups * quantizer.codes_per_group,
            "grid_points": int(torch.unique(reconstructed, dim=0).shape[0])}


@torch.no_grad()
def quantization_mse(quantizer: Quantizer, points: torch.Tensor) -> float:
    """Mean squared error per coordinate between the points (N, 2) and their quantized version."""
    reconstructed, _ = quantize_points(quantizer, points)
    return float((reconstructed - points).pow(2).mean())


@dataclass
class ToyHistory:
    mse: list = field(default_factory=list)  # quantization MSE on all points after each epoch
    usage: list = field(default_factory=list)  # fraction of codes used during the epoch (before its reset)
    codes_reset: list = field(default_factory=list)


def train_toy_quantizer(quantizer: Quantizer, points: torch.Tensor, epochs: int = 30, batch_size: int = 256,
                        lr: float = 1e-2, reset: bool = True, reset_ratio: float = 0.2, reset_noise: float = 0.1,
                        grad_clip: float = 1.0, final_lr_fraction: float = 0.05, seed: int = 0) -> ToyHistory:
    """Train ``quantizer`` in place on points (N, 2) with the ReVQ quantizer recipe; returns the history."""
    latents = points_to_latents(points.float())
    optimizer = torch.optim.AdamW(quantizer.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=final_lr_fraction ** (1.0 / epochs))
    usage = CodeUsage(quantizer.num_groups, quantizer.codes_per_group, quantizer.group_of_token)
    generator = torch.Generator().manual_seed(seed)
    history = ToyHistory()
    steps = len(latents) // batch_size
    for _ in range(epochs):
        order = torch.randperm(len(latents), generator=generator)
        for step in range(steps):
            output = quantizer(latents[order[step * batch_size:(step + 1) * batch_size]])
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()
            torch.nn.utils.clip_grad_norm_(quantizer.parameters(), grad_clip)
            optimizer.step()
            usage.update(output.codes)
        if reset:
            stats = reset_unused_codes(quantizer.codebook.data, usage.counts, reset_ratio, reset_noise, generator)
            history.usage.append(stats.usage)
            history.codes_reset.append(stats.codes_reset)
        else:
            history.usage.append(usage.usage())
            history.codes_reset.append(0)
        usage.zero_()
        scheduler.step()
        history.mse.append(quantization_mse(quantizer, points))
    return history


def plot_code_grid(axis, quantizer: Quantizer, points: torch.Tensor, title: str, max_points: int = 2000) -> None:
    """Data (grey dots), the product grid of codes (crosses: red if used, light if not) and the line y = x."""
    reconstructed, _ = quantize_points(quantizer, points)
    used = {tuple(row) for row in reconstructed.tolist()}
    grid = code_grid(quantizer)
    is_used = torch.tensor([tuple(row) in used for row in grid.tolist()])
    shown = points[:max_points]
    axis.scatter(shown[:, 0], shown[:, 1], s=2, color="0.6", alpha=0.5, label="data")
    axis.scatter(grid[~is_used, 0], grid[~is_used, 1], marker="x", s=18, color="tab:blue", alpha=0.35,
                 label="unused grid point")
    axis.scatter(grid[is_used, 0], grid[is_used, 1], marker="x", s=30, color="tab:red", label="used grid point")
    low = float(torch.cat([points, grid]).min()) - 0.3
    high = float(torch.cat([points, grid]).max()) + 0.3
    axis.plot([low, high], [low, high], color="k", linewidth=0.6, linestyle=":")
    axis.set_xlim(low, high)
    axis.set_ylim(low, high)
    axis.set_aspect("equal")
    axis.set_title(title, fontsize=9)


def fit_toy(points: torch.Tensor, multi_group: bool, reset: bool, codes_per_group: int = 8, init_offset: float = 4.0,
            init_spread: float = 0.5, epochs: int = 20, batch_size: int = 128, lr: float = 5e-2,
            seed: int = 0) -> tuple[Quantizer, ToyHistory]:
    """Build a toy quantizer, give it the poor far-away initialisation and train it on points (N, 2)."""
    quantizer = build_toy_quantizer(multi_group, codes_per_group)
    init_codes_far(quantizer, init_offset, init_spread, seed)
    history = train_toy_quantizer(quantizer, points, epochs=epochs, batch_size=batch_size, lr=lr, reset=reset, seed=seed)
    return quantizer, history
