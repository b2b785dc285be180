"""Try before you download: a GGUF with a published architecture's shapes and types, and made-up weights.

llama.cpp's speed and memory do not depend on the values of the weights: a file with a model's
exact tensor shapes and per-tensor quantization types runs the same kernels over the same bytes
as the real model. ``make("qwen2.5-7b", "Q4_K_M")`` writes such a file for a row of
``data/reference/open_model_architectures.csv`` (``selection.published``), in three stages:

1. ``dryrun.plan``: the type of every tensor, from ``llama-quantize --dry-run`` itself on a sparse
   F16 probe of the architecture (cached);
2. the refusal: the file's size against free disk and the cache cap, and the memory to run it
   (``selection.memory`` at ``context`` tokens) against available RAM, before anything is written;
3. ``writer.write_synthetic``: header and tensor data, written under a temporary name and renamed
   into ``cache.directory()``; least recently used files are evicted past the cap (``cache``).

The file says what it is: ``general.name`` ends in "(synthetic weights: speed and memory only)"
and ``localllms.synthetic`` is true. Quality is never computed on it: ``check_not_synthetic`` is
called where the book loads a model for logits and where the study starts.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..gguf_file import SYNTHETIC_KEY, SYNTHETIC_NOTE  # noqa: F401 - the header key the writer sets

if TYPE_CHECKING:
    from ..build import BuildInfo
    from ..selection.memory import MemoryEstimate
    from ..selection.published import Hyperparameters

NAME_SUFFIX = SYNTHETIC_NOTE  # the end of general.name
DEFAULT_CONTEXT = 4096  # tokens of KV cache in the memory check, as a typical chat run
DISK_MARGIN = 256 << 20  # bytes left free beyond the file: room for the rest of the machine
GB, GIB = 1e9, 2**30


def short_name(hp: Hyperparameters) -> str:
    """The CLI name of a row: its model name in lower case, dashed, without "-instruct"."""
    return hp.model.lower().replace(" ", "-").removesuffix("-instruct")


def names() -> dict[str, Hyperparameters]:
    """Every accepted name (short names, then catalog names) and its row."""
    from ..selection.published import load_published

    rows = load_published()
    out = {short_name(hp): hp for hp in rows}
    if len(out) != len(rows):
        raise UserError("Two rows of the published architectures share a short name; rename one.")
    for hp in rows:
        if hp.catalog:
            out.setdefault(hp.catalog, hp)
    return out


def row(name: str) -> Hyperparameters:
    """The architecture row of ``name``, or a sentence listing the names there are."""
    rows = names()
    hp = rows.get(name.strip().lower())
    if hp is None:
        short = sorted({short_name(h) for h in rows.values()})
        raise UserError(f"No published architecture is called {name!r}; use one of: {', '.join(short)}.")
    return hp


@dataclass(frozen=True)
class Synthetic:
    name: str
    model: str
    ftype: str
    path: Path
    file_bytes: int
    tensors: int
    types: dict[str, int]
    written: bool  # False when the cached file was reused
    write_seconds: float
    context: int
    memory: MemoryEstimate
    disk_free: int
    memory_available: int
    llama_cpp_commit: str


def memory_estimate(hp: Hyperparameters, weight_bytes: int, context: int) -> MemoryEstimate:
    """The book's estimate (``selection.memory``) for this architecture with these exact weight bytes."""
    from ..selection.memory import estimate_architecture
    from ..selection.published import published_architecture

    arch = replace(published_architecture(hp, "F16"), weight_bytes=weight_bytes)
    return estimate_architecture(arch, context, name=short_name(hp))


def _available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def make(
    name: str | Hyperparameters,
    ftype: str = "Q4_K_M",
    context: int = DEFAULT_CONTEXT,
    build: BuildInfo | None = None,
    progress_bars: bool = True,
    seed: int = 0,
) -> Synthetic:
    """The synthetic GGUF of ``name`` (or of a row itself) at ``ftype`` (cached); refuses when it or a
    run would not fit."""
    from .. import progress
    from ..build import current_build
    from ..paths import code_key, content_key
    from . import cache, dryrun, writer

    hp = row(name) if isinstance(name, str) else name
    if hp.arch == "qwen2" and hp.heads * hp.head_dim != hp.embedding:
        # llama.cpp's qwen2 sizes attn_q as embedding x embedding whatever the key length says
        raise UserError(f"{hp.model}: llama.cpp's qwen2 needs heads x head dim = embedding, not {hp.heads} x "
                        f"{hp.head_dim} against {hp.embedding}; fix the row.")  # fmt: skip
    ftype = ftype.strip().upper()
    build = build or current_build()
    plan = dryrun.plan(hp, ftype, build)
    weights = sum(writer.tensor_bytes(s, t) for _, s, t in plan.tensors)
    estimate = memory_estimate(hp, weights, context)
    key = content_key(asdict(hp), ftype, build.llama_cpp_commit, code_key("synth"), seed)
    path = cache.directory() / f"{short_name(hp)}-{ftype}-{key[:12]}{cache.SUFFIX}"
    available, free = _available_memory(), cache.free_disk()
    written, seconds = False, 0.0
    if not path.exists():
        evictable = cache.to_evict(plan.file_bytes)
        reclaimed = sum(p.stat().st_size for p in evictable)
        if plan.file_bytes + DISK_MARGIN > free + reclaimed or estimate.total > available:
            raise UserError(
                f"{short_name(hp)} at {ftype} needs {plan.file_bytes / GB:.1f} GB of disk and "
                f"{estimate.total / GIB:.1f} GiB of memory at {context} tokens; this machine has "
                f"{(free + reclaimed) / GB:.1f} GB free and {available / GIB:.1f} GiB available: "
                "pick a smaller model or type."
            )
        if plan.file_bytes > cache.cap_bytes():
            raise UserError(
                f"{short_name(hp)} at {ftype} is {plan.file_bytes / GB:.1f} GB, more than the synthetic cache's cap "
                f"of {cache.cap_bytes() / GB:.1f} GB: raise {cache.CAP_ENV} or pick a smaller model or type."
            )
        cache.evict(evictable)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")  # two runs never share a partial file
        start = time.perf_counter()
        try:
            with progress.Bar(plan.file_bytes, f"synth {short_name(hp)} {ftype}", "B", progress_bars,
                              unit_scale=True, unit_divisor=1024) as bar:  # fmt: skip
                writer.write_synthetic(partial, hp, plan.tensors, plan.file_type, seed, bar.update)
            partial.replace(path)  # only a finished file gets the real name
        finally:
            partial.unlink(missing_ok=True)
        written, seconds = True, time.perf_counter() - start
    cache.touch(path)
    return Synthetic(
        name=short_name(hp),
        model=hp.model,
        ftype=ftype,
        path=path,
        file_bytes=path.stat().st_size,
        tensors=len(plan.tensors),
        types=plan.type_counts(),
        written=written,
        write_seconds=round(seconds, 2),
        context=context,
        memory=estimate,
        disk_free=cache.free_disk(),
        memory_available=available,
        llama_cpp_commit=build.llama_cpp_commit,
    )


def summary(s: Synthetic) -> dict:
    """The ``key: value`` lines of ``python -m localllms synth``."""
    return {
        "name": s.name,
        "model": s.model,
        "quant": s.ftype,
        "path": str(s.path),
        "file_bytes": s.file_bytes,
        "file_gb": round(s.file_bytes / GB, 3),
        "tensors": s.tensors,
        "types": " ".join(f"{t}={n}" for t, n in s.types.items()),
        "written": "yes" if s.written else "no (cached file reused)",
        "write_seconds": s.write_seconds,
        "context": s.context,
        "memory_gib": round(s.memory.total / GIB, 3),
        "memory_available_gib": round(s.memory_available / GIB, 1),
        "disk_free_gb": round(s.disk_free / GB, 1),
        "llama_cpp_commit": s.llama_cpp_commit,
        "weights": "synthetic: speed and memory only; quality is never computed on this file",
    }


def command(name: str | None, ftype: str, context: int, clean: bool = False, list_names: bool = False) -> dict:
    """What ``python -m localllms synth`` does: clean, list the names, or make one file."""
    from . import cache

    if clean:
        return cache.clean()
    if list_names:
        return {short_name(hp): hp.model for hp in dict.fromkeys(names().values())}
    if not name:
        raise UserError("Name an architecture (python -m localllms synth --list shows them), or pass --clean.")
    return summary(make(name, ftype, context))
