"""The server-options runs read: their table, the configuration with the highest goodput, and the
sentences computed from them.

Kept apart from ``options``, which measures: the serving measurements are cached by the digest of
the measuring modules, so rewording a reading here never measures again. Each configuration's
attainment is stated with its request count and its exact interval (``attainment``), and two
configurations are called different only when those intervals do not overlap; otherwise they are
"not separated", whatever their goodput says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .attainment import LEVEL, Attainment, from_summary, percent
from .capacity import rate_text

if TYPE_CHECKING:
    import pandas as pd

INTERVAL = f"attainment ({100 * LEVEL:g} % interval)"


def options_table(results: list[dict], digits: int = 2) -> pd.DataFrame:
    """One row per server configuration: throughput, latency percentiles, attainment (count and interval), goodput."""
    import pandas as pd

    rows = []
    for r in results:
        s = r["summary"]
        a = from_summary(s)
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
                "requests": a.n,
                "met target": a.met,
                INTERVAL: f"{percent(a.share)} % ({a.interval_text()})",
                "goodput (req/s)": s["goodput_rps"],
            }
        )
    return pd.DataFrame(rows).set_index("server").round(digits)


def best_option(table: pd.DataFrame) -> str:
    """The configuration with the highest goodput; ties go to more requests within the target, then to
    the lower TTFT p90, then to fewer slots."""
    ranked = table.sort_values(
        ["goodput (req/s)", "met target", "TTFT p90 (ms)", "slots (-np)"],
        ascending=[False, False, True, True],
    )
    return str(ranked.index[0])


def _attainment(row: pd.Series) -> Attainment:
    return Attainment(int(row["met target"]), int(row["requests"]))


def options_reading(table: pd.DataFrame, rate: float) -> str:
    """Which server configuration served ``rate`` best, and which differences the runs can show, as sentences.

    Two configurations whose attainment intervals overlap are "not separated": the runs do not show
    that one meets the target more often than the other.
    """
    best = best_option(table)
    b = table.loc[best]
    ab = _attainment(b)
    at = f"At {rate_text(rate)}"
    if b["goodput (req/s)"] == 0:
        fastest = table["TTFT p90 (ms)"].idxmin()
        return (
            f"{at} no configuration met the target for any of its {ab.n} requests; the lowest TTFT p90 was "
            f"{table.loc[fastest, 'TTFT p90 (ms)']:.0f} ms, with {fastest}."
        )

    def apart(x: pd.Series, y: pd.Series) -> bool:
        return _attainment(x).separated(_attainment(y))

    out = [
        f"{at}, **{best}** had the highest goodput: {b['goodput (req/s)']:.2f} requests/s, {ab.text()} within the "
        f"target, TTFT p90 {b['TTFT p90 (ms)']:.0f} ms, TPOT p50 {b['TPOT p50 (ms)']:.1f} ms."
    ]
    others = [i for i in table.index if i != best]
    tied = [i for i in others if not apart(b, table.loc[i])]
    below = [i for i in others if apart(b, table.loc[i])]
    if tied:
        out.append(
            f"It is not separated from {_names(tied)}: their {100 * LEVEL:g} % intervals overlap its own "
            f"({_counts(table, tied)}), so these runs do not show that it meets the target more often."
        )
    if below:
        out.append(f"It met the target more often than {_names(below)}, whose intervals lie below its own "
                   f"({_counts(table, below)}).")  # fmt: skip
    one = table[table["slots (-np)"] == 1]
    if best not in one.index and len(one) and apart(b, one.iloc[0]):
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
    elif best in one.index and others and not tied:
        out.append("More slots did not help: on these cores they only divided the same compute between requests.")
    for label in [i for i in table.index if not table.loc[i, "continuous batching"]]:
        n = table.loc[label]
        same = table[(table["slots (-np)"] == n["slots (-np)"]) & table["continuous batching"]]
        if not len(same):
            continue
        c = same.iloc[0]
        figures = (
            f"{n['goodput (req/s)']:.2f} against {c['goodput (req/s)']:.2f} requests/s of goodput; TTFT p90 "
            f"{n['TTFT p90 (ms)']:.0f} against {c['TTFT p90 (ms)']:.0f} ms"
        )
        an, ac = _attainment(n), _attainment(c)
        counts = (
            f"{an.met} of {an.n} requests within the target against {ac.met} of {ac.n} with it ({100 * LEVEL:g} % "
            f"intervals {an.interval_text()} and {ac.interval_text()}"
        )
        if not an.separated(ac):
            out.append(
                f"Turning continuous batching off (*{label}*) made no difference these runs can show: {counts}, "
                f"which overlap; {figures})."
            )
        else:
            verdict = "less often" if an.met < ac.met else "more often"
            out.append(
                f"Turning continuous batching off (*{label}*) met the target {verdict} than the same slots with it: "
                f"{counts}; {figures})."
            )
    return " ".join(out)


def _counts(table: pd.DataFrame, labels: list[str]) -> str:
    """ "*1 slot* 8 of 16, 31–69 %; ..."."""
    return "; ".join(f"*{i}* {_attainment(table.loc[i]).met} of {_attainment(table.loc[i]).n}, "
                     f"{_attainment(table.loc[i]).interval_text()}" for i in labels)  # fmt: skip


def _names(labels: list[str]) -> str:
    """Configuration labels in italics (a label may hold a comma), joined with "and"."""
    names = [f"*{label}*" for label in labels]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
