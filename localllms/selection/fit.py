"""Will it fit? Well-known open models at common quant types, contexts and machine sizes.

The estimate is ``memory.estimate_architecture`` on an Architecture built from each model's
published hyperparameters (``published.published_architecture``); nothing here is run. The
verdict is ``memory.verdict`` against the machine's installed RAM: "fits" at most ``FIT_SHARE``
(80 %) of it, the rest left to the operating system, other programs and the estimate's error;
"tight" up to all of it; else "does not fit". ``route_check`` shows that the published route
is the same estimator as the GGUF route, on the two catalog models.

``measure_synthetic`` runs some rows for real: a synthetic file of the architecture at the type
(``localllms.synth``: the exact tensor shapes and per-tensor types, made-up weights; speed and memory
only) served by llama-server, its peak resident memory beside the estimate (``MEASURED_SYNTHETIC``
at ``MEASURED_CONTEXTS``; the chapter "Try before you download" measures their speed).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ..build import BuildInfo
from ..errors import UserError
from ..gguf_file import SYNTHETIC_NOTE
from ..models import ResolvedModel
from .memory import FIT_SHARE, GIB, MEMORY_TOLERANCE, MIB, architecture, estimate_architecture, estimate_memory, verdict
from .published import Hyperparameters, counted_parameters, load_published, published_architecture

# The rows of the table measured on this machine, as synthetic files (synth:NAME:TYPE specs): a size
# class readers run at the common 4-bit type and at 8 bits, and the largest class whose run fits this
# book's 24 GiB, 2-core build machine within the chapter's time budget (a 14B would fit the RAM too,
# at twice the minutes; pass it to the chapter "Try before you download" as one of its SIZES).
MEASURED_SYNTHETIC = ("synth:llama-3.2-1b:Q4_K_M", "synth:llama-3.2-1b:Q8_0", "synth:qwen2.5-7b:Q4_K_M")
MEASURED_CONTEXTS = (4096, 8192)  # a chat, and a long document; the KV cache is the part that grows


def _contexts(hp: Hyperparameters, contexts: Sequence[int]) -> list[tuple[str, int]]:
    return [(f"{c:,}", c) for c in contexts] + [("trained maximum", hp.trained_context)]


def fit_rows(
    published: Sequence[Hyperparameters],
    quant_types: Sequence[str],
    contexts: Sequence[int],
    machines_gib: Sequence[int],
    n_parallel: int = 1,
) -> pd.DataFrame:
    """One row per model, quant type and context: the estimate's parts and the verdict per machine."""
    if not published or not quant_types or not contexts or not machines_gib:
        raise UserError("Give at least one model, quant type, context and machine size.")
    if min(machines_gib) <= 0:
        raise UserError(f"Machine sizes must be positive GiB, not {list(machines_gib)}.")
    rows = []
    for hp in published:
        params = counted_parameters(hp)
        for q in quant_types:
            arch = published_architecture(hp, q)
            for label, c in _contexts(hp, contexts):
                e = estimate_architecture(arch, c, n_parallel, name=hp.model)
                row = {
                    "model": hp.model,
                    "quant": q,
                    "context": label,
                    "tokens": e.n_ctx,
                    "clipped": e.clipped,
                    "bits/weight": 8 * e.weights / params,
                    "weights (GiB)": e.weights / GIB,
                    "KV cache (GiB)": e.kv / GIB,
                    "other (GiB)": (e.compute + e.output + e.tokenizer + e.runtime) / GIB,
                    "total (GiB)": e.total / GIB,
                }
                for m in machines_gib:
                    row[f"{m} GB"] = verdict(e.total, m * GIB)
                rows.append(row)
    return pd.DataFrame(rows)


def _smallest(row: pd.Series, machines_gib: Sequence[int]) -> str:
    ordered = sorted(machines_gib)
    for m in ordered:
        if row[f"{m} GB"] == "fits":
            return f"{m} GB"
    for m in ordered:
        if row[f"{m} GB"] == "tight":
            return f"{m} GB, tight"
    return f"none up to {ordered[-1]} GB"


def will_it_fit(rows: pd.DataFrame, machines_gib: Sequence[int], measured: pd.DataFrame | None = None) -> pd.DataFrame:
    """The summary: per model and quant type, the estimate at each context and the smallest machine it
    fits; with ``measured`` (``measure_synthetic``), the measured peak beside the estimate at each
    context where a row was run ("–" where it was not)."""
    peaks = {}
    if measured is not None and not measured.empty:
        peaks = {(r["model"], r["quant"], int(r["context"])): r["measured peak (GiB)"] for _, r in measured.iterrows()}
    out = []
    for (model, quant), g in rows.groupby(["model", "quant"], sort=False):
        first = g.iloc[0]
        rec: dict[str, object] = {
            "model": model,
            "quant": quant,
            "bits/weight": round(float(first["bits/weight"]), 2),
            "weights (GiB)": round(float(first["weights (GiB)"]), 1),
        }
        trained = int(g.loc[g["context"] == "trained maximum", "tokens"].iloc[0])
        for _, r in g.iterrows():
            label = "trained max" if r["context"] == "trained maximum" else r["context"]
            if label == "trained max":
                rec["trained max (tokens)"] = trained
            if r["clipped"]:
                rec[f"{label}: GiB"] = "–"
                rec[f"{label}: machine"] = f"beyond its {trained:,}"
            else:
                rec[f"{label}: GiB"] = f"{r['total (GiB)']:.1f}"
                if peaks and r["context"] != "trained maximum" and any(k[2] == r["tokens"] for k in peaks):
                    peak = peaks.get((model, quant, int(r["tokens"])))
                    rec[f"{label}: measured GiB"] = "–" if peak is None else f"{peak:.1f}"
                rec[f"{label}: machine"] = _smallest(r, machines_gib)
        out.append(rec)
    return pd.DataFrame(out).set_index(["model", "quant"])


def measure_synthetic(
    specs: Sequence[str],
    contexts: Sequence[int],
    n_parallel: int,
    threads: int,
    build: BuildInfo | None = None,
    reuse: bool = False,
) -> pd.DataFrame:
    """Rows of the table run for real: each synthetic file (``synth:NAME:TYPE``, written if missing)
    served by llama-server at each context with one 512-token prompt, its peak resident memory
    against the published-route estimate of the same row. Cached per file, context and build
    (``measure_memory_cached``; ``reuse`` reads a measurement of this run when remeasuring)."""
    from .. import progress, synth
    from ..models import parse_spec, resolve
    from .measure import measure_memory_cached

    rows = []
    bar = progress.Bar(len(specs) * len(contexts), "will it fit: synthetic files served", "server")
    for spec in specs:
        parsed = parse_spec(spec)
        if parsed.kind != "synth" or not parsed.quant:
            raise UserError(
                f"{spec!r} is not a synthetic file spec; write synth:NAME:TYPE, e.g. synth:qwen2.5-7b:Q4_K_M."
            )
        hp = synth.row(parsed.arch)
        model = resolve(parsed.text)
        arch = published_architecture(hp, parsed.quant)
        for c in contexts:
            e = estimate_architecture(arch, c, n_parallel, name=hp.model)
            got = measure_memory_cached(model, c, n_parallel, threads, build, reuse)
            bar.update()
            rows.append(
                {
                    "model": hp.model,
                    "quant": parsed.quant,
                    "spec": parsed.text,
                    "context": c,
                    "file (GB)": model.info.file_size / 1e9,
                    "estimate (GiB)": e.total / GIB,
                    "measured peak (GiB)": got.peak_rss / GIB,
                    "error (%)": 100 * (e.total - got.peak_rss) / got.peak_rss,
                    "KV est. / llama.cpp (MiB)": f"{e.kv / MIB:.0f} / {got.reported.get('KV', float('nan')):.0f}",
                    "compute est. / llama.cpp (MiB)": (
                        f"{e.compute / MIB:.0f} / {got.reported.get('compute', float('nan')):.0f}"
                    ),
                    "load (s)": got.load_seconds,
                    "512-token prompt (s)": got.prompt_ms / 1000,
                }
            )
    bar.close()
    return pd.DataFrame(rows)


def synthetic_table(measured: pd.DataFrame) -> pd.DataFrame:
    """The measured rows, estimate beside the peak, rounded for the page."""
    t = measured.drop(columns=["spec"]).copy()
    for col, digits in (("file (GB)", 2), ("estimate (GiB)", 2), ("measured peak (GiB)", 2), ("error (%)", 1),
                        ("load (s)", 1), ("512-token prompt (s)", 1)):  # fmt: skip
        t[col] = t[col].round(digits)
    return t.set_index(["model", "quant", "context"])


def synthetic_error_sentence(measured: pd.DataFrame) -> str:
    """The estimator's error at real sizes, from the synthetic runs' own numbers."""
    if measured.empty:
        return "No row of the table was run on this machine."
    err = measured["error (%)"]
    worst = measured.loc[err.abs().idxmax()]
    files = measured.drop_duplicates("spec")
    sizes = ", ".join(f"{r['model']} {r['quant']} ({r['file (GB)']:.1f} GB)" for _, r in files.iterrows())
    contexts = " and ".join(f"{c:,}" for c in sorted(measured["context"].unique()))
    return (
        f"Run on this machine as synthetic files ({SYNTHETIC_NOTE}): {sizes}, each at {contexts} tokens. "
        f"The estimate landed between {err.min():+.1f} % and {err.max():+.1f} % of llama-server's peak resident "
        f"memory, the largest miss {worst['error (%)']:+.1f} % ({worst['model']} {worst['quant']} at "
        f"{int(worst['context']):,} tokens): {'within' if err.abs().max() <= 100 * MEMORY_TOLERANCE else 'outside'} "
        f"the ±{100 * MEMORY_TOLERANCE:.0f} % the estimate is held to on the catalog models."
    )


def fixed_parts_sentence(rows: pd.DataFrame) -> str:
    """How much of the table rests on the parts fitted on the two small catalog models."""
    share = rows["other (GiB)"] / rows["total (GiB)"]
    i = rows["other (GiB)"].idxmax()
    return (
        f"The parts of these estimates fitted on the two small catalog models (compute buffer, output, "
        f"tokenizer tables, runtime) come to at most {rows.loc[i, 'other (GiB)'] * 1024:.0f} MiB "
        f"({rows.loc[i, 'model']}, {rows.loc[i, 'quant']}, {rows.loc[i, 'tokens']:,} tokens), and to at most "
        f"{100 * share.max():.1f} % of any estimate in the table; the rest, weights and KV cache, follows "
        f"llama.cpp's allocation rules, checked against both catalog files above."
    )


def catalog_rows(models: Sequence[ResolvedModel], published: Sequence[Hyperparameters] | None = None) -> dict:
    """The CSV row of each catalog model among ``models`` (matched on the catalog name)."""
    published = load_published() if published is None else published
    by_catalog = {hp.catalog: hp for hp in published if hp.catalog}
    return {m.spec: by_catalog[m.spec] for m in models if m.spec in by_catalog}


def route_check(
    models: Sequence[ResolvedModel],
    contexts: Sequence[int],
    n_parallel: int = 1,
    published: Sequence[Hyperparameters] | None = None,
) -> pd.DataFrame:
    """The GGUF route against the published-hyperparameter route for the catalog models, part by part."""
    rows = []
    for m in models:
        hp = catalog_rows([m], published).get(m.spec)
        if hp is None:
            continue
        from_file = architecture(m)
        from_card = published_architecture(hp, m.info.quant_type)
        for n_ctx in sorted({estimate_memory(m, c, n_parallel, arch=from_file).n_ctx for c in contexts}):
            a = estimate_memory(m, n_ctx, n_parallel, arch=from_file)
            b = estimate_architecture(from_card, n_ctx, n_parallel, name=m.spec)
            rows.append(
                {
                    "model": m.spec,
                    "quant": m.info.quant_type,
                    "context": n_ctx,
                    "weights: file / published (bytes)": f"{a.weights:,} / {b.weights:,}",
                    "KV: file / published (MiB)": f"{a.kv / MIB:.2f} / {b.kv / MIB:.2f}",
                    "merges: file / estimated": f"{from_file.merges:,} / {from_card.merges:,}",
                    "GGUF route (MiB)": round(a.total / MIB, 2),
                    "published route (MiB)": round(b.total / MIB, 2),
                    "difference (bytes)": b.total - a.total,
                }
            )
    return pd.DataFrame(rows)


def route_vs_measured(routes: pd.DataFrame, validation: pd.DataFrame) -> pd.DataFrame:
    """Both routes against the measured peak resident memory of the same server runs."""
    measured = validation[["model", "context", "measured peak (MiB)"]]
    t = routes[["model", "context", "GGUF route (MiB)", "published route (MiB)"]].merge(
        measured, on=["model", "context"], how="inner"
    )
    for col in ("GGUF route (MiB)", "published route (MiB)"):
        name = col.split(" (")[0]
        t[f"{name} error (%)"] = (100 * (t[col] - t["measured peak (MiB)"]) / t["measured peak (MiB)"]).round(1)
    return t


def measured_error_sentence(validation: pd.DataFrame) -> str:
    """The estimator's measured error on the catalog models, from the validation run's own numbers."""
    if validation.empty:
        return "No estimate was measured against a server in this run."
    err = validation["error (%)"]
    models = validation["model"].nunique()
    return (
        f"Measured in this run on the {models} catalog models, at {len(validation)} model and context "
        f"pairs, the estimate landed between {err.min():+.1f} % and {err.max():+.1f} % of the peak "
        f"resident memory of a real llama-server; the verdicts above leave {100 * (1 - FIT_SHARE):.0f} % of "
        f"the RAM for that error and for everything else the machine runs."
    )


def route_sentence(routes: pd.DataFrame) -> str:
    """What the route check shows, from its own columns."""
    if routes.empty:
        return "None of these candidates has a row in the published-hyperparameters file."
    weights = routes["weights: file / published (bytes)"].str.split(" / ")
    kv = routes["KV: file / published (MiB)"].str.split(" / ")
    same_weights = all(a == b for a, b in weights)
    same_kv = all(a == b for a, b in kv)
    largest = int(routes["difference (bytes)"].abs().max())
    return (
        f"Built from the cards' numbers, the estimate {'reproduces' if same_weights else 'does not reproduce'} "
        f"the files' tensor bytes exactly and {'gives' if same_kv else 'does not give'} the same KV cache; "
        f"its totals differ from the file route's by at most {largest:,} bytes"
        + (", the estimated merges." if same_weights and same_kv else ".")
    )


def fit_reading(rows: pd.DataFrame, machines_gib: Sequence[int]) -> str:
    """A short reading of the table, computed from it: the smallest machine, the largest, and the KV cache."""
    small, large = f"{min(machines_gib)} GB", f"{max(machines_gib)} GB"
    first = rows["context"].iloc[0]
    at_first = rows[rows["context"] == first]
    fits_small = at_first[at_first[small] == "fits"]
    names = "; ".join(f"{m} at {', '.join(g['quant'])}" for m, g in fits_small.groupby("model", sort=False))
    no_large = at_first[at_first[large] != "fits"]
    big = "; ".join(f"{m} at {', '.join(g['quant'])}" for m, g in no_large.groupby("model", sort=False))
    trained = rows[(rows["context"] == "trained maximum") & (rows["quant"] == rows["quant"].iloc[0])]
    kv = "; ".join(f"{r['model']} {r['KV cache (GiB)']:.1f} GiB at {r['tokens']:,}" for _, r in trained.iterrows())
    return (
        f"At {first} tokens, {small} of RAM fits {names or 'none of them'}. "
        + (f"Even {large} cannot hold these within {100 * FIT_SHARE:.0f} % of its RAM: {big}. " if big else "")
        + f"The KV cache is the same at every quant type and grows with the context; at each model's trained "
        f"maximum it is: {kv}."
    )
