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
# # Noise tolerance of the VAE decoder
#
# **Paper's claim** (ReVQ, motivation): normalized DC-AE latents plus Gaussian noise N(0, sigma^2) still
# decode to good images while sigma stays below a threshold of **about 0.3** (in units of each latent
# dimension's standard deviation), and degrade quickly above it. A quantizer is such a perturbation, so a
# VQ-VAE built on a frozen VAE works if its quantization error stays under that threshold (latent MSE
# ~ 0.09); the rectifier pulls the quantized latent back inside it.
#
# Here: the embedded VAE v2 (a small DC-AE-style `AutoencoderDC`, f16c32: 128 x 128 x 3 -> 32 x 8 x 8, see
# `revq_core.autoencoders`) on held-out 128 x 128 test crops of the embedded photos (`data/photos/test`); latents normalized per dimension with
# the training-split statistics; one fixed standard-normal draw scaled by each sigma (common random
# numbers). PSNR/SSIM on RGB and on Y (the paper's convention) against the original crops.

# %% tags=["parameters"]
SIGMAS = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0]  # noise std in normalized latent units
NUM_CROPS = 96  # first test crops used (of 1024); decoding dominates the run time
NUM_EXAMPLES = 5  # rows of the image grid
PSNR_DROP_DB = 1.0  # threshold estimate 1: sigma at which PSNR (Y) has fallen this far below sigma = 0
BATCH_SIZE = 128
SEED = 0
PAPER_THRESHOLD = 0.3

# %%
# NBVAL_IGNORE_OUTPUT
import torch
import matplotlib.pyplot as plt

from revq_core.data.photos import build_photo_dataset
from revq_core.data.latents import embedded_latents
from revq_core.paper.noise import (crossing_sigma, knee_sigma, noise_sweep, plot_noise_grid, plot_quality_curves,
                                   steepest_drop)
from revq_core.modeling.normalizer import LatentNormalizer
from revq_core.paper.plots import save_figure
from revq_core.evaluation.vae_quality import bicubic_baseline, reconstruction_quality
from revq_core.autoencoders.loading import load_vae

_ = torch.manual_seed(SEED)
torch.set_flush_denormal(True)

# %%
# NBVAL_IGNORE_OUTPUT
vae = load_vae()
train_latents, test_latents = embedded_latents(["train", "test"], progress=False)
images = build_photo_dataset("test")[:NUM_CROPS]  # the crops that test_latents encode, in the same order
latents = test_latents[:NUM_CROPS]
normalizer = LatentNormalizer(tuple(train_latents.shape[1:]))
normalizer.fit(train_latents)

# %%
# NBVAL_IGNORE_OUTPUT
print(f"{len(train_latents)} training latents for the statistics, {len(latents)} test crops {tuple(images.shape[1:])}")
print(f"latent std over dimensions: min {normalizer.std.min():.3f}, median {normalizer.std.median():.3f}, "
      f"max {normalizer.std.max():.3f}")

# %% [markdown]
# ## Sweep

# %%
# NBVAL_IGNORE_OUTPUT
sweep = noise_sweep(vae, normalizer, latents, images, SIGMAS, seed=SEED, batch_size=BATCH_SIZE,
                    num_examples=NUM_EXAMPLES)
print(f"{'sigma':>6s} {'latent MSE':>10s} {'PSNR RGB':>9s} {'SSIM RGB':>9s} {'PSNR Y':>8s} {'SSIM Y':>7s}")
for sigma, mse, scores in zip(sweep.sigmas, sweep.latent_mse, sweep.quality):
    print(f"{sigma:6.2f} {mse:10.3f} {scores['psnr_rgb']:9.2f} {scores['ssim_rgb']:9.3f} "
          f"{scores['psnr_y']:8.2f} {scores['ssim_y']:7.3f}")

# %% [markdown]
# ## Threshold estimates
# 1. where PSNR (Y) has dropped by `PSNR_DROP_DB` below its sigma = 0 value (linear interpolation);
# 2. the knee of the PSNR (Y) curve: the grid sigma where its slope drops most;
# 3. the grid interval where PSNR (Y) falls fastest per unit sigma;
# 4. where PSNR (Y) falls to that of bicubic resampling with the same 2048 numbers per image (26 x 26 x 3):
#    beyond it the noisy latent is worth less than a thumbnail of the same size.

# %%
# NBVAL_IGNORE_OUTPUT
psnr_y = sweep.metric("psnr_y")
drop_threshold = crossing_sigma(sweep.sigmas, psnr_y, psnr_y[0] - PSNR_DROP_DB)
knee = knee_sigma(sweep.sigmas, psnr_y)
steepest_sigma, steepest_slope = steepest_drop(sweep.sigmas, psnr_y)
print(f"PSNR Y at sigma 0: {psnr_y[0]:.2f} dB")
print(f"1. sigma where PSNR Y is {PSNR_DROP_DB:.1f} dB lower: {drop_threshold:.3f}")
print(f"2. knee of the PSNR Y curve: sigma {knee:.2f}")
print(f"3. steepest PSNR Y drop: {steepest_slope:.1f} dB per unit sigma around sigma {steepest_sigma:.3f}")
bicubic_psnr_y = reconstruction_quality(images, bicubic_baseline(images, latents[0].numel()))["psnr_y"]
bicubic_threshold = crossing_sigma(sweep.sigmas, psnr_y, bicubic_psnr_y)
print(f"4. bicubic baseline PSNR Y {bicubic_psnr_y:.2f} dB, reached at sigma {bicubic_threshold:.3f}")
for sigma in (0.1, 0.3, 0.5, 1.0):
    if sigma in sweep.sigmas:
        index = sweep.sigmas.index(sigma)
        print(f"   PSNR Y drop at sigma {sigma:.1f}: {psnr_y[0] - psnr_y[index]:.2f} dB, "
              f"SSIM Y drop {sweep.quality[0]['ssim_y'] - sweep.quality[index]['ssim_y']:.3f}")

# %%
figure = plot_quality_curves(sweep, threshold=drop_threshold, paper_threshold=PAPER_THRESHOLD)
save_figure(figure, "02_noise_tolerance_psnr")
plt.show()

# %%
figure = plot_noise_grid(sweep, images)
save_figure(figure, "02_noise_tolerance_grid")
plt.show()

# %% [markdown]
# ## Discussion
# The paper's picture is a plateau followed by a cliff: DC-AE barely changes its output for sigma < 0.3.
# The embedded VAE v2 shows **no plateau**: its PSNR falls from the first noise level on. The fall is a soft
# shoulder rather than a cliff: about 12 dB per unit sigma over the first 0.05, steepest (~22 dB per unit)
# around sigma 0.15, then slowly easing, so the 1 dB criterion is met at sigma ~0.07 and the knee estimate
# sits at the smallest grid step. In the grid the decoded crops look clean up to sigma ~ 0.1, show visible
# colour noise at 0.2 (where they fall to the quality of a same-size bicubic thumbnail, estimate 4) and clear
# artefacts from 0.3 on: this decoder tolerates roughly 0.1-0.2, less than the paper's 0.3. It is more
# tolerant than the first embedded VAE (f8 on 64 x 64 crops: -9.3 dB at sigma 0.3, against -5.9 dB here), in
# line with the idea that a decoder trained at higher compression learns to be robust to off-manifold latents;
# DC-AE, a large f32 model trained on ImageNet at 256 x 256, goes further. We cannot run DC-AE here (no weights
# offline): `load_vae("mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers")` plus 256 x 256 images would test the
# paper's claim directly.

# %% [markdown]
# ## Our numbers vs the paper's

# %%
# NBVAL_IGNORE_OUTPUT
print(f"threshold: ours {drop_threshold:.2f} (sigma at a {PSNR_DROP_DB:.1f} dB PSNR-Y drop; knee at {knee:.2f}; "
      f"bicubic-level crossing at {bicubic_threshold:.2f}) vs paper about {PAPER_THRESHOLD}")
index_paper = sweep.sigmas.index(PAPER_THRESHOLD)
drop_at_paper = psnr_y[0] - psnr_y[index_paper]
drop_at_max = psnr_y[0] - psnr_y[-1]
print(f"PSNR Y drop at sigma {PAPER_THRESHOLD}: {drop_at_paper:.2f} dB; at sigma {sweep.sigmas[-1]:.1f}: {drop_at_max:.2f} dB")
reproduced = abs(drop_threshold - PAPER_THRESHOLD) <= 0.15
print("Reproduced at this scale: the threshold estimate lies within 0.15 of the paper's 0.3." if reproduced else
      "Not reproduced at this scale: our threshold estimate is more than 0.15 away from the paper's 0.3 "
      "(the embedded VAE degrades from sigma 0 on instead of holding a plateau up to a threshold; see the discussion).")

# %% [markdown]
# ## Checks (what `pytest --nbval` compares)
# The verdict as asserts, and the headline numbers within bands around the values committed with this
# notebook (decoded images differ in their last digits between machines: `notebooks/README.md`).

# %%
from revq_core.paper.verdict import Verdict

verdict = Verdict("02_noise_tolerance", compare_committed=(SIGMAS, NUM_CROPS, PSNR_DROP_DB, SEED)
                  == ([0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0], 96, 1.0, 0))
verdict.claim("PSNR Y falls with every step of sigma (no plateau)", all(a > b for a, b in zip(psnr_y, psnr_y[1:])))
verdict.claim("not reproduced here: the threshold estimate is more than 0.15 from the paper's 0.3", not reproduced)
verdict.near("PSNR Y at sigma 0 (the VAE alone), dB", psnr_y[0], committed=30.796, tolerance=0.02)
verdict.near("sigma at a 1 dB PSNR-Y drop", drop_threshold, committed=0.0690, tolerance=0.005)
verdict.near("sigma where PSNR Y reaches the bicubic baseline", bicubic_threshold, committed=0.1683, tolerance=0.005)
verdict.near("PSNR Y drop at sigma 0.3, dB", drop_at_paper, committed=5.916, tolerance=0.03)
verdict.report()
