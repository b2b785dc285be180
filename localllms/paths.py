"""Where things live: the project tree, and a cache outside it that survives clones."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
RESULTS_DIR = DATA_DIR / "results"  # tracked: only `make record` and `make bench` write here
# Everything a run produces (executed notebooks, results, images, the HTML) goes under _build/;
# a run never changes a tracked file.
BUILD_DIR = PROJECT_ROOT / "_build"
OUTPUT_RESULTS_DIR = BUILD_DIR / "results"
OUTPUT_IMAGES_DIR = BUILD_DIR / "images"
REMEASURE_ENV = "LOCALLLMS_REMEASURE"


def remeasuring() -> bool:
    """Whether this run must take every measurement again instead of reading its cache
    (``make book REMEASURE=1``; quality numbers are deterministic and stay cached)."""
    return os.environ.get(REMEASURE_ENV, "") not in ("", "0")


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


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write ``data`` beside ``path`` and rename it into place: readers see all of it or none.

    Every cache file goes through here, so an interrupt never leaves half a result that a
    rerun would trust.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data, encoding="utf-8")
    tmp.replace(path)
    return path


@functools.cache
def code_key(*modules: str) -> str:
    """A digest of the source of the named modules of this package (e.g. ``"evaluate"``).

    Cached results are keyed on it, so a change to the code that produced a number
    recomputes that number; no version constant has to be remembered and bumped. A
    package name covers every module in it.
    """
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for name in sorted(modules):
        path = package.joinpath(*name.split("."))
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
        if not files or not files[0].exists():
            raise ValueError(f"code_key: no module localllms.{name}")
        for f in files:
            digest.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]
