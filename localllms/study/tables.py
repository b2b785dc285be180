"""The case study's tables, at the rounding each metric declares (``metrics.METRICS``)."""

from __future__ import annotations

import pandas as pd

from .. import metrics


def _pm(mean: pd.Series, sd: pd.Series, digits: int) -> list[str]:
    return [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in zip(mean, sd, strict=True)]


def quality_table(df: pd.DataFrame) -> pd.DataFrame:
    """Sizes and the quality metrics marked for the table: deterministic, so nbval compares them."""
    shown = [m for m in metrics.METRICS if m.table]
    t = pd.DataFrame({"Model": df["quant"], "Size (MiB)": df["size_mib"].round(1), "BPW": df["bpw"].round(2)})
    for m in shown:
        t[m.label] = df[m.name].round(m.digits)
    return t.set_index("Model")


def case_study_table(df: pd.DataFrame) -> pd.DataFrame:
    """The case study's table, extended: throughput with its spread and every quality column."""
    d = metrics.rounding()
    t = pd.DataFrame(
        {
            "Model": df["quant"],
            "Size (MiB)": df["size_mib"].round(1),
            "BPW": df["bpw"].round(2),
            "Prompt throughput (tok/s)": _pm(df["pp_tps"], df["pp_sd"], 1),
            "Generation (tok/s)": _pm(df["tg_tps"], df["tg_sd"], 1),
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


def roofline_table(df: pd.DataFrame, bandwidth_gbs: float) -> pd.DataFrame:
    """Generation speed x bytes read per token, against the measured read bandwidth."""
    achieved = df["tg_tps"] * df["bytes_per_token"] / 1e9
    return pd.DataFrame(
        {
            "Model": df["quant"],
            "MB read per token": (df["bytes_per_token"] / 1e6).round(1),
            "Generation (tok/s)": df["tg_tps"].round(1),
            "Achieved read (GB/s)": achieved.round(2),
            "Share of bandwidth (%)": (100 * achieved / bandwidth_gbs).round(1),
            "Roofline limit (tok/s)": (bandwidth_gbs * 1e9 / df["bytes_per_token"]).round(1),
        }
    ).set_index("Model")


def roofline_exceptions(table: pd.DataFrame) -> str:
    """A sentence naming the variants whose generation read more than the measured bandwidth (the
    roofline table is then no cap for them: the probe measured the machine lower than it ran), or ""."""
    over = table[table["Share of bandwidth (%)"] > 100]
    if over.empty:
        return ""
    names = ", ".join(f"{m} ({r['Share of bandwidth (%)']:.0f} %)" for m, r in over.iterrows())
    return (
        f"Exception: {names} read more than the measured bandwidth, which is therefore not a hard cap in this run; "
        "this machine's memory bandwidth moves between runs (make bench records how much), so read the shares "
        "as approximate."
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
