"""The rate search read: its table, and the capacity it found in sentences that carry their sample.

Kept apart from ``loadgen``, which measures: the serving measurements are cached by the digest of
the measuring modules, so rewording a reading here never measures again. Every attainment is
stated with its request count and its exact interval (``attainment``): "0.75 requests/s met the
target for 19 of 20 requests (95 %, 90 % interval 78–99.7 %)".

* ``Probe``, ``RateSearchResult``: what the rate search (``loadgen.rate_search``) found, as data.
* ``rate_text``: a rate with its unit ("1 request/s", "0.75 requests/s").
* ``rate_table``: one row per probed rate.
* ``rate_reading``: the highest rate that met the target, the lowest that did not, and what the
  passing rule and the interval say about them.
* ``capacity_text``: the capacity in one cell, for the runtimes' comparison table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .attainment import LEVEL, Attainment, from_summary, percent
from .clients import SEED
from .stats import RateSearch, ServiceTarget, allowed_misses

if TYPE_CHECKING:
    import pandas as pd


# The search's results live here, beside their reading; ``loadgen`` measures and fills them.
@dataclass
class Probe:
    """One open-loop run at one rate: its requests and its summary."""

    rate: float
    records: list[dict]
    duration_s: float
    summary: dict = field(default_factory=dict)


@dataclass
class RateSearchResult:
    """The rate search: every probe (sorted by rate in ``table``), the search's verdict, the server command."""

    probes: list[Probe]
    search: RateSearch
    target: ServiceTarget
    command: str
    parallel: int
    warmup: list[dict]
    seed: int = SEED

    @property
    def highest_rate(self) -> float | None:
        return self.search.highest_passing

    def table(self, digits: int = 2) -> pd.DataFrame:
        """One row per probed rate: throughput, latency percentiles, attainment with its interval, goodput."""
        return rate_table(self, digits)

    def records(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([{**r, "warmup": False} for p in self.probes for r in p.records] + self.warmup)


def rate_text(rate: float) -> str:
    """ "1 request/s", "0.75 requests/s"."""
    return f"{rate:g} request/s" if rate == 1 else f"{rate:g} requests/s"


def rate_table(searched: RateSearchResult, digits: int = 2) -> pd.DataFrame:
    """One row per probed rate (sorted): throughput, latency percentiles, attainment with its interval, goodput,
    and whether the probe passed (all its requests sent, the target's share reached)."""
    import pandas as pd

    cols = {
        "sent": "requests",
        "failed": "failed",
        "achieved_rps": "achieved req/s",
        "output_tokens_per_s": "output tok/s",
        "ttft_p50_ms": "TTFT p50 (ms)",
        "ttft_p90_ms": "TTFT p90 (ms)",
        "ttft_p99_ms": "TTFT p99 (ms)",
        "tpot_p50_ms": "TPOT p50 (ms)",
        "tpot_p99_ms": "TPOT p99 (ms)",
        "itl_p99_ms": "ITL p99 (ms)",
    }
    passed = dict(searched.search.probes)
    rows = []
    for p in sorted(searched.probes, key=lambda p: p.rate):
        a = from_summary(p.summary)
        rows.append(
            {
                "offered req/s": p.rate,
                **{v: p.summary.get(k) for k, v in cols.items()},
                "met target": a.met,
                f"attainment ({100 * LEVEL:g} % interval)": f"{percent(a.share)} % ({a.interval_text()})",
                "goodput (req/s)": p.summary.get("goodput_rps"),
                "meets target": passed.get(p.rate, False),
            }
        )
    return pd.DataFrame(rows).set_index("offered req/s").round(digits)


def _probe(searched: RateSearchResult, rate: float) -> dict:
    return next(p.summary for p in searched.probes if p.rate == rate)


def rate_reading(searched: RateSearchResult) -> str:
    """The rate search's outcome in sentences computed from its probes, each attainment with its count and interval."""
    target = searched.target
    hi, lo = searched.search.highest_passing, searched.search.lowest_failing
    n = max((int(p.summary.get("sent") or 0) for p in searched.probes), default=0)
    out = []
    if hi is None:
        out.append(f"No rate probed met the target ({target.describe()}).")
    else:
        s = _probe(searched, hi)
        out.append(
            f"The highest rate that met the target ({target.describe()}) was **{rate_text(hi)}** on "
            f"{searched.parallel} slots: {from_summary(s).text()} within the bounds, TTFT p99 "
            f"{s['ttft_p99_ms']:.0f} ms, TPOT p99 {s['tpot_p99_ms']:.0f} ms, {s['output_tokens_per_s']:.0f} output tokens/s."
        )
    if lo is not None:
        s = _probe(searched, lo)
        a = from_summary(s)
        at = f"At {rate_text(lo)}" if hi is not None else f"At the lowest rate probed, {rate_text(lo)},"
        out.append(
            f"{at} {'only ' if a.met else ''}{a.text()} met it (TTFT p99 {s['ttft_p99_ms']:.0f} ms, TPOT p99 "
            f"{s['tpot_p99_ms']:.0f} ms)" + (", so the capacity under this target lies between the two." if hi else ".")
        )
    elif hi is not None:
        out.append(f"No probed rate failed ({searched.search.stopped}), so {rate_text(hi)} is a lower bound.")
    out.append(
        f"The search probed {len(searched.probes)} rates and stopped because it {_stop_phrase(searched.search.stopped)}. "
        + _rule_phrase(n, target.attainment)
    )
    if hi is not None:
        out.append(_interval_phrase(from_summary(_probe(searched, hi)), target.attainment))
    return " ".join(out)


def _rule_phrase(n: int, share: float) -> str:
    k = allowed_misses(n, share)
    rule = f"A probe passed when all its {n} requests were sent and at least {100 * share:g} % of them met the bounds"
    if k == 0:
        return rule + ": that allows no miss at all, so a single slow request fails a probe."
    return rule + f": {k} may miss, so a single slow request cannot decide a probe."


def _interval_phrase(a: Attainment, share: float) -> str:
    """What the passing rate's interval says: whether the target holds beyond the requests sent."""
    lo = f"{100 * a.level:g} % interval"
    if a.lower >= share:
        return f"Even the lower end of its {lo} lies above {100 * share:g} %, so the target holds beyond these {a.n} requests."
    return (
        f"Its {lo} reaches down to {percent(a.lower)} %, below the target's {100 * share:g} %: {a.n} requests show the "
        "target met at this rate, not that it would be met over many more."
    )


def capacity_text(searched: RateSearchResult) -> str:
    """The capacity in one cell: "0.75 req/s (19 of 20 requests within the target, 90 % interval 78–99.7 %)"."""
    hi = searched.search.highest_passing
    if hi is None:
        lo = searched.search.lowest_failing
        return f"none (even {lo:g} req/s missed)" if lo is not None else "not measured"
    a = from_summary(_probe(searched, hi))
    return (
        f"{hi:g} req/s ({a.met} of {a.n} requests within the target, {100 * a.level:g} % interval {a.interval_text()})"
    )


def _stop_phrase(stopped: str) -> str:
    if stopped.startswith("bracketed"):
        return "had " + stopped.replace("bracketed within", "bracketed the answer within")
    if stopped.startswith("probe budget"):
        return "had spent its " + stopped.replace(" spent", "")
    return "found that " + stopped
