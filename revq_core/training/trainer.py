"""The ReVQ training recipe on cached VAE latents (docs/method.md, "Training recipe").

AdamW with two parameter groups (quantizer: lr 1e-2, no weight decay; rectifier: 0.05 x that lr,
weight decay 1e-4), ExponentialLR stepped once per epoch with gamma = 0.05 ** (1 / epochs),
gradient-norm clipping at 1.0 separately for quantizer and rectifier, the non-activation reset after
every epoch, validation latent MSE every epoch, seed 42. Checkpoints after every epoch hold
everything needed to resume to the same weights as an uninterrupted run.

    config = preset("demo")
    model, history = train(config, train_latents, val_latents, output_dir="runs/demo")
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from revq_core.modeling.config import ModelConfig
from revq_core.modeling.revq import ReVQ
from revq_core.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from revq_core.training.config import TrainConfig
from revq_core.training.run_dir import CHECKPOINT, HISTORY, MODEL, claim_run_directory
from revq_core.utils import distributed
from revq_core.utils.checks import check_device, check_finite, check_latents
from revq_core.utils.files import atomic_write_text
from revq_core.utils.threads import cpu_threads


def compile_rectifier(model: ReVQ, config: TrainConfig) -> None:
    """``torch.compile`` the model's rectifier in place as ``config.compile_rectifier`` says: False
    leaves it, True uses the default mode, a string is the mode (state-dict keys stay unchanged)."""
    if config.compile_rectifier:
        mode = config.compile_rectifier if isinstance(config.compile_rectifier, str) else None
        model.rectifier.compile(mode=mode)


def build_model(config: TrainConfig | ModelConfig, vae: str | None = None) -> ReVQ:
    """An untrained ReVQ with the configuration's architecture (``config.model`` of a TrainConfig)."""
    return ReVQ(config.model if isinstance(config, TrainConfig) else config, vae=vae)


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf; the last checkpoint on disk is the last good one."""


@dataclass
class History:
    """Per-epoch records; ``to_dict`` is what ``history.json`` holds."""
    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_loss_quant: list = field(default_factory=list)
    train_loss_rect: list = field(default_factory=list)
    val_mse: list = field(default_factory=list)  # rectified latent MSE (normalized space)
    val_quant_mse: list = field(default_factory=list)  # quantizer-only latent MSE
    usage: list = field(default_factory=list)  # codebook usage during the epoch, before its reset
    codes_reset: list = field(default_factory=list)
    lr_quantizer: list = field(default_factory=list)
    lr_rectifier: list = field(default_factory=list)
    seconds: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def train(config: TrainConfig, train_latents: torch.Tensor, val_latents: torch.Tensor | None = None,
          output_dir: str | Path | None = None, resume: bool = False, stop_after: int | None = None,
          vae: str | None = None, progress: bool = True,
          normalizer_statistics: tuple[torch.Tensor, torch.Tensor] | None = None,
          overwrite: bool = False) -> tuple[ReVQ, History]:
    """Train ReVQ on VAE latents (N, C, H, W) and return (model, history).

    Normalization statistics come from ``train_latents``. With ``output_dir``, a checkpoint is written
    after every epoch (``checkpoint.pt``), the history to ``history.json`` (both atomically) and the final
    model with ``save_pretrained`` to ``output_dir/model``. ``resume=True`` continues from ``checkpoint.pt``
    and gives the same weights as an uninterrupted run; it needs the same config, the same training data
    (number and shape of latents, normalizer statistics) and the same ``vae`` name, else a
    ``CheckpointError`` names what differs; without a checkpoint it starts fresh. ``stop_after`` ends this
    call after that many epochs (a time-limited job); call again with ``resume=True`` to go on.
    An ``output_dir`` that already holds a run (checkpoint.pt, history.json or model/) is refused with a
    ``run_dir.RunDirectoryError`` (a ``FileExistsError``) unless ``resume=True`` continues it or
    ``overwrite=True`` deletes it and starts over. While training, ``output_dir/.lock`` (pid and host)
    keeps other runs out (``run_dir.RunDirectoryLocked``); a lock and half-written temporaries left by a
    killed run are taken over (with a warning) and deleted.
    ``train_latents`` may be memory-mapped (``revq_core.data.latents.load_latent_cache``): batches are
    gathered from it, nothing holds it whole. ``normalizer_statistics`` = (mean, var), each (C, H, W),
    replaces the pass that fits the normalizer (e.g. ``latent_cache_statistics(path)``).

    Inside an initialized ``torch.distributed`` process group of N > 1 ranks (``revq_core.utils.distributed``,
    e.g. under torchrun) every rank calls ``train`` with the same arguments and trains data-parallel:
    each takes a B/N shard of every global batch of B = ``config.batch_size``; only rank 0 writes files
    and locks ``output_dir`` (which must be the same shared directory on every rank for ``resume``).
    """
    _check_inputs(config, train_latents, val_latents)
    distributed.check_divides_batch(config.batch_size, distributed.world_size())
    if resume and overwrite:
        raise ValueError("resume=True continues the run in output_dir, overwrite=True deletes it: pass only one.")
    progress = progress and distributed.is_main_process()
    writes_files = output_dir is not None and distributed.is_main_process()
    _configure_torch(config)
    device = torch.device(config.device)
    output_dir = Path(output_dir) if output_dir is not None else None
    checkpoint_path = output_dir / CHECKPOINT if output_dir is not None else None

    run_lock = claim_run_directory(output_dir, resume, overwrite) if writes_files else contextlib.nullcontext()
    with run_lock:  # released when training ends, also when it raises
        torch.manual_seed(config.seed)
        model = build_model(config, vae).to(device)
        model.quantizer.prepare_training(device, distributed.is_distributed())
        if normalizer_statistics is None:
            model.normalizer.fit(train_latents)
        else:
            model.normalizer.set_statistics(*normalizer_statistics)
        data = _data_fingerprint(train_latents, model, vae, val_latents)
        optimizer, scheduler = optimizer_and_scheduler(model, config)
        history, start_epoch = History(), 0

        if resume and checkpoint_path is not None and checkpoint_path.is_file():
            start_epoch = _restore(checkpoint_path, config, data, model, optimizer, scheduler, history)
        else:
            init_quantizer(model, config, train_latents, device)
        compile_rectifier(model, config)
        step_model = distributed.wrap_model(model, device)  # DDP over ranks; the model itself on one

        last_epoch = config.epochs if stop_after is None else min(config.epochs, start_epoch + stop_after)
        epochs = tqdm(range(start_epoch, last_epoch), desc="epochs", disable=not progress, initial=start_epoch,
                      total=config.epochs)
        for epoch in epochs:
            started = time.perf_counter()
            losses = train_epoch(model, optimizer, config, train_latents, epoch, device, progress,
                                 checkpoint_path, step_model)
            stats = end_of_epoch(model, config, epoch)
            val_mse, val_quant_mse = _validation_mse(model, val_latents, config.val_batch_size) \
                if val_latents is not None else (math.nan, math.nan)
            _record(history, epoch, losses, val_mse, val_quant_mse, stats, optimizer, time.perf_counter() - started)
            scheduler.step()
            epochs.set_postfix(loss=f"{losses[0]:.4f}", val_mse=f"{val_mse:.4f}", usage=f"{stats[0]:.3f}")
            if writes_files:
                save_checkpoint(_checkpoint_state(model, optimizer, scheduler, epoch, history, config, data),
                                checkpoint_path)
                atomic_write_text(output_dir / HISTORY, json.dumps(history.to_dict(), indent=1))
        if writes_files and len(history.epoch) and history.epoch[-1] == config.epochs - 1:
            model.save_pretrained(output_dir / MODEL)
        distributed.barrier()  # no rank returns (or resumes) before rank 0's files are written
    model.quantizer.finish_training()  # the returned model behaves like any module in users' loops
    model.zero_grad(set_to_none=True)  # no codebook-sized gradient kept alive (2 GiB at K = 262,144)
    return model, history


@torch.no_grad()
def evaluate_latent_mse(model: ReVQ, latents: torch.Tensor, batch_size: int = 256) -> tuple[float, float]:
    """(rectified MSE, quantizer-only MSE) over VAE latents (N, C, H, W), in normalized space."""
    rectified_sum, quantized_sum = _squared_error_sums(model, latents, batch_size)
    numbers = latents.shape[0] * math.prod(latents.shape[1:])
    return rectified_sum / numbers, quantized_sum / numbers


def _validation_mse(model: ReVQ, latents: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """``evaluate_latent_mse``; over ranks, each takes a contiguous slice of ``latents`` (N, C, H, W) and
    the float64 sums are added up, so every rank gets the same numbers."""
    if not distributed.is_distributed():
        return evaluate_latent_mse(model, latents, batch_size)
    ranks, this_rank, count = distributed.world_size(), distributed.rank(), latents.shape[0]
    share = latents[this_rank * count // ranks:(this_rank + 1) * count // ranks]
    sums = torch.tensor(_squared_error_sums(model, share, batch_size), dtype=torch.float64,
                        device=model.normalizer.mean.device)
    rectified_sum, quantized_sum = distributed.all_reduce_sum(sums).tolist()
    numbers = count * math.prod(latents.shape[1:])
    return rectified_sum / numbers, quantized_sum / numbers


@torch.no_grad()
def _squared_error_sums(model: ReVQ, latents: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(sum of squared rectified errors, same for the quantizer alone) over latents (N, C, H, W), through the
    model's own forward (the training step's, in eval mode, without gradients)."""
    was_training = model.training
    model.eval()
    device = model.normalizer.mean.device
    rectified_sum, quantized_sum = 0.0, 0.0
    for start in range(0, latents.shape[0], batch_size):
        latent = model.normalizer.normalize(latents[start:start + batch_size].to(device).float())
        output = model(latent)
        rectified_sum += F.mse_loss(output.rectified, latent, reduction="sum").item()
        quantized_sum += F.mse_loss(output.quantized, latent, reduction="sum").item()
    model.train(was_training)
    return rectified_sum, quantized_sum


# ---- pieces of the loop -------------------------------------------------------------------------
def train_epoch(model, optimizer, config, train_latents, epoch, device, progress=False, checkpoint_path=None,
                step_model=None):
    """One pass over shuffled training latents; returns mean (loss, loss_quant, loss_rect).

    ``step_model`` runs the forward (DDP around ``model`` over ranks, default ``model``); each rank
    takes its shard of every global batch, and the mean losses are averaged over ranks at the end.
    """
    step_model = model if step_model is None else step_model
    model.train()
    order = torch.randperm(train_latents.shape[0], generator=_generator(config.seed, epoch, "shuffle"))
    steps = train_latents.shape[0] // config.batch_size  # drop_last, as the authors do
    totals = torch.zeros(3, dtype=torch.float64)
    quantizer_params, rectifier_params = model.parameter_groups()
    for step in tqdm(range(steps), desc=f"epoch {epoch}", leave=False, disable=not progress):
        batch_ids = distributed.shard_of_batch(order[step * config.batch_size:(step + 1) * config.batch_size],
                                               config.batch_size)
        latent = model.normalizer.normalize(train_latents[batch_ids].to(device, non_blocking=True).float())
        try:
            output = train_step(step_model, model, latent, optimizer, quantizer_params, rectifier_params, config)
        except TrainingDiverged as error:
            where = f"the last good checkpoint {checkpoint_path} is intact" \
                if checkpoint_path is not None and checkpoint_path.is_file() else "no checkpoint was written yet"
            raise TrainingDiverged(f"{error} at epoch {epoch}, step {step}; {where}. Lower the learning rates or "
                                   "check the latents.") from None
        totals += torch.tensor([output.loss.item(), output.loss_quant.item(), output.loss_rect.item()],
                               dtype=torch.float64)
    return tuple(distributed.all_reduce_mean(totals / max(steps, 1)).tolist())


def train_step(step_model, model: ReVQ, latent: torch.Tensor, optimizer, quantizer_params, rectifier_params,
               config: TrainConfig):
    """One training step on a normalized latent batch (B, C, H, W), as ``train()`` runs it: the forward of
    ``step_model`` (``model`` or DDP around it; bf16 autocast where ``config.autocast_bf16``), a check that
    the loss is finite (``TrainingDiverged`` before any update otherwise), then ``optimizer_step``.
    Returns the forward's output."""
    with torch.autocast(latent.device.type, dtype=torch.bfloat16, enabled=config.autocast_bf16):
        output = step_model(latent)
    if not torch.isfinite(output.loss):
        raise TrainingDiverged(f"loss became {output.loss.item()} (loss_quant {output.loss_quant.item()}, "
                               f"loss_rect {output.loss_rect.item()})")
    optimizer_step(output, optimizer, model.quantizer, rectifier_params, config.grad_clip)
    return output


def optimizer_step(output, optimizer, quantizer, rectifier_params, grad_clip: float) -> None:
    """The update of one training step after its forward: gradients released (the rectifier's dropped, the
    quantizer's as its ``release_gradients`` does), backward of ``output.loss``, gradient-norm clipping at
    ``grad_clip`` per parameter group (quantizer, rectifier), AdamW. The quantizer counted its codes in
    the forward (training mode)."""
    for param in rectifier_params:
        param.grad = None
    quantizer.release_gradients()
    output.loss.backward()
    torch.nn.utils.clip_grad_norm_(list(quantizer.parameters()), grad_clip)
    torch.nn.utils.clip_grad_norm_(rectifier_params, grad_clip)
    optimizer.step()


def end_of_epoch(model, config, epoch) -> tuple[float, int]:
    """The quantizer's end-of-epoch maintenance (ReVQ: the non-activation reset when ``config.reset``), with the
    epoch's own generator; returns (usage before it, codes reset). Over ranks the quantizer sums its usage
    counts first (``distributed.all_reduce_sum``), so every rank maintains itself identically."""
    stats = model.quantizer.end_epoch(config.reset, config.reset_ratio, config.reset_noise,
                                      _generator(config.seed, epoch, "reset"), all_reduce=distributed.all_reduce_sum)
    return stats.usage, stats.codes_reset


def _record(history, epoch, losses, val_mse, val_quant_mse, stats, optimizer, seconds) -> None:
    history.epoch.append(epoch)
    history.train_loss.append(losses[0])
    history.train_loss_quant.append(losses[1])
    history.train_loss_rect.append(losses[2])
    history.val_mse.append(val_mse)
    history.val_quant_mse.append(val_quant_mse)
    history.usage.append(stats[0])
    history.codes_reset.append(stats[1])
    history.lr_quantizer.append(optimizer.param_groups[0]["lr"])
    history.lr_rectifier.append(optimizer.param_groups[1]["lr"])
    history.seconds.append(seconds)


def optimizer_and_scheduler(model: ReVQ, config: TrainConfig):
    """The recipe's AdamW over the model's two parameter groups (quantizer: ``quantizer_lr``, no weight decay;
    rectifier: ``rectifier_lr_ratio`` x that, ``rectifier_weight_decay``) and its ExponentialLR, stepped once
    per epoch down to ``final_lr_fraction`` of the start."""
    quantizer_params, rectifier_params = model.parameter_groups()
    optimizer = torch.optim.AdamW([
        {"params": quantizer_params, "lr": config.quantizer_lr, "weight_decay": 0.0},
        {"params": rectifier_params, "lr": config.quantizer_lr * config.rectifier_lr_ratio,
         "weight_decay": config.rectifier_weight_decay},
    ], betas=tuple(config.betas), **({"fused": True} if config.fused_adamw else {"foreach": True}))
    gamma = config.final_lr_fraction ** (1.0 / config.epochs)
    return optimizer, torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)


def init_quantizer(model: ReVQ, config: TrainConfig, train_latents: torch.Tensor, device) -> None:
    """The quantizer's initialisation (``config.init``) from (normalized) training latents, as the authors do
    with a cached subset: where the quantizer wants samples, a pool of ``config.init_latents`` training
    latents (N, C, H, W) drawn at random (all when None or fewer), gathered and normalized in chunks into one
    tensor on ``device`` (524,288 latents: 4 GiB), through the pre-encoder where there is one. ReVQ copies
    each group's K codes from its tokens in the pool (``MultiGroupQuantizer.init_from_samples``)."""
    generator = _generator(config.seed, 0, "init")
    if not model.quantizer.wants_init_samples(config.init):
        model.quantizer.init_from_samples(None, method=config.init, generator=generator)
        return
    count = train_latents.shape[0] if config.init_latents is None else min(config.init_latents, train_latents.shape[0])
    subset_ids = torch.randperm(train_latents.shape[0], generator=generator)[:count].sort().values
    subset = torch.empty((count, *train_latents.shape[1:]), device=device)
    chunk_size = 65536  # latents gathered (from a memory-mapped file: read) and normalized at a time
    for start in range(0, count, chunk_size):
        ids = subset_ids[start:start + chunk_size]
        subset[start:start + chunk_size] = model.normalizer.normalize(train_latents[ids].to(device).float())
    if model.pre_encoder is not None:
        with torch.no_grad():
            subset = torch.cat([model.quantizer_input(part) for part in subset.split(config.val_batch_size)])
    model.quantizer.init_from_samples(subset, method=config.init, generator=generator)


def _checkpoint_state(model, optimizer, scheduler, epoch, history, config, data) -> dict:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch, "history": history.to_dict(), "config": config.recipe_dict(), "data": data,
            "torch_rng_state": torch.get_rng_state()}


def _data_fingerprint(train_latents, model: ReVQ, vae: str | None, val_latents=None) -> dict:
    """What a checkpoint records of the data it was trained on (``_check_same_data`` compares it on
    resume): the number of training latents, their shape (C, H, W), the ``vae`` name passed to ``train``,
    the normalizer's statistics ``mean`` and ``std``, each (C, H, W), as this run computed them, and digests
    of the training and validation latents' contents (``latents_digest``: the same count and statistics in
    another order, or another validation set, are other data)."""
    return {"latents": int(train_latents.shape[0]), "latent_shape": [int(size) for size in train_latents.shape[1:]],
            "vae": None if vae is None else str(vae),
            "normalizer_mean": model.normalizer.mean.detach().cpu().clone(),
            "normalizer_std": model.normalizer.std.detach().cpu().clone(),
            "train_digest": latents_digest(train_latents),
            "val_digest": None if val_latents is None else latents_digest(val_latents)}


def latents_digest(latents: torch.Tensor, chunk_size: int = 65536) -> str:
    """sha1 of latents (N, C, H, W) as float32 bytes, read in chunks of ``chunk_size`` rows (bounded memory for a
    memory-mapped cache: 65,536 latents of 2,048 values are 512 MiB)."""
    digest = hashlib.sha1(repr(tuple(latents.shape)).encode())
    for start in range(0, latents.shape[0], chunk_size):
        chunk = latents[start:start + chunk_size].detach().to("cpu", torch.float32).contiguous()  # (n, C, H, W)
        digest.update(chunk.numpy().tobytes())
    return digest.hexdigest()


def _check_same_data(path, saved: dict | None, current: dict) -> None:
    """A ``CheckpointError`` naming every difference between the checkpoint's data fingerprint and this
    run's; the statistics are compared with a tolerance (the pass that computes them may differ in the
    last bits across machines). A field the checkpoint lacks (one written before the field existed, e.g. the
    digests) is not compared; the training digest is named only when nothing else explains the difference."""
    if saved is None:
        raise CheckpointError(f"{path} holds no training-data fingerprint, so resuming it cannot be checked against "
                              "these latents; start a new run (overwrite=True or a fresh output_dir).")
    labels = {"latents": "number of latents", "latent_shape": "latent shape", "vae": "vae"}
    differences = [f"{label}: checkpoint {saved.get(key)!r} vs now {current[key]!r}"
                   for key, label in labels.items() if saved.get(key) != current[key]]
    same_statistics = all(saved[key].shape == current[key].shape
                          and torch.allclose(saved[key], current[key], rtol=1e-4, atol=1e-6)
                          for key in ("normalizer_mean", "normalizer_std"))
    if not same_statistics:
        differences.append("normalizer statistics differ")
    if not differences and "train_digest" in saved and saved["train_digest"] != current["train_digest"]:
        differences.append("training latents' contents differ: same count and statistics, other values or another "
                           "order")
    if "val_digest" in saved and saved["val_digest"] != current["val_digest"]:
        what = {None: "none"}
        differences.append(f"validation latents differ (checkpoint {what.get(saved['val_digest'], 'a set')}, now "
                           f"{what.get(current['val_digest'], 'another set')}): the history would mix two sets")
    if differences:
        raise CheckpointError(f"{path} was trained on other data ({'; '.join(differences)}). Resume with the same "
                              "latents and vae, or start a new run (overwrite=True or a fresh output_dir).")


def _restore(path, config, data, model, optimizer, scheduler, history) -> int:
    """Load a checkpoint into the objects after checking it has this run's config and ``data``
    (``_data_fingerprint``); returns the next epoch to run."""
    state = load_checkpoint(path, map_location="cpu")
    saved, current = state.get("config", {}), config.recipe_dict()
    # A field added to the config after the checkpoint was written is compared at its default (the value that
    # reproduces what the older version did), so such checkpoints still resume.
    added_defaults = TrainConfig().recipe_dict()
    differences = {key: (saved.get(key, added_defaults.get(key)), value) for key, value in current.items()
                   if saved.get(key, added_defaults.get(key)) != value}
    if differences:
        listed = ", ".join(f"{key}: checkpoint {old!r} vs now {new!r}" for key, (old, new) in differences.items())
        raise CheckpointError(f"{path} was written by another configuration ({listed}). Resume with the same "
                              "config, or use a new output_dir.")
    _check_same_data(path, state.get("data"), data)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path} does not fit this model: {str(error).splitlines()[0]}") from error
    for key, values in state["history"].items():
        getattr(history, key).extend(values)
    torch.set_rng_state(state["torch_rng_state"])
    return int(state["epoch"]) + 1


def _generator(seed: int, epoch: int, purpose: str) -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch, purpose): resumed runs draw the same numbers."""
    purpose_id = {"shuffle": 1, "reset": 2, "init": 3}[purpose]
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 101 + purpose_id)


def _configure_torch(config: TrainConfig) -> None:
    check_device(config.device)
    if config.device == "cpu":
        torch.set_flush_denormal(True)  # denormals make CPU steps slow down as training goes on
        threads = cpu_threads(config.num_threads)
        if threads:
            torch.set_num_threads(threads)


def _check_inputs(config: TrainConfig, train_latents, val_latents) -> None:
    """Raise a one-line error on a bad config or bad latents (N, C, H, W) before any work is done."""
    from revq_core.utils.checks import check_not_empty

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (e.g. preset('demo')), got {type(config).__name__}.")
    latent_shape = config.model.latent_shape
    check_latents(train_latents[:1], latent_shape, "train_latents")
    for start in range(0, train_latents.shape[0], 65536):  # NaN/Inf anywhere, in bounded memory
        check_finite(train_latents[start:start + 65536], "train_latents")
    if val_latents is not None:
        check_latents(val_latents, latent_shape, "val_latents")
        check_not_empty(val_latents, "val_latents (pass None to train without validation)")
    if train_latents.shape[0] < config.batch_size:
        raise ValueError(f"train_latents has {train_latents.shape[0]} latents, fewer than one batch of "
                         f"{config.batch_size}: lower batch_size or add data.")


