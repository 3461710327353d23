"""Keep freed memory in the process: glibc's page-fault storm on CPU, and how it is avoided.

Every batch of a CPU encode or training step allocates its activations anew and frees them at the
end. glibc serves a large block with its own ``mmap`` and gives it back with ``munmap`` when freed (or
trims the top of its heap), so the next batch touches fresh pages again: each 4 KiB page is a page
fault and a zeroing by the kernel. On the virtual machines this project runs on that costs a lot: while
the test suite encoded its crops on 2 cores of an AMD EPYC Zen 4, the kernel used half of the CPU time.

``keep_freed_memory()`` tells glibc (``mallopt``) to serve blocks up to 32 MiB (its maximum) from its
heap and to keep up to 1 GiB of freed memory instead of returning it. ``benchmarks/cpu_memory.py`` (the
embedded VAE's encoder over 1024 crops, interleaved, same Zen 4): 11.8-12.7 ms a crop and 7-9 k page faults
with it, 13.9-14.4 ms and 1.2-1.4 M page faults without, 1.18x (benchmarks/README.md "The first run").
Blocks above 32 MiB still come from ``mmap``. The cost: a process's resident memory does not shrink
after a peak (freed memory is reused by later allocations instead).

``import revq_core`` applies it once on Linux with glibc; ``REVQ_KEEP_FREED_MEMORY=0`` turns it off
(set it before the import). Elsewhere (macOS, musl, Windows) it does nothing. The allocator of a GPU
is not affected.
"""
from __future__ import annotations

import ctypes
import os
import sys

# mallopt's parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest allowed value (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD_BYTES = 1 << 30


def _glibc_version() -> str | None:
    """glibc's version string ("glibc 2.36"), None under another C library."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):
        return None
    return version if version and version.startswith("glibc") else None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds as above. Returns whether both were set (False: not glibc,
    switched off by ``REVQ_KEEP_FREED_MEMORY=0``, or glibc refused)."""
    setting = os.environ.get("REVQ_KEEP_FREED_MEMORY", "1").strip()
    if setting not in ("0", "1"):
        raise ValueError(f"REVQ_KEEP_FREED_MEMORY must be 0 or 1, got {setting!r}.")
    if setting == "0" or not sys.platform.startswith("linux") or not _glibc_version():
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the process's own libc
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # The mmap threshold first: setting the trim threshold alone stops glibc's own adaptation of the
    # mmap threshold and sends every block above 128 KiB to mmap (worse: 25 ms a crop).
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                                  TRIM_THRESHOLD_BYTES))
