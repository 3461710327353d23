"""The authors' released models by name: ``load_authors_model`` on a hub id (huggingface_hub's download
replaced by a local file), on a local copy of one of their hub repositories, and on their ``ckpt.pth``, with
synthetic weights of their 512T and 256T shapes (the key names and shapes of ``tests/test_convert.py``, written
down from their repository); DDP checkpoints, wrong shapes, offline and typo errors."""
import shutil
import warnings
from collections import OrderedDict
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

from revq_core import convert
from revq_core.data.latents import encode_to_cache, latent_cache_statistics
from revq_core.modeling.authors_format import (AUTHORS_PREPROCESSOR_URL, AUTHORS_VAE, AuthorsModelUnavailable,
                                               CheckpointConversionError, load_authors_model)
from revq_core.modeling.revq import ReVQ
from tests.data.test_latent_cache import FakeVAE, Images
from tests.test_convert import _authors_layout

SHAPES = {  # their released settings at a small K: (G groups, K, D, rectifier depth); width 64 in the helper
    "512T": (512, 8, 4, 3),  # revq-512T: 512 tokens of D = 4, 512 x 3 rectifier (at width 64 here)
    "256T": (256, 8, 8, 4),  # revq-256T-B / -L: 256 tokens of D = 8, 4 blocks
}
YAML_NAMES = {"512T": "512T_NC=16384.yaml", "256T": "256T_NC=65536.yaml"}


def _their_repository(directory, shape: str, seed: int = 0, ddp: bool = False):
    """A local copy of one of their hub repositories: ckpt.pth (+ the training yaml, unread). Returns the
    checkpoint and preprocessor dicts; the preprocessor is written to ``directory/../preprocessor.pth``."""
    groups, codes, code_dim, depth = SHAPES[shape]
    checkpoint, preprocessor = _authors_layout(groups=groups, codes=codes, code_dim=code_dim, depth=depth, seed=seed)
    saved = checkpoint
    if ddp:  # their scripts/train.py wraps quantizer and decoder in DistributedDataParallel before saving
        saved = dict(checkpoint, **{part: OrderedDict((f"module.{key}", value)
                                                      for key, value in checkpoint[part].items())
                                    for part in ("quantizer", "decoder")})
    directory.mkdir(parents=True)
    torch.save(saved, directory / "ckpt.pth")
    (directory / YAML_NAMES[shape]).write_text("model:\n  quantizer:\n    TYPE: vq\n")
    torch.save(preprocessor, directory.parent / "preprocessor.pth")
    return checkpoint, preprocessor


def _assert_holds(model: ReVQ, checkpoint: dict, shape: str) -> None:
    groups, codes, code_dim, depth = SHAPES[shape]
    assert (model.quantizer.num_groups, model.codes_per_group, model.quantizer.code_dim) == (groups, codes, code_dim)
    assert model.tokens_per_image == 2048 // code_dim and len(model.rectifier.up_blocks[0]) == depth
    assert torch.equal(model.quantizer.codebook, checkpoint["quantizer"]["embeddings"])
    rectifier_state = model.rectifier.state_dict()
    assert all(torch.equal(rectifier_state[key], value) for key, value in checkpoint["decoder"].items())


class _FakeResponse(SimpleNamespace):
    """What huggingface_hub's HTTP errors read from a response."""

    def __init__(self):
        super().__init__(headers={}, request=None, status_code=404)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_local_copy_of_their_repository_loads_with_their_preprocessor(tmp_path, shape):
    checkpoint, preprocessor = _their_repository(tmp_path / "revq", shape)
    model = load_authors_model(tmp_path / "revq", preprocessor=tmp_path / "preprocessor.pth")
    _assert_holds(model, checkpoint, shape)
    assert torch.equal(model.normalizer.mean.flatten(), preprocessor["mean"])
    assert torch.equal(model.normalizer.std.flatten(), preprocessor["std"])
    assert model.vae_name == AUTHORS_VAE and not model.training
    latent = torch.randn(2, 32, 8, 8)
    assert model.reconstruct_latent(latent).shape == latent.shape
    # their ckpt.pth itself, and a path given as a string, load the same model
    direct = load_authors_model(str(tmp_path / "revq" / "ckpt.pth"), preprocessor=str(tmp_path / "preprocessor.pth"))
    assert torch.equal(direct.tokenize(latent), model.tokenize(latent))


def test_statistics_from_our_latent_cache_replace_their_preprocessor(tmp_path):
    checkpoint, _ = _their_repository(tmp_path / "revq", "256T")
    cache = encode_to_cache(FakeVAE().eval(), Images(12), tmp_path / "latents" / "train.npy", batch_size=4,
                            progress=False)
    mean, var = latent_cache_statistics(cache)  # each (32, 8, 8): population statistics, as theirs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_authors_model(tmp_path / "revq", statistics=(mean, var))
    assert not [warning for warning in caught if "preprocessor" in str(warning.message)]
    _assert_holds(model, checkpoint, "256T")
    assert torch.equal(model.normalizer.mean, mean)
    torch.testing.assert_close(model.normalizer.std, var.sqrt())
    with pytest.raises(ValueError, match="not both"):
        load_authors_model(tmp_path / "revq", preprocessor=tmp_path / "preprocessor.pth", statistics=(mean, var))


def test_without_statistics_the_normalizer_is_the_identity_and_a_warning_says_so(tmp_path):
    _their_repository(tmp_path / "revq", "512T")
    with pytest.warns(UserWarning, match="no preprocessor given"):
        model = load_authors_model(tmp_path / "revq")
    assert torch.equal(model.normalizer.std, torch.ones(32, 8, 8))


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_checkpoint_saved_from_a_ddp_run_loads_as_the_plain_one(tmp_path, shape):
    checkpoint, _ = _their_repository(tmp_path / "ddp" / "revq", shape, seed=5, ddp=True)
    saved = torch.load(tmp_path / "ddp" / "revq" / "ckpt.pth", weights_only=True)
    assert all(key.startswith("module.") for key in (*saved["quantizer"], *saved["decoder"]))
    model = load_authors_model(tmp_path / "ddp" / "revq", preprocessor=tmp_path / "ddp" / "preprocessor.pth")
    _assert_holds(model, checkpoint, shape)


def test_a_checkpoint_of_the_wrong_shape_is_refused_in_one_line(tmp_path):
    checkpoint, _ = _their_repository(tmp_path / "revq", "512T")
    misshaped = dict(checkpoint, decoder=dict(checkpoint["decoder"],
                                              **{"conv_out.weight": torch.zeros(32, 64, 1, 1)}))
    torch.save(misshaped, tmp_path / "revq" / "ckpt.pth")
    with pytest.raises(CheckpointConversionError) as caught:
        load_authors_model(tmp_path / "revq", preprocessor=tmp_path / "preprocessor.pth")
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path / "revq" / "ckpt.pth") in message
    assert "rectifier.conv_out.weight: checkpoint (32, 64, 1, 1) vs model (32, 64, 3, 3)" in message
    torch.save(dict(checkpoint, quantizer={"embeddings": torch.zeros(512, 8, 3)}), tmp_path / "revq" / "ckpt.pth")
    with pytest.raises(CheckpointConversionError, match=r"\(512, 8, 3\) \(G, K, D\) does not fit"):
        load_authors_model(tmp_path / "revq", preprocessor=tmp_path / "preprocessor.pth")
    torch.save(checkpoint, tmp_path / "revq" / "ckpt.pth")
    with pytest.raises(CheckpointConversionError, match="cannot convert .*preprocessor mean/std must hold 2048 numbers"):
        load_authors_model(tmp_path / "revq", preprocessor={"mean": torch.zeros(1024), "std": torch.ones(1024)})


def test_a_hub_id_downloads_their_checkpoint_and_converts_it(tmp_path, monkeypatch):
    checkpoint, preprocessor = _their_repository(tmp_path / "hub-cache", "256T", seed=2)
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs.get("revision")))
        return str(tmp_path / "hub-cache" / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    model = load_authors_model("AndyRaoTHU/revq-256T-B", preprocessor=tmp_path / "preprocessor.pth")
    assert calls == [("AndyRaoTHU/revq-256T-B", "ckpt.pth", None)]  # only the weights: shapes give the rest
    _assert_holds(model, checkpoint, "256T")
    # the command line takes a hub id too and writes a directory that ReVQ.from_pretrained reads
    convert.main(["AndyRaoTHU/revq-256T-B", str(tmp_path / "converted"), "--preprocessor",
                  str(tmp_path / "preprocessor.pth")])
    reloaded = ReVQ.from_pretrained(tmp_path / "converted")
    assert torch.equal(reloaded.quantizer.codebook, checkpoint["quantizer"]["embeddings"])
    assert torch.equal(reloaded.normalizer.std.flatten(), preprocessor["std"])


@pytest.mark.parametrize("error,reason", [
    (LocalEntryNotFoundError("cannot find the requested files in the local cache"), "offline"),
    (RepositoryNotFoundError("404 Repository Not Found", response=_FakeResponse()), "typo"),
    (EntryNotFoundError("404 Entry Not Found"), "holds no ckpt.pth"),
    (ConnectionError("Name or service not known\nRetrying in 1s"), "ConnectionError: Name or service not known"),
])
def test_offline_or_a_typo_gives_one_line_saying_what_was_tried(monkeypatch, error, reason):
    def failing_download(repo_id, filename, **kwargs):
        raise error

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing_download)
    with pytest.raises(AuthorsModelUnavailable) as caught:
        load_authors_model("AndyRaoTHU/revq-512t", preprocessor=None)
    message = str(caught.value)
    assert "\n" not in message and reason in message
    assert "https://huggingface.co/AndyRaoTHU/revq-512t/resolve/main/ckpt.pth" in message  # what was tried
    assert "hf download AndyRaoTHU/revq-512t --local-dir <dir>" in message  # how to use a local copy
    assert "load_authors_model('<dir>'" in message
    assert isinstance(caught.value, OSError)


def test_local_paths_that_are_not_their_layout_say_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a file, a directory or a Hugging Face Hub id"):
        load_authors_model(tmp_path / "missing" / "revq-512T")
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"holds no ckpt.pth \(found \['config.json'\]\).*ReVQ.from_pretrained"):
        load_authors_model(tmp_path / "ours")


def test_the_preprocessor_url_is_downloaded_once(tmp_path, monkeypatch):
    checkpoint, preprocessor = _their_repository(tmp_path / "revq", "512T")
    downloads = []

    def fake_download_url_to_file(url, destination, progress=True):
        downloads.append(url)
        shutil.copy(tmp_path / "preprocessor.pth", destination)

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch-hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download_url_to_file)
    for _ in range(2):
        model = load_authors_model(tmp_path / "revq", preprocessor=AUTHORS_PREPROCESSOR_URL)
        assert torch.equal(model.normalizer.std.flatten(), preprocessor["std"])
    assert downloads == [AUTHORS_PREPROCESSOR_URL]
    assert list((tmp_path / "torch-hub" / "revq").glob("*/preprocessor.pth"))

    def offline(url, destination, progress=True):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(AuthorsModelUnavailable, match=r"could not download https://example.org/stats/preprocessor.pth "
                                                      r".*pass its path"):
        load_authors_model(tmp_path / "revq", preprocessor="https://example.org/stats/preprocessor.pth")


@pytest.mark.parametrize("name", ["AndyRaoTHU/revq-512T", "AndyRaoTHU/revq-256T-L", "local"])
def test_from_pretrained_points_their_models_to_load_authors_model(tmp_path, name):
    if name == "local":
        _their_repository(tmp_path / "revq", "512T")
        name = str(tmp_path / "revq")
    with pytest.raises(ValueError, match=r"the authors' own format .*load_authors_model\("):
        ReVQ.from_pretrained(name)


def test_the_evaluation_loads_their_models_and_ours(tmp_path):
    """``python -m revq_core.evaluate --model`` takes a local copy of their repository (converted with their
    preprocessor) as well as a directory of this project's format."""
    from revq_core.modeling.loading import load_model

    checkpoint, _ = _their_repository(tmp_path / "revq", "512T")
    theirs = load_model(str(tmp_path / "revq"), preprocessor=str(tmp_path / "preprocessor.pth"))
    _assert_holds(theirs, checkpoint, "512T")
    theirs.save_pretrained(tmp_path / "ours")
    ours = load_model(str(tmp_path / "ours"))
    latent = torch.randn(2, 32, 8, 8)
    assert torch.equal(ours.tokenize(latent), theirs.tokenize(latent))
