"""Try before you download, without a build or a model: the synthetic spec's grammar, the check of the
method read from made-up rounds, the roofline readings, and the comparing page keeping synthetic rows
apart from real-weight rows with their quality columns empty."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from localllms import compare, rounds, sizes, sweep, sweep_rules
from localllms.errors import UserError
from localllms.models import ModelInfo, ResolvedModel, parse_spec, resolve
from localllms.sizes import speed as size_speed
from localllms.sizes import speed_only
from localllms.sizes.plan import SizeFile

# --------------------------------------------------------------------------- the spec


def test_a_synthetic_spec_names_an_architecture_and_a_type() -> None:
    s = parse_spec("synth:qwen2.5-7b:q4_k_m")
    assert (s.kind, s.text, s.arch, s.quant) == ("synth", "synth:qwen2.5-7b:Q4_K_M", "qwen2.5-7b", "Q4_K_M")
    # a catalog name is one of the row's names; the spec is spelled one way wherever it is stored
    assert parse_spec("synth:smollm2-135m-instruct:Q8_0").text == "synth:smollm2-135m:Q8_0"
    typeless = parse_spec("synth:llama-3.2-1b")  # the sweep's form: its --quants give the types
    assert (typeless.text, typeless.quant) == ("synth:llama-3.2-1b", "")
    with pytest.raises(UserError, match="names no type; write synth:llama-3.2-1b:TYPE"):
        resolve("synth:llama-3.2-1b")  # a file needs its type (refused before anything is written)
    with pytest.raises(UserError, match="No published architecture is called 'llama-9'"):
        parse_spec("synth:llama-9:Q4_K_M")
    with pytest.raises(UserError, match="not a synthetic spec; write it as synth:NAME:TYPE"):
        parse_spec("synth:a:b:c")


def test_the_sweep_accepts_synthetic_specs_and_refuses_bad_ones_before_a_cluster() -> None:
    assert sweep_rules.spec_problem("synth:qwen2.5-7b:Q4_K_M") is None
    assert sweep_rules.spec_problem("synth:qwen2.5-7b") is None
    assert "No published architecture" in sweep_rules.spec_problem("synth:qwen-9b")
    assert speed_only.is_synthetic_spec("synth:qwen2.5-7b")
    assert not speed_only.is_synthetic_spec("gemma-3-270m")


def test_the_chapter_sizes_are_the_rows_will_it_fit_measures() -> None:
    from localllms.selection import fit

    assert set(fit.MEASURED_SYNTHETIC) <= set(sizes.SIZES)  # one declaration of what is run
    assert set(sizes.DEPTH_SIZES) <= set(sizes.SIZES)
    assert sizes.canonical(sizes.SIZES) == list(sizes.SIZES)


# --------------------------------------------------------------------------- the check, on made-up rounds


def _rounds(values: dict[str, dict[str, list[float]]]) -> rounds.Rounds:
    rows = []
    settings = [rounds.Setting(label, "", label, 2) for label in values]
    for label, tests in values.items():
        for test, xs in tests.items():
            for r, x in enumerate(xs):
                rows.append({"round": r, "position": 0, "label": label, "test": test, "value": x, "measured_at": ""})
    return rounds.Rounds(settings, 7, pd.DataFrame(rows))


DRIFT = [1.0, 1.3, 0.9, 1.25, 1.05, 0.95, 1.2, 1.1]  # the machine's state, round by round: 8 rounds


def _pair(pp: list[float], tg: list[float]) -> rounds.Rounds:
    """A real file drifting with the machine, and a synthetic one at ``pp`` / ``tg`` times its speed."""
    real = {"pp": [600 * d for d in DRIFT], "tg": [100 * d for d in DRIFT]}
    synthetic = {"pp": [600 * d * e for d, e in zip(DRIFT, pp, strict=True)],
                 "tg": [100 * d * e for d, e in zip(DRIFT, tg, strict=True)]}  # fmt: skip
    return _rounds({"a: real": real, "a: synthetic": synthetic})


def test_a_synthetic_file_that_runs_like_the_real_one_agrees_despite_the_drift() -> None:
    noise = [1.01, 0.98, 1.02, 0.99, 1.0, 1.03, 0.97, 1.0]
    rows = sizes.speed_agreement(_pair(noise, noise), [("a", "a: synthetic", "a: real")])
    assert list(rows["test"]) == ["pp", "tg"] and rows["verdict"].tolist() == [sizes.AGREES] * 2
    pp = rows.iloc[0]["ratio"]
    # the drift (up to 30 %) cancels within rounds; two comparisons at 90 % together need 95 % each,
    # which 8 rounds give only from the lowest to the highest (99.2 %; the second ones cover 93.0 %)
    assert (pp.lo, pp.hi) == (pytest.approx(0.97), pytest.approx(1.03)) and pp.coverage >= 0.95


def test_a_synthetic_file_slower_in_every_round_by_more_than_the_margin_differs() -> None:
    slow = [0.8, 0.82, 0.79, 0.85, 0.8, 0.81, 0.83, 0.78]
    rows = sizes.speed_agreement(_pair([1.0] * 8, slow), [("a", "a: synthetic", "a: real")]).set_index("test")
    assert rows.loc["pp", "verdict"] == sizes.AGREES
    assert rows.loc["tg", "verdict"] == sizes.DIFFERS and rows.loc["tg", "ratio"].hi < 0.9


def test_a_difference_inside_the_margin_is_agreement_and_a_wide_interval_decides_nothing() -> None:
    slightly = [0.96, 0.95, 0.97, 0.96, 0.95, 0.96, 0.97, 0.96]  # 4 % slower in every round: inside ±10 %
    noisy = [1.0, 0.85, 1.1, 0.95, 1.02, 0.8, 1.2, 0.98]  # centred on 1, but spread over the margin
    rows = sizes.speed_agreement(_pair(slightly, noisy), [("a", "a: synthetic", "a: real")]).set_index("test")
    assert rows.loc["pp", "ratio"].hi < 1 and rows.loc["pp", "verdict"] == sizes.AGREES
    assert rows.loc["tg", "verdict"] == sizes.UNDECIDED
    # a wider margin decides it
    assert sizes.verdict(rows.loc["tg", "ratio"], margin=0.25) == sizes.AGREES


def test_ten_comparisons_need_intervals_that_hold_together() -> None:
    # the same eight rounds: alone at 90 %, an interval from the second lowest to the second highest
    # (93.0 %); as one of ten comparisons (99 % each), from the lowest to the highest
    r = _pair([1.0, 0.93, 1.02, 0.99, 1.0, 1.01, 1.08, 0.98], [1.0] * 8)
    one = r.ratio("a: synthetic", "a: real", "pp")
    rows = sizes.speed_agreement(r, [("a", "a: synthetic", "a: real")] * 5)  # ten comparisons
    ten = rows[rows["test"] == "pp"].iloc[0]["ratio"]
    assert (one.lo, one.hi) == (pytest.approx(0.98), pytest.approx(1.02))
    assert (ten.lo, ten.hi) == (pytest.approx(0.93), pytest.approx(1.08)) and ten.coverage >= 0.99


def test_too_few_rounds_give_no_interval_and_no_verdict() -> None:
    r = _rounds({"a: real": {"tg": [100.0, 90.0]}, "a: synthetic": {"tg": [100.0, 90.0]}})
    assert sizes.verdict(r.ratio("a: synthetic", "a: real", "tg")) == sizes.NO_INTERVAL


def _validation(tg: list[float], synthetic_peak_mib: int = 250) -> sizes.Validation:
    """A check of one pair on made-up rounds: prompt equal in every round, generation at ``tg``."""
    from localllms.selection.measure import MemoryMeasurement

    f = _file("synth:smollm2-135m:Q4_K_M", 100_000_000).resolved
    pair = sizes.Pair("smollm2-135m-instruct", "smollm2-135m", "Q4_K_M", f, f)
    r = _pair([1.0] * 8, tg)
    r = _rounds({pair.real_label: {t: r.values("a: real", t) for t in ("pp", "tg")},
                 pair.synthetic_label: {t: r.values("a: synthetic", t) for t in ("pp", "tg")}})  # fmt: skip
    mib = 2**20
    memory = {label: MemoryMeasurement("m", 4096, 1, True, peak * mib, 0, 0, 0)
              for label, peak in ((pair.real_label, 250), (pair.synthetic_label, synthetic_peak_mib))}  # fmt: skip
    return sizes.Validation([pair], r, memory, 4096, sizes.RSS_TOLERANCE, 512, 128)


def test_the_checks_verdict_and_sentence_follow_its_numbers() -> None:
    same = _validation([1.01, 0.98, 1.02, 0.99, 1.0, 1.03, 0.97, 1.0])
    assert same.outcome == sizes.AGREES and same.holds
    text = sizes.validation_sentence(same)
    assert text.startswith("The method holds on both catalog models on this run: all 2 speed ratios")
    assert "together ×0.97 to ×1.03" in text and "1 of 1 synthetic files within 2 %" in text
    assert "covers its median with 99.2 %, so all 2 hold together with at least 98.4 %" in same.describe()

    slow = _validation([0.8, 0.82, 0.79, 0.85, 0.8, 0.81, 0.83, 0.78])
    assert slow.outcome == sizes.DIFFERS and not slow.holds
    assert "1 of 2 speed ratios lies wholly outside 1 ± 10 % (smollm2-135m Q4_K_M generation ×0.8" in (
        sizes.validation_sentence(slow)
    )
    table = sizes.validation_table(slow)
    assert (
        table.iloc[0]["generation: within ±10 %"] == sizes.DIFFERS
        and table.iloc[0]["prompt: within ±10 %"] == sizes.AGREES
    )

    heavy = _validation([1.0] * 8, synthetic_peak_mib=260)  # speeds equal, memory 4 % over
    assert heavy.outcome == sizes.DIFFERS and "1 peak memory differs by more than 2 %" in sizes.validation_sentence(
        heavy
    )

    noisy = _validation([1.0, 0.85, 1.1, 0.95, 1.02, 0.8, 1.2, 0.98])
    assert noisy.outcome == sizes.UNDECIDED
    text = sizes.validation_sentence(noisy)
    assert text.startswith("Not decided on this run: 1 of 2 speed ratios lies inside 1 ± 10 % with its interval")
    assert "together ×0.80 to ×1.20" in text


def _validation_of(tg: dict[str, list[float]]) -> sizes.Validation:
    """A check of several pairs (one per type named) on made-up rounds: prompt equal, generation at
    each pair's ``tg`` ratios, memory equal."""
    from localllms.selection.measure import MemoryMeasurement

    f = _file("synth:smollm2-135m:Q4_K_M", 100_000_000).resolved
    pairs = [sizes.Pair("smollm2-135m-instruct", "smollm2-135m", q, f, f) for q in tg]
    values: dict[str, dict[str, list[float]]] = {}
    for p, ratios in zip(pairs, tg.values(), strict=True):
        values[p.real_label] = {"pp": [100.0] * len(ratios), "tg": [100.0] * len(ratios)}
        values[p.synthetic_label] = {"pp": [100.0] * len(ratios), "tg": [100.0 * x for x in ratios]}
    memory = {label: MemoryMeasurement("m", 4096, 1, True, 250 * 2**20, 0, 0, 0) for label in values}
    return sizes.Validation(pairs, _rounds(values), memory, 4096, sizes.RSS_TOLERANCE, 512, 128)


def test_pairs_too_noisy_alone_are_decided_together() -> None:
    # four pairs, each moving ±15 % from round to round around 1: none decided alone (ten
    # comparisons: the lowest to the highest of eight rounds), all 32 ratios together inside ±10 %
    noisy = [1.0, 0.85, 1.15, 0.97, 1.03, 0.9, 1.1, 1.0]
    check = _validation_of({q: noisy[i:] + noisy[:i] for i, q in enumerate(("A", "B", "C", "D"))})
    assert sizes.n_comparisons(4, False) == 10 and len(check.speed_rows) == 10
    tg = check.speed_rows[check.speed_rows["test"] == "tg"].set_index("file")["verdict"]
    assert (tg.drop(sizes.POOLED) == sizes.UNDECIDED).all() and tg[sizes.POOLED] == sizes.AGREES
    assert check.outcome == sizes.UNDECIDED and check.holds_pooled and not check.holds
    text = sizes.validation_sentence(check)
    assert text.startswith("Pair by pair, not decided on this run: 4 of 8 speed ratios lie inside")
    assert "All 4 pairs together" in text and "So on average over the pairs the claim is decided" in text
    assert sizes.POOLED in sizes.validation_table(check).index.get_level_values("model")

    # the same noise around 0.8: every pair alone still crosses the margin, together they differ
    slow = _validation_of({q: [0.8 * x for x in noisy[i:] + noisy[:i]] for i, q in enumerate(("A", "B", "C", "D"))})
    assert slow.outcome == sizes.DIFFERS and not slow.holds_pooled
    text = sizes.validation_sentence(slow)
    assert "prompt inside 1 ± 10 %, generation wholly outside 1 ± 10 %" in text
    assert (
        "Pooled generation speed is separated from 1: the synthetic files are slower than the real ones by about 20 %"
        in text
    )
    assert "Pooled prompt speed" not in text


def test_round_spread_is_the_deviation_of_the_log_ratio_median_over_pairs() -> None:
    a, b, c = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.0], [1.0, 1.2, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0], [1.0] * 8
    check = _validation_of({"A": a, "B": b, "C": c})
    spread = sizes.round_spread(check.speed, check.labels, "tg")
    assert spread == pytest.approx(np.std(np.log(a), ddof=1))  # the middle of the three pairs' deviations
    assert sizes.round_spread(check.speed, check.labels, "pp") == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_rounds": 0}, "VALIDATE_ROUNDS must be a whole number of at least 1, or None"),
        ({"n_rounds": 2.5}, "VALIDATE_ROUNDS must be a whole number"),
        ({"margin": 10}, "VALIDATE_MARGIN must be a fraction between 0 and 1"),
        ({"level": 90}, "VALIDATE_LEVEL must be a coverage between 0 and 1"),
        ({"depth": -1}, "VALIDATE_DEPTH must be a whole number of tokens"),
    ],
)
def test_bad_check_parameters_are_one_sentence_before_any_file_is_made(kwargs: dict, message: str) -> None:
    args = {"n_rounds": None, "margin": 0.1, "level": 0.9, "depth": 0} | kwargs
    with pytest.raises(UserError, match=message):  # no build is needed: nothing is made or run first
        sizes.validate(["smollm2-135m-instruct"], ["Q8_0"], 2, args.pop("n_rounds"), 512, 128, 4096, None, **args)


def test_peak_memory_agrees_within_two_percent() -> None:
    mib = 2**20
    assert sizes.rss_agreement(250 * mib, 254 * mib) == (pytest.approx(0.016), True)
    diff, ok = sizes.rss_agreement(250 * mib, 256 * mib)
    assert diff == pytest.approx(0.024) and not ok
    assert sizes.rss_agreement(250 * mib, 246 * mib)[1]  # below counts the same as above
    with pytest.raises(ValueError):
        sizes.rss_agreement(0, 1)


# --------------------------------------------------------------------------- the roofline, on made-up rounds


def _file(spec: str, bytes_per_token: int) -> SizeFile:
    parsed = parse_spec(spec)
    info = ModelInfo(parsed.arch, "llama", 10**9, 16, 4096, 2048, 32, 8, 128256, parsed.quant, 4.9, bytes_per_token,
                     False, "")  # fmt: skip
    resolved = ResolvedModel(parsed.text, Path("/nonexistent.gguf"), "made up", parsed.arch, info)
    return SizeFile(parsed.text, parsed.arch, parsed.arch, parsed.quant, resolved, 10**9, bytes_per_token,
                    bytes_per_token, False, 0.0)  # fmt: skip


def _sizes(small_tg: list[float], big_tg: list[float], bw: list[float]) -> sizes.Sizes:
    small, big = _file("synth:smollm2-135m:Q4_K_M", 100_000_000), _file("synth:qwen2.5-7b:Q4_K_M", 4_500_000_000)
    r = _rounds({small.label: {"tg": small_tg, "pp": [500.0] * 5}, big.label: {"tg": big_tg, "pp": [10.0] * 5},
                 sizes.BANDWIDTH: {"bw": bw}})  # fmt: skip
    return sizes.Sizes([small, big], r, 2, 64, 16, 2048, [])


def test_the_share_of_the_roofline_is_taken_round_by_round() -> None:
    assert sizes.shares([100.0, 50.0], [20.0, 10.0], 100_000_000) == [0.5, 0.5]
    with pytest.raises(ValueError, match="same rounds"):
        sizes.shares([1.0], [1.0, 2.0], 1)


def test_a_larger_file_nearer_the_roofline_in_every_round_reads_as_higher() -> None:
    bw = [20.0 * d for d in DRIFT]
    # the small file at 50 % of the roofline, the large one at 80 %, both following the machine's state
    s = _sizes([0.5 * b * 1e9 / 1e8 for b in bw], [0.8 * b * 1e9 / 4.5e9 for b in bw], bw)
    big = s.files[1]
    assert size_speed.roofline_share(s, big).median == pytest.approx(0.8)
    assert sizes.share_ratio(s, big, s.files[0]).lo == pytest.approx(1.6)
    text = sizes.roofline_sentence(s)
    assert "smollm2-135m 50 % (50–50 %)" in text and "qwen2.5-7b 80 % (80–80 %)" in text
    assert "share is higher than smollm2-135m's (×1.60, 1.60–1.60 within rounds)" in text
    assert "moves toward the memory roofline" in text


def test_shares_that_overlap_in_the_rounds_are_not_separated() -> None:
    bw = [20.0] * 5
    small = [0.5 * 20e9 / 1e8 * f for f in (1.0, 1.1, 0.9, 1.05, 0.95)]
    big = [0.52 * 20e9 / 4.5e9 * f for f in (0.9, 1.0, 1.1, 0.95, 1.05)]
    text = sizes.roofline_sentence(_sizes(small, big, bw))
    assert "not separated on this machine" in text and "do not show generation moving toward" in text


def test_a_middle_size_the_rounds_do_not_separate_is_named() -> None:
    # 135M at 30 %, 1B at 65 % and 7B at 63 % of the roofline (as on 2026-12-07): the whole span is
    # higher, the last step is not, and the sentence says both
    bw = [20.0 * d for d in DRIFT[:5]]
    small, mid, big = (_file("synth:smollm2-135m:Q4_K_M", 100_000_000), _file("synth:llama-3.2-1b:Q4_K_M", 800_000_000),
                       _file("synth:qwen2.5-7b:Q4_K_M", 4_500_000_000))  # fmt: skip

    def tg(share: float, f: SizeFile, noise: list[float]) -> list[float]:
        return [share * b * 1e9 / f.bytes_per_token * e for b, e in zip(bw, noise, strict=True)]

    r = _rounds({small.label: {"tg": tg(0.30, small, [1.0] * 5), "pp": [500.0] * 5},
                 mid.label: {"tg": tg(0.65, mid, [1.0, 1.1, 0.9, 1.05, 0.95]), "pp": [50.0] * 5},
                 big.label: {"tg": tg(0.63, big, [0.95, 1.05, 1.0, 1.1, 0.9]), "pp": [10.0] * 5},
                 sizes.BANDWIDTH: {"bw": bw}})  # fmt: skip
    text = sizes.roofline_sentence(sizes.Sizes([small, mid, big], r, 2, 64, 16, 2048, []))
    assert "qwen2.5-7b's share is higher than smollm2-135m's" in text
    assert "not at every step, though: from llama-3.2-1b to qwen2.5-7b" in text
    assert "not separated on this machine" in text.split("not at every step")[1]
    assert "from smollm2-135m to llama-3.2-1b" not in text  # that step is separated, so it is not named


# --------------------------------------------------------------------------- the comparing page and the skip rule


def _row(**over: object) -> dict:
    row = {
        "model": "m1", "quant": "Q4_K_M", "reference_label": "F16", "model_sha256": "aa", "cpu": "CPU",
        "llama_cpp_commit": "c", "build_key": "k", "cpu_features": "avx2", "threads": 2, "cores": 2, "n_prompts": 20,
        "min_prompt_length": 100, "max_prompt_length": 1000, "corpus": "wikipedia-leads-en", "rounds": 5,
        "n_prompt": 64, "n_gen": 16, "size_mib": 100.0, "bpw": 5.0, "bpb": 1.0, "ppl_ratio_pct": 1.0,
        "kld_mean": 0.01, "kld_p99": 0.1, "same_top_pct": 95.0, "pp_tps": 100.0, "pp_lo": 99.0, "pp_hi": 101.0,
        "tg_tps": 20.0, "tg_lo": 19.5, "tg_hi": 20.5, "tg_vs_ref": 1.2, "tg_vs_ref_lo": 1.1, "tg_vs_ref_hi": 1.3,
        "hostname": "h1", "host_study_slots": 1,
    }  # fmt: skip
    return row | over


def _synthetic(quant: str, size: float) -> dict:
    nan = float("nan")
    return _row(model="synth:qwen2.5-7b", quant=quant, reference_label="", model_sha256="synthetic-x", size_mib=size,
                bpw=4.9, bpb=nan, ppl_ratio_pct=nan, kld_mean=nan, kld_p99=nan, same_top_pct=nan, tg_vs_ref=nan,
                tg_vs_ref_lo=nan, tg_vs_ref_hi=nan, tg_tps=2.0, tg_lo=1.9, tg_hi=2.1, synthetic=True,
                corpus=speed_only.CORPUS)  # fmt: skip


def _store_rows() -> pd.DataFrame:
    real = [
        _row(model="small", quant="F16", reference_label="F16", size_mib=200.0, bpb=1.00),
        _row(model="small", quant="Q4_K_M", reference_label="F16", size_mib=80.0, bpb=1.05),
    ]
    # the synthetic rows are stored first and are the smallest and largest files: the page still puts them last
    return pd.DataFrame([_synthetic("Q4_K_M", 4465.0), _synthetic("Q2_K", 2900.0), *real])


def test_the_comparing_page_keeps_synthetic_rows_apart_with_quality_empty() -> None:
    df = compare.prepare(_store_rows(), ["small"])
    assert compare.synthetic_rows(df).tolist() == [False, False, True, True]  # real-weight rows first
    q = compare.quality_table(df)
    synth_name = "synth:qwen2.5-7b (synthetic weights: speed and memory only)"
    assert list(q.index.get_level_values(0)) == ["small", "small", synth_name, synth_name]
    for heading in ("Bits per byte", "PPL ratio - 1 (%)", "KLD mean", "KLD p99", "Same top (%)", "Pareto front"):
        assert q.loc[synth_name, heading].tolist() == ["", ""], heading  # empty, not a number
    assert q.loc[(synth_name, "Q4_K_M"), "Size (MiB)"] == 4465.0  # size is the file's: kept
    assert q.loc[("small", "Q4_K_M"), "Bits per byte"] == 1.05
    assert compare.pareto_front(df) == [("small", "Q4_K_M"), ("small", "F16")]  # never a synthetic file
    assert "synth" not in compare.reading(df) and "synth" not in compare.references(df)
    assert list(compare.pareto_table(df).index.get_level_values(0)) == ["small", "small"]
    speed = compare.speed_table(df)
    vs = [c for c in speed.columns if c.endswith("generation vs reference")][0]
    assert speed.loc[(synth_name, "Q2_K"), vs] == "—"  # no reference to compare with
    assert speed.index[-1][0] == synth_name
    alone = compare.synthetic_table(df)
    assert list(alone.index) == [(synth_name, "Q2_K"), (synth_name, "Q4_K_M")]
    assert "Bits per byte" not in alone.columns and not any(c.endswith("vs reference") for c in alone.columns)


def test_a_page_without_synthetic_rows_is_unchanged() -> None:
    rows = _store_rows()
    real = compare.prepare(rows[~compare.synthetic_rows(rows)].drop(columns="synthetic"), ["small"])
    q = compare.quality_table(real)
    assert q["Bits per byte"].dtype == float  # no empty strings mixed in
    assert compare.synthetic_table(real).empty


def test_a_synthetic_study_is_stored_once_it_has_its_speed() -> None:
    stored = _store_rows()
    key = {"model_sha256": "synthetic-x", "cpu": "CPU", "build_key": "k", "threads": 2}
    assert sweep.already_stored(stored, key, ["Q4_K_M", "Q2_K"])  # no bits per byte needed: speed only
    assert not sweep.already_stored(stored, key, ["Q4_K_M", "Q8_0"])
    no_speed = stored.assign(tg_tps=float("nan"))
    assert not sweep.already_stored(no_speed, key, ["Q4_K_M"])
    real_key = {"model_sha256": "aa", "cpu": "CPU"}
    assert not sweep.already_stored(stored.assign(bpb=float("nan")), real_key, ["F16"])  # real rows need quality


# --------------------------------------------------------------------------- "Will it fit?" with measured rows


def test_will_it_fit_shows_the_measured_peak_beside_the_estimate_where_a_row_was_run() -> None:
    from localllms.selection import fit, published

    rows = {hp.model: hp for hp in published.load_published()}
    chosen = [rows["Llama 3.2 1B Instruct"], rows["Qwen2.5-7B-Instruct"]]
    estimated = fit.fit_rows(chosen, ["Q4_K_M", "Q8_0"], [4096, 32768], [8, 16])
    measured = pd.DataFrame(
        [
            {"model": "Llama 3.2 1B Instruct", "quant": "Q4_K_M", "spec": "synth:llama-3.2-1b:Q4_K_M", "context": 4096,
             "file (GB)": 0.8, "estimate (GiB)": 1.0, "measured peak (GiB)": 0.96, "error (%)": 4.2},
            {"model": "Qwen2.5-7B-Instruct", "quant": "Q4_K_M", "spec": "synth:qwen2.5-7b:Q4_K_M", "context": 4096,
             "file (GB)": 4.7, "estimate (GiB)": 4.8, "measured peak (GiB)": 4.93, "error (%)": -2.6},
            {"model": "Qwen2.5-7B-Instruct", "quant": "Q4_K_M", "spec": "synth:qwen2.5-7b:Q4_K_M", "context": 8192,
             "file (GB)": 4.7, "estimate (GiB)": 5.0, "measured peak (GiB)": 5.1, "error (%)": -2.0},
        ]
    )  # fmt: skip
    plain = fit.will_it_fit(estimated, [8, 16])
    table = fit.will_it_fit(estimated, [8, 16], measured)
    assert "4,096: measured GiB" not in plain.columns
    cols = list(table.columns)
    assert cols.index("4,096: measured GiB") == cols.index("4,096: GiB") + 1  # beside the estimate
    assert not any(c.startswith("32,768: measured") for c in cols)  # no row was run there
    assert table.loc[("Llama 3.2 1B Instruct", "Q4_K_M"), "4,096: measured GiB"] == "1.0"
    assert table.loc[("Qwen2.5-7B-Instruct", "Q4_K_M"), "4,096: measured GiB"] == "4.9"
    assert table.loc[("Qwen2.5-7B-Instruct", "Q8_0"), "4,096: measured GiB"] == "–"
    assert table.drop(columns="4,096: measured GiB").equals(plain)  # otherwise the same table
    text = fit.synthetic_error_sentence(measured)
    assert "synthetic weights: speed and memory only" in text
    assert "between -2.6 % and +4.2 %" in text and "largest miss +4.2 % (Llama 3.2 1B Instruct Q4_K_M" in text


def test_a_share_above_the_roofline_is_read_as_caches_not_memory() -> None:
    bw = [20.0] * 5
    s = _sizes([1.3 * 20e9 / 1e8] * 5, [0.6 * 20e9 / 4.5e9] * 5, bw)  # the small file at 130 %
    text = sizes.roofline_sentence(s)
    assert "smollm2-135m 130 %" in text and "served from the processor's caches" in text
    assert "share is lower than smollm2-135m's" in text
