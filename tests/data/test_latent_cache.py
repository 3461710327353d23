"""The memory-mapped latent cache: resumable encoding, statistics in the same pass, training from it."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from revq_core.autoencoders.adapters import encode
from revq_core.data.latents import encode_to_cache, latent_cache_statistics, latent_statistics, load_latent_cache
from revq_core.training.config import preset
from revq_core.training.trainer import train


class _Encoded:
    def __init__(self, latent):
        self.latent = latent


class FakeVAE(nn.Module):
    """Images (n, 3, 32, 32) -> latents (n, 32, 8, 8): a fixed stride-4 convolution."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 4, stride=4)

    def encode(self, images):
        return _Encoded(self.conv(images))


class Images(torch.utils.data.Dataset):
    """(image, label) pairs; raises at ``fail_at`` while ``failing`` (an interrupted job)."""

    def __init__(self, count, fail_at=None):
        self.images = torch.rand(count, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
        self.fail_at, self.failing = fail_at, fail_at is not None

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        if self.failing and index == self.fail_at:
            raise KeyboardInterrupt("interrupted")
        return self.images[index], 0


def test_interrupted_encoding_resumes_to_the_same_cache_and_statistics(tmp_path):
    torch.manual_seed(0)
    vae, dataset = FakeVAE().eval(), Images(40, fail_at=27)
    path = tmp_path / "train.npy"
    with pytest.raises(KeyboardInterrupt):
        encode_to_cache(vae, dataset, path, batch_size=4, flush_every=2, progress=False)
    with pytest.raises(RuntimeError, match="incomplete .* call encode_to_cache again"):
        load_latent_cache(path)
    with np.load(tmp_path / "train.npy.progress-0of1.npz") as recorded:
        assert int(recorded["next_row"]) == 24  # 6 batches of 4 done, flushed every 2
    dataset.failing = False
    encode_to_cache(vae, dataset, path, batch_size=4, flush_every=2, progress=False)
    expected = encode(vae, dataset.images, 40)
    latents = load_latent_cache(path)
    assert isinstance(np.load(path, mmap_mode="r"), np.memmap) and latents.shape == (40, 32, 8, 8)
    torch.testing.assert_close(latents, expected)
    mean, var = latent_cache_statistics(path)
    expected_mean, expected_var = latent_statistics(expected, correction=0)
    torch.testing.assert_close(mean, expected_mean)
    torch.testing.assert_close(var, expected_var)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.npy", "train.npy.stats.npz"]


def test_training_from_a_memory_mapped_cache(tmp_path):
    torch.manual_seed(0)
    path = encode_to_cache(FakeVAE().eval(), Images(48).images, tmp_path / "train.npy", batch_size=16,
                           progress=False)
    latents = load_latent_cache(path)
    config = preset("tiny", epochs=1)
    from_disk, _ = train(config, latents, None, progress=False, normalizer_statistics=latent_cache_statistics(path))
    in_ram, _ = train(config, latents.clone(), None, progress=False)
    torch.testing.assert_close(from_disk.normalizer.std, in_ram.normalizer.std)
    torch.testing.assert_close(from_disk.quantizer.codebook, in_ram.quantizer.codebook, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="must end in .npy"):
        encode_to_cache(FakeVAE(), Images(4).images, tmp_path / "x.safetensors")
