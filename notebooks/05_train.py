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
# # 05 · Training ReVQ: a frozen VAE becomes a VQ tokenizer (paper §3–4, Table 2)
#
# **The paper's claim.** Freeze a pre-trained DC-AE, cache its latents, and train only a channel
# multi-group quantizer plus a small post rectifier with a latent-space MSE. On ImageNet at 512 tokens
# (K = 16,384 codes per token position, ViT rectifier 512 x 3, batch 256, 100 epochs) this takes
# **22 h on one RTX 4090** and reaches **rFID 1.06, PSNR 23.70, SSIM 0.690, LPIPS 0.092**, with a
# validation latent MSE of **0.012** (normalized space).
#
# **This notebook** runs that recipe (`revq_core.train`) end to end: latents -> training -> curves ->
# images -> metrics -> a saved tokenizer. By default it uses the embedded offline setting (the f16c32 VAE v2,
# a small DC-AE-family VAE with the paper's 32 x 8 x 8 latent, on 128 x 128 crops of the 97 photos of
# `data/photos`: 8192 training crops) and the `demo` preset (the paper's 512 tokens of D = 4, but K = 2048
# and a tiny rectifier, 8 epochs), so it finishes in a few minutes on a 2-core CPU. One deviation from the
# paper's architecture in `demo` only: its rectifier is residual (`latent + correction`, starting at the
# identity). The paper's form must first learn the identity, which a 44 k-parameter rectifier does not manage
# in 512 steps: measured, it ended far *above* the quantizer's own validation MSE (0.318 vs 0.047), where
# the residual one ends below it. The paper's full run is the same notebook with other parameters:
#
# ```bash
# papermill notebooks/05_train.ipynb runs/512T.ipynb -p preset paper_512T -p device cuda \
#     -p vae mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers -p data /path/to/imagenet
# ```
# (`data` holds `train/<class>/*` and `val/<class>/*`; latents are encoded once and cached; training
# resumes from `output_dir/checkpoint.pt` if interrupted.)

# %% tags=["parameters"]
preset = "demo"  # demo | tiny | paper_512T | paper_256T_65k | paper_256T_262k
vae = None  # None: the embedded VAE; or a directory / hub id, e.g. "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers"
data = None  # None: the embedded photo crops; or an ImageNet-layout root holding train/ and val/
epochs = None  # None: the preset's (demo: 8; paper: 100)
batch_size = None  # None: the preset's (demo: 128; paper_512T: 256)
device = "cpu"  # "cuda" for the paper's presets
fast = None  # None: the speed settings that pay on this device (CUDA: bf16 autocast, fused AdamW, compiled rectifier; CPU: none)
output_dir = None  # None: runs/05_train_<preset>
seed = 42
num_eval_images = 256  # held-out images for PSNR / SSIM (/ LPIPS / rFID) and the figure
lpips_weights = None  # path to alexnet-owt-7be5be79.pth, else $TORCH_HOME/hub/checkpoints is searched
rfid_weights = None  # path to weights-inception-2015-12-05-6726825d.pth, likewise
resume = True  # continue the run in output_dir when there is one (its config and data must be this run's)
overwrite = False  # True: delete the run in output_dir and start over
assert_checks = True  # the last cell asserts the claims (False: only reports them, e.g. for a one-epoch smoke run)

# %%
import matplotlib.pyplot as plt
import torch

from revq_core.autoencoders.loading import load_vae
from revq_core.evaluation.protocol import format_scores
from revq_core.modeling.revq import ReVQ
from revq_core.pipeline import RESULT_COLUMNS, check_run_setup, evaluate_tokenizer, prepare_data, reconstruct_images
from revq_core.paper.plots import image_rows, plot_history, runs_dir, save_figure
from revq_core.training.config import preset as make_preset
from revq_core.training.config import speed_settings
from revq_core.training.trainer import train

torch.manual_seed(seed)
overrides = {key: value for key, value in (("epochs", epochs), ("batch_size", batch_size)) if value is not None}
speed = speed_settings(device) if fast is not False else {}
config = make_preset(preset, device=device, seed=seed, **speed, **overrides)
output_dir = output_dir or str(runs_dir() / f"05_train_{preset}")
check_run_setup(device, output_dir, config)  # no such device here, output_dir a file, epochs=2.5, ...: fail now
print(f"preset {preset}: T = {config.model.tokens_per_image} tokens, K = {config.model.codes_per_group} codes per token, "
      f"{config.model.rectifier} rectifier {config.model.rectifier_width} x {config.model.rectifier_depth}, "
      f"{config.epochs} epochs of batch {config.batch_size}")

# %% [markdown]
# ## 1. Latents: encode once with the frozen VAE, cache
# Training never touches pixels: every image is encoded once and the latents are cached. The embedded
# crops' latents ship with the repository (`data/embedded_latents/`: the VAE v2's float32 output rounded to
# float16, used only while they record this VAE's weights and these crops; a test re-encodes a sample), so a
# first run does not spend its minutes on the encoder; an image folder is encoded here and cached under
# `.cache/`. Normalization statistics (a mean and variance for each of the 2048 latent
# dimensions) are computed from the training latents inside `train`.

# %%
# NBVAL_IGNORE_OUTPUT
frozen_vae = load_vae(vae, device=device)
splits = prepare_data(frozen_vae, data, num_eval_images=num_eval_images)

# %%
print(f"train latents {tuple(splits.train_latents.shape)}, validation latents {tuple(splits.val_latents.shape)}, "
      f"held-out images {tuple(splits.eval_images.shape)}")

# %% [markdown]
# ## 2. Train: quantizer + rectifier on latent MSE
# AdamW with two parameter groups, ExponentialLR to 5% of the rates, gradient clipping per group,
# the non-activation reset after every epoch, validation latent MSE every epoch. A checkpoint is
# written atomically after every epoch.

# %%
# NBVAL_IGNORE_OUTPUT
model, history = train(config, splits.train_latents, splits.val_latents, output_dir=output_dir,
                       resume=resume and not overwrite, overwrite=overwrite, vae=vae or "embedded-v2")

# %%
# NBVAL_IGNORE_OUTPUT
for epoch, loss, val_mse, usage in zip(history.epoch, history.train_loss, history.val_mse, history.usage):
    print(f"epoch {epoch + 1:3d}: train loss {loss:.4f}, validation latent MSE {val_mse:.4f}, codebook usage {usage:.1%}")

# %%
figure = plot_history(history.to_dict(), f"ReVQ {preset}: {config.model.tokens_per_image} tokens, K = {config.model.codes_per_group}")
save_figure(figure, "05_train_curves")
plt.show()

# %% [markdown]
# ## 3. Images: originals, the VAE alone, and ReVQ (image -> 512 token ids -> image)
# The VAE row is the ceiling ReVQ can reach: tokens can only lose what the VAE kept.

# %%
model = model.attach_vae(frozen_vae)
shown = splits.eval_images[:8]
vae_images, revq_images = reconstruct_images(model, frozen_vae, shown)
figure = image_rows({"original": shown, "VAE": vae_images, f"ReVQ ({config.model.tokens_per_image} tokens)": revq_images},
                    "Held-out photos (never seen in training)")
save_figure(figure, "05_train_reconstructions")
plt.show()

# %%
codes = model.encode_images(shown)
print(f"token ids: {tuple(codes.shape)}, {codes.dtype} in [0, {config.model.codes_per_group})")

# %%
# NBVAL_IGNORE_OUTPUT
print(f"the first image's first token ids: {codes[0, :8].tolist()}")

# %% [markdown]
# ## 4. Metrics on the held-out images
# Two protocols, each number labelled with its own. **paper**: the authors' evaluator exactly (pyiqa 0.1.13
# as they call it): PSNR of the **red channel** and SSIM of the **YIQ luma** (11 x 11 window, valid
# positions), on reconstructions rounded to 8 bits: these are the numbers comparable with the paper's.
# **standard**: PSNR / SSIM on RGB and on BT.601 luma (Y), a few dB higher on the same images. LPIPS and
# rFID need backbone weights that cannot be downloaded here; when they are missing the note below says
# which file to put where.

# %%
# NBVAL_IGNORE_OUTPUT
results, notes = evaluate_tokenizer(model, frozen_vae, splits.eval_images, lpips_weights=lpips_weights,
                                    rfid_weights=rfid_weights)
print(format_scores(results, RESULT_COLUMNS, digits=3))

# %%
# NBVAL_IGNORE_OUTPUT
for note in notes:
    print(note)

# %% [markdown]
# ## 5. The trained tokenizer, saved
# `save_pretrained` writes `config.json` + `model.safetensors`; `ReVQ.from_pretrained(dir).attach_vae(vae)`
# gives back the same tokenizer.

# %%
model_dir = f"{output_dir}/model"
model.save_pretrained(model_dir)
reloaded = ReVQ.from_pretrained(model_dir).to(device).attach_vae(frozen_vae)
print("reloaded tokenizer gives the same token ids:", torch.equal(reloaded.encode_images(shown), codes))

# %% [markdown]
# ## 6. Ours beside the paper's

# %%
# NBVAL_IGNORE_OUTPUT
paper = {"val latent MSE": 0.012, "PSNR (paper protocol)": 23.70, "SSIM (paper protocol)": 0.690}
ours = {"val latent MSE": history.val_mse[-1], "PSNR (paper protocol)": results["revq"]["paper_psnr"],
        "SSIM (paper protocol)": results["revq"]["paper_ssim"]}
print(f"{'':24s}{'ours':>10s}{'paper 512T':>12s}")
for key in paper:
    print(f"{key:24s}{ours[key]:10.3f}{paper[key]:12.3f}")
print(f"standard protocol, ours: PSNR Y {results['revq']['psnr_y']:.2f} dB, SSIM Y {results['revq']['ssim_y']:.3f}, "
      f"PSNR RGB {results['revq']['psnr_rgb']:.2f} dB (BT.601 luma / all channels: not what the paper reports)")
rectifier_gain = 1 - history.val_mse[-1] / history.val_quant_mse[-1]
print(f"the rectifier cuts the validation latent MSE by {rectifier_gain:.1%} "
      f"({history.val_quant_mse[-1]:.4f} -> {history.val_mse[-1]:.4f})")
kept_psnr = results["revq"]["paper_psnr"] - results["vae"]["paper_psnr"]
noise_level = 0.3 ** 2  # the noise-tolerance threshold (sigma about 0.3, notebook 02) as a latent MSE
print(f"ReVQ vs the VAE alone: {kept_psnr:+.2f} dB PSNR (paper protocol); validation latent MSE "
      f"{'below' if history.val_mse[-1] < noise_level else 'above'} the noise tolerance 0.3^2 = {noise_level:.2f}")

# %% [markdown]
# **Does the claim reproduce at this scale?** The recipe does what the paper says it does: only the
# latent-space MSE is trained, the VAE stays frozen, the codebooks stay in use thanks to the reset, and
# the tokens decode to recognisable images of the held-out photos — trained in a minute on a CPU, with the
# validation latent MSE (~0.046) well under the noise tolerance 0.09. The absolute numbers are not comparable
# with the paper's: K = 2048 instead of 16,384 codes per token, a (residual) rectifier of 44 k instead of
# 14 M parameters, 8 epochs on 8 k crops instead of 100 on 1.28 M images, and 128 x 128 crops through an
# 11 M-parameter f16 VAE instead of 256 x 256 ImageNet through the f32 DC-AE. ReVQ ends ~2.3 dB below the VAE
# alone (paper protocol); the shipped tokenizer (`data/embedded_tokenizer`: the same K, a 128 x 2 rectifier,
# 40 epochs on 16 k crops) ends 2.1 dB below, and the paper's setting is `-p preset paper_512T` on a GPU
# with real DC-AE latents.

# %% [markdown]
# ## 7. Checks (what `pytest --nbval` compares)
# The numbers above differ in their last digits from machine to machine (CPU kind, thread count, GPU), so
# nbval does not compare them. This cell asserts the claims of this run and that each headline number lies
# in a band around the value committed with this notebook (bands from the spread measured across CPUs,
# thread counts and kernels: `notebooks/README.md`). It prints only the claims and the bands, which are the
# same everywhere; with other parameters than the committed run's, only the claims are checked.

# %%
from revq_core.paper.verdict import Verdict

verdict = Verdict("05_train", compare_committed=(preset, vae, data, epochs, batch_size, seed, num_eval_images)
                  == ("demo", None, None, None, None, 42, 256), strict=assert_checks)
verdict.claim("the rectifier lowers the validation latent MSE below the quantizer's own",
              history.val_mse[-1] < history.val_quant_mse[-1])
verdict.claim("the codebooks stay in use (>= 95% of codes used in the last epoch)", history.usage[-1] >= 0.95)
verdict.claim("the validation latent MSE lies below the noise tolerance 0.3^2", history.val_mse[-1] < 0.3 ** 2)
verdict.claim("ReVQ stays below its ceiling, the VAE alone (PSNR Y)",
              results["revq"]["psnr_y"] < results["vae"]["psnr_y"])
verdict.near("validation latent MSE", history.val_mse[-1], committed=0.045762, relative=0.01)
verdict.near("quantizer-only validation latent MSE", history.val_quant_mse[-1], committed=0.046719, relative=0.01)
verdict.near("ReVQ PSNR, paper protocol, dB", results["revq"]["paper_psnr"], committed=26.558, tolerance=0.1)
verdict.near("ReVQ SSIM, paper protocol", results["revq"]["paper_ssim"], committed=0.7965, tolerance=0.003)
verdict.near("ReVQ PSNR Y, dB", results["revq"]["psnr_y"], committed=28.710, tolerance=0.1)
verdict.near("ReVQ SSIM Y", results["revq"]["ssim_y"], committed=0.8184, tolerance=0.003)
verdict.near("VAE-alone PSNR Y, dB", results["vae"]["psnr_y"], committed=31.530, tolerance=0.02)
verdict.report()
