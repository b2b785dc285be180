"""The case study's tables: their metric columns, headings and rounding as ``metrics.METRICS`` declares them."""

from __future__ import annotations

import pandas as pd

from .. import metrics


def _pm(mean: pd.Series, sd: pd.Series, digits: int) -> list[str]:
    return [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in zip(mean, sd, strict=True)]


def interval(df: pd.DataFrame, col: str, digits: int = 1, times: bool = False) -> list[str]:
    """ "median (lo–hi)" of a speed column and its ``_lo``/``_hi`` interval over the rounds, or
    "median (n=R)" when the rounds were too few for an interval (as ``intervals.Estimate.text``)."""
    lo, hi = (
        (f"{col}_lo", f"{col}_hi") if f"{col}_lo" in df else (col.replace("_tps", "_lo"), col.replace("_tps", "_hi"))
    )
    x = "×" if times else ""
    n = df["rounds"] if "rounds" in df else pd.Series([float("nan")] * len(df), index=df.index)
    return [
        f"{x}{m:.{digits}f} ({a:.{digits}f}–{b:.{digits}f})" if a == a else f"{x}{m:.{digits}f} (n={k:.0f})"
        for m, a, b, k in zip(df[col], df[lo], df[hi], n, strict=True)
    ]


def _add_metrics(t: pd.DataFrame, df: pd.DataFrame, table: str) -> pd.DataFrame:
    """The metric columns the registry tags for ``table``, in its order: each at its rounding, or
    "mean ± se" at the mean's."""
    for c in metrics.columns(table):
        t[c.heading] = _pm(df[c.name], df[c.se], c.digits) if c.se else df[c.name].round(c.digits)
    return t


def quality_table(df: pd.DataFrame) -> pd.DataFrame:
    """Sizes and the quality metrics tagged for the table: deterministic, so nbval compares them."""
    t = pd.DataFrame({"Model": df["quant"], "Size (MiB)": df["size_mib"].round(1), "BPW": df["bpw"].round(2)})
    return _add_metrics(t, df, metrics.QUALITY).set_index("Model")


def case_study_table(df: pd.DataFrame) -> pd.DataFrame:
    """The case study's table, extended: speeds as the median over rounds with its interval, each
    variant's generation against the reference in the same round, and every quality column tagged
    for it (headings as in the seed chapter)."""
    t = pd.DataFrame(
        {
            "Model": df["quant"],
            "Size (MiB)": df["size_mib"].round(1),
            "BPW": df["bpw"].round(2),
            "Prompt throughput (tok/s)": interval(df, "pp_tps"),
            "Generation (tok/s)": interval(df, "tg_tps"),
            "Generation vs reference": interval(df, "tg_vs_ref", 2, times=True),
        }
    )
    return _add_metrics(t, df, metrics.CASE_STUDY).set_index("Model")


def roofline_table(study) -> pd.DataFrame:  # noqa: ANN001 - a pipeline.Study (the import would be circular)
    """Generation speed x bytes read per token, against the read bandwidth measured in the same
    round: the share per round, its median and interval."""
    from ..intervals import estimate
    from .speed_plan import bandwidth_label

    df, sp = study.rows, study.speed
    threads = int(df["threads"].iloc[0])
    bw = sp.values(bandwidth_label(threads), "bw")
    rows, shares = [], {}
    for r in df.to_dict("records"):
        tg = sp.values(r["quant"], "tg")
        share = estimate([100 * t * r["bytes_per_token"] / 1e9 / b for t, b in zip(tg, bw, strict=True)])
        rows.append(
            {
                "Model": r["quant"],
                "MB read per token": round(r["bytes_per_token"] / 1e6, 1),
                "Generation (tok/s)": interval(pd.DataFrame([r]), "tg_tps")[0],
                "Achieved read (GB/s)": round(r["tg_tps"] * r["bytes_per_token"] / 1e9, 2),
                "Share of bandwidth (%)": share.text(1),
            }
        )
        shares[r["quant"]] = share
    out = pd.DataFrame(rows).set_index("Model")
    out.attrs.update(bandwidth=estimate(bw), shares=shares, threads=threads)
    return out


def roofline_exceptions(table: pd.DataFrame) -> str:
    """A sentence naming the variants whose generation read more than the bandwidth measured in the
    same rounds (the probe is then no cap for them), counting only shares whose interval lies above
    100 %; or ""."""
    over = [(m, e) for m, e in table.attrs["shares"].items() if e.has_interval and e.lo > 100]
    if not over:
        return ""
    names = ", ".join(f"{m} ({e.text(0)} %)" for m, e in over)
    return (
        f"Exception: {names} read more than the bandwidth measured in the same rounds, which is therefore not a "
        "hard cap for them: the probe reads one large buffer, and generation's reads may be served differently."
    )


def pareto_front(df: pd.DataFrame) -> list[str]:
    """Variants not beaten by a smaller variant with lower or equal KL divergence."""
    front, best = [], float("inf")
    for _, r in df.sort_values(["size_mib", "kld_mean"]).iterrows():
        if r["kld_mean"] < best:
            front.append(r["quant"])
            best = r["kld_mean"]
    return front


def tail_table(df: pd.DataFrame) -> pd.DataFrame:
    """Δp (variant minus reference probability of the next token, in percentage points): mean ± se,
    its percentiles and RMS, and the KL divergence's far tail, per variant (deterministic): the
    metrics tagged for the tail, in the order their tags give."""
    q = df[df["quant"] != df["reference_label"]]
    return _add_metrics(pd.DataFrame({"Model": q["quant"]}), q, metrics.TAIL).set_index("Model")


def for_page(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` as the page shows it: an empty cell (a row a column does not apply to) as "—"
    rather than NaN. Numbers keep the decimals the column shows elsewhere (at most 4)."""
    out = table.copy()
    for col in out.columns:
        s = out[col]
        if s.dtype.kind != "f" or not s.isna().any():
            continue
        shown = s.dropna()
        digits = max([1, *(len(f"{v:.4f}".rstrip("0").split(".")[1]) for v in shown)])
        out[col] = [f"{v:.{digits}f}" if v == v else "—" for v in s]
    return out
