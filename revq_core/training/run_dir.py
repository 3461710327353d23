"""One training run per output directory: an exclusive lock, no silent overwrite, no leftover temporaries.

``train`` calls ``claim_run_directory`` on the main process before it writes anything. It takes the
directory's lock (``.lock``, holding the pid and host of the process that trains there), refuses a
directory that holds an earlier run unless it is resumed or explicitly overwritten, and deletes the
temporaries that writes killed in an earlier run left behind:

    with claim_run_directory("runs/demo", resume=False, overwrite=False):
        ...  # train, write checkpoint.pt and history.json
    # the lock is released here, also when training raised
"""
from __future__ import annotations

import os
import shutil
import socket
import warnings
from pathlib import Path

from revq_core.utils.files import remove_temporaries

CHECKPOINT = "checkpoint.pt"  # after every epoch: everything needed to resume
HISTORY = "history.json"  # per-epoch records
MODEL = "model"  # the finished model (save_pretrained directory)
LOCK = ".lock"  # "PID HOST" of the process training in the directory

_LOCKS_HELD_HERE: set[Path] = set()  # lock files this process holds (a pid match alone is no proof)


class RunDirectoryError(FileExistsError):
    """The output directory holds an earlier run that this call would replace."""


class RunDirectoryLocked(RunDirectoryError):
    """Another process (or another ``train`` call of this one) trains into the output directory."""


class RunLock:
    """An exclusive lock on a run directory: the file ``directory/.lock`` holding "PID HOST", created
    atomically (``O_CREAT | O_EXCL``). A lock whose process is dead on this host (e.g. after kill -9) is
    taken over with a warning; one of a live process, or of another host, is an error. Use as a context
    manager, or call ``acquire`` and ``release``."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / LOCK
        self.holder = (os.getpid(), socket.gethostname())
        self.held = False

    def acquire(self) -> RunLock:
        for _attempt in range(3):  # a stale lock taken over, or one released meanwhile: try again
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._remove_if_stale()
                continue
            with os.fdopen(handle, "w") as file:
                file.write(f"{self.holder[0]} {self.holder[1]}\n")
                file.flush()
                os.fsync(file.fileno())
            _LOCKS_HELD_HERE.add(self.path.resolve())
            self.held = True
            return self
        raise RunDirectoryLocked(f"{self.directory} is being claimed by other processes at this moment "
                                 f"({self.path} keeps reappearing): wait for them or use another output_dir.")

    def release(self) -> None:
        """Delete the lock file if this process holds it (safe to call more than once)."""
        if not self.held:
            return
        self.held = False
        _LOCKS_HELD_HERE.discard(self.path.resolve())
        if _read_holder(self.path) == self.holder:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self if self.held else self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    def _remove_if_stale(self) -> None:
        """Delete the existing lock file if its process is dead; else raise ``RunDirectoryLocked``."""
        holder = _read_holder(self.path)
        if holder is None and not self.path.exists():
            return  # released between our attempt and this read
        if holder is None:
            raise RunDirectoryLocked(f"{self.directory} is locked by {self.path}, which names no process (a run "
                                     f"starting this very moment?): if no run uses the directory, delete {self.path}.")
        pid, host = holder
        if host != self.holder[1]:
            raise RunDirectoryLocked(f"{self.directory} is in use by process {pid} on host {host} ({self.path}): "
                                     f"wait for it, use another output_dir, or delete {self.path} if that run is dead.")
        if pid == self.holder[0] and self.path.resolve() in _LOCKS_HELD_HERE:
            raise RunDirectoryLocked(f"{self.directory} is in use by another train() call of this process "
                                     f"(pid {pid}): wait for it to finish or use another output_dir.")
        if pid != self.holder[0] and _process_alive(pid):
            raise RunDirectoryLocked(f"{self.directory} is in use by process {pid} on this host ({self.path}): "
                                     "wait for it to finish, use another output_dir, or delete the lock if that "
                                     "process is not a training run (a reused pid).")
        warnings.warn(f"{self.path}: taking over the stale lock of process {pid}, which is no longer running "
                      "(killed?).")
        self.path.unlink(missing_ok=True)


def claim_run_directory(directory: str | os.PathLike, resume: bool, overwrite: bool) -> RunLock:
    """Lock ``directory`` (created if missing) for one training run and return the held ``RunLock``.

    An earlier run there (``checkpoint.pt``, ``history.json`` or ``model/``) is continued with ``resume``
    (which needs its checkpoint.pt), deleted with ``overwrite``, and otherwise a ``RunDirectoryError``.
    Temporaries left by killed writes of checkpoint.pt and history.json are deleted."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = RunLock(directory).acquire()
    try:
        for name, want_file in ((CHECKPOINT, True), (HISTORY, True), (MODEL, False)):
            path = directory / name
            if path.exists() and path.is_dir() != (not want_file) and not overwrite:
                kind, other = ("a folder", "file") if want_file else ("a file", "folder")
                raise RunDirectoryError(f"{path} is {kind}, where training writes its {name} {other}: move it "
                                        "away, pass overwrite=True (--overwrite) to delete it, or use another "
                                        "output_dir.")
        earlier = [name for name in (CHECKPOINT, HISTORY, MODEL) if (directory / name).exists()]
        if earlier and overwrite:
            for name in earlier:
                if (directory / name).is_dir():
                    shutil.rmtree(directory / name)
                else:
                    (directory / name).unlink()
        elif earlier and not resume:
            raise RunDirectoryError(f"{directory} already holds a training run ({', '.join(earlier)}): pass "
                                    "resume=True (--resume) to continue it, overwrite=True (--overwrite) to "
                                    "replace it, or use a fresh output_dir.")
        elif earlier and CHECKPOINT not in earlier:
            raise RunDirectoryError(f"{directory} holds {', '.join(earlier)} of an earlier run but no {CHECKPOINT} "
                                    "to resume from: pass overwrite=True (--overwrite) to replace that run, or "
                                    "use a fresh output_dir.")
        remove_temporaries(directory, (CHECKPOINT, HISTORY))
    except BaseException:
        lock.release()
        raise
    return lock


def _read_holder(path: Path) -> tuple[int, str] | None:
    """(pid, host) from a lock file; None if it is missing, empty or not of that form."""
    try:
        pid, host = path.read_text().split()
        return (int(pid), host) if int(pid) > 0 else None
    except (OSError, ValueError):
        return None


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (signal 0 probes without sending anything)."""
    if os.name == "nt":  # os.kill would terminate it there: assume alive, the message says how to clear it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True
