"""Projection: 100 ImageNet epochs of the 512T recipe on one RTX 4090, from counted FLOPs and bytes.

Usage (seconds; nothing runs at full size: every tensor is on the ``meta`` device):
    .venv/bin/python benchmarks/projection.py
    .venv/bin/python benchmarks/projection.py --efficiency 0.3 0.5 --bandwidth-efficiency 0.7

Work of one step at the paper's batch B = 256 (G = T = 512, K = 16384, D = 4, ViT rectifier 512 x 3):
- rectifier forward + backward: FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode``, and the
  bytes every aten op reads and writes (inputs + outputs, no fusion: an upper bound on traffic).
  torch's formula for ``convolution_backward`` ignores ``groups`` (a depthwise 3x3 conv over 4096
  channels counts 4096x too much: 87 instead of 5.4 GFLOP per latent here), so a grouped-aware
  formula replaces it (``conv_backward_flops``: each of grad_input and grad_weight costs the forward's);
- code search in the GPU (matmul) form of ``revq_core.ops.search``: the score ``baddbmm`` counted by
  FlopCounterMode (= 2*B*G*K*D), and its traffic: the (G, B, K) float32 scores are written once and
  read twice (min, then the runner-up's amin) -- this, not the FLOPs, is what costs;
- gather, codebook gradient (zero fill + index_add of a G*K*D tensor), clipping and AdamW over all
  parameters: bytes (elementwise passes over the codebook-sized tensors).
Time per step = FLOPs / (efficiency x peak) + bytes / (bandwidth efficiency x 1 TB/s), the two added
(no overlap assumed: conservative). This is the "as implemented" scenario: what revq_core runs on a GPU
today (search in the matmul form; with bf16: TrainConfig(autocast_bf16=True, fused_adamw=True)).
The "fused" scenario is a projection of work NOT done here, stated as assumptions: the rectifier's
elementwise chains fused (torch.compile, TrainConfig(compile_rectifier=True)) cut its traffic by
``FUSION_TRAFFIC_FACTOR``; a fused GPU search kernel (like ``revq_core/ops/cpu_search.py``) never writes
the score tensor and costs ``FUSED_SEARCH_OVERHEAD`` x its FMA count on the float32 units (the CPU
kernel's measured overhead); compute and memory of each part overlap (max instead of sum).
Anchors (docs/method.md, "Training cost and hardware anchors"): 165 dense bf16 tensor TFLOP/s, 82.6 fp32
TFLOP/s, ~1 TB/s. The paper: 22 h for 100 epochs of 1.28 M latents at B = 256 (~158 ms per step).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from revq_core.modeling.config import ModelConfig  # noqa: E402
from revq_core.modeling.rectifiers import build_rectifier, count_parameters  # noqa: E402

BATCH, GROUPS, CODES, CODE_DIM = 256, 512, 16384, 4
LATENT_SHAPE = (32, 8, 8)
STEPS_PER_EPOCH, EPOCHS = 1_281_167 // BATCH, 100  # ~5000 steps, drop_last
PEAK_BF16, PEAK_FP32, BANDWIDTH = 165e12, 82.6e12, 1.0e12
PAPER_HOURS = 22.0
FUSION_TRAFFIC_FACTOR = 3.0  # assumed: rectifier traffic after fusing elementwise chains, vs unfused
FUSED_SEARCH_OVERHEAD = 4.0  # measured on CPU: the fused kernel runs ~4-5x above its pure-FMA bound


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """FLOPs of aten.convolution_backward with groups: grad_input and grad_weight each cost as many
    multiply-adds as the forward conv, 2 * batch * out_positions * C_out * (C_in / groups) * kernel.
    Shapes: grad_out (B, C_out, *out_spatial), weight (C_out, C_in / groups, *kernel); not transposed."""
    if transposed:
        raise NotImplementedError("transposed convolutions are not used by the rectifier")
    batch, out_channels, *out_spatial = grad_out_shape
    forward = 2 * batch * math.prod(out_spatial) * out_channels * math.prod(w_shape[1:])
    return forward * (int(output_mask[0]) + int(output_mask[1]))


class ByteCounter(TorchDispatchMode):
    """Sums the bytes of every aten op's tensor inputs and outputs (unfused traffic, an upper bound).
    Views (view, permute, slice, ...) move no data and are skipped."""

    FREE = {torch.ops.aten._unsafe_view.default, torch.ops.aten.detach.default}

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view or func in self.FREE:
            return out
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        self.bytes += sum(t.numel() * t.element_size() for t in tensors)
        return out


def rectifier_work(batch: int) -> dict:
    """FLOPs and unfused bytes of the ViT rectifier's forward + backward on (batch, 32, 8, 8), fp32, on meta."""
    with torch.device("meta"):
        rectifier = build_rectifier(ModelConfig(latent_shape=LATENT_SHAPE, rectifier="vit", rectifier_width=512, rectifier_depth=3))
        quantized, target = torch.randn(batch, *LATENT_SHAPE), torch.randn(batch, *LATENT_SHAPE)
    flops = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops})
    traffic = ByteCounter()
    with flops, traffic:
        torch.nn.functional.mse_loss(rectifier(quantized), target).backward()
    return {"flops": flops.get_total_flops(), "bytes_fp32": traffic.bytes, "parameters": count_parameters(rectifier)}


def search_work(batch: int) -> dict:
    """FLOPs of the score matmul (FlopCounterMode on meta) and the bytes of the matmul-form search."""
    with torch.device("meta"):
        tokens, codes = torch.randn(GROUPS, batch, CODE_DIM), torch.randn(GROUPS, CODES, CODE_DIM)
        sq_norms = torch.randn(GROUPS, 1, CODES)
    flops = FlopCounterMode(display=False)
    with flops:
        torch.baddbmm(sq_norms, tokens, codes.transpose(1, 2), alpha=-2.0)  # (G, B, K) scores
    score_bytes = GROUPS * batch * CODES * 4
    return {"flops": flops.get_total_flops(), "bytes": 3 * score_bytes, "score_tensor_bytes": score_bytes}


def update_work(rectifier_parameters: int, fused_adamw: bool) -> dict:
    """Bytes of the codebook gradient, clipping and AdamW per step (all elementwise, float32).

    Codebook gradient: zero fill (1 write) + index_add of B*T rows (small). Clipping: one read of
    every gradient for the norm, one read+write to scale. AdamW per parameter: fused kernel reads
    param, grad, m, v and writes param, m, v (7 passes); torch's foreach path ~20 passes.
    """
    codebook = GROUPS * CODES * CODE_DIM
    parameters = codebook + rectifier_parameters
    passes_adamw = 7 if fused_adamw else 20
    return {"bytes": 4 * (codebook + 3 * parameters + passes_adamw * parameters), "parameters": parameters}


def project(efficiency: float, bandwidth_efficiency: float, bf16: bool, fused_adamw: bool,
            rectifier: dict, search: dict, fused: bool = False) -> dict:
    """Seconds per step and hours for 100 epochs under one set of assumptions (module docstring)."""
    update = update_work(rectifier["parameters"], fused_adamw)
    peak = PEAK_BF16 if bf16 else PEAK_FP32
    rectifier_bytes = rectifier["bytes_fp32"] / (2 if bf16 else 1)  # bf16 activations: half the traffic
    search_bytes, search_flops = search["bytes"], search["flops"]
    if fused:
        rectifier_bytes /= FUSION_TRAFFIC_FACTOR
        search_bytes = GROUPS * CODES * CODE_DIM * 4 * -(-BATCH // 64)  # codebook re-read per 64-row tile
        search_flops *= FUSED_SEARCH_OVERHEAD
    seconds = {
        "rectifier_compute": rectifier["flops"] / (efficiency * peak),
        "rectifier_memory": rectifier_bytes / (bandwidth_efficiency * BANDWIDTH),
        "search_compute": search_flops / (efficiency * PEAK_FP32),  # always float32: exact codes
        "search_memory": search_bytes / (bandwidth_efficiency * BANDWIDTH),
        "update_memory": update["bytes"] / (bandwidth_efficiency * BANDWIDTH),
    }
    if fused:  # compute and memory of each part overlap
        step = (max(seconds["rectifier_compute"], seconds["rectifier_memory"])
                + max(seconds["search_compute"], seconds["search_memory"]) + seconds["update_memory"])
    else:
        step = sum(seconds.values())
    return {"efficiency": efficiency, "bandwidth_efficiency": bandwidth_efficiency, "bf16": bf16,
            "fused_adamw": fused_adamw, "fused": fused, "seconds": seconds, "step_ms": step * 1e3,
            "hours": step * STEPS_PER_EPOCH * EPOCHS / 3600}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--efficiency", type=float, nargs="+", default=[0.3, 0.5],
                        help="achieved fraction of peak FLOP/s (default 0.3 and 0.5)")
    parser.add_argument("--bandwidth-efficiency", type=float, default=0.7,
                        help="achieved fraction of the 1 TB/s memory bandwidth")
    args = parser.parse_args()
    rectifier, search = rectifier_work(BATCH), search_work(BATCH)
    print(f"per step, B={BATCH}: rectifier fwd+bwd {rectifier['flops'] / 1e12:.3f} TFLOP "
          f"({rectifier['parameters'] / 1e6:.1f} M parameters), unfused traffic {rectifier['bytes_fp32'] / 1e9:.1f} GB fp32; "
          f"search {search['flops'] / 1e9:.1f} GFLOP, score tensor {search['score_tensor_bytes'] / 1e9:.1f} GB "
          f"(written once, read twice); {STEPS_PER_EPOCH} steps/epoch x {EPOCHS} epochs")
    print(f"paper: {PAPER_HOURS:.0f} h = {PAPER_HOURS * 3600 / (STEPS_PER_EPOCH * EPOCHS) * 1e3:.0f} ms/step")
    results = []
    scenarios = {"as implemented, fp32": (False, False, False), "as implemented, bf16 + fused AdamW": (True, True, False),
                 "fused (assumed), bf16": (True, True, True)}
    for efficiency in args.efficiency:
        for name, (bf16, fused_adamw, fused) in scenarios.items():
            result = project(efficiency, args.bandwidth_efficiency, bf16, fused_adamw, rectifier, search, fused)
            results.append(result)
            parts = ", ".join(f"{name} {value * 1e3:.1f}" for name, value in result["seconds"].items())
            print(f"  {name:36s} at {efficiency:.0%} of peak, "
                  f"{args.bandwidth_efficiency:.0%} of bandwidth: {result['step_ms']:6.1f} ms/step -> "
                  f"{result['hours']:5.1f} h (paper / this: {PAPER_HOURS / result['hours']:.1f}x)  [ms: {parts}]")
    print("  json " + json.dumps({"rectifier": rectifier, "search": search, "projections": results}))


if __name__ == "__main__":
    main()
