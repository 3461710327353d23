"""ReVQ against the other ways to discretize the same frozen VAE (notebooks/08_baselines, issue 24).

At a budget of B bits per image, every quantizer of ``QUANTIZERS`` gets its nearest setting within ``tolerance``
(5 %) of B (``matched_setting``; a quantizer with none is reported as such, never stretched), then trains on the
same normalized latents with the same recipe, steps and seed (``base``: a ``TrainConfig``, e.g. the demo preset
with fewer epochs), and is measured the same way: latent MSE on held-out latents with and without the rectifier
(the trainer's ``val_mse`` and ``val_quant_mse``: the rectifier never changes the codes, since ``ReVQ.forward``
detaches the quantized latent before it), the codes' rate over those latents (``evaluation.rate.code_report``:
bits per image, measured entropy, usage), training time, and, when a ``score`` function is given, image
metrics with and without the rectifier (the notebook passes ``pipeline.evaluate_tokenizer``, top level).

Settings at a budget B over a latent of N = C*H*W numbers (``matched_setting``):
- ``revq``, ``vq``: T tokens (the budget's own T for ReVQ, the same for ``vq``), K = 2 ** (B / T) codes.
- ``rvq``: the same T, ``depth`` stages of K = 2 ** (B / (T * depth)) codes each.
- ``scalar``, ``fsq``, ``ifsq``: L = 2 ** (B / N) levels per number (an integer, >= 2; >= 3 for fsq), one number
  per token (T = N: ids stay small and each number's entropy is measured on its own); bits N * log2(L).
  Below N bits (1 bit per number) none exists.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Iterable, Sequence

import torch

from revq_core.autoencoders.adapters import decode, encode
from revq_core.evaluation.metrics import to_unit_range
from revq_core.evaluation.protocol import Evaluator
from revq_core.evaluation.rate import code_report
from revq_core.modeling.config import ModelConfig
from revq_core.modeling.quantizers import QUANTIZERS
from revq_core.training.config import TrainConfig
from revq_core.training.trainer import train

SCALAR_FAMILY = ("scalar", "fsq", "ifsq")
CODEBOOK_FAMILY = ("revq", "vq", "rvq")


class UnmatchedBudget(ValueError):
    """No setting of a quantizer lies within the tolerance of a bit budget."""


def matched_setting(name: str, bits: float, latent_shape: Sequence[int], tokens_per_image: int,
                    residual_depth: int = 2, tolerance: float = 0.05) -> dict:
    """The ``ModelConfig`` fields that give quantizer ``name`` its nearest setting to ``bits`` bits per image
    (module docstring), checked to be within ``tolerance`` (relative) of it; ``UnmatchedBudget`` (a ValueError)
    says the nearest there is otherwise."""
    if name not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {name!r}; choose one of {sorted(QUANTIZERS)}.")
    if not bits > 0:
        raise ValueError(f"bits must be positive, got {bits!r}.")
    numbers = math.prod(latent_shape)
    if name in SCALAR_FAMILY:
        minimum = 3 if name == "fsq" else 2
        levels = max(minimum, round(2 ** (bits / numbers)))
        fields, got = dict(quantizer=name, tokens_per_image=numbers, levels_per_dim=levels), numbers * math.log2(levels)
    elif name == "rvq":
        codes = max(2, round(2 ** (bits / (tokens_per_image * residual_depth))))
        fields = dict(quantizer=name, tokens_per_image=tokens_per_image, codes_per_group=codes,
                      residual_depth=residual_depth)
        got = tokens_per_image * residual_depth * math.log2(codes)
    else:
        codes = max(2, round(2 ** (bits / tokens_per_image)))
        fields, got = dict(quantizer=name, tokens_per_image=tokens_per_image, codes_per_group=codes), \
            tokens_per_image * math.log2(codes)
    if abs(got - bits) > tolerance * bits:
        raise UnmatchedBudget(f"quantizer {name!r} has no setting within {100 * tolerance:g} % of {bits:g} bits per "
                              f"image: the nearest, {fields}, carries {got:.0f} bits"
                              + (f" (a scalar quantizer of {numbers} numbers carries >= {numbers} bits)"
                                 if name in SCALAR_FAMILY and bits < numbers else "") + ".")
    return fields


def run_baseline(base: TrainConfig, fields: dict, train_latents: torch.Tensor, val_latents: torch.Tensor,
                 score: Callable | None = None) -> dict:
    """Train ``base`` with model ``fields`` on the latents and measure it (module docstring). ``score(model,
    rectify)`` -> {metric: value} adds image metrics with (``rectify=True``) and without the rectifier."""
    config = base.replace(**fields)
    started = time.perf_counter()
    model, history = train(config, train_latents, val_latents, progress=False)
    seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        codes = torch.cat([model.tokenize(part) for part in val_latents.split(256)])
    rate = code_report(model, codes)
    row = {"quantizer": fields["quantizer"], "setting": _setting(config.model), "tokens": config.model.tokens_per_image,
           "bits": rate["bits_per_image"], "entropy_bits": rate["entropy_bits"],
           "entropy_cap_bits": rate["entropy_cap_bits"], "val_usage": rate["usage"],
           "train_usage": history.usage[-1], "mse_rectified": history.val_mse[-1],
           "mse_quantizer": history.val_quant_mse[-1], "train_seconds": seconds,
           "parameters": sum(p.numel() for p in model.quantizer.parameters())}
    if score is not None:
        for rectify, suffix in ((True, "rectified"), (False, "quantizer")):
            for metric, value in score(model, rectify).items():
                row[f"{metric}_{suffix}"] = value
    return row


def rate_distortion(base: TrainConfig, names: Iterable[str], tokens: Sequence[int], codes_per_group: int,
                    train_latents: torch.Tensor, val_latents: torch.Tensor, residual_depth: int = 2,
                    tolerance: float = 0.05, score: Callable | None = None, log: Callable | None = print) -> list[dict]:
    """One row per (budget, quantizer): the budgets are ReVQ's T * log2(K) for each T of ``tokens`` at K =
    ``codes_per_group``; every quantizer of ``names`` at its matched setting (``matched_setting``, the budget's
    T for the codebook quantizers), or a row with ``matched=False`` and the reason."""
    latent_shape = tuple(train_latents.shape[1:])
    rows = []
    for count in tokens:
        budget = count * math.log2(codes_per_group)
        for name in names:
            try:
                fields = matched_setting(name, budget, latent_shape, count, residual_depth, tolerance)
            except UnmatchedBudget as error:
                rows.append({"budget": budget, "quantizer": name, "matched": False, "reason": str(error)})
                continue
            row = {"budget": budget, "matched": True, **run_baseline(base, fields, train_latents, val_latents, score)}
            rows.append(row)
            if log is not None:
                log(f"{budget:6.0f} bits  {name:6s} {row['setting']:22s} MSE {row['mse_quantizer']:.4f} -> "
                    f"{row['mse_rectified']:.4f}  ({row['train_seconds']:.1f} s)")
    return rows


def image_scorer(vae, images: torch.Tensor, batch_size: int = 64) -> Callable:
    """``score(model, rectify)`` for ``run_baseline``: both protocols' PSNR / SSIM of the model's reconstructions of
    ``images`` (N, 3, H, W) in [-1, 1] through ``vae``, as ``pipeline.evaluate_tokenizer`` computes them (the paper
    protocol's ``paper_psnr`` / ``paper_ssim``, the standard ``psnr_rgb`` ...), the images encoded once.
    ``rectify=False``: the quantized latent decoded without the rectifier."""
    latents = encode(vae, images, batch_size)  # (N, C, h, w), once for every model

    def score(model, rectify: bool) -> dict:
        device = model.normalizer.mean.device
        with torch.no_grad():
            parts = []
            for part in latents.split(batch_size):
                codes = model.tokenize(part.to(device))
                quantized = model.quantizer.decode(codes)
                parts.append(model.normalizer.denormalize(model.rectifier(quantized) if rectify else quantized).cpu())
            reconstructions = decode(vae, torch.cat(parts), batch_size)
        evaluator = Evaluator(("revq",))
        for start in range(0, len(images), batch_size):
            part = slice(start, start + batch_size)
            evaluator.update(to_unit_range(images[part]), {"revq": to_unit_range(reconstructions[part])})
        computed = evaluator.compute()["protocols"]
        paper = computed["paper"]["revq"]
        return {"paper_psnr": paper["psnr"], "paper_ssim": paper["ssim"], **computed["standard"]["revq"]}

    return score


def _setting(model: ModelConfig) -> str:
    if model.quantizer in SCALAR_FAMILY:
        return f"L={model.levels_per_dim}"
    if model.quantizer == "rvq":
        return f"T={model.tokens_per_image} K={model.codes_per_group}x{model.residual_depth}"
    return f"T={model.tokens_per_image} K={model.codes_per_group}"


def best_per_budget(rows: Sequence[dict], metric: str = "mse_rectified") -> dict[float, str]:
    """Budget -> the quantizer with the lowest ``metric`` among the matched rows there."""
    best = {}
    for row in rows:
        if row.get("matched") and (row["budget"] not in best or row[metric] < best[row["budget"]][1]):
            best[row["budget"]] = (row["quantizer"], row[metric])
    return {budget: name for budget, (name, _) in sorted(best.items())}


def revq_margin(rows: Sequence[dict], metric: str = "mse_rectified") -> dict[float, float]:
    """Budget -> (best other quantizer's ``metric``) / (ReVQ's) - 1: > 0 where ReVQ wins, by that fraction."""
    margins = {}
    for budget in sorted({row["budget"] for row in rows}):
        here = [row for row in rows if row["budget"] == budget and row.get("matched")]
        ours = [row[metric] for row in here if row["quantizer"] == "revq"]
        others = [row[metric] for row in here if row["quantizer"] != "revq"]
        if ours and others:
            margins[budget] = min(others) / ours[0] - 1
    return margins


def plot_rate_distortion(rows: Sequence[dict], metrics: Sequence[str] = ("mse_quantizer", "mse_rectified"),
                         titles: Sequence[str] = ("quantizer only", "with the rectifier")):
    """Latent MSE against bits per image, one line per quantizer, one panel per metric."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), sharey=True)
    names = list(dict.fromkeys(row["quantizer"] for row in rows))
    for axis, metric, title in zip(axes, metrics, titles):
        for name in names:
            points = sorted((row["bits"], row[metric]) for row in rows if row["quantizer"] == name and row.get("matched"))
            if points:
                axis.plot(*zip(*points), marker="o", label=name, linewidth=2.2 if name == "revq" else 1.2)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("bits per image")
        axis.set_title(title)
        axis.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("validation latent MSE (normalized)")
    axes[-1].legend(fontsize=8)
    figure.tight_layout()
    return figure
