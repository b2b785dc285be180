"""Our run against the seed chapter's: the comparison table and the reading, as sentences
computed from the numbers (so the prose beside a table cannot disagree with it).

The seed's figures are quoted, not measured: its Qwen2.5-0.5B-Instruct table (true FP16
base, llama-perplexity over 100 WikiText-2 prompts, llama-bench on an Intel Core i7-8550U)
lives in ``data/reference/seed_qwen2.5-0.5b.csv`` with its citation in the README beside it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..paths import DATA_DIR

SEED_FILE = DATA_DIR / "reference" / "seed_qwen2.5-0.5b.csv"
SEED_BASE = "F16"  # the seed's reference row


def seed_table(path: Path = SEED_FILE) -> pd.DataFrame:
    """The seed chapter's quoted figures, indexed by quant type."""
    return pd.read_csv(path).set_index("quant")


def _split(df: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame]:
    ref = df[df["quant"] == df["reference_label"]].iloc[0]
    return ref, df[df["quant"] != df["reference_label"]].set_index("quant")


def seed_comparison(df: pd.DataFrame, seed: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our relative figures beside the seed chapter's (quoted, not measured here)."""
    seed = seed_table() if seed is None else seed
    base = seed.loc[SEED_BASE]
    ref, q = _split(df)
    rows = []
    for quant, s in seed.drop(index=SEED_BASE).iterrows():
        o = q.loc[quant] if quant in q.index else None
        rows.append(
            {
                "Variant": quant,
                "Size reduction (%) seed": round(100 * (1 - s["size_mib"] / base["size_mib"]), 1),
                "Size reduction (%) here": round(100 * (1 - o["size_mib"] / ref["size_mib"]), 1)
                if o is not None
                else None,
                "PPL ratio - 1 (%) seed": s["ppl_ratio_pct"],
                "PPL ratio - 1 (%) here": round(o["ppl_ratio_pct"], 2) if o is not None else None,
                "KLD seed": s["kld_mean"],
                "KLD here": round(o["kld_mean"], 4) if o is not None else None,
                "Generation speed-up seed": round(s["tg_tps"] / base["tg_tps"], 2),
                "Generation speed-up here": round(o["tg_tps"] / ref["tg_tps"], 2) if o is not None else None,
            }
        )
    return pd.DataFrame(rows).set_index("Variant")


def reading(df: pd.DataFrame, seed: pd.DataFrame | None = None) -> str:
    """The seed's claims checked against this run, one bullet each."""
    seed = seed_table() if seed is None else seed
    ref, q = _split(df)
    seed_speedup = seed.loc["Q2_K", "tg_tps"] / seed.loc[SEED_BASE, "tg_tps"]
    out = []

    def have(*names: str) -> bool:
        return all(n in q.index for n in names)

    if have("Q6_K"):
        r, s = q.loc["Q6_K"], seed.loc["Q6_K"]
        near = r["ppl_ratio_pct"] < 1.0 and r["kld_mean"] < 0.01
        out.append(
            f"* **Q6_K ≈ lossless?** {'Yes' if near else 'No'}: perplexity {r['ppl_ratio_pct']:+.2f} % and mean KL divergence "
            f"{r['kld_mean']:.4f} (the seed: {s['ppl_ratio_pct']:+.2f} % and {s['kld_mean']:.3f}), at "
            f"{100 * (1 - r['size_mib'] / ref['size_mib']):.0f} % less size."
        )
    if have("Q2_K", "Q4_K_M", "Q6_K"):
        k = q.loc[["Q2_K", "Q4_K_M", "Q6_K"], "kld_mean"]
        middle = k["Q6_K"] < k["Q4_K_M"] < k["Q2_K"]
        out.append(
            f"* **Q4 a middle ground?** {'Yes' if middle else 'No'}: its KL divergence {k['Q4_K_M']:.4f} lies "
            f"{'between' if middle else 'outside'} Q6_K's {k['Q6_K']:.4f} and Q2_K's {k['Q2_K']:.4f}."
        )
    if have("Q2_K"):
        worst, s = q["kld_mean"].idxmax(), seed.loc["Q2_K"]
        out.append(
            f"* **Q2 the largest loss?** {'Yes' if worst == 'Q2_K' else 'No, ' + worst + ' is'}: Q2_K's perplexity rises by "
            f"{q.loc['Q2_K', 'ppl_ratio_pct']:.1f} % (the seed: {s['ppl_ratio_pct']:.1f} %), its mean KL divergence is "
            f"{q.loc['Q2_K', 'kld_mean']:.3f} (the seed: {s['kld_mean']:.3f}) and it keeps the reference's top token at "
            f"{q.loc['Q2_K', 'same_top_pct']:.0f} % of positions."
        )
    ladder = q.sort_values("bpw")
    inversions = [
        f"{hi} ({ladder.loc[hi, 'bpw']:.2f} bpw, KLD {ladder.loc[hi, 'kld_mean']:.4f}) diverges more than {lo} "
        f"({ladder.loc[lo, 'bpw']:.2f} bpw, KLD {ladder.loc[lo, 'kld_mean']:.4f})"
        for lo, hi in zip(ladder.index[:-1], ladder.index[1:], strict=True)
        if ladder.loc[hi, "kld_mean"] > ladder.loc[lo, "kld_mean"]
    ]
    out.append(
        "* **More bits, less divergence, at every step?** "
        + (
            "Yes."
            if not inversions
            else "No: "
            + "; ".join(inversions)
            + ". Re-quantizing an already quantized model need not follow the ladder."
        )  # fmt: skip
    )
    rho = df[["size_mib", "tg_tps"]].corr(method="spearman").iloc[0, 1]
    slower = speed_exceptions(df)
    verdict = "Not cleanly" if rho >= -0.5 else "Mostly" if slower else "Yes"
    out.append(
        f"* **Generation speed rising as size falls?** {verdict}: rank correlation of size with "
        f"generation tokens/s is {rho:+.2f} (−1 would be a perfect ordering)"
        + (f"; the exceptions: {'; '.join(slower)}" if slower else "")
        + f". The fastest variant, {df.loc[df['tg_tps'].idxmax(), 'quant']}, generates "
        f"{df['tg_tps'].max() / ref['tg_tps']:.2f}× as fast as the reference (the seed's Q2_K: {seed_speedup:.2f}×)."
    )
    pp_gain = df["pp_tps"].max() / ref["pp_tps"]
    out.append(
        f"* **Prompt processing** is compute-bound: its best variant is {pp_gain:.2f}× the reference's speed, "
        f"against {df['tg_tps'].max() / ref['tg_tps']:.2f}× for generation."
    )
    tail = (q["kld_p99"] / q["kld_mean"]).median()
    out.append(
        f"* **The tail**: across variants the 99th percentile of the KL divergence is a median {tail:.0f}× its mean."
    )
    return "\n".join(out)


def speed_exceptions(df: pd.DataFrame) -> list[str]:
    """Each model that generates more slowly than a larger one, by more than the two standard
    deviations summed (closer pairs are not told apart by the run), named with its figures."""
    sd = df["tg_sd"] if "tg_sd" in df else pd.Series(0.0, index=df.index)
    rows = df.assign(sd=sd.fillna(0.0)).set_index("quant")
    out = []
    for name, r in rows.sort_values("size_mib").iterrows():
        faster = rows[(rows["size_mib"] > r["size_mib"]) & (rows["tg_tps"] - r["tg_tps"] > rows["sd"] + r["sd"])]
        if len(faster):
            them = " and ".join(f"{n} ({f['size_mib']:.1f} MiB, {f['tg_tps']:.1f})" for n, f in faster.iterrows())
            out.append(f"{name} ({r['size_mib']:.1f} MiB, {r['tg_tps']:.1f} tok/s) is slower than the larger {them}")
    return out


ASYMMETRY = 1.5  # |1st percentile| / 99th percentile of Δp beyond which the negative tail counts as heavier


def tail_reading(df: pd.DataFrame) -> str:
    """What the Δp tails say per variant, computed: a symmetric spread is noise; a heavier negative
    tail (and a mean below zero by more than two standard errors) means the variant is worse."""
    q = df[df["quant"] != df["reference_label"]].set_index("quant")
    ratio = q["dp_p1_pct"].abs() / q["dp_p99_pct"].where(q["dp_p99_pct"] > 0)
    worse = ratio[ratio > ASYMMETRY]
    symmetric = ratio[(ratio <= ASYMMETRY) & (ratio >= 1 / ASYMMETRY)]
    below = q[q["dp_mean_pct"] < -2 * q["dp_se_pct"]].index
    out = [
        f"* **Heavier negative tail** (the 1st percentile of Δp more than {ASYMMETRY}× as far from zero as the "
        f"99th): {', '.join(f'{v} ({r:.1f}×)' for v, r in worse.items()) or 'none'}. These variants lose more "
        "probability on the tokens they get wrong than they gain on the others: worse, not just different."
    ]
    if len(symmetric):
        out.append(
            "* **Roughly symmetric** (within that factor): "
            + ", ".join(f"{v} ({r:.1f}×)" for v, r in symmetric.items())
            + ": a spread of this shape is what noise on the probabilities looks like."
        )
    out.append(
        f"* **Mean Δp below zero by more than two standard errors**: {len(below)} of the {len(q)} variants"
        + (f" ({', '.join(below)})" if len(below) else "")
        + f"; RMS Δp ranges from {q['dp_rms_pct'].min():.1f} to {q['dp_rms_pct'].max():.1f} percentage points."
    )
    return "\n".join(out)
