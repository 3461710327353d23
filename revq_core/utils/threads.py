"""The CPU thread count: ``$REVQ_NUM_THREADS`` wins over what a caller asks for."""
from __future__ import annotations

import os


def cpu_threads(requested: int | None = None) -> int | None:
    """The CPU thread count to use: ``$REVQ_NUM_THREADS`` when set, else ``requested`` (None: torch's own
    choice). The variable is how the notebooks' checks are run with 1 and with 2 threads, and how a
    background job is kept to 1 thread; it is applied once when revq_core is imported, and wins over the
    thread counts that notebooks and ``TrainConfig.num_threads`` ask for."""
    from_environment = os.environ.get("REVQ_NUM_THREADS", "").strip()
    if from_environment:
        if not from_environment.isdigit() or int(from_environment) < 1:
            raise ValueError(f"REVQ_NUM_THREADS must be a positive integer, got {from_environment!r}.")
        return int(from_environment)
    return requested
