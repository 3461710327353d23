"""Issue 26, sections 1-3: no file a user owns is overwritten, no wrong result without a word, one clear line for
each bad input. One test (or more) per case the issue lists; each failed on the code before the fix."""
import json
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from revq_core import convert, detokenize, evaluate, tokenize_images
from revq_core.data.codes import CodesFileError, load_codes, save_codes
from revq_core.data.images import ImageFolderDataset, ImageInputError, find_images, read_image
from revq_core.data.photos import PHOTO_CORPUS_DIR
from revq_core.modeling.revq import ReVQ
from revq_core.utils import files
from revq_core.utils.files import atomic_write_text


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A small ReVQ on the embedded VAE v2's (32, 8, 8) latent (128 x 128 images), trained on no data."""
    torch.manual_seed(0)
    model = ReVQ(latent_shape=(32, 8, 8), tokens_per_image=512, codes_per_group=16, rectifier="identity",
                 vae="embedded-v2")
    with torch.no_grad():
        model.quantizer.codebook.normal_()
    path = tmp_path_factory.mktemp("model") / "tiny"
    model.save_pretrained(path)
    return path


def _photos(folder: Path, count: int, size=(40, 30)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, photo in enumerate(sorted((PHOTO_CORPUS_DIR / "test").glob("*.jpg"))[:count]):
        with Image.open(photo) as image:
            image.convert("RGB").resize(size).save(folder / f"p{index}.png")
        paths.append(folder / f"p{index}.png")
    return paths


def _tokenize(inputs, out, model_dir, *extra):
    tokenize_images.main([*map(str, inputs), "--out", str(out), "--model", str(model_dir), "--no-progress", *extra])


# ---- 1. lost data ---------------------------------------------------------------------------------------------

def test_tokenize_never_replaces_an_input_or_an_earlier_codes_file(tiny_model_dir, tmp_path):
    photo = _photos(tmp_path / "imgs", 1)[0]
    before = photo.read_bytes()
    for extra in ((), ("--overwrite",)):
        with pytest.raises(ValueError, match="is one of the inputs"):
            _tokenize([photo], photo, tiny_model_dir, *extra)
    assert photo.read_bytes() == before
    _tokenize([photo], tmp_path / "c.npz", tiny_model_dir)
    written = (tmp_path / "c.npz").read_bytes()
    with pytest.raises(files.OutputExistsError, match="already exists; pass --overwrite"):
        _tokenize([photo], tmp_path / "c.npz", tiny_model_dir)
    assert (tmp_path / "c.npz").read_bytes() == written
    _tokenize([photo], tmp_path / "c.npz", tiny_model_dir, "--overwrite")


def test_detokenize_into_the_originals_folder_is_refused(tiny_model_dir, tmp_path):
    originals = _photos(tmp_path / "imgs", 2)
    before = [path.read_bytes() for path in originals]
    _tokenize([tmp_path / "imgs"], tmp_path / "c.npz", tiny_model_dir)
    with pytest.raises(files.OutputExistsError, match="already holds 2 of the 2 files.*--overwrite"):
        detokenize.main([str(tmp_path / "c.npz"), "--out", str(tmp_path / "imgs"), "--no-progress"])
    assert [path.read_bytes() for path in originals] == before
    detokenize.main([str(tmp_path / "c.npz"), "--out", str(tmp_path / "imgs"), "--no-progress", "--overwrite"])
    assert Image.open(originals[0]).size == (128, 128)  # replaced, as asked


@pytest.mark.parametrize("name", ["../victim.png", "sub/../../victim.png", "/ABSOLUTE/victim.png"])
def test_codes_names_cannot_escape_out(tiny_model_dir, tmp_path, name):
    _tokenize(_photos(tmp_path / "imgs", 1), tmp_path / "c.npz", tiny_model_dir)
    codes, _, meta = load_codes(tmp_path / "c.npz")
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    name = name.replace("/ABSOLUTE", str(tmp_path))
    save_codes(tmp_path / "evil.npz", codes, [name], **{key: meta[key] for key in (
        "model", "model_sha1", "tokens_per_image", "codes_per_group", "latent_shape", "image_size", "vae")})
    with pytest.raises(ValueError, match="not a plain relative path"):
        detokenize.main([str(tmp_path / "evil.npz"), "--out", str(tmp_path / "rec"), "--no-progress", "--overwrite"])
    assert victim.read_bytes() == b"precious"
    assert not (tmp_path / "rec").exists()


def test_evaluate_without_output_never_replaces_an_earlier_results_json(tmp_path, monkeypatch):
    _photos(tmp_path / "imgs", 2)
    monkeypatch.chdir(tmp_path)
    Path("results.json").write_text('{"earlier": true}')
    with pytest.raises(files.OutputExistsError, match="results.json already exists; pass --overwrite"):
        evaluate.main(["--vae-only", "--data", "imgs", "--no-lpips", "--no-inception", "--no-progress",
                       "--num-workers", "0"])
    assert json.loads(Path("results.json").read_text()) == {"earlier": True}


def test_convert_into_a_folder_holding_a_model_needs_overwrite(tmp_path, tiny_model_dir):
    import shutil

    dst = tmp_path / "dst"
    shutil.copytree(tiny_model_dir, dst)
    before = {path.name: path.read_bytes() for path in dst.iterdir()}
    with pytest.raises(SystemExit, match="already holds .*config.json, model.safetensors.*--overwrite"):
        convert.main([str(tmp_path / "ck.pth"), str(dst), "--preprocessor", str(tmp_path / "pre.pth")])
    assert {path.name: path.read_bytes() for path in dst.iterdir()} == before


def test_killed_detokenize_resumes_and_a_finished_one_is_refused(tiny_model_dir, tmp_path, monkeypatch):
    _tokenize(_photos(tmp_path / "imgs", 3), tmp_path / "c.npz", tiny_model_dir)
    rec = tmp_path / "rec"
    saved = []
    real_save = Image.Image.save

    def dying_save(self, file, *args, **kwargs):  # the third image: killed half-way through its write
        if len(saved) == 2:
            file.write(b"\x89PNG half")
            raise KeyboardInterrupt
        saved.append(file)
        return real_save(self, file, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        detokenize.main([str(tmp_path / "c.npz"), "--out", str(rec), "--no-progress", "--batch-size", "1"])
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert sorted(path.name for path in rec.iterdir()) == [files.MANIFEST, "p0.png", "p1.png"]  # no half PNG
    assert files.read_manifest(rec)["complete"] is False
    first = (rec / "p0.png").stat().st_mtime_ns
    detokenize.main([str(tmp_path / "c.npz"), "--out", str(rec), "--no-progress"])  # resumes
    assert (rec / "p0.png").stat().st_mtime_ns == first  # a finished file is kept
    assert Image.open(rec / "p2.png").size == (128, 128)
    manifest = files.read_manifest(rec)
    assert manifest["complete"] is True and manifest["files"] == ["p0.png", "p1.png", "p2.png"]
    with pytest.raises(files.OutputExistsError, match="already holds the finished decoding"):
        detokenize.main([str(tmp_path / "c.npz"), "--out", str(rec), "--no-progress"])


# ---- 2. wrong results without a word: images, layouts, codes ---------------------------------------------------

def test_hidden_folders_are_skipped_wherever_images_are_gathered(tmp_path):
    _photos(tmp_path / "imgs", 1)
    _photos(tmp_path / "imgs" / ".ipynb_checkpoints", 1)
    assert [name for name, _ in find_images([tmp_path / "imgs"])] == ["p0.png"]
    _photos(tmp_path / "classes" / "cat", 1)
    _photos(tmp_path / "classes" / "cat" / ".ipynb_checkpoints", 1)
    assert [path.name for path, _ in ImageFolderDataset(tmp_path / "classes").samples] == ["p0.png"]


def test_folder_layouts_find_every_image_or_refuse(tmp_path):
    _photos(tmp_path / "nested" / "cat", 1)
    _photos(tmp_path / "nested" / "dog" / "sub", 2)
    dataset = ImageFolderDataset(tmp_path / "nested")
    assert [(path.relative_to(tmp_path / "nested").as_posix(), label) for path, label in dataset.samples] == [
        ("cat/p0.png", 0), ("dog/sub/p0.png", 1), ("dog/sub/p1.png", 1)]
    _photos(tmp_path / "mixed", 4)
    _photos(tmp_path / "mixed" / "sub", 1)
    with pytest.raises(ValueError, match="4 image file.*at its top level.*beside 1 folder"):
        ImageFolderDataset(tmp_path / "mixed")
    with pytest.raises(ValueError, match="at its top level"):
        evaluate.main(["--vae-only", "--data", str(tmp_path / "mixed"), "--no-lpips", "--no-inception",
                       "--no-progress", "--num-workers", "0", "--output", str(tmp_path / "r.json")])


def _codes_file(tmp_path, codes, **changes):
    meta = dict(model="m", model_sha1="0" * 40, tokens_per_image=2, codes_per_group=16, latent_shape=(2, 1, 1),
                image_size=16, vae="embedded-v2")
    meta.update(changes)
    np.savez(tmp_path / "c.npz", codes=codes, names=np.array(["a"] * len(codes)),
             meta=np.array(json.dumps({"format": 1, **meta})))
    return tmp_path / "c.npz"


def test_float_codes_with_fractional_values_are_refused(tmp_path):
    with pytest.raises(CodesFileError, match="float64 codes with 1 non-integer value"):
        load_codes(_codes_file(tmp_path, np.array([[3.0, 4.7]])))
    assert load_codes(_codes_file(tmp_path, np.array([[3.0, 4.0]])))[0].tolist() == [[3, 4]]  # whole: fine


def test_codes_decode_only_with_the_vae_they_were_made_on(tiny_model_dir, tmp_path):
    _tokenize(_photos(tmp_path / "imgs", 1), tmp_path / "c.npz", tiny_model_dir)
    assert load_codes(tmp_path / "c.npz")[2]["vae_digest"]
    with pytest.raises(CodesFileError, match="made on the VAE 'embedded-v2'.*--vae embedded-v2, or pass --force"):
        detokenize.main([str(tmp_path / "c.npz"), "--out", str(tmp_path / "rec"), "--vae", "embedded", "--no-progress"])
    assert not (tmp_path / "rec").exists()
    detokenize.main([str(tmp_path / "c.npz"), "--out", str(tmp_path / "rec"), "--vae", "embedded-v2", "--no-progress"])


def test_evaluate_refuses_a_vae_other_than_the_models(tiny_model_dir, tmp_path, monkeypatch):
    _photos(tmp_path / "imgs", 1)
    monkeypatch.setattr(evaluate, "evaluate_image_folder", lambda *args, **kwargs: pytest.fail("evaluated"))
    with pytest.raises(ValueError, match="trained on the latents of the VAE 'embedded-v2'.*--force"):
        evaluate.main(["--model", str(tiny_model_dir), "--vae", "embedded", "--data", str(tmp_path / "imgs"),
                       "--output", str(tmp_path / "r.json"), "--no-progress"])


# ---- 3. unclear: one line naming the problem and the fix ------------------------------------------------------

def test_evaluate_output_that_is_a_folder_is_refused_before_the_work(tmp_path, monkeypatch):
    _photos(tmp_path / "imgs", 1)
    (tmp_path / "outdir").mkdir()
    monkeypatch.setattr(evaluate, "evaluate_image_folder", lambda *args, **kwargs: pytest.fail("evaluated"))
    with pytest.raises(IsADirectoryError, match="--output .*outdir is a folder; name the file"):
        evaluate.main(["--vae-only", "--data", str(tmp_path / "imgs"), "--output", str(tmp_path / "outdir")])


def _png_header_only(path: Path, width: int, height: int) -> Path:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)  # PIL's default (scripts/build_photo_corpus.py lifts it)
    (tmp_path / "imgs").mkdir()
    bomb = _png_header_only(tmp_path / "imgs" / "huge.png", 30000, 30000)
    with pytest.raises(ImageInputError, match="huge.png claims more pixels than PIL's limit"):
        read_image(bomb, 128)
    _photos(tmp_path / "imgs", 1)
    with pytest.warns(UserWarning, match="huge.png: claims more pixels"):
        dataset = ImageFolderDataset(tmp_path / "imgs")
    assert [path.name for path, _ in dataset.samples] == ["p0.png"]


def test_atomic_writes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600


def test_a_full_disk_during_a_checkpoint_write_says_so(tmp_path, monkeypatch):
    from shutil import _ntuple_diskusage as shutil_usage

    from revq_core.training.checkpoint import save_checkpoint

    save_checkpoint({"epoch": 0, "model": {}}, tmp_path / "checkpoint.pt")
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: shutil_usage(10**9, 10**9, 0))

    def full_disk(state, file):  # what torch.save raises when the disk fills up
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"no space left on device while writing .*checkpoint.pt.*free some space"):
        save_checkpoint({"epoch": 1, "model": {}}, tmp_path / "checkpoint.pt")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint.pt"]  # the previous one, no temporary


def test_train_cli_disk_full_and_bad_threads_are_one_line(tmp_path, monkeypatch):
    from revq_core import train as train_cli

    with pytest.raises(SystemExit, match="^error: num_threads") as raised:
        train_cli.main(["--preset", "tiny", "--threads", "-3", "--output", str(tmp_path / "run")])
    assert "\n" not in str(raised.value)

    def full_disk(*args, **kwargs):
        raise files.DiskFullError(28, "no space left on device while writing run/checkpoint.pt")

    monkeypatch.setattr(train_cli, "train", full_disk)
    monkeypatch.setattr("revq_core.data.latents.embedded_latents", lambda splits: (torch.zeros(1), None))
    with pytest.raises(SystemExit, match="no space left on device"):
        train_cli.main(["--preset", "tiny", "--output", str(tmp_path / "run")])


def test_a_nan_learning_rate_is_refused_before_any_claim_of_a_checkpoint():
    from revq_core.training.config import preset

    for value in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="quantizer_lr") as raised:
            preset("tiny", quantizer_lr=value)
        assert "intact" not in str(raised.value)


def test_divergence_without_a_checkpoint_does_not_claim_one_is_intact(tmp_path, monkeypatch):
    from revq_core.training import trainer
    from revq_core.training.config import preset

    def diverge(*args, **kwargs):
        raise trainer.TrainingDiverged("loss became nan")

    monkeypatch.setattr(trainer, "train_step", diverge)
    with pytest.raises(trainer.TrainingDiverged, match="no checkpoint was written yet"):
        trainer.train(preset("tiny", epochs=1), torch.randn(64, 32, 8, 8), output_dir=tmp_path / "run",
                      progress=False)


def test_from_pretrained_of_a_missing_run_folder_says_it_is_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    monkeypatch.setattr("huggingface_hub.hf_hub_download",
                        lambda *args, **kwargs: pytest.fail("asked the Hub for a local path"))
    with pytest.raises(FileNotFoundError, match="'runs/does-not-exist' does not exist: the folder 'runs' holds no"):
        ReVQ.from_pretrained("runs/does-not-exist")
    from revq_core.autoencoders.loading import VAENotFoundError, load_vae

    with pytest.raises(VAENotFoundError, match="'runs/vae' does not exist: the folder 'runs' holds no"):
        load_vae("runs/vae")


def test_checkpoint_pt_that_is_a_folder_is_refused_before_training(tmp_path, monkeypatch):
    from revq_core.training import trainer
    from revq_core.training.config import preset
    from revq_core.training.run_dir import RunDirectoryError

    (tmp_path / "run" / "checkpoint.pt").mkdir(parents=True)
    monkeypatch.setattr(trainer, "train_epoch", lambda *args, **kwargs: pytest.fail("trained an epoch"))
    with pytest.raises(RunDirectoryError, match="checkpoint.pt is a folder, where training writes its checkpoint.pt"):
        trainer.train(preset("tiny", epochs=1), torch.randn(64, 32, 8, 8), output_dir=tmp_path / "run", resume=True,
                      progress=False)


def test_tokenize_on_cuda_without_cuda_is_train_s_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    photo = _photos(tmp_path / "imgs", 1)[0]
    with pytest.raises(RuntimeError, match="device 'cuda' was asked for, but CUDA is not available"):
        tokenize_images.main([str(photo), "--out", str(tmp_path / "c.npz"), "--device", "cuda", "--no-progress"])


def test_a_npy_without_statistics_is_not_called_interrupted(tmp_path):
    from revq_core.data.latents import latent_cache_statistics, load_latent_cache

    np.save(tmp_path / "x.npy", np.zeros((4, 32, 8, 8), np.float32))
    for read in (load_latent_cache, latent_cache_statistics):
        with pytest.raises(RuntimeError, match="no statistics file x.npy.stats.npz and no progress file") as raised:
            read(tmp_path / "x.npy")
        assert "interrupted" not in str(raised.value)


def test_negative_num_workers_is_one_line(tmp_path):
    _photos(tmp_path / "imgs", 1)
    with pytest.raises(ValueError, match=r"num_workers \(--num-workers\) must be 0"):
        evaluate.main(["--vae-only", "--data", str(tmp_path / "imgs"), "--num-workers", "-1", "--no-lpips",
                       "--no-inception", "--no-progress", "--output", str(tmp_path / "r.json")])


def test_truncated_vae_weights_are_named_with_the_fix(tmp_path):
    import shutil

    from revq_core.autoencoders.embedded import embedded_vae_path
    from revq_core.autoencoders.loading import load_vae

    shutil.copytree(embedded_vae_path("embedded-v2"), tmp_path / "vae")
    weights = next((tmp_path / "vae").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100_000])
    with pytest.raises(OSError, match=r"safetensors cannot be read .*truncated or damaged; restore them"):
        load_vae(tmp_path / "vae")


# ---- 2. wrong results without a word: latent statistics, caches, resume ---------------------------------------

class _ConvVAE(torch.nn.Module):
    """Images (n, 3, 32, 32) -> latents (n, 32, 8, 8): a seeded stride-4 convolution."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 32, 4, stride=4)

    def encode(self, images):
        return self.conv(images)


def _images(count, seed):
    return torch.rand(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_statistics_of_another_cache_are_refused(tmp_path):
    import shutil

    from revq_core.data.latents import encode_to_cache, latent_cache_statistics

    for name, seed in (("a", 0), ("b", 1)):  # the same count: only the contents tell them apart
        encode_to_cache(_ConvVAE(), _images(8, seed), tmp_path / f"{name}.npy", batch_size=4, progress=False)
    latent_cache_statistics(tmp_path / "a.npy")
    shutil.copy(tmp_path / "b.npy.stats.npz", tmp_path / "a.npy.stats.npz")
    with pytest.raises(ValueError, match="a.npy.stats.npz belongs to another cache than .*a.npy"):
        latent_cache_statistics(tmp_path / "a.npy")


def test_zero_variance_and_constant_latents_are_refused(tmp_path):
    from revq_core.modeling.normalizer import LatentNormalizer
    from revq_core.training.config import preset
    from revq_core.training.trainer import train

    var = torch.ones(32, 8, 8)
    var[3, 2, 1] = 0.0
    with pytest.raises(ValueError, match=r"1 of the 2048 latent dimensions have \(near\) zero variance.*\(3, 2, 1\)"):
        LatentNormalizer().set_statistics(torch.zeros(32, 8, 8), var)
    with pytest.raises(ValueError, match="2048 of the 2048 latent dimensions have"):
        train(preset("tiny", epochs=1), torch.full((64, 32, 8, 8), 0.5), progress=False)


def test_a_safetensors_cache_of_another_vae_is_refused(tmp_path):
    from revq_core.autoencoders.loading import load_vae
    from revq_core.data.latents import encode_image_folder

    _photos(tmp_path / "imgs", 2)
    cache = tmp_path / "latents.safetensors"
    first = encode_image_folder(load_vae("embedded"), tmp_path / "imgs", image_size=64, num_workers=0,
                                cache_path=cache, progress=False)
    assert torch.equal(encode_image_folder(load_vae("embedded"), tmp_path / "imgs", image_size=64, num_workers=0,
                                           cache_path=cache, progress=False), first)  # the same: reused
    with pytest.raises(ValueError, match="latents.safetensors was written with another VAE"):
        encode_image_folder(load_vae("embedded-v2"), tmp_path / "imgs", image_size=64, num_workers=0,
                            cache_path=cache, progress=False)
    _photos(tmp_path / "imgs", 2, size=(50, 30))  # other files under the same names
    with pytest.raises(ValueError, match="written with other images"):
        encode_image_folder(load_vae("embedded"), tmp_path / "imgs", image_size=64, num_workers=0,
                            cache_path=cache, progress=False)


def test_an_interrupted_cache_resumed_with_other_images_is_refused(tmp_path):
    from revq_core.data.latents import encode_to_cache

    class Dying(torch.utils.data.Dataset):
        def __init__(self, images, fail_at=None):
            self.images, self.fail_at = images, fail_at

        def __len__(self):
            return len(self.images)

        def __getitem__(self, index):
            if index == self.fail_at:
                raise KeyboardInterrupt
            return self.images[index]

    path = tmp_path / "train.npy"
    with pytest.raises(KeyboardInterrupt):
        encode_to_cache(_ConvVAE(), Dying(_images(16, 0), fail_at=9), path, batch_size=2, flush_every=1,
                        progress=False)
    with pytest.raises(ValueError, match="train.npy was started with other images than these"):
        encode_to_cache(_ConvVAE(), Dying(_images(16, 1)), path, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="was started with another VAE"):
        encode_to_cache(_ConvVAE(seed=5), Dying(_images(16, 0)), path, batch_size=2, progress=False)
    encode_to_cache(_ConvVAE(), Dying(_images(16, 0)), path, batch_size=2, progress=False)  # the same: resumes


def test_prepare_data_keys_its_cache_by_the_folder(tmp_path, monkeypatch):
    from revq_core import pipeline
    from revq_core.autoencoders.loading import load_vae

    monkeypatch.setenv("REVQ_CACHE", str(tmp_path / "cache"))
    for parent, size in (("A", (40, 30)), ("B", (30, 40))):
        for split in ("train", "val"):
            _photos(tmp_path / parent / "data" / split / "c", 2, size=size)
    vae = load_vae("embedded")
    a = pipeline.prepare_data(vae, tmp_path / "A" / "data", num_eval_images=1, image_size=64, progress=False)
    b = pipeline.prepare_data(vae, tmp_path / "B" / "data", num_eval_images=1, image_size=64, progress=False)
    assert not torch.equal(a.train_latents, b.train_latents)


def _fingerprint_run(output_dir, train_latents, val_latents, **kwargs):
    from revq_core.training.config import preset
    from revq_core.training.trainer import train

    return train(preset("tiny", epochs=2), train_latents, val_latents, output_dir=output_dir, progress=False,
                 **kwargs)


def test_resume_on_permuted_latents_or_another_validation_set_is_refused(tmp_path):
    from revq_core.training.checkpoint import CheckpointError

    generator = torch.Generator().manual_seed(0)
    train, val = 1 + 2 * torch.randn(64, 32, 8, 8, generator=generator), torch.randn(16, 32, 8, 8, generator=generator)
    _fingerprint_run(tmp_path, train, val, stop_after=1)
    flat = train.reshape(64, -1)
    order = torch.stack([torch.randperm(64, generator=generator) for _ in range(flat.shape[1])], dim=1)
    permuted = torch.gather(flat, 0, order).reshape(train.shape)  # each dimension shuffled across samples
    with pytest.raises(CheckpointError, match="training latents' contents differ"):
        _fingerprint_run(tmp_path, permuted, val, resume=True)
    with pytest.raises(CheckpointError, match="validation latents differ"):
        _fingerprint_run(tmp_path, train, 3 * val, resume=True)
    _, history = _fingerprint_run(tmp_path, train.clone(), val.clone(), resume=True)
    assert history.epoch == [0, 1]


def test_a_checkpoint_without_the_digests_still_resumes_bit_identically(tmp_path):
    from revq_core.training.checkpoint import load_checkpoint, save_checkpoint

    generator = torch.Generator().manual_seed(0)
    train, val = 1 + 2 * torch.randn(64, 32, 8, 8, generator=generator), torch.randn(16, 32, 8, 8, generator=generator)
    whole, _ = _fingerprint_run(None, train, val)
    _fingerprint_run(tmp_path, train, val, stop_after=1)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    del state["data"]["train_digest"], state["data"]["val_digest"]  # as written before the digests existed
    save_checkpoint(state, tmp_path / "checkpoint.pt")
    resumed, _ = _fingerprint_run(tmp_path, train, val, resume=True)
    for name, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
