import json

import pytest
import torch
from diffusers import AutoencoderDC

from revq_core.model import ReVQ


def _small_model(**kwargs):
    settings = dict(latent_shape=(32, 8, 8), tokens_per_image=128, codes_per_group=16, rectifier_width=32,
                    rectifier_depth=1)
    settings.update(kwargs)
    return ReVQ(**settings)


def test_forward_losses_and_gradient_routing():
    model = _small_model()
    latent = torch.randn(4, 32, 8, 8)
    output = model(latent)
    assert output.rectified.shape == latent.shape and output.codes.shape == (4, 128)
    assert torch.allclose(output.loss, output.loss_quant + output.loss_rect)
    output.loss_rect.backward()  # the rectifier sees a detached quantized latent
    assert model.quantizer.codebook.grad is None or model.quantizer.codebook.grad.abs().sum() == 0


def test_tokenize_detokenize_and_normalization():
    model = _small_model()
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
    model = _small_model(split="spatial", tokens_per_image=64, vae="embedded")
    model.normalizer.fit(torch.randn(20, 32, 8, 8))
    model.save_pretrained(tmp_path)
    loaded = ReVQ.from_pretrained(tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    latent = torch.randn(3, 32, 8, 8)
    assert torch.equal(loaded.tokenize(latent), model.tokenize(latent))
    assert loaded.quantizer.split == "spatial" and loaded.vae_name == "embedded"


def test_loading_a_damaged_or_mismatched_checkpoint_is_explained(tmp_path):
    model = _small_model()
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


def _tiny_vae():
    """A random f8c32 AutoencoderDC (4 stages): 64 x 64 x 3 -> 32 x 8 x 8, built in milliseconds."""
    return AutoencoderDC(in_channels=3, latent_channels=32, encoder_block_types="ResBlock",
                         decoder_block_types="ResBlock", encoder_block_out_channels=(8, 16, 32, 32),
                         decoder_block_out_channels=(8, 16, 32, 32), encoder_layers_per_block=(1, 1, 1, 1),
                         decoder_layers_per_block=(1, 1, 1, 1), encoder_qkv_multiscales=((),) * 4,
                         decoder_qkv_multiscales=((),) * 4, decoder_norm_types="rms_norm", decoder_act_fns="silu")


def test_images_to_codes_and_back_with_an_attached_vae():
    model = _small_model()
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    with pytest.raises(RuntimeError, match="No VAE attached"):
        model.encode_images(images)
    model.attach_vae(_tiny_vae())
    assert "vae" not in dict(model.named_children())  # frozen VAE is not part of the saved model
    codes = model.encode_images(images)
    assert codes.shape == (2, 128)
    decoded = model.decode_codes(codes)
    assert decoded.shape == images.shape and decoded.abs().max() <= 1
    with pytest.raises(ValueError, match=r"scaled to \[-1, 1\]"):
        model.encode_images(images * 255)


def test_pre_encoder_ablation_trains_the_encoder_through_the_quantizer():
    model = _small_model(pre_encoder="vit")
    output = model(torch.randn(2, 32, 8, 8))
    output.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.pre_encoder.parameters())
