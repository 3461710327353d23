"""The latent pipeline: batched encoding, the latent cache, streamed statistics, the embedded latents."""
import pytest
import torch
from helpers import tiny_autoencoder_dc
from PIL import Image

from revq_core.autoencoders.embedded import embedded_vae_path
from revq_core.data.latents import (embedded_latents, encode_dataset, encode_image_folder, latent_statistics,
                                    load_latents, save_latents)


@pytest.fixture()
def latent_cache(tmp_path):
    """A cache of 1000 latents (32, 8, 8) with a different mean and scale in every dimension."""
    generator = torch.Generator().manual_seed(0)
    offsets = torch.randn(32, 8, 8, generator=generator) * 5
    scales = torch.rand(32, 8, 8, generator=generator) * 3 + 0.1
    latents = torch.randn(1000, 32, 8, 8, generator=generator) * scales + offsets
    return save_latents(tmp_path / "latents.safetensors", latents, {"note": "test"}), latents


def test_cache_round_trip(latent_cache):
    path, latents = latent_cache
    assert torch.equal(load_latents(path), latents)


def test_missing_cache_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_latents"):
        load_latents(tmp_path / "none.safetensors")


@pytest.mark.parametrize("batch_size", [1000, 64, 7])
def test_streamed_statistics_equal_mean_and_var_over_the_whole_cache(latent_cache, batch_size):
    path, _ = latent_cache
    latents = load_latents(path)
    mean, var = latent_statistics(latents, batch_size=batch_size)
    assert mean.shape == var.shape == (32, 8, 8) and mean.dtype == var.dtype == torch.float32
    torch.testing.assert_close(mean.double(), latents.double().mean(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(var.double(), latents.double().var(0), rtol=1e-6, atol=1e-6)
    _, population_var = latent_statistics(latents, batch_size=batch_size, correction=0)
    torch.testing.assert_close(population_var.double(), latents.double().var(0, correction=0), rtol=1e-6, atol=1e-6)


def test_statistics_from_an_iterable_of_batches(latent_cache):
    _, latents = latent_cache
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(latents), batch_size=100)
    mean, var = latent_statistics(loader)
    torch.testing.assert_close(mean, latents.mean(0), rtol=0, atol=1e-5)
    torch.testing.assert_close(var, latents.var(0), rtol=1e-5, atol=1e-5)


def test_statistics_reject_empty_input():
    with pytest.raises(ValueError, match="no latents"):
        latent_statistics(iter([]))


def test_encode_dataset_accepts_tensors_uint8_and_datasets():
    vae = tiny_autoencoder_dc().eval()
    images_uint8 = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    images = images_uint8.float() / 127.5 - 1
    from_floats = encode_dataset(vae, images, batch_size=2, progress=False)
    from_uint8 = encode_dataset(vae, images_uint8, batch_size=3, progress=False)
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(5))  # (image, label) items
    from_dataset = encode_dataset(vae, dataset, batch_size=4, progress=False)
    assert from_floats.shape == (5, 4, 8, 8)
    torch.testing.assert_close(from_uint8, from_floats)
    torch.testing.assert_close(from_dataset, from_floats)
    with pytest.raises(ValueError, match="permute"):
        encode_dataset(vae, images.permute(0, 2, 3, 1), progress=False)


def test_encode_image_folder_writes_and_reuses_its_cache(tmp_path, monkeypatch):
    vae = tiny_autoencoder_dc().eval()
    for index in range(3):
        (tmp_path / "images" / "n01").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (index * 80, 10, 200)).save(tmp_path / "images" / "n01" / f"{index}.png")
    cache_path = tmp_path / "folder_latents.safetensors"
    latents = encode_image_folder(vae, tmp_path / "images", image_size=16, batch_size=2, num_workers=0,
                                  cache_path=cache_path, progress=False)
    assert latents.shape == (3, 4, 8, 8) and cache_path.is_file()
    # reused (not encoded again) for the same VAE and images; the cache is keyed by them, not by its name (issue 26)
    monkeypatch.setattr("revq_core.data.latents.encode_dataset", lambda *args, **kwargs: pytest.fail("re-encoded"))
    assert torch.equal(encode_image_folder(vae, tmp_path / "images", image_size=16, num_workers=0,
                                           cache_path=cache_path, progress=False), latents)


@pytest.mark.skipif(not (embedded_vae_path() / "config.json").is_file(),
                    reason="data/embedded_vae is absent; build it with `python scripts/pretrain_vae.py`")
def test_embedded_latents_are_encoded_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("REVQ_CACHE", str(tmp_path))
    train, val = embedded_latents(["train", "val"], num_crops=16, progress=False)
    assert train.shape == val.shape == (16, 32, 8, 8) and not torch.equal(train, val)
    assert len(list(tmp_path.glob("latents_*.safetensors"))) == 2
    assert torch.equal(embedded_latents("train", num_crops=16, progress=False), train)
