"""ModelConfig: the one place the model's fields live; it checks itself once, every builder reads it, and
config.json / checkpoints store it."""
import json

import pytest
import torch

from revq_core.modeling.config import ModelConfig
from revq_core.modeling.revq import ReVQ
from revq_core.training.config import PRESETS, TrainConfig, preset


def test_revq_from_a_config_equals_revq_from_its_fields():
    config = ModelConfig(tokens_per_image=128, codes_per_group=16, rectifier_width=32, rectifier_depth=1)
    torch.manual_seed(0)
    from_config = ReVQ(config)
    torch.manual_seed(0)
    from_fields = ReVQ(tokens_per_image=128, codes_per_group=16, rectifier_width=32, rectifier_depth=1)
    assert from_config.config == from_fields.config == config
    for key, value in from_config.state_dict().items():
        assert torch.equal(from_fields.state_dict()[key], value), key
    with pytest.raises(TypeError, match="not both"):
        ReVQ(config, tokens_per_image=64)
    with pytest.raises(TypeError, match="ModelConfig.from_dict"):
        ReVQ(config.to_dict())


def test_config_json_holds_the_config_and_the_vae_and_rebuilds_it(tmp_path):
    config = ModelConfig(tokens_per_image=256, codes_per_group=8, rectifier="cnn", rectifier_width=64,
                         rectifier_depth=1, commitment_weight=0.5)
    ReVQ(config, vae="some/vae").save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored == {**config.to_dict(), "vae": "some/vae"}
    loaded = ReVQ.from_pretrained(tmp_path)
    assert loaded.config == config and loaded.vae_name == "some/vae"


def test_config_json_written_before_a_field_existed_loads_with_its_default(tmp_path):
    """The shipped tokenizer and every model saved before the quantizer registry have no "quantizer" key."""
    ReVQ(tokens_per_image=256, codes_per_group=8, rectifier="identity").save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    del stored["quantizer"]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    assert ReVQ.from_pretrained(tmp_path).config.quantizer == "revq"
    stored["tokens_per_imag"] = 3  # a typo: refused with the field names, not ignored
    (tmp_path / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match=r"unknown ModelConfig field\(s\) \['tokens_per_imag'\]"):
        ReVQ.from_pretrained(tmp_path)


@pytest.mark.parametrize("fields,message", [
    (dict(tokens_per_image=500), r"T = 500 does not divide C\*H\*W = 2048"),
    (dict(latent_shape=(32, 8)), "latent_shape must be"),
    (dict(tokens_per_image=0), "tokens_per_image must be a positive integer"),
    (dict(num_groups=3), "num_groups G = 3 must divide"),
    (dict(split="diagonal"), "split must be one of"),
    (dict(split="single", num_groups=4), "num_groups must be 1"),
    (dict(codes_per_group=0), "codes_per_group must be a positive integer"),
    (dict(rectifier="transformer"), "rectifier must be one of"),
    (dict(pre_encoder="transformer"), "pre_encoder must be one of"),
    (dict(rectifier_depth=0), "rectifier_depth must be a positive integer"),
    (dict(commitment_weight=-1.0), "commitment_weight must be a finite number >= 0"),
    (dict(rectifier_residual="yes"), "rectifier_residual must be True or False"),
])
def test_a_bad_field_is_named_when_the_config_is_made(fields, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**fields)


def test_the_config_is_frozen_and_changes_make_a_checked_copy():
    config = ModelConfig()
    with pytest.raises(AttributeError):
        config.tokens_per_image = 3
    assert config.replace(tokens_per_image=256).code_dim == 8
    with pytest.raises(ValueError, match="does not divide"):
        config.replace(tokens_per_image=300)


def test_train_config_holds_a_model_config_and_routes_model_fields_to_it():
    config = preset("demo", codes_per_group=4096, epochs=3)
    assert isinstance(config.model, ModelConfig) and config.model.codes_per_group == 4096 and config.epochs == 3
    assert not hasattr(config, "codes_per_group")  # no field listed twice
    assert config.recipe_dict()["codes_per_group"] == 4096  # flat, as checkpoints have always stored it
    assert PRESETS["demo"].model.codes_per_group == 2048  # presets are not changed by their copies
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['code_per_group'\]"):
        preset("demo", code_per_group=4096)
    with pytest.raises(TypeError, match="model must be a ModelConfig"):
        TrainConfig(model={"tokens_per_image": 64})


@pytest.mark.parametrize("fields,message", [
    (dict(quantizer_lr=-0.01), "quantizer_lr must be a finite number > 0"),
    (dict(quantizer_lr=float("nan")), "quantizer_lr must be a finite number > 0"),
    (dict(grad_clip=0), "grad_clip must be a finite number > 0"),
    (dict(grad_clip=-1), "grad_clip must be a finite number > 0"),
    (dict(rectifier_weight_decay=-1), "rectifier_weight_decay must be a finite number >= 0"),
    (dict(betas=(1.5, 0.9)), r"betas must be two numbers in \[0, 1\)"),
    (dict(seed="abc"), "seed must be an integer"),
    (dict(epochs=2.5), "epochs must be a positive integer"),
    (dict(reset_ratio=2), r"reset_ratio must be in \[0, 1\]"),
    (dict(init="zeros"), "init must be one of"),
    (dict(num_threads=-3), "num_threads must be a positive integer or None"),
    (dict(final_lr_fraction=0), r"final_lr_fraction must be in \(0, 1\]"),
])
def test_a_bad_recipe_field_is_named_when_the_config_is_made(fields, message):
    with pytest.raises((ValueError, TypeError), match=message):
        preset("tiny", **fields)
