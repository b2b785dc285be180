"""The chapter's figures: memory by part against the measured peak, break-even against cloud
prices, and quality against speed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .cost import CLOUD_PRICES, CloudPrice, CostAssumptions, local_cost
from .quality import BitsPerByte

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_memory(estimates: pd.DataFrame, measured: pd.DataFrame | None = None) -> Figure:
    """Stacked estimate per candidate and context, with the measured peak as a marker."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    parts = ["weights", "KV cache", "compute", "output+tokenizer+runtime"]
    df = estimates.copy()
    df["label"] = df["model"] + "\n" + df["context"].map(lambda c: f"{c:,}")
    fig, ax = plt.subplots(figsize=(10, 4.2))
    bottom = np.zeros(len(df))
    for part, color in zip(parts, sns.color_palette("crest", len(parts)), strict=True):
        ax.bar(df["label"], df[part], bottom=bottom, label=part, color=color)
        bottom += df[part].to_numpy()
    if measured is not None and len(measured):
        lab = measured["model"] + "\n" + measured["context"].map(lambda c: f"{c:,}")
        ax.scatter(lab, measured["measured peak (MiB)"], color="black", marker="D", zorder=3, label="measured peak")
    ax.set_ylabel("MiB")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title("Estimated memory by part (bars) and measured peak resident memory")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_break_even(
    speeds: Sequence[dict], a: CostAssumptions, prices: Sequence[CloudPrice] = CLOUD_PRICES, max_m: float = 1e4
) -> Figure:
    """Monthly cost against monthly tokens: owning the machine (per candidate) versus cloud prices."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    tokens_m = np.logspace(-1, math.log10(max_m), 200)
    per_month = a.hardware_price / (a.lifetime_years * 12)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for p, color in zip(prices, sns.color_palette("flare", len(prices)), strict=True):
        ax.plot(tokens_m, tokens_m * p.blended_per_m, color=color, lw=1.2, ls="--", label=f"cloud: {p.model}")
    for s, color in zip(speeds, sns.color_palette("crest", len(speeds)), strict=True):
        c = local_cost(s["pp_tps"], s["tg_tps"], a)
        cap = c["capacity per month (M tokens)"]
        t = tokens_m[tokens_m <= cap]
        ax.plot(t, per_month + t * c["energy per M (blended)"], color=color, lw=2.5, label=f"local: {s['model']}")
        ax.axvline(cap, color=color, lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens per month (millions, 3 input : 1 output)")
    ax.set_ylabel("cost per month (USD)")
    ax.set_title("Break-even: owning this machine versus paying per token (dotted: local capacity)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_quality_speed(quality: Sequence[BitsPerByte], speeds: Sequence[dict]) -> Figure:
    """Bits per byte against generation speed: lower and further right is better."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    s = {r["model"]: r for r in speeds}
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in quality:
        e, y = s[r.model]["tg"], r.bpb
        ax.errorbar(e.median, y, xerr=[[e.median - e.lo], [e.hi - e.median]], fmt="o", ms=8, capsize=3)
        ax.annotate(r.model, (e.median, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.set_xlabel("generation (tokens/s, median and interval over rounds)")
    ax.set_ylabel("bits per byte (lower is better)")
    ax.set_title("Quality against speed on this machine")
    fig.tight_layout()
    return fig
