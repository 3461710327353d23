"""One-line errors that say what is wrong and how to fix it, instead of deep tracebacks; and inputs
that used to be read wrongly (16-bit and float images, hidden folders in an image folder)."""
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import small_model, tiny_vae  # noqa: E402
from PIL import Image

from revq_core import convert, pipeline
from revq_core.autoencoders.adapters import downsampling_factor, encode
from revq_core.autoencoders.embedded import embedded_vae_path
from revq_core.data import latents as latent_cache
from revq_core.data.images import ImageFolderDataset
from revq_core.data.latents import load_latents, save_latents
from revq_core.modeling import authors_format
from revq_core.modeling.revq import ReVQ
from revq_core.training.config import preset
from revq_core.training.trainer import train

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def latents():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(64, 32, 8, 8, generator=generator), torch.randn(16, 32, 8, 8, generator=generator)


# ---- 1. TrainConfig fields checked when the config is made (before any training) ------------------------

@pytest.mark.parametrize("overrides, message", [
    ({"tokens_per_image": 0}, "tokens_per_image must be a positive integer, got 0"),
    ({"tokens_per_image": 3}, r"tokens_per_image T = 3 does not divide C\*H\*W = 2048"),
    ({"epochs": 2.5}, "epochs must be a positive integer, got 2.5"),
    ({"epochs": 0}, "epochs must be a positive integer, got 0"),
    ({"batch_size": -4}, "batch_size must be a positive integer, got -4"),
    ({"val_batch_size": 0}, "val_batch_size must be a positive integer, got 0"),
    ({"final_lr_fraction": 0.0}, r"final_lr_fraction must be in \(0, 1\]"),
    ({"final_lr_fraction": 1.5}, r"final_lr_fraction must be in \(0, 1\]"),
    ({"codes_per_group": 0}, "codes_per_group must be a positive integer, got 0"),
    ({"latent_shape": (32, 8)}, r"latent_shape must be \(C, H, W\)"),
])
def test_bad_train_config_fails_before_training(overrides, message):
    """A config checks itself when it is made, so a bad field never reaches train() (a negative batch size once
    saved a "model" of 0 steps) nor the training notebook's first cell."""
    with pytest.raises(ValueError, match=message):
        preset("tiny", **overrides)


def test_check_run_setup_and_train_refuse_what_is_not_a_train_config(latents, tmp_path):
    with pytest.raises(TypeError, match=r"config must be a TrainConfig \(e.g. preset\('demo'\)\)"):
        pipeline.check_run_setup("cpu", tmp_path / "run", {"epochs": 2})
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        train({"epochs": 2}, *latents, output_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_empty_validation_latents_are_refused(latents):
    train_latents, _ = latents
    with pytest.raises(ValueError, match=r"val_latents .*empty batch.*B = 0"):
        train(preset("tiny"), train_latents, train_latents[:0], progress=False)


# ---- 2. empty batches: a clear error from every tokenizer entry point ---------------------------------

def test_empty_batches_are_refused_by_every_entry_point():
    model = small_model().attach_vae(tiny_vae())
    calls = {"tokenize": lambda: model.tokenize(torch.zeros(0, 32, 8, 8)),
             "detokenize": lambda: model.detokenize(torch.zeros(0, 128, dtype=torch.long)),
             "encode_images": lambda: model.encode_images(torch.zeros(0, 3, 64, 64)),
             "decode_codes": lambda: model.decode_codes(torch.zeros(0, 128, dtype=torch.long))}
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"empty batch .*B = 0.*at least one"):
            call()
    assert model.tokenize(torch.zeros(1, 32, 8, 8)).shape == (1, 128)  # a batch of one still works


# ---- 3. tensors on the meta device -----------------------------------------------------------------------

def test_meta_tensors_are_refused_with_what_to_do(latents):
    model = small_model()
    with pytest.raises(ValueError, match=r"latents is on device 'meta'.*holds no data.*materialized"):
        model.tokenize(torch.zeros(2, 32, 8, 8, device="meta"))
    with pytest.raises(ValueError, match=r"codes is on device 'meta'.*holds no data"):
        model.detokenize(torch.zeros(2, 128, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match=r"train_latents is on device 'meta'.*holds no data"):
        train(preset("tiny"), torch.zeros(64, 32, 8, 8, device="meta"), progress=False)
    with torch.device("meta"):
        meta_model = small_model()
    with pytest.raises(ValueError, match=r"weights are on device 'meta'.*from_pretrained"):
        meta_model.tokenize(latents[0][:2])


# ---- 4. damaged latent files -----------------------------------------------------------------------------

def test_truncated_or_foreign_safetensors_latents_name_the_file(tmp_path):
    path = save_latents(tmp_path / "latents.safetensors", torch.randn(4, 32, 8, 8))
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=r"latents\.safetensors is not a readable safetensors latent file.*truncated"):
        load_latents(path)
    path.write_text("not a tensor file at all\n" * 20)
    with pytest.raises(ValueError, match=r"latents\.safetensors is not a readable safetensors latent file"):
        load_latents(path)


def test_truncated_or_foreign_npy_cache_names_the_file(tmp_path):
    path = tmp_path / "train.npy"
    np.save(path, np.zeros((4, 32, 8, 8), np.float32))
    np.savez(tmp_path / "train.npy.stats.npz", mean=np.zeros((32, 8, 8)), var=np.ones((32, 8, 8)), count=4)
    assert latent_cache.load_latent_cache(path).shape == (4, 32, 8, 8)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=r"train\.npy is not a readable \.npy latent cache.*truncated"):
        latent_cache.load_latent_cache(path)
    path.write_text("not a tensor file at all\n" * 20)
    with pytest.raises(ValueError, match=r"train\.npy is not a readable \.npy latent cache") as error:
        latent_cache.load_latent_cache(path)
    assert "allow_pickle" not in str(error.value)  # numpy's advice to load it unsafely is not passed on


# ---- 5. from_pretrained on a path that does not exist ------------------------------------------------

@pytest.mark.parametrize("name", ["./runs/no_such_model", "runs/demo/no_such_model", "~/no_such_revq_model"])
def test_from_pretrained_on_a_missing_local_path(name):
    with pytest.raises(FileNotFoundError, match="is not a directory and not a Hugging Face Hub id"):
        ReVQ.from_pretrained(name)


def test_from_pretrained_on_an_absolute_missing_path_or_a_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory and not a Hugging Face Hub id"):
        ReVQ.from_pretrained(tmp_path / "missing")
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
        ReVQ.from_pretrained(tmp_path / "model.safetensors")


# ---- 6. no VAE attached: the message gives a call that works --------------------------------------------

@pytest.mark.skipif(not (embedded_vae_path() / "config.json").is_file(), reason="data/embedded_vae_v2 is absent")
@pytest.mark.parametrize("vae_name, call, factor", [(None, "load_vae()", 16), ("embedded-v2", "load_vae()", 16),
                                                     ("embedded", "load_vae('embedded')", 8)])
def test_missing_vae_message_gives_a_working_call(vae_name, call, factor):
    model = small_model(vae=vae_name)
    with pytest.raises(RuntimeError, match="No VAE attached") as error:
        model.decode_codes(torch.zeros(1, 128, dtype=torch.long))
    suggested = str(error.value).rsplit(": ", 1)[1]
    assert call in suggested
    exec(suggested, {"model": model})  # pasted as is, it attaches the VAE the model records
    assert model.vae is not None and downsampling_factor(model.vae) == factor
    assert model.decode_codes(torch.zeros(1, 128, dtype=torch.long)).shape == (1, 3, 8 * factor, 8 * factor)


def test_missing_vae_message_names_the_recorded_vae():
    model = small_model(vae="mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers")
    with pytest.raises(RuntimeError, match="No VAE attached") as error:
        model.encode_images(torch.zeros(1, 3, 256, 256))
    assert str(error.value).endswith("model.attach_vae(load_vae('mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers'))")


# ---- 7. 16-bit and float images keep their values ---------------------------------------------------------

def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    (tmp_path / "n01").mkdir()
    gradient = np.tile(np.linspace(0, 65535, 32), (32, 1)).astype(np.uint16)  # (32, 32), left black, right white
    Image.fromarray(gradient).save(tmp_path / "n01" / "gradient.png")
    Image.fromarray(np.full((32, 32), 32768, np.uint16)).save(tmp_path / "n01" / "grey.png")
    assert Image.open(tmp_path / "n01" / "grey.png").mode.startswith("I")
    dataset = ImageFolderDataset(tmp_path, size=32)
    gradient_image, grey_image = dataset.load(0), dataset.load(1)
    assert gradient_image.shape == grey_image.shape == (3, 32, 32)
    torch.testing.assert_close(grey_image, torch.full((3, 32, 32), 32768 / 65535 * 2 - 1), atol=1e-5, rtol=0)
    expected = torch.from_numpy(gradient[0] / 65535 * 2 - 1).float().expand(3, 32, 32)  # 0 -> -1, 65535 -> 1
    torch.testing.assert_close(gradient_image, expected, atol=1e-5, rtol=0)


def test_float_tiff_is_read_in_unit_range_or_scaled_by_its_maximum(tmp_path):
    Image.fromarray(np.full((16, 16), 0.25, np.float32)).save(tmp_path / "quarter.tif")
    Image.fromarray(np.tile(np.linspace(0, 4, 16, dtype=np.float32), (16, 1))).save(tmp_path / "bright.tif")
    dataset = ImageFolderDataset(tmp_path, size=16)  # flat folder, sorted: bright.tif, quarter.tif
    assert [path.name for path, _ in dataset.samples] == ["bright.tif", "quarter.tif"]
    assert Image.open(tmp_path / "quarter.tif").mode == "F"
    torch.testing.assert_close(dataset.load(1), torch.full((3, 16, 16), -0.5))  # 0.25 in [0, 1] -> -0.5
    bright = dataset.load(0)  # values up to 4: divided by the maximum, so 0 -> -1 and 4 -> 1
    torch.testing.assert_close(bright[:, :, 0], torch.full((3, 16), -1.0))
    torch.testing.assert_close(bright[:, :, -1], torch.full((3, 16), 1.0))


# ---- 8. image sides the VAE cannot take -----------------------------------------------------------------

def test_image_sides_must_fit_the_vae():
    vae = tiny_vae()
    assert downsampling_factor(vae) == 8
    model = small_model().attach_vae(vae)
    with pytest.raises(ValueError, match=r"60 x 64 pixels.*downsamples by 8.*multiples of 8"):
        model.encode_images(torch.zeros(1, 3, 60, 64))
    with pytest.raises(ValueError, match=r"multiples of 8"):
        encode(vae, torch.zeros(1, 3, 64, 60))
    with pytest.raises(ValueError, match=r"72 x 72 pixels.*centre-crop the images to 64 x 64"):
        model.encode_images(torch.zeros(1, 3, 72, 72))
    assert model.encode_images(torch.zeros(1, 3, 64, 64)).shape == (1, 128)


# ---- 9. the training notebook's run setup --------------------------------------------------------------

def test_check_run_setup(tmp_path, monkeypatch):
    pipeline.check_run_setup("cpu", tmp_path / "new" / "run")  # a directory still to be made is fine
    pipeline.check_run_setup("cpu", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"device 'cuda' was asked for, but CUDA is not available.*use device 'cpu'"):
        pipeline.check_run_setup("cuda", tmp_path)
    with pytest.raises(ValueError, match=r"device 'gpu' is not a torch device.*use 'cpu', 'cuda'"):
        pipeline.check_run_setup("gpu", tmp_path)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"output_dir is an existing file, not a directory"):
        pipeline.check_run_setup("cpu", tmp_path / "a_file")
    with pytest.raises(NotADirectoryError, match=r"output_dir's parent .*a_file' is an existing file"):
        pipeline.check_run_setup("cpu", tmp_path / "a_file" / "run")


def test_training_notebook_checks_the_setup_in_its_first_cell():
    source = (REPO_ROOT / "notebooks" / "05_train.py").read_text()
    cells = source.split("# %%")
    parameters = next(index for index, cell in enumerate(cells) if 'tags=["parameters"]' in cell)
    assert "check_run_setup(device, output_dir, config)" in cells[parameters + 1]


# ---- 10. hidden folders in an ImageNet-layout folder ---------------------------------------------------

def test_hidden_files_and_folders_are_not_classes_or_images(tmp_path):
    for folder in ("n01", ".ipynb_checkpoints", ".hidden_class"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / folder / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "n01" / ".a-checkpoint.png")
    (tmp_path / "n01" / ".DS_Store").write_bytes(b"\0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # hidden files are skipped silently, not warned about
        dataset = ImageFolderDataset(tmp_path, size=8)
    assert dataset.classes == ["n01"]
    assert [(path.name, label) for path, label in dataset.samples] == [("a.png", 0)]


# ---- 11. revq_core.evaluation.metrics imports (and PSNR/SSIM work) with a broken torch-fidelity ---------------------

def test_metrics_import_when_torch_fidelity_is_installed_without_torchvision(tmp_path):
    # A stand-in torch-fidelity that is "installed" (package metadata, which torchmetrics looks for) but
    # fails to import for want of torchvision, as the real one does; torchvision is blocked in sys.modules.
    (tmp_path / "torch_fidelity").mkdir()
    (tmp_path / "torch_fidelity" / "__init__.py").write_text("import torchvision\n")
    (tmp_path / "torch_fidelity-0.4.0.dist-info").mkdir()
    (tmp_path / "torch_fidelity-0.4.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: torch-fidelity\nVersion: 0.4.0\n")
    script = textwrap.dedent("""
        import sys
        sys.modules["torchvision"] = None  # `import torchvision` raises ImportError
        import torch
        from revq_core.evaluation import metrics
        images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        print("psnr", metrics.psnr(images, images.flip(0)), "ssim", metrics.ssim(images, images))
        for build in (lambda: metrics.lpips_network(pretrained_backbone=False),
                      lambda: metrics.inception_network(rfid_weights=sys.argv[1])):
            try:
                build()
            except metrics.MissingDependencyError as error:
                print("missing:", error)
    """)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)]),
                   "OMP_NUM_THREADS": "1"}
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"")  # a weights file is there, so that the import is what fails
    result = subprocess.run([sys.executable, "-c", script, str(weights)], capture_output=True, text=True,
                            env=environment, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    psnr_value, ssim_value = float(lines[0].split()[1]), float(lines[0].split()[3])
    assert 0 < psnr_value < 80 and ssim_value == pytest.approx(1.0, abs=1e-6)
    assert lines[1].startswith("missing: LPIPS needs torchvision") and "PSNR and SSIM work without it" in lines[1]
    assert lines[2].startswith("missing: rFID needs torch_fidelity") and "fails to import" in lines[2]
    assert "torchvision" in lines[2]


def test_psnr_and_ssim_equal_torchmetrics():
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    from revq_core.evaluation.metrics import psnr_per_image, ssim_per_image

    generator = torch.Generator().manual_seed(1)
    target = torch.rand(3, 3, 20, 24, generator=generator)
    pred = (target + 0.1 * torch.randn(target.shape, generator=generator)).clamp(0, 1)
    assert torch.equal(psnr_per_image(pred, target, "rgb"),
                       peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3)))
    assert torch.equal(ssim_per_image(pred, target, "rgb"),
                       structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none"))
    with pytest.raises(ValueError, match=r"at least 6 x 6 pixels"):
        ssim_per_image(pred[..., :5, :5], target[..., :5, :5])


# ---- 12. converting a file that is not the authors' checkpoint ---------------------------------------------

@pytest.mark.parametrize("content", ["garbage", "pickled_object"])
def test_convert_a_bogus_file_never_suggests_an_unsafe_load(tmp_path, content):
    source = tmp_path / "ckpt.pth"
    if content == "garbage":
        source.write_bytes(b"this is not a checkpoint\n" * 10)
    else:
        torch.save({"quantizer": {"embeddings": np.zeros(3)}}, source)  # a numpy array: not loadable tensors-only
    with pytest.raises(SystemExit) as exit_info:
        convert.main([str(source), str(tmp_path / "out")])
    message = str(exit_info.value.code)
    assert "ckpt.pth' is not a checkpoint in the authors' format" in message
    assert "expected a torch.save file of a dict {'quantizer'" in message
    assert "weights_only=False" not in message and "\n" not in message
    assert not (tmp_path / "out").exists()
    with pytest.raises(authors_format.CheckpointConversionError, match="not a checkpoint in the authors' format"):
        authors_format.convert_authors_checkpoint(source)
