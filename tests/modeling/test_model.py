import json

import pytest
import torch
from helpers import small_model, tiny_vae

from revq_core.modeling.revq import ReVQ


def test_forward_losses_and_gradient_routing():
    model = small_model()
    latent = torch.randn(4, 32, 8, 8)
    output = model(latent)
    assert output.rectified.shape == latent.shape and output.codes.shape == (4, 128)
    assert torch.allclose(output.loss, output.loss_quant + output.loss_rect)
    output.loss_rect.backward()  # the rectifier sees a detached quantized latent
    assert model.quantizer.codebook.grad is None or model.quantizer.codebook.grad.abs().sum() == 0


def test_tokenize_detokenize_and_normalization():
    model = small_model()
    latents = 3 + 2 * torch.randn(50, 32, 8, 8)
    model.normalizer.fit(latents)
    assert torch.allclose(model.normalizer.mean, latents.double().mean(0).float(), atol=1e-5)
    assert torch.allclose(model.normalizer.std, latents.double().std(0, unbiased=False).float(), atol=1e-5)
    codes = model.tokenize(latents[:5])
    assert codes.shape == (5, 128) and codes.dtype == torch.int64
    expected = model.normalizer.denormalize(model.rectifier(model.quantizer.decode(codes)))
    assert torch.allclose(model.detokenize(codes), expected)
    assert torch.allclose(model.reconstruct_latent(latents[:5]), expected)


def test_save_pretrained_round_trip(tmp_path):
    model = small_model(split="spatial", tokens_per_image=64, vae="embedded")
    model.normalizer.fit(torch.randn(20, 32, 8, 8))
    model.save_pretrained(tmp_path)
    loaded = ReVQ.from_pretrained(tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    latent = torch.randn(3, 32, 8, 8)
    assert torch.equal(loaded.tokenize(latent), model.tokenize(latent))
    assert loaded.quantizer.split == "spatial" and loaded.vae_name == "embedded"


def test_loading_a_damaged_or_mismatched_checkpoint_is_explained(tmp_path):
    model = small_model()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["codes_per_group"] = 32
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="another configuration"):
        ReVQ.from_pretrained(tmp_path)
    config["codes_per_group"] = 16
    (tmp_path / "config.json").write_text(json.dumps(config))
    weights = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ValueError, match="truncated or damaged"):
        ReVQ.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        ReVQ.from_pretrained(tmp_path)




def test_images_to_codes_and_back_with_an_attached_vae():
    model = small_model()
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    with pytest.raises(RuntimeError, match="No VAE attached"):
        model.encode_images(images)
    model.attach_vae(tiny_vae())
    assert "vae" not in dict(model.named_children())  # frozen VAE is not part of the saved model
    codes = model.encode_images(images)
    assert codes.shape == (2, 128)
    decoded = model.decode_codes(codes)
    assert decoded.shape == images.shape and decoded.abs().max() <= 1
    with pytest.raises(ValueError, match=r"scaled to \[-1, 1\]"):
        model.encode_images(images * 255)


def test_pre_encoder_ablation_trains_the_encoder_through_the_quantizer():
    model = small_model(pre_encoder="vit")
    output = model(torch.randn(2, 32, 8, 8))
    output.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.pre_encoder.parameters())
