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
# # FLOPs analysis: where an autoencoder spends its compute
#
# **Paper's claim** (ReVQ, FLOPs analysis of a MaskBit-style VQGAN): the FLOPs of a VQ-VAE sit in the
# shallow, high-resolution layers, while its parameters sit in the deep, low-resolution layers.
# Training a tokenizer end to end therefore pays for the expensive shallow layers on every step;
# ReVQ keeps the pre-trained VAE frozen, encodes every image **once**, and trains only a quantizer and
# a small rectifier on the cached 32 x 8 x 8 latents. Numbers to check (docs/method.md, 2 FLOPs per
# multiply-add, FlopCounterMode, 256 x 256): DC-AE f32c32 in-1.0 encoder **521 G** / decoder **692 G**,
# sana-1.1 encoder **324 G** / decoder **523 G**.
#
# Models (random weights on PyTorch's `meta` device: shapes only, no memory, no arithmetic):
# - **MaskBit-like VQGAN** as a diffusers `VQModel`: channels (128, 128, 256, 256, 512), 2 residual blocks
#   per encoder stage (diffusers' decoder uses 3), 4 downsamplings, 256 x 256 -> 16 x 16 x 12, no attention.
#   The paper analyses MaskBit's own code, so our totals are of the same family, not its exact numbers.
# - **DC-AE f32c32 in-1.0** and **sana-1.1** as diffusers `AutoencoderDC` (configurations in docs/method.md),
#   256 x 256 -> 32 x 8 x 8.
#
# Every FLOP and parameter is assigned to the feature-map resolution of the module that does or holds it
# (`revq_core.paper.flops.costs_per_resolution`); convolutions and matmuls are counted, norms and activations are not.

# %% tags=["parameters"]
IMAGE_SIZE = 256  # input resolution of the autoencoders
MODELS = ["maskbit-vqgan", "dc-ae-in-1.0", "dc-ae-sana-1.1"]  # keys of revq_core.paper.flops.MODEL_CONFIGS
TOKENS_PER_IMAGE = 512  # ReVQ setting whose training step we cost: T = 512, K = 16384
CODES_PER_GROUP = 16384
RECTIFIER_WIDTH = 512  # ViT rectifier of the paper's 512-token model (~14 M parameters)
RECTIFIER_DEPTH = 3
SEED = 0

# %%
# NBVAL_IGNORE_OUTPUT
import torch
import matplotlib.pyplot as plt

from revq_core.paper.flops import (REFERENCE_GFLOPS, build_on_meta, costs_per_resolution, format_levels,
                                   latent_step_flops, part_totals, plot_shares, shares_by_resolution, count_flops)
from revq_core.modeling.revq import ReVQ
from revq_core.paper.plots import save_figure
from revq_core.modeling.rectifiers import count_parameters

_ = torch.manual_seed(SEED)

# %% [markdown]
# ## FLOPs and parameters per resolution level
# Encoder levels go from the image resolution down, decoder levels back up. Shares are of the whole
# autoencoder (encoder + decoder).

# %%
levels_by_model = {name: costs_per_resolution(build_on_meta(name), IMAGE_SIZE) for name in MODELS}
for name, levels in levels_by_model.items():
    print(f"== {name} ==")
    print(format_levels(levels))
    print()

# %% [markdown]
# ## Check against the reference totals

# %%
print(f"{'model':16s} {'part':8s} {'ours GFLOPs':>12s} {'paper GFLOPs':>13s} {'M params':>9s}")
for name, levels in levels_by_model.items():
    for part, total in part_totals(levels).items():
        reference = REFERENCE_GFLOPS.get(name, {}).get(part)
        reference_text = f"{reference:13d}" if reference else f"{'-':>13s}"
        print(f"{name:16s} {part:8s} {total['flops'] / 1e9:12.1f} {reference_text} {total['params'] / 1e6:9.2f}")

# %% [markdown]
# ## Shallow vs deep
# "Shallow" = levels at 64 x 64 and above (the first stages after the image); "deep" = 16 x 16 and below.

# %%
shallow_deep = {}
for name, levels in levels_by_model.items():
    shares = shares_by_resolution(levels)
    shallow = [sum(value[i] for size, value in shares.items() if size >= 64) for i in (0, 1)]
    deep = [sum(value[i] for size, value in shares.items() if size <= 16) for i in (0, 1)]
    shallow_deep[name] = (shallow, deep)
    print(f"{name:16s} shallow (>= 64 px): {100 * shallow[0]:5.1f}% of FLOPs, {100 * shallow[1]:5.1f}% of params | "
          f"deep (<= 16 px): {100 * deep[0]:5.1f}% of FLOPs, {100 * deep[1]:5.1f}% of params")

# %%
figure = plot_shares(levels_by_model)
save_figure(figure, "01_flops_shares")
plt.show()

# %% [markdown]
# ## One training step on cached latents vs running the VAE
# A ReVQ step on a cached latent runs the quantizer (nearest-code search over K codes per token) and the
# ViT rectifier, forward and backward. We count its forward FLOPs on a real (1, 32, 8, 8) latent and take
# 3 x forward for forward + backward (the usual rule; FlopCounterMode's backward formula ignores conv
# groups and would overcount the depthwise convolutions ~1000-fold). The VAE side is the encoder + decoder
# forward pass of one 256 x 256 image, which an end-to-end tokenizer would also have to back-propagate
# through (a further ~3x, not applied here).

# %%
model = ReVQ(latent_shape=(32, 8, 8), tokens_per_image=TOKENS_PER_IMAGE, codes_per_group=CODES_PER_GROUP,
             rectifier="vit", rectifier_width=RECTIFIER_WIDTH, rectifier_depth=RECTIFIER_DEPTH)
latent = torch.randn(1, 32, 8, 8)
with torch.no_grad():
    quantizer_flops = count_flops(model.quantizer, latent)
    rectifier_flops = count_flops(model.rectifier, latent)
step_flops = latent_step_flops(model, latent)
print(f"rectifier: {count_parameters(model.rectifier) / 1e6:.1f} M parameters, forward {rectifier_flops / 1e9:.3f} GFLOPs")
print(f"quantizer search (T={TOKENS_PER_IMAGE}, K={CODES_PER_GROUP}): forward {quantizer_flops / 1e9:.3f} GFLOPs")
print(f"ReVQ training step on a cached latent (3 x forward): {step_flops / 1e9:.2f} GFLOPs per image")
for name in ("dc-ae-in-1.0", "dc-ae-sana-1.1"):
    totals = part_totals(levels_by_model[name])
    vae_flops = totals["encoder"]["flops"] + totals["decoder"]["flops"]
    print(f"{name}: encoder + decoder forward {vae_flops / 1e9:.0f} GFLOPs per image -> "
          f"a step on cached latents is {vae_flops / step_flops:.0f}x cheaper "
          f"({(totals['encoder']['flops'] + step_flops) / step_flops:.0f}x cheaper than a step that encodes the image on the fly)")

# %% [markdown]
# ## Our numbers vs the paper's

# %%
for name, reference in REFERENCE_GFLOPS.items():
    totals = part_totals(levels_by_model[name])
    print(f"{name}: encoder {totals['encoder']['flops'] / 1e9:.0f} G (paper {reference['encoder']} G), "
          f"decoder {totals['decoder']['flops'] / 1e9:.0f} G (paper {reference['decoder']} G)")
largest_gap = max(abs(part_totals(levels_by_model[name])[part]["flops"] / 1e9 - reference[part])
                  for name, reference in REFERENCE_GFLOPS.items() for part in reference)
print(f"largest gap to the reference totals: {largest_gap:.1f} GFLOPs")
claim_holds = all(shallow[0] > deep[0] and deep[1] > shallow[1] for shallow, deep in shallow_deep.values())
print(f"FLOPs concentrated in shallow layers and parameters in deep layers for all {len(MODELS)} models: {claim_holds}")
print("Reproduced: in every model the >= 64 px levels hold"
      " most FLOPs while the <= 16 px levels hold most parameters." if claim_holds else
      "Not reproduced: see the shares above.")
