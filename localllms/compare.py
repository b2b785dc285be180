"""Comparing models and machines from the results store (notebooks/comparing_models.ipynb).

The page reads the case study's rows (``study.pipeline.TABLE``) of one configuration, for every
model and machine the store holds with it, and keeps apart two kinds of column:

* **quality and size** (``quality_columns``): functions of the model file, the prompts and the llama.cpp
  build. The same build with the same CPU features gives the same numbers on any host, so the
  quality table has one row per model and quant type, and ``agreement`` checks the claim wherever
  the store holds the same study from more than one machine;
* **throughput** (``SPEED``): each machine's own speed rounds (the median over rounds with its
  interval, and each variant against its reference within a round), one column per machine;
  no number in it says anything about another machine. These rounds are the sweep's own study of
  each model, not the case study's main table: the same file can print another speed there.

Across models, perplexity per token is not comparable (each model has its own tokenizer), so the
cross-model quality axis is **bits per byte** on the study's prompts (``bpb``, from the evaluator's
own log-likelihoods, ``selection.quality.bits_per_byte_of``). The Pareto front is of file size
against bits per byte.

Rows of **synthetic files** (a sweep of ``synth:NAME:TYPE``, ``localllms.sizes.speed_only``: a
published architecture with made-up weights, speed and memory only) come after every real-weight
row, named "(synthetic weights: speed and memory only)", with every quality column empty; they are
never on the Pareto front nor in any reading of quality.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from . import metrics, store, sweep, sweep_rules
from .errors import UserError
from .gguf_file import SYNTHETIC_NOTE
from .study.config import StudyConfig

# (column, heading, printed digits): deterministic for a build and CPU features, compared by nbval.
FILE_QUALITY = (("size_mib", "Size (MiB)", 1), ("bpw", "BPW", 2), ("bpb", "Bits per byte", 4))
SPEED = (("pp", "prompt (tok/s)"), ("tg", "generation (tok/s)"))  # per machine: median (interval) over rounds


def quality_columns() -> tuple[tuple[str, str, int], ...]:
    """The file's own columns, then every metric the registry tags ``COMPARING`` (metrics.METRICS)."""
    return (*FILE_QUALITY, *((m.name, m.heading, m.digits) for m in metrics.columns(metrics.COMPARING)))


def fill(
    models: Sequence[str], config: StudyConfig, scheduler: str | None = None, store_path: Path = store.STORE
) -> sweep.Sweep:
    """Make sure the store holds ``config``'s study of every model (a sweep: what is stored is
    skipped); a study that fails is one sentence, since the page would be missing its rows."""
    result = sweep.run(models, config, scheduler=scheduler, store_path=store_path)
    if not result.ok:
        problems = [f"{o.model} on {o.machine} failed ({o.reason})" for o in result.failed] + result.excluded
        raise UserError("The sweep did not complete: " + "; ".join(problems) + ".")
    return result


def load(config: StudyConfig, store_path: Path = store.STORE, first: Sequence[str] = ()) -> pd.DataFrame:
    """The stored rows of ``config``'s study (its ``model`` aside) for every model and machine,
    with bits per byte; models named in ``first`` come first, in that order, then the others."""
    rows = sweep.stored_rows(store_path)
    if rows.empty or "bpb" not in rows.columns:
        raise UserError(f"The store {store_path} has no rows of a sweep yet; run `python -m localllms sweep`.")
    synthetic = synthetic_rows(rows)
    same = rows["bpb"].notna() | (synthetic & rows["tg_tps"].notna())  # a synthetic row has speed only
    for col, value in config.run_values().items():  # every declared parameter but the resolved ones
        same &= rows[col] == value if col in rows else False
    same &= (rows["threads"] == rows["cores"]) if config.threads is None else (rows["threads"] == config.threads)
    if config.corpus_source != "auto":  # no prompt is scored on a synthetic file: it has no corpus
        same &= synthetic | (rows["corpus"] == sweep.corpus_name(config.corpus_source))
    types = {*config.quant_types}
    df = rows[same & (rows["quant"].isin(types) | (rows["quant"] == rows["reference_label"]) | synthetic)]
    if df.empty:
        raise UserError(f"The store {store_path} has no rows of this configuration yet; run the sweep first.")
    return prepare(df, first)


def synthetic_rows(df: pd.DataFrame) -> pd.Series:
    """Which rows are of synthetic files (speed only); rows stored before the column are real."""
    return sweep_rules.synthetic_rows(df)


def real(df: pd.DataFrame) -> pd.DataFrame:
    """The real-weight rows: the only ones any quality column, the Pareto front or a reading uses."""
    return df[~synthetic_rows(df)]


def prepare(rows: pd.DataFrame, first: Sequence[str] = ()) -> pd.DataFrame:
    """Rows of the store with a ``machine`` label, in order: real-weight rows before synthetic ones,
    models in ``first`` first, each model's reference before its variants, smaller files first."""
    df = rows.copy()
    df["machine"] = [_machine(r) for r in df.to_dict("records")]
    order = {m: i for i, m in enumerate(first)}
    df["_synthetic"] = synthetic_rows(df)
    df["_model"] = df["model"].map(lambda m: order.get(m, len(order)))
    df["_ref"] = df["quant"] != df["reference_label"]
    df = df.sort_values(["_synthetic", "_model", "model", "_ref", "size_mib", "machine"])
    return df.drop(columns=["_synthetic", "_model", "_ref"]).reset_index(drop=True)


def _machine(r: dict) -> str:
    host = r.get("hostname")
    host = host if isinstance(host, str) and host else "host not recorded"
    return f"{host} ({r['cpu']}, {int(r['cores'])} cores)"


def machines(df: pd.DataFrame) -> pd.DataFrame:
    """The machines in the rows, with what makes their quality numbers comparable (build, CPU features)."""
    cols = ["machine", "cpu", "cores", "build_key", "cpu_features", "threads", "host_study_slots"]
    m = df[cols].drop_duplicates("machine").set_index("machine")
    return m.rename(
        columns={"cpu_features": "CPU features", "build_key": "llama.cpp build", "host_study_slots": "studies at once"}
    )


def _one_per_variant(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, quant): the first machine's (the quality columns agree across machines
    of the same build and CPU features; ``agreement`` shows by how much where there are several)."""
    return df.drop_duplicates(["model", "quant"], keep="first")


def _name(df: pd.DataFrame) -> pd.Series:
    """How tables name a model: a path by its file name; a synthetic file says what it is."""
    names = df["model"].map(lambda m: Path(m).stem if str(m).endswith(".gguf") else m)
    return names.where(~synthetic_rows(df), names + f" ({SYNTHETIC_NOTE})")


def pareto_front(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(model, quant) of the files no smaller file beats on bits per byte (lower or equal)."""
    front, best = [], float("inf")
    for _, r in _one_per_variant(real(df)).sort_values(["size_mib", "bpb"]).iterrows():
        if r["bpb"] < best:
            front.append((r["model"], r["quant"]))
            best = r["bpb"]
    return front


def quality_table(df: pd.DataFrame) -> pd.DataFrame:
    """Size and quality of every model file, one row each: the same on every machine of the same
    build and CPU features (the reference rows are each model's own F16 reference)."""
    q = _one_per_variant(df)
    front = set(pareto_front(df))
    t = pd.DataFrame({"Model": _name(q), "Quant": q["quant"]})
    synthetic = synthetic_rows(q)
    for col, heading, digits in quality_columns():
        values = (
            q[col] if col in q.columns else pd.Series(float("nan"), index=q.index)
        )  # a store of synthetic rows only
        t[heading] = values.round(digits)
        if synthetic.any() and col != "size_mib" and col != "bpw":  # made-up weights: no quality, left empty
            t[heading] = t[heading].astype(object).where(~synthetic, "")
    t["Pareto front"] = ["yes" if (m, v) in front else "" for m, v in zip(q["model"], q["quant"], strict=True)]
    return t.set_index(["Model", "Quant"])


def synthetic_table(df: pd.DataFrame) -> pd.DataFrame:
    """The synthetic files alone: size and each machine's speed (no quality: speed and memory only)."""
    s = df[synthetic_rows(df)]
    if s.empty:
        return pd.DataFrame()
    t = speed_table(s).drop(columns=[c for c in speed_table(s).columns if c.endswith("generation vs reference")])
    sizes = _one_per_variant(s)
    t.insert(0, "Size (MiB)", sizes["size_mib"].round(1).to_numpy())
    t.insert(1, "BPW", sizes["bpw"].round(2).to_numpy())
    return t


def speed_table(df: pd.DataFrame) -> pd.DataFrame:
    """Throughput, the median over that machine's rounds with its interval, and generation against
    the model's reference within each round: columns per machine, each comparable with no other."""
    out = []
    for (_, quant), g in df.groupby(["model", "quant"], sort=False):
        row: dict = {"Model": _name(g).iloc[0], "Quant": quant}
        for i, r in g.iterrows():
            for test, heading in SPEED:
                row[f"{r['machine']}: {heading}"] = (
                    f"{r[f'{test}_tps']:.1f} ({r[f'{test}_lo']:.1f}–{r[f'{test}_hi']:.1f})"
                )
            no_reference = quant == r["reference_label"] or bool(synthetic_rows(g.loc[[i]]).iloc[0])
            vs = "—" if no_reference else (
                f"×{r['tg_vs_ref']:.2f} ({r['tg_vs_ref_lo']:.2f}–{r['tg_vs_ref_hi']:.2f})"
            )  # fmt: skip
            row[f"{r['machine']}: generation vs reference"] = vs
        out.append(row)
    return pd.DataFrame(out).set_index(["Model", "Quant"])


def agreement(df: pd.DataFrame) -> pd.DataFrame:
    """For each model file and each group of machines with the same build and CPU features, the
    largest difference of every quality column between those machines (0 where they agree)."""
    rows = []
    for (model, quant, build, _), g in real(df).groupby(["model", "quant", "build_key", "cpu_features"], sort=False):
        if g["machine"].nunique() < 2:
            continue
        rows.append(
            {"Model": _short(model), "Quant": quant, "llama.cpp build": build, "machines": g["machine"].nunique()}
            | {h: float(g[c].max() - g[c].min()) for c, h, _ in quality_columns()}
        )
    return pd.DataFrame(rows)


def agreement_sentence(df: pd.DataFrame) -> str:
    """What the store says about quality across machines, computed from the rows."""
    n = df["machine"].nunique()
    if n < 2:
        return (
            "The store holds this configuration from one machine only, so there is nothing to compare across "
            "machines yet: run the sweep on another one (see below) and rerun this page."
        )
    a = agreement(df)
    if a.empty and df.groupby(["build_key", "cpu_features"])["machine"].nunique().max() < 2:
        return (
            f"The store holds this configuration from {n} machines, but no two share a llama.cpp build and CPU "
            "features, so their quality numbers are not expected to agree and are not compared."
        )
    if a.empty:  # machines that could agree, but measured different files
        return (
            f"The store holds this configuration from {n} machines; those that share a llama.cpp build and CPU "
            "features measured no file in common, so no quality number is compared across them yet."
        )
    worst = a[[h for _, h, _ in quality_columns()]].abs().max()
    if (worst == 0).all():
        return f"On the {int(a['machines'].max())} machines that share a build and CPU features, every quality number agrees exactly."
    parts = ", ".join(f"{h} by up to {v:.2g}" for h, v in worst.items() if v > 0)
    return f"Machines that share a build and CPU features differ in {parts}; see the agreement table."


def references(df: pd.DataFrame) -> str:
    """Which file each model's variants were measured against, from the rows."""
    refs = real(df).drop_duplicates("model")
    named = "; ".join(f"{_short(m)}: {r}" for m, r in zip(refs["model"], refs["reference_label"], strict=True))
    return f"Each model's reference (the row its variants are measured against), from the store: {named}."


def pareto_table(df: pd.DataFrame) -> pd.DataFrame:
    """The figure's data: size and bits per byte of every file, front marked, smallest first."""
    t = quality_table(real(df))[["Size (MiB)", "Bits per byte", "Pareto front"]]
    return t.sort_values(["Size (MiB)", "Bits per byte"])


def reading(df: pd.DataFrame) -> str:
    """The front in words, computed from the rows (so the sentence cannot disagree with the table)."""
    df = real(df)
    q = _one_per_variant(df).set_index(["model", "quant"])
    front = pareto_front(df)
    named = [
        f"{_short(m)} {v} ({q.loc[(m, v), 'size_mib']:.1f} MiB, {q.loc[(m, v), 'bpb']:.3f} bits per byte)"
        for m, v in front
    ]
    beaten = len(q) - len(front)
    text = f"The Pareto front, smallest first: {'; '.join(named)}."
    if beaten == 1:
        text += (
            f" The other file of the {len(q)} is beaten by a smaller one that predicts the prompts at least as well."
        )
    elif beaten:
        text += (
            f" Each of the other {beaten} of the {len(q)} files is beaten by a smaller one that predicts the "
            "prompts at least as well."
        )
    models_on_front = {m for m, _ in front}
    if len(models_on_front) < df["model"].nunique():
        off = sorted(set(df["model"]) - models_on_front)
        text += f" No file of {', '.join(_short(m) for m in off)} is on it."
    return text


def _short(model: str) -> str:
    return Path(model).stem if str(model).endswith(".gguf") else str(model)


def plot_pareto(df: pd.DataFrame):
    """File size against bits per byte for every model file; the dashed line is the front."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import FuncFormatter

    sns.set_theme(style="whitegrid")
    df = real(df)
    q = _one_per_variant(df).copy()
    q["model name"] = _name(q)
    front = pd.DataFrame(pareto_front(df), columns=["model", "quant"]).merge(q, on=["model", "quant"])
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    sns.scatterplot(data=q, x="size_mib", y="bpb", hue="model name", style="model name", s=90, ax=ax)
    ax.plot(front["size_mib"], front["bpb"], "--", c="grey", label="Pareto front")
    for _, r in q.iterrows():
        label = "F16 ref." if r["quant"] == r["reference_label"] else r["quant"]
        ax.annotate(label, (r["size_mib"], r["bpb"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set(
        xscale="log",
        xlabel="file size (MiB, log scale)",
        ylabel="bits per byte on the prompts (lower is better)",
        title="Size against quality, across models",
    )
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: the notebook shows it exactly once
    return fig
