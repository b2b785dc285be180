"""The study's pure parts: parameters, llama-bench and llama-perplexity parsing, tables, the reading."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from localllms import llama_bench as bench
from localllms import metrics, study
from localllms.errors import UserError
from localllms.rounds import Rounds
from localllms.study.crosscheck import compare, parse_tool_output
from localllms.study.pipeline import speed_columns

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_prompts": 0}, "NUM_PROMPTS must be a whole number of at least 1"),
        ({"min_prompt_length": 500, "max_prompt_length": 400}, "MIN_PROMPT_LENGTH .500. must be below"),
        ({"quant_types": ()}, "QUANT_TYPES is empty"),
        ({"quant_types": ("q4_k_m", "Q4_K_M")}, "names a type twice"),
        ({"rounds": 0}, "ROUNDS must be"),
        ({"n_prompt": 0, "n_gen": 0}, "would measure nothing"),
        ({"corpus_source": "web"}, "CORPUS_SOURCE must be one of"),
        ({"threads": 0}, "THREADS must be"),
    ],
)
def test_bad_parameters_are_one_sentence(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        study.StudyConfig(**kwargs)


def test_default_config_and_slug() -> None:
    assert study.StudyConfig().is_default and study.StudyConfig(threads=7).is_default
    other = study.StudyConfig(model="gemma-3-270m")
    assert not other.is_default and other.slug().startswith("gemma-3-270m-")
    assert study.StudyConfig(quant_types=("q8_0",)).quant_types == ("Q8_0",)


def test_cli_rejects_bad_parameters_before_any_work() -> None:
    proc = subprocess.run([sys.executable, "-m", "localllms", "study", "--prompts", "0"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: NUM_PROMPTS must be a whole number of at least 1, not 0."


def test_llama_bench_json_parsing() -> None:
    rows = [
        {
            "n_prompt": 512,
            "n_gen": 0,
            "avg_ts": 650.5,
            "stddev_ts": 5.1,
            "samples_ts": [650.0, 651.0],
            "test_time": "t1",
        },
        {"n_prompt": 0, "n_gen": 128, "avg_ts": 118.4, "stddev_ts": 4.3, "samples_ts": [118.0], "test_time": "t2"},
    ]
    t = bench.parse_llama_bench(rows, "abc", 512, 128, 2, 2)
    assert (t.pp_tps, t.pp_sd, t.tg_tps, t.tg_sd) == (650.5, 5.1, 118.4, 4.3)
    assert t.pp_samples == [650.0, 651.0] and t.measured_at == "t2"
    # -p 0: llama-bench runs no prompt test, so those figures are NaN, not taken from the tg row
    only_tg = bench.parse_llama_bench(rows[1:], "abc", 0, 128, 2, 2)
    assert math.isnan(only_tg.pp_tps) and math.isnan(only_tg.pp_sd) and only_tg.pp_samples == []
    assert only_tg.tg_tps == 118.4 and only_tg.measured_at == "t2"


def test_llama_perplexity_output_is_parsed() -> None:
    text = (DATA / "llama-perplexity-kld.txt").read_text()
    values = parse_tool_output(text)
    assert set(values) == {m.name for m in metrics.CROSSCHECKED}
    assert all(math.isfinite(v) for v in values.values())
    assert 0 < values["kld_median"] < values["kld_mean"] < values["kld_p99"]
    with pytest.raises(UserError, match="has no 'Mean PPL"):
        parse_tool_output("no statistics here")


def test_compare_applies_each_metrics_tolerance() -> None:
    tool = {m.name: 1.0 for m in metrics.CROSSCHECKED}
    ppl_tol = metrics.BY_NAME["ppl_q"].tolerance[1]
    top_tol = metrics.BY_NAME["same_top_pct"].tolerance[1]
    ours = dict(tool, ppl_q=1.0 + ppl_tol / 2, same_top_pct=1.0 + 2 * top_tol)  # half a bound in, twice a bound out
    table = compare(ours, tool)
    assert bool(table.loc["ppl_q", "within"]) and not bool(table.loc["same_top_pct", "within"])
    assert table.loc["ppl_q", "difference"] == pytest.approx(ppl_tol / 2)
    assert table.drop(index=["same_top_pct"])["within"].all()


def _rounds(tg: dict[str, list[float]], pp: float = 600.0) -> Rounds:
    """Made-up rounds: each label's generation speed per round, prompt speed flat."""
    rows = []
    for label, values in tg.items():
        for r, v in enumerate(values):
            rows += [{"round": r, "position": 0, "label": label, "test": "tg", "value": v, "measured_at": "t"},
                     {"round": r, "position": 0, "label": label, "test": "pp", "value": pp + r, "measured_at": "t"}]  # fmt: skip
    return Rounds([], 1, pd.DataFrame(rows))


def _run(kld: dict[str, float], tg: dict[str, list[float]]) -> tuple[pd.DataFrame, Rounds]:
    """A study's rows for a reference and four variants, with chosen KLD and generation speeds per
    round (the reference at 100 tok/s, drifting with the machine like the others)."""
    sizes = {"Q2_K": 84.0, "Q4_K_M": 100.0, "Q5_K_M": 107.0, "Q6_K": 132.0}
    bpw = {"Q2_K": 5.1, "Q4_K_M": 6.2, "Q5_K_M": 6.6, "Q6_K": 8.1}
    drift = [1.0, 1.25, 0.9, 1.2, 1.05]
    speeds = _rounds({"REF": [100.0 * d for d in drift], **{q: [v * d for d in drift] for q, v in tg.items()}})
    rows = [{"quant": "REF", "size_mib": 258.0, "bpw": 16.0, "ppl_ratio_pct": 0.0, "kld_mean": 0.0, "kld_p99": 0.0,
             "same_top_pct": 100.0, **speed_columns(speeds, "REF", "REF")}]  # fmt: skip
    for q in sizes:
        rows.append({"quant": q, "size_mib": sizes[q], "bpw": bpw[q], "ppl_ratio_pct": 100 * kld[q],
                     "kld_mean": kld[q], "kld_p99": 10 * kld[q], "same_top_pct": 90.0,
                     **speed_columns(speeds, q, "REF")})  # fmt: skip
    df = pd.DataFrame(rows)
    df["reference_label"] = "REF"
    return df, speeds


def test_seed_comparison_quotes_the_data_file() -> None:
    seed = study.seed_table()
    assert {"F16", "Q2_K", "Q4_K_M", "Q6_K"} <= set(seed.index)
    df, _ = _run({"Q2_K": 0.5, "Q4_K_M": 0.07, "Q5_K_M": 0.09, "Q6_K": 0.015},
                 {"Q2_K": 190.0, "Q4_K_M": 150.0, "Q5_K_M": 130.0, "Q6_K": 140.0})  # fmt: skip
    table = study.seed_comparison(df)
    assert list(table.index) == ["Q2_K", "Q4_K_M", "Q6_K"]
    q2 = table.loc["Q2_K"]
    base = seed.loc["F16"]
    assert q2["Generation speed-up seed"] == round(seed.loc["Q2_K", "tg_tps"] / base["tg_tps"], 2)
    assert q2["Generation speed-up here"] == "×1.90 (1.90–1.90)" and q2["KLD here"] == 0.5
    assert q2["Size reduction (%) here"] == round(100 * (1 - 84 / 258), 1)


def test_reading_follows_the_numbers() -> None:
    seed = study.seed_table()
    clean, speeds = _run({"Q2_K": 0.5, "Q4_K_M": 0.07, "Q5_K_M": 0.03, "Q6_K": 0.005},
                         {"Q2_K": 190.0, "Q4_K_M": 150.0, "Q5_K_M": 140.0, "Q6_K": 120.0})  # fmt: skip
    text = study.reading(clean, speeds)
    assert "**Q6_K ≈ lossless?** Yes" in text
    assert f"(the seed: {seed.loc['Q6_K', 'ppl_ratio_pct']:+.2f} %" in text
    assert "**More bits, less divergence, at every step?** Yes." in text
    assert "**Generation speed rising as size falls?** Yes" in text
    assert f"(the seed's Q2_K, quoted: {seed.loc['Q2_K', 'tg_tps'] / seed.loc['F16', 'tg_tps']:.2f}×)" in text
    assert (
        "its text gives generation speed-ups of Q4_K_M 1.85× (its throughputs: 1.95×), Q6_K 1.79× (its throughputs: 1.80×)"
        in text
    )
    inverted, speeds = _run({"Q2_K": 0.5, "Q4_K_M": 0.07, "Q5_K_M": 0.09, "Q6_K": 0.015},
                            {"Q2_K": 190.0, "Q4_K_M": 150.0, "Q5_K_M": 130.0, "Q6_K": 140.0})  # fmt: skip
    text = study.reading(inverted, speeds)
    assert "**Q6_K ≈ lossless?** No" in text
    assert "No: Q5_K_M (6.60 bpw, KLD 0.0900) diverges more than Q4_K_M" in text
    # a smaller file that generates more slowly than a larger one in every round is named
    assert "**Generation speed rising as size falls?** Mostly" in text
    assert "separated within rounds: Q5_K_M (107.0 MiB) is slower than the larger Q6_K (132.0 MiB, ×0.93" in text
    # the same medians, but in one round Q5_K_M was the faster: not separated, so not an exception
    close = _rounds({"REF": [100.0] * 5, "Q2_K": [190.0] * 5, "Q4_K_M": [150.0] * 5,
                     "Q5_K_M": [130.0, 150.0, 130.0, 130.0, 130.0], "Q6_K": [140.0] * 5})  # fmt: skip
    text = study.reading(inverted, close)
    assert "separated within rounds" not in text and "not separated on this machine" in text
    # without rounds, no speed sentence at all
    assert "Generation speed" not in study.reading(inverted)


def test_pareto_front() -> None:
    df = pd.DataFrame({"quant": ["a", "b", "c", "d"], "size_mib": [10, 20, 30, 40], "kld_mean": [0.5, 0.6, 0.1, 0.05]})
    assert study.pareto_front(df) == ["a", "c", "d"]


def test_part_two_counts_are_checked_by_their_own_names() -> None:
    from localllms.errors import UserError
    from localllms.study import check_part_two

    check_part_two(SECOND_ROUNDS=3, DETAIL_NUM_PROMPTS=20)
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(UserError, match=r"^SECOND_ROUNDS must be a whole number of at least 1, not "):
            check_part_two(DETAIL_NUM_PROMPTS=20, SECOND_ROUNDS=bad)
