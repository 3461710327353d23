"""Where figures go, and how notebooks save them.

Notebooks run from any working directory (JupyterLab, papermill, nbval start them in different
places), so paths are anchored at the repository that holds this package.
"""
from __future__ import annotations

import os
from pathlib import Path

from revq_core.utils.files import REPO_ROOT


def figures_dir() -> Path:
    """``<repo>/figures`` (or ``$REVQ_FIGURES_DIR``: the test session sets it, so that notebooks run by
    ``pytest --nbval`` leave the committed figures alone), created if missing."""
    path = Path(os.environ.get("REVQ_FIGURES_DIR") or REPO_ROOT / "figures")
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """``<repo>/runs`` (gitignored; or ``$REVQ_RUNS_DIR``: the test session sets it to a fresh folder, so that
    notebooks run by ``pytest --nbval`` train from scratch instead of resuming an earlier run's checkpoint):
    trained models and histories written by notebooks, created if missing."""
    path = Path(os.environ.get("REVQ_RUNS_DIR") or REPO_ROOT / "runs")
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(figure, name: str, dpi: int = 120) -> Path:
    """Save a matplotlib figure as ``figures/<name>.png`` and return the path."""
    path = figures_dir() / (name if name.endswith(".png") else f"{name}.png")
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def plot_history(history: dict, title: str = "ReVQ training"):
    """Three panels from a training history (``History.to_dict()`` or history.json): losses,
    validation latent MSE (rectified and quantizer-only) and codebook usage, against the epoch."""
    import matplotlib.pyplot as plt

    epochs = [epoch + 1 for epoch in history["epoch"]]
    figure, (loss_axis, val_axis, usage_axis) = plt.subplots(1, 3, figsize=(12, 3.4))
    loss_axis.plot(epochs, history["train_loss_quant"], marker="o", label="quantizer (codebook)")
    loss_axis.plot(epochs, history["train_loss_rect"], marker="o", label="rectifier")
    loss_axis.set_title("training loss (latent MSE)")
    val_axis.plot(epochs, history["val_quant_mse"], marker="o", label="quantized")
    val_axis.plot(epochs, history["val_mse"], marker="o", label="quantized + rectifier")
    val_axis.set_title("validation latent MSE")
    usage_axis.plot(epochs, [100 * usage for usage in history["usage"]], marker="o", color="C2")
    usage_axis.set_ylim(0, 105)
    usage_axis.set_title("codebook usage during the epoch (%)")
    for axis in (loss_axis, val_axis, usage_axis):
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    loss_axis.legend(fontsize=8)
    val_axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def image_rows(rows: dict, title: str = ""):
    """A grid with one row per entry of ``rows`` ({label: images (N, 3, H, W) in [-1, 1]}), N columns."""
    import matplotlib.pyplot as plt

    columns = len(next(iter(rows.values())))
    figure, axes = plt.subplots(len(rows), columns, figsize=(1.5 * columns, 1.6 * len(rows)), squeeze=False)
    for row, (label, images) in enumerate(rows.items()):
        for column, image in enumerate(images):
            axes[row, column].imshow(((image.permute(1, 2, 0).float() + 1) / 2).clamp(0, 1).numpy())
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
        axes[row, 0].set_ylabel(label, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure
