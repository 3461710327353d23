"""Data-parallel runs on ``torch.distributed`` (training, the sharded latent cache, evaluation): process-group setup,
rank helpers, reductions.

``torchrun --nproc_per_node=N -m revq_core.train --preset paper_512T --device cuda`` starts N
processes; each calls ``init_from_env`` (it reads torchrun's RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT), and ``train`` then runs data-parallel whenever a process group of more
than one rank is initialized:

- every rank draws the same shuffled order of every epoch (generators seeded by (seed, epoch)) and
  takes its contiguous shard of each global batch (``shard_of_batch``), so the global batch is the
  configured ``batch_size`` whatever the world size;
- DDP averages the gradients, so clipping and AdamW see the global-batch gradient;
- code usage counts (G, K) are summed over ranks (``all_reduce_sum``) before each reset, and the reset
  noise comes from a CPU generator seeded identically on every rank, so codebooks stay identical;
- only rank 0 writes checkpoints, history and the final model (``is_main_process``).

Without a process group (a plain ``python`` run) every helper reports rank 0 of 1 and does nothing.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialized process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the default group (0 without one)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks in the default group (1 without one)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0, the only rank that writes files and shows progress bars."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True when torchrun's environment variables describe more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "cpu", timeout_minutes: float = 30.0) -> str:
    """Join the process group torchrun describes; returns this rank's device string.

    NCCL for CUDA devices (each rank on ``cuda:LOCAL_RANK``), gloo for the CPU. A single process
    (no WORLD_SIZE, or WORLD_SIZE=1) gets ``device`` back unchanged and no process group.
    """
    if not launched_by_torchrun():
        return device
    missing = [name for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but {missing} are not: launch with "
                           "torchrun --nproc_per_node=N -m revq_core.train ..., which sets them all.")
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu.")
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                               "use --nproc_per_node at most the GPU count.")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo",
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return device


def shard_of_batch(batch_ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """This rank's contiguous slice of a global batch: ids (B,) -> (B / world_size,).

    ``batch_size`` is the global B; it must be a multiple of the world size so every rank's
    shard has the same size (DDP's gradient average then equals the global-batch gradient).
    """
    ranks = world_size()
    check_divides_batch(batch_size, ranks)
    shard = batch_size // ranks
    return batch_ids[rank() * shard:(rank() + 1) * shard]


def check_divides_batch(batch_size: int, ranks: int) -> None:
    if batch_size % ranks:
        raise ValueError(f"batch_size {batch_size} is not a multiple of the world size {ranks}: every rank needs an "
                         f"equal shard of each global batch. Use a batch_size divisible by {ranks} "
                         f"(e.g. {batch_size - batch_size % ranks or ranks}) or another --nproc_per_node.")


@torch.no_grad()
def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (any shape; int64 counts stay exact); returns it."""
    if is_distributed():
        _all_reduce_in_place(tensor)
    return tensor


@torch.no_grad()
def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` (floating point) over ranks in place; returns it."""
    if is_distributed():
        _all_reduce_in_place(tensor)
        tensor /= dist.get_world_size()
    return tensor


def _all_reduce_in_place(tensor: torch.Tensor) -> None:
    """SUM all-reduce; a CPU tensor goes through this rank's GPU where the backend (NCCL) needs one."""
    if tensor.device.type == "cpu" and dist.get_backend() == "nccl":
        on_gpu = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
        tensor.copy_(on_gpu.cpu())
    else:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def gather_objects(item) -> list:
    """Every rank's ``item`` (any picklable object), in rank order, on every rank: ``[item]`` without a group."""
    if not is_distributed():
        return [item]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, item)
    return gathered


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def wrap_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The module that runs the training forward: ``model`` itself on one rank, else DDP around it.

    DDP broadcasts rank 0's parameters and buffers once at construction (identical anyway: every rank
    builds the model from the same seed and data) and averages gradients during ``backward``.
    """
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


def destroy() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
