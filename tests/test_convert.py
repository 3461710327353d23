"""Import of the authors' checkpoint layout (synthetic state dicts shaped like their ckpt.pth / preprocessor.pth)."""
import pytest
import torch

from revq_core.convert import CheckpointConversionError, convert_authors_checkpoint, main
from revq_core.model import ReVQ
from revq_core.rectifier import ViTRectifier


def _authors_layout(groups=512, codes=8, code_dim=4, width=64, depth=2, seed=0):
    """Their ckpt.pth: {"quantizer": {embeddings, index_offset, count}, "decoder": one-stage DC-AE keys}."""
    torch.manual_seed(seed)
    decoder = {key: torch.randn_like(value) for key, value in ViTRectifier(32, width, depth).state_dict().items()}
    quantizer = {"embeddings": torch.randn(groups, codes, code_dim), "index_offset": torch.arange(groups) * codes,
                 "count": torch.zeros(groups, codes)}
    preprocessor = {"mean": torch.randn(2048), "std": torch.rand(2048) + 0.5}
    return {"quantizer": quantizer, "decoder": decoder, "optimizer": {}, "epoch": 99}, preprocessor


def test_weights_land_where_they_belong_and_tokens_follow_their_grouping():
    checkpoint, preprocessor = _authors_layout()
    model = convert_authors_checkpoint(checkpoint, preprocessor)
    assert (model.tokens_per_image, model.codes_per_group, model.quantizer.num_groups) == (512, 8, 512)
    assert torch.equal(model.quantizer.codebook, checkpoint["quantizer"]["embeddings"])
    for key, value in checkpoint["decoder"].items():
        assert torch.equal(model.rectifier.state_dict()[key], value), key
    assert torch.equal(model.normalizer.mean.flatten(), preprocessor["mean"])
    assert torch.equal(model.normalizer.std.flatten(), preprocessor["std"])
    # Their semantics: normalize per dimension, view (B, T, D), token t -> codebook t % G, nearest code.
    latent = torch.randn(3, 32, 8, 8)
    tokens = ((latent.flatten(1) - preprocessor["mean"]) / preprocessor["std"]).view(3, 512, 4)
    books = checkpoint["quantizer"]["embeddings"][torch.arange(512) % 512]  # (T, K, D)
    expected = (tokens.double()[:, :, None] - books.double()[None]).pow(2).sum(-1).argmin(-1)
    assert torch.equal(model.tokenize(latent), expected)


def test_fewer_groups_than_tokens_and_flat_prefixed_keys():
    checkpoint, preprocessor = _authors_layout(groups=128, codes=4, code_dim=8, width=32, depth=1)
    flat = {f"{part}.{key}": value for part in ("quantizer", "decoder") for key, value in checkpoint[part].items()}
    model = convert_authors_checkpoint(flat, preprocessor)
    assert (model.tokens_per_image, model.quantizer.num_groups) == (256, 128)
    assert model.quantizer.group_of_token[:130].tolist() == [t % 128 for t in range(130)]


def test_cli_writes_a_loadable_directory(tmp_path):
    checkpoint, preprocessor = _authors_layout(groups=256, codes=4, code_dim=8, width=32, depth=1)
    torch.save(checkpoint, tmp_path / "ckpt.pth")
    torch.save(preprocessor, tmp_path / "preprocessor.pth")
    main([str(tmp_path / "ckpt.pth"), str(tmp_path / "out"), "--preprocessor", str(tmp_path / "preprocessor.pth")])
    loaded = ReVQ.from_pretrained(tmp_path / "out")
    assert torch.equal(loaded.quantizer.codebook, checkpoint["quantizer"]["embeddings"])
    latent = torch.randn(2, 32, 8, 8)
    direct = convert_authors_checkpoint(checkpoint, preprocessor)
    assert torch.allclose(loaded.reconstruct_latent(latent), direct.reconstruct_latent(latent))


def test_missing_unexpected_and_misshaped_keys_are_named():
    checkpoint, preprocessor = _authors_layout(width=32, depth=1)
    broken = {"quantizer": dict(checkpoint["quantizer"]), "decoder": dict(checkpoint["decoder"])}
    del broken["decoder"]["norm_out.bias"]
    broken["decoder"]["extra.weight"] = torch.zeros(1)
    broken["decoder"]["conv_out.weight"] = torch.zeros(32, 32, 1, 1)
    with pytest.raises(CheckpointConversionError,
                       match=r"missing keys \['rectifier.norm_out.bias'\].*unexpected keys \['rectifier.extra.weight'\]"
                             r".*rectifier.conv_out.weight: checkpoint \(32, 32, 1, 1\) vs model \(32, 32, 3, 3\)"):
        convert_authors_checkpoint(broken, preprocessor)
    with pytest.raises(CheckpointConversionError, match=r"unexpected keys \['codebook'\]"):
        convert_authors_checkpoint({"quantizer": {"embeddings": torch.zeros(512, 4, 4), "codebook": torch.zeros(1)},
                                    "decoder": checkpoint["decoder"]}, preprocessor)
    with pytest.raises(CheckpointConversionError, match="does not fit"):
        convert_authors_checkpoint({"quantizer": {"embeddings": torch.zeros(512, 4, 3)}, "decoder": {}}, preprocessor)
    with pytest.raises(CheckpointConversionError, match="2048 numbers"):
        convert_authors_checkpoint(checkpoint, {"mean": torch.zeros(1024), "std": torch.ones(1024)})
    with pytest.raises(CheckpointConversionError, match="expected the keys 'quantizer' and 'decoder'"):
        convert_authors_checkpoint({"model": {}}, preprocessor)


def test_without_preprocessor_the_normalizer_is_identity_and_says_so():
    checkpoint, _ = _authors_layout(width=32, depth=1)
    with pytest.warns(UserWarning, match="no preprocessor"):
        model = convert_authors_checkpoint(checkpoint)
    assert torch.equal(model.normalizer.std, torch.ones(32, 8, 8))
