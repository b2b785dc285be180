"""The server-options runs read: their table, the configuration with the highest goodput, and the
sentences computed from them.

Kept apart from ``options``, which measures: the serving measurements are cached by the digest of
the measuring modules, so rewording a reading here never measures again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def options_table(results: list[dict], digits: int = 2) -> pd.DataFrame:
    """One row per server configuration: attainment, goodput, throughput and latency percentiles."""
    import pandas as pd

    rows = []
    for r in results:
        s = r["summary"]
        rows.append(
            {
                "server": r["label"],
                "slots (-np)": r["parallel"],
                "continuous batching": "--no-cont-batching" not in r["extra_args"],
                "achieved req/s": s["achieved_rps"],
                "output tok/s": s["output_tokens_per_s"],
                "TTFT p50 (ms)": s["ttft_p50_ms"],
                "TTFT p90 (ms)": s["ttft_p90_ms"],
                "TPOT p50 (ms)": s["tpot_p50_ms"],
                "TPOT p90 (ms)": s["tpot_p90_ms"],
                "meet target (share)": s["attainment"],
                "goodput (req/s)": s["goodput_rps"],
            }
        )
    return pd.DataFrame(rows).set_index("server").round(digits)


def best_option(table: pd.DataFrame) -> str:
    """The configuration with the highest goodput; ties go to the lower TTFT p90, then to fewer slots."""
    ranked = table.sort_values(
        ["goodput (req/s)", "meet target (share)", "TTFT p90 (ms)", "slots (-np)"],
        ascending=[False, False, True, True],
    )
    return str(ranked.index[0])


def options_reading(table: pd.DataFrame, rate: float, requests: int | None = None) -> str:
    """Which server configuration served ``rate`` best, and why, as sentences computed from ``table``.

    With ``requests`` (per configuration), two configurations whose counts of requests within the
    target are at most one apart are not ranked: one request is what a rerun can change.
    """
    best = best_option(table)
    b = table.loc[best]
    if b["goodput (req/s)"] == 0:
        fastest = table["TTFT p90 (ms)"].idxmin()
        return (
            f"At {rate:g} requests/s no configuration met the target for any request; the lowest TTFT p90 was "
            f"{table.loc[fastest, 'TTFT p90 (ms)']:.0f} ms, with {fastest}."
        )

    def met(x: pd.Series) -> int:
        return round(float(x["meet target (share)"]) * requests) if requests else -1

    def close(x: pd.Series, y: pd.Series) -> bool:
        return bool(requests) and abs(met(x) - met(y)) <= 1

    out = [
        f"At {rate:g} requests/s, **{best}** had the highest goodput: {b['goodput (req/s)']:.2f} requests/s, "
        f"{b['meet target (share)']:.0%} of requests within the target, TTFT p90 {b['TTFT p90 (ms)']:.0f} ms, "
        f"TPOT p50 {b['TPOT p50 (ms)']:.1f} ms."
    ]
    tied = [i for i in table.index if i != best and close(b, table.loc[i])]
    if tied:
        counts = ", ".join(f"{i} {met(table.loc[i])}" for i in tied)
        out.append(
            f"With {requests} requests per configuration that does not separate it from {', '.join(tied)}: "
            f"{met(b)} of {requests} requests within the target against {counts}, at most one request apart, "
            "which a rerun can change."
        )
    one = table[table["slots (-np)"] == 1]
    if best not in one.index and len(one) and not close(b, one.iloc[0]):
        o = one.iloc[0]
        why = []
        if o["TTFT p90 (ms)"] > b["TTFT p90 (ms)"]:
            why.append(
                f"with one slot a request waits for the one before it to finish (TTFT p90 {o['TTFT p90 (ms)']:.0f} ms)"
            )
        if b["TPOT p50 (ms)"] > o["TPOT p50 (ms)"]:
            why.append(
                f"while with more slots each stream is slower (TPOT p50 {b['TPOT p50 (ms)']:.1f} against "
                f"{o['TPOT p50 (ms)']:.1f} ms), as the slots share the cores"
            )
        if why:
            out.append("More slots won because " + ", ".join(why) + ".")
    elif best in one.index and not any(close(b, table.loc[i]) for i in table.index if i != best):
        out.append("More slots did not help: on these cores they only divided the same compute between requests.")
    for label in [i for i in table.index if not table.loc[i, "continuous batching"]]:
        n = table.loc[label]
        same = table[(table["slots (-np)"] == n["slots (-np)"]) & table["continuous batching"]]
        if not len(same):
            continue
        c = same.iloc[0]
        figures = (
            f"({n['goodput (req/s)']:.2f} against {c['goodput (req/s)']:.2f} requests/s of goodput; TTFT p90 "
            f"{n['TTFT p90 (ms)']:.0f} against {c['TTFT p90 (ms)']:.0f} ms)"
        )
        if close(n, c):
            out.append(
                f"Turning continuous batching off ({label}) made no difference this run can show: {met(n)} against "
                f"{met(c)} of {requests} requests within the target with the same slots with it {figures}."
            )
        else:
            gn, gc = n["goodput (req/s)"], c["goodput (req/s)"]
            verdict = "lower goodput than" if gn < gc else "higher goodput than" if gn > gc else "the same goodput as"
            out.append(f"Turning continuous batching off ({label}) gave {verdict} the same slots with it {figures}.")
    return " ".join(out)
