"""The token prior (revq_core/generation/prior.py): its size does not grow with K, its KV-cached sampling draws
the tokens of the uncached one, its token orders are permutations, and it learns what a unigram cannot."""
import math

import pytest
import torch

from revq_core.generation import PriorConfig, TokenPrior, token_order
from revq_core.generation.sampling import filtered_logits


def _count(module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def test_the_prior_of_the_256_token_262k_model_has_as_many_parameters_as_one_with_k_1024():
    """The paper's 256T-L tokenizer (T = G = 256, K = 262,144, D = 8): built on the meta device, its prior's
    parameters do not depend on K; an embedding table and head over T x K ids would hold 2 x 256 x 262,144 x 768."""
    counts = {}
    for codes_per_group in (1024, 262_144):
        with torch.device("meta"):
            prior = TokenPrior.for_codebooks(torch.empty(256, codes_per_group, 8), num_classes=1000, width=768,
                                             depth=12, heads=12)
        counts[codes_per_group] = _count(prior)
    assert counts[1024] == counts[262_144]
    assert 80e6 < counts[262_144] < 120e6  # LlamaGen-B-like, and far below 2 x 256 x 262,144 x 768 = 103 G


@pytest.mark.parametrize("order", ["channel", "position"])
def test_cached_sampling_draws_the_tokens_of_uncached_sampling(order):
    torch.manual_seed(0)
    prior = TokenPrior.for_codebooks(torch.randn(64, 16, 32), num_classes=3, width=32, depth=2, heads=2,
                                     order=order).double()
    labels = torch.tensor([0, 2, 1])
    for settings in (dict(), dict(temperature=0.7, top_k=5), dict(top_p=0.8, cfg_scale=2.0)):
        cached = prior.sample(3, labels, seed=5, **settings)
        uncached = prior.sample(3, labels, seed=5, use_cache=False, **settings)
        assert cached.shape == (3, 64) and torch.equal(cached, uncached), settings
        assert int(cached.min()) >= 0 and int(cached.max()) < 16


def test_token_orders_are_permutations_and_position_order_takes_a_chunk_of_every_channel_first():
    assert torch.equal(token_order("channel", 512), torch.arange(512))
    position = token_order("position", 512, (32, 8, 8))  # 16 tokens per channel, each 4 positions of it
    assert torch.equal(position.sort().values, torch.arange(512))
    assert position[:32].tolist() == [channel * 16 for channel in range(32)]  # chunk 0 of channels 0..31
    assert position[32] == 1
    assert torch.equal(token_order("position", 16, (32, 8, 8)), torch.arange(16))  # tokens span channels


def test_filtered_logits_keep_the_top_k_and_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filtered_logits(logits, top_k=2)[0, 2:]).all()
    assert torch.isfinite(filtered_logits(logits, top_k=2)[0, :2]).all()
    nucleus = filtered_logits(logits, top_p=0.7)  # 0.5 < 0.7 <= 0.8: the two most likely
    assert torch.isfinite(nucleus[0, :2]).all() and torch.isinf(nucleus[0, 2:]).all()
    assert torch.isfinite(filtered_logits(logits, top_p=0.1)[0, 0])  # the most likely is always kept
    torch.testing.assert_close(filtered_logits(logits, temperature=2.0), logits / 2)
    for bad in (dict(temperature=0), dict(top_k=0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            filtered_logits(logits, **bad)


def test_a_trained_prior_beats_the_unigram_baseline_on_structured_codes():
    """Codes where each token repeats the previous one's id half the time: a unigram (position-wise frequencies)
    knows nothing of that (3 bits per token); the true entropy is 2.28 bits per token, and 250 steps of a small
    prior get within ~0.1 of it on held-out codes."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    tokens, codes_per_group = 16, 8

    def draw(count):
        codes = torch.randint(codes_per_group, (count, tokens), generator=generator)
        repeat = torch.rand(count, tokens, generator=generator) < 0.5
        for position in range(1, tokens):
            codes[:, position] = torch.where(repeat[:, position], codes[:, position - 1], codes[:, position])
        return codes

    train_codes, held_out = draw(4096), draw(256)
    prior = TokenPrior.for_codebooks(torch.randn(tokens, codes_per_group, 4), width=64, depth=2, heads=2)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=3e-3)
    for step in range(250):
        batch = train_codes[torch.randint(4096, (64,), generator=generator)]
        loss = prior.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    counts = torch.stack([torch.bincount(train_codes[:, t], minlength=codes_per_group) for t in range(tokens)])
    probabilities = (counts + 1) / (counts + 1).sum(1, keepdim=True)  # (T, K), add-one smoothed
    unigram = -probabilities.log2().gather(1, held_out.T).mean().item()
    assert unigram == pytest.approx(math.log2(codes_per_group), abs=0.05)  # uniform marginals: 3 bits
    assert prior.bits_per_token(held_out) < unigram - 0.4


def test_bad_codes_and_settings_are_named():
    prior = TokenPrior.for_codebooks(torch.randn(16, 8, 4), width=32, depth=1, heads=2)
    with pytest.raises(ValueError, match=r"outside \[0, 8\)"):
        prior.loss(torch.full((2, 16), 8))
    with pytest.raises(ValueError, match="integer ids of shape"):
        prior.loss(torch.zeros(2, 16))
    with pytest.raises(ValueError, match="codebooks must have shape"):
        TokenPrior(PriorConfig(tokens_per_image=16, code_dim=4), torch.randn(8, 8, 4))
    with pytest.raises(ValueError, match="order must be one of"):
        PriorConfig(order="diagonal")
