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
    """Prompt processing and generation tokens/s: the median over rounds, bars to its interval."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    d = df.set_index("quant").loc[_order(df)].reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, test, title in ((axes[0], "pp", "Prompt processing"), (axes[1], "tg", "Text generation")):
        col = f"{test}_tps"
        sns.barplot(data=d, x="quant", y=col, hue="quant", palette="mako", ax=ax, legend=False)
        err = [d[col] - d[f"{test}_lo"], d[f"{test}_hi"] - d[col]]
        ax.errorbar(range(len(d)), d[col], yerr=err, fmt="none", c="k", capsize=3)
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


def plot_roofline(df: pd.DataFrame, bandwidth: object):
    """Generation speed against the memory-bandwidth limit, per variant; ``bandwidth`` is the
    bandwidth's Estimate over the same rounds (its median drawn, its interval shaded)."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    mb = df["bytes_per_token"] / 1e6
    xs = np.linspace(mb.min() * 0.8, mb.max() * 1.1, 100)
    bw = bandwidth
    ax.plot(xs, bw.median * 1e3 / xs, c="k", label=f"limit: {bw.text(1)} GB/s read bandwidth, same rounds")
    if bw.has_interval:
        ax.fill_between(xs, bw.lo * 1e3 / xs, bw.hi * 1e3 / xs, color="k", alpha=0.1)
    sns.scatterplot(x=mb, y=df["tg_tps"], hue=df["quant"], s=80, ax=ax)
    ax.errorbar(mb, df["tg_tps"], yerr=[df["tg_tps"] - df["tg_lo"], df["tg_hi"] - df["tg_tps"]], fmt="none", c="grey")
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


def plot_sweeps(sweep: object):
    """Generation tokens/s against depth, and against threads (a ``speed.SpeedStudy``): medians over
    the rounds, bars to their intervals."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from .speed_plan import label

    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, axis, title in ((axes[0], "depth", "As the context fills"), (axes[1], "threads", "By thread count")):
        xs = sweep.depths if axis == "depth" else sweep.counts
        for m in sweep.models:
            labels = [
                label(m.display, depth=x) if axis == "depth" else label(m.display, None if x == sweep.threads else x)
                for x in xs
            ]
            est = [sweep.rounds.estimate(lab, "tg") for lab in labels]
            ys = [e.median for e in est]
            err = [[e.median - e.lo for e in est], [e.hi - e.median for e in est]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=m.display)
        ax.set(
            xlabel="tokens already in the context" if axis == "depth" else "threads",
            ylabel="generation tokens/s",
            title=title,
        )
        if axis == "threads":
            ax.set_xticks(list(xs))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: the notebook shows it exactly once
    return fig
