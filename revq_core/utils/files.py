"""Where files go (the repository root, the cache directory) and how: every file revq_core writes is written
atomically (``atomic_write``): to a temporary ``.NAME.*.tmp`` beside the target, flushed and fsynced, then
moved over it with ``os.replace``, so a reader or a kill sees the old file or the new one, never half of one.
A kill can leave only the temporary, which ``remove_temporaries`` deletes. The file gets the mode a plain
``open`` would give it (0666 less the umask), and a full disk is named as such (``DiskFullError``).

The rule of every command line, checked before any work by ``check_output_file`` / ``check_output_folder`` /
``child_path``: never write outside the output named, never replace an input, never replace an existing result
without ``overwrite``. A folder of many outputs records its state in a manifest (``read_manifest`` /
``write_manifest``, written first as incomplete and last as complete), so a killed run is resumed or refused.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
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


class DiskFullError(OSError):
    """A write failed because the disk is full; the message names the file and says what to do."""


# Free bytes below which a failed write is taken for a full disk (torch.save reports it as a RuntimeError
# "[enforce fail at inline_container.cc] ... file write failed", without the errno).
DISK_FULL_BYTES = 1 << 20


def current_umask() -> int:
    """The process's umask (read without changing it where /proc says it; else set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path`` (named by ``temporary_pattern``), flush and
    fsync it, give it the mode ``open`` would (0666 less the umask), then move it over ``path`` with
    ``os.replace``; the temporary is deleted on any failure. A write that fails on a full disk raises
    ``DiskFullError`` naming ``path`` (the previous file, if any, is intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp makes it 0600
        os.replace(temporary, path)
    except BaseException as error:
        disk_full = isinstance(error, Exception) and _is_disk_full(error, path.parent)
        if os.path.exists(temporary):
            os.unlink(temporary)
        if disk_full:
            raise DiskFullError(errno.ENOSPC, f"no space left on device while writing {path} ({type(error).__name__}: "
                                f"{_first_line(error)}); free some space on that disk or write elsewhere (the "
                                f"previous {path.name}, if any, is intact)") from error
        raise
    return path


def _is_disk_full(error: Exception, directory: Path) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(directory).free < DISK_FULL_BYTES
    except OSError:
        return False


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ---- the command lines' output rule ---------------------------------------------------------------------------


class OutputExistsError(FileExistsError):
    """An output that would replace an existing file (or a folder's files) without ``overwrite``."""


def check_output_file(path: str | os.PathLike, overwrite: bool = False, inputs=(), option: str = "--out") -> Path:
    """Check, before any work, that the file ``path`` can be written: not an existing folder (IsADirectoryError),
    no parent that is a file (NotADirectoryError), not one of the ``inputs`` (ValueError, also with
    ``overwrite``: an input is never replaced), and not an existing file unless ``overwrite``
    (``OutputExistsError``). ``option`` names the argument in the messages. Returns the path."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path} is a folder; name the file to write, e.g. {path / 'results.json'}.")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{option} {path}: its parent {parent} is a file, not a folder; choose "
                                         f"another {option}.")
            break
    if path.exists():
        resolved = path.resolve()
        if any(Path(item).expanduser().resolve() == resolved for item in inputs):
            raise ValueError(f"{option} {path} is one of the inputs; it would be replaced: choose another {option}.")
        if not overwrite:
            raise OutputExistsError(f"{option} {path} already exists; pass --overwrite to replace it, or choose "
                                    f"another {option}.")
    return path


def check_output_folder(path: str | os.PathLike, overwrite: bool = False, option: str = "dst") -> Path:
    """Check, before any work, that the folder ``path`` can be written: not a file (NotADirectoryError), and
    empty or missing unless ``overwrite`` (``OutputExistsError`` naming what it holds). Returns the path."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{option} {path} is a file, not a folder; choose another {option}.")
    held = sorted(child.name for child in path.iterdir()) if path.is_dir() else []
    if held and not overwrite:
        raise OutputExistsError(f"{option} {path} already holds {', '.join(held[:3])}{' ...' if len(held) > 3 else ''}"
                                f"; pass --overwrite to replace its files, or choose an empty or new {option}.")
    return path


def child_path(root: str | os.PathLike, name: str) -> Path:
    """``root / name`` for a relative ``name`` that stays inside ``root``; ValueError for an absolute name, a
    drive, or one with '..' parts (a file named by untrusted data never lands outside the output folder)."""
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or Path(name).drive or ".." in parts or "\\" in name:
        raise ValueError(f"the name {name!r} is not a plain relative path (absolute, or with '..'): writing it "
                         f"would leave {root}; refusing. Rename the entry or rewrite the file that holds it.")
    return Path(root) / name


MANIFEST = ".revq-manifest.json"  # a folder of outputs: {"source", "complete", "files"}


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The manifest of ``folder`` (``write_manifest``), or None if it has none (or an unreadable one)."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def write_manifest(folder: str | os.PathLike, source: str, complete: bool, files=()) -> Path:
    """Record, atomically, that ``folder`` holds the outputs of ``source`` (a digest of what made them),
    ``complete`` or still being written, and the names of the ``files`` written."""
    return atomic_write_text(Path(folder) / MANIFEST, json.dumps({"source": source, "complete": complete,
                                                                  "files": list(files)}, indent=1) + "\n")
