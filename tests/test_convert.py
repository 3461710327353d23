"""Import of the authors' checkpoint layout: synthetic ckpt.pth / preprocessor.pth built from their key names
and shapes as written down below (not from our own modules' state dicts), so a drift of ours from their
format fails here."""
from collections import OrderedDict

import pytest
import torch

from revq_core.convert import main
from revq_core.modeling.authors_format import CheckpointConversionError, convert_authors_checkpoint
from revq_core.modeling.revq import ReVQ

# ---- the authors' format, written down from github.com/Neur-IO/ReVQ -----------------------------------------
# ckpt.pth (scripts/train.py): {"quantizer": quantizer.state_dict(), "decoder": decoder.state_dict(),
# "optimizer": ..., "scheduler": ..., "epoch": int}; their ReVQ._from_pretrained reads "quantizer" and "decoder".
#
# quantizer (src/xvq/models/quantizer.py, Quantizer(code_dim=D, num_code=K, num_group=G, tokens_per_data=T)):
#   embeddings (G, K, D) float32 parameter; index_offset (G,) int64 buffer = arange(G) * K; count (G, K) float32.
#   Forward: x (B, T, D).view(-1, G, D), so token t uses codebook t % G.
#
# decoder = the rectifier (src/xvq/models/dcae.py, DCAEDecoder(in_channels=32, latent_channels=32,
# attention_head_dim=32, block_type=[EfficientViTBlock], block_out_channels=[W], layers_per_block=[L],
# qkv_multiscales=[[5]], norm_type=rms_norm, act_fn=silu, upsample_block_type=interpolate), its blocks
# diffusers' EfficientViTBlock). Its keys and shapes for W = 64 (two heads of 32), the 512 x 3 rectifier of
# configs/512T_NC=16384.yaml at an eighth of the width (W = 512 has the same 51 keys at depth 3):
WIDTH = 64
THEIR_DECODER_STEM = [  # before the blocks
    ("conv_in.weight", (64, 32, 3, 3)), ("conv_in.bias", (64,)),
]
THEIR_DECODER_BLOCK = [  # each block i < L, under "up_blocks.0.<i>."
    ("attn.to_q.weight", (64, 64)),
    ("attn.to_k.weight", (64, 64)),
    ("attn.to_v.weight", (64, 64)),
    ("attn.to_qkv_multiscale.0.proj_in.weight", (192, 1, 5, 5)),
    ("attn.to_qkv_multiscale.0.proj_out.weight", (192, 32, 1, 1)),
    ("attn.to_out.weight", (64, 128)),
    ("attn.norm_out.weight", (64,)), ("attn.norm_out.bias", (64,)),
    ("conv_out.conv_inverted.weight", (512, 64, 1, 1)), ("conv_out.conv_inverted.bias", (512,)),
    ("conv_out.conv_depth.weight", (512, 1, 3, 3)), ("conv_out.conv_depth.bias", (512,)),
    ("conv_out.conv_point.weight", (64, 256, 1, 1)),
    ("conv_out.norm.weight", (64,)), ("conv_out.norm.bias", (64,)),
]
THEIR_DECODER_HEAD = [  # after the blocks
    ("norm_out.weight", (64,)), ("norm_out.bias", (64,)),
    ("conv_out.weight", (32, 64, 3, 3)), ("conv_out.bias", (32,)),
]
# preprocessor.pth (ckpt/preprocessor.pth, xvq.dataset.Preprocessor.state_dict()): an OrderedDict
# {"mean": (2048,) float32, "std": (2048,) float32}, std = sqrt(var) over the flattened C, H, W latent.


def their_decoder_keys(depth: int) -> list[tuple[str, tuple]]:
    """(key, shape) of their decoder state dict at width 64 and ``depth`` blocks, in their order."""
    blocks = [(f"up_blocks.0.{index}.{key}", shape) for index in range(depth) for key, shape in THEIR_DECODER_BLOCK]
    return THEIR_DECODER_STEM + blocks + THEIR_DECODER_HEAD


def _authors_layout(groups=512, codes=8, code_dim=4, depth=2, seed=0):
    """A synthetic ckpt.pth and preprocessor.pth of their format: random tensors under their key names."""
    generator = torch.Generator().manual_seed(seed)
    decoder = OrderedDict((key, 0.1 * torch.randn(shape, generator=generator))
                          for key, shape in their_decoder_keys(depth))
    quantizer = OrderedDict([("index_offset", torch.arange(groups, dtype=torch.int64) * codes),
                             ("count", torch.randint(0, 5, (groups, codes), generator=generator).float()),
                             ("embeddings", torch.randn(groups, codes, code_dim, generator=generator))])
    preprocessor = OrderedDict([("mean", torch.randn(2048, generator=generator)),
                                ("std", torch.rand(2048, generator=generator) + 0.5)])
    optimizer = {"state": {}, "param_groups": [{"lr": 5e-4, "weight_decay": 0.0, "params": [0]},
                                               {"lr": 2.5e-5, "weight_decay": 1e-4, "params": [1]}]}
    checkpoint = {"quantizer": quantizer, "decoder": decoder, "optimizer": optimizer,
                  "scheduler": {"gamma": 0.05 ** (1 / 100), "last_epoch": 100}, "epoch": 99}
    return checkpoint, preprocessor


def test_their_key_list_has_the_size_of_their_512x3_rectifier():
    assert len(their_decoder_keys(3)) == 51
    assert len({key for key, _ in their_decoder_keys(3)}) == 51


def test_weights_land_where_they_belong_and_tokens_follow_their_grouping():
    checkpoint, preprocessor = _authors_layout()
    model = convert_authors_checkpoint(checkpoint, preprocessor)
    assert (model.tokens_per_image, model.codes_per_group, model.quantizer.num_groups) == (512, 8, 512)
    assert (model.rectifier.conv_in.out_channels, len(model.rectifier.up_blocks[0])) == (WIDTH, 2)
    assert torch.equal(model.quantizer.codebook, checkpoint["quantizer"]["embeddings"])
    rectifier_state = model.rectifier.state_dict()
    assert list(rectifier_state) == [key for key, _ in their_decoder_keys(2)]  # theirs, one to one, same order
    for key, value in checkpoint["decoder"].items():
        assert torch.equal(rectifier_state[key], value), key
    assert torch.equal(model.normalizer.mean.flatten(), preprocessor["mean"])
    assert torch.equal(model.normalizer.std.flatten(), preprocessor["std"])
    # Their semantics: normalize per dimension, view (B, T, D), token t -> codebook t % G, nearest code.
    latent = torch.randn(3, 32, 8, 8)
    tokens = ((latent.flatten(1) - preprocessor["mean"]) / preprocessor["std"]).view(3, 512, 4)
    books = checkpoint["quantizer"]["embeddings"][torch.arange(512) % 512]  # (T, K, D)
    expected = (tokens.double()[:, :, None] - books.double()[None]).pow(2).sum(-1).argmin(-1)
    assert torch.equal(model.tokenize(latent), expected)


def test_the_512x3_layout_converts_at_depth_3():
    checkpoint, preprocessor = _authors_layout(codes=4, depth=3, seed=1)
    model = convert_authors_checkpoint(checkpoint, preprocessor)
    assert len(model.rectifier.up_blocks[0]) == 3
    assert set(model.rectifier.state_dict()) == set(checkpoint["decoder"])


def test_the_rectifier_computes_what_their_decoder_computes():
    """Their DCAEDecoder (width 64, depth 1) loaded with ``_authors_layout(depth=1, seed=3)``'s decoder weights
    maps the latent below to these numbers (run once with their code, outside this repository)."""
    checkpoint, preprocessor = _authors_layout(depth=1, seed=3)
    model = convert_authors_checkpoint(checkpoint, preprocessor)
    latent = torch.linspace(-2, 2, 2048).view(1, 32, 8, 8)
    with torch.no_grad():
        rectified = model.rectifier(latent).double()
    assert rectified.mean().item() == pytest.approx(-0.014974628446452698, abs=1e-6)
    assert rectified.abs().mean().item() == pytest.approx(0.1619944113249403, abs=1e-6)
    assert rectified[0, 0, 0, :4].tolist() == pytest.approx(
        [-0.044657811522483826, 0.06186612695455551, 0.010777346789836884, 0.007262110710144043], abs=1e-5)
    assert rectified[0, 31, 7, 4:].tolist() == pytest.approx(
        [0.0731632336974144, 0.07324551790952682, 0.11618836969137192, 0.0283011794090271], abs=1e-5)


def test_fewer_groups_than_tokens_and_flat_prefixed_keys():
    checkpoint, preprocessor = _authors_layout(groups=128, codes=4, code_dim=8, depth=1)
    flat = {f"{part}.{key}": value for part in ("quantizer", "decoder") for key, value in checkpoint[part].items()}
    model = convert_authors_checkpoint(flat, preprocessor)
    assert (model.tokens_per_image, model.quantizer.num_groups) == (256, 128)
    assert model.quantizer.group_of_token[:130].tolist() == [t % 128 for t in range(130)]
    # their view(-1, G, D) of the (B, T, D) tokens: token t = s * G + g uses codebook g
    latent = torch.randn(2, 32, 8, 8)
    tokens = ((latent.flatten(1) - preprocessor["mean"]) / preprocessor["std"]).view(2, 256 // 128, 128, 8)
    books = checkpoint["quantizer"]["embeddings"]  # (G, K, D)
    expected = (tokens.double()[..., None, :] - books.double()).pow(2).sum(-1).argmin(-1).view(2, 256)
    assert torch.equal(model.tokenize(latent), expected)


def test_cli_writes_a_loadable_directory(tmp_path):
    checkpoint, preprocessor = _authors_layout(groups=256, codes=4, code_dim=8, depth=1)
    torch.save(checkpoint, tmp_path / "ckpt.pth")
    torch.save(preprocessor, tmp_path / "preprocessor.pth")
    main([str(tmp_path / "ckpt.pth"), str(tmp_path / "out"), "--preprocessor", str(tmp_path / "preprocessor.pth")])
    loaded = ReVQ.from_pretrained(tmp_path / "out")
    assert torch.equal(loaded.quantizer.codebook, checkpoint["quantizer"]["embeddings"])
    latent = torch.randn(2, 32, 8, 8)
    direct = convert_authors_checkpoint(checkpoint, preprocessor)
    assert torch.allclose(loaded.reconstruct_latent(latent), direct.reconstruct_latent(latent))


def test_missing_unexpected_and_misshaped_keys_are_named():
    checkpoint, preprocessor = _authors_layout(depth=1)
    broken = {"quantizer": dict(checkpoint["quantizer"]), "decoder": dict(checkpoint["decoder"])}
    del broken["decoder"]["norm_out.bias"]
    broken["decoder"]["extra.weight"] = torch.zeros(1)
    broken["decoder"]["conv_out.weight"] = torch.zeros(32, 64, 1, 1)
    with pytest.raises(CheckpointConversionError,
                       match=r"missing keys \['rectifier.norm_out.bias'\].*unexpected keys \['rectifier.extra.weight'\]"
                             r".*rectifier.conv_out.weight: checkpoint \(32, 64, 1, 1\) vs model \(32, 64, 3, 3\)"):
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
    checkpoint, _ = _authors_layout(depth=1)
    with pytest.warns(UserWarning, match="no preprocessor"):
        model = convert_authors_checkpoint(checkpoint)
    assert torch.equal(model.normalizer.std, torch.ones(32, 8, 8))
