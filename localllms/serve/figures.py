"""The serving chapter's figures: every inter-token gap and each request's times, TTFT against prompt
length with and without the cache, the closed loop's throughput and latency, and the rate search.

Each takes the tables the chapter shows and returns the figure (a notebook displays it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from .stats import ServiceTarget


def plot_latency(measured: pd.DataFrame, per_request: pd.DataFrame) -> Figure:
    """Every gap between streamed tokens as an ECDF with its p50/p90/p99 (left); each request's TTFT and
    end-to-end time in the order sent (right)."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    gaps = pd.Series([g for row in measured["itl_ms"] for g in row], name="ITL (ms)")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    sns.ecdfplot(x=gaps, ax=ax1)
    ax1.set_xscale("log")
    for q, style in ((50, ":"), (90, "--"), (99, "-")):
        ax1.axvline(gaps.quantile(q / 100), color="gray", linestyle=style, label=f"p{q}")
    ax1.set(title="Inter-token latency, every gap", xlabel="ms (log scale)", ylabel="share of gaps")
    ax1.legend()
    per_request[["ttft_ms", "e2e_ms"]].plot(ax=ax2, marker="o")
    ax2.set(title="Per request", xlabel="request", ylabel="ms")
    fig.tight_layout()
    return fig


def plot_prompt_cache(table: pd.DataFrame, generation_ms: float, max_tokens: int) -> Figure:
    """TTFT by prefix length without and with the cache (log-log), against the time to generate the rest
    of an answer of ``max_tokens`` tokens (``generation_ms``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(table.index, table["TTFT, no cache (ms)"], marker="o", label="no cache")
    ax.plot(table.index, table["TTFT, prefix cached (ms)"], marker="o", label="prefix cached")
    ax.axhline(generation_ms, color="gray", linestyle="--", label=f"generating the rest of a {max_tokens}-token answer")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(table.index, [str(n) for n in table.index])
    ax.set(title="Time to first token by prompt length", xlabel="prefix tokens", ylabel="ms (log scale)")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_closed_loop(load: pd.DataFrame, concurrency: Sequence[int]) -> Figure:
    """Aggregate generation throughput (left) and end-to-end latency median and p95 (right) per level."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    sns.barplot(data=load, x="clients", y="aggregate_tokens_per_s", color="tab:blue", ax=ax1)
    ax1.set(title="Aggregate generation throughput", xlabel="concurrent clients (= slots)", ylabel="tokens/s")
    long = load.melt(
        id_vars="clients", value_vars=["latency_median_ms", "latency_p95_ms"], var_name="statistic", value_name="ms"
    )
    long["statistic"] = long["statistic"].map({"latency_median_ms": "median", "latency_p95_ms": "p95"})
    sns.lineplot(data=long, x="clients", y="ms", hue="statistic", marker="o", ax=ax2)
    ax2.set_xscale("log", base=2)
    ax2.set_xticks(list(concurrency), [str(c) for c in concurrency])
    ax2.set(title="Request latency (end to end)", xlabel="concurrent clients (= slots)", ylabel="ms")
    fig.tight_layout()
    return fig


def plot_rate_search(table: pd.DataFrame, target: ServiceTarget) -> Figure:
    """Offered, achieved and good requests/s (left) and TTFT percentiles against the target (right) per probed rate."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    rates = table.index
    ax1.plot(rates, rates, color="lightgray", linestyle=":", label="offered")
    ax1.plot(rates, table["achieved req/s"], marker="o", label="achieved")
    ax1.plot(rates, table["goodput (req/s)"], marker="s", label="goodput (met the target)")
    ax1.set(title="Throughput", xlabel="offered requests/s", ylabel="requests/s")
    ax1.legend()
    for q in ("p50", "p90", "p99"):
        ax2.plot(rates, table[f"TTFT {q} (ms)"], marker="o", label=f"TTFT {q}")
    ax2.axhline(target.ttft_ms, color="gray", linestyle="--", label="TTFT target")
    ax2.set_yscale("log")
    ax2.set(title="Time to first token", xlabel="offered requests/s", ylabel="ms (log scale)")
    ax2.legend()
    fig.tight_layout()
    return fig
