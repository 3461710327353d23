"""The VAE loader (embedded default, local directory, offline hub id) and the shipped VAE's quality."""
import json

import pytest
import torch
from diffusers import AutoencoderDC
from helpers import REPO_ROOT, tiny_autoencoder_dc

from revq_core.autoencoders.adapters import decode, encode
from revq_core.autoencoders.embedded import embedded_vae_config, embedded_vae_path, embedded_vae_v2_config
from revq_core.autoencoders.loading import VAENotFoundError, load_vae
from revq_core.data.photos import build_photo_dataset
from revq_core.evaluation.vae_quality import bicubic_baseline, reconstruction_quality

V1_DIR = embedded_vae_path("embedded")  # the first embedded VAE (f8c32, 64 x 64)
V2_DIR = REPO_ROOT / "data" / "embedded_vae_v2"  # the default (f16c32, 128 x 128)
needs_v1_vae = pytest.mark.skipif(not (V1_DIR / "config.json").is_file(),
                                  reason="data/embedded_vae is absent: python scripts/pretrain_vae.py --version v1")


def documented_quality(vae_dir, version: str) -> dict:
    """``vae_dir/quality.json``, after checking it was measured on the weights in ``vae_dir`` (by their sha1)."""
    import hashlib

    quality = json.loads((vae_dir / "quality.json").read_text())
    digest = hashlib.sha1()
    for path in sorted(vae_dir.glob("*.safetensors")):
        digest.update(path.read_bytes())
    assert quality["weights_sha1"] == digest.hexdigest(), (
        f"{vae_dir.relative_to(REPO_ROOT)}/quality.json was measured on other weights; rerun "
        f"`python scripts/pretrain_vae.py --evaluate --version {version}`")
    return quality




def test_load_vae_of_a_local_directory(tmp_path):
    model = tiny_autoencoder_dc().eval()
    model.save_pretrained(tmp_path / "tiny")
    vae = load_vae(tmp_path / "tiny")
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    latents = encode(vae, images, batch_size=2)
    assert latents.shape == (3, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(latents, model.encode(images).latent)
    assert decode(vae, latents).shape == (3, 3, 16, 16)


def test_load_vae_in_another_dtype(tmp_path):
    tiny_autoencoder_dc().save_pretrained(tmp_path / "tiny")
    vae = load_vae(tmp_path / "tiny", dtype=torch.bfloat16)
    assert next(vae.parameters()).dtype == torch.bfloat16
    assert encode(vae, torch.zeros(1, 3, 16, 16)).dtype == torch.float32  # latents come back as float32


def test_directory_without_a_model_says_what_it_needs(tmp_path):
    with pytest.raises(VAENotFoundError, match="config.json"):
        load_vae(tmp_path)


def test_offline_hub_id_gives_a_one_line_error(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model_id = "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers"
    with pytest.raises(FileNotFoundError) as error:
        load_vae(model_id)
    message = str(error.value)
    assert "\n" not in message
    assert model_id in message and f"hf download {model_id} --local-dir" in message
    assert "HF_HUB_OFFLINE" in message


def test_missing_embedded_weights_say_how_to_build_them(monkeypatch, tmp_path):
    monkeypatch.setenv("REVQ_EMBEDDED_VAE", str(tmp_path / "nothing_here"))
    with pytest.raises(VAENotFoundError, match="scripts/pretrain_vae.py") as error:
        load_vae()
    assert "embedded-v2" in str(error.value) and "\n" not in str(error.value)


def test_embedded_configs_give_the_papers_latent():
    """v2 (the default) is f16c32 on 128 x 128 images, v1 f8c32 on 64 x 64: both give 32 x 8 x 8."""
    for config, side in ((embedded_vae_v2_config(), 128), (embedded_vae_config(), 64)):
        model = AutoencoderDC(**config)
        with torch.no_grad():
            latents = model.encode(torch.zeros(1, 3, side, side)).latent
        assert latents.shape == (1, 32, 8, 8)


@pytest.mark.skipif(not (V2_DIR / "config.json").is_file(), reason="data/embedded_vae_v2 is absent")
def test_the_default_vae_is_the_v2():
    vae = load_vae()
    assert (vae.downsampling_factor, vae.latent_channels) == (16, 32)
    assert vae.latent_shape(128) == (32, 8, 8) and vae.cache_key() == load_vae("embedded-v2").cache_key()
    assert load_vae("embedded").downsampling_factor == 8


def test_bicubic_baseline_uses_no_more_values_than_the_latent():
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    baseline = bicubic_baseline(images, 32 * 8 * 8)  # 26 x 26 x 3 = 2028 values
    assert baseline.shape == images.shape and baseline.abs().max() <= 1
    scores = reconstruction_quality(images, images)
    assert scores["psnr_rgb"] >= 80 and scores["ssim_y"] > 0.999
    assert reconstruction_quality(images, baseline)["psnr_rgb"] < 40


@needs_v1_vae
def test_vae_v1_reconstructs_held_out_photos_at_its_documented_quality():
    """Real photos never seen in training: PSNR within 0.3 dB of data/embedded_vae/quality.json, Y above bicubic."""
    if not (V1_DIR / "quality.json").is_file():
        pytest.skip("data/embedded_vae/quality.json is absent; write it with "
                    "`python scripts/pretrain_vae.py --evaluate --version v1`")
    documented = documented_quality(V1_DIR, "v1")["test_first_128"]
    images = build_photo_dataset("test", corpus="v1")[:128]
    vae = load_vae("embedded")
    latents = encode(vae, images, batch_size=128)
    assert latents.shape == (128, 32, 8, 8)
    scores = reconstruction_quality(images, decode(vae, latents, batch_size=128))
    bicubic = reconstruction_quality(images, bicubic_baseline(images, latents[0].numel()))
    assert scores["psnr_rgb"] >= documented["vae"]["psnr_rgb"] - 0.3
    assert scores["psnr_y"] >= documented["vae"]["psnr_y"] - 0.3
    assert scores["psnr_y"] > bicubic["psnr_y"]  # the paper's channel



@pytest.mark.skipif(not (V2_DIR / "quality.json").is_file(),
                    reason="data/embedded_vae_v2 is absent: python scripts/pretrain_vae.py --version v2")
def test_embedded_vae_v2_reconstructs_held_out_photos_at_its_documented_quality():
    """The f16c32 VAE v2 on 128 x 128 crops of the held-out photos of data/photos: PSNR (both protocols) within
    0.3 dB of data/embedded_vae_v2/quality.json, measured on these weights."""
    from revq_core.evaluation.metrics import paper_psnr, to_unit_range

    documented = documented_quality(V2_DIR, "v2")["test_first_128"]["vae"]
    images = build_photo_dataset("test", corpus="v2")[:128]
    vae = load_vae("embedded-v2")
    latents = encode(vae, images, batch_size=64)
    assert latents.shape == (128, 32, 8, 8) and vae.downsampling_factor == 16
    reconstructions = decode(vae, latents, batch_size=64)
    scores = reconstruction_quality(images, reconstructions)
    paper = float(paper_psnr(to_unit_range(reconstructions), to_unit_range(images)).double().mean())
    assert scores["psnr_rgb"] >= documented["psnr_rgb"] - 0.3
    assert scores["psnr_y"] >= documented["psnr_y"] - 0.3
    assert paper >= documented["paper_psnr"] - 0.3


@pytest.mark.skipif(not (V2_DIR / "config.json").is_file(), reason="data/embedded_vae_v2 is absent")
def test_vae_quality_command_scores_the_default_vae_on_its_own_crops(capsys):
    from revq_core.evaluation import vae_quality

    vae_quality.main(["evaluate", "--num-crops", "8"])
    printed = capsys.readouterr().out
    assert "(corpus v2), 128 x 128" in printed
    vae_row, bicubic_row = (line.split() for line in printed.splitlines()[-2:])
    assert vae_row[0] == "vae" and bicubic_row[0] == "bicubic"
    assert float(vae_row[3]) > float(bicubic_row[3])  # PSNR Y above the same-budget thumbnail
