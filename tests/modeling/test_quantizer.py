import pickle

import pytest
import torch
from helpers import brute_force_codes

from revq_core.modeling.quantizers.multigroup import MultiGroupQuantizer
from revq_core.ops import codebook_grad, search
from revq_core.ops.search import _chunk_sizes, nearest_codes


def _in_place(quantizer, mode):
    """The in-place codebook gradient as ``prepare_training`` sets it on the CPU ("rows": one process,
    "sparse": under DDP); another mode name goes straight to ``InPlaceCodebookGrad`` (which refuses it)."""
    if mode not in ("rows", "sparse"):
        return codebook_grad.InPlaceCodebookGrad(quantizer.codebook, mode)
    quantizer.prepare_training(torch.device("cpu"), distributed=mode == "sparse")
    return quantizer.in_place_grad


@pytest.mark.parametrize("split,groups,tokens", [("channel", 512, 512), ("channel", 128, 512), ("spatial", 128, 128),
                                                 ("spatial", 32, 32), ("single", 1, 256), ("channel", 64, 64)])
def test_nearest_neighbour_equals_brute_force(split, groups, tokens):
    quantizer = MultiGroupQuantizer(groups, 64, 2048 // tokens, split)
    latent = torch.randn(6, 32, 8, 8)
    expected = brute_force_codes(quantizer.to_tokens(latent), quantizer.codebook.detach(), quantizer.group_of_token)
    assert torch.equal(quantizer.encode(latent), expected)


def test_scaled_down_paper_config_matches_brute_force():
    quantizer = MultiGroupQuantizer(512, 1024, 4, "channel")  # paper 512T layout, K scaled down 16x
    latent = torch.randn(4, 32, 8, 8)
    expected = brute_force_codes(quantizer.to_tokens(latent), quantizer.codebook.detach(), quantizer.group_of_token)
    assert torch.equal(quantizer.encode(latent), expected)


def test_search_result_does_not_depend_on_chunking(monkeypatch):
    """The torch matmul search (the C++ kernel off: it ignores memory_mb) gives the brute-force codes whether
    it runs in 24 chunks (memory_mb=1: 131 rows of one group at a time) or in one."""
    monkeypatch.setenv("REVQ_CPU_KERNEL", "0")
    chunks = []
    nearest_in_chunk = search._nearest_in_chunk
    monkeypatch.setattr(search, "_nearest_in_chunk", lambda tokens, *args: chunks.append(tokens.shape[:2])
                        or nearest_in_chunk(tokens, *args))
    tokens, codebook = torch.randn(8, 300, 4), torch.randn(8, 2000, 4)
    expected = search.brute_force_nearest_codes(tokens, codebook)
    assert torch.equal(nearest_codes(tokens, codebook, memory_mb=1), expected)
    assert len(chunks) == 24 and max(rows for _, rows in chunks) == 131 and {groups for groups, _ in chunks} == {1}
    chunks.clear()
    assert torch.equal(nearest_codes(tokens, codebook, memory_mb=256), expected)
    assert chunks == [(8, 300)]


def test_chunks_respect_the_memory_bound_at_paper_scale():
    for groups, rows, codes, memory_mb in [(512, 256, 16384, 256), (256, 128, 262144, 256), (256, 128, 262144, 16)]:
        rows_per_chunk, groups_per_chunk = _chunk_sizes(groups, rows, codes, memory_mb)
        assert rows_per_chunk * groups_per_chunk * codes * 4 <= memory_mb * 2**20


def test_ties_go_to_the_lowest_index():
    quantizer = MultiGroupQuantizer(1, 6, 4, "single", latent_shape=(4, 1, 1))
    with torch.no_grad():
        quantizer.codebook[0] = torch.tensor([[5.0] * 4, [1.0] * 4, [3.0] * 4, [1.0] * 4, [1.0] * 4, [-1.0] * 4])
    latent = torch.full((1, 4, 1, 1), 1.0)
    assert quantizer.encode(latent).item() == 1
    equidistant = torch.zeros((1, 4, 1, 1))  # distance 4 to codes 1, 3, 4 and 5
    assert quantizer.encode(equidistant).item() == 1


def test_near_ties_that_float32_matmul_gets_wrong_are_resolved_exactly():
    # Large norms: the matmul form ||c||^2 - 2 x.c rounds at ~0.06, far above the gap between codes.
    offset = torch.tensor([4000.0, 0.0, 0.0, 0.0])
    codes = torch.stack([offset + torch.tensor([0.0, 0.0, 0.003, 0.0]),
                         offset + torch.tensor([0.0, 0.002, 0.0, 0.0])] * 8)  # (16, 4)
    codes[1::2] += torch.linspace(0, 1e-4, 8)[:, None] * torch.tensor([0.0, 0.0, 0.0, 1.0])
    tokens = offset + 0.0005 * torch.randn(64, 4)
    exact = (tokens.double()[:, None] - codes.double()).pow(2).sum(-1).argmin(-1)
    assert torch.equal(nearest_codes(tokens[None], codes[None])[0], exact)


def test_without_the_cpu_kernel_the_matmul_form_and_torch_re_rank_are_exact(monkeypatch):
    monkeypatch.setenv("REVQ_CPU_KERNEL", "0")  # no fused search and no C++ re-rank: the torch fallbacks
    offset = torch.tensor([3000.0, 0.0, 0.0, 0.0])
    codes = offset + 1e-3 * torch.randn(3, 300, 4)
    tokens = offset + 1e-3 * torch.randn(3, 20, 4)
    exact = (tokens.double()[:, :, None] - codes.double()[:, None]).pow(2).sum(-1).argmin(-1)
    assert torch.equal(nearest_codes(tokens, codes), exact)


@pytest.mark.parametrize("cpu_kernel", ["0", "1"])
def test_code_search_stays_float32_under_bf16_autocast(monkeypatch, cpu_kernel):
    """Under bf16 autocast (the training speed setting) the search must still run in float32: the torch
    matmul fallback's baddbmm would otherwise run in bf16 (~3 significant digits) and pick wrong codes. With
    the C++ kernel off ("0") the fallback runs; with it on ("1") the kernel, whatever autocast says."""
    monkeypatch.setenv("REVQ_CPU_KERNEL", cpu_kernel)
    quantizer = MultiGroupQuantizer(64, 64, 32, "channel")
    latent = torch.randn(8, 32, 8, 8)
    expected = brute_force_codes(quantizer.to_tokens(latent), quantizer.codebook.detach(), quantizer.group_of_token)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(quantizer(latent).codes, expected)
        assert torch.equal(quantizer.encode(latent), expected)


def test_search_builds_no_autograd_graph_and_gradients_reach_only_selected_codes():
    quantizer = MultiGroupQuantizer(64, 32, 32, "channel")
    latent = torch.randn(3, 32, 8, 8)
    assert quantizer.encode(latent).grad_fn is None
    output = quantizer(latent)
    output.loss.backward()
    gradient_rows = quantizer.codebook.grad.abs().sum(-1) > 0  # (G, K)
    selected = torch.zeros_like(gradient_rows)
    selected[quantizer.group_of_token.expand_as(output.codes), output.codes] = True
    assert torch.equal(gradient_rows, selected)


def test_forward_matches_encode_then_decode():
    quantizer = MultiGroupQuantizer(256, 16, 8, "channel")
    latent = torch.randn(2, 32, 8, 8)
    output = quantizer(latent)
    assert output.codes.dtype == torch.int64 and output.codes.shape == (2, 256)
    assert torch.equal(output.codes, quantizer.encode(latent))
    assert torch.allclose(output.quantized, quantizer.decode(output.codes))
    assert torch.allclose(output.loss, ((output.quantized - latent) ** 2).mean())


def test_channel_split_tokens_are_consecutive_chunks_and_never_mix_channels():
    quantizer = MultiGroupQuantizer(512, 4, 4, "channel")
    latent = torch.arange(2 * 2048, dtype=torch.float32).reshape(2, 32, 8, 8)
    tokens = quantizer.to_tokens(latent)
    assert torch.equal(tokens, latent.reshape(2, 512, 4))
    channel_of_value = torch.arange(32).repeat_interleave(64).float()[None].expand(2, -1).reshape(2, 32, 8, 8)
    token_channels = quantizer.to_tokens(channel_of_value)
    for code_dim in (4, 16, 64):  # every D <= H*W keeps one channel per token
        token_channels = MultiGroupQuantizer(2048 // code_dim, 4, code_dim).to_tokens(channel_of_value)
        assert torch.equal(token_channels.amin(-1), token_channels.amax(-1))


def test_spatial_split_and_secondary_split_layout():
    latent = torch.randn(2, 32, 8, 8)
    per_position = MultiGroupQuantizer(64, 4, 32, "spatial").to_tokens(latent)  # T = H*W, D = C
    assert torch.equal(per_position[:, 8 * 3 + 5], latent[:, :, 3, 5])
    secondary = MultiGroupQuantizer(128, 4, 16, "spatial").to_tokens(latent)  # T = 2 H*W: each C-vector cut in two
    assert torch.equal(secondary[:, 2 * (8 * 3 + 5)], latent[:, :16, 3, 5])
    assert torch.equal(secondary[:, 2 * (8 * 3 + 5) + 1], latent[:, 16:, 3, 5])
    merged = MultiGroupQuantizer(32, 4, 64, "spatial").to_tokens(latent)  # T = H*W / 2: two positions per token
    assert torch.equal(merged[:, 0], torch.cat([latent[:, :, 0, 0], latent[:, :, 0, 1]], dim=1))


@pytest.mark.parametrize("split,groups,code_dim", [("channel", 512, 4), ("spatial", 128, 16), ("single", 1, 8)])
def test_layout_round_trip(split, groups, code_dim):
    quantizer = MultiGroupQuantizer(groups, 4, code_dim, split)
    latent = torch.randn(3, 32, 8, 8)
    assert torch.equal(quantizer.to_latent(quantizer.to_tokens(latent)), latent)


def test_token_t_uses_codebook_t_mod_groups():
    quantizer = MultiGroupQuantizer(4, 3, 128, "channel")  # T = 16 tokens, G = 4 codebooks
    assert quantizer.group_of_token.tolist() == [t % 4 for t in range(16)]
    codes = torch.zeros(1, 16, dtype=torch.long)
    decoded_tokens = quantizer.to_tokens(quantizer.decode(codes))
    for token in range(16):
        assert torch.equal(decoded_tokens[0, token], quantizer.codebook[token % 4, 0].detach())


def test_init_from_samples_copies_data_tokens_of_the_same_group():
    quantizer = MultiGroupQuantizer(128, 20, 16)
    latents = torch.randn(30, 32, 8, 8)
    quantizer.init_from_samples(latents, generator=torch.Generator().manual_seed(1))
    tokens = quantizer.to_tokens(latents)  # (N, T, D)
    for group in (0, 77, 127):
        matches = (quantizer.codebook[group][:, None, :] == tokens[None, :, group]).all(-1)  # (K, N)
        assert matches.any(1).all()
        assert len(set(matches.float().argmax(1).tolist())) == 20  # distinct samples: no replacement


def test_kmeans_init_lowers_quantization_error():
    latents = torch.randn(200, 32, 8, 8)
    samples, kmeans = MultiGroupQuantizer(64, 16, 32), MultiGroupQuantizer(64, 16, 32)
    samples.init_from_samples(latents, generator=torch.Generator().manual_seed(0))
    kmeans.init_from_samples(latents, method="kmeans", kmeans_iters=5, generator=torch.Generator().manual_seed(0))
    assert kmeans(latents).loss < 0.95 * samples(latents).loss


def test_init_draws_with_replacement_from_fewer_tokens_than_codes():
    """10 latents give each of the 512 codebooks 10 tokens for its K = 64 codes: every code is a copy of one of
    them (drawn with replacement, as the authors do), and more than one of them is used."""
    quantizer, latents = MultiGroupQuantizer(512, 64, 4), torch.randn(10, 32, 8, 8)
    quantizer.init_from_samples(latents, generator=torch.Generator().manual_seed(1))
    tokens = quantizer.to_tokens(latents)  # (N, T, D)
    for group in (0, 300, 511):
        matches = (quantizer.codebook[group][:, None, :] == tokens[None, :, group]).all(-1)  # (K, N)
        assert matches.any(1).all()
        assert 1 < len(set(matches.float().argmax(1).tolist())) <= 10
    with pytest.raises(ValueError, match="empty batch"):
        quantizer.init_from_samples(torch.randn(0, 32, 8, 8))


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_groups=512, codes_per_group=8, code_dim=3), "does not divide"),
    (dict(num_groups=100, codes_per_group=8, code_dim=4), "must divide the T = 512"),
    (dict(num_groups=4, codes_per_group=8, code_dim=4, split="single"), "num_groups must be 1"),
    (dict(num_groups=4, codes_per_group=8, code_dim=4, split="diagonal"), "split must be one of"),
    (dict(num_groups=1, codes_per_group=0, code_dim=4), "positive integer"),
    (dict(num_groups=32, codes_per_group=8, code_dim=48, split="spatial", latent_shape=(32, 8, 6)), "spatial"),
])
def test_bad_configurations_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiGroupQuantizer(**kwargs)


def test_bad_latents_and_codes_are_explained():
    quantizer = MultiGroupQuantizer(512, 8, 4)
    with pytest.raises(ValueError, match="channel count differs"):
        quantizer(torch.randn(2, 16, 8, 8))
    with pytest.raises(ValueError, match="without a batch dimension"):
        quantizer(torch.randn(32, 8, 8))
    with pytest.raises(ValueError, match="4 dimensions"):
        quantizer(torch.randn(2, 2048))
    bad = torch.randn(2, 32, 8, 8)
    bad[1, 3, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        quantizer.encode(bad)
    with pytest.raises(ValueError, match=r"outside \[0, 8\)"):
        quantizer.decode(torch.full((1, 512), 8))
    with pytest.raises(ValueError, match=r"shape \(B, 512\)"):
        quantizer.decode(torch.zeros(1, 256, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        quantizer.decode(torch.zeros(1, 512))


@pytest.mark.parametrize("mode", ["sparse", "rows"])
def test_in_place_codebook_gradient_equals_index_select_and_grad_stays_dense(mode):
    generator = torch.Generator().manual_seed(5)
    latent = torch.randn(6, 32, 8, 8, generator=generator)
    plain = MultiGroupQuantizer(64, 8, 32, "channel")  # K = 8: many tokens share a code (duplicate rows in the sum)
    fast = MultiGroupQuantizer(64, 8, 32, "channel")
    fast.load_state_dict(plain.state_dict())
    in_place = _in_place(fast, mode)
    plain(latent).loss.backward()
    fast(latent).loss.backward()  # no .grad yet: the dense gradient, as index_select
    assert fast.codebook.grad.layout == torch.strided and torch.equal(fast.codebook.grad, plain.codebook.grad)
    kept = fast.codebook.grad
    for scale in (2.0, -3.0):
        in_place.zero_grad()
        plain.zero_grad(set_to_none=True)
        plain(scale * latent).loss.backward()
        fast(scale * latent).loss.backward()  # added in place into the kept tensor
        assert fast.codebook.grad is kept and fast.codebook.grad.layout == torch.strided
        assert torch.equal(fast.codebook.grad, plain.codebook.grad)
    with torch.no_grad():
        assert torch.equal(fast(latent).quantized, plain(latent).quantized)  # no graph: the plain lookup
    with pytest.raises(ValueError, match="mode must be one of"):
        _in_place(fast, "dense")


def test_zeroing_only_the_touched_rows_leaves_an_all_zero_gradient():
    """In "rows" mode zero_grad zeroes the rows the backwards wrote; where those rows are unknown (a fresh
    dense .grad, a backward in another mode or without the in-place lookup, a replaced tensor) it zeroes all."""
    generator = torch.Generator().manual_seed(6)
    quantizer = MultiGroupQuantizer(64, 16, 32, "channel")
    in_place = _in_place(quantizer, "rows")

    def step(scale):
        quantizer(scale * torch.randn(3, 32, 8, 8, generator=generator)).loss.backward()

    step(1.0)  # no .grad yet: a fresh dense gradient, its rows not tracked
    in_place.zero_grad()
    assert not quantizer.codebook.grad.any()
    for scale in (1.0, 3.0):  # two backwards before one zeroing: both sets of rows are zeroed
        step(scale)
    written = quantizer.codebook.grad.abs().sum(-1) > 0  # (G, K)
    assert 0 < written.sum() < written.numel()  # not every code was picked: a partial zero is tested
    in_place.zero_grad()
    assert not quantizer.codebook.grad.any()
    _in_place(quantizer, "sparse")  # its backwards add anywhere: the next zero must be whole
    step(1.0)
    in_place = _in_place(quantizer, "rows")
    in_place.zero_grad()
    assert not quantizer.codebook.grad.any()
    quantizer.finish_training()  # a plain backward adds anywhere too
    step(1.0)
    in_place = _in_place(quantizer, "rows")
    in_place.zero_grad()
    assert not quantizer.codebook.grad.any()
    quantizer.codebook.grad = torch.ones_like(quantizer.codebook)  # a replaced tensor: zeroed whole
    in_place.zero_grad()
    assert not quantizer.codebook.grad.any()
    copied = pickle.loads(pickle.dumps(quantizer))  # the weakref to the gradient is not pickled
    assert copied.in_place_grad._rows_since_zero is None and copied.in_place_grad._zeroed_grad is None
    assert copied.in_place_grad.codebook is copied.codebook  # the copy adds into its own codebook's gradient
