import pytest
import torch

from revq_core.modeling.config import ModelConfig
from revq_core.modeling.rectifiers import ViTRectifier, build_rectifier, count_parameters


def _config(kind, width=512, depth=3, residual=False):
    return ModelConfig(rectifier=kind, rectifier_width=width, rectifier_depth=depth, rectifier_residual=residual)


@pytest.mark.parametrize("kind", ["vit", "cnn", "mlp", "identity"])
def test_rectifiers_keep_the_latent_shape(kind):
    rectifier = build_rectifier(_config(kind, width=64, depth=2))
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
        build_rectifier(_config("vit", width=48))
    with pytest.raises(ValueError, match="must be one of"):
        ModelConfig(rectifier="transformer")
    with pytest.raises(ValueError, match="must be one of"):
        build_rectifier(ModelConfig(), kind="transformer")


@pytest.mark.parametrize("kind", ["vit", "cnn", "mlp"])
def test_residual_rectifier_starts_as_the_identity_and_learns(kind):
    rectifier = build_rectifier(_config(kind, width=32, depth=1, residual=True))
    latent = torch.randn(4, 32, 8, 8)
    torch.testing.assert_close(rectifier(latent), latent)  # zero-initialised output conv
    target = latent * 0.5
    optimizer = torch.optim.Adam(rectifier.parameters(), lr=1e-2)
    first_loss = None
    for _ in range(20):
        loss = torch.nn.functional.mse_loss(rectifier(latent), target)
        first_loss = first_loss if first_loss is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.9 * first_loss


def test_paper_form_does_not_start_as_the_identity():
    latent = torch.randn(4, 32, 8, 8)
    for kind in ("vit", "cnn"):
        assert not torch.allclose(build_rectifier(_config(kind, width=32, depth=1))(latent), latent, atol=1e-2)
    assert isinstance(build_rectifier(_config("identity", residual=True)), torch.nn.Identity)


def test_residual_rectifier_round_trips_through_save_pretrained(tmp_path):
    from revq_core.modeling.revq import ReVQ

    model = ReVQ(latent_shape=(32, 8, 8), tokens_per_image=64, codes_per_group=4, rectifier_width=32,
                 rectifier_depth=1, rectifier_residual=True)
    model.save_pretrained(tmp_path / "model")
    reloaded = ReVQ.from_pretrained(tmp_path / "model")
    assert type(reloaded.rectifier).__name__ == "ResidualRectifier"
    for key, value in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value)
