"""Training a token prior (revq_core/generation/train_prior.py, python -m revq_core.train_prior): exact resume,
the run directory rules, the saved prior round-trips, the presets, the schedule, and bad input refused with
nothing written."""
import json
import math

import numpy as np
import pytest
import torch

from revq_core.data.codes import save_codes
from revq_core.generation import TokenPrior
from revq_core.generation.prior import PriorInputError
from revq_core.generation.train_prior import PRIOR_PRESETS, build_prior, lr_lambda, train_prior
from revq_core.training.run_dir import RunDirectoryError

TOKENS, CODES = 16, 8
CONFIG = PRIOR_PRESETS["tiny"].replace(architecture={"width": 32, "depth": 1, "heads": 2, "score_dim": 16},
                                       epochs=3, batch_size=8, steps_per_epoch=3, warmup_steps=2, eval_images=16)
META = {"model": "test", "model_sha1": "a" * 40, "tokens_per_image": TOKENS, "codes_per_group": CODES,
        "latent_shape": [32, 8, 8], "vae": "none"}


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(CODES, (64, TOKENS), generator=generator)
    codes[:, 1::2] = codes[:, ::2]  # every odd token repeats the one before: learnable
    return codes, torch.randn(TOKENS, CODES, 4, generator=generator)


def test_an_interrupted_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, data):
    codes, codebooks = data
    whole, history = train_prior(codes, CONFIG, codebooks, META, output_dir=tmp_path / "whole", progress=False)
    train_prior(codes, CONFIG, codebooks, META, output_dir=tmp_path / "parts", stop_after=1, progress=False)
    assert not (tmp_path / "parts" / "model").exists()
    resumed, resumed_history = train_prior(codes, CONFIG, codebooks, META, output_dir=tmp_path / "parts",
                                           resume=True, progress=False)
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert resumed_history.held_out_bits == history.held_out_bits and len(history.epoch) == 3
    saved = json.loads((tmp_path / "parts" / "history.json").read_text())
    assert saved["unigram_bits"][0] == pytest.approx(history.unigram_bits[0])


def test_the_run_directory_is_refused_without_resume_or_overwrite(tmp_path, data):
    codes, codebooks = data
    config = CONFIG.replace(epochs=1)
    train_prior(codes, config, codebooks, META, output_dir=tmp_path, progress=False)
    with pytest.raises(RunDirectoryError, match="already holds a training run"):
        train_prior(codes, config, codebooks, META, output_dir=tmp_path, progress=False)
    train_prior(codes, config, codebooks, META, output_dir=tmp_path, overwrite=True, progress=False)


def test_the_saved_prior_round_trips_with_its_codebooks_and_tokenizer_record(tmp_path, data):
    codes, codebooks = data
    prior, _ = train_prior(codes, CONFIG.replace(epochs=1), codebooks, META, output_dir=tmp_path, progress=False)
    loaded = TokenPrior.from_pretrained(tmp_path / "model")
    assert loaded.tokenizer["model_sha1"] == "a" * 40
    assert loaded.bits_per_token(codes[:8]) == prior.bits_per_token(codes[:8])
    assert torch.equal(loaded.sample(2, seed=3), prior.sample(2, seed=3))
    with pytest.raises(FileNotFoundError, match="no token prior"):
        TokenPrior.from_pretrained(tmp_path)


def test_the_schedule_warms_up_linearly_then_decays_by_a_cosine():
    factor = lr_lambda(CONFIG.replace(warmup_steps=4, min_lr_fraction=0.1), 14)
    assert [factor(step) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factor(14) == pytest.approx(0.1)


def test_the_paper_scale_preset_is_llamagen_b_like():
    with torch.device("meta"):
        prior = build_prior(PRIOR_PRESETS["imagenet_b"], torch.empty(256, 262_144, 8), num_classes=1000,
                            tokenizer={"tokens_per_image": 256})
    assert 80e6 < sum(parameter.numel() for parameter in prior.parameters()) < 120e6


def test_a_class_conditional_prior_trains_and_samples_one_class(tmp_path, data):
    codes, codebooks = data
    labels = torch.arange(64) % 2
    prior, history = train_prior(codes, CONFIG.replace(epochs=1), codebooks, {**META, "class_names": ["a", "b"]},
                                 labels=labels, progress=False)
    assert prior.config.num_classes == 2 and math.isfinite(history.held_out_bits[0])
    assert prior.sample(2, torch.tensor([1, 1]), cfg_scale=2.0).shape == (2, TOKENS)


@pytest.mark.parametrize("case", ["ids outside K", "empty", "labels missing", "label out of range"])
def test_bad_training_input_is_one_clear_error_and_nothing_is_written(tmp_path, data, case):
    codes, codebooks = data
    labels, meta = None, META
    if case == "ids outside K":
        codes = codes.clone()
        codes[3, 5] = CODES
        message = r"outside \[0, 8\)"
    elif case == "empty":
        codes, message = codes[:0], "holds no images"
    elif case == "labels missing":
        meta, message = {**META, "class_names": ["a", "b"]}, "needs labels"
    else:
        meta, labels, message = {**META, "class_names": ["a", "b"]}, torch.arange(64) % 3, "out of range"
    with pytest.raises(PriorInputError, match=message):
        train_prior(codes, CONFIG, codebooks, meta, labels=labels, num_classes=2 if labels is None and
                    case == "labels missing" else None, output_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_the_command_line_trains_from_a_codes_file(tmp_path, data, capsys):
    from revq_core.train_prior import main

    codes, codebooks = data
    save_codes(tmp_path / "ids.npz", codes, [str(index) for index in range(64)], model="test",
               model_sha1="a" * 40, tokens_per_image=TOKENS, codes_per_group=CODES, latent_shape=(32, 8, 8),
               image_size=128, vae="none")
    from safetensors.torch import save_file
    save_file({"codebooks": codebooks}, str(tmp_path / "ids.codebooks.safetensors"))
    main(["--codes", str(tmp_path / "ids.npz"), "--out", str(tmp_path / "run"), "--preset", "tiny", "--epochs", "1",
          "--batch-size", "8", "--steps-per-epoch", "2", "--width", "32", "--depth", "1", "--no-progress"])
    assert "bits per token (unigram baseline" in capsys.readouterr().out
    assert TokenPrior.from_pretrained(tmp_path / "run" / "model").config.width == 32
    assert np.load(tmp_path / "ids.npz")["codes"].dtype == np.uint16


@pytest.mark.parametrize("case", ["empty", "no codebooks", "other tokenizer held out"])
def test_the_command_line_refuses_bad_codes_in_one_line_and_writes_nothing(tmp_path, data, capsys, case):
    from safetensors.torch import save_file

    from revq_core.train_prior import main
    from revq_core.utils.checks import run_cli

    codes, codebooks = data

    def write(name, ids, sha1="a" * 40, with_codebooks=True):
        save_codes(tmp_path / name, ids, [str(index) for index in range(len(ids))], model="test", model_sha1=sha1,
                   tokens_per_image=TOKENS, codes_per_group=CODES, latent_shape=(32, 8, 8), image_size=128,
                   vae="none")
        if with_codebooks:
            save_file({"codebooks": codebooks}, str(tmp_path / name.replace(".npz", ".codebooks.safetensors")))
        return str(tmp_path / name)

    arguments = ["--out", str(tmp_path / "run"), "--preset", "tiny", "--no-progress"]
    if case == "empty":
        arguments += ["--codes", write("empty.npz", codes[:0])]
        message = "holds no images"
    elif case == "no codebooks":
        arguments += ["--codes", write("bare.npz", codes, with_codebooks=False)]
        message = "no codebooks"
    else:
        arguments += ["--codes", write("ids.npz", codes), "--held-out", write("other.npz", codes, sha1="b" * 40)]
        message = "another tokenizer"
    assert run_cli(main, arguments) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "run").exists()
