"""Small, seeded experiments behind the ablation notebooks (04 split axis, 06 tables, 07 codebook scaling).

Every function takes VAE latents of shape (N, C, H, W) (the embedded default: (N, 32, 8, 8)) and returns
plain Python numbers, so notebooks only narrate, print and plot:

    rows = sweep(preset("demo", epochs=3), [{"split": "channel"}, {"split": "spatial"}], train, val)
    print(format_table(rows, ["split", "val_quant_mse", "val_mse"]))

All MSEs are latent MSEs in the normalized space (per-dimension mean 0, variance 1 over the training
latents), as in ``revq_core.training.trainer.evaluate_latent_mse``: predicting the mean everywhere scores 1.0.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from revq_core.modeling.config import ModelConfig
from revq_core.modeling.normalizer import LatentNormalizer
from revq_core.modeling.quantizers.multigroup import MultiGroupQuantizer
from revq_core.modeling.rectifiers import count_parameters
from revq_core.training.config import TrainConfig
from revq_core.training.trainer import train


# ---- data --------------------------------------------------------------------------------------
def subset(latents: torch.Tensor, count: int | None, seed: int = 0) -> torch.Tensor:
    """A seeded random subset of ``count`` rows of latents (N, C, H, W) -> (count, C, H, W), in index order.

    ``count=None`` or ``count >= N`` returns the latents unchanged.
    """
    if count is None or count >= latents.shape[0]:
        return latents
    if count < 1:
        raise ValueError(f"count must be positive, got {count}.")
    ids = torch.randperm(latents.shape[0], generator=torch.Generator().manual_seed(seed))[:count].sort().values
    return latents[ids]


# ---- one training run --------------------------------------------------------------------------
def run_config(config: TrainConfig, train_latents: torch.Tensor, val_latents: torch.Tensor) -> dict:
    """Train ``config`` (``revq_core.training.trainer.train``, no progress bars) and return its final metrics.

    Args:
        train_latents: (N, C, H, W) training latents; the codebook init needs K <= N * T / G tokens per group.
        val_latents: (M, C, H, W) validation latents.

    Returns:
        dict with the configuration (``tokens``, ``code_dim``, ``codes``, ``split``, ``rectifier``,
        ``pre_encoder``, ``reset``, ``init``, ``epochs``) and the last epoch's metrics:
        ``val_mse`` (rectified), ``val_quant_mse`` (quantizer only), ``rect_gain`` (relative reduction of
        the rectified MSE vs the quantizer-only MSE, 1 - val_mse / val_quant_mse), ``usage`` (codebook
        usage in the last epoch, before its reset), ``min_usage`` (lowest usage over the epochs),
        ``rectifier_params`` and the per-epoch lists ``val_mse_curve``, ``val_quant_mse_curve``, ``usage_curve``.
    """
    model, history = train(config, train_latents, val_latents, progress=False)
    val_mse, val_quant_mse = history.val_mse[-1], history.val_quant_mse[-1]
    architecture = config.model
    return {
        "tokens": architecture.tokens_per_image,
        "code_dim": architecture.code_dim,
        "codes": architecture.codes_per_group,
        "split": architecture.split,
        "rectifier": architecture.rectifier,
        "pre_encoder": architecture.pre_encoder,
        "reset": config.reset,
        "init": config.init,
        "epochs": config.epochs,
        "val_mse": val_mse,
        "val_quant_mse": val_quant_mse,
        "rect_gain": 1.0 - val_mse / val_quant_mse if val_quant_mse > 0 else math.nan,
        "usage": history.usage[-1],
        "min_usage": min(history.usage),
        "rectifier_params": count_parameters(model.rectifier),
        "val_mse_curve": list(history.val_mse),
        "val_quant_mse_curve": list(history.val_quant_mse),
        "usage_curve": list(history.usage),
    }


def sweep(base: TrainConfig, overrides: Iterable[dict], train_latents: torch.Tensor,
          val_latents: torch.Tensor) -> list[dict]:
    """``run_config`` for each dict of config field overrides (TrainConfig's or its model's, as ``preset`` takes
    them) applied to ``base``; one row per run.

    Each row also holds the override dict under ``"overrides"``. Latents as in ``run_config``.
    """
    rows = []
    for override in overrides:
        row = run_config(base.replace(**override), train_latents, val_latents)
        row["overrides"] = dict(override)
        rows.append(row)
    return rows


# ---- quantizer only (no optimizer): appendix D.1 ----------------------------------------------
@torch.no_grad()
def quantizer_only_mse(train_latents: torch.Tensor, val_latents: torch.Tensor, tokens_per_image: int,
                       codes_per_group: int, split: str = "channel", method: str = "kmeans",
                       kmeans_iters: int = 10, seed: int = 42) -> float:
    """Validation latent MSE of a quantizer fitted without any rectifier or SGD.

    The normalizer is fitted on ``train_latents`` (N, C, H, W); each of the T codebooks (G = T, or 1 for
    ``split="single"``) starts from K random training tokens and, with ``method="kmeans"``, runs
    ``kmeans_iters`` Lloyd steps on all N training tokens of its group. Returns the MSE on
    ``val_latents`` (M, C, H, W) in normalized space. Needs K <= N * T / G.
    """
    latent_shape = tuple(train_latents.shape[1:])
    normalizer = LatentNormalizer(latent_shape)
    normalizer.fit(train_latents)
    quantizer = MultiGroupQuantizer.from_config(ModelConfig(latent_shape, tokens_per_image,
                                                            codes_per_group=codes_per_group, split=split))
    quantizer.init_from_samples(normalizer.normalize(train_latents.float()), method=method,
                                kmeans_iters=kmeans_iters, generator=torch.Generator().manual_seed(seed))
    total = 0.0
    for part in val_latents.split(256):
        latent = normalizer.normalize(part.float())
        total += F.mse_loss(quantizer.decode(quantizer.encode(latent)), latent, reduction="sum").item()
    return total / val_latents.numel()


def codebook_scaling(train_latents: torch.Tensor, val_latents: torch.Tensor, tokens: Sequence[int],
                     codes: Sequence[int], level: float | None = None, **quantizer_kwargs) -> list[dict]:
    """Quantizer-only MSE over a grid of T (``tokens``) x K (``codes``, increasing).

    With ``level``, the K loop of each T stops at the first K whose MSE is <= level (larger K are not
    needed to find the smallest K). Returns rows ``{"tokens", "code_dim", "codes", "mse"}``.
    ``quantizer_kwargs`` go to ``quantizer_only_mse``.
    """
    codes = sorted(codes)
    rows = []
    latent_shape = tuple(train_latents.shape[1:])
    for tokens_per_image in tokens:
        for codes_per_group in codes:
            mse = quantizer_only_mse(train_latents, val_latents, tokens_per_image, codes_per_group, **quantizer_kwargs)
            rows.append({"tokens": tokens_per_image, "code_dim": math.prod(latent_shape) // tokens_per_image,
                         "codes": codes_per_group, "mse": mse})
            if level is not None and mse <= level:
                break
    return rows


def smallest_k(rows: Sequence[dict], level: float, metric: str = "mse") -> dict[int, int | None]:
    """For each T in rows (dicts with ``tokens``, ``codes`` and ``metric``), the smallest K whose metric
    is <= level, or None when no K in the grid reaches it. Keys in the order T first appears."""
    result: dict[int, int | None] = {}
    for row in rows:
        result.setdefault(row["tokens"], None)
    for tokens in result:
        passing = [row["codes"] for row in rows if row["tokens"] == tokens and row[metric] <= level]
        result[tokens] = min(passing) if passing else None
    return result


def growth_per_halving(k_star: dict[int, int | None]) -> list[float]:
    """Factor by which K* grows each time T halves: K*(T/2) / K*(T) for consecutive T (sorted descending)
    where both are known. A constant factor > 1 is exponential growth in the number of halvings."""
    known = sorted(((t, k) for t, k in k_star.items() if k is not None), reverse=True)
    return [small_k / big_k for (big_t, big_k), (small_t, small_k) in zip(known, known[1:]) if small_t * 2 == big_t]


# ---- numbers and tables ------------------------------------------------------------------------
def sig(value, digits: int = 3) -> str:
    """A number as text with ``digits`` significant digits (stable across machines); None/NaN -> "-"."""
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "-"
    if value == 0:
        return "0"
    text = f"{value:.{digits}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa}e{int(exponent)}"
    return text


def percent(value, digits: int = 3) -> str:
    """A fraction as a percentage with ``digits`` significant digits: 0.2334 -> "23.3%"; None -> "-"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{sig(100.0 * value, digits)}%"


def format_table(rows: Sequence[Sequence] | Sequence[dict], headers: Sequence[str],
                 keys: Sequence[str] | None = None) -> str:
    """An aligned plain-text table. ``rows`` are sequences (one cell per header) or dicts (cells taken by
    ``keys``, default the headers). Numbers are shown with 3 significant digits (``sig``), strings as is.
    Columns are separated by " | "; a rule of dashes follows the header line."""
    keys = list(keys or headers)
    cells = [[sig(row[key]) for key in keys] if isinstance(row, dict) else [sig(value) for value in row]
             for row in rows]
    for line in cells:
        if len(line) != len(headers):
            raise ValueError(f"row {line} has {len(line)} cells for {len(headers)} headers.")
    widths = [max([len(str(header))] + [len(line[i]) for line in cells]) for i, header in enumerate(headers)]
    lines = [" | ".join(str(header).ljust(width) for header, width in zip(headers, widths)).rstrip(),
             "-+-".join("-" * width for width in widths)]
    lines += [" | ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(lines)


def pick(rows: Sequence[dict], **where) -> dict:
    """The single row whose items match ``where`` (e.g. ``pick(rows, split="channel", tokens=512)``)."""
    found = [row for row in rows if all(row.get(key) == value for key, value in where.items())]
    if len(found) != 1:
        raise KeyError(f"{len(found)} rows match {where}.")
    return found[0]


# ---- plots -------------------------------------------------------------------------------------
def plot_metric_vs_tokens(rows: Sequence[dict], metrics: Sequence[str] = ("val_quant_mse", "val_mse"),
                          by: str = "split", title: str | None = None):
    """One panel per metric: metric vs T (log2 axis), one line per value of ``by``. Returns the figure."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    labels = {"val_quant_mse": "quantizer-only latent MSE", "val_mse": "rectified latent MSE"}
    groups = list(dict.fromkeys(row[by] for row in rows))
    for axis, metric in zip(axes[0], metrics):
        for group in groups:
            points = sorted((row["tokens"], row[metric]) for row in rows if row[by] == group)
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=str(group))
        axis.set_xscale("log", base=2)
        axis.set_xlabel("tokens per image T (D = 2048 / T)")
        axis.set_ylabel(labels.get(metric, metric) + " (val)")
        axis.grid(alpha=0.3)
        axis.legend(title=by)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_codebook_scaling(rows: Sequence[dict], k_star: dict[int, int | None], level: float):
    """Left: quantizer-only MSE vs K (log2) per T, with the level. Right: K* vs T on log axes. Returns the figure."""
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for tokens in dict.fromkeys(row["tokens"] for row in rows):
        points = sorted((row["codes"], row["mse"]) for row in rows if row["tokens"] == tokens)
        left.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"T={tokens}")
    left.axhline(level, color="k", linestyle="--", linewidth=1, label=f"level {sig(level)}")
    left.set_xscale("log", base=2)
    left.set_xlabel("codes per group K")
    left.set_ylabel("quantizer-only latent MSE (val)")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    known = sorted((t, k) for t, k in k_star.items() if k is not None)
    right.plot([t for t, _ in known], [k for _, k in known], marker="o", color="C3", label="smallest K under level")
    missing = [t for t, k in k_star.items() if k is None]
    if missing:
        top = max(row["codes"] for row in rows)
        right.scatter(missing, [top * 2] * len(missing), marker="^", color="C3", facecolors="none",
                      label=f"not reached with K <= {top}")
    right.set_xscale("log", base=2)
    right.set_yscale("log", base=2)
    right.set_xlabel("tokens per image T")
    right.set_ylabel("K*")
    right.grid(alpha=0.3, which="both")
    right.legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot_bars(labels: Sequence[str], ours: Sequence[float], paper: Sequence[float] | None = None,
              ylabel: str = "", title: str = ""):
    """Grouped bars: ours (and the paper's, on a twin axis since the scales differ). Returns the figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    figure, axis = plt.subplots(figsize=(6, 3.6))
    positions = range(len(labels))
    width = 0.38 if paper is not None else 0.7
    axis.bar([p - (width / 2 if paper is not None else 0) for p in positions], ours, width,
             color=sns.color_palette()[0], label="ours (embedded)")
    axis.set_ylabel(ylabel + " (ours)")
    axis.set_xticks(list(positions), labels)
    if paper is not None:
        twin = axis.twinx()
        twin.bar([p + width / 2 for p in positions], paper, width, color=sns.color_palette()[1], label="paper (ImageNet)")
        twin.set_ylabel(ylabel + " (paper)")
        handles = axis.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        axis.legend(handles, ["ours (embedded)", "paper (ImageNet)"], fontsize=8, loc="upper left")
    axis.set_title(title)
    figure.tight_layout()
    return figure


def plot_usage_heatmap(rows: Sequence[dict], title: str = ""):
    """Heatmap of final codebook usage: rows = reset on/off (and init), columns = K. Returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    codes = sorted(dict.fromkeys(row["codes"] for row in rows))
    settings = list(dict.fromkeys((row["init"], row["reset"]) for row in rows))
    grid = np.full((len(settings), len(codes)), np.nan)
    for row in rows:
        grid[settings.index((row["init"], row["reset"])), codes.index(row["codes"])] = 100 * row["usage"]
    figure, axis = plt.subplots(figsize=(1.4 * len(codes) + 2.5, 0.8 * len(settings) + 1.2))
    sns.heatmap(grid, annot=True, fmt=".3g", cmap="viridis", vmin=0, vmax=100, ax=axis,
                xticklabels=[str(k) for k in codes],
                yticklabels=[f"init {init}, {'reset' if reset else 'no reset'}" for init, reset in settings],
                cbar_kws={"label": "codebook usage (%)"})
    axis.set_xlabel("codes per group K")
    axis.set_title(title)
    figure.tight_layout()
    return figure
