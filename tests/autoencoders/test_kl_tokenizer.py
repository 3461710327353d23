"""Beyond the paper: any diffusers AutoencoderKL (SD / SDXL / SD3 / FLUX family) becomes a tokenizer through the
LatentAutoencoder adapter. Small random AutoencoderKLs stand in for the real ones (no weights offline)."""
import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from revq_core import tokenize_images
from revq_core.autoencoders import LatentAutoencoder, as_latent_autoencoder, encode, load_vae
from revq_core.autoencoders.kl import KLAutoencoder
from revq_core.autoencoders.loading import VAENotFoundError
from revq_core.data.codes import load_codes
from revq_core.data.photos import build_photo_dataset
from revq_core.modeling.revq import ReVQ
from revq_core.training.config import preset_for_latent
from revq_core.training.trainer import train


def small_kl(latent_channels: int, stages: int) -> AutoencoderKL:
    """A random AutoencoderKL with f = 2 ** (stages - 1): (4, 16, 16) latents of 64 x 64 images at 3 stages,
    (16, 8, 8) at 4 (the SD and FLUX channel counts)."""
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * stages,
                         up_block_types=("UpDecoderBlock2D",) * stages, block_out_channels=(8,) + (16,) * (stages - 1),
                         layers_per_block=1, latent_channels=latent_channels, norm_num_groups=4, sample_size=64)


@pytest.mark.parametrize("latent_channels, stages, latent_shape", [(4, 3, (4, 16, 16)), (16, 4, (16, 8, 8))])
def test_a_kl_vae_becomes_a_tokenizer(tmp_path, latent_channels, stages, latent_shape):
    small_kl(latent_channels, stages).save_pretrained(tmp_path / "kl")
    vae = load_vae(tmp_path / "kl")
    assert isinstance(vae, KLAutoencoder) and not vae.training
    assert vae.downsampling_factor == 2 ** (stages - 1)
    assert vae.latent_shape(64) == latent_shape and vae.image_size(latent_shape) == 64

    images = build_photo_dataset("train", 24, size=64)
    latents = encode(vae, images)  # the Gaussian's mode: deterministic
    assert latents.shape == (24, *latent_shape) and torch.equal(latents, encode(vae, images))

    config = preset_for_latent("tiny", latent_shape, codes_per_group=16, epochs=2, batch_size=8, num_threads=1)
    assert config.model.tokens_per_image == latent_channels * latent_shape[1] * latent_shape[2] // 4
    model, history = train(config, latents[:16], latents[16:], vae=str(tmp_path / "kl"), progress=False)
    assert all(np.isfinite(history.val_mse)) and history.val_mse[-1] < history.val_mse[0] * 1.5
    model.save_pretrained(tmp_path / "tokenizer")

    tokenizer = ReVQ.from_pretrained(tmp_path / "tokenizer").attach_vae(load_vae(tmp_path / "kl"))
    codes = tokenizer.encode_images(images[:3])
    assert codes.shape == (3, config.model.tokens_per_image) and int(codes.max()) < 16
    reconstructions = tokenizer.decode_codes(codes)
    assert reconstructions.shape == (3, 3, 64, 64) and bool(reconstructions.abs().le(1).all())

    # the command line finds the VAE the model records
    folder = tmp_path / "images"
    folder.mkdir()
    from PIL import Image

    for index, image in enumerate(images[:2]):
        Image.fromarray(((image.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).save(folder / f"{index}.png")
    tokenize_images.main([str(folder), "--out", str(tmp_path / "codes.npz"), "--model", str(tmp_path / "tokenizer"),
                   "--no-progress"])
    assert load_codes(tmp_path / "codes.npz")[0].shape == (2, config.model.tokens_per_image)


def test_pipeline_directories_and_other_classes(tmp_path):
    small_kl(4, 3).save_pretrained(tmp_path / "pipeline" / "vae")  # an SD / FLUX pipeline folder: its vae/ subfolder
    (tmp_path / "pipeline" / "model_index.json").write_text("{}")
    assert isinstance(load_vae(tmp_path / "pipeline"), KLAutoencoder)
    config = json.loads((tmp_path / "pipeline" / "vae" / "config.json").read_text())
    config["_class_name"] = "UNet2DModel"
    (tmp_path / "pipeline" / "vae" / "config.json").write_text(json.dumps(config))
    with pytest.raises(VAENotFoundError, match="holds a UNet2DModel, not one of AutoencoderDC, AutoencoderKL"):
        load_vae(tmp_path / "pipeline")


def test_the_adapter_wraps_and_refuses():
    kl = small_kl(4, 3)
    wrapped = as_latent_autoencoder(kl)
    assert isinstance(wrapped, KLAutoencoder) and as_latent_autoencoder(wrapped) is wrapped
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(wrapped.encode(images), kl.encode(images).latent_dist.mode())
    with pytest.raises(ValueError, match="multiples of 4"):
        wrapped.encode(torch.zeros(1, 3, 62, 64))
    with pytest.raises(TypeError, match="must be a LatentAutoencoder"):
        as_latent_autoencoder(torch.nn.Linear(2, 2))

    class Duck(torch.nn.Module):  # any module with encode / decode: the generic adapter
        def encode(self, images):
            return images[:, :, ::2, ::2]

        def decode(self, latents):
            return latents.repeat_interleave(2, -1).repeat_interleave(2, -2)

    duck = as_latent_autoencoder(Duck())
    assert type(duck) is LatentAutoencoder and duck.downsampling_factor is None
