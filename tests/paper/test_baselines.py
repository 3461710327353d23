"""paper/baselines.py: the matched settings of the rate-distortion study (notebooks/08_baselines) and one tiny row."""
import math

import pytest
import torch

from revq_core.paper.baselines import UnmatchedBudget, matched_setting, rate_distortion, revq_margin
from revq_core.training.config import preset

SHAPE = (32, 8, 8)


@pytest.mark.parametrize("name,bits,expected", [
    ("revq", 5120, dict(quantizer="revq", tokens_per_image=512, codes_per_group=1024)),
    ("vq", 640, dict(quantizer="vq", tokens_per_image=64, codes_per_group=1024)),
    ("rvq", 5120, dict(quantizer="rvq", tokens_per_image=512, codes_per_group=32, residual_depth=2)),
    ("scalar", 5120, dict(quantizer="scalar", tokens_per_image=2048, levels_per_dim=6)),  # 5294 bits, +3.4 %
    ("ifsq", 10240, dict(quantizer="ifsq", tokens_per_image=2048, levels_per_dim=32)),
])
def test_matched_settings_lie_within_the_tolerance(name, bits, expected):
    tokens = 64 if bits == 640 else 512
    fields = matched_setting(name, bits, SHAPE, tokens)
    assert fields == expected


@pytest.mark.parametrize("name,bits,message", [
    ("scalar", 1280, "carries >= 2048 bits"),  # below 1 bit per number
    ("fsq", 2560, "no setting within 5 % of 2560 bits"),  # L = 2 is not FSQ's, L = 3 gives 3246 bits
    ("ifsq", 3072, "the nearest.*levels_per_dim': 3.*3246 bits"),  # +5.7 %
])
def test_a_budget_that_cannot_be_matched_says_the_nearest(name, bits, message):
    with pytest.raises(UnmatchedBudget, match=message):
        matched_setting(name, bits, SHAPE, 256)
    with pytest.raises(ValueError, match="unknown quantizer 'fsqq'"):
        matched_setting("fsqq", bits, SHAPE, 256)


def test_a_tiny_rate_distortion_run_reports_every_quantizer_alike():
    latents = torch.randn(64, *SHAPE, generator=torch.Generator().manual_seed(0))
    base = preset("tiny", epochs=1, batch_size=32)
    rows = rate_distortion(base, ["revq", "vq", "scalar"], [1024], 4, latents, latents[:16], log=None)
    assert [row["matched"] for row in rows] == [True, True, True]  # 2048 bits: L = 2 for scalar
    for row in rows:
        assert row["bits"] == pytest.approx(2048) and row["mse_rectified"] > 0 and row["entropy_bits"] > 0
        assert row["entropy_bits"] <= row["entropy_cap_bits"] == pytest.approx(row["tokens"] * math.log2(16))
    assert set(revq_margin(rows)) == {2048}
