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
# # ReVQ against the other ways to discretize the same frozen VAE
#
# **Paper's claim** (ReVQ, Sections 4-5): a multi-group quantizer with a rectifier, trained on the frozen VAE's
# latents, reconstructs better than the alternatives at the same number of tokens and codes; its stated limit
# (Conclusion) is the short end: **no good model at 32-64 tokens**.
#
# Ours: at the same **bits per image**, on the same latents (the embedded default: 32 x 8 x 8 latents of
# 128 x 128 photo crops, normalized per dimension), with the same recipe, steps and seed, every quantizer of
# `QUANTIZERS`: `revq` (one codebook per token position), `vq` (one codebook shared by all positions, k-means
# start), `rvq` (two residual stages), `scalar` (training-free quantile bins per channel), `fsq` and `ifsq`
# (fixed tanh and 2 Phi(x) - 1 grids). The budgets are ReVQ's T * log2(K) at K = 1024 for T = 64 ... 1024;
# each other quantizer takes its nearest setting within 5 % of the bits (`revq_core.paper.baselines`), or is
# reported as unmatched: a scalar quantizer of 2048 numbers cannot go below 2048 bits. Each row is measured the
# same way, **with and without the rectifier** (the rectifier never changes the codes): latent MSE on held-out
# latents, both PSNR / SSIM protocols on held-out test crops, code usage, measured code entropy, training time.
#
# Scale caveat, stated before the numbers: ReVQ's per-position codebooks each see only the N training latents
# (N = 4096 here, the paper 1.28 M), while `vq`'s single codebook sees N * T tokens, and the training is two
# short epochs of the demo recipe; the parameters below scale it to DC-AE / ImageNet latents on a GPU.

# %% tags=["parameters"]
N_TRAIN = 4096  # training latents (seeded subset of the embedded default's 8192)
N_VAL = 512  # held-out latents: latent MSE, code entropy and usage
N_IMAGES = 32  # held-out test crops for PSNR / SSIM
TOKENS = [64, 128, 256, 512, 1024]  # ReVQ's T; the budgets are T * log2(CODES) bits per image
CODES = 1024  # ReVQ's K
QUANTIZERS = ["revq", "vq", "rvq", "scalar", "fsq", "ifsq"]
RESIDUAL_DEPTH = 2
TOLERANCE = 0.05  # a matched setting lies within 5 % of the budget's bits
PRESET = "demo"
EPOCHS = 2
INIT_LATENTS = 512  # the initialisation pool (k-means of vq / rvq runs on it)
LATENTS = None  # None: the embedded default; else a latent file (N, C, H, W) of save_latents / encode_to_cache
VAL_LATENTS = None
VAE = None  # None: the embedded VAE (for PSNR / SSIM); e.g. "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers"
IMAGES = None  # None: the embedded test crops; else an image folder for PSNR / SSIM
DEVICE = "cpu"
THREADS = 2
SEED = 42

# %%
# NBVAL_IGNORE_OUTPUT
import matplotlib.pyplot as plt
import torch

from revq_core.autoencoders.embedded import DEFAULT_EMBEDDED_VAE
from revq_core.autoencoders.loading import load_vae
from revq_core.data.images import ImageFolderDataset
from revq_core.data.latents import embedded_latents, read_latents
from revq_core.data.photos import build_photo_dataset
from revq_core.paper.baselines import (best_per_budget, image_scorer, plot_rate_distortion, rate_distortion,
                                       revq_margin)
from revq_core.paper.experiments import format_table, sig, subset
from revq_core.paper.plots import save_figure
from revq_core.training.config import preset
from revq_core.utils.threads import cpu_threads

torch.manual_seed(SEED)
torch.set_num_threads(cpu_threads(THREADS))  # $REVQ_NUM_THREADS wins when set
torch.set_flush_denormal(True)
if LATENTS is None:
    train_all, val_all = embedded_latents(["train", "val"], progress=False)
else:
    train_all, val_all = read_latents(LATENTS), read_latents(VAL_LATENTS)
train_latents = subset(train_all, N_TRAIN, seed=SEED)
val_latents = val_all[:N_VAL]
vae = load_vae(VAE or DEFAULT_EMBEDDED_VAE, device=DEVICE)
if IMAGES is None:
    images = build_photo_dataset("test", corpus="v2")[:N_IMAGES]
else:
    folder = ImageFolderDataset(IMAGES, size=128 if VAE is None else 256)
    images = torch.stack([folder[index][0] for index in range(N_IMAGES)])
base = preset(PRESET, epochs=EPOCHS, seed=SEED, device=DEVICE, init_latents=INIT_LATENTS)
print("train latents", tuple(train_latents.shape), "| val latents", tuple(val_latents.shape),
      "| test images", tuple(images.shape))

# %%
# NBVAL_IGNORE_OUTPUT
rows = rate_distortion(base, QUANTIZERS, TOKENS, CODES, train_latents.to(DEVICE), val_latents.to(DEVICE),
                       RESIDUAL_DEPTH, TOLERANCE, score=image_scorer(vae, images))

# %% [markdown]
# ## The rate-distortion table
# Latent MSE (normalized: predicting the mean scores 1.0) without -> with the rectifier, the paper protocol's PSNR
# (red channel) and the standard PSNR-Y with the rectifier, the measured code entropy (bits per image actually
# used over the 512 held-out latents: at most T * log2(512), so a vocabulary above 512 ids per position is
# measured from below), validation code usage, training seconds (this machine, other jobs running).

# %%
# NBVAL_IGNORE_OUTPUT
matched = [row for row in rows if row["matched"]]
print(format_table([[f"{row['budget']:.0f}", row["quantizer"], row["setting"], f"{row['bits']:.0f}",
                     sig(row["mse_quantizer"]), sig(row["mse_rectified"]),
                     f"{row['paper_psnr_quantizer']:.2f}", f"{row['paper_psnr_rectified']:.2f}",
                     f"{row['psnr_y_rectified']:.2f}", f"{row['ssim_y_rectified']:.3f}",
                     f"{row['entropy_bits']:.0f}", f"{row['val_usage']:.3f}", f"{row['train_seconds']:.1f}"]
                    for row in matched],
                   ["budget", "quantizer", "setting", "bits", "MSE quant", "MSE rect", "pPSNR quant", "pPSNR rect",
                    "PSNR-Y rect", "SSIM-Y rect", "entropy", "usage", "train s"]))
print()
for row in rows:
    if not row["matched"]:
        print(f"{row['budget']:.0f} bits, {row['quantizer']}: unmatched ({row['reason'].split(': ', 1)[1]})")

# %%
figure = plot_rate_distortion(rows)
save_figure(figure, "08_baselines")
plt.show()

# %% [markdown]
# ## Where ReVQ wins and where it stops
# At each budget: the best quantizer on the rectified latent MSE, and ReVQ's margin over the best other one
# (> 0: ReVQ is better by that fraction).

# %%
# NBVAL_IGNORE_OUTPUT
best = best_per_budget(rows)
margins = revq_margin(rows)
margins_quantizer = revq_margin(rows, "mse_quantizer")
for budget in sorted(best):
    print(f"{budget:6.0f} bits: best {best[budget]:6s} | ReVQ margin with the rectifier {margins[budget]:+.1%}, "
          f"quantizer only {margins_quantizer[budget]:+.1%}")
gains = {(row["budget"], row["quantizer"]): 1 - row["mse_rectified"] / row["mse_quantizer"] for row in matched}
print("rectifier's cut of the latent MSE:", ", ".join(f"{name} {sig(100 * min(g for (b, q), g in gains.items() if q == name))}"
                                                      f"-{sig(100 * max(g for (b, q), g in gains.items() if q == name))} %"
                                                      for name in dict.fromkeys(q for _, q in gains)))

# %% [markdown]
# ## Verdict (the committed run)
# A negative result for ReVQ at this scale, stated plainly: **ReVQ never beats the shared-codebook `vq`**, at any
# budget, with or without the rectifier, and its deficit grows with the budget (rectified latent MSE 6 % worse at
# 640 bits, 42 % at 5120, 70 % at 10240); two-stage `rvq` also edges it out at every budget. With 4096
# training latents each of ReVQ's per-position codebooks learns from 4096 vectors, `vq`'s from 4096 * T, so
# this is the data-limited regime, not the paper's 1.28 M images: rerun with the parameters for ImageNet-scale
# latents before reading it as a verdict on the method. ReVQ does beat every scalar grid (quantile bins, FSQ,
# iFSQ) wherever one exists (5120 and 10240 bits), and none exists below 2048 bits, the left end where the paper
# places ReVQ's limit. The rectifier helps every quantizer, but little with the demo's small rectifier and two
# epochs (a 2-5 % cut of the latent MSE for the codebook quantizers, 7-12 % for FSQ / iFSQ, whose fixed grids
# leave the most structure to undo).

# %% [markdown]
# ## Checks (what `pytest --nbval` compares)
# The claims as this run shows them, whatever they are, and a few headline MSEs within bands around the values
# committed with this notebook (`notebooks/README.md`). Bands: +-2 % relative; the first nine runs gave the same
# MSEs to four digits with 1 and 2 threads (2026-12-07, Intel Xeon with AVX-512, 2 shared cores).

# %%
from revq_core.paper.verdict import Verdict


def mse(budget_tokens, name, metric="mse_rectified"):
    budget = budget_tokens * 10  # log2(1024) = 10 bits per ReVQ token
    return next(row[metric] for row in matched if row["budget"] == budget and row["quantizer"] == name)


verdict = Verdict("08_baselines", compare_committed=(N_TRAIN, N_VAL, N_IMAGES, TOKENS, CODES, QUANTIZERS, PRESET,
                                                     EPOCHS, INIT_LATENTS, SEED, LATENTS)
                  == (4096, 512, 32, [64, 128, 256, 512, 1024], 1024, ["revq", "vq", "rvq", "scalar", "fsq", "ifsq"],
                      "demo", 2, 512, 42, None))
verdict.claim("the rectifier lowers the held-out latent MSE of every quantizer at every budget",
              all(row["mse_rectified"] < row["mse_quantizer"] for row in matched))
verdict.claim("the scalar quantizers have no setting below 2048 bits (1 bit per latent number)",
              all(not row["matched"] for row in rows if row["quantizer"] in ("scalar", "fsq", "ifsq")
                  and row["budget"] < 2048))
verdict.claim("at every budget, 640 to 10240 bits, one shared codebook (vq) beats ReVQ's per-position codebooks, "
              "with and without the rectifier (4096 training latents)",
              all(mse(t, "vq", metric) < mse(t, "revq", metric) for t in TOKENS
                  for metric in ("mse_rectified", "mse_quantizer")))
verdict.claim("ReVQ beats every scalar quantizer (scalar, fsq, ifsq) wherever one has a matched setting",
              all(row["mse_rectified"] > mse(row["budget"] // 10, "revq") for row in matched
                  if row["quantizer"] in ("scalar", "fsq", "ifsq")))
for tokens, name, committed in ((64, "revq", 0.5390), (64, "vq", 0.5063), (256, "revq", 0.2346), (256, "vq", 0.1884),
                                (512, "revq", 0.0844), (1024, "revq", 0.0130), (1024, "vq", 0.00388),
                                (1024, "scalar", 0.0259)):
    verdict.near(f"rectified latent MSE of {name} at {tokens * 10} bits", mse(tokens, name), committed=committed,
                 relative=0.02)
verdict.report()
