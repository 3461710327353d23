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
# # 2-D toy examples: multi-group quantization and the non-activation reset
#
# **Paper's claims** (ReVQ, 2-D toy figures): with a **single group** (one codebook shared by all tokens)
# the code grid is forced to be **symmetric about y = x**; **multi-group** quantization (one codebook per
# token) fits the data better; and **without the non-activation reset only 2 codes end up used**, while
# with it **all** codes are.
#
# Setting: a 2-D point is a latent of shape (2, 1, 1) cut into T = 2 tokens of D = 1 number (x, then y).
# - single group: `Quantizer(G=1, split="single")`, one 1-D codebook of K values for both x and y:
#   the reachable points are the K x K grid {(a, b)}, symmetric about y = x;
# - multi-group: `Quantizer(G=2, split="channel")`, K values for x and K others for y.
#
# Training is the ReVQ quantizer recipe (`revq_core.paper.toy.train_toy_quantizer`: MSE to the selected codes,
# AdamW, ExponentialLR to 5 %, clipping at 1.0, reset after every epoch with ratio 0.2 and noise 0.1) from
# a deliberately poor start: every code value is drawn from 4 + 0.5 N(0, 1), far from the centred data.
# Two departures from the ImageNet recipe, both toy-scale choices: lr 0.1 instead of 0.01 (the codes must
# travel ~4 units in 640 steps; with 0.05 or 20 epochs the anisotropic grid is still drifting at the end) and raw coordinates (no per-dimension normalization).

# %% tags=["parameters"]
DISTRIBUTIONS = ["blobs", "ring", "anisotropic"]  # revq_core.paper.toy.TOY_DISTRIBUTIONS
NUM_POINTS = 2048
CODES_PER_GROUP = 8  # K; the reset revives floor(0.2 K) = 1 dead code per codebook per epoch
EPOCHS = 40
BATCH_SIZE = 128
LR = 0.1
INIT_OFFSET = 4.0  # poor init: codes = INIT_OFFSET + INIT_SPREAD * N(0, 1)
INIT_SPREAD = 0.5
SEED = 0
PAPER_CODES_USED_WITHOUT_RESET = 2

# %%
# NBVAL_IGNORE_OUTPUT
import torch
import matplotlib.pyplot as plt

from revq_core.utils.threads import cpu_threads
from revq_core.paper.plots import save_figure
from revq_core.paper.toy import code_grid, codes_used, fit_toy, make_toy_points, plot_code_grid, quantization_mse

_ = torch.manual_seed(SEED)
torch.set_flush_denormal(True)
torch.set_num_threads(cpu_threads(1))  # $REVQ_NUM_THREADS or 1: the toy's tensors are tiny: one thread is ~5x faster than two on this CPU

# %% [markdown]
# ## Train every combination
# distribution x {single group, multi-group} x {without reset, with reset}, all from the same poor init.

# %%
# NBVAL_IGNORE_OUTPUT
points_by_name = {name: make_toy_points(name, NUM_POINTS, seed=SEED) for name in DISTRIBUTIONS}
runs = {}
for name, points in points_by_name.items():
    for multi_group in (False, True):
        for reset in (False, True):
            runs[name, multi_group, reset] = fit_toy(points, multi_group, reset, CODES_PER_GROUP, INIT_OFFSET,
                                                     INIT_SPREAD, EPOCHS, BATCH_SIZE, LR, SEED)

print(f"{'data':12s} {'quantizer':12s} {'reset':6s} {'codes used':>11s} {'grid pts used':>14s} {'MSE':>8s}")
for (name, multi_group, reset), (quantizer, history) in runs.items():
    used = codes_used(quantizer, points_by_name[name])
    print(f"{name:12s} {'multi-group' if multi_group else 'single':12s} {'yes' if reset else 'no':6s} "
          f"{used['codes']:>5d} / {used['codebook_size']:<3d} {used['grid_points']:>14d} "
          f"{quantization_mse(quantizer, points_by_name[name]):8.4f}")

# %%
figure, axes = plt.subplots(len(DISTRIBUTIONS), 4, figsize=(13, 3.3 * len(DISTRIBUTIONS)), squeeze=False)
for row, name in enumerate(DISTRIBUTIONS):
    for column, (multi_group, reset) in enumerate([(False, False), (False, True), (True, False), (True, True)]):
        quantizer, _ = runs[name, multi_group, reset]
        mse = quantization_mse(quantizer, points_by_name[name])
        title = (f"{name}: {'multi-group' if multi_group else 'single group'}, "
                 f"{'with' if reset else 'no'} reset\nMSE {mse:.3f}")
        plot_code_grid(axes[row, column], quantizer, points_by_name[name], title)
axes[0, 0].legend(fontsize=7, loc="lower right")
figure.tight_layout()
save_figure(figure, "03_toy_2d_codes")
plt.show()

# %% [markdown]
# ## Checks of the three claims

# %%
# NBVAL_IGNORE_OUTPUT
def is_symmetric_about_diagonal(quantizer) -> bool:
    grid = {tuple(row) for row in code_grid(quantizer).tolist()}
    return grid == {(y, x) for x, y in grid}


for name in DISTRIBUTIONS:
    single, multi = runs[name, False, True][0], runs[name, True, True][0]
    single_mse = quantization_mse(single, points_by_name[name])
    multi_mse = quantization_mse(multi, points_by_name[name])
    print(f"{name:12s} grid symmetric about y = x: single {is_symmetric_about_diagonal(single)}, "
          f"multi {is_symmetric_about_diagonal(multi)} | MSE with reset: single {single_mse:.4f}, "
          f"multi {multi_mse:.4f} ({single_mse / multi_mse:.2f}x lower with multi-group)")

# %% [markdown]
# ## Discussion
# - The single-group grid is symmetric by construction (x and y draw from the same K values), so on the
#   blobs and the anisotropic data, which are not symmetric about y = x, much of its K x K grid lies where
#   there is no data (light crosses); the multi-group grid bends to each axis separately. On the ring, which
#   *is* symmetric about y = x, the two fit equally well: the advantage of multi-group depends on the data.
# - Without the reset, the codes that are nearest to the data at the start are the only ones that ever win a
#   point; the rest stay where they were initialised. From our far-away start that leaves one to three codes per
#   codebook on blobs and ring, close to the paper's 2. On the anisotropic data the x range (std 2) reaches the
#   initial codes at about 4, so most codes are activated anyway and the reset changes little for the single
#   group; the paper's "2 codes" depends on how far the initial codes are from the data.

# %% [markdown]
# ## Our numbers vs the paper's

# %%
# NBVAL_IGNORE_OUTPUT
symmetric = all(is_symmetric_about_diagonal(runs[name, False, reset][0]) for name in DISTRIBUTIONS
                for reset in (False, True))
multi_better = all(quantization_mse(runs[name, True, True][0], points_by_name[name])
                   < quantization_mse(runs[name, False, True][0], points_by_name[name]) for name in DISTRIBUTIONS)
used_without_reset = {(name, multi_group): codes_used(runs[name, multi_group, False][0], points_by_name[name])["codes"]
                      for name in DISTRIBUTIONS for multi_group in (False, True)}
all_used_with_reset = all(codes_used(runs[name, multi_group, True][0], points_by_name[name])["codes"]
                          == runs[name, multi_group, True][0].num_groups * CODES_PER_GROUP
                          for name in DISTRIBUTIONS for multi_group in (False, True))
print(f"1. single-group grid symmetric about y = x in every run: {symmetric} (paper: forced symmetric)")
print(f"2. multi-group MSE below single-group MSE on every distribution (with reset): {multi_better} "
      f"(paper: multi-group fits better)")
print("3. codes used without reset (single group of K / multi-group of 2K): "
      + ", ".join(f"{name} {used_without_reset[name, False]} / {used_without_reset[name, True]}" for name in DISTRIBUTIONS)
      + f" (paper: {PAPER_CODES_USED_WITHOUT_RESET}); with reset all codes used in every run: {all_used_with_reset} "
        f"(paper: all)")
few_without_reset = all(used_without_reset[name, multi_group] < (2 if multi_group else 1) * CODES_PER_GROUP / 2
                        for name in ("blobs", "ring") if name in DISTRIBUTIONS for multi_group in (False, True))
print(f"Reproduced at this scale: claim 1 {symmetric}, claim 2 {multi_better} (the ring is a near tie, being symmetric "
      f"itself), claim 3 {few_without_reset and all_used_with_reset} on blobs and ring (under half the codes without "
      f"reset, all with it) but not on the anisotropic data, whose spread reaches the initial codes.")

# %% [markdown]
# ## Checks (what `pytest --nbval` compares)
# The claims as asserts (the ring's multi- vs single-group MSE is a near tie, so only its size is checked),
# and the headline numbers within bands around the values committed with this notebook (trained numbers
# differ in their last digits between machines: `notebooks/README.md`).

# %%
from revq_core.paper.verdict import Verdict


def run_mse(name, multi_group, reset):
    return float(quantization_mse(runs[name, multi_group, reset][0], points_by_name[name]))


verdict = Verdict("03_toy_2d", compare_committed=(DISTRIBUTIONS, NUM_POINTS, CODES_PER_GROUP, EPOCHS, BATCH_SIZE, LR,
                                                  INIT_OFFSET, INIT_SPREAD, SEED)
                  == (["blobs", "ring", "anisotropic"], 2048, 8, 40, 128, 0.1, 4.0, 0.5, 0))
verdict.claim("1. the single-group grid is symmetric about y = x in every run", symmetric)
verdict.claim("2. multi-group fits better than single-group (with reset) on blobs and anisotropic",
              all(run_mse(name, True, True) < run_mse(name, False, True) for name in ("blobs", "anisotropic")))
verdict.claim("3. without reset under half the codes are used on blobs and ring; with reset all are used",
              few_without_reset and all_used_with_reset)
for name, multi_group, committed in (("blobs", False, 0.01860), ("blobs", True, 0.01279), ("ring", False, 0.02194),
                                     ("ring", True, 0.02176), ("anisotropic", False, 0.09137),
                                     ("anisotropic", True, 0.07494)):
    verdict.near(f"{name} {'multi-group' if multi_group else 'single-group'} MSE with reset",
                 run_mse(name, multi_group, True), committed=committed, relative=0.02)
verdict.report()
