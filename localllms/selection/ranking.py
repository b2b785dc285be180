"""A ranking for this machine: fit first, then quality, speed and cost, with a reason per candidate."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ..models import ResolvedModel
from .cost import CostAssumptions, local_cost
from .licenses import candidate_license
from .memory import GIB, MIB, architecture, estimate_memory, verdict
from .quality import BitsPerByte

_FIT_ORDER = {"fits": 0, "tight": 1, "does not fit": 2}


def recommend(
    models: Sequence[ResolvedModel],
    contexts: Sequence[int],
    available: int,
    quality: Sequence[BitsPerByte],
    speeds: Sequence[dict],
    a: CostAssumptions,
    n_parallel: int = 1,
) -> pd.DataFrame:
    """Rank the candidates: first by fit at their largest asked context, then by their mean rank on
    quality (bits per byte), generation speed and blended cost, ties going to quality."""
    q = {r.model: r for r in quality}
    s = {r["model"]: r for r in speeds}
    rows = []
    for m in models:
        arch = architecture(m)
        e = estimate_memory(m, max(contexts), n_parallel, arch=arch)
        cost = local_cost(s[m.spec]["pp_tps"], s[m.spec]["tg_tps"], a)
        rows.append(
            {
                "model": m.spec,
                "context": e.n_ctx,
                "fit": verdict(e.total, available),
                "memory (MiB)": round(e.total / MIB, 1),
                "bits per byte": round(q[m.spec].bpb, 4),
                "generation (tok/s)": round(s[m.spec]["tg_tps"], 1),
                "blended cost (USD/M)": round(cost["blended per M"], 4),
                "chat template": m.info.chat_template,
                "license": candidate_license(m)["license"],
                "clipped": e.clipped,
            }
        )
    df = pd.DataFrame(rows)
    ranks = pd.concat(
        [
            df["bits per byte"].rank(method="min"),
            df["generation (tok/s)"].rank(ascending=False, method="min"),
            df["blended cost (USD/M)"].rank(method="min"),
        ],
        axis=1,
    ).mean(axis=1)
    df["score"] = ranks
    df["_fit"] = df["fit"].map(_FIT_ORDER)
    df = df.sort_values(["_fit", "score", "bits per byte"]).drop(columns="_fit").reset_index(drop=True)
    best = {
        "bits per byte": df["bits per byte"].min(),
        "generation (tok/s)": df["generation (tok/s)"].max(),
        "blended cost (USD/M)": df["blended cost (USD/M)"].min(),
    }
    df["reason"] = [_reason(r, best, available) for r in df.to_dict("records")]
    df.insert(0, "rank", range(1, len(df) + 1))
    return df.drop(columns=["score", "clipped"]).set_index("rank")


def _reason(r: dict, best: dict, available: int) -> str:
    parts = [
        f"{r['fit']} at {r['context']:,} tokens ({r['memory (MiB)']:.0f} MiB of {available / GIB:.1f} GiB available)"
    ]
    if r["bits per byte"] == best["bits per byte"]:
        parts.append(f"best quality ({r['bits per byte']:.3f} bits/byte)")
    else:
        parts.append(f"{r['bits per byte'] / best['bits per byte'] - 1:+.0%} bits/byte against the best")
    if r["generation (tok/s)"] == best["generation (tok/s)"]:
        parts.append(f"fastest generation ({r['generation (tok/s)']:.0f} tok/s)")
    else:
        parts.append(f"{r['generation (tok/s)'] / best['generation (tok/s)']:.1f}x the fastest generation")
    if r["blended cost (USD/M)"] == best["blended cost (USD/M)"]:
        parts.append("cheapest per token")
    parts.append("instruction-tuned (chat template)" if r["chat template"] else "base model: no chat template")
    parts.append(f"{r['license']} license")
    return "; ".join(parts)
