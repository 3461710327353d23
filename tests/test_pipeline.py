"""The main job's glue: image folder -> cached latents, and tokenizer evaluation with clear notes."""
import math
import numpy as np
import pytest

import torch
from helpers import tiny_autoencoder_dc
from PIL import Image

from revq_core.autoencoders.adapters import decode, encode
from revq_core.evaluation.protocol import format_scores
from revq_core.modeling.revq import ReVQ
from revq_core.pipeline import RESULT_COLUMNS, evaluate_tokenizer, prepare_data, reconstruct_images


def _write_imagenet_layout(root, images_per_class=3, size=24):
    """root/{train,val}/<class>/<i>.png with random colour images of ``size`` pixels."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(images_per_class):
                pixels = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


@pytest.fixture
def tiny_vae():
    return tiny_autoencoder_dc().eval().requires_grad_(False)


def tiny_revq(latent_shape=(4, 8, 8)) -> ReVQ:
    model = ReVQ(latent_shape=latent_shape, tokens_per_image=64, codes_per_group=8, rectifier="identity")
    model.normalizer.fit(torch.randn(32, *latent_shape))
    return model.eval()


def test_image_folder_is_encoded_once_and_cached(tmp_path, tiny_vae, monkeypatch):
    monkeypatch.setenv("REVQ_CACHE", str(tmp_path / "cache"))
    root = _write_imagenet_layout(tmp_path / "imagenet")
    splits = prepare_data(tiny_vae, root, num_eval_images=4, image_size=16, progress=False)
    assert splits.train_latents.shape == (6, 4, 8, 8) and splits.val_latents.shape == (6, 4, 8, 8)
    assert splits.eval_images.shape == (4, 3, 16, 16)
    assert -1 <= float(splits.eval_images.min()) and float(splits.eval_images.max()) <= 1
    torch.testing.assert_close(splits.val_latents[:4], encode(tiny_vae, splits.eval_images))
    cached = sorted(path.name for path in (tmp_path / "cache").glob("latents_imagenet-*.npy"))  # + statistics files
    assert len(cached) == 2, sorted(path.name for path in (tmp_path / "cache").iterdir())
    # A second call reads the caches (keyed by the VAE and the folder's files), it encodes nothing again.
    monkeypatch.setattr("revq_core.data.latents.encode_to_cache", lambda *args, **kwargs: pytest.fail("re-encoded"))
    again = prepare_data(tiny_vae, root, num_eval_images=4, image_size=16, progress=False)
    torch.testing.assert_close(again.train_latents, splits.train_latents)


def test_a_folder_without_train_and_val_says_what_it_needs(tmp_path, tiny_vae):
    (tmp_path / "flat").mkdir()
    with pytest.raises(FileNotFoundError, match="train/<class>/<image> and val/<class>/<image>"):
        prepare_data(tiny_vae, tmp_path / "flat")


def test_an_image_folder_needs_a_vae(tmp_path):
    root = _write_imagenet_layout(tmp_path / "imagenet", images_per_class=1)
    with pytest.raises(ValueError, match="needs the VAE"):
        prepare_data(None, root)


def test_reconstructions_are_the_vae_and_the_tokenized_round_trips(tiny_vae):
    model = tiny_revq()
    images = torch.rand(5, 3, 16, 16) * 2 - 1
    vae_images, revq_images = reconstruct_images(model, tiny_vae, images, batch_size=2)
    latents = encode(tiny_vae, images)
    torch.testing.assert_close(vae_images, decode(tiny_vae, latents))
    torch.testing.assert_close(revq_images, decode(tiny_vae, model.reconstruct_latent(latents)))
    assert not torch.allclose(vae_images, revq_images)  # 8 codes per token lose information


def test_evaluation_reports_psnr_ssim_and_says_why_lpips_rfid_are_missing(tiny_vae, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no backbone weights there
    images = torch.rand(6, 3, 16, 16) * 2 - 1
    results, notes = evaluate_tokenizer(tiny_revq(), tiny_vae, images, batch_size=4)
    assert set(results) == {"vae", "revq"}
    for scores in results.values():
        assert {"paper_psnr", "paper_ssim", "psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y"} <= set(scores)
        assert "lpips" not in scores
        assert scores["num_images"] == 6
    model = tiny_revq()
    assert results["revq"]["bits_per_image"] == model.bits_per_image
    assert 0 < results["revq"]["entropy_bits"] <= model.tokens_per_image * math.log2(6) + 1e-9  # 6 images
    assert 0 < results["revq"]["usage"] <= 1
    assert len(notes) == 2 and notes[0].startswith("LPIPS skipped") and notes[1].startswith("rFID skipped")
    assert "alexnet-owt-7be5be79.pth" in notes[0] and "hub/checkpoints" in notes[0]
    table = format_scores(results, RESULT_COLUMNS, digits=3)  # as the training notebook prints them
    assert table.splitlines()[0].split() == ["paper_psnr", "paper_ssim", "psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y"]
    assert table.splitlines()[1].split() == ["vae"] + [f"{results['vae'][key]:.3f}" for key in RESULT_COLUMNS[:6]]
    assert table.splitlines()[2].startswith("revq") and len(table.splitlines()) == 3


def test_figures_go_where_the_environment_says(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from revq_core.paper.plots import REPO_ROOT, figures_dir, save_figure

    monkeypatch.setenv("REVQ_FIGURES_DIR", str(tmp_path / "figs"))
    figure = plt.figure()
    assert save_figure(figure, "check") == tmp_path / "figs" / "check.png" and (tmp_path / "figs" / "check.png").is_file()
    plt.close(figure)
    monkeypatch.delenv("REVQ_FIGURES_DIR")
    assert figures_dir() == REPO_ROOT / "figures"
