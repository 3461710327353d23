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
# # The paper's ablation tables, beside ours
#
# **Paper's claims** (Sec. 4.3 ablations, ImageNet, latent MSE in normalized space):
# 1. **Rectifier architecture**: ViT is best. 512T: ViT **0.012**, CNN **0.012**, MLP **0.013**;
#    256T: ViT **0.064**, CNN **0.068**, MLP **0.076**.
# 2. **No extra encoder before the quantizer**: adding one makes it much worse, **0.620** vs **0.012** (512T),
#    **0.653** vs **0.064** (256T).
# 3. **The rectifier matters most at short token lengths**: at 64 tokens it cuts the reconstruction loss by
#    **23.3 %**.
# 4. **Non-activation reset keeps the codebook in use**: with reset usage stays **above 97 %**; without, it
#    falls as K grows (**65.3 %** at the largest K, on 10 % of ImageNet).
#
# Ours: the embedded default (latents 32 x 8 x 8 of 128 x 128 photo crops through the f16c32 VAE v2), tiny runs
# on 2 CPU cores: a
# seeded subset of the training latents, a few epochs, K = 64, rectifiers of width 32 (MLP: 256), depth 1.
# Because 100 epochs become ~200 steps, the rectifier's learning rate is raised to the quantizer's
# (ratio 1.0 instead of 0.05). Tables 1-3 use T = 64 tokens (D = 32), where a rectifier this small can
# still beat the quantized latent within that budget.

# %% tags=["parameters"]
N_TRAIN = 2048  # training latents (a seeded subset of the 8192 embedded ones)
N_VAL = 512
TOKENS = 64  # T for tables 1-3 (D = 2048 / T)
CODES = 64  # K
EPOCHS = 5
BATCH_SIZE = 32
RECTIFIER_LR_RATIO = 1.0  # paper: 0.05 over 100 epochs
RECTIFIERS = {"vit": 32, "cnn": 32, "mlp": 256}  # kind -> width
RECTIFIER_DEPTH = 1
PRE_ENCODER = "cnn"  # the extra encoder (and the rectifier it is compared with)
RESET_TOKENS = 64  # table 4
RESET_CODES = [16, 64, 256]
RESET_INITS = ["samples", "random"]
RESET_EPOCHS = 4
TABLE2_EPOCHS = 2  # the demo tokenizer of our Table 2 row
TABLE2_IMAGES = 128  # held-out test crops it is evaluated on
THREADS = 2
SEED = 42

# %%
# NBVAL_IGNORE_OUTPUT
import matplotlib.pyplot as plt
import torch

from revq_core.paper.experiments import (format_table, percent, pick, plot_bars, plot_usage_heatmap, run_config,
                                         subset, sweep)
from revq_core.data.latents import embedded_latents
from revq_core.paper.plots import save_figure
from revq_core.training.config import preset

torch.manual_seed(SEED)
train_all, val_all = embedded_latents(["train", "val"], progress=False)
train_latents = subset(train_all, N_TRAIN, seed=SEED)
val_latents = val_all[:N_VAL]
base = preset("demo", tokens_per_image=TOKENS, codes_per_group=CODES, epochs=EPOCHS, batch_size=BATCH_SIZE,
              rectifier_depth=RECTIFIER_DEPTH, rectifier_lr_ratio=RECTIFIER_LR_RATIO, rectifier_residual=False,
              init_latents=None, seed=SEED,
              num_threads=THREADS)
print("train latents", tuple(train_latents.shape), "| val latents", tuple(val_latents.shape))

# %% [markdown]
# ## Table 1: rectifier architecture
# Same quantizer in every run (it never sees the rectifier's gradient), so only the rectifier differs.

# %%
# NBVAL_IGNORE_OUTPUT
kinds = sweep(base, [{"rectifier": kind, "rectifier_width": width} for kind, width in RECTIFIERS.items()],
              train_latents, val_latents)
PAPER_RECT = {"vit": (0.012, 0.064), "cnn": (0.012, 0.068), "mlp": (0.013, 0.076)}
print(format_table([[row["rectifier"], row["rectifier_params"], row["val_quant_mse"], row["val_mse"],
                     *PAPER_RECT[row["rectifier"]]] for row in kinds],
                   ["rectifier", "params", f"ours quantizer-only ({TOKENS}T)", f"ours rectified ({TOKENS}T)",
                    "paper 512T", "paper 256T"]))

# %%
figure = plot_bars([row["rectifier"] for row in kinds], [row["val_mse"] for row in kinds],
                   [PAPER_RECT[row["rectifier"]][1] for row in kinds], ylabel="latent MSE",
                   title=f"rectifier kind: ours {TOKENS}T vs paper 256T")
save_figure(figure, "06_rectifier_kinds")
plt.show()

# %% [markdown]
# ## Table 2: an extra encoder before the quantizer
# The ablation puts a trainable module like the rectifier *before* the quantizer (trained through a
# straight-through estimator with a commitment term), so the quantizer chases a moving target.

# %%
# NBVAL_IGNORE_OUTPUT
with_encoder = run_config(base.replace(rectifier=PRE_ENCODER, pre_encoder=PRE_ENCODER,
                                       rectifier_width=RECTIFIERS[PRE_ENCODER]), train_latents, val_latents)
without_encoder = pick(kinds, rectifier=PRE_ENCODER)
print(format_table([["without (ReVQ)", without_encoder["val_mse"], 0.012, 0.064],
                    ["with extra encoder", with_encoder["val_mse"], 0.620, 0.653]],
                   ["setting", f"ours rectified MSE ({TOKENS}T, {PRE_ENCODER})", "paper 512T", "paper 256T"]))

# %% [markdown]
# ## Table 3: what the rectifier buys at short token lengths
# Relative cut of the latent MSE by the rectifier: 1 - rectified / quantizer-only, same run.

# %%
# NBVAL_IGNORE_OUTPUT
gain_rows = [[row["rectifier"], row["val_quant_mse"], row["val_mse"], percent(row["rect_gain"]),
              "23.3%" if row["rectifier"] == "vit" else "-"] for row in kinds]
print(format_table(gain_rows, ["rectifier", f"quantizer only ({TOKENS}T)", "rectified", "ours: cut",
                               "paper: cut (64T)"]))

# %% [markdown]
# ## Table 4: codebook usage vs K, with and without the non-activation reset
# Quantizer only (identity rectifier), T = 64. Usage = fraction of codes selected at least once during the
# last epoch (before its reset), averaged over the T codebooks. Two inits: the paper's (codes copied from
# training tokens) and N(0, 1) codes (no data), where dead codes appear immediately.

# %%
# NBVAL_IGNORE_OUTPUT
reset_base = base.replace(tokens_per_image=RESET_TOKENS, rectifier="identity", epochs=RESET_EPOCHS, batch_size=128)
usage_rows = sweep(reset_base, [{"codes_per_group": k, "reset": reset, "init": init} for init in RESET_INITS
                                for reset in (True, False) for k in RESET_CODES], train_latents, val_latents)
print(format_table([[row["init"], "reset" if row["reset"] else "no reset", row["codes"], percent(row["usage"]),
                     row["val_quant_mse"]] for row in usage_rows],
                   ["init", "reset", "K", "usage (last epoch)", "quantizer-only MSE"]))
print("paper (10% ImageNet): with reset > 97% at every K; without reset falling with K, 65.3% at the largest K")

# %%
figure = plot_usage_heatmap(usage_rows, title=f"codebook usage, T = {RESET_TOKENS}, {RESET_EPOCHS} epochs")
save_figure(figure, "06_reset_usage")
plt.show()

# %% [markdown]
# ## Table 2: reconstruction quality beside other tokenizers
# The paper's Table 2 (ImageNet val, 256 x 256, 50,000 images), and our column at the embedded scale:
# the `demo` preset (512 tokens, K = 2048) trained for TABLE2_EPOCHS epochs on the embedded latents,
# evaluated on held-out 128 x 128 test crops with the **paper protocol** (red-channel PSNR, YIQ-luma SSIM,
# 8-bit reconstructions: the authors' evaluator). LPIPS and rFID need weights that are not available
# offline. At ImageNet scale the same protocol fills the row for a trained model or the authors' released
# one (`revq_core.evaluate`; command printed below).

# %%
# NBVAL_IGNORE_OUTPUT
from revq_core.data.photos import build_photo_dataset
from revq_core.evaluation.protocol import PAPER_TABLE2
from revq_core.pipeline import evaluate_tokenizer
from revq_core.training.trainer import train
from revq_core.autoencoders.loading import load_vae

table2_config = preset("demo", epochs=TABLE2_EPOCHS, seed=SEED, num_threads=THREADS)
table2_model, _ = train(table2_config, train_all, val_latents, progress=False)
embedded_vae = load_vae()
table2_results, table2_notes = evaluate_tokenizer(table2_model.attach_vae(embedded_vae), embedded_vae,
                                                  build_photo_dataset("test")[:TABLE2_IMAGES])
ours_row = table2_results["revq"]


def cell(value, digits):
    return "-" if value is None else f"{value:.{digits}f}"


rows_table2 = [[name, tokens or "-", codes or "-", cell(ssim, 3), cell(psnr, 2), cell(lpips, 3), cell(rfid, 2)]
               for name, tokens, codes, ssim, psnr, lpips, rfid in PAPER_TABLE2[:7]]
rows_table2.append([f"ours: demo, {TABLE2_EPOCHS} epochs, 128 px embedded", table2_config.model.tokens_per_image,
                    table2_config.model.codes_per_group, cell(ours_row["paper_ssim"], 3),
                    cell(ours_row["paper_psnr"], 2), cell(ours_row.get("lpips"), 3), cell(ours_row.get("rfid"), 2)])
print(format_table(rows_table2, ["tokenizer", "tokens", "K", "SSIM", "PSNR", "LPIPS", "rFID"]))
print(f"(paper protocol; ours on {TABLE2_IMAGES} held-out crops; the VAE alone scores PSNR "
      f"{table2_results['vae']['paper_psnr']:.2f}, SSIM {table2_results['vae']['paper_ssim']:.3f}; "
      "LPIPS / rFID: n/a offline)")

# %% [markdown]
# The command that fills the row at ImageNet scale (a trained model, or the authors' released one after
# `python -m revq_core.convert ckpt.pth revq-512T --preprocessor preprocessor.pth`):

# %%
print("python -m revq_core.evaluate --model runs/512T/model --vae mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers "
      "--data /path/to/imagenet/val --protocol both --with-vae --output results.json")

# %% [markdown]
# ## Summary: did the claims reproduce at this scale?

# %%
# NBVAL_IGNORE_OUTPUT
vit, cnn, mlp = (pick(kinds, rectifier=kind) for kind in ("vit", "cnn", "mlp"))
order = sorted(kinds, key=lambda row: row["val_mse"])
print("1. rectifier ranking (best first):", " < ".join(row["rectifier"] for row in order),
      "| paper: vit <= cnn < mlp ->", "reproduced" if [r["rectifier"] for r in order] == ["vit", "cnn", "mlp"]
      else "not reproduced")
encoder_penalty = with_encoder["val_mse"] / without_encoder["val_mse"] - 1  # paper: 0.620 / 0.012 - 1 = +5067%
print(f"2. extra encoder: {with_encoder['val_mse']:.3g} vs {without_encoder['val_mse']:.3g} without "
      f"({encoder_penalty:+.1%}) | paper 0.620 vs 0.012 (+5067%) ->",
      "same direction (worse by more than 5%)" if encoder_penalty > 0.05 else "not reproduced (within 5%)")
print(f"3. rectifier cut at {TOKENS}T: {percent(vit['rect_gain'])} | paper 23.3% ->",
      "same direction" if vit["rect_gain"] > 0 else "not reproduced")
with_reset = [row["usage"] for row in usage_rows if row["reset"]]
without_reset = {row["init"]: row["usage"] for row in usage_rows if not row["reset"] and row["codes"] == max(RESET_CODES)}
print(f"4. usage with reset: min {percent(min(with_reset))} over all runs | without reset at K = {max(RESET_CODES)}: "
      + ", ".join(f"init {init} {percent(u)}" for init, u in without_reset.items()) + " | paper >97% vs 65.3%")

# %% [markdown]
# **Reading the summary honestly.** (1) The ranking ViT < CNN < MLP matches the paper, but our MSEs are
# 0.62-0.66 (T = 64, K = 64, ~300 steps) against the paper's 0.012-0.076 (512/256 T, K = 16k-65k, 100
# ImageNet epochs): only the ordering is comparable; the MLP does not even beat the quantized latent here.
# (2) The extra encoder makes the rectified MSE worse by ~11 %: the paper's direction, but nowhere near its
# collapse (0.620 vs 0.012, +5067 %), which comes from a long co-adaptation of encoder and codebook that a few
# epochs do not reach. (On the first embedded VAE's easier latents the penalty was within 1 %: this number
# depends on the latents.) (3) The rectifier cuts the MSE at 64 tokens (ViT ~5 % vs the paper's 23.3 %):
# same direction, smaller, with a rectifier of ~44 k parameters trained for ~300 steps. (4) With the paper's
# init (codes copied from training tokens) usage stays at 100 % (99.8 % at K = 256 without reset); with
# N(0, 1) codes, usage without reset falls as K grows (79 % at K = 256) while the reset keeps it higher
# (96 %): the paper's trend, just below its 97 % after so few epochs.

# %% [markdown]
# ## Checks (what `pytest --nbval` compares)
# The summary above as asserts, and the headline numbers within bands around the values committed with this
# notebook (trained numbers differ in their last digits between machines: `notebooks/README.md`).

# %%
from revq_core.paper.verdict import Verdict


verdict = Verdict("06_tables", compare_committed=(N_TRAIN, N_VAL, TOKENS, CODES, EPOCHS, BATCH_SIZE, RECTIFIERS,
                                                  RECTIFIER_DEPTH, PRE_ENCODER, RESET_TOKENS, RESET_CODES, RESET_EPOCHS,
                                                  TABLE2_EPOCHS, TABLE2_IMAGES, SEED)
                  == (2048, 512, 64, 64, 5, 32, {"vit": 32, "cnn": 32, "mlp": 256}, 1, "cnn", 64, [16, 64, 256], 4, 2, 128, 42))
usage = {(row["init"], row["reset"], row["codes"]): row["usage"] for row in usage_rows}
verdict.claim("1. rectifier ranking ViT < CNN < MLP (rectified MSE)", vit["val_mse"] < cnn["val_mse"] < mlp["val_mse"])
verdict.claim("2. the extra encoder makes the rectified MSE worse, by more than 5%", encoder_penalty > 0.05)
verdict.claim("3. the ViT rectifier cuts the latent MSE at 64 tokens", vit["rect_gain"] > 0)
verdict.claim("4. with N(0, 1) codes and no reset, usage falls as K grows",
              all(usage[("random", False, a)] > usage[("random", False, b)] for a, b in zip(RESET_CODES, RESET_CODES[1:])))
verdict.claim("4. the reset keeps usage at least as high as no reset at every K and init",
              all(usage[(init, True, k)] >= usage[(init, False, k)] for init in RESET_INITS for k in RESET_CODES))
verdict.near("quantizer-only MSE (64T)", vit["val_quant_mse"], committed=0.65946, relative=0.005)
for row, committed in ((vit, 0.62481), (cnn, 0.63834), (mlp, 0.66023)):
    verdict.near(f"{row['rectifier']} rectified MSE (64T)", row["val_mse"], committed=committed, relative=0.01)
verdict.near("extra encoder penalty (with / without - 1)", encoder_penalty, committed=0.128, tolerance=0.04)
verdict.near("ViT rectifier cut at 64T", vit["rect_gain"], committed=0.0525, tolerance=0.01)
verdict.near("usage without reset, N(0, 1) init, K = 256", usage[("random", False, 256)], committed=0.7853, tolerance=0.02)
verdict.near("usage with reset, N(0, 1) init, K = 256", usage[("random", True, 256)], committed=0.9583, tolerance=0.02)
verdict.near("Table 2, ours: PSNR (paper protocol), dB", ours_row["paper_psnr"], committed=26.252, tolerance=0.1)
verdict.near("Table 2, ours: SSIM (paper protocol)", ours_row["paper_ssim"], committed=0.7857, tolerance=0.003)
verdict.report()
