"""What a share of requests measured on a few of them can say: the count, and an exact binomial interval.

A probe of the rate search sends a few dozen requests; the share of them that met the service
target (the *attainment*) is an estimate of the share the server would reach over many. Every
statement the serving chapter makes about an attainment therefore carries its sample: how many
requests, how many met the target, and the **Clopper–Pearson** interval of the share (the exact
binomial interval: it covers the server's own share with at least the stated probability, whatever
that share is, and never needs a normal approximation that fails near 0 and 100 %).

* ``clopper_pearson``: the interval, from the binomial tail probabilities (standard library only,
  bisection on the tail in log space; scipy's ``beta.ppf`` gives the same bounds).
* :class:`Attainment`: k of n with its interval; ``text`` says it as the chapter prints it
  ("15 of 16 requests (94 %, 90 % interval 74–99.7 %)"); ``separated`` is the rule by which two
  attainments are called different: their intervals do not overlap.

Pure arithmetic, no server: tested against known values in ``tests/unit/test_serve_attainment.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LEVEL = 0.90  # the intervals' coverage, as the book's other intervals (localllms.intervals)


def _log_pmf(i: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return min(1.0, math.fsum(math.exp(_log_pmf(i, n, p)) for i in range(k, n + 1)))


def _solve(f, target: float) -> float:
    """The p in [0, 1] where the increasing function ``f`` crosses ``target``, by bisection."""
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact (Clopper–Pearson) interval of a binomial share of ``k`` successes in ``n`` trials.

    The lower bound is the p at which P(X ≥ k) = (1 - level) / 2, the upper the p at which
    P(X ≤ k) = (1 - level) / 2; 0 when k = 0 and 1 when k = n.
    """
    if not (isinstance(n, int) and isinstance(k, int) and 0 <= k <= n and n >= 1):
        raise ValueError(f"need 0 <= k <= n and n >= 1, not k={k!r}, n={n!r}")
    if not 0 < level < 1:
        raise ValueError(f"the interval's level must lie in (0, 1), not {level!r}")
    tail = (1 - level) / 2
    lower = 0.0 if k == 0 else _solve(lambda p: binomial_tail(k, n, p), tail)
    # P(X <= k) falls as p grows: the upper bound is where P(X >= k + 1) reaches 1 - tail
    upper = 1.0 if k == n else _solve(lambda p: binomial_tail(k + 1, n, p), 1 - tail)
    return lower, upper


def percent(x: float) -> str:
    """A share as a whole percent ("94"), with one decimal where rounding would show 0 or 100 for a value
    that is neither ("99.7"), so an interval never claims a bound it does not have."""
    if x <= 0 or x >= 1:
        return f"{100 * x:.0f}"
    r = round(100 * x)
    if r == 100:
        return f"{math.floor(1000 * x) / 10:.1f}"
    if r == 0:
        return f"{math.ceil(1000 * x) / 10:.1f}"
    return f"{r}"


@dataclass(frozen=True)
class Attainment:
    """``met`` of ``n`` requests within the service target, with the exact interval of the share."""

    met: int
    n: int
    level: float = LEVEL

    @property
    def share(self) -> float:
        return self.met / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return clopper_pearson(self.met, self.n, self.level) if self.n else (float("nan"), float("nan"))

    @property
    def lower(self) -> float:
        return self.interval[0]

    @property
    def upper(self) -> float:
        return self.interval[1]

    def interval_text(self) -> str:
        """ "74–99.7 %"."""
        lo, hi = self.interval
        return f"{percent(lo)}–{percent(hi)} %"

    def share_text(self) -> str:
        """ "94 %, 90 % interval 74–99.7 %"."""
        return f"{percent(self.share)} %, {100 * self.level:g} % interval {self.interval_text()}"

    def text(self, noun: str = "requests") -> str:
        """ "15 of 16 requests (94 %, 90 % interval 74–99.7 %)"."""
        return f"{self.met} of {self.n} {noun} ({self.share_text()})"

    def separated(self, other: Attainment) -> bool:
        """Whether the two intervals do not overlap: only then does the chapter call two shares different."""
        return self.upper < other.lower or other.upper < self.lower


def from_summary(summary: dict, level: float = LEVEL) -> Attainment:
    """The attainment of one open-loop run's summary (``met`` and ``sent``, as ``stats.run_summary`` gives them)."""
    n = int(summary.get("sent") or 0)
    met = summary.get("met")
    if met is None:  # a summary without the count: from the share, which is met / sent
        met = round(float(summary.get("attainment") or 0.0) * n)
    return Attainment(int(met), n, level)
