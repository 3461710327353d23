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
# Ours: the embedded default (latents 32 x 8 x 8 of 64 x 64 photo crops), tiny runs on 2 CPU cores: a
# seeded subset of the training latents, a few epochs, K = 64, rectifiers of width 32 (MLP: 256), depth 1.
# Because 100 epochs become ~200 steps, the rectifier's learning rate is raised to the quantizer's
# (ratio 1.0 instead of 0.05). Tables 1-3 use T = 64 tokens (D = 32), where a rectifier this small can
# still beat the quantized latent within that budget.

# %% tags=["parameters"]
N_TRAIN = 2048  # training latents (a seeded subset of the 16384 embedded ones)
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
THREADS = 2
SEED = 42

# %%
# NBVAL_IGNORE_OUTPUT
import matplotlib.pyplot as plt
import torch

from revq_core.experiments import (format_table, percent, pick, plot_bars, plot_usage_heatmap, run_config, subset,
                                   sweep)
from revq_core.latents import embedded_latents
from revq_core.plots import save_figure
from revq_core.train import preset

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
with_encoder = run_config(preset("demo", **{**base.__dict__, "rectifier": PRE_ENCODER, "pre_encoder": PRE_ENCODER,
                                            "rectifier_width": RECTIFIERS[PRE_ENCODER]}),
                          train_latents, val_latents)
without_encoder = pick(kinds, rectifier=PRE_ENCODER)
print(format_table([["without (ReVQ)", without_encoder["val_mse"], 0.012, 0.064],
                    ["with extra encoder", with_encoder["val_mse"], 0.620, 0.653]],
                   ["setting", f"ours rectified MSE ({TOKENS}T, {PRE_ENCODER})", "paper 512T", "paper 256T"]))

# %% [markdown]
# ## Table 3: what the rectifier buys at short token lengths
# Relative cut of the latent MSE by the rectifier: 1 - rectified / quantizer-only, same run.

# %%
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
reset_base = preset("demo", **{**base.__dict__, "tokens_per_image": RESET_TOKENS, "rectifier": "identity",
                               "epochs": RESET_EPOCHS, "batch_size": 128})
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
# ## Summary: did the claims reproduce at this scale?

# %%
vit, cnn, mlp = (pick(kinds, rectifier=kind) for kind in ("vit", "cnn", "mlp"))
order = sorted(kinds, key=lambda row: row["val_mse"])
print("1. rectifier ranking (best first):", " < ".join(row["rectifier"] for row in order),
      "| paper: vit <= cnn < mlp ->", "reproduced" if [r["rectifier"] for r in order] == ["vit", "cnn", "mlp"]
      else "not reproduced")
encoder_penalty = with_encoder["val_mse"] / without_encoder["val_mse"] - 1  # paper: 0.620 / 0.012 - 1 = +5067%
print(f"2. extra encoder: {with_encoder['val_mse']:.3g} vs {without_encoder['val_mse']:.3g} without "
      f"({encoder_penalty:+.1%}) | paper 0.620 vs 0.012 (+5067%) ->",
      "reproduced (much worse)" if encoder_penalty > 0.1 else "not reproduced (within 10%)")
print(f"3. rectifier cut at {TOKENS}T: {percent(vit['rect_gain'])} | paper 23.3% ->",
      "same direction" if vit["rect_gain"] > 0 else "not reproduced")
with_reset = [row["usage"] for row in usage_rows if row["reset"]]
without_reset = {row["init"]: row["usage"] for row in usage_rows if not row["reset"] and row["codes"] == max(RESET_CODES)}
print(f"4. usage with reset: min {percent(min(with_reset))} over all runs | without reset at K = {max(RESET_CODES)}: "
      + ", ".join(f"init {init} {percent(u)}" for init, u in without_reset.items()) + " | paper >97% vs 65.3%")

# %% [markdown]
# **Reading the summary honestly.** (1) The ranking ViT < CNN < MLP matches the paper, but our MSEs are
# 0.37-0.41 (T = 64, K = 64, ~300 steps) against the paper's 0.012-0.076 (512/256 T, K = 16k-65k, 100
# ImageNet epochs): only the ordering is comparable. (2) The extra encoder is worse only by a hair here
# (well within 10%): the paper's collapse (0.620 vs 0.012) comes from a long co-adaptation of encoder and
# codebook that a few epochs do not reach; **not reproduced at this scale**. (3) The rectifier cuts the MSE
# at 64 tokens (ViT ~8 % vs the paper's 23.3 %): same direction, smaller, with a rectifier of ~44 k parameters
# trained for ~300 steps. (4) With the paper's init (codes copied from training tokens) usage stays 100 %
# with or without reset at our K; with N(0, 1) codes, usage without reset falls as K grows (77 % at K = 256)
# while the reset keeps it higher (94.5 %): the paper's trend, but below its 97 % after so few epochs.
