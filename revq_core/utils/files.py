"""Where files go (the repository root, the cache directory) and how: every file revq_core writes is written
atomically (``atomic_write``): to a temporary ``.NAME.*.tmp`` beside the target, flushed and fsynced, then
moved over it with ``os.replace``, so a reader or a kill sees the old file or the new one, never half of one.
A kill can leave only the temporary, which ``remove_temporaries`` deletes."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# The repository root (data/, notebooks/, figures/ live there).
REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """The cache directory: ``$REVQ_CACHE`` if set, else ``.cache/`` at the repository root."""
    if os.environ.get("REVQ_CACHE"):
        return Path(os.environ["REVQ_CACHE"])
    return REPO_ROOT / ".cache"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a reader (or a kill) sees the old file or the new one."""
    return atomic_write(path, lambda file: file.write(data))


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


def atomic_write(path: str | os.PathLike, write: Callable) -> Path:
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
