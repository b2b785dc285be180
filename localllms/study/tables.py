"""The case study's tables, at the rounding each metric declares (``metrics.METRICS``)."""

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


def quality_table(df: pd.DataFrame) -> pd.DataFrame:
    """Sizes and the quality metrics marked for the table: deterministic, so nbval compares them."""
    shown = [m for m in metrics.METRICS if m.table]
    t = pd.DataFrame({"Model": df["quant"], "Size (MiB)": df["size_mib"].round(1), "BPW": df["bpw"].round(2)})
    for m in shown:
        t[m.label] = df[m.name].round(m.digits)
    return t.set_index("Model")


def case_study_table(df: pd.DataFrame) -> pd.DataFrame:
    """The case study's table, extended: speeds as the median over rounds with its interval, each
    variant's generation against the reference in the same round, and every quality column."""
    d = metrics.rounding()
    t = pd.DataFrame(
        {
            "Model": df["quant"],
            "Size (MiB)": df["size_mib"].round(1),
            "BPW": df["bpw"].round(2),
            "Prompt throughput (tok/s)": interval(df, "pp_tps"),
            "Generation (tok/s)": interval(df, "tg_tps"),
            "Generation vs reference": interval(df, "tg_vs_ref", 2, times=True),
            "PPL": df["ppl_q"].round(d["ppl_q"]),
            "PPL Ratio - 1 (%)": _pm(df["ppl_ratio_pct"], df["ppl_ratio_se"], d["ppl_ratio_pct"]),
            "Correlation (%)": df["prompt_ln_ppl_corr_pct"].round(d["prompt_ln_ppl_corr_pct"]),
            "KL Divergence (mean ± se)": _pm(df["kld_mean"], df["kld_se"], d["kld_mean"]),
            "KLD median": df["kld_median"].round(d["kld_median"]),
            "KLD p99": df["kld_p99"].round(d["kld_p99"]),
            "Same top (%)": df["same_top_pct"].round(d["same_top_pct"]),
        }
    )
    return t.set_index("Model")


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


TAIL_METRICS = ("dp_min_pct", "dp_p1_pct", "dp_p5_pct", "dp_p25_pct", "dp_median_pct", "dp_p75_pct", "dp_p95_pct",
                "dp_p99_pct", "dp_max_pct", "dp_rms_pct", "kld_p999", "kld_max")  # fmt: skip


def tail_table(df: pd.DataFrame) -> pd.DataFrame:
    """Δp (variant minus reference probability of the next token, in percentage points): mean ± se,
    its percentiles and RMS, and the KL divergence's far tail, per variant (deterministic)."""
    q = df[df["quant"] != df["reference_label"]]
    d = metrics.rounding()
    t = pd.DataFrame({"Model": q["quant"], "Δp mean ± se (%)": _pm(q["dp_mean_pct"], q["dp_se_pct"], d["dp_mean_pct"])})
    for name in TAIL_METRICS:
        t[metrics.BY_NAME[name].label] = q[name].round(d[name])
    return t.set_index("Model")
