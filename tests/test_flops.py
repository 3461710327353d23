"""FLOP and parameter accounting of revq_core.flops (meta-device models: no compute, seconds)."""
import pytest
import torch
import torch.nn as nn

from revq_core.flops import (REFERENCE_GFLOPS, build_on_meta, costs_per_resolution, count_flops, format_levels,
                             latent_step_flops, module_costs, part_totals, shares_by_resolution)


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


def test_latent_step_flops_is_three_forwards():
    from revq_core.model import ReVQ

    torch.manual_seed(0)
    model = ReVQ(latent_shape=(32, 8, 8), tokens_per_image=64, codes_per_group=8, rectifier="vit",
                 rectifier_width=32, rectifier_depth=1)
    latent = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        forward = count_flops(model, latent)
    search = 2 * 2 * 64 * 8 * 32  # baddbmm: B*T tokens x K codes x D numbers, 2 per MAC
    assert forward > search
    assert latent_step_flops(model, latent) == 3 * forward
