"""The tokenizer command lines: images -> codes file -> images, and their one-line errors."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from revq_core import detokenize, tokenize_images
from revq_core.autoencoders.loading import load_vae
from revq_core.data.codes import CodesFileError, load_codes, save_codes
from revq_core.data.images import ImageInputError, find_images, pil_to_tensor
from revq_core.data.photos import PHOTO_CORPUS_DIR
from revq_core.modeling import loading
from revq_core.modeling.revq import ReVQ

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A small ReVQ on the default embedded VAE's (32, 8, 8) latent (128 x 128 images), saved with save_pretrained."""
    torch.manual_seed(0)
    model = ReVQ(latent_shape=(32, 8, 8), tokens_per_image=512, codes_per_group=16, rectifier="identity",
                 vae="embedded-v2")
    with torch.no_grad():
        model.quantizer.codebook.normal_()
    path = tmp_path_factory.mktemp("model") / "tiny"
    model.save_pretrained(path)
    return path


@pytest.fixture
def image_folder(tmp_path):
    """Photos of several sizes and aspect ratios (PNG and JPEG, one in a subfolder) and a text file."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    photos = sorted((PHOTO_CORPUS_DIR / "test").glob("*.jpg"))[:3]
    with Image.open(photos[0]) as image:
        image.convert("RGB").resize((90, 60)).save(folder / "wide.png")
    with Image.open(photos[1]) as image:
        image.convert("RGB").resize((50, 120)).save(folder / "sub" / "tall.jpg", quality=95)
    with Image.open(photos[2]) as image:
        image.convert("L").save(folder / "gray.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_round_trip_matches_the_model(tiny_model_dir, image_folder, tmp_path):
    codes_path = tmp_path / "codes.npz"
    tokenize_images.main([str(image_folder), "--out", str(codes_path), "--model", str(tiny_model_dir), "--no-progress"])
    with np.load(codes_path, allow_pickle=False) as file:
        assert file["codes"].dtype == np.uint16 and file["codes"].shape == (3, 512)
    codes, names, meta = load_codes(codes_path)
    assert names == ["gray.png", "sub/tall.jpg", "wide.png"]  # recursive, sorted, the text file ignored
    assert meta["tokens_per_image"] == 512 and meta["codes_per_group"] == 16 and meta["image_size"] == 128

    model = ReVQ.from_pretrained(tiny_model_dir).attach_vae(load_vae())
    expected = []
    for name in names:
        with Image.open(image_folder / name) as image:
            expected.append(pil_to_tensor(image, 128))
    assert torch.equal(codes, model.encode_images(torch.stack(expected)))

    out = tmp_path / "decoded"
    detokenize.main([str(codes_path), "--out", str(out), "--no-progress"])  # the model named in the file
    decoded = model.decode_codes(codes)
    for name, image in zip(names, decoded):
        written = np.asarray(Image.open((out / name).with_suffix(".png")))
        assert written.shape == (128, 128, 3)
        reference = ((image.permute(1, 2, 0) + 1) / 2 * 255).round().numpy()
        assert np.abs(written.astype(float) - reference).max() <= 1


def test_codes_of_another_model_are_refused(tiny_model_dir, image_folder, tmp_path):
    codes_path = tmp_path / "codes.npz"
    tokenize_images.main([str(image_folder / "wide.png"), "--out", str(codes_path), "--model", str(tiny_model_dir),
                   "--no-progress"])
    other = ReVQ(latent_shape=(32, 8, 8), tokens_per_image=512, codes_per_group=32, rectifier="identity")
    other.save_pretrained(tmp_path / "other_k")
    with pytest.raises(CodesFileError, match="codes_per_group = 16.*--model"):
        detokenize.main([str(codes_path), "--out", str(tmp_path / "x"), "--model", str(tmp_path / "other_k")])
    retrained = ReVQ.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        retrained.quantizer.codebook.add_(1.0)
    retrained.save_pretrained(tmp_path / "retrained")
    with pytest.raises(CodesFileError, match="other weights.*--force"):
        detokenize.main([str(codes_path), "--out", str(tmp_path / "x"), "--model", str(tmp_path / "retrained")])
    detokenize.main([str(codes_path), "--out", str(tmp_path / "x"), "--model", str(tmp_path / "retrained"),
                     "--force", "--no-progress"])
    assert (tmp_path / "x" / "wide.png").is_file()


def test_bad_inputs_get_one_line_errors(tiny_model_dir, image_folder, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(ImageInputError, match="holds no image files"):
        find_images([empty])
    with pytest.raises(ImageInputError, match="does not exist"):
        find_images([tmp_path / "nowhere"])
    with pytest.raises(ImageInputError, match="same name"):
        find_images([image_folder / "wide.png", image_folder / "sub" / ".." / "wide.png"])
    corrupt = image_folder / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    args = [str(image_folder), "--out", str(tmp_path / "c.npz"), "--model", str(tiny_model_dir), "--no-progress"]
    with pytest.raises(ImageInputError, match="broken.jpg is not a readable image.*--skip-unreadable"):
        tokenize_images.main(args)
    assert not (tmp_path / "c.npz").exists()  # nothing half-written
    tokenize_images.main(args + ["--skip-unreadable"])
    assert "broken.jpg" not in load_codes(tmp_path / "c.npz")[1]
    (tmp_path / "fake.npz").write_bytes(b"not a zip")
    with pytest.raises(CodesFileError, match="not a codes file"):
        load_codes(tmp_path / "fake.npz")


def test_missing_shipped_tokenizer_says_how_to_restore(monkeypatch, tmp_path, image_folder):
    monkeypatch.setattr(loading, "EMBEDDED_TOKENIZER_DIR", tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="git checkout -- data/embedded_tokenizer"):
        tokenize_images.main([str(image_folder), "--out", str(tmp_path / "c.npz")])


def test_wide_codebooks_are_stored_as_int32(tmp_path):
    codes = torch.tensor([[0, 70000], [262143, 5]])
    save_codes(tmp_path / "c.npz", codes, ["a", "b"], model="m", model_sha1="0" * 40, tokens_per_image=2,
               codes_per_group=262144, latent_shape=(2, 1, 1), image_size=16, vae="v")
    with np.load(tmp_path / "c.npz") as file:
        assert file["codes"].dtype == np.int32
    assert torch.equal(load_codes(tmp_path / "c.npz")[0], codes)


def test_command_line_error_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "revq_core.tokenize_images", str(tmp_path / "nowhere.png"),
                             "--out", str(tmp_path / "c.npz")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'nowhere.png'} does not exist; pass image "
                                                  f"files or folders of images."]
