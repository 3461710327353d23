"""Noise sweep of revq_core.paper.noise on a tiny random AutoencoderDC (seconds)."""
import math

import pytest
import torch

from revq_core.autoencoders.adapters import decode, encode
from revq_core.autoencoders.embedded import build_embedded_vae
from revq_core.evaluation.vae_quality import reconstruction_quality
from revq_core.modeling.normalizer import LatentNormalizer
from revq_core.paper.noise import add_latent_noise, crossing_sigma, knee_sigma, noise_sweep, steepest_drop


@pytest.fixture(scope="module")
def tiny_setup():
    torch.manual_seed(0)
    vae = build_embedded_vae(dict(
        in_channels=3, latent_channels=4, attention_head_dim=8, encoder_block_types=("ResBlock", "ResBlock"),
        decoder_block_types=("ResBlock", "ResBlock"), encoder_block_out_channels=(8, 16),
        decoder_block_out_channels=(8, 16), encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1),
        encoder_qkv_multiscales=((), ()), decoder_qkv_multiscales=((), ()), upsample_block_type="pixel_shuffle",
        downsample_block_type="pixel_unshuffle", decoder_norm_types="rms_norm", decoder_act_fns="silu")).eval()
    images = torch.rand(6, 3, 16, 16) * 2 - 1
    latents = encode(vae, images)
    normalizer = LatentNormalizer(tuple(latents.shape[1:]))
    normalizer.fit(latents)
    return vae, normalizer, latents, images


def test_sigma_zero_equals_plain_reconstruction(tiny_setup):
    vae, normalizer, latents, images = tiny_setup
    sweep = noise_sweep(vae, normalizer, latents, images, sigmas=[0.0, 0.5], num_examples=2)
    plain = reconstruction_quality(images, decode(vae, latents))
    for name, value in plain.items():
        assert sweep.quality[0][name] == pytest.approx(value, rel=1e-4)
    assert sweep.latent_mse[0] == pytest.approx(0.0, abs=1e-10)
    assert sweep.examples.shape == (2, 2, 3, 16, 16)
    assert sweep.metric("psnr_y") == [scores["psnr_y"] for scores in sweep.quality]


def test_added_noise_has_the_requested_std_in_normalized_units(tiny_setup):
    _, normalizer, latents, _ = tiny_setup
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(1))
    noisy = add_latent_noise(latents, normalizer, 0.3, noise)
    difference = normalizer.normalize(noisy) - normalizer.normalize(latents)
    torch.testing.assert_close(difference, 0.3 * noise, rtol=1e-4, atol=1e-4)


def test_larger_noise_moves_the_decoded_images_further(tiny_setup):
    vae, normalizer, latents, images = tiny_setup
    sweep = noise_sweep(vae, normalizer, latents, images, sigmas=[0.0, 1.0, 5.0])
    assert sweep.latent_mse[2] == pytest.approx(25.0, rel=0.3)
    # random weights: the images are not reconstructed, but bigger noise moves the decoded image further
    distance = [(sweep.examples[i] - sweep.examples[0]).pow(2).mean().item() for i in range(3)]
    assert distance[0] == 0.0 < distance[1] < distance[2]


def test_threshold_helpers_on_a_hand_made_curve():
    sigmas = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    values = [30.0, 29.8, 29.5, 29.0, 26.0, 24.0]  # flat, then a bend at 0.3, then steep
    assert crossing_sigma(sigmas, values, 28.0) == pytest.approx(0.3 + 1.0 / 3 * 0.1)
    assert math.isnan(crossing_sigma(sigmas, values, 10.0))
    midpoint, slope = steepest_drop(sigmas, values)
    assert midpoint == pytest.approx(0.35) and slope == pytest.approx(-30.0)
    assert knee_sigma(sigmas, values) == pytest.approx(0.3)
