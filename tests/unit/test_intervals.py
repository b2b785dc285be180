"""Readings from made-up rounds: where two configurations overlap and where they separate."""

from __future__ import annotations

import math

import pytest

from localllms import intervals as iv


def test_order_statistic_ranks_and_their_coverage() -> None:
    assert iv.order_ranks(4) is None  # even [min, max] covers the median with 87.5 % only
    lo, hi, cov = iv.order_ranks(5)
    assert (lo, hi) == (1, 5) and cov == pytest.approx(1 - 2 / 32)
    lo, hi, cov = iv.order_ranks(10)
    assert (lo, hi) == (2, 9) and cov == pytest.approx(1 - 2 * 11 / 1024)
    assert iv.order_ranks(10, 0.99) == (1, 10, pytest.approx(1 - 2 / 1024))


def test_estimate_is_the_median_with_its_interval() -> None:
    e = iv.estimate([120.0, 100.0, 140.0, 130.0, 110.0])
    assert (e.median, e.lo, e.hi, e.n) == (120.0, 100.0, 140.0, 5)
    assert e.text() == "120.0 (100.0–140.0)"
    few = iv.estimate([1.0, 2.0, 3.0])
    assert few.median == 2.0 and not few.has_interval and few.text() == "2.0 (n=3)"
    assert not few.excludes(10.0)  # no interval, no claim
    assert math.isnan(iv.estimate([]).median)
    assert iv.estimate([1.0, float("nan"), 3.0, 2.0, 5.0, 4.0]).n == 5


def test_a_ratio_whose_interval_excludes_one_reads_as_faster_or_slower() -> None:
    variant = [130.0, 118.0, 151.0, 125.0, 140.0]
    reference = [100.0, 95.0, 120.0, 101.0, 110.0]  # every round: the variant is ~20-30 % faster
    r = iv.paired_ratio(variant, reference)
    assert r.lo > 1 and iv.comparison(r) == "faster"
    assert iv.compare_sentence("Q4_K_M", "F16", r, "generates").startswith("Q4_K_M generates is faster than F16 (×1.2")
    assert iv.comparison(iv.paired_ratio(reference, variant)) == "slower"


def test_overlapping_rounds_are_not_separated_even_with_a_higher_median() -> None:
    # A's median is 8 % higher, but in one round B was faster: the machine's swings decide nothing
    a = [108.0, 95.0, 120.0, 104.0, 112.0]
    b = [100.0, 101.0, 110.0, 96.0, 103.0]
    r = iv.paired_ratio(a, b)
    assert r.median > 1 and r.lo < 1
    assert iv.comparison(r) == "not separated on this machine"
    sentence = iv.compare_sentence("Q5_K_M", "Q6_K", r, "generates")
    assert sentence.startswith("Q5_K_M generates and Q6_K: not separated on this machine (×")
    assert "over 5 rounds" in sentence


def test_pairing_removes_a_drift_that_unpaired_intervals_cannot() -> None:
    """The machine drifts between two states; within a round both run in the same state. Unpaired
    intervals overlap, the paired ratio separates a steady 5 % difference."""
    state = [1.0, 1.3, 1.0, 1.3, 1.0, 1.3, 1.0]
    a = [105.0 * s for s in state]
    b = [100.0 * s for s in state]
    ea, eb = iv.estimate(a), iv.estimate(b)
    assert ea.lo < eb.hi  # the intervals overlap
    assert iv.comparison(iv.paired_ratio(a, b)) == "faster"


def test_paired_values_need_the_same_rounds() -> None:
    with pytest.raises(ValueError, match="same rounds"):
        iv.paired_ratio([1.0, 2.0], [1.0])


def test_rounds_shuffle_per_round_from_the_seed_and_pair_by_round() -> None:
    import pandas as pd

    from localllms import rounds

    settings = [rounds.Setting(label, "", label, 2, 512, 128) for label in ("F16", "Q4_K_M", "Q8_0", "Q2_K")]
    first = [s.label for s in rounds.order(settings, 7, 0)]
    assert first == [s.label for s in rounds.order(list(reversed(settings)), 7, 0)]  # the seed decides, not the input
    orders = {tuple(s.label for s in rounds.order(settings, 7, r)) for r in range(6)}
    assert len(orders) > 1  # rounds differ
    rows = []
    for r, state in enumerate([1.0, 1.3, 1.0, 1.3, 1.0]):
        rows += [{"round": r, "position": 0, "label": "F16", "test": "tg", "value": 100 * state, "measured_at": ""},
                 {"round": r, "position": 1, "label": "Q4_K_M", "test": "tg", "value": 121 * state, "measured_at": ""}]  # fmt: skip
    rr = rounds.Rounds(settings[:2], 7, pd.DataFrame(rows))
    assert rr.n_rounds == 5 and all(math.isnan(v) for v in rr.values("F16", "pp"))  # a test not run
    ratio = rr.ratio("Q4_K_M", "F16", "tg")
    assert ratio.median == pytest.approx(1.21) and ratio.lo == pytest.approx(1.21)
    assert rr.estimate("F16", "tg").text() == "100.0 (100.0–130.0)"
    assert "5 rounds of 2 configurations" in rr.describe() and "seed 7" in rr.describe()


def test_a_group_runs_together_in_a_shuffled_place_and_order() -> None:
    from localllms import rounds

    pairs = [("a", "a: real"), ("a", "a: synthetic"), ("b", "b: real"), ("b", "b: synthetic"), ("c", "c: real"),
             ("c", "c: synthetic")]  # fmt: skip
    settings = [rounds.Setting(label, "", label, 2, 512, 128, group=g) for g, label in pairs]
    seen_first, seen_places = set(), set()
    for r in range(12):
        labels = [s.label for s in rounds.order(settings, 7, r)]
        for g in "abc":
            at = [i for i, lab in enumerate(labels) if lab.startswith(g)]
            assert at[1] == at[0] + 1  # the two files of a pair run one after the other
            seen_places.add((g, at[0]))
        seen_first.add(labels[0].split(": ")[1])
    assert seen_first == {"real", "synthetic"}  # which file of a pair goes first is shuffled
    assert len(seen_places) > 3  # and so is the pairs' order
    # an ungrouped setting's cache key is what it was before groups existed
    assert "group" not in dict(rounds.Setting("x", "", "x", 2).key())
    assert dict(settings[0].key())["group"] == "a"


def test_intervals_that_must_hold_together_need_more_rounds() -> None:
    assert iv.fewest_rounds(0.90) == 5  # [min, max] of 5 covers 93.75 %
    level = iv.familywise(10, 0.90)  # ten comparisons, all covered together with 90 %
    assert level == pytest.approx(0.99)
    assert iv.fewest_rounds(level) == 8  # [min, max] of 8 covers 1 - 2/256 = 99.2 %
    assert iv.order_ranks(7, level) is None
    assert iv.order_ranks(12, level)[:2] == (2, 11)  # with 12, the second lowest to the second highest
    with pytest.raises(ValueError):
        iv.familywise(0)
