"""The baseline quantizers of issue 24 beyond the contract tests: the training-free scalar quantizer against a
float64 reference, the FSQ / iFSQ grids, the code entropy, and a clear error for each bad configuration."""
import math

import numpy as np
import pytest
import torch

from revq_core.modeling import build_quantizer
from revq_core.modeling.config import ModelConfig
from revq_core.modeling.quantizers.base import code_entropy, code_usage
from revq_core.modeling.revq import ReVQ

LATENTS = torch.randn(40, 32, 8, 8, generator=torch.Generator().manual_seed(3)) * 1.5 - 0.2
HELD_OUT = torch.randn(8, 32, 8, 8, generator=torch.Generator().manual_seed(4)) * 1.5 - 0.2


def _reference_scalar(train: np.ndarray, test: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel equal-mass bins in float64: (levels (N, C, H, W), decoded values)."""
    channels = train.shape[1]
    levels_out, values_out = np.zeros(test.shape, dtype=np.int64), np.zeros(test.shape)
    for channel in range(channels):
        ordered = np.sort(train[:, channel].reshape(-1))
        edges = ordered[np.arange(1, levels) * len(ordered) // levels]
        bins = np.searchsorted(edges, ordered, side="right")
        centres = np.array([ordered[bins == k].mean() for k in range(levels)])
        test_bins = np.searchsorted(edges, test[:, channel], side="right")
        levels_out[:, channel], values_out[:, channel] = test_bins, centres[test_bins]
    return levels_out, values_out


@pytest.mark.parametrize("levels", [2, 5, 16])
def test_scalar_quantizer_matches_a_float64_reference(levels):
    quantizer = build_quantizer(ModelConfig(quantizer="scalar", tokens_per_image=1024, levels_per_dim=levels))
    quantizer.init_from_samples(LATENTS)
    level_ids, values = _reference_scalar(LATENTS.double().numpy(), HELD_OUT.double().numpy(), levels)
    codes = quantizer.encode(HELD_OUT)  # D = 2: id = level[2t] + L * level[2t + 1]
    flat = level_ids.reshape(8, 1024, 2)
    assert np.array_equal(codes.numpy(), flat[..., 0] + levels * flat[..., 1])
    np.testing.assert_allclose(quantizer.decode(codes).double().numpy(), values, rtol=0, atol=1e-5)
    assert quantizer.bits_per_image == pytest.approx(2048 * math.log2(levels))


def test_scalar_bins_are_equal_mass_and_survive_save_and_load(tmp_path):
    model = ReVQ(quantizer="scalar", tokens_per_image=512, levels_per_dim=4, rectifier="identity")
    model.quantizer.init_from_samples(LATENTS)
    model.normalizer.fit(LATENTS)
    levels = model.quantizer.unpack(model.quantizer.encode(LATENTS))  # (N, C*H*W)
    shares = torch.bincount(levels.reshape(-1), minlength=4).double() / levels.numel()
    torch.testing.assert_close(shares, torch.full((4,), 0.25, dtype=torch.float64))
    model.save_pretrained(tmp_path)
    loaded = ReVQ.from_pretrained(tmp_path)
    assert torch.equal(loaded.quantizer.edges, model.quantizer.edges)
    assert torch.equal(loaded.tokenize(HELD_OUT), model.tokenize(HELD_OUT))


@pytest.mark.parametrize("name,levels", [("fsq", 3), ("fsq", 8), ("ifsq", 2), ("ifsq", 16)])
def test_every_fsq_level_decodes_inside_its_bin(name, levels):
    quantizer = build_quantizer(ModelConfig(quantizer=name, tokens_per_image=2048, levels_per_dim=levels))
    codes = torch.arange(levels)[None].repeat(1, 2048 // levels + 1)[:, :2048]  # every level at least once
    assert torch.equal(quantizer.encode(quantizer.decode(codes)), codes)
    values = quantizer.level_values
    assert bool((values[1:] > values[:-1]).all())  # ordered like the levels


def test_ifsq_levels_are_equal_mass_for_a_standard_normal():
    quantizer = build_quantizer(ModelConfig(quantizer="ifsq", tokens_per_image=2048, levels_per_dim=16))
    numbers = torch.randn(200, 32, 8, 8, generator=torch.Generator().manual_seed(0))
    shares = torch.bincount(quantizer.encode(numbers).reshape(-1), minlength=16).double() / numbers.numel()
    assert float((shares - 1 / 16).abs().max()) < 0.003


def test_code_entropy_and_usage():
    codes = torch.tensor([[0, 5], [1, 5], [2, 5], [3, 5]])  # position 0: 4 equiprobable ids, position 1: one id
    assert code_entropy(codes) == pytest.approx(2.0)
    assert code_usage(codes, torch.tensor([4, 8])) == pytest.approx((1 + 1 / 8) / 2)
    with pytest.raises(ValueError, match="non-empty"):
        code_entropy(torch.zeros(0, 3, dtype=torch.long))


@pytest.mark.parametrize("fields,message", [
    (dict(quantizer="scalar", tokens_per_image=64, levels_per_dim=4), "overflow the int32 codes"),
    (dict(quantizer="ifsq", tokens_per_image=512, levels_per_dim=300), r"levels_per_dim <= 215"),
    (dict(quantizer="fsq", tokens_per_image=512, levels_per_dim=2), "levels_per_dim must be an integer >= 3"),
    (dict(quantizer="scalar", levels_per_dim=1), "levels_per_dim must be an integer >= 2"),
    (dict(quantizer="rvq", tokens_per_image=512, codes_per_group=65536, residual_depth=2), "overflow the int32"),
    (dict(quantizer="rvq", residual_depth=0), "residual_depth must be a positive integer"),
    (dict(quantizer="vq", num_groups=4), "one codebook"),
])
def test_bad_baseline_configs_raise_one_line_errors(fields, message):
    with pytest.raises(ValueError, match=message) as error:
        ModelConfig(**fields)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("saved,loaded_as", [("scalar", "vq"), ("revq", "scalar"), ("vq", "rvq")])
def test_a_checkpoint_of_one_baseline_is_not_loaded_as_another(tmp_path, saved, loaded_as):
    ReVQ(quantizer=saved, tokens_per_image=256, codes_per_group=16, levels_per_dim=4,
         rectifier="identity").save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    config_path.write_text(config_path.read_text().replace(f'"quantizer": "{saved}"', f'"quantizer": "{loaded_as}"'))
    with pytest.raises(ValueError, match=f"quantizer '{loaded_as}'"):
        ReVQ.from_pretrained(tmp_path)


def test_the_train_command_line_picks_a_quantizer_and_refuses_bad_ones(tmp_path, capsys):
    from revq_core.train import main

    with pytest.raises(SystemExit, match="overflow the int32 codes"):
        main(["--quantizer", "scalar", "--tokens-per-image", "64", "--levels-per-dim", "4",
              "--output", str(tmp_path / "run")])
    with pytest.raises(SystemExit):
        main(["--quantizer", "fsqq", "--output", str(tmp_path / "run")])
    error = capsys.readouterr().err.replace("'", "")  # argparse quotes the choices from Python 3.12 on
    assert "invalid choice: fsqq (choose from fsq, ifsq, revq, rvq, scalar, vq)" in error
