"""The tokenizer shipped in data/embedded_tokenizer: loads offline in one line, keeps its documented quality,
and is what the command line uses by default."""
import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from helpers import REPO_ROOT
from revq_core import detokenize, tokenize_images
from revq_core.autoencoders import load_vae
from revq_core.data.codes import load_codes
from revq_core.data.photos import PHOTO_CORPUS_DIR, build_photo_dataset
from revq_core.modeling.revq import ReVQ
from revq_core.pipeline import evaluate_tokenizer

TOKENIZER = REPO_ROOT / "data" / "embedded_tokenizer"
pytestmark = pytest.mark.skipif(not (TOKENIZER / "quality.json").is_file(),
                                reason="data/embedded_tokenizer is absent: python scripts/train_embedded_tokenizer.py")


def test_shipped_tokenizer_loads_in_one_line_and_keeps_its_quality():
    model = ReVQ.from_pretrained(TOKENIZER)
    assert (model.tokens_per_image, model.quantizer.code_dim, model.vae_name) == (512, 4, "embedded-v2")
    assert sum(path.stat().st_size for path in TOKENIZER.iterdir()) < 30 * 2**20
    quality = json.loads((TOKENIZER / "quality.json").read_text())
    assert quality["weights_sha1"] == hashlib.sha1((TOKENIZER / "model.safetensors").read_bytes()).hexdigest(), (
        "quality.json was measured on other weights: rerun `python scripts/train_embedded_tokenizer.py --evaluate`")
    images = build_photo_dataset("test", corpus="v2")[:64]
    results, _ = evaluate_tokenizer(model, load_vae("embedded-v2"), images)
    documented = quality["test_first_64"]
    for key in ("paper_psnr", "psnr_y", "psnr_rgb"):
        assert abs(results["revq"][key] - documented["tokenizer"][key]) < 0.1, key
        assert abs(results["vae"][key] - documented["vae"][key]) < 0.1, key
    assert results["revq"]["paper_psnr"] < results["vae"]["paper_psnr"]  # tokens cost something, never nothing


def test_the_command_line_uses_it_by_default(tmp_path):
    photo = sorted((PHOTO_CORPUS_DIR / "test").glob("*.jpg"))[0]
    tokenize_images.main([str(photo), "--out", str(tmp_path / "codes.npz"), "--no-progress"])
    codes, names, meta = load_codes(tmp_path / "codes.npz")
    assert meta["model"] == "embedded" and meta["image_size"] == 128 and codes.shape == (1, 512)
    with np.load(tmp_path / "codes.npz") as file:
        assert file["codes"].dtype == np.uint16
    detokenize.main([str(tmp_path / "codes.npz"), "--out", str(tmp_path / "out"), "--no-progress"])
    assert Image.open((tmp_path / "out" / names[0]).with_suffix(".png")).size == (128, 128)
