"""The serving benchmark's arithmetic on known inputs: arrivals, percentiles, goodput, the rate search.

No server and no model: every expected value below follows from the definitions by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from localllms.errors import UserError
from localllms.serve import prompt_cache, stats
from localllms.serve.structured import CAUSES, failure_table, structured_reading

TARGET = stats.ServiceTarget(ttft_ms=1000, tpot_ms=100, attainment=0.99)


# --------------------------------------------------------------------------- arrival schedule


def test_poisson_arrivals_are_seeded_and_scale_with_the_rate() -> None:
    a = stats.poisson_arrivals(2.0, 50, seed=7)
    assert a == stats.poisson_arrivals(2.0, 50, seed=7)  # the same seed, the same schedule
    assert a != stats.poisson_arrivals(2.0, 50, seed=8)
    assert a[0] == 0.0 and len(a) == 50 and all(x < y for x, y in zip(a, a[1:], strict=False))
    # the same seed at twice the rate: the same pattern in half the time
    assert stats.poisson_arrivals(4.0, 50, seed=7) == pytest.approx([t / 2 for t in a])


def test_poisson_gaps_are_exponential_with_mean_one_over_rate() -> None:
    gaps = np.diff(stats.poisson_arrivals(5.0, 20_001, seed=1))
    assert gaps.mean() == pytest.approx(0.2, rel=0.03)
    assert gaps.std() == pytest.approx(0.2, rel=0.03)  # an exponential's standard deviation equals its mean
    # memoryless: the share of gaps longer than the mean is exp(-1)
    assert (gaps > 0.2).mean() == pytest.approx(math.exp(-1), abs=0.01)


@pytest.mark.parametrize("rate, n", [(0, 5), (-1, 5), (float("inf"), 5), (1.0, 0)])
def test_bad_schedules_are_one_sentence(rate: float, n: int) -> None:
    with pytest.raises(UserError):
        stats.poisson_arrivals(rate, n, seed=1)


# --------------------------------------------------------------------------- percentiles


def test_percentiles_interpolate_linearly() -> None:
    p = stats.percentiles(range(1, 101))  # 1..100
    assert p == {"p50": pytest.approx(50.5), "p90": pytest.approx(90.1), "p99": pytest.approx(99.01)}
    assert stats.percentiles([3.0]) == {"p50": 3.0, "p90": 3.0, "p99": 3.0}
    assert stats.percentiles([1.0, None, float("nan"), 3.0])["p50"] == 2.0  # missing values are skipped
    assert all(math.isnan(v) for v in stats.percentiles([]).values())


def test_latency_table_pools_every_gap_and_counts_values() -> None:
    records = pd.DataFrame(
        {
            "ok": [True, True, False],
            "ttft_ms": [100.0, 300.0, None],
            "tpot_ms": [10.0, 20.0, None],
            "e2e_ms": [130.0, 360.0, None],
            "itl_ms": [[10.0, 10.0, 10.0], [20.0, 20.0, 20.0], []],
        }
    )
    t = stats.latency_table(records)
    assert t.loc["time to first token (ms)", "p50"] == 200.0 and t.loc["time to first token (ms)", "n"] == 2
    itl = t.loc["inter-token latency, every gap (ms)"]
    assert itl["n"] == 6 and itl["p50"] == 15.0 and itl["p90"] == 20.0


# --------------------------------------------------------------------------- target, attainment, goodput


def test_meets_target_checks_both_bounds_and_failures() -> None:
    assert stats.meets_target(True, 1000.0, 100.0, TARGET)  # the bounds are inclusive
    assert not stats.meets_target(True, 1000.1, 50.0, TARGET)
    assert not stats.meets_target(True, 10.0, 100.1, TARGET)
    assert stats.meets_target(True, 10.0, None, TARGET)  # a one-token answer has no TPOT
    assert not stats.meets_target(False, 10.0, 10.0, TARGET)  # a failed request never meets it


def test_run_summary_attainment_and_goodput() -> None:
    # 4 requests over 2 s: one too slow to start, one too slow to stream, one failed, one good
    records = pd.DataFrame(
        {
            "ok": [True, True, False, True],
            "ttft_ms": [1500.0, 200.0, None, 300.0],
            "tpot_ms": [50.0, 150.0, None, 40.0],
            "e2e_ms": [3000.0, 5000.0, None, 1500.0],
            "itl_ms": [[50.0], [150.0], [], [40.0]],
            "output_tokens": [32, 32, 0, 32],
        }
    )
    s = stats.run_summary(records, TARGET, duration_s=2.0)
    assert s["sent"] == 4 and s["failed"] == 1
    assert s["attainment"] == 0.25 and s["goodput_rps"] == 0.5 and not s["meets_target"]
    assert s["achieved_rps"] == 1.5 and s["output_tokens_per_s"] == 48.0
    assert s["ttft_p50_ms"] == 300.0 and s["itl_p50_ms"] == 50.0


def test_ninety_nine_percent_of_twenty_requests_means_all_of_them() -> None:
    ok = pd.DataFrame(
        {"ok": [True] * 20, "ttft_ms": [100.0] * 20, "tpot_ms": [10.0] * 20, "e2e_ms": [400.0] * 20}
        | {"itl_ms": [[10.0]] * 20, "output_tokens": [32] * 20}
    )
    assert stats.run_summary(ok, TARGET, 10.0)["meets_target"]
    one_slow = ok.assign(ttft_ms=[100.0] * 19 + [1001.0])
    s = stats.run_summary(one_slow, TARGET, 10.0)
    assert s["attainment"] == 0.95 and not s["meets_target"]


def test_service_target_rejects_nonsense() -> None:
    with pytest.raises(UserError):
        stats.ServiceTarget(ttft_ms=0)
    with pytest.raises(UserError):
        stats.ServiceTarget(attainment=1.5)
    assert TARGET.describe() == "TTFT ≤ 1000 ms and TPOT ≤ 100 ms for 99 % of requests"


# --------------------------------------------------------------------------- the highest rate


def _capacity(limit: float):
    calls: list[float] = []

    def passes(rate: float) -> bool:
        calls.append(rate)
        return rate <= limit

    return passes, calls


def test_search_doubles_then_bisects() -> None:
    passes, calls = _capacity(2.6)
    s = stats.search_highest_rate(passes, start=1.0, max_probes=8, tolerance=0.25)
    # 1 ok, 2 ok, 4 fails; bisect 3 (fails), 2.5 (ok): 2.5..3 is within 25 % of 2.5
    assert calls == [1.0, 2.0, 4.0, 3.0, 2.5]
    assert s.highest_passing == 2.5 and s.lowest_failing == 3.0 and s.stopped == "bracketed within 25 %"


def test_search_halves_when_the_start_fails() -> None:
    passes, calls = _capacity(0.3)
    s = stats.search_highest_rate(passes, start=1.0, max_probes=8, tolerance=0.25)
    assert calls[:3] == [1.0, 0.5, 0.25] and s.highest_passing is not None and s.highest_passing <= 0.3
    assert s.lowest_failing is not None and s.lowest_failing - s.highest_passing <= 0.25 * s.highest_passing


def test_search_is_bounded_by_its_probe_budget() -> None:
    passes, calls = _capacity(1000.0)
    s = stats.search_highest_rate(passes, start=1.0, max_probes=4)
    assert calls == [1.0, 2.0, 4.0, 8.0] and s.highest_passing == 8.0 and s.lowest_failing is None
    assert s.stopped == "probe budget (4) spent"  # so 8 req/s is a lower bound, and it says so


def test_search_stops_when_nothing_passes() -> None:
    passes, calls = _capacity(0.0)
    s = stats.search_highest_rate(passes, start=0.2, max_probes=10, min_rate=0.05)
    assert calls == [0.2, 0.1, 0.05] and s.highest_passing is None and "misses the target" in s.stopped


# --------------------------------------------------------------------------- prompt cache and structured output


def _cache_table(cold: list[float]) -> pd.DataFrame:
    lengths = [64, 512, 2048][: len(cold)]
    return pd.DataFrame(
        {
            "prompt tokens": lengths,
            "TTFT, no cache (ms)": cold,
            "TTFT, prefix cached (ms)": [50.0] * len(cold),
            "tokens processed, cached": [14] * len(cold),
            "prompt tok/s, no cache": [500.0] * len(cold),
            "TTFT saved by the cache (%)": [100 * (1 - 50 / c) for c in cold],
        },
        index=pd.Index(lengths, name="prefix tokens"),
    )


def test_prompt_cache_reading_says_where_the_prompt_dominates() -> None:
    # a 32-token answer at 10 ms per token: 310 ms after the first token
    text = prompt_cache.prompt_cache_reading(_cache_table([100.0, 400.0, 2000.0]), tpot_ms=10.0, max_tokens=32)
    assert "from 512 prompt tokens up (400 ms there)" in text and "about 310 ms" in text
    assert "falls from 2000 ms to 50 ms (98 % less)" in text and "only the 14 tokens" in text
    never = prompt_cache.prompt_cache_reading(_cache_table([100.0, 200.0, 300.0]), tpot_ms=10.0, max_tokens=32)
    assert never.startswith("At every prompt length measured")
    assert "did not reuse" not in text
    # a slot that processed the whole prompt again (e.g. a sliding-window model at short prefixes)
    missed = _cache_table([100.0, 400.0, 2000.0])
    missed.loc[64, "tokens processed, cached"] = 64
    assert "At 64 prefix tokens the server did not reuse its cache" in prompt_cache.prompt_cache_reading(
        missed, tpot_ms=10.0, max_tokens=32
    )


def test_prompt_lengths_are_checked() -> None:
    assert prompt_cache.check_lengths([512, 64, 64]) == [64, 512]
    for bad in ([], [0], [1.5], [-64], "[64, 128]"):
        with pytest.raises(UserError, match="PROMPT_LENGTHS"):
            prompt_cache.check_lengths(bad)


def test_failure_causes_are_exclusive_and_complete() -> None:
    df = pd.DataFrame(
        [
            ("json_grammar", "length", False, False, False),  # cut off mid-object
            ("json_grammar", "stop", True, False, False),  # ended, JSON, wrong shape
            ("unconstrained", "stop", False, False, False),  # prose
            ("json_schema", "stop", True, True, True),
            ("json_schema", "stop", True, True, False),
        ],
        columns=["mode", "finish_reason", "parses", "valid", "time_correct"],
    ).assign(completion_tokens=10)
    t = failure_table(df)
    assert (t[list(CAUSES)].sum(axis=1) == t["requests"]).all()
    assert t.loc["json_grammar", "cut off at max_tokens"] == 1
    assert t.loc["json_grammar", "ended, JSON outside the schema"] == 1
    assert t.loc["unconstrained", "ended, not JSON"] == 1
    assert t.loc["json_schema", "correct"] == 1 and t.loc["json_schema", "valid, wrong time"] == 1
    text = structured_reading(df)
    assert "**json grammar**: 0 of 2 valid; the rest 1 cut off at max_tokens, 1 ended, JSON outside the schema." in text
    assert "**json schema**: 2 of 2 valid; 1 of them with the right time." in text


# --------------------------------------------------------------------------- readings of the open loop


def _summary(sent: int, attainment: float, ttft_p99: float, tpot_p99: float = 40.0) -> dict:
    return {
        "sent": sent,
        "failed": 0,
        "achieved_rps": 1.0,
        "output_tokens_per_s": 32.0,
        "ttft_p50_ms": ttft_p99 / 2,
        "ttft_p90_ms": ttft_p99 * 0.9,
        "ttft_p99_ms": ttft_p99,
        "tpot_p50_ms": tpot_p99 / 2,
        "tpot_p99_ms": tpot_p99,
        "itl_p99_ms": tpot_p99,
        "met": round(attainment * sent),
        "attainment": attainment,
        "goodput_rps": attainment,
        "meets_target": attainment >= 0.99,
    }


def test_rate_reading_names_the_highest_rate_and_the_bracket() -> None:
    from localllms.serve.capacity import rate_reading
    from localllms.serve.loadgen import Probe, RateSearchResult

    search = stats.RateSearch(probes=[(1.0, True), (2.0, True), (4.0, False), (3.0, False), (2.5, True)])
    search.stopped = "bracketed within 25 %"
    ttft = {1.0: 300.0, 2.0: 500.0, 4.0: 5000.0, 3.0: 1500.0, 2.5: 800.0}
    probes = [Probe(r, [], 10.0, _summary(20, 1.0 if ok else 0.6, ttft[r])) for r, ok in search.probes]
    searched = RateSearchResult(probes, search, TARGET, "llama-server ...", 4, [])
    table = searched.table()
    assert list(table.index) == [1.0, 2.0, 2.5, 3.0, 4.0]  # sorted by rate
    assert table.loc[3.0, "met target"] == 12 and table.loc[3.0, "attainment (90 % interval)"] == "60 % (39–78 %)"
    assert list(table["meets target"]) == [True, True, True, False, False]  # the search's own verdicts
    text = rate_reading(searched)
    assert (
        "was **2.5 requests/s** on 4 slots: 20 of 20 requests (100 %, 90 % interval 86–100 %) within the bounds, "
        "TTFT p99 800 ms" in text
    )
    assert "At 3 requests/s only 12 of 20 requests (60 %, 90 % interval 39–78 %) met it (TTFT p99 1500 ms" in text
    assert "probed 5 rates and stopped because it had bracketed the answer within 25 %" in text
    # the passing rate's interval reaches below 99 %: the page says the 20 requests do not show more
    assert "Its 90 % interval reaches down to 86 %, below the target's 99 %: 20 requests show the target met" in text


def test_the_plural_follows_the_rate() -> None:
    from localllms.serve.capacity import rate_text

    assert rate_text(1.0) == "1 request/s" and rate_text(0.75) == "0.75 requests/s" and rate_text(2) == "2 requests/s"


def _options_table(rows: dict, requests: int = 20) -> pd.DataFrame:
    columns = ["slots (-np)", "continuous batching", "goodput (req/s)", "met target", "TTFT p90 (ms)", "TPOT p50 (ms)"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).assign(requests=requests)


def test_options_reading_separates_only_by_the_interval() -> None:
    from localllms.serve.options_reading import best_option, options_reading

    table = _options_table(
        {
            "1 slot": (1, True, 0.40, 8, 3000.0, 10.0),  # 8 of 20: [22, 60] %, below 4 and 8 slots
            "4 slots": (4, True, 0.90, 18, 700.0, 25.0),  # [72, 98] %
            "8 slots": (8, True, 0.90, 18, 650.0, 40.0),
            "4 slots, no continuous batching": (4, False, 0.50, 10, 2500.0, 20.0),  # [31, 69] %: overlaps 4 slots? no
        }
    )
    assert best_option(table) == "8 slots"  # equal goodput and count: the lower TTFT p90 wins
    text = options_reading(table, 1.0)
    assert text.startswith(
        "At 1 request/s, **8 slots** had the highest goodput: 0.90 requests/s, 18 of 20 requests (90 %, 90 % "
        "interval 72–98 %) within the target"
    )
    assert (
        "It is not separated from *4 slots*: their 90 % intervals overlap its own (*4 slots* 18 of 20, 72–98 %)" in text
    )
    assert (
        "It met the target more often than *1 slot* and *4 slots, no continuous batching*, whose intervals lie below "
        "its own (*1 slot* 8 of 20, 22–61 %; *4 slots, no continuous batching* 10 of 20, 30–70 %)." in text
    )
    assert "More slots won because with one slot a request waits" in text and "TPOT p50 40.0 against 10.0 ms" in text
    assert (
        "Turning continuous batching off (*4 slots, no continuous batching*) met the target less often than the same "
        "slots with it: 10 of 20 requests within the target against 18 of 20 with it (90 % intervals 30–70 % and "
        "72–98 %; 0.50 against 0.90 requests/s of goodput; TTFT p90 2500 against 700 ms)." in text
    )
    # one request apart is never separated: no cause claimed, no difference from continuous batching
    close = _options_table(
        {
            "1 slot": (1, True, 0.85, 17, 900.0, 10.0),
            "4 slots": (4, True, 0.90, 18, 700.0, 25.0),
            "4 slots, no continuous batching": (4, False, 0.85, 17, 800.0, 20.0),
        }
    )
    tied = options_reading(close, 0.75)
    assert tied.startswith("At 0.75 requests/s, **4 slots**")
    assert "More slots won" not in tied and "met the target more often" not in tied
    assert "made no difference these runs can show: 17 of 20 requests within the target against 18 of 20" in tied
    assert "(90 % intervals 66–96 % and 72–98 %, which overlap; 0.85 against 0.90 requests/s" in tied
    nothing = table.assign(**{"goodput (req/s)": 0.0, "met target": 0})
    assert options_reading(nothing, 2.0).startswith("At 2 requests/s no configuration met the target for any of its 20")


def test_percentile_position_and_allowed_misses() -> None:
    # linear interpolation: p99 of n values sits at 0.99 * (n - 1) in the sorted values
    assert stats.percentile_position(99, 30) == "between the second largest and the largest"
    assert stats.percentile_position(99, 101) == "the second largest"
    assert stats.percentile_position(50, 3) == "the second largest"
    assert stats.percentile_position(99, 0) == "undefined (no values)"
    assert stats.allowed_misses(12, 0.99) == 0
    assert stats.allowed_misses(100, 0.99) == 1
    assert stats.allowed_misses(20, 0.9) == 2


def test_latency_reading_states_what_the_percentiles_rest_on() -> None:
    records = pd.DataFrame(
        {
            "warmup": [False] * 3,
            "ok": [True] * 3,
            "ttft_ms": [100.0, 200.0, 300.0],
            "tpot_ms": [10.0, 11.0, 12.0],
            "e2e_ms": [400.0, 500.0, 600.0],
            "itl_ms": [[10.0, 10.0], [11.0, 11.0], [12.0, 12.0]],
            "prompt_tokens": [25, 80, 250],
        }
    )
    warm = pd.DataFrame({"warmup": [True, True], "ok": [True, True], "ttft_ms": [1.0, 1.0], "itl_ms": [[], []]})
    failed = pd.DataFrame({"warmup": [False], "ok": [False], "ttft_ms": [None], "itl_ms": [[]]})
    everything = pd.concat([warm, records, failed], ignore_index=True)
    table = stats.latency_table(everything[~everything["warmup"]])
    text = stats.latency_reading(everything, table, requested=5, budget_s=300)
    assert text.startswith(
        "The table rests on 3 measured requests, after 2 warm-up requests left out; 4 of the 5 asked for were "
        "sent before the time budget of 300 s ended the run; 1 failed and are not in the table."
    ), text
    assert "Their prompts were 25 to 250 tokens long (median 80)." in text
    assert "the p99 of TTFT lies between the second largest and the largest of them" in text
    assert "rests on 6 gaps." in text


def test_rate_reading_states_the_passing_rule() -> None:
    from localllms.serve.capacity import rate_reading
    from localllms.serve.loadgen import Probe, RateSearchResult

    search = stats.RateSearch(probes=[(1.0, True), (2.0, False)])
    search.stopped = "bracketed within 25 %"
    probes = [Probe(1.0, [], 10.0, _summary(12, 1.0, 300.0)), Probe(2.0, [], 10.0, _summary(12, 0.5, 3000.0))]
    text = rate_reading(RateSearchResult(probes, search, TARGET, "llama-server ...", 4, []))
    assert "at least 99 % of them met the bounds: that allows no miss at all, so a single slow request fails" in text
    target = stats.ServiceTarget(1000, 100, 0.9)
    probes = [Probe(1.0, [], 10.0, _summary(20, 0.95, 300.0)), Probe(2.0, [], 10.0, _summary(20, 0.5, 3000.0))]
    text = rate_reading(RateSearchResult(probes, search, target, "llama-server ...", 4, []))
    assert "when all its 20 requests were sent and at least 90 % of them met the bounds: 2 may miss" in text
    assert "a single slow request cannot decide a probe" in text
    none = stats.RateSearch(probes=[(1.0, False), (0.5, False)])
    none.stopped = "even 0.5 requests/s misses the target"
    failing = [Probe(1.0, [], 10.0, _summary(12, 0.0, 9000.0)), Probe(0.5, [], 10.0, _summary(12, 0.0, 5000.0))]
    text = rate_reading(RateSearchResult(failing, none, TARGET, "llama-server ...", 4, []))
    assert text.startswith("No rate probed met the target (TTFT ≤ 1000 ms and TPOT ≤ 100 ms for 99 % of requests). ")
    assert "At the lowest rate probed, 0.5 requests/s, 0 of 12 requests (0 %, 90 % interval 0–22 %) met it" in text


def test_passing_rule_needs_every_request_and_the_share() -> None:
    target = stats.ServiceTarget(1000, 100, 0.9)
    assert target.met_by(18, 20, 20) and not target.met_by(17, 20, 20)  # 90 % of 20 is 18
    assert not target.met_by(15, 15, 20)  # every request met, but the run sent only 15 of 20
    assert not target.met_by(0, 0)
    assert stats.ServiceTarget(1000, 100, 0.99).met_by(20, 20) and not stats.ServiceTarget(1000, 100, 0.99).met_by(
        19, 20
    )


def test_serving_notebook_writes_only_under_build() -> None:
    """Its screenshot goes to _build/images (``make record`` copies it into book/images), never to a tracked file."""
    import json

    from localllms.paths import PROJECT_ROOT

    nb = json.loads((PROJECT_ROOT / "notebooks" / "serving.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert 'chapter.screenshot(OUTPUT_IMAGES_DIR / "llama-server-ui.png")' in code
    assert '"book"' not in code and "book/images" not in code


def test_the_chapter_checks_its_parameters_before_anything_runs(threads: int) -> None:
    from localllms.serve.chapter import Chapter, OpenLoop

    with pytest.raises(UserError, match="REQUESTS_PER_RATE must be a whole number"):
        OpenLoop(1.0, 0, 6, 0.4, 4)
    with pytest.raises(UserError, match="RATE_TOLERANCE must be positive"):
        OpenLoop(1.0, 20, 6, 0, 4)
    with pytest.raises(UserError, match="PROMPT_LENGTHS"):  # before the model is looked for or a build loaded
        Chapter.setup("no-such-model", threads, prompt_lengths=[0])
