"""Training checkpoints: written atomically, read with ``weights_only=True``, damaged files named.

A checkpoint is a dict of tensors and plain Python values (model, optimizer and scheduler states,
the finished epoch, the history, the training config and RNG states). It is first written to a
temporary file beside the target and then moved over it with ``os.replace``, so an interruption at
any moment leaves either the previous checkpoint or the new one, never a half-written file.
``atomic_write_bytes`` / ``atomic_write_text`` do the same for any file (e.g. ``history.json``); a
kill during a write can leave only a temporary ``.NAME.*.tmp`` beside it, which
``remove_temporaries`` deletes.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: damaged, truncated, or from another configuration."""


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same directory + os.replace)."""
    return _atomic_write(path, lambda file: torch.save(state, file))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a reader (or a kill) sees the old file or the new one."""
    return _atomic_write(path, lambda file: file.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``atomic_write_bytes`` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def temporary_pattern(name: str) -> str:
    """The glob pattern of the temporaries that writing the file ``name`` atomically leaves when killed."""
    return f".{name}.*.tmp"


def remove_temporaries(directory: str | os.PathLike, names) -> list[Path]:
    """Delete the temporaries (``temporary_pattern``) of the files ``names`` in ``directory``, left by
    writes that were killed; returns the deleted paths. Call it only while no one writes there."""
    removed = []
    for name in names:
        for temporary in Path(directory).glob(temporary_pattern(name)):
            temporary.unlink(missing_ok=True)
            removed.append(temporary)
    return removed


def _atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path`` (named by ``temporary_pattern``), flush and
    fsync it, then move it over ``path`` with ``os.replace``; the temporary is deleted on any failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


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
