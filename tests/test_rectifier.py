import pytest
import torch

from revq_core.rectifier import ViTRectifier, build_rectifier, count_parameters


@pytest.mark.parametrize("kind", ["vit", "cnn", "mlp", "identity"])
def test_rectifiers_keep_the_latent_shape(kind):
    rectifier = build_rectifier(kind, (32, 8, 8), width=64, depth=2)
    latent = torch.randn(3, 32, 8, 8)
    assert rectifier(latent).shape == latent.shape


def test_paper_512T_rectifier_has_about_14M_parameters():
    rectifier = ViTRectifier(latent_channels=32, width=512, depth=3)
    assert 13.5e6 < count_parameters(rectifier) < 14.5e6


def test_vit_rectifier_uses_diffusers_blocks_with_authors_key_names():
    from diffusers.models.autoencoders.autoencoder_dc import EfficientViTBlock

    rectifier = ViTRectifier(width=64, depth=2)
    assert sum(isinstance(module, EfficientViTBlock) for module in rectifier.modules()) == 2
    keys = rectifier.state_dict().keys()
    assert {"conv_in.weight", "norm_out.weight", "norm_out.bias", "conv_out.weight"} <= set(keys)
    assert any(key.startswith("up_blocks.0.1.") for key in keys)


def test_bad_rectifier_settings_are_explained():
    with pytest.raises(ValueError, match="multiple of latent_channels"):
        build_rectifier("vit", (32, 8, 8), width=48)
    with pytest.raises(ValueError, match="must be one of"):
        build_rectifier("transformer")
