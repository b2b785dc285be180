"""What repeated measurements can say: medians with intervals, paired ratios, and the words for them.

A speed measured once on a shared 2-core VM can move by a quarter from one minute to the next,
far more than llama-bench's spread inside one call. The book's speeds therefore come from
*rounds* (:mod:`localllms.rounds`): in each round every configuration runs once, in a shuffled
order. This module turns the rounds into what a page may claim:

* a configuration's speed is the **median over rounds** with a distribution-free interval for
  the median, from order statistics (the interval [x_(k), x_(n+1-k)] covers the median with
  probability 1 - 2·P(Binomial(n, ½) < k), whatever the distribution);
* a comparison is the **paired ratio**: A's speed over B's within each round (the same minute of
  the machine), with the same interval over rounds;
* "A is faster than B" is said only when the ratio's interval excludes 1; otherwise the words are
  "not separated on this machine".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.90  # the interval's least coverage: with 5 rounds the [min, max] of the rounds covers 93.8 %


def _binom_cdf(k: int, n: int) -> float:
    """P(Binomial(n, 1/2) <= k)."""
    return sum(math.comb(n, i) for i in range(0, k + 1)) / 2**n


def order_ranks(n: int, level: float = LEVEL) -> tuple[int, int, float] | None:
    """The 1-based ranks (lo, hi) of the narrowest symmetric order-statistic interval for the median
    of ``n`` values that covers it with at least ``level``, and its exact coverage; None when even
    [min, max] falls short (n < 5 for 90 %)."""
    best = None
    for k in range(1, n // 2 + 1):
        coverage = 1 - 2 * _binom_cdf(k - 1, n)
        if coverage >= level:
            best = (k, n + 1 - k, coverage)
        else:
            break
    return best


def familywise(m: int, level: float = LEVEL) -> float:
    """The coverage each of ``m`` intervals needs for all of them to hold together with at least
    ``level`` (Bonferroni: the chances that one misses add up, whatever their dependence)."""
    if m < 1:
        raise ValueError(f"a family needs at least one interval, not {m}")
    return 1 - (1 - level) / m


def fewest_rounds(level: float = LEVEL) -> int:
    """The fewest rounds whose order-statistic interval covers the median with at least ``level``."""
    n = 1
    while order_ranks(n, level) is None:
        n += 1
    return n


@dataclass(frozen=True)
class Estimate:
    """A median over rounds and its interval (lo, hi), or no interval when too few rounds."""

    median: float
    lo: float
    hi: float
    n: int
    coverage: float  # the interval's exact coverage of the median (0 when there is none)

    @property
    def has_interval(self) -> bool:
        return self.coverage > 0

    def excludes(self, value: float) -> bool:
        """Whether the interval lies wholly on one side of ``value`` (False without an interval)."""
        return self.has_interval and (self.lo > value or self.hi < value)

    def times(self, digits: int = 2) -> str:
        """ "×1.21 (1.10–1.33)" for a ratio, or "×1.21 (n=3)" without an interval."""
        return "×" + self.text(digits)

    def span(self, digits: int = 2, signed: bool = False) -> str:
        """ "1.10–1.33" (the interval alone), or "n=3" without one."""
        f = f"{'+' if signed else ''}.{digits}f"
        return f"{self.lo:{f}}–{self.hi:{f}}" if self.has_interval else f"n={self.n}"

    def text(self, digits: int = 1, unit: str = "") -> str:
        """ "123.4 (118.0–130.2)": the median and its interval, as every table prints it."""
        u = f" {unit}" if unit else ""
        if not self.has_interval:
            return f"{self.median:.{digits}f}{u} (n={self.n})"
        return f"{self.median:.{digits}f} ({self.lo:.{digits}f}–{self.hi:.{digits}f}){u}"


def estimate(values: Sequence[float], level: float = LEVEL) -> Estimate:
    """The median of ``values`` (one per round) with its order-statistic interval."""
    xs = sorted(float(v) for v in values if v == v)  # NaN (a test not run) is left out
    n = len(xs)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, 0.0)
    mid = n // 2
    median = xs[mid] if n % 2 else (xs[mid - 1] + xs[mid]) / 2
    ranks = order_ranks(n, level)
    if ranks is None:
        return Estimate(median, float("nan"), float("nan"), n, 0.0)
    lo, hi, coverage = ranks
    return Estimate(median, xs[lo - 1], xs[hi - 1], n, coverage)


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """A over B round by round (``a[i]`` and ``b[i]`` measured in the same round), leaving out a
    round where either was not run (NaN) or B is zero."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same rounds: {len(a)} against {len(b)}")
    return [x / y for x, y in zip(a, b, strict=True) if y and x == x and y == y]


def paired_ratio(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Estimate:
    """A over B round by round, as an Estimate (median and interval over the rounds)."""
    return estimate(paired_ratios(a, b), level)


def comparison(ratio: Estimate, faster: str = "faster", slower: str = "slower") -> str:
    """The words a ratio allows: "faster" / "slower" when its interval excludes 1, otherwise
    "not separated on this machine"."""
    if ratio.excludes(1.0):
        return faster if ratio.lo > 1 else slower
    return "not separated on this machine"


def compare_sentence(a: str, b: str, ratio: Estimate, what: str = "") -> str:
    """ "Q4_K_M generates ×1.21 (1.10–1.33) faster than F16" or "... not separated on this machine
    (×1.02, 0.95–1.10)", for a paired ratio of A's speed over B's."""
    words = comparison(ratio)
    how = f"×{ratio.median:.2f}" + (f", {ratio.lo:.2f}–{ratio.hi:.2f}" if ratio.has_interval else f", n={ratio.n}")
    subject = f"{a} {what}".strip()
    if words == "not separated on this machine":
        return f"{subject} and {b}: not separated on this machine ({how} over {ratio.n} rounds)"
    return f"{subject} is {words} than {b} ({how} over {ratio.n} rounds)"
