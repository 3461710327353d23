"""Pretokenization (revq_core/generation/pretokenize.py) and the codes file's memory-mapped layout
(revq_core/data/codes.py): ids from latents equal ReVQ.tokenize, both layouts read back, an interrupted run
resumes, class folders become labels, torchrun shards write one file, and an empty set writes nothing."""
import json

import numpy as np
import pytest
import torch
from helpers import small_model

from revq_core.data import codes as codes_module
from revq_core.data.codes import CodesFileError, load_codebooks, load_codes, load_labels, open_codes
from revq_core.generation import pretokenize as pretokenize_module
from revq_core.generation.pretokenize import pretokenize_latents


@pytest.fixture
def model_and_latents():
    torch.manual_seed(0)
    model = small_model().eval()
    latents = torch.randn(37, 32, 8, 8)
    model.normalizer.fit(latents)
    return model, latents


@pytest.mark.parametrize("layout", ["directory", "npz"])
def test_ids_from_latents_equal_tokenize_and_carry_meta_and_codebooks(tmp_path, model_and_latents, layout):
    model, latents = model_and_latents
    out = tmp_path / ("ids" if layout == "directory" else "ids.npz")
    labels = torch.arange(37) % 3
    meta = pretokenize_latents(latents, out, model, labels=labels, class_names=["a", "b", "c"], batch_size=8,
                               progress=False)
    codes, names, read_meta = load_codes(out)
    assert torch.equal(codes, model.tokenize(latents)) and len(names) == 37
    assert read_meta["class_names"] == ["a", "b", "c"] and read_meta["tokens_per_image"] == 128
    assert read_meta["model_sha1"] == meta["model_sha1"] and read_meta["codes_per_group"] == 16
    assert torch.equal(load_labels(out), labels)
    assert torch.equal(load_codebooks(out), model.quantizer.codebook.detach())
    stored, _ = open_codes(out)
    assert stored.dtype == np.uint16


def test_an_interrupted_pretokenization_resumes_to_the_same_file(tmp_path, model_and_latents, monkeypatch):
    model, latents = model_and_latents
    pretokenize_latents(latents, tmp_path / "whole", model, batch_size=4, progress=False)
    monkeypatch.setattr(pretokenize_module, "FLUSH_EVERY", 2)
    calls = {"count": 0}
    tokenize = model.tokenize

    def dying_tokenize(latent):
        calls["count"] += 1
        if calls["count"] == 6:
            raise KeyboardInterrupt
        return tokenize(latent)

    monkeypatch.setattr(model, "tokenize", dying_tokenize)
    with pytest.raises(KeyboardInterrupt):
        pretokenize_latents(latents, tmp_path / "resumed", model, batch_size=4, progress=False)
    with pytest.raises(CodesFileError, match="incomplete codes directory.*again to resume"):
        load_codes(tmp_path / "resumed")
    assert json.loads((tmp_path / "resumed" / "progress-0of1.json").read_text())["next_row"] == 16
    monkeypatch.setattr(model, "tokenize", tokenize)
    calls["count"] = 0
    with pytest.raises(CodesFileError, match="interrupted pretokenization of other data"):
        pretokenize_latents(latents[:30], tmp_path / "resumed", model, batch_size=4, progress=False)
    pretokenize_latents(latents, tmp_path / "resumed", model, batch_size=4, progress=False)
    assert torch.equal(load_codes(tmp_path / "resumed")[0], load_codes(tmp_path / "whole")[0])
    assert not list((tmp_path / "resumed").glob("progress-*")) and not (tmp_path / "resumed" / "meta.partial.json").exists()
    with pytest.raises(FileExistsError, match="already holds finished codes"):
        pretokenize_latents(latents, tmp_path / "resumed", model, progress=False)


def test_two_ranks_write_their_shares_of_one_file(tmp_path, model_and_latents, monkeypatch):
    """Rank 1 writes rows [18, 37) of the file rank 0 made, rank 0 its rows and meta.json last: the same ids as
    one process (the ranks run one after the other here; barriers are no-ops)."""
    model, latents = model_and_latents
    out = tmp_path / "sharded"
    expected = model.tokenize(latents)
    meta = pretokenize_module.tokenizer_meta(model, "test")
    writer0 = codes_module.CodesWriter(out, 37, meta, 0, 2)
    writer1 = codes_module.CodesWriter(out, 37, meta, 1, 2)
    assert (writer0.first_row, writer0.last_row, writer1.first_row, writer1.last_row) == (0, 18, 18, 37)
    writer0.create()
    for writer in (writer1, writer0):
        writer.open()
        writer.write(writer.first_row, expected[writer.first_row:writer.last_row])
        writer.finish()
    writer0.write_meta(model.quantizer.codebook)
    assert torch.equal(load_codes(out)[0], expected) and load_labels(out) is None


def test_an_image_folder_gives_class_labels_and_names(tmp_path):
    from PIL import Image

    from revq_core.generation.pretokenize import pretokenize_folder
    from revq_core.modeling.loading import load_tokenizer

    rng = np.random.default_rng(0)
    for class_name, count in (("cat", 2), ("dog", 1)):
        (tmp_path / "images" / class_name).mkdir(parents=True)
        for index in range(count):
            Image.fromarray(rng.integers(0, 255, (140, 150, 3), dtype=np.uint8)).save(
                tmp_path / "images" / class_name / f"{index}.png")
    revq, _ = load_tokenizer()
    meta = pretokenize_folder(tmp_path / "images", tmp_path / "ids", revq, batch_size=2, progress=False)
    codes, names, read = load_codes(tmp_path / "ids")
    assert codes.shape == (3, 512) and read["class_names"] == ["cat", "dog"] == meta["class_names"]
    assert load_labels(tmp_path / "ids").tolist() == [0, 0, 1]
    assert names == ["cat/0.png", "cat/1.png", "dog/0.png"]


def test_an_empty_set_is_refused_and_nothing_is_written(tmp_path, model_and_latents):
    model, _ = model_and_latents
    for out in (tmp_path / "ids", tmp_path / "ids.npz"):
        with pytest.raises(CodesFileError, match="empty data set"):
            pretokenize_latents(torch.empty(0, 32, 8, 8), out, model, progress=False)
        assert not out.exists()


def test_the_command_line_tokenizes_a_latent_cache_with_the_shipped_tokenizer(tmp_path, capsys):
    from revq_core.data.latents import save_latents
    from revq_core.modeling.loading import load_tokenizer
    from revq_core.pretokenize import main

    latents = torch.randn(5, 32, 8, 8)
    save_latents(tmp_path / "latents.safetensors", latents)
    main(["--latents", str(tmp_path / "latents.safetensors"), "--out", str(tmp_path / "ids"), "--no-progress"])
    assert "5 images x 512 tokens (K = 2048, no classes); model embedded" in capsys.readouterr().out
    codes, _, meta = load_codes(tmp_path / "ids")
    assert torch.equal(codes, load_tokenizer()[0].tokenize(latents)) and meta["model"] == "embedded"
