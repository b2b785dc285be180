"""The case study's figures. Each returns a closed matplotlib figure, so a notebook shows it once."""

from __future__ import annotations

import pandas as pd

from .tables import pareto_front


def _order(df: pd.DataFrame) -> list[str]:
    return list(df.sort_values("bpw", ascending=False)["quant"])


def plot_quality(df: pd.DataFrame):
    """KL divergence (mean ± se) and PPL ratio - 1 (± se) by variant."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    q = df[df["quant"] != df["reference_label"]]
    order = [o for o in _order(df) if o in set(q["quant"])]
    q = q.set_index("quant").loc[order].reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    sns.barplot(data=q, x="quant", y="kld_mean", hue="quant", palette="viridis", ax=axes[0], legend=False)
    axes[0].errorbar(range(len(q)), q["kld_mean"], yerr=q["kld_se"], fmt="none", c="k", capsize=3)
    axes[0].set(yscale="log", xlabel="variant", ylabel="KL divergence vs reference (mean, log scale)")
    sns.barplot(data=q, x="quant", y="ppl_ratio_pct", hue="quant", palette="viridis", ax=axes[1], legend=False)
    axes[1].errorbar(range(len(q)), q["ppl_ratio_pct"], yerr=q["ppl_ratio_se"], fmt="none", c="k", capsize=3)
    axes[1].set(xlabel="variant", ylabel="Avg PPL ratio - 1 (%)")
    fig.suptitle(f"Quality against the reference: {df['reference_label'].iloc[0]}")
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: the notebook shows it exactly once
    return fig


def plot_throughput(df: pd.DataFrame):
    """Prompt processing and generation tokens/s (mean ± sd over repetitions)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    d = df.set_index("quant").loc[_order(df)].reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, col, sd, title in (
        (axes[0], "pp_tps", "pp_sd", "Prompt processing"),
        (axes[1], "tg_tps", "tg_sd", "Text generation"),
    ):
        sns.barplot(data=d, x="quant", y=col, hue="quant", palette="mako", ax=ax, legend=False)
        ax.errorbar(range(len(d)), d[col], yerr=d[sd], fmt="none", c="k", capsize=3)
        ax.set(xlabel="", ylabel="tokens/s", title=title)
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: the notebook shows it exactly once
    return fig


def plot_pareto(df: pd.DataFrame):
    """Size against KL divergence; the Pareto front joins the variants worth choosing."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    q = df[df["quant"] != df["reference_label"]]
    front = q[q["quant"].isin(pareto_front(q))].sort_values("size_mib")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.scatterplot(data=q, x="size_mib", y="kld_mean", hue="quant", s=80, ax=ax, legend=False)
    ax.plot(front["size_mib"], front["kld_mean"], "--", c="grey", label="Pareto front")
    for _, r in q.iterrows():
        ax.annotate(r["quant"], (r["size_mib"], r["kld_mean"]), textcoords="offset points", xytext=(5, 4))
    ref = df[df["quant"] == df["reference_label"]].iloc[0]
    ax.axvline(ref["size_mib"], c="k", lw=0.8)
    ax.text(ref["size_mib"], ax.get_ylim()[1], f" {ref['quant']}", va="top", ha="right", rotation=90, fontsize=8)
    ax.set(
        yscale="log",
        xlabel="file size (MiB)",
        ylabel="KL divergence (mean, log scale)",
        title="Size against quality loss",
    )
    ax.legend()
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: the notebook shows it exactly once
    return fig


def plot_roofline(df: pd.DataFrame, bandwidth_gbs: float):
    """Generation speed against the memory-bandwidth limit, per variant."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    mb = df["bytes_per_token"] / 1e6
    xs = np.linspace(mb.min() * 0.8, mb.max() * 1.1, 100)
    ax.plot(xs, bandwidth_gbs * 1e3 / xs, c="k", label=f"limit: {bandwidth_gbs:.1f} GB/s measured read bandwidth")
    sns.scatterplot(x=mb, y=df["tg_tps"], hue=df["quant"], s=80, ax=ax)
    ax.errorbar(mb, df["tg_tps"], yerr=df["tg_sd"], fmt="none", c="grey")
    ax.set(
        xlabel="MB of weights read per generated token",
        ylabel="generation tokens/s",
        title="Text generation against the memory roofline",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: the notebook shows it exactly once
    return fig


def plot_imatrix_gain(table: pd.DataFrame):
    """KL divergence of each type without and with the importance matrix (the gain table's data)."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(table))
    ax.bar(x - 0.2, table["KLD without"].astype(float), 0.4, label="without imatrix")
    ax.bar(x + 0.2, table["KLD with"].astype(float), 0.4, label="with imatrix")
    ax.set_xticks(x, table.index)
    ax.set(yscale="log", ylabel="KL divergence vs reference (mean, log scale)", title="What the importance matrix buys")
    ax.legend()
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: the notebook shows it exactly once
    return fig


def plot_sweeps(depth: pd.DataFrame, threads: pd.DataFrame):
    """Generation tokens/s against depth, and against threads (the sweep tables' data)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, d, x, title in (
        (axes[0], depth, "depth", "As the context fills"),
        (axes[1], threads, "threads", "By thread count"),
    ):
        tg = d[d["test"] == "tg"]
        for model, g in tg.groupby("model", sort=False):
            ax.errorbar(g[x], g["tps"], yerr=g["sd"], marker="o", capsize=3, label=model)
        ax.set(
            xlabel="tokens already in the context" if x == "depth" else "threads",
            ylabel="generation tokens/s",
            title=title,
        )
        if x == "threads":
            ax.set_xticks(sorted(tg[x].unique()))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: the notebook shows it exactly once
    return fig
