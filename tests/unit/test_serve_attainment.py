"""The attainment's exact binomial (Clopper–Pearson) interval, against known values; no server, no model."""

from __future__ import annotations

import math

import pytest

from localllms.serve.attainment import Attainment, binomial_tail, clopper_pearson, from_summary, percent


def test_binomial_tail_by_hand() -> None:
    assert binomial_tail(0, 5, 0.3) == 1.0 and binomial_tail(6, 5, 0.3) == 0.0
    assert binomial_tail(5, 5, 0.5) == pytest.approx(1 / 32)
    assert binomial_tail(1, 3, 0.5) == pytest.approx(7 / 8)
    assert binomial_tail(2, 4, 0.25) == pytest.approx(1 - 0.75**4 - 4 * 0.25 * 0.75**3)


@pytest.mark.parametrize(
    "k, n, level, lower, upper",
    [
        (5, 10, 0.95, 0.187086, 0.812914),  # R: binom.test(5, 10)$conf.int
        (0, 10, 0.95, 0.0, 0.308497),  # binom.test(0, 10)
        (1, 20, 0.95, 0.001265, 0.248734),  # binom.test(1, 20)
        (15, 16, 0.90, 0.736043, 0.996799),  # binom.test(15, 16, conf.level = 0.9)
    ],
)
def test_clopper_pearson_known_values(k: int, n: int, level: float, lower: float, upper: float) -> None:
    lo, hi = clopper_pearson(k, n, level)
    assert lo == pytest.approx(lower, abs=2e-6) and hi == pytest.approx(upper, abs=2e-6)


def test_clopper_pearson_closed_forms_at_the_ends() -> None:
    # k = n: the lower bound solves p^n = (1 - level) / 2; k = 0: the upper solves (1 - p)^n = (1 - level) / 2
    for n in (1, 8, 20, 100):
        assert clopper_pearson(n, n)[0] == pytest.approx(0.05 ** (1 / n), abs=1e-9)
        assert clopper_pearson(0, n)[1] == pytest.approx(1 - 0.05 ** (1 / n), abs=1e-9)
    assert clopper_pearson(15, 16)[1] == pytest.approx(0.95 ** (1 / 16), abs=1e-9)  # P(X <= 15) = 1 - p^16


def test_clopper_pearson_is_symmetric_and_nested() -> None:
    for n, k in ((20, 3), (37, 30), (200, 197)):
        lo, hi = clopper_pearson(k, n)
        mirror = clopper_pearson(n - k, n)
        assert lo == pytest.approx(1 - mirror[1], abs=1e-9) and hi == pytest.approx(1 - mirror[0], abs=1e-9)
        assert lo < k / n < hi
        wide = clopper_pearson(k, n, 0.99)
        assert wide[0] < lo and wide[1] > hi  # a higher level, a wider interval


def test_clopper_pearson_rejects_nonsense() -> None:
    for k, n in ((3, 2), (-1, 5), (1, 0)):
        with pytest.raises(ValueError):
            clopper_pearson(k, n)
    with pytest.raises(ValueError):
        clopper_pearson(1, 2, level=1.0)


def test_percent_never_rounds_a_bound_to_0_or_100() -> None:
    assert percent(0.9375) == "94" and percent(1.0) == "100" and percent(0.0) == "0"
    assert percent(0.99680) == "99.6" and percent(0.9996) == "99.9"  # not "100": the share may be below it
    assert percent(0.0013) == "0.2"  # not "0"


def test_attainment_text_and_separation() -> None:
    a = Attainment(15, 16)
    assert a.share == 0.9375
    assert a.text() == "15 of 16 requests (94 %, 90 % interval 74–99.6 %)"
    assert Attainment(20, 20).text() == "20 of 20 requests (100 %, 90 % interval 86–100 %)"
    # 20 of 20 against 12 of 20: [86, 100] and [39, 78] do not overlap
    assert Attainment(20, 20).separated(Attainment(12, 20))
    assert not Attainment(20, 20).separated(Attainment(16, 20))  # [86, 100] and [60, 93] overlap
    assert not Attainment(7, 8).separated(Attainment(6, 8))  # one request apart: never separated
    assert math.isnan(Attainment(0, 0).share)


def test_attainment_from_a_run_summary() -> None:
    assert from_summary({"sent": 20, "met": 19, "attainment": 0.95}) == Attainment(19, 20)
    assert from_summary({"sent": 8, "attainment": 0.75}) == Attainment(6, 8)  # an older summary without the count
