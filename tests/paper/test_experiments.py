"""Fast checks of revq_core.paper.experiments on tiny synthetic latents (seconds)."""
import math

import pytest
import torch

from revq_core.paper.experiments import (codebook_scaling, format_table, growth_per_halving, percent, pick,
                                         quantizer_only_mse, run_config, sig, smallest_k, subset, sweep)
from revq_core.training.config import preset

SHAPE = (4, 2, 2)  # C, H, W: 16 numbers per latent


def _latents(count, seed=0):
    return torch.randn(count, *SHAPE, generator=torch.Generator().manual_seed(seed)) * 3.0 + 1.0


def test_subset_is_seeded_sorted_and_a_subset():
    latents = torch.arange(50.0).view(50, 1, 1, 1)
    first, again = subset(latents, 10, seed=3), subset(latents, 10, seed=3)
    assert first.shape == (10, 1, 1, 1) and torch.equal(first, again)
    values = first.flatten().tolist()
    assert values == sorted(values) and len(set(values)) == 10
    assert subset(latents, None) is latents and subset(latents, 80) is latents


def test_quantizer_only_mse_is_zero_when_every_value_has_a_code():
    # 4 distinct latents, T = 16 (D = 1): K = 4 codes per position hold all values exactly.
    train = _latents(4)
    assert quantizer_only_mse(train, train, 16, 4, method="samples") == pytest.approx(0.0, abs=1e-10)


def test_quantizer_only_mse_falls_with_k_and_rises_as_t_shrinks():
    train, val = _latents(256, 1), _latents(64, 2)
    by_k = [quantizer_only_mse(train, val, 8, k) for k in (2, 8, 32)]
    assert by_k[0] > by_k[1] > by_k[2]
    assert quantizer_only_mse(train, val, 4, 8) > quantizer_only_mse(train, val, 16, 8)
    assert 0.0 < by_k[0] < 1.5  # normalized space: predicting the mean would give about 1


def test_codebook_scaling_stops_at_the_level_and_smallest_k_finds_it():
    train, val = _latents(256, 1), _latents(64, 2)
    rows = codebook_scaling(train, val, [16, 8], [2, 4, 8, 16, 32], level=0.5)
    k_star = smallest_k(rows, 0.5)
    assert list(k_star) == [16, 8]
    for tokens, k in k_star.items():
        ks = [row["codes"] for row in rows if row["tokens"] == tokens]
        if k is not None:
            assert ks[-1] == k  # the loop stopped at the first K under the level
    assert k_star[16] is not None and (k_star[8] is None or k_star[8] >= k_star[16])


def test_smallest_k_and_growth():
    rows = [{"tokens": 8, "codes": k, "mse": m} for k, m in ((2, 0.5), (4, 0.3), (8, 0.1))]
    rows += [{"tokens": 4, "codes": k, "mse": m} for k, m in ((2, 0.9), (4, 0.8), (8, 0.25))]
    rows += [{"tokens": 2, "codes": k, "mse": 0.9} for k in (2, 4, 8)]
    k_star = smallest_k(rows, 0.3)
    assert k_star == {8: 4, 4: 8, 2: None}
    assert growth_per_halving({8: 4, 4: 8, 2: 64}) == [2.0, 8.0]
    assert growth_per_halving(k_star) == [2.0]


def test_sig_percent_and_table():
    assert sig(0.0123456) == "0.0123" and sig(1234.5) == "1.23e3" and sig(7) == "7" and sig(None) == "-"
    assert sig(float("nan")) == "-" and sig("vit") == "vit" and sig(0.0) == "0"
    assert percent(0.2334) == "23.3%" and percent(None) == "-"
    table = format_table([{"a": 1, "b": 0.123456}, {"a": 22, "b": "x"}], ["a", "b"])
    lines = table.splitlines()
    assert lines[0] == "a  | b" and lines[1] == "---+------"
    assert lines[2] == "1  | 0.123" and lines[3] == "22 | x"
    assert format_table([[1, 2.0]], ["x", "y"]).splitlines()[2] == "1 | 2"
    with pytest.raises(ValueError):
        format_table([[1]], ["x", "y"])


def test_pick():
    rows = [{"a": 1, "b": 2}, {"a": 1, "b": 3}]
    assert pick(rows, b=3) is rows[1]
    with pytest.raises(KeyError):
        pick(rows, a=1)


def test_run_config_and_sweep_report_metrics_of_the_run():
    train, val = _latents(64, 1), _latents(16, 2)
    base = preset("tiny", latent_shape=SHAPE, tokens_per_image=8, codes_per_group=4, rectifier="identity",
                  epochs=2, batch_size=16, num_threads=1)
    row = run_config(base, train, val)
    assert row["tokens"] == 8 and row["code_dim"] == 2 and row["codes"] == 4 and row["rectifier"] == "identity"
    assert row["val_mse"] == pytest.approx(row["val_quant_mse"])  # identity rectifier
    assert row["rect_gain"] == pytest.approx(0.0, abs=1e-6) and row["rectifier_params"] == 0
    assert 0.0 < row["usage"] <= 1.0 and len(row["val_mse_curve"]) == 2 and math.isfinite(row["val_mse"])
    rows = sweep(base, [{"codes_per_group": 2}, {"codes_per_group": 8}], train, val)
    assert [r["codes"] for r in rows] == [2, 8] and rows[0]["overrides"] == {"codes_per_group": 2}
    assert rows[1]["val_quant_mse"] < rows[0]["val_quant_mse"]
