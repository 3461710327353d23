"""A tiny CPU training run must keep giving the same weights while the code is reorganised.

The reference weights in ``tests/training/behaviour_lock.safetensors`` were recorded before the layout
redesign (issue 17). On a machine whose numerics signature (CPU vendor, ATen CPU capability, torch
version) matches the one recorded, every tensor must be bit-identical; elsewhere float results differ in
the last digits (other SIMD kernels), so the weights must agree to 1e-4 relative (a behaviour change moves
them by far more: a changed reset, learning rate or init changes most values at the first digits).

    REVQ_RECORD_BEHAVIOUR_LOCK=1 pytest tests/training/test_behaviour_lock.py    # re-record (only for an intended change)
"""
import json
import os
import platform
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from revq_core.training.config import preset
from revq_core.training.trainer import train

REFERENCE = Path(__file__).resolve().parent / "behaviour_lock.safetensors"


def numerics_signature() -> str:
    vendor = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()} {vendor} {torch.backends.cpu.get_cpu_capability()} torch {torch.__version__}"


def tiny_run() -> dict[str, torch.Tensor]:
    """512 tokens of D = 4 (the CPU kernel's layout), a ViT rectifier, two epochs with resets (K > tokens per group: duplicated codes to reset); ~3 s."""
    generator = torch.Generator().manual_seed(7)
    latents = torch.randn(96, 32, 8, 8, generator=generator) * torch.linspace(0.5, 2.0, 32).view(1, 32, 1, 1)
    config = preset("tiny", tokens_per_image=512, codes_per_group=128, rectifier="vit", rectifier_width=64,
                    rectifier_depth=1, epochs=2, batch_size=16, num_threads=1, seed=3)
    model, _ = train(config, latents[:80], latents[80:], progress=False)
    return {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}


def test_tiny_run_weights_unchanged():
    weights = tiny_run()
    signature = numerics_signature()
    if os.environ.get("REVQ_RECORD_BEHAVIOUR_LOCK"):
        save_file(weights, REFERENCE, metadata={"signature": signature})
    reference = load_file(REFERENCE)
    from safetensors import safe_open

    with safe_open(REFERENCE, framework="pt") as file:
        recorded_signature = file.metadata()["signature"]
    assert sorted(weights) == sorted(reference), "the model's state-dict keys changed"
    for key, value in weights.items():
        assert value.shape == reference[key].shape, f"{key}: shape {tuple(value.shape)} vs {tuple(reference[key].shape)}"
        if signature == recorded_signature:
            assert torch.equal(value, reference[key]), f"{key} is not bit-identical on {signature}"
        else:
            torch.testing.assert_close(value, reference[key], rtol=1e-4, atol=1e-5,
                                       msg=lambda text: f"{key} ({signature} vs recorded {recorded_signature}): {text}")
    print(json.dumps({"signature": signature, "recorded": recorded_signature}))
