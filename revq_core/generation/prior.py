"""A token prior over ReVQ ids: an autoregressive transformer in the LlamaGen style (RMSNorm, SwiGLU, learned
positions, a KV cache), class-conditional or not.

ReVQ has one codebook per token position (G = T codebooks of K codes of D numbers), so the usual embedding
table and output layer of an image-token GPT, (T x K) x width each, would grow with T x K (256 x 262,144 x 768
numbers = 51 G for the paper's 256T-L). Here neither does:

- a token is embedded through **its code vector**: the D numbers of codebook[t][id], mapped by one shared
  small MLP (D -> width), plus a learned embedding of its position;
- the logits of position t's K candidates are **scores against codebook t's vectors**: the transformer's
  output at t is mapped to a query (width -> E) and each candidate k scores query . phi(codebook[t][k]), with
  phi one shared MLP (D -> E). So the parameters depend on T (positions) and D, never on K.

The codebooks are the tokenizer's, copied into the prior as a frozen buffer ``codebooks`` (G, K, D) when it is
made (``TokenPrior.for_codebooks``), so the prior needs no tokenizer code at sampling time: the codes file and
this buffer are all that pass between the two.

Sequence layout: position 0 of the input is the class token (or a start token), position s > 0 the embedding
of the token at step s - 1; the output at step s predicts the token at step s. Steps follow ``order``
(a permutation of the T token positions: the tokenizer's order, or another, ``token_order``).

Shapes: codes (B, T) int64 in tokenizer order; logits (B, T, K); hidden (B, S, width).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from revq_core.generation.sampling import filtered_logits
from revq_core.utils.files import REPO_ROOT, atomic_write, atomic_write_text

# The prior shipped with the repository (trained on the embedded photo crops' tokens of data/embedded_tokenizer).
EMBEDDED_PRIOR_DIR = REPO_ROOT / "data" / "embedded_prior"


class PriorInputError(ValueError):
    """Codes, labels or a prior directory that the prior cannot use (another tokenizer, missing labels, ...)."""


@dataclass(frozen=True)
class PriorConfig:
    tokens_per_image: int = 512  # T, the tokenizer's tokens per image
    code_dim: int = 4  # D, numbers per code vector
    num_groups: int | None = None  # G codebooks (token t uses t % G); None: T
    num_classes: int = 0  # class-conditional with this many classes; 0: unconditional
    width: int = 256  # transformer width
    depth: int = 4  # transformer blocks
    heads: int = 4  # attention heads (width / heads per head)
    score_dim: int = 64  # E, the dimension in which outputs are scored against code vectors
    score_hidden: int | None = None  # hidden width of phi (D -> hidden -> E), run on all G x K code vectors each
    # training step (its cost grows with K, not with the batch); None: max(E, 64)
    class_dropout: float = 0.1  # training: fraction of labels replaced by the "no class" token (for CFG)
    # "position": all channels of a spatial chunk first (the default: 0.06 fewer held-out bits per token than
    # "channel", the tokenizer's own order, on the embedded crops with the same budget, docs/generation.md)
    order: str = "position"

    def __post_init__(self):
        for name in ("tokens_per_image", "code_dim", "width", "depth", "heads", "score_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be a multiple of heads {self.heads}.")
        groups = self.groups
        if not isinstance(groups, int) or groups < 1 or self.tokens_per_image % groups:
            raise ValueError(f"num_groups must divide tokens_per_image = {self.tokens_per_image}, got {groups!r}.")
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0 (0: unconditional), got {self.num_classes!r}.")
        if not 0 <= self.class_dropout < 1:
            raise ValueError(f"class_dropout must be in [0, 1), got {self.class_dropout!r}.")
        if self.order not in TOKEN_ORDERS:
            raise ValueError(f"order must be one of {TOKEN_ORDERS}, got {self.order!r}.")

    @property
    def groups(self) -> int:
        return self.tokens_per_image if self.num_groups is None else self.num_groups


TOKEN_ORDERS = ("channel", "position")


def token_order(order: str, tokens_per_image: int, latent_shape: tuple[int, int, int] = (32, 8, 8)) -> torch.Tensor:
    """The permutation (T,) of token positions a prior steps through.

    ``channel``: the tokenizer's own order (identity): the channel-split tokenizer cuts the flattened (C, H, W)
    latent into T chunks, so all tokens of channel 0 come first. ``position``: the same tokens ordered by their
    spatial chunk first: with P = T / C tokens per channel (each a run of H*W / P positions of one channel),
    step s takes chunk s // C of channel s % C, i.e. all C channels of one spatial chunk, then the next chunk.
    Falls back to the identity where a token spans several channels (T < C)."""
    identity = torch.arange(tokens_per_image)
    channels = latent_shape[0]
    if order == "channel" or tokens_per_image % channels:
        return identity
    per_channel = tokens_per_image // channels  # P
    steps = torch.arange(tokens_per_image)
    return (steps % channels) * per_channel + steps // channels  # token position taken at each step


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(width))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden * torch.rsqrt(hidden.float().pow(2).mean(-1, keepdim=True) + self.eps).to(hidden) * self.weight


class FeedForward(nn.Module):
    """SwiGLU: (w1 x * silu) * w3 x -> w2, hidden size 8/3 width rounded up to a multiple of 32."""

    def __init__(self, width: int):
        super().__init__()
        hidden = 32 * math.ceil(8 * width / 3 / 32)
        self.w1, self.w3 = nn.Linear(width, hidden, bias=False), nn.Linear(width, hidden, bias=False)
        self.w2 = nn.Linear(hidden, width, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(hidden)) * self.w3(hidden))


class KVCache:
    """Keys and values of the steps seen so far, per block: (B, heads, S, head_dim) each, grown by ``append``."""

    def __init__(self, depth: int):
        self.keys: list[torch.Tensor | None] = [None] * depth
        self.values: list[torch.Tensor | None] = [None] * depth

    def append(self, block: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[block] is not None:
            keys, values = torch.cat([self.keys[block], keys], 2), torch.cat([self.values[block], values], 2)
        self.keys[block], self.values[block] = keys, values
        return keys, values

    @property
    def length(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv, self.out = nn.Linear(width, 3 * width, bias=False), nn.Linear(width, width, bias=False)

    def forward(self, hidden: torch.Tensor, cache: KVCache | None = None, block: int = 0) -> torch.Tensor:
        batch, steps, width = hidden.shape
        query, key, value = self.qkv(hidden).view(batch, steps, 3, self.heads, width // self.heads).unbind(2)
        query, key, value = (part.transpose(1, 2) for part in (query, key, value))  # (B, heads, S, head_dim)
        if cache is not None:
            past = cache.length
            key, value = cache.append(block, key, value)
            # The new steps attend to every cached step and causally among themselves.
            mask = torch.ones(steps, key.shape[2], dtype=torch.bool, device=hidden.device).tril(past)
            attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        else:
            attended = F.scaled_dot_product_attention(query, key, value, is_causal=True)
        return self.out(attended.transpose(1, 2).reshape(batch, steps, width))


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attention_norm, self.attention = RMSNorm(width), Attention(width, heads)
        self.ffn_norm, self.ffn = RMSNorm(width), FeedForward(width)

    def forward(self, hidden: torch.Tensor, cache: KVCache | None = None, block: int = 0) -> torch.Tensor:
        hidden = hidden + self.attention(self.attention_norm(hidden), cache, block)
        return hidden + self.ffn(self.ffn_norm(hidden))


def _code_mlp(code_dim: int, out: int, hidden: int | None = None, last_bias: bool = True) -> nn.Sequential:
    """The shared map of a code vector (..., D) -> (..., out): its parameters depend on D and out only."""
    hidden = max(out, 64) if hidden is None else hidden
    return nn.Sequential(nn.Linear(code_dim, hidden), nn.SiLU(), nn.Linear(hidden, out, bias=last_bias))


class TokenPrior(nn.Module):
    """p(codes | class) = prod over steps s of p(code at order[s] | class, earlier steps); see the module docstring.

    ``codebooks`` (G, K, D): the tokenizer's codebooks, a frozen buffer (saved with the prior)."""

    def __init__(self, config: PriorConfig, codebooks: torch.Tensor,
                 latent_shape: tuple[int, int, int] = (32, 8, 8), tokenizer: dict | None = None):
        super().__init__()
        # What the prior knows of its tokenizer (the codes file's meta: model, model_sha1, vae, latent_shape,
        # class_names, ...): saved with it, checked against the codes it is given (``check_codes_meta``).
        self.tokenizer = {**(tokenizer or {}), "latent_shape": [int(side) for side in latent_shape]}
        if codebooks.ndim != 3 or codebooks.shape[0] != config.groups or codebooks.shape[2] != config.code_dim:
            raise ValueError(f"codebooks must have shape (G, K, D) = ({config.groups}, K, {config.code_dim}), "
                             f"got {tuple(codebooks.shape)}.")
        self.config = config
        self.register_buffer("codebooks", codebooks.detach().clone())  # (G, K, D)
        self.register_buffer("order", token_order(config.order, config.tokens_per_image, latent_shape))  # (T,)
        self.embed_code = _code_mlp(config.code_dim, config.width)
        self.positions = nn.Parameter(torch.zeros(config.tokens_per_image, config.width))  # step s's position
        # class tokens: num_classes + 1 rows, the last one "no class" (unconditional, and CFG's other half)
        self.class_tokens = nn.Parameter(torch.zeros(config.num_classes + 1, config.width))
        self.blocks = nn.ModuleList(Block(config.width, config.heads) for _ in range(config.depth))
        self.norm = RMSNorm(config.width)
        self.to_query = nn.Linear(config.width, config.score_dim)
        # phi's output has no bias: it would add query . bias to all K logits of a step alike, which the softmax
        # ignores, so its gradient is 0 up to rounding and Adam would turn that rounding into updates.
        self.score_code = _code_mlp(config.code_dim, config.score_dim, config.score_hidden, last_bias=False)
        nn.init.normal_(self.positions, std=0.02)
        nn.init.normal_(self.class_tokens, std=0.02)

    @classmethod
    def for_codebooks(cls, codebooks: torch.Tensor, num_classes: int = 0, latent_shape=(32, 8, 8),
                      **fields) -> "TokenPrior":
        """A prior for a tokenizer's codebooks (G, K, D) with T = G (one codebook per position, ReVQ's layout)."""
        groups, _, code_dim = codebooks.shape
        config = PriorConfig(tokens_per_image=fields.pop("tokens_per_image", groups), code_dim=code_dim,
                             num_groups=groups, num_classes=num_classes, **fields)
        return cls(config, codebooks, latent_shape)

    # ---- saving and loading -------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` (the PriorConfig fields and ``tokenizer``) and ``model.safetensors`` (weights and
        the ``codebooks`` buffer, stored as float16 when that is exact), each atomically."""
        from safetensors.torch import save

        directory = Path(directory)
        state = {key: value.detach().cpu().contiguous() for key, value in self.state_dict().items()}
        if torch.equal(state["codebooks"].half().float(), state["codebooks"].float()):
            state["codebooks"] = state["codebooks"].half()  # half the file; every value kept
        data = save(state)
        atomic_write(directory / "model.safetensors", lambda file: file.write(data))
        atomic_write_text(directory / "config.json", json.dumps(
            {**dataclasses.asdict(self.config), "tokenizer": self.tokenizer}, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike | None = None, device: str | torch.device = "cpu"
                        ) -> "TokenPrior":
        """A prior written by ``save_pretrained`` (default: the shipped one, ``data/embedded_prior``), in eval mode."""
        from safetensors.torch import load_file

        directory = Path(EMBEDDED_PRIOR_DIR if directory is None else directory).expanduser()
        if not (directory / "config.json").is_file() or not (directory / "model.safetensors").is_file():
            hint = ("restore it with `git checkout -- data/embedded_prior`" if directory == EMBEDDED_PRIOR_DIR
                    else "train one with `python -m revq_core.train_prior --codes IDS --out DIR` (DIR/model)")
            raise FileNotFoundError(f"no token prior in {directory} (config.json + model.safetensors); {hint}.")
        try:
            fields = json.loads((directory / "config.json").read_text())
            tokenizer = fields.pop("tokenizer", {})
            config = PriorConfig(**fields)
            state = load_file(str(directory / "model.safetensors"))
        except (TypeError, ValueError, OSError) as error:
            raise PriorInputError(f"{directory} is not a token prior written by save_pretrained ({error}).") from None
        codebooks = state["codebooks"].float()
        prior = cls(config, codebooks, tuple(tokenizer.get("latent_shape", (32, 8, 8))), tokenizer)
        state["codebooks"] = codebooks
        state.pop("score_code.2.bias", None)  # written by priors made before phi lost its (softmax-invisible) bias
        prior.load_state_dict(state)
        return prior.to(device).eval()

    def check_codes_meta(self, meta: dict) -> None:
        """Raise PriorInputError if codes with this codes-file ``meta`` were made by another tokenizer than the
        prior's (another T, K, or weights: the tokenizer sha1 the prior recorded)."""
        for key, value in (("tokens_per_image", self.config.tokens_per_image), ("codes_per_group", self.codes_per_group)):
            if meta.get(key) is not None and meta.get(key) != value:
                raise PriorInputError(f"these codes have {key} = {meta.get(key)}, but the prior models {key} = {value}: "
                                      "they come from another tokenizer.")
        mine, theirs = self.tokenizer.get("model_sha1"), meta.get("model_sha1")
        if mine and theirs and mine != theirs:
            raise PriorInputError(f"these codes were made by tokenizer {meta.get('model', '?')} (weights sha1 "
                                  f"{theirs[:12]}), but the prior was trained on the codes of tokenizer "
                                  f"{self.tokenizer.get('model', '?')} (sha1 {mine[:12]}): its ids mean other vectors.")

    @property
    def class_names(self) -> list[str]:
        return list(self.tokenizer.get("class_names") or [])

    @property
    def codes_per_group(self) -> int:
        return self.codebooks.shape[1]

    def _groups_of_steps(self, steps: torch.Tensor) -> torch.Tensor:
        """The codebook index of the token taken at each step in ``steps`` (S,)."""
        return self.order[steps] % self.config.groups

    def _class_rows(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Labels (B,) (or None: unconditional) -> class-token rows (B,); -1 means "no class"."""
        no_class = self.config.num_classes
        if labels is None:
            return torch.full((batch,), no_class, dtype=torch.long, device=self.positions.device)
        labels = torch.as_tensor(labels).to(self.positions.device).long()
        if labels.shape != (batch,):
            raise PriorInputError(f"labels must have shape ({batch},), one per image, got {tuple(labels.shape)}.")
        if labels.numel() and int(labels.max()) >= no_class:
            raise PriorInputError(f"class index {int(labels.max())} is out of range: the prior knows "
                                  f"{no_class} classes (0 .. {no_class - 1}; -1 for none).")
        return torch.where(labels < 0, torch.full_like(labels, no_class), labels)

    def _embed_steps(self, codes_in_order: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """Codes (B, S) taken at ``steps`` (S,) -> their embeddings (B, S, width): code vector MLP."""
        vectors = self.codebooks[self._groups_of_steps(steps)[None, :], codes_in_order]  # (B, S, D)
        return self.embed_code(vectors)

    def _inputs(self, codes: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Codes (B, T) in tokenizer order -> the input sequence (B, T, width): class token, then steps 0..T-2."""
        batch, tokens = codes.shape
        in_order = codes[:, self.order]  # (B, T) in step order
        steps = torch.arange(tokens - 1, device=codes.device)
        first = self.class_tokens[self._class_rows(labels, batch)][:, None, :]  # (B, 1, width)
        return torch.cat([first, self._embed_steps(in_order[:, :-1], steps)], 1) + self.positions

    def _logits(self, hidden: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """Outputs (B, S, width) at ``steps`` (S,) -> logits (B, S, K) over each step's codebook."""
        query = self.to_query(self.norm(hidden))  # (B, S, E)
        features = self.score_code(self.codebooks[self._groups_of_steps(steps)])  # (S, K, E)
        return torch.einsum("bse,ske->bsk", query, features) / math.sqrt(self.config.score_dim)

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Codes (B, T) in tokenizer order (and labels (B,), -1 = none) -> logits (B, T, K) in step order:
        logits[:, s] score the token at position ``order[s]``."""
        self._check_codes(codes)
        if self.config.num_classes and labels is None:
            raise PriorInputError(f"this prior is class-conditional ({self.config.num_classes} classes): pass labels "
                                  "(one class index per image, -1 for none).")
        hidden = self._inputs(codes, labels)
        for block in self.blocks:
            hidden = block(hidden)
        return self._logits(hidden, torch.arange(codes.shape[1], device=codes.device))

    def loss(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy (nats per token) of codes (B, T)."""
        logits = self(codes, labels)
        return F.cross_entropy(logits.flatten(0, 1).float(), codes[:, self.order].flatten())

    @torch.no_grad()
    def bits_per_token(self, codes: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 64) -> float:
        """Held-out bits per token of codes (N, T): the mean cross-entropy in bits."""
        if codes.shape[0] == 0:
            raise PriorInputError("bits_per_token got no codes (N = 0): pass at least one image's ids.")
        was_training = self.training
        self.eval()
        total = 0.0
        for start in range(0, codes.shape[0], batch_size):
            part = codes[start:start + batch_size].to(self.positions.device)
            part_labels = None if labels is None else labels[start:start + batch_size]
            total += float(self.loss(part, part_labels)) * part.shape[0]
        self.train(was_training)
        return total / codes.shape[0] / math.log(2)

    def _check_codes(self, codes: torch.Tensor) -> None:
        if codes.is_floating_point() or codes.ndim != 2 or codes.shape[1] != self.config.tokens_per_image:
            raise PriorInputError(f"codes must be integer ids of shape (B, {self.config.tokens_per_image}), got "
                             f"{codes.dtype} {tuple(codes.shape)}.")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codes_per_group):
            raise PriorInputError(f"codes hold ids outside [0, {self.codes_per_group}): min {int(codes.min())}, max "
                             f"{int(codes.max())}; were they made by another tokenizer?")

    # ---- sampling ------------------------------------------------------------------------------
    @torch.no_grad()
    def step_logits(self, inputs: torch.Tensor, cache: KVCache | None, start: int) -> torch.Tensor:
        """The logits of the steps following ``inputs`` (B, S, width) (the input sequence from ``start``): with a
        ``cache`` the earlier steps come from it; returns the last step's logits (B, K)."""
        hidden = inputs + self.positions[start:start + inputs.shape[1]]
        for index, block in enumerate(self.blocks):
            hidden = block(hidden, cache, index)
        step = torch.tensor([start + inputs.shape[1] - 1], device=inputs.device)
        return self._logits(hidden[:, -1:], step)[:, 0]

    @torch.no_grad()
    def sample(self, num_images: int, labels: torch.Tensor | None = None, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, cfg_scale: float = 1.0, seed: int = 0,
               use_cache: bool = True) -> torch.Tensor:
        """Sample codes (num_images, T) in tokenizer order, for the detokenizer.

        ``labels`` (num_images,) for a class-conditional prior (None: unconditional); ``cfg_scale`` > 1 mixes
        the conditional and unconditional logits (u + s (c - u)); ``temperature``, ``top_k`` and ``top_p``
        shape each step's distribution; draws come from a generator seeded with ``seed``. ``use_cache=False``
        recomputes every step from the whole prefix (the same tokens, slower: a check of the cache)."""
        self.eval()
        device = self.positions.device
        generator = torch.Generator(device=device).manual_seed(seed)
        guided = labels is not None and cfg_scale != 1.0
        rows = self._class_rows(labels, num_images)
        if guided:
            rows = torch.cat([rows, self._class_rows(None, num_images)])
        sequence = self.class_tokens[rows][:, None, :]  # (B', 1, width): the input so far
        cache = KVCache(self.config.depth) if use_cache else None
        steps_codes = []
        for step in range(self.config.tokens_per_image):
            if cache is not None:
                new = sequence[:, -1:] if step else sequence
                logits = self.step_logits(new, cache, sequence.shape[1] - new.shape[1])
            else:
                logits = self.step_logits(sequence, None, 0)
            if guided:
                conditional, unconditional = logits.chunk(2)
                logits = unconditional + cfg_scale * (conditional - unconditional)
            logits = filtered_logits(logits.float(), temperature, top_k, top_p)
            drawn = torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]  # (B,)
            steps_codes.append(drawn)
            if step + 1 < self.config.tokens_per_image:
                step_index = torch.tensor([step], device=device)
                drawn_all = torch.cat([drawn, drawn]) if guided else drawn
                sequence = torch.cat([sequence, self._embed_steps(drawn_all[:, None], step_index)], 1)
        in_order = torch.stack(steps_codes, 1)  # (B, T) in step order
        codes = torch.empty_like(in_order)
        codes[:, self.order] = in_order
        return codes
