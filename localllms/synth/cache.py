"""Where synthetic files live, how much room they may take, and which go first.

Files sit in ``cache_dir("synth")``, named ``<name>-<type>-<key>.gguf``; the key covers what
decides their bytes (the architecture row, the type, the llama.cpp commit whose rules chose the
types, this package's code), so a rerun finds the file and does not write it again.

Use is tracked by the access time, set here on every use (``touch``) and left alone by the
modification time, which stays the time the file was written. When a new file would take the
directory past the cap, the least recently used files are removed first.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ..errors import UserError
from ..paths import cache_dir

# 40 GB holds a few 7B-14B files at 4-8 bits (4-15 GB each) beside the book's own cache on a
# typical laptop disk; a 70B file at Q4_K_M (40+ GB) needs the cap raised on purpose.
CAP_GB = 40.0
CAP_ENV = "LOCALLLMS_SYNTH_CAP_GB"
SUFFIX = ".gguf"


def directory() -> Path:
    return cache_dir("synth")


def cap_bytes() -> int:
    """The cap in bytes: ``$LOCALLLMS_SYNTH_CAP_GB`` (decimal GB) or ``CAP_GB``."""
    text = os.environ.get(CAP_ENV, "").strip()
    try:
        gb = float(text) if text else CAP_GB
    except ValueError as exc:
        raise UserError(f"{CAP_ENV}={text!r} is not a number of GB; set it to e.g. 40 or unset it.") from exc
    if gb <= 0:
        raise UserError(f"{CAP_ENV}={text!r} must be positive; set it to e.g. 40 or unset it.")
    return int(gb * 1e9)


def files() -> list[Path]:
    """The synthetic files, least recently used first."""
    found = [p for p in directory().glob(f"*{SUFFIX}") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_atime_ns)


def used_bytes() -> int:
    return sum(p.stat().st_size for p in files())


def touch(path: Path) -> None:
    """Mark ``path`` as used now (access time), keeping its modification time."""
    st = path.stat()
    os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))


def to_evict(needed: int) -> list[Path]:
    """The least recently used files that must go so ``needed`` more bytes stay under the cap."""
    room = cap_bytes() - needed
    used = used_bytes()
    out = []
    for path in files():
        if used <= room:
            break
        out.append(path)
        used -= path.stat().st_size
    return out


def evict(paths: list[Path]) -> int:
    freed = 0
    for path in paths:
        size = path.stat().st_size
        path.unlink(missing_ok=True)
        freed += size
    return freed


def free_disk() -> int:
    return shutil.disk_usage(directory()).free


def clean() -> dict:
    """Remove every synthetic file, unfinished write, leftover probe and cached type plan."""
    root = directory()
    n, freed = 0, 0
    for path in [*root.glob(f"*{SUFFIX}"), *root.glob(".*.partial")]:
        freed += path.stat().st_size
        path.unlink(missing_ok=True)
        n += 1
    for probe_dir in root.glob(".probe-*"):  # left behind only by a killed run
        shutil.rmtree(probe_dir, ignore_errors=True)
    shutil.rmtree(root / "plans", ignore_errors=True)
    return {"removed_files": n, "freed_bytes": freed, "directory": str(root)}
