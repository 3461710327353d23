"""Where files go: the repository root and the cache directory."""
from __future__ import annotations

import os
from pathlib import Path

# The repository root (data/, notebooks/, figures/ live there).
REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """The cache directory: ``$REVQ_CACHE`` if set, else ``.cache/`` at the repository root."""
    if os.environ.get("REVQ_CACHE"):
        return Path(os.environ["REVQ_CACHE"])
    return REPO_ROOT / ".cache"
