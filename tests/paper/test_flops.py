"""FLOP and parameter accounting of revq_core.paper.flops (meta-device models: no compute, seconds)."""
import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from revq_core.modeling.quantizers.multigroup import MultiGroupQuantizer
from revq_core.modeling.revq import ReVQ
from revq_core.paper.flops import (REFERENCE_GFLOPS, build_on_meta, costs_per_resolution, count_flops,
                                   count_flops_by_kind, format_levels, latent_step_flops, module_costs, part_totals,
                                   search_flops, shares_by_resolution)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)  # at 16 x 16
        self.down = nn.Conv2d(8, 16, 2, stride=2, bias=False)  # output 8 x 8
        self.head = nn.Linear(16, 4, bias=False)

    def forward(self, x):
        x = self.down(self.conv(x))
        return self.head(x.mean(dim=(2, 3)))


def test_count_flops_equals_hand_count():
    net = TinyNet()
    conv = 2 * (16 * 16) * 8 * 3 * 9
    down = 2 * (8 * 8) * 16 * 8 * 4
    head = 2 * 16 * 4
    assert count_flops(net, torch.randn(1, 3, 16, 16)) == conv + down + head


def test_module_costs_split_flops_params_and_resolution():
    net = TinyNet()
    costs = {cost.name: cost for cost in module_costs(net, torch.randn(1, 3, 16, 16))}
    assert costs["conv"].flops == 2 * 256 * 8 * 27 and costs["conv"].resolution == 16
    assert costs["down"].flops == 2 * 64 * 16 * 32 and costs["down"].resolution == 8
    assert costs["down"].params == 16 * 8 * 4
    assert costs["head"].resolution == 16  # no image in or out: inherits the root's (its input's) resolution
    assert sum(cost.flops for cost in costs.values()) == count_flops(net, torch.randn(1, 3, 16, 16))
    assert sum(cost.params for cost in costs.values()) == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("name", sorted(REFERENCE_GFLOPS))
def test_dc_ae_totals_match_reference(name):
    levels = costs_per_resolution(build_on_meta(name), image_size=256)
    totals = part_totals(levels)
    for part in ("encoder", "decoder"):
        assert totals[part]["flops"] / 1e9 == pytest.approx(REFERENCE_GFLOPS[name][part], rel=0.005)
    vae = build_on_meta(name)
    assert totals["encoder"]["params"] + totals["decoder"]["params"] == sum(p.numel() for p in vae.parameters())
    shares = shares_by_resolution(levels)
    assert list(shares) == [256, 128, 64, 32, 16, 8]
    assert sum(flops for flops, _ in shares.values()) == pytest.approx(1.0)
    assert sum(params for _, params in shares.values()) == pytest.approx(1.0)
    assert "encoder" in format_levels(levels)


def test_maskbit_vqgan_reaches_16x16():
    levels = costs_per_resolution(build_on_meta("maskbit-vqgan"), image_size=256)
    assert min(level.resolution for level in levels) == 16
    assert {level.part for level in levels} == {"encoder", "decoder"}


@pytest.mark.parametrize("cpu_kernel", ["0", "1"])
def test_search_flops_are_counted_from_shapes_whatever_kernel(monkeypatch, cpu_kernel):
    """The quantizer's forward FLOPs are its search's, 2 x B x T x K x D, with the C++ kernel on ("1": invisible
    to FlopCounterMode) or off ("0": the torch matmul form, which FlopCounterMode counts itself)."""
    monkeypatch.setenv("REVQ_CPU_KERNEL", cpu_kernel)
    batch, tokens, codes, code_dim = 3, 64, 8, 32  # 16 groups: each codebook serves 4 token positions
    quantizer = MultiGroupQuantizer(16, codes, code_dim, "channel")
    latent = torch.randn(batch, 32, 8, 8)
    assert search_flops(batch * tokens, codes, code_dim) == 2 * 3 * 64 * 8 * 32
    with torch.no_grad():
        assert count_flops(quantizer, latent) == 2 * batch * tokens * codes * code_dim
        assert count_flops_by_kind(quantizer, latent) == {"search": 2 * batch * tokens * codes * code_dim, "layers": 0}
    if cpu_kernel == "0":  # torch's own count of the fallback's distance matmul agrees with the formula
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            quantizer(latent)
        assert counter.get_total_flops() == 2 * batch * tokens * codes * code_dim


@pytest.mark.parametrize("cpu_kernel", ["0", "1"])
def test_revq_forward_and_step_flops_equal_a_hand_count(monkeypatch, cpu_kernel):
    """A ReVQ of 64 tokens (D = 32, K = 8) with the MLP rectifier (2048 -> 64, two residual 64 x 64 MLP blocks,
    64 -> 2048), B = 2: every matmul written out; a training step is 3 x the forward."""
    monkeypatch.setenv("REVQ_CPU_KERNEL", cpu_kernel)
    batch, tokens, codes, code_dim, width, depth = 2, 64, 8, 32, 64, 2
    model = ReVQ(latent_shape=(32, 8, 8), tokens_per_image=tokens, codes_per_group=codes, rectifier="mlp",
                 rectifier_width=width, rectifier_depth=depth)
    latent = torch.randn(batch, 32, 8, 8)
    search = 2 * batch * tokens * codes * code_dim
    rectifier = (2 * batch * 2048 * width  # fc_in
                 + depth * 2 * (2 * batch * width * width)  # fc1 and fc2 of each block
                 + 2 * batch * width * 2048)  # fc_out
    with torch.no_grad():
        assert count_flops_by_kind(model, latent) == {"search": search, "layers": rectifier}
        assert count_flops(model, latent) == search + rectifier
    assert latent_step_flops(model, latent) == 3 * (search + rectifier)


def test_vit_revq_counts_the_search_beside_the_rectifier(monkeypatch):
    """Notebook 01's model (ViT rectifier): the forward is the search from shapes plus the rectifier's layers,
    the same with the C++ kernel on and off."""
    model = ReVQ(latent_shape=(32, 8, 8), tokens_per_image=512, codes_per_group=64, rectifier="vit",
                 rectifier_width=32, rectifier_depth=1)
    latent = torch.randn(1, 32, 8, 8)
    with torch.no_grad():
        rectifier = count_flops(model.rectifier, model.quantizer(latent).quantized)
        counts = []
        for cpu_kernel in ("0", "1"):
            monkeypatch.setenv("REVQ_CPU_KERNEL", cpu_kernel)
            counts.append(count_flops_by_kind(model, latent))
    assert counts[0] == counts[1] == {"search": 2 * 1 * 512 * 64 * 4, "layers": rectifier}
    conv_in = 2 * 64 * 32 * 32 * 9  # 3 x 3 conv 32 -> 32 channels at 8 x 8; conv_out the same
    assert rectifier > 2 * conv_in
