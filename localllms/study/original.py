"""Our run against the seed chapter's: the comparison table and the reading, as sentences
computed from the numbers (so the prose beside a table cannot disagree with it).

The seed's figures are quoted, not measured: its Qwen2.5-0.5B-Instruct table (true FP16
base, llama-perplexity over 100 WikiText-2 prompts, llama-bench on an Intel Core i7-8550U)
lives in ``data/reference/seed_qwen2.5-0.5b.csv`` with its citation in the README beside it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..intervals import comparison, estimate
from ..paths import DATA_DIR
from ..rounds import Rounds

SEED_FILE = DATA_DIR / "reference" / "seed_qwen2.5-0.5b.csv"
SEED_BASE = "F16"  # the seed's reference row
# The speed-ups the seed's text states for Q4 and Q6 (quoted); its own throughputs (38.38 and 35.43
# against 19.73 tok/s, in the CSV above) give 1.95 and 1.80: the comparison uses the throughputs.
SEED_TEXT_SPEEDUPS = {"Q4_K_M": 1.85, "Q6_K": 1.79}


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
                "Generation speed-up here": (
                    f"×{o['tg_vs_ref']:.2f} ({o['tg_vs_ref_lo']:.2f}–{o['tg_vs_ref_hi']:.2f})"
                    if o is not None
                    else None
                ),
            }
        )
    return pd.DataFrame(rows).set_index("Variant")


def _times(row: pd.Series, col: str) -> str:
    """A row's paired ratio as "×r (lo–hi)", or "×r (n=R)" without an interval."""
    if row[f"{col}_lo"] == row[f"{col}_lo"]:
        return f"×{row[col]:.2f} ({row[f'{col}_lo']:.2f}–{row[f'{col}_hi']:.2f})"
    return f"×{row[col]:.2f} (n={row['rounds']:.0f})" if "rounds" in row else f"×{row[col]:.2f}"


def reading(df: pd.DataFrame, speed: Rounds | None = None, seed: pd.DataFrame | None = None) -> str:
    """The seed's claims checked against this run, one bullet each (the speed ones from the study's
    rounds, when given)."""
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
    if speed is not None:
        out += speed_reading(df, speed, seed_speedup)
    stated = ", ".join(
        f"{k} {v:.2f}× (its throughputs: {seed.loc[k, 'tg_tps'] / seed.loc[SEED_BASE, 'tg_tps']:.2f}×)"
        for k, v in SEED_TEXT_SPEEDUPS.items()
        if k in seed.index
    )
    out.append(
        f"* **The seed's own figures disagree**: its text gives generation speed-ups of {stated}; the comparison "
        "table above uses its throughputs."
    )
    tail = (q["kld_p99"] / q["kld_mean"]).median()
    out.append(
        f"* **The tail**: across variants the 99th percentile of the KL divergence is a median {tail:.0f}× its mean."
    )
    return "\n".join(out)


def speed_reading(df: pd.DataFrame, speed: Rounds, seed_speedup: float) -> list[str]:
    """The seed's speed claims, checked with the rounds: every comparison is a ratio within a round,
    stated only where its interval excludes 1."""
    rho = estimate(
        [float(pd.Series(sizes).rank().corr(pd.Series(tg).rank())) for sizes, tg in _per_round(df, speed, "tg")]
    )
    slower, unseparated = speed_exceptions(df, speed)
    if rho.has_interval and rho.hi < 0:
        verdict = "Mostly" if slower else "Yes"
    else:
        verdict = "Not separated on this machine"
    text = (
        f"* **Generation speed rising as size falls?** {verdict}: the rank correlation of size with generation "
        f"tokens/s is {rho.median:+.2f} ({rho.span(signed=True)} over {rho.n} rounds; −1 would be a perfect "
        "ordering)"
    )
    if slower:
        text += f"; smaller files slower than larger ones, separated within rounds: {'; '.join(slower)}"
    if unseparated:
        text += f"; {unseparated} pairs of a smaller and a larger file are not separated on this machine"
    q = df[df["quant"] != df["reference_label"]]
    ref = df.loc[df["quant"] == df["reference_label"], "quant"].iloc[0]
    best = q.loc[q["tg_vs_ref"].idxmax(), "quant"]
    tg = speed.ratio(best, ref, "tg")
    words = {"faster": "faster than", "slower": "slower than"}.get(comparison(tg), "not separated from")
    text += (
        f". The fastest variant, {best}, generates {tg.times()} the reference's speed in the same round, {words} "
        f"it (the seed's Q2_K, quoted: {seed_speedup:.2f}×)."
    )
    pp_best = q.loc[q["pp_vs_ref"].idxmax(), "quant"]
    pp = speed.ratio(pp_best, ref, "pp")
    words = {"faster": "faster than", "slower": "slower than"}.get(comparison(pp), "not separated from")
    return [
        text,
        f"* **Prompt processing**: the best variant, {pp_best}, processes prompts at {pp.times()} the reference's "
        f"speed in the same round, {words} it.",
    ]


def _per_round(df: pd.DataFrame, speed: Rounds, test: str) -> list[tuple[list[float], list[float]]]:
    values = {r["quant"]: speed.values(r["quant"], test) for r in df.to_dict("records")}
    sizes = list(df["size_mib"])
    return [(sizes, [values[m][i] for m in df["quant"]]) for i in range(speed.n_rounds)]


def speed_exceptions(df: pd.DataFrame, speed: Rounds) -> tuple[list[str], int]:
    """Each model that generates more slowly than a larger one, where the ratio of the two within
    each round has an interval below 1 (named with its figures), and how many such smaller/larger
    pairs the rounds do not separate."""
    rows = df.set_index("quant")
    out, unseparated = [], 0
    for name, r in rows.sort_values("size_mib").iterrows():
        slower = []
        for other, o in rows[rows["size_mib"] > r["size_mib"]].iterrows():
            ratio = speed.ratio(name, other, "tg")
            if ratio.has_interval and ratio.hi < 1:
                slower.append(f"{other} ({o['size_mib']:.1f} MiB, {ratio.times()})")
            elif not ratio.excludes(1.0):
                unseparated += 1
        if slower:
            out.append(f"{name} ({r['size_mib']:.1f} MiB) is slower than the larger {' and '.join(slower)}")
    return out, unseparated


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
