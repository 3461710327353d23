# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Channel vs spatial split of the latent into tokens
#
# **Paper's claim** (Sec. 3, ablation "split axis"): cutting the normalized DC-AE latent (32 x 8 x 8) into
# tokens along the **channel** axis (a token = D neighbouring numbers of one channel) quantizes better than
# the usual **spatial** split (a token = the channel vector at one position, split again when D < 32), and a
# multi-group quantizer (one codebook per token position) beats a **single** shared codebook.
# Reported rFID on ImageNet: 512 tokens, K = 16384: spatial **1.11** vs channel **1.06**;
# 256 tokens, K = 65536: spatial **2.91** vs channel **2.57**.
#
# Here: the embedded default (latents of 128 x 128 photo crops from the f16c32 VAE v2, a small DC-AE-family
# VAE with the same 32 x 8 x 8 latent), no image decoder, so we compare the **validation latent MSE** (normalized space)
# of the quantizer alone and after the rectifier, at T = 512, 256, 128, 64 (D = 4, 8, 16, 32).
# Runs are tiny (a subset of the latents, a few epochs, K = 64, a small CNN rectifier) so the notebook
# runs in minutes on 2 CPU cores.

# %% tags=["parameters"]
N_TRAIN = 1024  # training latents used (a seeded subset of the 8192 embedded ones)
N_VAL = 512  # validation latents
TOKENS = [512, 256, 128, 64]  # T; D = 2048 / T
SPLITS = ["channel", "spatial", "single"]
CODES = 64  # K per codebook (single: one codebook of K codes for all tokens)
EPOCHS = 3
BATCH_SIZE = 32
RECTIFIER = "cnn"  # "vit" is the paper's; the CNN is cheaper and close to it (see 06_tables)
RECTIFIER_WIDTH = 32
RECTIFIER_DEPTH = 1
RECTIFIER_LR_RATIO = 1.0  # paper: 0.05 over 100 epochs; a few hundred steps need a faster rectifier
THREADS = 2
SEED = 42

# %%
# NBVAL_IGNORE_OUTPUT
import matplotlib.pyplot as plt
import torch

from revq_core.paper.experiments import format_table, pick, plot_metric_vs_tokens, sig, subset, sweep
from revq_core.data.latents import embedded_latents
from revq_core.paper.plots import save_figure
from revq_core.training.config import preset

torch.manual_seed(SEED)
train_all, val_all = embedded_latents(["train", "val"], progress=False)
train_latents = subset(train_all, N_TRAIN, seed=SEED)
val_latents = val_all[:N_VAL]
print("train latents", tuple(train_latents.shape), "| val latents", tuple(val_latents.shape))

# %% [markdown]
# One run per (split, T): the paper's recipe (`revq_core.train`, samples init, reset, AdamW, ExponentialLR)
# shortened to a few epochs. The quantizer and rectifier are trained together; the quantizer never sees the
# rectifier's gradient, so `val_quant_mse` is exactly what a quantizer-only run would give.

# %%
# NBVAL_IGNORE_OUTPUT
base = preset("demo", epochs=EPOCHS, batch_size=BATCH_SIZE, codes_per_group=CODES, rectifier=RECTIFIER,
              rectifier_width=RECTIFIER_WIDTH, rectifier_depth=RECTIFIER_DEPTH,
              rectifier_lr_ratio=RECTIFIER_LR_RATIO, rectifier_residual=False, init_latents=None, seed=SEED,
              num_threads=THREADS)
grid = [{"split": split, "tokens_per_image": tokens} for tokens in TOKENS for split in SPLITS]
rows = sweep(base, grid, train_latents, val_latents)
print(format_table(rows, ["T", "D", "split", "quantizer-only MSE", "rectified MSE", "usage"],
                   ["tokens", "code_dim", "split", "val_quant_mse", "val_mse", "usage"]))

# %%
figure = plot_metric_vs_tokens(rows, ("val_quant_mse", "val_mse"), by="split",
                               title=f"split axis, K = {CODES}, {N_TRAIN} training latents, {EPOCHS} epochs")
save_figure(figure, "04_split_axis")
plt.show()

# %% [markdown]
# ## Ours beside the paper
# The paper reports rFID (images), we report latent MSE (the quantity ReVQ trains on); lower is better for
# both. "gap" is spatial minus channel, relative to channel.

# %%
# NBVAL_IGNORE_OUTPUT
PAPER_RFID = {512: {"spatial": 1.11, "channel": 1.06}, 256: {"spatial": 2.91, "channel": 2.57}}
table = []
for tokens in TOKENS:
    channel, spatial, single = (pick(rows, split=s, tokens=tokens) for s in ("channel", "spatial", "single"))
    paper = PAPER_RFID.get(tokens, {})
    table.append([tokens, channel["val_quant_mse"], spatial["val_quant_mse"], single["val_quant_mse"],
                  channel["val_mse"], spatial["val_mse"],
                  f"{sig(100 * (spatial['val_mse'] / channel['val_mse'] - 1))}%",
                  paper.get("channel"), paper.get("spatial")])
print(format_table(table, ["T", "quant channel", "quant spatial", "quant single", "rect channel",
                           "rect spatial", "gap", "paper rFID channel", "paper rFID spatial"]))

# %%
# NBVAL_IGNORE_OUTPUT
if "channel" in SPLITS and "spatial" in SPLITS:
    quant_wins = [t for t in TOKENS if pick(rows, split="channel", tokens=t)["val_quant_mse"]
                  < pick(rows, split="spatial", tokens=t)["val_quant_mse"]]
    rect_wins = [t for t in TOKENS if pick(rows, split="channel", tokens=t)["val_mse"]
                 < pick(rows, split="spatial", tokens=t)["val_mse"]]
    print(f"channel < spatial (quantizer-only MSE) at T = {quant_wins} of {TOKENS}")
    print(f"channel < spatial (rectified MSE)      at T = {rect_wins} of {TOKENS}")
    paper_ts = [t for t in TOKENS if t in PAPER_RFID]
    reproduced = all(t in rect_wins for t in paper_ts)
    print(f"paper's settings T = {paper_ts}: channel beats spatial in the paper at both;"
          f" here: {'yes' if reproduced else 'no'} at {[t for t in paper_ts if t in rect_wins]}")
if "single" in SPLITS and "channel" in SPLITS:
    single_worse = [t for t in TOKENS if pick(rows, split="single", tokens=t)["val_quant_mse"]
                    > pick(rows, split="channel", tokens=t)["val_quant_mse"]]
    print(f"single codebook worse than per-position codebooks (quantizer-only) at T = {single_worse} of {TOKENS}")

# %% [markdown]
# ## Verdict at this scale
# - **Channel beats spatial on the quantizer-only MSE at the paper's settings T = 512 and 256** (by ~5 % and
#   ~4 %) and at T = 128 (~3 %): the paper's direction (rFID 1.06 vs 1.11 at 512T, 2.57 vs 2.91 at 256T)
#   **reproduces** on the quantity the split acts on. At T = 64 (D = 32, a token is a whole channel) the two
#   are within 1 % (spatial slightly ahead).
# - After the rectifier the two are **within 0.5 % at T = 512 and 256 (not reproduced)**, and spatial is ahead
#   at 128 and 64. The rectified numbers are not a fair test here: a rectifier trained for ~100 steps has not
#   yet learned to pass the quantized latent through (its output is *worse* than the quantized latent itself
#   at T = 512, 256 and 128), so they mostly measure how fast each token layout lets a small CNN catch up. The paper's
#   rectifier trains for 100 epochs of 1.28 M latents. (With 2048 or 4096 training latents the picture is the
#   same: channel ahead before the rectifier at 512 and 256, spatial ahead after it.)
# - The single shared codebook is **not** worse than per-position codebooks at T = 512 and 256 (it is better:
#   each of the T per-position codebooks learns from only N_TRAIN = 1024 tokens, the shared one from
#   N_TRAIN x T), and worse at T = 128 and 64. The paper shows the single-group disadvantage only on 2D toys
#   (notebook 03), not in a table.

# %% [markdown]
# ## Checks (what `pytest --nbval` compares)
# The claims above as asserts, and the headline numbers within bands around the values committed with this
# notebook (trained numbers differ in their last digits between machines: `notebooks/README.md`). The
# quantizer-only gap at T = 64 and the rectified gaps are near ties, so only their size is checked, not their sign.

# %%
from revq_core.paper.verdict import Verdict


def gap(tokens, metric):
    """spatial / channel - 1 for a metric at T = tokens (> 0: channel is better)."""
    return pick(rows, split="spatial", tokens=tokens)[metric] / pick(rows, split="channel", tokens=tokens)[metric] - 1


verdict = Verdict("04_split_axis", compare_committed=(N_TRAIN, N_VAL, TOKENS, SPLITS, CODES, EPOCHS, BATCH_SIZE,
                                                      RECTIFIER, RECTIFIER_WIDTH, RECTIFIER_DEPTH, SEED)
                  == (1024, 512, [512, 256, 128, 64], ["channel", "spatial", "single"], 64, 3, 32, "cnn", 32, 1, 42))
verdict.claim("channel < spatial on the quantizer-only MSE at T = 512, 256 and 128 (the paper's settings: 512, 256)",
              all(gap(t, "val_quant_mse") > 0 for t in (512, 256, 128)))
verdict.claim("not reproduced here: after the rectifier, channel and spatial are within 2% at T = 512 and 256",
              all(abs(gap(t, "val_mse")) < 0.02 for t in (512, 256)))
for tokens, committed in ((512, 0.21553), (256, 0.40044), (128, 0.55471), (64, 0.66155)):
    verdict.near(f"channel quantizer-only MSE at T = {tokens}", pick(rows, split="channel", tokens=tokens)["val_quant_mse"],
                 committed=committed, relative=0.01)
for tokens, committed in ((512, 0.0470), (256, 0.0389), (128, 0.0258), (64, -0.0090)):
    verdict.near(f"quantizer-only gap spatial / channel - 1 at T = {tokens}", gap(tokens, "val_quant_mse"),
                 committed=committed, tolerance=0.005)
for tokens, committed in ((512, -0.0042), (256, 0.0036)):
    verdict.near(f"rectified gap spatial / channel - 1 at T = {tokens}", gap(tokens, "val_mse"),
                 committed=committed, tolerance=0.005)
verdict.report()
