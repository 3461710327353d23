"""Regenerate notebooks/*.ipynb from their jupytext .py twins and execute them in place with papermill.

    python scripts/execute_notebooks.py                       # every notebook
    python scripts/execute_notebooks.py notebooks/03_toy_2d.py  # one

The stored outputs are what ``pytest --nbval`` compares against, so run this after editing a
notebook's .py file (the .py is the source of truth; the .ipynb is written from it). Prints the
wall time of each notebook: the whole set must stay under 15 minutes on 2 cores.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"


def execute(py_path: Path) -> float:
    ipynb_path = py_path.with_suffix(".ipynb")
    subprocess.run([sys.executable, "-m", "jupytext", "--quiet", "--to", "ipynb", "--output", str(ipynb_path),
                    str(py_path)], check=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "papermill", "--cwd", str(NOTEBOOKS), "--kernel", "python3",
                    "--no-progress-bar", str(ipynb_path), str(ipynb_path)], check=True)
    return time.perf_counter() - started


def main(argv: list[str]) -> None:
    paths = [Path(arg).resolve() for arg in argv] or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    total = 0.0
    for path in paths:
        seconds = execute(path.with_suffix(".py"))
        total += seconds
        print(f"{path.stem}: {seconds:.0f} s", flush=True)
    print(f"total: {total:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
