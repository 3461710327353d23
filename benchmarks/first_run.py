"""The README's main job as a new user's first run: where the time of ``papermill notebooks/05_train.ipynb`` goes.

    .venv/bin/python benchmarks/first_run.py            # this CPU's own code paths
    .venv/bin/python benchmarks/first_run.py --avx2     # the AVX2 paths (as an AVX2-only CPU such as Zen 3 runs)
    .venv/bin/python benchmarks/first_run.py --encode   # ignore the shipped latents: encode the 9216 crops
    .venv/bin/python benchmarks/first_run.py --encode --return-freed-memory   # and glibc's default allocation

A first run pays for what later runs find cached: the 128 x 128 held-out photo crops and the build of the C++
search kernel; the training and validation crops' latents ship with the repository (``data/embedded_latents``;
``--encode`` ignores them, ``REVQ_SHIPPED_LATENTS=0``, and pays for the frozen VAE's encoder over 8192 + 1024
crops as a first run did before they shipped). ``--return-freed-memory`` runs with ``REVQ_KEEP_FREED_MEMORY=0``
(glibc's default: freed blocks go back to the kernel and fault in again; ``revq_core.utils.cpu_memory``).
The notebook runs with an empty latent cache, an empty torch-extensions folder, and its run directory and
figures in a temporary folder (the repository's own are not touched). Prints the notebook's time, the slowest cells and the CPU.
``--avx2`` sets ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
REVQ_CPU_KERNEL_ARCH=x86-64-v3``: the instructions of an AVX2-only CPU on this one (not its clock or caches).
Run it on a quiet machine: another job on the same cores makes every number meaningless.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AVX2_PATHS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
              "REVQ_CPU_KERNEL_ARCH": "x86-64-v3"}


def cpu_name() -> str:
    """The CPU's model name as lscpu gives it (e.g. "AMD EPYC"), with its family number where it says one."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    name = fields.get("Model name", "unknown CPU").strip()
    family = fields.get("CPU family", "").strip()
    return f"{name} (family {family})" if family else name


def cell_times(notebook: Path, top: int) -> list[tuple[float, str]]:
    """The ``top`` slowest code cells of an executed notebook: (seconds, the cell's first code line)."""
    cells = json.loads(notebook.read_text())["cells"]
    timed = []
    for cell in cells:
        duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
        if cell["cell_type"] == "code" and duration:
            source = "".join(cell["source"]).splitlines()
            first = next((line for line in source if line.strip() and not line.startswith("#")), "")
            timed.append((float(duration), first[:90]))
    return sorted(timed, reverse=True)[:top]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avx2", action="store_true", help="run on the AVX2 code paths (see the module docstring)")
    parser.add_argument("--encode", action="store_true", help="ignore the shipped latents (REVQ_SHIPPED_LATENTS=0)")
    parser.add_argument("--return-freed-memory", action="store_true",
                        help="glibc's default allocation (REVQ_KEEP_FREED_MEMORY=0)")
    parser.add_argument("--top", type=int, default=5, help="how many of the slowest cells to list")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="revq_first_run_") as scratch:
        scratch = Path(scratch)
        environment = dict(os.environ, REVQ_CACHE=str(scratch / "cache"), TORCH_EXTENSIONS_DIR=str(scratch / "ext"),
                           REVQ_FIGURES_DIR=str(scratch / "figures"))
        if args.avx2:
            environment.update(AVX2_PATHS)
        if args.encode:
            environment["REVQ_SHIPPED_LATENTS"] = "0"
        if args.return_freed_memory:
            environment["REVQ_KEEP_FREED_MEMORY"] = "0"
        executed = scratch / "05_train.ipynb"
        command = [sys.executable, "-m", "papermill", "--cwd", str(REPO / "notebooks"), "--no-progress-bar",
                   str(REPO / "notebooks" / "05_train.ipynb"), str(executed), "-p", "output_dir", str(scratch / "run")]
        started = time.perf_counter()
        finished = subprocess.run(command, env=environment, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if finished.returncode != 0:
            sys.exit(f"the notebook failed (exit {finished.returncode}):\n{finished.stderr[-3000:]}")
        variant = "".join([", shipped latents ignored" if args.encode else "",
                           ", glibc's default allocation" if args.return_freed_memory else ""])
        print(f"{cpu_name()}, {'AVX2 code paths' if args.avx2 else 'native code paths'}{variant}, "
              f"{os.cpu_count()} CPUs: first run of notebooks/05_train.ipynb {seconds:.0f} s "
              f"({int(seconds // 60)}:{int(seconds % 60):02d}), papermill's start included")
        for duration, line in cell_times(executed, args.top):
            print(f"  {duration:6.1f} s  {line}")


if __name__ == "__main__":
    main()
