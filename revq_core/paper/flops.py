"""Where an autoencoder spends its FLOPs and keeps its parameters (the paper's FLOPs analysis).

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add,
matmuls and convolutions only: norms and activations are not counted). Models are built on the
``meta`` device, so nothing is allocated or computed: counting DC-AE at 256 x 256 takes a second.
The nearest-code search of a ReVQ quantizer is counted from its shapes (``search_flops``), since
FlopCounterMode does not see the fused C++ / Triton kernels that run it.

Every FLOP and every parameter is assigned to the spatial resolution of the module that does or
holds it (its output's H, or its input's where the output is not an image), so the cost of a
model can be read per *resolution level*: 256 x 256 (shallow layers) down to 8 x 8 (deep layers).

    vae = build_on_meta("dc-ae-in-1.0")
    levels = costs_per_resolution(vae, image_size=256)   # list[LevelCost], shallow first
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

# ---- model configurations ----------------------------------------------------------------------

_DC_AE_COMMON = dict(
    in_channels=3, latent_channels=32, attention_head_dim=32,
    encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
    decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
    encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
    decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
)

MODEL_CONFIGS = {
    # DC-AE f32c32 in-1.0 (docs/method.md, "DC-AE f32c32 configurations and FLOPs").
    "dc-ae-in-1.0": dict(
        _DC_AE_COMMON, encoder_layers_per_block=(0, 4, 8, 2, 2, 2), decoder_layers_per_block=(0, 5, 10, 2, 2, 2),
        encoder_qkv_multiscales=((),) * 6, decoder_qkv_multiscales=((),) * 6,
        decoder_norm_types=("batch_norm",) * 3 + ("rms_norm",) * 3, decoder_act_fns=("relu",) * 3 + ("silu",) * 3,
        downsample_block_type="pixel_unshuffle", upsample_block_type="pixel_shuffle", scaling_factor=0.3189),
    # DC-AE f32c32 sana-1.0 / 1.1.
    "dc-ae-sana-1.1": dict(
        _DC_AE_COMMON, encoder_layers_per_block=(2, 2, 2, 3, 3, 3), decoder_layers_per_block=(3, 3, 3, 3, 3, 3),
        encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)), decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
        decoder_norm_types="rms_norm", decoder_act_fns="silu",
        downsample_block_type="Conv", upsample_block_type="interpolate", scaling_factor=0.41407),
    # A MaskBit / VQGAN-style conv autoencoder as a diffusers VQModel: base 128 channels, multipliers
    # (1, 1, 2, 2, 4), 2 residual blocks per encoder stage (diffusers' decoder has 3), 4 downsamplings:
    # 256 x 256 -> 16 x 16, 12-dimensional codes (MaskBit's 12 bits), no attention (MaskBit drops it).
    "maskbit-vqgan": dict(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 5,
        up_block_types=("UpDecoderBlock2D",) * 5, block_out_channels=(128, 128, 256, 256, 512), layers_per_block=2,
        latent_channels=12, num_vq_embeddings=4096, vq_embed_dim=12, mid_block_add_attention=False),
}

# Forward FLOPs at 256 x 256 (docs/method.md, "DC-AE f32c32 configurations and FLOPs";
# FlopCounterMode, 2 per MAC), in GFLOPs.
REFERENCE_GFLOPS = {"dc-ae-in-1.0": {"encoder": 521, "decoder": 692},
                    "dc-ae-sana-1.1": {"encoder": 324, "decoder": 523}}


def build_on_meta(name: str) -> nn.Module:
    """A diffusers autoencoder of ``MODEL_CONFIGS[name]`` on the meta device (shapes only, no weights)."""
    from diffusers import AutoencoderDC, VQModel

    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODEL_CONFIGS)}.")
    model_class = VQModel if name.startswith("maskbit") else AutoencoderDC
    with torch.device("meta"):
        return model_class(**MODEL_CONFIGS[name]).eval()


class EncoderDecoder(nn.Module):
    """Runs ``encoder`` then ``decoder`` of a diffusers AutoencoderDC or VQModel: image (B, 3, H, W) -> image.

    For a VQModel the 1x1 ``quant_conv``/``post_quant_conv`` are included and the code lookup is
    skipped (it is a nearest-neighbour search, not a layer).
    """

    def __init__(self, autoencoder: nn.Module):
        super().__init__()
        self.encoder = autoencoder.encoder
        self.decoder = autoencoder.decoder
        self.quant_conv = getattr(autoencoder, "quant_conv", None) or nn.Identity()
        self.post_quant_conv = getattr(autoencoder, "post_quant_conv", None) or nn.Identity()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        latent = self.quant_conv(self.encoder(image))
        return self.decoder(self.post_quant_conv(latent))


# ---- counting ----------------------------------------------------------------------------------

def search_flops(num_tokens: int, codes_per_group: int, code_dim: int) -> int:
    """FLOPs of the exact nearest-code search of ``num_tokens`` tokens (all images and positions together).

    Each token is scored against the K codes of its codebook by the distance matmul ``||c||^2 - 2 x.c``:
    K x D multiply-adds, 2 FLOPs each; for B images of T tokens of dimension D, 2 x B x T x K x D (whatever
    the number of groups). The code norms, the argmin and the float64 re-rank of rare near ties are not
    counted, as norms and activations are not.
    """
    return 2 * num_tokens * codes_per_group * code_dim


def count_flops(module: nn.Module, *inputs) -> int:
    """Total forward FLOPs of ``module(*inputs)``, 2 per multiply-add (matmuls and convolutions), the
    nearest-code searches of its quantizers included (``count_flops_by_kind``)."""
    counts = count_flops_by_kind(module, *inputs)
    return counts["search"] + counts["layers"]


def count_flops_by_kind(module: nn.Module, *inputs) -> dict[str, int]:
    """Forward FLOPs of ``module(*inputs)`` as {"search": ..., "layers": ...}, 2 per multiply-add.

    "search": the nearest-code search of every revq ``MultiGroupQuantizer`` called inside (``quantizer(latent)``,
    ``module`` itself or a submodule), counted from its shapes by ``search_flops`` whichever kernel runs it.
    FlopCounterMode counts the torch matmul fallback but sees nothing of the fused C++ (``cpu_search``) or
    Triton (``gpu_search``) kernels, so whatever it counted inside a quantizer call is replaced by that
    number (the quantizer's code lookup and loss do no matmul). "layers": every other matmul and convolution.
    """
    from revq_core.modeling.quantizers.multigroup import MultiGroupQuantizer

    quantizer_calls = []  # (FLOPs FlopCounterMode counted inside the call, its search's FLOPs from the shapes)
    counted_before_call = []
    with FlopCounterMode(display=False) as counter:
        def before_quantizer(quantizer, args) -> None:
            counted_before_call.append(counter.get_total_flops())

        def after_quantizer(quantizer, args, output) -> None:
            counted_inside = counter.get_total_flops() - counted_before_call.pop()
            searched = search_flops(output.codes.numel(), quantizer.codes_per_group, quantizer.code_dim)
            quantizer_calls.append((counted_inside, searched))

        quantizers = [submodule for submodule in module.modules() if isinstance(submodule, MultiGroupQuantizer)]
        hooks = [hook for quantizer in quantizers for hook in (quantizer.register_forward_pre_hook(before_quantizer),
                                                                quantizer.register_forward_hook(after_quantizer))]
        try:
            module(*inputs)
        finally:
            for hook in hooks:
                hook.remove()
    counted_in_quantizers = sum(counted for counted, _ in quantizer_calls)
    return {"search": sum(searched for _, searched in quantizer_calls),
            "layers": int(counter.get_total_flops() - counted_in_quantizers)}


def _first_tensor(output):
    """The first tensor in a module output (tensor, tuple, or diffusers output dataclass)."""
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, dict) else output
    for value in values:
        found = _first_tensor(value) if not isinstance(value, (int, float, str)) and value is not None else None
        if found is not None:
            return found
    return None


def _spatial_size(output, inputs) -> int | None:
    """H of the module's output if it is an image tensor (B, C, H, W), else of its first input."""
    for candidate in (output, inputs[0] if inputs else None):
        tensor = _first_tensor(candidate) if candidate is not None else None
        if tensor is not None and tensor.ndim == 4:
            return int(tensor.shape[-2])
    return None


@dataclass
class ModuleCost:
    """Cost a module does *itself* (its children's excluded). ``name`` is its path, "" for the root."""
    name: str
    resolution: int | None  # H of the feature map it works at; None if it never saw one
    flops: int  # forward FLOPs done by the module's own ops (e.g. an attention's matmuls)
    params: int  # parameters held directly by this module


def module_costs(model: nn.Module, *inputs) -> list[ModuleCost]:
    """Per-module forward FLOPs and parameters of ``model(*inputs)``, each counted once (self cost).

    Runs one forward pass under FlopCounterMode with forward hooks that record every module's
    feature-map resolution; a module that saw no image tensor inherits its parent's.
    """
    resolution: dict[str, int | None] = {}

    def recorder(name: str):
        def record(module, args, output) -> None:  # must return None: a returned value replaces the output
            resolution.setdefault(name, _spatial_size(output, args))
        return record

    hooks = [module.register_forward_hook(recorder(name)) for name, module in model.named_modules()]
    try:
        with FlopCounterMode(display=False) as counter:
            model(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    root = type(model).__name__
    total_flops = {_strip_root(key, root): sum(ops.values()) for key, ops in counter.get_flop_counts().items()
                   if key != "Global"}
    names = [name for name, _ in model.named_modules()]
    costs = []
    for name, module in model.named_modules():
        children = [f"{name}.{child}" if name else child for child, _ in module.named_children()]
        own_flops = total_flops.get(name, 0) - sum(total_flops.get(child, 0) for child in children)
        own_params = sum(p.numel() for p in module.parameters(recurse=False))
        costs.append(ModuleCost(name, _inherited(name, resolution, names), int(own_flops), int(own_params)))
    return costs


def _strip_root(key: str, root: str) -> str:
    return "" if key == root else key[len(root) + 1:] if key.startswith(root + ".") else key


def _inherited(name: str, resolution: dict, names: list[str]) -> int | None:
    while True:
        if resolution.get(name) is not None:
            return resolution[name]
        if not name:
            return None
        name = name.rsplit(".", 1)[0] if "." in name else ""


@dataclass
class LevelCost:
    """Cost of all modules of one part working at one resolution."""
    part: str  # "encoder" or "decoder" (quant_conv counts with the encoder, post_quant_conv with the decoder)
    resolution: int  # H = W of the feature maps
    flops: int
    params: int


def costs_per_resolution(autoencoder: nn.Module, image_size: int = 256) -> list[LevelCost]:
    """Forward FLOPs and parameters of encoder and decoder per resolution level.

    ``autoencoder``: a diffusers AutoencoderDC or VQModel (best on the meta device, see ``build_on_meta``).
    Returns encoder levels from ``image_size`` down, then decoder levels from the smallest up.
    """
    model = EncoderDecoder(autoencoder)
    device = next(autoencoder.parameters()).device
    image = torch.empty(1, 3, image_size, image_size, device=device)
    totals: dict[tuple[str, int], list[int]] = {}
    for cost in module_costs(model, image):
        if cost.flops == 0 and cost.params == 0:
            continue
        part = "decoder" if cost.name.startswith(("decoder", "post_quant_conv")) else "encoder"
        entry = totals.setdefault((part, cost.resolution or 0), [0, 0])
        entry[0] += cost.flops
        entry[1] += cost.params
    encoder = sorted((key for key in totals if key[0] == "encoder"), key=lambda key: -key[1])
    decoder = sorted((key for key in totals if key[0] == "decoder"), key=lambda key: key[1])
    return [LevelCost(part, size, *totals[(part, size)]) for part, size in encoder + decoder]


def part_totals(levels: list[LevelCost]) -> dict[str, dict[str, int]]:
    """{"encoder": {"flops", "params"}, "decoder": {...}} summed over levels."""
    totals = {part: {"flops": 0, "params": 0} for part in ("encoder", "decoder")}
    for level in levels:
        totals[level.part]["flops"] += level.flops
        totals[level.part]["params"] += level.params
    return totals


def shares_by_resolution(levels: list[LevelCost]) -> dict[int, tuple[float, float]]:
    """{resolution: (FLOPs share, parameter share)} of the whole autoencoder, encoder and decoder together,
    ordered from the highest resolution (shallow layers) to the lowest (deep layers)."""
    total_flops = sum(level.flops for level in levels)
    total_params = sum(level.params for level in levels)
    shares: dict[int, list[float]] = {}
    for level in sorted(levels, key=lambda level: -level.resolution):
        entry = shares.setdefault(level.resolution, [0.0, 0.0])
        entry[0] += level.flops / total_flops
        entry[1] += level.params / total_params
    return {size: (flops, params) for size, (flops, params) in shares.items()}


def format_levels(levels: list[LevelCost]) -> str:
    """A table of ``costs_per_resolution``: GFLOPs, M parameters and their shares per level."""
    total_flops = sum(level.flops for level in levels)
    total_params = sum(level.params for level in levels)
    lines = [f"{'part':8s} {'res':>5s} {'GFLOPs':>8s} {'FLOPs %':>8s} {'M params':>9s} {'params %':>9s}"]
    for level in levels:
        lines.append(f"{level.part:8s} {level.resolution:5d} {level.flops / 1e9:8.1f} "
                     f"{100 * level.flops / total_flops:8.1f} {level.params / 1e6:9.2f} "
                     f"{100 * level.params / total_params:9.1f}")
    return "\n".join(lines)


# ---- training on cached latents ----------------------------------------------------------------

BACKWARD_FACTOR = 3  # forward + backward of a training step ~ 3 x forward FLOPs (backward ~ 2 x forward)


def latent_step_flops(model: nn.Module, latent: torch.Tensor) -> int:
    """FLOPs per training step of a ReVQ ``model`` on a real, normalized latent batch (B, C, H, W):
    ``BACKWARD_FACTOR`` x the forward FLOPs (``count_flops``: the quantizer's nearest-code search, counted
    from its shapes, + the rectifier).

    The backward pass is estimated, not counted: FlopCounterMode's formula for ``convolution_backward``
    ignores ``groups`` and overcounts the depthwise 5 x 5 convolutions of EfficientViT blocks about
    1000-fold. 3 x forward also overestimates the quantizer (its search needs no backward), so the
    comparison with the VAE errs on ReVQ's expensive side.
    """
    with torch.no_grad():
        return BACKWARD_FACTOR * count_flops(model, latent)


# ---- plotting ----------------------------------------------------------------------------------

def plot_shares(levels_by_model: dict[str, list[LevelCost]]):
    """One panel per model: FLOPs share and parameter share per resolution level (bar chart)."""
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(1, len(levels_by_model), figsize=(4.2 * len(levels_by_model), 3.4), squeeze=False)
    for axis, (name, levels) in zip(axes[0], levels_by_model.items()):
        shares = shares_by_resolution(levels)
        positions = np.arange(len(shares))
        flops = [100 * value[0] for value in shares.values()]
        params = [100 * value[1] for value in shares.values()]
        axis.bar(positions - 0.2, flops, width=0.4, label="FLOPs", color="tab:red")
        axis.bar(positions + 0.2, params, width=0.4, label="parameters", color="tab:blue")
        axis.set_xticks(positions, [f"{size}" for size in shares])
        axis.set_xlabel("feature-map resolution (shallow -> deep)")
        axis.set_ylabel("share of encoder + decoder (%)")
        axis.set_title(name)
        axis.legend(loc="upper center", fontsize=8)
    figure.tight_layout()
    return figure
