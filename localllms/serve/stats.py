"""The arithmetic of a serving benchmark, apart from any server: arrivals, percentiles, goodput, the search.

Pure functions on numbers, so they are tested on known inputs (``tests/unit/test_serve_stats.py``):

* ``poisson_arrivals``: the send times of an open-loop run, seeded (exponential gaps, as
  vLLM's ``bench serve --request-rate`` and GuideLLM's ``poisson`` rate type draw them).
* ``percentiles``, ``latency_table``: p50, p90, p99 of TTFT, inter-token latency (every gap),
  TPOT and end-to-end, with the number of values each is computed from.
* ``percentile_position``, ``latency_reading``: where a percentile of few values lies, and what the
  latency table rests on, in sentences.
* ``ServiceTarget``, ``meets_target``, ``allowed_misses``, ``run_summary``: a service level objective ("TTFT at most
  1 s and TPOT at most 100 ms for 90 % of requests"), the share of requests that meet it
  (attainment), the rate of those that do (goodput, as vLLM's ``--goodput`` counts it), and the
  passing rule of a run (``ServiceTarget.met_by``: all its requests sent, the share reached).
  What such a share measured on a few requests can say is in ``attainment``.
* ``search_highest_rate``: the bounded search for the highest arrival rate that still meets the
  objective: double until a rate fails, then bisect (GuideLLM's goodput profile searches the
  same way, over concurrency).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .. import defaults
from ..errors import UserError

if TYPE_CHECKING:
    import pandas as pd

PERCENTILES = (50, 90, 99)


def poisson_arrivals(rate: float, n: int, seed: int) -> list[float]:
    """Send times (s from the start) of ``n`` requests arriving as a Poisson process of ``rate`` per second.

    The first request is sent at 0; the gaps between requests are exponential with mean
    ``1 / rate``, drawn from a generator seeded with ``seed``, so a run is repeatable and the
    same seed at twice the rate gives the same pattern in half the time.
    """
    if not (rate > 0 and math.isfinite(rate)):
        raise UserError(f"The request rate must be a positive number of requests per second, not {rate!r}.")
    if n < 1:
        raise UserError(f"An open-loop run needs at least one request, not {n}.")
    gaps = np.random.default_rng(seed).standard_exponential(n - 1) / rate
    return [0.0, *np.cumsum(gaps).tolist()]


def percentiles(values: Iterable[float], qs: Sequence[float] = PERCENTILES) -> dict[str, float]:
    """``{"p50": ..., "p90": ..., "p99": ...}`` by linear interpolation (numpy's default, as vLLM reports them).

    NaN when there are no values. With n values, p99 lies between the two largest unless n >= 100.
    """
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    return {f"p{q:g}": float(np.percentile(arr, q)) if arr.size else float("nan") for q in qs}


LATENCY_METRICS = {
    "ttft_ms": "time to first token (ms)",
    "itl_ms": "inter-token latency, every gap (ms)",
    "tpot_ms": "time per output token (ms)",
    "e2e_ms": "end-to-end (ms)",
}


def latency_table(records: pd.DataFrame, qs: Sequence[float] = PERCENTILES, digits: int = 1) -> pd.DataFrame:
    """p50/p90/p99 and the number of values of each latency metric of successful requests.

    ``records`` has one row per request with ``ttft_ms``, ``tpot_ms``, ``e2e_ms`` and ``itl_ms``
    (a list of gaps per request); inter-token latency pools every gap of every request.
    """
    import pandas as pd

    ok = records[records["ok"]] if "ok" in records else records
    rows = {}
    for col, label in LATENCY_METRICS.items():
        if col not in ok:
            continue
        values = [g for gaps in ok[col] for g in gaps] if col == "itl_ms" else ok[col].dropna().tolist()
        rows[label] = {**percentiles(values, qs), "n": len(values)}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out["n"] = out["n"].astype(int)
    return out.round(digits)


def percentile_position(q: float, n: int) -> str:
    """Where the ``q``-th percentile of ``n`` values lies, by linear interpolation, in words."""
    if n < 1:
        return "undefined (no values)"
    pos = q / 100 * (n - 1)  # 0-based position in the sorted values
    lo, hi = math.floor(pos), math.ceil(pos)
    rank = {0: "the largest", 1: "the second largest", 2: "the third largest"}

    def name(i: int) -> str:
        return rank.get(n - 1 - i, f"value {i + 1} in ascending order")

    return name(lo) if lo == hi else f"between {name(lo)} and {name(hi)}"


def allowed_misses(n: int, attainment: float) -> int:
    """How many of ``n`` requests may miss the target while ``attainment`` of them still meet it."""
    return n - math.ceil(round(attainment * n, 9))


def latency_reading(
    records: pd.DataFrame, table: pd.DataFrame, requested: int | None = None, budget_s: float | None = None
) -> str:
    """What the latency table rests on, in sentences computed from every request's record and ``table``.

    ``records`` holds every request sent (``warmup`` and ``ok`` columns); ``requested`` is the number
    of measured requests asked for: when fewer were sent, the run's time budget (``budget_s``) ended it.
    """
    warm = records["warmup"].astype(bool) if "warmup" in records else _false(records)
    ok = records["ok"].astype(bool) if "ok" in records else ~_false(records)
    sent, n_warm = int((~warm).sum()), int(warm.sum())
    failed = int((~warm & ~ok).sum())
    n_req = int(table.loc[LATENCY_METRICS["ttft_ms"], "n"])
    first = f"The table rests on {n_req} measured requests, after {n_warm} warm-up requests left out"
    if requested is not None and sent < requested:
        why = f"the time budget of {budget_s:g} s ended the run" if budget_s else "the run ended early"
        first += f"; {sent} of the {requested} asked for were sent before {why}"
    if failed:
        first += f"; {failed} failed and are not in the table"
    out = [first + "."]
    measured = records[~warm & ok]
    if "prompt_tokens" in measured and measured["prompt_tokens"].notna().any():
        p = measured["prompt_tokens"].dropna()
        out.append(f"Their prompts were {int(p.min())} to {int(p.max())} tokens long (median {p.median():.0f}).")
    out.append(f"With {n_req} values, the p99 of TTFT lies {percentile_position(99, n_req)} of them")
    label = LATENCY_METRICS.get("itl_ms")
    if label in table.index:
        out[-1] += f", while the p99 of the inter-token latency rests on {int(table.loc[label, 'n'])} gaps."
    else:
        out[-1] += "."
    return " ".join(out)


def _false(records: pd.DataFrame) -> pd.Series:
    """A column of False as long as ``records`` (for records without a ``warmup`` or ``ok`` column)."""
    import pandas as pd

    return pd.Series(False, index=records.index)


@dataclass(frozen=True)
class ServiceTarget:
    """A service level objective: every request within both bounds, for ``attainment`` of the requests."""

    ttft_ms: float = defaults.SLO_TTFT_MS
    tpot_ms: float = defaults.SLO_TPOT_MS
    attainment: float = defaults.SLO_ATTAINMENT

    def __post_init__(self) -> None:
        if not (self.ttft_ms > 0 and self.tpot_ms > 0):
            raise UserError(
                f"The service target's bounds must be positive, not TTFT {self.ttft_ms}, TPOT {self.tpot_ms}."
            )
        if not 0 < self.attainment <= 1:
            raise UserError(f"The target share of requests must lie in (0, 1], not {self.attainment}.")

    def describe(self) -> str:
        return f"TTFT ≤ {self.ttft_ms:g} ms and TPOT ≤ {self.tpot_ms:g} ms for {100 * self.attainment:g} % of requests"

    def met_by(self, met: int, n: int, min_requests: int = 1) -> bool:
        """The passing rule of a run: at least ``min_requests`` requests sent, and ``met`` of the ``n`` sent
        within the bounds make at least the target share (so ``allowed_misses(n)`` may miss)."""
        return n >= max(min_requests, 1) and n - met <= allowed_misses(n, self.attainment)


def meets_target(ok: bool, ttft_ms: float | None, tpot_ms: float | None, target: ServiceTarget) -> bool:
    """Whether one request met the objective: it succeeded, and its TTFT and TPOT are within bounds.

    A one-token answer has no TPOT; it counts as within that bound (as in vLLM's goodput).
    A failed request never meets it (as GuideLLM counts errors against attainment).
    """
    if not ok or ttft_ms is None or math.isnan(ttft_ms) or ttft_ms > target.ttft_ms:
        return False
    return tpot_ms is None or math.isnan(tpot_ms) or tpot_ms <= target.tpot_ms


def run_summary(records: pd.DataFrame, target: ServiceTarget, duration_s: float, min_requests: int = 1) -> dict:
    """One open-loop run in numbers: throughput, attainment (``met`` of ``sent``), goodput and latency percentiles.

    ``records``: one row per request sent (``ok``, ``ttft_ms``, ``tpot_ms``, ``e2e_ms``,
    ``itl_ms``, ``output_tokens``); ``duration_s``: from the first send to the last answer.
    Requests never sent (the time budget ran out) are not in ``records``, so a run that sent
    fewer than ``min_requests`` does not meet the target (:meth:`ServiceTarget.met_by`).
    """
    if duration_s <= 0:
        raise ValueError("a run's duration must be positive")
    sent = len(records)
    good = [meets_target(r.ok, r.ttft_ms, r.tpot_ms, target) for r in records.itertuples()]
    ok = records[records["ok"]]
    n_good = int(sum(good))
    lat = {}
    for col in ("ttft_ms", "tpot_ms", "e2e_ms"):
        for k, v in percentiles(ok[col].dropna()).items():
            lat[f"{col[:-3]}_{k}_ms"] = v
    for k, v in percentiles([g for gaps in ok["itl_ms"] for g in gaps]).items():
        lat[f"itl_{k}_ms"] = v
    return {
        "sent": sent,
        "failed": sent - len(ok),
        "duration_s": duration_s,
        "achieved_rps": len(ok) / duration_s,
        "output_tokens_per_s": float(ok["output_tokens"].sum()) / duration_s,
        "met": n_good,
        "attainment": n_good / sent if sent else float("nan"),
        "goodput_rps": n_good / duration_s,
        "meets_target": target.met_by(n_good, sent, min_requests),
        **lat,
    }


@dataclass
class RateSearch:
    """The probes of :func:`search_highest_rate` in the order they ran, and what they show."""

    probes: list[tuple[float, bool]] = field(default_factory=list)
    stopped: str = ""

    @property
    def highest_passing(self) -> float | None:
        passing = [r for r, ok in self.probes if ok]
        return max(passing) if passing else None

    @property
    def lowest_failing(self) -> float | None:
        failing = [r for r, ok in self.probes if not ok]
        return min(failing) if failing else None


def search_highest_rate(
    passes: Callable[[float], bool],
    start: float,
    max_probes: int = 6,
    tolerance: float = 0.25,
    min_rate: float = 0.05,
) -> RateSearch:
    """The highest rate at which ``passes(rate)`` holds, within ``tolerance``, in at most ``max_probes`` calls.

    From ``start``, the rate doubles while it passes (halves while it fails) until the two
    neighbouring rates disagree; then the interval between the highest passing and the lowest
    failing rate is bisected until it is narrower than ``tolerance`` times the passing rate.
    Bounded: never more than ``max_probes`` probes, never below ``min_rate``. The result says why
    it stopped; with the budget spent first, the highest passing rate is a lower bound.
    """
    if start <= 0 or max_probes < 1 or tolerance <= 0:
        raise UserError(
            f"The rate search needs a positive start rate, at least one probe and a positive tolerance "
            f"(got {start}, {max_probes}, {tolerance})."
        )
    search = RateSearch()

    def probe(rate: float) -> bool:
        ok = bool(passes(rate))
        search.probes.append((rate, ok))
        return ok

    rate = start
    while len(search.probes) < max_probes:  # bracket: double up, or halve down
        ok = probe(rate)
        if search.highest_passing is not None and search.lowest_failing is not None:
            break
        if not ok and rate / 2 < min_rate:
            search.stopped = f"even {rate:g} requests/s misses the target"
            return search
        rate = rate * 2 if ok else rate / 2
    while len(search.probes) < max_probes:  # bisect the bracket
        lo, hi = search.highest_passing, search.lowest_failing
        if lo is None or hi is None:
            break
        if hi - lo <= tolerance * lo:
            search.stopped = f"bracketed within {100 * tolerance:g} %"
            return search
        probe((lo + hi) / 2)
    lo, hi = search.highest_passing, search.lowest_failing
    if lo is not None and hi is not None and hi - lo <= tolerance * lo:
        search.stopped = f"bracketed within {100 * tolerance:g} %"
    else:
        search.stopped = f"probe budget ({max_probes}) spent"
    return search
