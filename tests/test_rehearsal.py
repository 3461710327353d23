"""A rehearsal of the paper's path as a user with a GPU walks it, on the CPU and with no download: the real
DC-AE f32c32 sana-1.1 architecture (random weights, saved as a local diffusers directory), a small
ImageNet-layout root made from the embedded photos (several sizes and aspect ratios, a CMYK JPEG, a PNG
named .JPEG, a truncated JPEG and a stray text file, as ImageNet has), the latent cache at 256 x 256, the
``paper_512T`` preset at its real K for one epoch, save / load, images -> tokens -> images; then the same
through the training notebook with papermill.

The encoder costs ~0.3 TFLOP per image (decoder ~0.5): ~4 s an image on 2 cores, so the images are few and
the notebook reuses the latents encoded here (the same cache directory). Measured on 2 shared cores (load ~3
from other jobs): 130-157 s, 2.9 GB peak RSS (the notebook, in its own process, ~80 s of it).
"""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from revq_core.autoencoders.adapters import downsampling_factor
from revq_core.autoencoders.loading import load_vae
from revq_core.data.latents import encode_image_folder, latent_cache_statistics
from revq_core.data.photos import PHOTO_SOURCES, load_photo
from revq_core.modeling.revq import ReVQ
from revq_core.paper.flops import MODEL_CONFIGS
from revq_core.pipeline import prepare_data
from revq_core.training.config import preset
from revq_core.training.trainer import train

REPO = Path(__file__).resolve().parent.parent

# config.json of mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers on the Hugging Face Hub (diffusers AutoencoderDC).
SANA_1_1_CONFIG = {
    "in_channels": 3,
    "latent_channels": 32,
    "attention_head_dim": 32,
    "encoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock",
                            "EfficientViTBlock"],
    "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock",
                            "EfficientViTBlock"],
    "encoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
    "decoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
    "encoder_layers_per_block": [2, 2, 2, 3, 3, 3],
    "decoder_layers_per_block": [3, 3, 3, 3, 3, 3],
    "encoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
    "decoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
    "upsample_block_type": "interpolate",
    "downsample_block_type": "Conv",
    "decoder_norm_types": "rms_norm",
    "decoder_act_fns": "silu",
    "scaling_factor": 0.41407,
}

# (split, class, file, (width, height), how it is stored): 8 training and 4 validation images of several sizes
# and aspect ratios (a short side below 256 is upscaled), in 3 and 2 classes, cut from the embedded photos.
IMAGES = [
    ("train", "n01440764", "n01440764_10026.JPEG", (512, 512), "RGB"),
    ("train", "n01440764", "n01440764_10027.JPEG", (284, 427), "RGB"),  # portrait 2:3
    ("train", "n01440764", "n01440764_10042.JPEG", (640, 213), "RGB"),  # panorama 3:1
    ("train", "n01443537", "n01443537_1000.JPEG", (200, 150), "RGB"),  # small: upscaled
    ("train", "n01443537", "n01443537_1001.JPEG", (741, 500), "CMYK"),  # ImageNet holds a few CMYK JPEGs
    ("train", "n01484850", "n01484850_1005.JPEG", (800, 600), "L"),  # and grayscale ones
    ("train", "n01484850", "n01484850_1011.JPEG", (384, 288), "PNG"),  # and a PNG named .JPEG
    ("train", "n01484850", "n01484850_1020.JPEG", (300, 300), "RGB"),
    ("val", "n01440764", "ILSVRC2012_val_00000293.JPEG", (451, 300), "RGB"),
    ("val", "n01440764", "ILSVRC2012_val_00002138.JPEG", (300, 400), "RGB"),
    ("val", "n01443537", "ILSVRC2012_val_00000236.JPEG", (512, 600), "RGB"),
    ("val", "n01443537", "ILSVRC2012_val_00000262.JPEG", (250, 250), "RGB"),
]


def _photo_cut(index: int, size: tuple[int, int]) -> Image.Image:
    """An image of ``size`` (width, height) from embedded photo number ``index`` (cycling): its centre crop at
    that aspect ratio, resized."""
    photo = Image.fromarray(load_photo(PHOTO_SOURCES[index % len(PHOTO_SOURCES)]))
    scale = min(photo.width / size[0], photo.height / size[1])
    width, height = int(size[0] * scale), int(size[1] * scale)
    left, top = (photo.width - width) // 2, (photo.height - height) // 2
    return photo.crop((left, top, left + width, top + height)).resize(size, Image.Resampling.BICUBIC)


def _imagenet_like_root(root: Path) -> Path:
    """root/train/<class>/*.JPEG and root/val/<class>/*.JPEG cut from the embedded photos, plus a truncated
    JPEG (readable header, undecodable data) and a text file in the training folders."""
    for index, (split, label, name, size, stored) in enumerate(IMAGES):
        path = root / split / label / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = _photo_cut(index, size)
        if stored == "PNG":
            image.save(path, format="PNG")
        else:
            image.convert(stored).save(path, format="JPEG", quality=90)
    whole = io.BytesIO()
    _photo_cut(0, (400, 300)).save(whole, format="JPEG")
    (root / "train" / "n01443537" / "n01443537_1002.JPEG").write_bytes(whole.getvalue()[:len(whole.getvalue()) // 2])
    (root / "train" / "n01484850" / "labels.txt").write_text("n01484850 great white shark\n")
    return root


def test_the_config_is_the_one_the_flops_notebook_counts():
    expected = {key: tuple(tuple(item) if isinstance(item, list) else item for item in value)
                if isinstance(value, list) else value for key, value in SANA_1_1_CONFIG.items()}
    assert MODEL_CONFIGS["dc-ae-sana-1.1"] == expected


def test_an_image_folder_encodes_into_the_memory_mapped_cache(tmp_path, monkeypatch):
    """encode_image_folder with a .npy cache: the resumable memory-mapped cache of revq_core.data.latents, read
    back without encoding again; the same latents as without a cache."""
    from tests.data.test_latent_cache import FakeVAE

    root = tmp_path / "images"
    (root / "n0").mkdir(parents=True)
    for index in range(3):
        _photo_cut(index, (300, 200)).save(root / "n0" / f"{index}.JPEG")
    vae = FakeVAE().eval()
    latents = encode_image_folder(vae, root, image_size=32, num_workers=0, cache_path=tmp_path / "train.npy",
                                  progress=False)
    assert latents.shape == (3, 32, 8, 8) and (tmp_path / "train.npy").is_file()
    torch.testing.assert_close(latents, encode_image_folder(vae, root, image_size=32, num_workers=0, progress=False))
    mean, var = latent_cache_statistics(tmp_path / "train.npy")
    torch.testing.assert_close(mean, latents.mean(0))
    # a complete cache is read, never encoded again (it is keyed by the VAE and the images: issue 26)
    monkeypatch.setattr("revq_core.data.latents.encode_to_cache", lambda *args, **kwargs: pytest.fail("re-encoded"))
    torch.testing.assert_close(encode_image_folder(vae, root, image_size=32, cache_path=tmp_path / "train.npy"),
                               latents)


def test_a_vae_from_a_local_directory_encodes_into_the_safetensors_cache(tmp_path):
    """A VAE loaded from a directory has a path in its config (``_name_or_path``): the cache's metadata records it
    (it once failed there, after all the encoding)."""
    from revq_core.autoencoders.embedded import build_embedded_vae
    from revq_core.data.latents import load_latents

    torch.manual_seed(0)
    build_embedded_vae().save_pretrained(tmp_path / "vae")
    vae = load_vae(tmp_path / "vae")
    (tmp_path / "images" / "n0").mkdir(parents=True)
    for index in range(2):
        _photo_cut(index, (96, 64)).save(tmp_path / "images" / "n0" / f"{index}.JPEG")
    latents = encode_image_folder(vae, tmp_path / "images", image_size=64, num_workers=0,
                                  cache_path=tmp_path / "val.safetensors", progress=False)
    assert latents.shape == (2, 32, 8, 8)
    torch.testing.assert_close(load_latents(tmp_path / "val.safetensors"), latents)


def test_the_paper_path_end_to_end_with_a_random_dc_ae(tmp_path, monkeypatch, two_threads):
    from diffusers import AutoencoderDC

    monkeypatch.setenv("REVQ_CACHE", str(tmp_path / "cache"))  # the latent cache, shared with the notebook below
    torch.manual_seed(0)
    vae_dir = tmp_path / "dc-ae-f32c32-sana-1.1-diffusers"
    AutoencoderDC(**SANA_1_1_CONFIG).save_pretrained(vae_dir)
    vae = load_vae(str(vae_dir))  # as the notebook loads it
    assert downsampling_factor(vae) == 32 and not vae.training
    root = _imagenet_like_root(tmp_path / "imagenet")

    # Latents at 256 x 256: the truncated JPEG passes the header check and is replaced by the next image when it
    # fails to decode; the text file is skipped.
    with pytest.warns(UserWarning, match="Skipping .*labels.txt: not an image file"):
        splits = prepare_data(vae, root, num_eval_images=2, progress=False)
    assert splits.train_latents.shape == (9, 32, 8, 8) and splits.val_latents.shape == (4, 32, 8, 8)
    assert splits.eval_images.shape == (2, 3, 256, 256)
    assert torch.isfinite(splits.train_latents).all() and splits.train_latents.std() > 0.1

    # The paper's 512T preset at its real K, one epoch of one step, a run directory as the notebook writes it.
    config = preset("paper_512T", epochs=1, batch_size=8)
    model, history = train(config, splits.train_latents, splits.val_latents, output_dir=tmp_path / "run",
                           vae=str(vae_dir), progress=False)
    assert history.epoch == [0] and np.isfinite(history.val_mse[0])
    assert history.codes_reset == [512 * int(0.2 * 16384)]
    reloaded = ReVQ.from_pretrained(tmp_path / "run" / "model").attach_vae(vae)
    assert (reloaded.tokens_per_image, reloaded.codes_per_group, reloaded.vae_name) == (512, 16384, str(vae_dir))

    # Images -> 512 token ids -> images, through the VAE.
    image = splits.eval_images[:1]
    codes = reloaded.encode_images(image)
    assert codes.shape == (1, 512) and 0 <= int(codes.min()) and int(codes.max()) < 16384
    assert torch.equal(reloaded.tokenize(splits.val_latents), model.tokenize(splits.val_latents))
    cached_codes = model.tokenize(splits.val_latents[:1])  # the same image, encoded in a batch of 4 for the cache
    assert (codes == cached_codes).float().mean() > 0.99  # (a batch of 1 may differ in the last bits)
    decoded = reloaded.decode_codes(codes)
    assert decoded.shape == (1, 3, 256, 256) and torch.isfinite(decoded).all() and decoded.abs().max() <= 1

    # The same through the training notebook (its paper-scale cells), reusing the latents cached above.
    output = tmp_path / "notebook"
    command = [sys.executable, "-m", "papermill", "--cwd", str(REPO / "notebooks"), "-k", "python3",
               "--no-progress-bar", str(REPO / "notebooks" / "05_train.ipynb"), str(tmp_path / "05_train.ipynb"),
               "-p", "preset", "paper_512T", "-p", "vae", str(vae_dir), "-p", "data", str(root),
               "-p", "epochs", "1", "-p", "batch_size", "4", "-p", "num_eval_images", "1",
               "-p", "assert_checks", "False", "-p", "output_dir", str(output)]
    environment = dict(os.environ, REVQ_CACHE=str(tmp_path / "cache"), REVQ_FIGURES_DIR=str(tmp_path / "figures"),
                       OMP_NUM_THREADS=str(torch.get_num_threads()), MKL_NUM_THREADS=str(torch.get_num_threads()))
    finished = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-3000:]
    notebook_model = ReVQ.from_pretrained(output / "model")
    assert (notebook_model.tokens_per_image, notebook_model.codes_per_group) == (512, 16384)
    assert json.loads((output / "history.json").read_text())["epoch"] == [0]
    assert (tmp_path / "figures" / "05_train_reconstructions.png").is_file()
