"""The quantizer contract (modeling/quantizers/base.py), checked for every entry of ``QUANTIZERS``, and the
promise of docs/extending.md: a new quantizer is one class plus one registry line, and then trains, resumes,
saves, loads and tokenizes like the paper's."""
import math

import pytest
import torch
import torch.nn.functional as F

from revq_core.modeling import QUANTIZERS, build_quantizer
from revq_core.modeling.config import ModelConfig
from revq_core.modeling.quantizers.base import LatentQuantizer, QuantizerOutput
from revq_core.modeling.revq import ReVQ
from revq_core.training.config import preset
from revq_core.training.trainer import train

# A small ModelConfig per registered quantizer (2048-number latents of (32, 8, 8)); a new entry without one
# fails test_every_quantizer_has_a_small_config, so it cannot skip the checks below.
SMALL_CONFIGS = {
    "revq": dict(tokens_per_image=128, codes_per_group=16),
    "scalar": dict(tokens_per_image=512, levels_per_dim=5),  # D = 4: 625 ids per position
    "fsq": dict(tokens_per_image=512, levels_per_dim=4),  # even L: the library's shifted grid
    "ifsq": dict(tokens_per_image=1024, levels_per_dim=3),  # D = 2
    "vq": dict(tokens_per_image=256, codes_per_group=16),
    "rvq": dict(tokens_per_image=256, codes_per_group=8, residual_depth=3),  # 512 ids per position
}
TRAIN_LATENTS = torch.randn(64, 32, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 + 0.5
VAL_LATENTS = torch.randn(16, 32, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 + 0.5


def _config(name: str, **overrides) -> ModelConfig:
    return ModelConfig(quantizer=name, rectifier_width=32, rectifier_depth=1, **{**SMALL_CONFIGS[name], **overrides})


def test_every_quantizer_has_a_small_config():
    assert set(QUANTIZERS) == set(SMALL_CONFIGS)


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_codes_to_latent_to_codes_is_the_identity(name):
    quantizer = build_quantizer(_config(name))
    quantizer.init_from_samples(TRAIN_LATENTS, generator=torch.Generator().manual_seed(0))
    codes = quantizer.encode(VAL_LATENTS)
    assert codes.shape == (16, quantizer.tokens_per_image) and codes.dtype == torch.int64
    assert bool((codes >= 0).all()) and bool((codes < quantizer.vocabulary_sizes).all())
    reencoded = quantizer.encode(quantizer.decode(codes))
    if quantizer.reencodes_exactly:
        assert torch.equal(reencoded, codes)
    else:  # greedy residual VQ: most ids come back, and the re-encoded latent is no worse a fit of the decoded one
        assert float((reencoded == codes).float().mean()) > 0.9
    output = quantizer(VAL_LATENTS)
    assert isinstance(output, QuantizerOutput) and output.quantized.shape == VAL_LATENTS.shape
    assert torch.equal(output.codes, codes) and output.loss.ndim == 0
    torch.testing.assert_close(output.quantized, quantizer.decode(codes))


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_bits_per_image_is_the_sum_of_log2_vocabularies(name):
    quantizer = build_quantizer(_config(name))
    sizes = quantizer.vocabulary_sizes
    assert sizes.shape == (quantizer.tokens_per_image,) and sizes.dtype == torch.int64
    assert quantizer.bits_per_image == pytest.approx(sum(math.log2(int(size)) for size in sizes))
    assert quantizer.vocabulary_size == int(sizes.max())


def test_revq_bits_per_image_is_T_log2_K():
    assert build_quantizer(ModelConfig()).bits_per_image == 512 * 14  # the paper's 512T, K = 16384
    assert ReVQ(tokens_per_image=256, codes_per_group=2 ** 18, rectifier="identity").bits_per_image == 256 * 18


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_training_resumes_exactly_and_saves_and_loads(name, tmp_path):
    config = preset("tiny", epochs=2, **{**SMALL_CONFIGS[name], "quantizer": name})
    whole, _ = train(config, TRAIN_LATENTS, VAL_LATENTS, progress=False)
    train(config, TRAIN_LATENTS, VAL_LATENTS, output_dir=tmp_path, stop_after=1, progress=False)
    resumed, history = train(config, TRAIN_LATENTS, VAL_LATENTS, output_dir=tmp_path, resume=True, progress=False)
    assert history.epoch == [0, 1]
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    loaded = ReVQ.from_pretrained(tmp_path / "model")
    assert loaded.config == config.model
    codes = whole.tokenize(VAL_LATENTS)
    assert torch.equal(loaded.tokenize(VAL_LATENTS), codes)
    torch.testing.assert_close(loaded.detokenize(codes), whole.detokenize(codes))


# ---- a new quantizer, as docs/extending.md writes it --------------------------------------------------
class UniformScalarQuantizer(LatentQuantizer):
    """Each of a token's D numbers rounded to one of ``codes_per_group ** (1 / D)`` levels in [-2, 2]; no
    parameters, nothing to initialise or reset (the contract's hooks stay no-ops)."""

    def __init__(self, latent_shape, tokens_per_image, levels):
        super().__init__()
        self.latent_shape, self.tokens_per_image, self.levels = latent_shape, tokens_per_image, levels
        self.code_dim = math.prod(latent_shape) // tokens_per_image
        self.register_buffer("place", levels ** torch.arange(self.code_dim), persistent=False)  # (D,)

    @classmethod
    def from_config(cls, config):
        return cls(config.latent_shape, config.tokens_per_image, round(config.codes_per_group ** (1 / config.code_dim)))

    @staticmethod
    def check_config(config):
        levels = round(config.codes_per_group ** (1 / config.code_dim))
        if levels < 2 or levels ** config.code_dim != config.codes_per_group:
            raise ValueError(f"codes_per_group must be L ** D with L >= 2 levels (D = {config.code_dim}).")

    @property
    def vocabulary_sizes(self):
        return torch.full((self.tokens_per_image,), self.levels ** self.code_dim, dtype=torch.long)

    def encode(self, latent):
        steps = ((latent.clamp(-2, 2) + 2) / 4 * (self.levels - 1)).round().long()  # (B, C, H, W) level ids
        return (steps.reshape(latent.shape[0], self.tokens_per_image, self.code_dim) * self.place).sum(-1)

    def decode(self, codes):
        steps = codes[..., None] // self.place % self.levels  # (B, T, D)
        return (steps.float() / (self.levels - 1) * 4 - 2).reshape(codes.shape[0], *self.latent_shape)

    def forward(self, latent):
        codes = self.encode(latent)
        quantized = self.decode(codes)
        return QuantizerOutput(quantized, codes, F.mse_loss(quantized, latent.detach()))


def test_a_new_quantizer_is_one_class_and_one_registry_line(tmp_path, monkeypatch):
    monkeypatch.setitem(QUANTIZERS, "uniform", UniformScalarQuantizer)
    monkeypatch.setitem(SMALL_CONFIGS, "uniform", dict(tokens_per_image=1024, codes_per_group=9))  # D = 2, 3 levels
    test_codes_to_latent_to_codes_is_the_identity("uniform")
    test_bits_per_image_is_the_sum_of_log2_vocabularies("uniform")
    test_training_resumes_exactly_and_saves_and_loads("uniform", tmp_path)
    assert ReVQ(quantizer="uniform", tokens_per_image=1024, codes_per_group=9).bits_per_image == pytest.approx(1024 * math.log2(9))
    with pytest.raises(ValueError, match="must be L \\*\\* D"):
        ModelConfig(quantizer="uniform", tokens_per_image=1024, codes_per_group=10)


def test_a_checkpoint_of_one_quantizer_is_not_loaded_as_another(tmp_path, monkeypatch):
    monkeypatch.setitem(QUANTIZERS, "uniform", UniformScalarQuantizer)
    ReVQ(tokens_per_image=1024, codes_per_group=9, rectifier="identity").save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    config_path.write_text(config_path.read_text().replace('"quantizer": "revq"', '"quantizer": "uniform"'))
    with pytest.raises(ValueError, match="quantizer 'uniform'.*unexpected: quantizer.codebook"):
        ReVQ.from_pretrained(tmp_path)


def test_unknown_quantizer_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown quantizer 'fsqq'; choose one of \['fsq', 'ifsq', 'revq', 'rvq', 'scalar', 'vq'\]"):
        ModelConfig(quantizer="fsqq")
    with pytest.raises(ValueError, match="unknown quantizer"):
        preset("tiny", quantizer="fsqq")
