"""The memory chapter's checks of its own estimate against real servers (model selection,
"Does it fit?"): the estimate beside the measured peak, and what memory-mapping the weights changes."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ..build import BuildInfo
from ..models import ResolvedModel
from .measure import compare_memory, measure_memory
from .memory import architecture, estimate_memory, kv_bytes

MIB = 2**20


def kv_growth(models: Sequence[ResolvedModel], n_parallel: int) -> list[str]:
    """Per model, one sentence: how much the KV cache grows per token of context, and why."""
    out = []
    for m in models:
        arch = architecture(m)
        per_token = (kv_bytes(arch, 8192, n_parallel) - kv_bytes(arch, 4096, n_parallel)) / 4096
        window = (
            f"{arch.n_swa_layers} of them with a {arch.sliding_window}-token window"
            if arch.n_swa_layers
            else "all full attention"
        )
        out.append(
            f"{m.spec}: the KV cache grows by {per_token / 1024:.1f} KiB per token of context ({arch.layers} layers, {window})"
        )
    return out


def estimate_vs_measured(
    models: Sequence[ResolvedModel], estimates: pd.DataFrame, n_parallel: int, threads: int, build: BuildInfo
) -> pd.DataFrame:
    """Every (model, context) of the estimate table, with the peak resident memory of a real
    llama-server at that context beside it."""
    rows = []
    for m in models:
        for ctx in estimates.loc[estimates["model"] == m.spec, "context"]:
            measured = measure_memory(m, int(ctx), n_parallel, threads, build)
            rows.append(compare_memory(estimate_memory(m, int(ctx), n_parallel), measured))
    return pd.DataFrame(rows)


def mmap_table(
    models: Sequence[ResolvedModel], estimates: pd.DataFrame, n_parallel: int, threads: int, build: BuildInfo
) -> pd.DataFrame:
    """Peak, anonymous and file-backed resident memory with the weights read into RAM and memory-mapped,
    at each model's smallest context of the estimate table."""
    rows = []
    for m in models:
        ctx = int(estimates.loc[estimates["model"] == m.spec, "context"].min())
        for mmap in (False, True):
            r = measure_memory(m, ctx, n_parallel, threads, build, probe_tokens=0, mmap=mmap)
            rows.append({"model": m.spec, "context": ctx, "weights": "memory-mapped" if mmap else "read into RAM",
                         "peak (MiB)": round(r.peak_rss / MIB, 1), "anonymous (MiB)": round(r.rss_anon / MIB, 1),
                         "file-backed (MiB)": round(r.rss_file / MIB, 1)})  # fmt: skip
    return pd.DataFrame(rows).set_index(["model", "weights"])
