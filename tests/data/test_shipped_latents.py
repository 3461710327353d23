"""The latents shipped in data/embedded_latents/: what the shipped VAE makes of the default crops, used only then."""
import pytest
import torch

import revq_core.data.latents as latents_module
from revq_core.autoencoders.adapters import encode
from revq_core.autoencoders.embedded import DEFAULT_EMBEDDED_VAE
from revq_core.autoencoders.loading import load_vae
from revq_core.data.latents import (_embedded_vae_digest, embedded_latents, shipped_latents_paths,
                                    shipped_latents_record)
from revq_core.data.photos import CORPUS_CROPS, build_photo_dataset
from safetensors import safe_open

SPLITS = ("train", "val", "test")


def _shipped_files(split):
    """[(metadata, latents)] of every shipped file of ``split``, in order."""
    files = []
    for path in shipped_latents_paths(split):
        with safe_open(str(path), framework="pt") as file:
            files.append((file.metadata(), file.get_tensor("latents")))
    return files


def _shipped(split):
    return torch.cat([latents for _, latents in _shipped_files(split)])


@pytest.mark.parametrize("split", SPLITS)
def test_each_shipped_file_records_the_shipped_vae_and_the_default_crops(split):
    """Fails when the VAE v2 or the photo corpus changed and scripts/ship_embedded_latents.py was not rerun."""
    record = shipped_latents_record(split, CORPUS_CROPS["v2"].num_crops[split], 0, DEFAULT_EMBEDDED_VAE,
                                    _embedded_vae_digest(DEFAULT_EMBEDDED_VAE))
    files = _shipped_files(split)
    assert files, f"no shipped latents of {split!r}"
    for metadata, latents in files:
        assert {name: metadata.get(name) for name in record} == record
        assert latents.dtype == torch.float16 and latents.shape[1:] == (32, 8, 8)
        assert torch.isfinite(latents).all()
    assert len(_shipped(split)) == CORPUS_CROPS["v2"].num_crops[split]
    assert all(path.stat().st_size < 30e6 for path in shipped_latents_paths(split))  # the repository's file limit


def test_shipped_latents_equal_a_fresh_encoding_of_their_crops():
    """A sample of every split, re-encoded here in float32: equal to float16 rounding (+ float32 drift between CPUs)."""
    vae = load_vae(DEFAULT_EMBEDDED_VAE)
    for split in SPLITS:
        crops = build_photo_dataset(split, as_uint8=True)
        rows = torch.linspace(0, len(crops) - 1, 6).long()  # first, last and between
        fresh = encode(vae, crops[rows], batch_size=6)
        shipped = _shipped(split)[rows].float()
        torch.testing.assert_close(shipped, fresh, rtol=2e-3, atol=2e-3, msg=lambda text: f"{split}: {text}")


def test_embedded_latents_reads_the_shipped_file_and_encodes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("REVQ_CACHE", str(tmp_path / "empty_cache"))

    def no_encoding(*args, **kwargs):
        raise AssertionError("embedded_latents encoded although the shipped latents are those of its crops")

    monkeypatch.setattr(latents_module, "encode_dataset", no_encoding)
    monkeypatch.setattr(latents_module, "build_photo_dataset", no_encoding)
    for split in ("train", "val"):
        latents = embedded_latents(split, progress=False)
        assert latents.dtype == torch.float32 and torch.equal(latents, _shipped(split).float())


class _EncodingSpy:
    def __init__(self):
        self.calls = 0

    def __call__(self, vae, images, batch_size, progress=True):
        self.calls += 1
        return torch.zeros(len(images), 32, 8, 8)


@pytest.fixture()
def encoding_spy(tmp_path, monkeypatch):
    """An empty cache, and an encoder (on blank crops) that counts its calls instead of encoding."""
    monkeypatch.setenv("REVQ_CACHE", str(tmp_path / "cache"))
    spy = _EncodingSpy()
    monkeypatch.setattr(latents_module, "encode_dataset", spy)
    monkeypatch.setattr(latents_module, "build_photo_dataset",
                        lambda split, num_crops, **kwargs: torch.zeros(num_crops, 3, 4, 4, dtype=torch.uint8))
    return spy


@pytest.mark.parametrize("arguments", [{"num_crops": 16}, {"seed": 1}, {"shipped": False}])
def test_other_crops_or_shipped_false_are_encoded(encoding_spy, arguments):
    latents = embedded_latents("val", progress=False, **arguments)
    assert encoding_spy.calls == 1 and torch.equal(latents, torch.zeros(len(latents), 32, 8, 8))


def test_a_shipped_file_of_another_vae_is_not_used(encoding_spy, monkeypatch):
    monkeypatch.setattr(latents_module, "_embedded_vae_digest", lambda vae: "retrained0")
    embedded_latents("test", progress=False)
    assert encoding_spy.calls == 1


def test_an_unreadable_shipped_file_warns_names_the_fix_and_encodes(encoding_spy, tmp_path, monkeypatch):
    shipped_dir = tmp_path / "embedded_latents"
    shipped_dir.mkdir()
    (shipped_dir / "latents_v2_val-0of1.safetensors").write_bytes(
        b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 4194576\n")  # a Git LFS pointer
    monkeypatch.setattr(latents_module, "SHIPPED_LATENTS_DIR", shipped_dir)
    with pytest.warns(UserWarning, match=r"unreadable .*encoding the crops instead.*git checkout"):
        embedded_latents("val", progress=False)
    assert encoding_spy.calls == 1


def test_a_missing_shipped_file_warns_and_encodes(encoding_spy, tmp_path, monkeypatch):
    shipped_dir = tmp_path / "embedded_latents"
    shipped_dir.mkdir()
    first = shipped_latents_paths("train")[0]  # of two: the second one lost
    (shipped_dir / first.name).write_bytes(first.read_bytes())
    monkeypatch.setattr(latents_module, "SHIPPED_LATENTS_DIR", shipped_dir)
    with pytest.warns(UserWarning, match=r"not 8192 latents .*a file missing\?.*encoding the crops instead"):
        embedded_latents("train", progress=False)
    assert encoding_spy.calls == 1
