"""Where things live: the project tree, and a cache outside it that survives clones."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
RESULTS_DIR = DATA_DIR / "results"


def cache_dir(*parts: str) -> Path:
    """A directory under the user cache (``$LOCALLLMS_CACHE`` or ``~/.cache/local-llms``).

    The cache sits outside the work tree so that a fresh clone, ``make clean`` or CI
    on the same machine reuse the compiled llama.cpp, downloaded and derived models.
    """
    root = os.environ.get("LOCALLLMS_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "local-llms"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def content_key(*parts: object) -> str:
    """A short digest of JSON-able parts: the key under which a cached result is stored."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]
