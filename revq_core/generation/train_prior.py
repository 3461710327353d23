"""Training a token prior on a codes file: AdamW with linear warm-up and cosine decay, gradient clipping, bf16
autocast on CUDA, a held-out split, the project's run directory (``training/run_dir.py``: one run per directory,
``--resume`` / ``--overwrite``), an atomic checkpoint after every epoch (``training/checkpoint.py``) and exact
resume (an interrupted and resumed run ends with the weights of an uninterrupted one, bit for bit), torchrun DDP
(``utils/distributed.py``: every rank takes its contiguous shard of each global batch).

    codes, names, meta = load_codes("ids/train")
    prior, history = train_prior(codes, PRIOR_PRESETS["embedded"], codebooks=load_codebooks("ids/train"),
                                 tokenizer=meta, output_dir="runs/prior")

Files in ``output_dir``: ``checkpoint.pt`` (every epoch), ``history.json`` (per-epoch records: train and held-out
bits per token, the unigram baseline's, learning rate, seconds, tokens per second) and ``model/`` (the finished
prior, ``TokenPrior.save_pretrained``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from revq_core.generation.evaluation import unigram_bits_per_token
from revq_core.generation.prior import PriorConfig, PriorInputError, TokenPrior
from revq_core.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from revq_core.training.run_dir import CHECKPOINT, HISTORY, MODEL, claim_run_directory
from revq_core.utils import distributed
from revq_core.utils.checks import check_device
from revq_core.utils.files import atomic_write_text
from revq_core.utils.threads import cpu_threads

# PriorConfig fields a preset may set; T, D, G and the class count come from the codes file.
ARCHITECTURE_FIELDS = ("width", "depth", "heads", "score_dim", "score_hidden", "class_dropout", "order")


@dataclass(frozen=True)
class PriorTrainConfig:
    architecture: dict = field(default_factory=lambda: {"width": 128, "depth": 4, "heads": 4, "score_dim": 64})
    epochs: int = 10
    batch_size: int = 32  # global batch (images)
    steps_per_epoch: int | None = None  # None: one pass over the training codes (last partial batch dropped)
    lr: float = 1e-3  # peak learning rate after warm-up
    warmup_steps: int = 100  # linear warm-up from 0
    min_lr_fraction: float = 0.1  # cosine decay down to this fraction of lr at the last step
    weight_decay: float = 0.05
    betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0
    held_out_fraction: float = 0.05  # of the codes, when no separate held-out codes are given
    eval_images: int | None = 1024  # held-out images scored after each epoch (None: all)
    seed: int = 0
    device: str = "cpu"
    num_threads: int | None = None  # CPU threads ($REVQ_NUM_THREADS wins)
    autocast_bf16: bool | None = None  # None: on for CUDA, off on the CPU

    def __post_init__(self):
        unknown = set(self.architecture) - set(ARCHITECTURE_FIELDS)
        if unknown:
            raise ValueError(f"architecture holds unknown fields {sorted(unknown)}; allowed: {ARCHITECTURE_FIELDS}.")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not 0 <= self.held_out_fraction < 1:
            raise ValueError(f"held_out_fraction must be in [0, 1), got {self.held_out_fraction!r}.")

    def recipe_dict(self) -> dict:
        """What a checkpoint must share with a run that resumes it (everything but device and threads)."""
        fields = dataclasses.asdict(self)
        fields["betas"] = list(self.betas)
        for name in ("device", "num_threads"):
            fields.pop(name)
        return fields

    def replace(self, **changes) -> "PriorTrainConfig":
        return dataclasses.replace(self, **changes)


# Named sizes, as LlamaGen's GPT_models: tiny (tests, the notebook), embedded (the shipped prior on 1 CPU thread),
# imagenet_b (paper scale: ImageNet class-conditional, LlamaGen-B-like, ~100 M parameters with the 256-token
# K = 262,144 tokenizer; its recipe is LlamaGen's: batch 256, lr 1e-4, wd 0.05, 300 epochs, class dropout 0.1).
PRIOR_PRESETS: dict[str, PriorTrainConfig] = {
    "tiny": PriorTrainConfig(architecture={"width": 64, "depth": 2, "heads": 2, "score_dim": 16, "score_hidden": 16},
                             epochs=2,
                             batch_size=16, lr=2e-3, warmup_steps=10, eval_images=256),
    "embedded": PriorTrainConfig(architecture={"width": 96, "depth": 3, "heads": 4, "score_dim": 32}, epochs=4,
                                 batch_size=16, steps_per_epoch=55, lr=2e-3, warmup_steps=20, eval_images=128),
    "imagenet_b": PriorTrainConfig(architecture={"width": 768, "depth": 12, "heads": 12, "score_dim": 64,
                                                 "class_dropout": 0.1}, epochs=300, batch_size=256, lr=1e-4,
                                   warmup_steps=5000, weight_decay=0.05, eval_images=10000, device="cuda"),
}


@dataclass
class PriorHistory:
    epoch: list = field(default_factory=list)
    train_bits: list = field(default_factory=list)  # mean training loss of the epoch, bits per token
    held_out_bits: list = field(default_factory=list)  # held-out bits per token after the epoch
    unigram_bits: list = field(default_factory=list)  # the per-position unigram baseline on the same held-out codes
    lr: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    tokens_per_second: list = field(default_factory=list)  # training tokens per second (all ranks)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def split_held_out(count: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train ids, held-out ids): a seeded permutation of ``count`` rows, the last ``fraction`` held out (>= 1)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 7919 + 17))
    held = max(1, round(count * fraction)) if fraction > 0 else 0
    if count - held < 1:
        raise PriorInputError(f"{count} images are too few to hold out {held}: pass more codes or held-out codes.")
    return order[:count - held].sort().values, order[count - held:].sort().values


def build_prior(config: PriorTrainConfig, codebooks: torch.Tensor, num_classes: int = 0,
                tokenizer: dict | None = None) -> TokenPrior:
    """An untrained prior for the tokenizer's codebooks (G, K, D) with the preset's architecture."""
    meta = tokenizer or {}
    latent_shape = tuple(meta.get("latent_shape") or (32, 8, 8))
    kept = {key: meta[key] for key in ("model", "model_sha1", "vae", "image_size", "quantizer", "class_names")
            if key in meta}
    # The prior sees the code vectors rounded to float16: they are its input features only, and the saved prior
    # then stores them exactly in half the bytes (the paper's 256 x 262,144 x 8 codebooks: 1 GiB, not 2).
    codebooks = codebooks.detach().half().float()
    groups, _, code_dim = codebooks.shape
    prior_config = PriorConfig(tokens_per_image=int(meta.get("tokens_per_image") or groups), code_dim=code_dim,
                               num_groups=groups, num_classes=num_classes, **config.architecture)
    return TokenPrior(prior_config, codebooks, latent_shape, kept)


def lr_lambda(config: PriorTrainConfig, total_steps: int):
    """The learning-rate factor of step s: linear warm-up over ``warmup_steps``, then cosine to ``min_lr_fraction``."""
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return config.min_lr_fraction + (1 - config.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * min(progress, 1)))

    return factor


def _rows(codes, ids: torch.Tensor) -> torch.Tensor:
    """Rows ``ids`` of stored codes (a tensor or a possibly memory-mapped array) as int64 (n, T)."""
    if isinstance(codes, torch.Tensor):
        return codes[ids].long()
    return torch.from_numpy(np.asarray(codes[ids.numpy()]).astype(np.int64))


def check_training_inputs(codes, labels, codebooks, tokenizer: dict | None, num_classes: int) -> None:
    """One-line errors before anything is written: no codes, ids outside [0, K), labels missing or out of range."""
    if len(codes) == 0:
        raise PriorInputError("the codes file holds no images (N = 0): pretokenize a data set first; nothing was written.")
    if codebooks is None:
        raise PriorInputError("no codebooks were given: the prior embeds ids through the tokenizer's code vectors "
                              "(codebooks.safetensors, written by `python -m revq_core.pretokenize`).")
    tokens, codes_per_group = codebooks.shape[0], codebooks.shape[1]
    if tokenizer and tokenizer.get("codes_per_group") not in (None, codes_per_group):
        raise PriorInputError(f"the codes file says K = {tokenizer['codes_per_group']} but its codebooks hold "
                              f"{codes_per_group} codes per position: they come from different tokenizers.")
    low, high = codes_per_group, 0
    for start in range(0, len(codes), 65536):  # bounded memory for a memory-mapped file
        part = np.asarray(codes[start:start + 65536])
        low, high = min(low, int(part.min())), max(high, int(part.max()))
    if low < 0 or high >= codes_per_group:
        raise PriorInputError(f"the codes hold ids outside [0, {codes_per_group}) (min {low}, max {high}): they were "
                              "not made by the tokenizer whose codebooks were given.")
    if codes.shape[1] % tokens and tokens % codes.shape[1]:
        raise PriorInputError(f"the codes have {codes.shape[1]} tokens per image, the codebooks {tokens} positions.")
    if num_classes:
        if labels is None or not bool((torch.as_tensor(np.asarray(labels)) >= 0).any()):
            raise PriorInputError(f"a class-conditional prior ({num_classes} classes) needs labels, but the codes "
                                  "file has none: pretokenize an image folder with class folders, or train "
                                  "unconditionally (--unconditional).")
        if int(np.max(np.asarray(labels))) >= num_classes:
            raise PriorInputError(f"a label is {int(np.max(np.asarray(labels)))}, out of range for {num_classes} classes.")


def train_prior(codes, config: PriorTrainConfig, codebooks: torch.Tensor, tokenizer: dict | None = None,
                labels=None, held_out=None, held_out_labels=None, num_classes: int | None = None,
                output_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
                stop_after: int | None = None, progress: bool = True) -> tuple[TokenPrior, PriorHistory]:
    """Train a token prior on ``codes`` (N, T) and return (prior, history).

    codes: ids (a tensor or a memory-mapped array, ``open_codes``); codebooks (G, K, D): the tokenizer's
    (``load_codebooks``); tokenizer: the codes file's meta (recorded in the prior: its sha1 is checked against
    codes given later); labels (N,) class indices (-1: none). num_classes: None = the number of
    ``tokenizer['class_names']`` when labels are given, else 0 (unconditional). held_out (M, T): codes to score
    after each epoch; None holds out ``config.held_out_fraction`` of ``codes``. ``stop_after`` ends this call after
    that many epochs; ``resume=True`` continues ``output_dir/checkpoint.pt`` to the same weights as one run."""
    if resume and overwrite:
        raise ValueError("resume=True continues the run in output_dir, overwrite=True deletes it: pass only one.")
    class_names = (tokenizer or {}).get("class_names") or []
    if num_classes is None:
        num_classes = len(class_names) if labels is not None and class_names else 0
    check_training_inputs(codes, labels, codebooks, tokenizer, num_classes)
    if held_out is None:
        train_ids, held_ids = split_held_out(len(codes), config.held_out_fraction, config.seed)
        held_out = _rows(codes, held_ids) if len(held_ids) else None
        held_out_labels = None if labels is None or held_out is None else _label_rows(labels, held_ids)
    else:
        train_ids = torch.arange(len(codes))
        held_out = _rows(held_out, torch.arange(len(held_out)))
        if len(held_out) == 0:
            raise PriorInputError("the held-out codes hold no images (N = 0).")
    if held_out is not None and config.eval_images is not None:
        held_out = held_out[:config.eval_images]
        held_out_labels = None if held_out_labels is None else torch.as_tensor(held_out_labels)[:config.eval_images]
    if num_classes and held_out is not None and held_out_labels is None:
        raise PriorInputError("a class-conditional prior needs the held-out codes' labels too.")
    distributed.check_divides_batch(config.batch_size, distributed.world_size())
    if len(train_ids) < config.batch_size:
        raise PriorInputError(f"{len(train_ids)} training images are fewer than one batch of {config.batch_size}.")
    _configure_torch(config)
    device = torch.device(config.device)
    writes_files = output_dir is not None and distributed.is_main_process()
    output_dir = Path(output_dir) if output_dir is not None else None
    checkpoint_path = output_dir / CHECKPOINT if output_dir is not None else None
    steps = config.steps_per_epoch or len(train_ids) // config.batch_size
    total_steps = steps * config.epochs
    autocast = config.autocast_bf16 if config.autocast_bf16 is not None else device.type == "cuda"
    unigram = None if held_out is None else unigram_bits_per_token(
        _rows(codes, train_ids) if len(train_ids) <= 200_000 else codes, held_out, codebooks.shape[1])

    run_lock = claim_run_directory(output_dir, resume, overwrite) if writes_files else contextlib.nullcontext()
    with run_lock:
        torch.manual_seed(config.seed)
        prior = build_prior(config, codebooks, num_classes, tokenizer).to(device)
        optimizer = torch.optim.AdamW(prior.parameters(), lr=config.lr, betas=tuple(config.betas),
                                      weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config, total_steps))
        history, start_epoch = PriorHistory(), 0
        data = {"train_images": len(train_ids), "held_out_images": 0 if held_out is None else len(held_out),
                "tokens_per_image": int(codes.shape[1]), "codes_per_group": int(codebooks.shape[1]),
                "num_classes": num_classes, "model_sha1": (tokenizer or {}).get("model_sha1")}
        if resume and checkpoint_path is not None and checkpoint_path.is_file():
            start_epoch = _restore(checkpoint_path, config, data, prior, optimizer, scheduler, history)
        step_model = distributed.wrap_model(prior, device)
        last_epoch = config.epochs if stop_after is None else min(config.epochs, start_epoch + stop_after)
        show = progress and distributed.is_main_process()
        for epoch in tqdm(range(start_epoch, last_epoch), desc="epochs", disable=not show, initial=start_epoch,
                          total=config.epochs):
            started = time.perf_counter()
            train_bits = _train_epoch(prior, step_model, optimizer, scheduler, config, codes, labels, train_ids,
                                      epoch, steps, device, autocast, show, num_classes)
            seconds = time.perf_counter() - started
            held_bits = math.nan if held_out is None else prior.bits_per_token(
                held_out, held_out_labels if num_classes else None)
            for key, value in (("epoch", epoch), ("train_bits", train_bits), ("held_out_bits", held_bits),
                               ("unigram_bits", math.nan if unigram is None else unigram),
                               ("lr", optimizer.param_groups[0]["lr"]), ("seconds", seconds),
                               ("tokens_per_second", steps * config.batch_size * codes.shape[1] / seconds)):
                getattr(history, key).append(value)
            if writes_files:
                save_checkpoint({"model": prior.state_dict(), "optimizer": optimizer.state_dict(),
                                 "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history.to_dict(),
                                 "config": config.recipe_dict(), "data": data}, checkpoint_path)
                atomic_write_text(output_dir / HISTORY, json.dumps(history.to_dict(), indent=2))
            distributed.barrier()
        if writes_files and last_epoch == config.epochs:
            prior.save_pretrained(output_dir / MODEL)
    return prior.eval(), history


def _label_rows(labels, ids: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.asarray(labels)[ids.numpy()].astype(np.int64)) if not isinstance(labels, torch.Tensor) \
        else labels[ids].long()


def _train_epoch(prior, step_model, optimizer, scheduler, config, codes, labels, train_ids, epoch, steps, device,
                 autocast, show, num_classes) -> float:
    """One epoch of ``steps`` global batches drawn from a (seed, epoch) permutation; returns the mean bits/token."""
    prior.train()
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    order = train_ids[torch.randperm(len(train_ids), generator=generator)]
    per_pass = len(train_ids) // config.batch_size
    total = torch.zeros((), dtype=torch.float64)
    for step in tqdm(range(steps), desc=f"epoch {epoch}", leave=False, disable=not show):
        start = (step % per_pass) * config.batch_size
        batch_ids = distributed.shard_of_batch(order[start:start + config.batch_size], config.batch_size)
        batch = _rows(codes, batch_ids).to(device)
        batch_labels = None
        if num_classes:
            batch_labels = _label_rows(labels, batch_ids)
            draws = torch.rand(config.batch_size, generator=generator)  # the global batch's, then this rank's share
            dropped = distributed.shard_of_batch(draws, config.batch_size) < prior.config.class_dropout
            batch_labels = torch.where(dropped, torch.full_like(batch_labels, -1), batch_labels).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = step_model(batch, batch_labels)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, prior.order].flatten())
        if not torch.isfinite(loss):
            raise RuntimeError(f"the prior's loss became {loss.item()} at epoch {epoch}, step {step}: lower --lr.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        total += loss.detach().double().cpu()
    return float(distributed.all_reduce_mean(total / max(steps, 1))) / math.log(2)


def _restore(path, config, data, prior, optimizer, scheduler, history) -> int:
    state = load_checkpoint(path)
    if state.get("config") != config.recipe_dict():
        raise CheckpointError(f"{path} was written by another training configuration; resume with the same preset "
                              "and settings, or start over (--overwrite).")
    if state.get("data") != data:
        raise CheckpointError(f"{path} was trained on other codes ({state.get('data')} vs now {data}); resume with "
                              "the same codes file, or start over (--overwrite).")
    prior.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    for key, values in state["history"].items():
        getattr(history, key).extend(values)
    return int(state["epoch"]) + 1


def _configure_torch(config: PriorTrainConfig) -> None:
    check_device(config.device)
    if config.device == "cpu":
        torch.set_flush_denormal(True)
        threads = cpu_threads(config.num_threads)
        if threads:
            torch.set_num_threads(threads)
