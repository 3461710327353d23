"""Sampling images (python -m revq_core.generate, revq_core/generation/generate.py) and evaluating a prior
(revq_core/generation/evaluation.py): PNGs + grid + codes written offline, bad input refused with nothing
written, the unigram baseline, ADM's sample file, and the gFID error path without torch-fidelity's weights."""
import math

import numpy as np
import pytest
import torch

from revq_core.data.codes import load_codes, save_codes, weights_sha1
from revq_core.generation import TokenPrior
from revq_core.generation.evaluation import (FidelityUnavailable, codes_file_bits_per_token, fidelity_metrics,
                                             unigram_bits_per_token, write_adm_npz)
from revq_core.generation.prior import PriorInputError


@pytest.fixture(scope="module")
def tokenizer():
    from revq_core.modeling.loading import load_tokenizer

    return load_tokenizer()[0]


def _prior(tokenizer, directory, num_classes=0, sha1=None):
    torch.manual_seed(0)
    meta = {"model": "embedded", "model_sha1": sha1 or weights_sha1(tokenizer.state_dict()), "vae": "embedded-v2"}
    prior = TokenPrior.for_codebooks(tokenizer.quantizer.codebook.detach().half().float(), num_classes=num_classes,
                                     width=16, depth=1, heads=2, score_dim=8)
    prior.tokenizer.update(meta)
    prior.save_pretrained(directory)
    return directory


def test_generate_writes_pngs_a_grid_and_the_codes_file(tmp_path, tokenizer):
    from PIL import Image

    from revq_core.generate import main

    prior = _prior(tokenizer, tmp_path / "prior")
    main(["--out", str(tmp_path / "samples"), "--prior", str(prior), "--num-images", "2", "--top-k", "50",
          "--seed", "1"])
    assert sorted(path.name for path in (tmp_path / "samples").iterdir()) == [
        "codes.npz", "grid.png", "sample_00000.png", "sample_00001.png"]
    assert Image.open(tmp_path / "samples" / "grid.png").size == (256, 128)
    codes, _, meta = load_codes(tmp_path / "samples" / "codes.npz")
    assert codes.shape == (2, 512) and meta["model_sha1"] == weights_sha1(tokenizer.state_dict())


@pytest.mark.parametrize("case", ["existing folder", "class out of range", "class for unconditional",
                                  "other tokenizer"])
def test_generate_refuses_bad_input_and_writes_nothing(tmp_path, tokenizer, case, capsys):
    from revq_core.generate import main
    from revq_core.utils.checks import run_cli

    out = tmp_path / "samples"
    arguments = ["--out", str(out), "--num-images", "1"]
    if case == "existing folder":
        out.mkdir()
        (out / "sample_00000.png").write_bytes(b"mine")
        prior, message = _prior(tokenizer, tmp_path / "prior"), "pass --overwrite"
    elif case == "class out of range":
        prior, message = _prior(tokenizer, tmp_path / "prior", num_classes=3), "class index 3 is out of range"
        arguments += ["--class", "3"]
    elif case == "class for unconditional":
        prior, message = _prior(tokenizer, tmp_path / "prior"), "this prior is unconditional"
        arguments += ["--class", "0"]
    else:
        prior, message = _prior(tokenizer, tmp_path / "prior", sha1="b" * 40), "other weights"
    assert run_cli(main, arguments + ["--prior", str(prior)]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    if case == "existing folder":
        assert [path.name for path in out.iterdir()] == ["sample_00000.png"]
        assert (out / "sample_00000.png").read_bytes() == b"mine"
    else:
        assert not out.exists()


def test_scoring_a_codes_file_checks_its_tokenizer_ids_labels_and_size(tmp_path, tokenizer):
    prior = TokenPrior.from_pretrained(_prior(tokenizer, tmp_path / "prior", num_classes=2))
    sha1 = weights_sha1(tokenizer.state_dict())
    codes = torch.randint(2048, (3, 512))

    def write(name, ids, model_sha1=sha1, labels=None, count=3):
        save_codes(tmp_path / name, ids, [str(index) for index in range(count)], model="embedded",
                   model_sha1=model_sha1, tokens_per_image=512, codes_per_group=2048, latent_shape=(32, 8, 8),
                   image_size=128, vae="embedded-v2", labels=labels)
        return tmp_path / name

    assert math.isfinite(codes_file_bits_per_token(prior, write("good.npz", codes, labels=torch.tensor([0, 1, 1]))))
    with pytest.raises(PriorInputError, match="sha1"):
        codes_file_bits_per_token(prior, write("other.npz", codes, model_sha1="c" * 40, labels=torch.zeros(3)))
    with pytest.raises(PriorInputError, match="needs labels|pass labels"):
        codes_file_bits_per_token(prior, write("unlabelled.npz", codes))
    with pytest.raises(PriorInputError, match="out of range"):
        codes_file_bits_per_token(prior, write("far.npz", codes, labels=torch.tensor([0, 1, 2])))
    bad = codes.clone()
    bad[0, 0] = 2048
    with pytest.raises(PriorInputError, match=r"outside \[0, 2048\)"):
        codes_file_bits_per_token(prior, write("outside.npz", bad, labels=torch.zeros(3)))
    with pytest.raises(PriorInputError, match="no images"):
        codes_file_bits_per_token(prior, write("empty.npz", codes[:0], labels=torch.zeros(0), count=0))


def test_the_unigram_baseline_is_the_smoothed_per_position_frequency():
    train = torch.tensor([[0, 1], [0, 1], [0, 0]])
    held_out = torch.tensor([[0, 1]])
    # position 0: id 0 seen 3 times of 3 -> (3 + 1) / (3 + 2); position 1: id 1 seen 2 of 3 -> 3 / 5
    expected = -(math.log2(4 / 5) + math.log2(3 / 5)) / 2
    assert unigram_bits_per_token(train, held_out, 2) == pytest.approx(expected)
    assert unigram_bits_per_token(np.asarray(train, dtype=np.uint16), held_out, 2) == pytest.approx(expected)


def test_samples_are_written_in_adms_format(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
    with np.load(write_adm_npz(images, tmp_path / "samples.npz")) as file:
        assert file.files == ["arr_0"] and np.array_equal(file["arr_0"], images)
    with pytest.raises(ValueError, match="uint8 images"):
        write_adm_npz(images.astype(np.float32), tmp_path / "bad.npz")


def test_gfid_without_torch_fidelity_or_its_weights_names_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(FidelityUnavailable, match="torch-fidelity|Inception weights") as error:
        fidelity_metrics(tmp_path, tmp_path)
    assert str(tmp_path / "torch_home") in str(error.value)


def test_the_shipped_prior_generates_offline_with_the_shipped_tokenizer_and_beats_its_unigram(tmp_path):
    import json

    from revq_core.generate import main
    from revq_core.generation.prior import EMBEDDED_PRIOR_DIR

    prior = TokenPrior.from_pretrained()
    quality = json.loads((EMBEDDED_PRIOR_DIR / "quality.json").read_text())
    assert quality["held_out_bits_per_token"] < quality["unigram_bits_per_token"] - 0.3
    assert prior.config.order == quality["order"] == "position" and prior.tokenizer["model"] == "embedded"
    main(["--out", str(tmp_path / "samples"), "--num-images", "2", "--seed", "0"])
    codes, _, _ = load_codes(tmp_path / "samples" / "codes.npz")
    assert torch.equal(codes, prior.sample(2, seed=0))  # the CLI's defaults: temperature 1, no top-k / top-p


def test_paper_scale_samples_go_to_adms_npz_with_classes_cycled(tmp_path, tokenizer):
    from revq_core.generation.evaluation import sample_to_adm_npz

    prior = TokenPrior.from_pretrained(_prior(tokenizer, tmp_path / "prior", num_classes=2))
    path = sample_to_adm_npz(prior, tokenizer, tmp_path / "samples.npz", num_images=3, batch_size=2, progress=False,
                             top_k=10)
    with np.load(path) as file:
        assert file["arr_0"].shape == (3, 128, 128, 3) and file["arr_0"].dtype == np.uint8
