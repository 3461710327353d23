"""The paper's three presets at their real size (K = 16,384, 65,536 and 262,144 codes per group), through
``train()`` as a user runs them: the codebooks start from a pool of a few training latents (far fewer tokens
than K, so the codes are drawn with replacement), one training step, the end-of-epoch reset, then
``save_pretrained`` / ``from_pretrained`` give back the same model. Only the batch is small.

``paper_256T_262k`` holds a 2 GiB codebook (256 x 262,144 x 8 float32), its gradient and AdamW's two moments
(8 GiB in all), then AdamW's and the reset's temporaries: the file peaks at 12.8 GiB RSS (a 24 GB machine).
Measured on 2 shared CPU cores (2 threads; load ~3 from other jobs), per test (peak RSS run alone): 512T
12-19 s / 1.6 GiB, 256T_65k 27-30 s / 4.7 GiB, 256T_262k 52-61 s / 12.4 GiB; the file 94-113 s.
"""
import math

import pytest
import torch

from revq_core.modeling.revq import ReVQ
from revq_core.training.config import PRESETS, preset
from revq_core.training.trainer import train

PAPER_PRESETS = ["paper_512T", "paper_256T_65k", "paper_256T_262k"]  # the largest last: its peak is the file's
INIT_POOL = 8  # init_latents: the codebooks start from the tokens of 8 of the 16 training latents


def _latents(count: int, seed: int) -> torch.Tensor:
    """Latents (count, 32, 8, 8) with a VAE-like offset and scale."""
    generator = torch.Generator().manual_seed(seed)
    return 2.0 + 3.0 * torch.randn(count, 32, 8, 8, generator=generator)


def test_paper_presets_draw_their_init_from_the_authors_pool_size():
    for name in PAPER_PRESETS:
        assert PRESETS[name].init_latents == 524_288, name  # the authors cache 524,288 latents for the init
    for name in ("demo", "tiny"):
        assert PRESETS[name].init_latents is None, name  # all their latents: more tokens than K, no replacement


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_preset_trains_a_step_resets_and_reloads_at_its_real_size(name, tmp_path, two_threads):
    train_latents, val_latents = _latents(16, seed=0), _latents(4, seed=1)
    config = preset(name, epochs=1, batch_size=16, init_latents=INIT_POOL)
    model, history = train(config, train_latents, val_latents, progress=False)
    model.zero_grad(set_to_none=True)  # the 2 GiB gradient of the 262k codebook is not needed any more

    quantizer, codes_per_group = model.quantizer, config.model.codes_per_group
    groups, code_dim = quantizer.num_groups, 2048 // config.model.tokens_per_image
    assert tuple(quantizer.codebook.shape) == (groups, codes_per_group, code_dim)  # the real K, G = T
    assert history.epoch == [0]
    assert all(math.isfinite(value) for value in (history.train_loss[0], history.val_mse[0], history.val_quant_mse[0]))
    assert history.train_loss_quant[0] > 0  # half the training tokens have no copy in the codebook: codes move
    reset_per_group = math.floor(0.2 * codes_per_group)  # at most 16 of K codes were used: the full 20% move
    assert history.codes_reset == [groups * reset_per_group]
    assert history.usage[0] <= 16 / codes_per_group

    # Codes neither selected nor reset are still the init's copies of tokens from the pool of 8 latents.
    tokens = quantizer.to_tokens(model.normalizer.normalize(train_latents))  # (16, T, D): token t in group t % G
    for group in (0, groups - 1):
        copies = (quantizer.codebook[group].detach()[:, None, :] == tokens[:, group][None]).all(-1)  # (K, 16)
        is_copy = copies.any(1)
        assert is_copy.sum() >= codes_per_group - reset_per_group - 16
        assert (~is_copy).sum() >= reset_per_group  # the reset codes: a used code plus noise
        assert 1 < len(set(copies[is_copy].float().argmax(1).tolist())) <= INIT_POOL  # drawn, with replacement

    model.save_pretrained(tmp_path / "model")
    reloaded = ReVQ.from_pretrained(tmp_path / "model")
    saved, loaded = model.state_dict(), reloaded.state_dict()
    assert saved.keys() == loaded.keys()
    for key in saved:
        assert torch.equal(saved[key], loaded[key]), key
    assert torch.equal(reloaded.tokenize(val_latents), model.tokenize(val_latents))
