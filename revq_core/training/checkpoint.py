"""Training checkpoints: written atomically, read with ``weights_only=True``, damaged files named.

A checkpoint is a dict of tensors and plain Python values (model, optimizer and scheduler states,
the finished epoch, the history, the training config and RNG states). It is first written to a
temporary file beside the target and then moved over it with ``os.replace``, so an interruption at
any moment leaves either the previous checkpoint or the new one, never a half-written file.
(``revq_core.utils.files.atomic_write``, which every file revq_core writes goes through).
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from revq_core.utils.files import atomic_write


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: damaged, truncated, or from another configuration."""


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (``revq_core.utils.files.atomic_write``)."""
    return atomic_write(path, lambda file: torch.save(state, file))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by ``save_checkpoint``; a clear ``CheckpointError`` if it is damaged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}. Start without resume, or point to the run's "
                                "output directory that holds checkpoint.pt.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, OSError, ValueError) as error:
        raise CheckpointError(f"Checkpoint {path} cannot be read ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''}). It is truncated or damaged: "
                              "delete it to start over, or restore a copy.") from error
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{path} is not a revq training checkpoint (expected a dict with 'model' and 'epoch').")
    return state
