"""Case study, part two: Δp and tail metrics, block formats, kernel paths, sweeps and readings
(pure: no build, no model)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from localllms import kernels, metrics, tensors
from localllms.errors import UserError
from localllms.rounds import Rounds
from localllms.study import SpeedPlan, importance, kvcache, speed, tail_reading, tail_table
from localllms.study.crosscheck import parse_tool_output

DATA = Path(__file__).parent / "data"


def _stats(n: int = 400, seed: int = 3) -> metrics.TokenStats:
    rng = np.random.default_rng(seed)
    nb = rng.uniform(0.1, 5, n)
    return metrics.TokenStats(nb, nb + rng.normal(0.1, 0.4, n), rng.exponential(0.1, n), rng.uniform(size=n) > 0.2)


def test_percentile_follows_llama_perplexity_rule() -> None:
    v = np.array([5.0, 1.0, 4.0, 2.0, 3.0])
    # index fraction x (n - 1), linear between neighbours: 0.99 x 4 = 3.96 -> 0.04 x 4 + 0.96 x 5
    assert metrics.tool_percentile(v, 0.99) == pytest.approx(4.96, rel=1e-6)
    assert metrics.tool_percentile(v, 0.5) == 3.0  # odd: the middle value
    assert metrics.tool_percentile(np.array([1.0, 2.0, 3.0, 10.0]), 0.5) == 2.5  # even: mean of the middle two
    assert metrics.tool_percentile(v, 0.0) == 1.0 and metrics.tool_percentile(v, 1.0) == 5.0
    x = np.random.default_rng(0).normal(size=10001)
    for f in (0.01, 0.25, 0.999):  # the same rule as numpy's default, up to float32 index rounding
        assert metrics.tool_percentile(x, f) == pytest.approx(np.percentile(x, 100 * f), abs=2e-3)


def test_delta_p_and_tail_definitions() -> None:
    parts = [_stats(150, 1), _stats(250, 2)]
    s = metrics.summarize(parts)
    allt = metrics.TokenStats.concat(parts)
    dp = np.exp(-allt.nll_q) - np.exp(-allt.nll_base)
    assert s["dp_mean_pct"] == pytest.approx(100 * dp.mean())
    assert s["dp_se_pct"] == pytest.approx(100 * dp.std(ddof=1) / math.sqrt(dp.size))
    assert s["dp_rms_pct"] == pytest.approx(100 * math.sqrt((dp**2).mean()))
    assert s["dp_min_pct"] == pytest.approx(100 * dp.min(), rel=1e-6) and s["dp_max_pct"] == pytest.approx(
        100 * dp.max(), rel=1e-6
    )
    assert s["dp_p5_pct"] == pytest.approx(100 * metrics.tool_percentile(dp, 0.05))
    assert s["dp_min_pct"] <= s["dp_p1_pct"] <= s["dp_p25_pct"] <= s["dp_median_pct"] <= s["dp_p75_pct"]
    assert s["dp_p75_pct"] <= s["dp_p95_pct"] <= s["dp_p99_pct"] <= s["dp_max_pct"]
    assert s["kld_max"] == pytest.approx(allt.kld.max()) and s["kld_p999"] <= s["kld_max"]


def test_new_statistics_are_read_from_the_tool_output() -> None:
    values = parse_tool_output((DATA / "llama-perplexity-kld.txt").read_text())
    # the file's own lines: Δp is printed in percent, and "5.0%" must not match "95.0%" or "25.0%"
    assert values["dp_p5_pct"] == -9.467 and values["dp_p95_pct"] == 8.82 and values["dp_p25_pct"] == -1.026
    assert values["dp_p1_pct"] == -20.856 and values["dp_p99_pct"] == 13.819
    assert values["dp_min_pct"] == -58.605 and values["dp_max_pct"] == 33.271
    assert values["dp_mean_pct"] == -0.12 and values["dp_rms_pct"] == 6.747
    assert values["kld_p999"] == 1.48758 and values["kld_max"] == 2.017796
    for name in ("dp_mean_pct", "dp_rms_pct", "dp_p1_pct", "kld_p999", "kld_max"):
        assert metrics.BY_NAME[name].tolerance is not None


def test_groups_and_block_formats() -> None:
    assert tensors.group_of("token_embd.weight") == "token embedding"
    assert tensors.group_of("output.weight") == "output"
    assert tensors.group_of("blk.3.attn_v.weight") == "attention"
    assert tensors.group_of("blk.3.ffn_down.weight") == "feed-forward"
    assert tensors.group_of("blk.3.attn_q_norm.weight") == "norms" and tensors.group_of("output_norm.weight") == "norms"
    t = tensors.quant_type_table(["Q4_0", "Q4_K", "Q2_K", "Q8_0", "IQ4_NL"])
    for _, r in t.iterrows():
        assert r["bits per weight"] == pytest.approx(8 * r["bytes per block"] / r["weights per block"])
    assert t.loc["Q4_K", "weights per block"] == 256 and t.loc["Q4_0", "weights per block"] == 32
    assert t.loc["Q2_K", "bits per weight"] < t.loc["Q4_0", "bits per weight"] < t.loc["Q8_0", "bits per weight"]
    assert "a scale and a minimum" in tensors.meaning("Q5_1") and "scale per block" in tensors.meaning("Q5_0")
    assert tensors.base_type("Q4_K_M") == "Q4_K" and tensors.base_type("IQ2_XS") == "IQ2_XS"
    assert kvcache.bytes_per_element("q8_0") == 34 / 32 and kvcache.bytes_per_element("f16") == 2


REPACK_SNIPPET = """
static const ggml::cpu::tensor_traits * ggml_repack_get_optimal_repack_type(const struct ggml_tensor * cur) {
    if (cur->type == GGML_TYPE_Q4_0) {
        if (ggml_cpu_has_avx2() || (ggml_cpu_has_sve() && ggml_cpu_has_matmul_int8())) {
            if (cur->ne[1] % 8 == 0) {
                return &q4_0_8x8_q8_0;
            }
        }
    } else if (cur->type == GGML_TYPE_Q2_K) {
        if (ggml_cpu_has_avx512()) {
            if (cur->ne[1] % 8 == 0) {
                return &q2_K_8x8_q8_K;
            }
        }
    } else if (cur->type == GGML_TYPE_Q6_K) {
        if (ggml_cpu_has_neon() && ggml_cpu_has_dotprod()) {
            if (cur->ne[1] % 8 == 0) {
                return &q6_K_8x4_q8_K;
            }
        }
    }
    return nullptr;
}
"""


def test_kernel_paths_are_read_from_source_and_cpu_flags() -> None:
    assert kernels.repacked_types(REPACK_SNIPPET, ["avx2"]) == {"Q4_0": "q4_0_8x8_q8_0"}
    assert kernels.repacked_types(REPACK_SNIPPET, ["avx2", "avx512f"]) == {
        "Q4_0": "q4_0_8x8_q8_0",
        "Q2_K": "q2_K_8x8_q8_K",
    }
    assert kernels.repacked_types(REPACK_SNIPPET, []) == {}  # NEON-only Q6_K never counts on x86
    paths = kernels.MatmulPaths(repack={"Q4_0": "x"}, tiled=("Q4_0", "Q6_K"), tinyblas=("Q4_0", "Q8_0", "F16"))
    assert [paths.prompt(t) for t in ("Q4_0", "Q6_K", "Q8_0", "Q5_1")] == ["repack", "tiled", "tinyBLAS", "generic"]
    assert paths.generation("Q4_0") == "repack" and paths.generation("Q8_0") == "generic"
    t = pd.DataFrame({"name": ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.ffn_up.weight", "blk.0.attn_norm.weight"],
                      "group": ["token embedding", "attention", "feed-forward", "norms"],
                      "type": ["Q8_0", "Q5_1", "Q4_0", "F32"], "bytes": [1000, 300, 100, 4]})  # fmt: skip
    assert kernels.kernel_shares(t, paths) == {"repack": 25.0, "tiled": 0.0, "tinyBLAS": 0.0, "generic": 75.0}


def test_thread_counts_and_sweep_checks() -> None:
    assert speed.thread_counts(None, 2) == [1, 2] and speed.thread_counts(None, 8) == [1, 2, 4, 8]
    assert speed.thread_counts(None, 6) == [1, 2, 4, 6] and speed.thread_counts([2, 1, 2], 8) == [1, 2]
    with pytest.raises(UserError, match="SWEEP_THREADS"):
        SpeedPlan(("Q4_K_M",), (0,), (0,))
    with pytest.raises(UserError, match="SWEEP_DEPTHS"):
        SpeedPlan(("Q4_K_M",), (-1,))


def _made_up_rounds(values: dict[tuple[str, str], list[float]]) -> Rounds:
    rows = [{"round": r, "position": 0, "label": lab, "test": test, "value": v, "measured_at": "t"}
            for (lab, test), vs in values.items() for r, v in enumerate(vs)]  # fmt: skip
    return Rounds([], 1, pd.DataFrame(rows))


def _rows(q: dict[str, tuple[float, float, float, float]]) -> pd.DataFrame:
    """Study rows: per variant (Δp p1, Δp p99, Δp mean, Δp se)."""
    rows = [{"quant": "REF", "reference_label": "REF"}]
    for name, (p1, p99, mean, se) in q.items():
        rows.append({"quant": name, "reference_label": "REF", "dp_p1_pct": p1, "dp_p99_pct": p99, "dp_mean_pct": mean,
                     "dp_se_pct": se, "dp_rms_pct": abs(p1) / 3})  # fmt: skip
    df = pd.DataFrame(rows)
    for name in (c.name for c in metrics.columns(metrics.TAIL)):
        if name not in df:
            df[name] = 0.0
    return df


def test_tail_reading_tells_noise_from_loss() -> None:
    df = _rows({"A": (-40.0, 20.0, -3.0, 0.5), "B": (-10.0, 9.0, -0.1, 0.2)})
    text = tail_reading(df)
    assert (
        "**Heavier negative tail** (the 1st percentile of Δp more than 1.5× as far from zero as the 99th): A (2.0×)"
        in text
    )
    assert "**Roughly symmetric** (within that factor): B (1.1×)" in text
    assert "two standard errors**: 1 of the 2 variants (A)" in text
    assert list(tail_table(df).index) == ["A", "B"]


def test_imatrix_gain_table_and_reading() -> None:
    rows = []
    mixes = {("IQ3_XXS", False): "Q3_K ×27, Q4_K ×3", ("IQ3_XXS", True): "IQ3_XXS ×27, Q4_K ×3"}
    per_prompt = {0.5: [0.45, 0.5, 0.55, 0.5], 0.4: [0.36, 0.4, 0.43, 0.41], 0.06: [0.05, 0.07, 0.06, 0.06],
                  0.065: [0.05, 0.08, 0.06, 0.07], 0.7: [0.7] * 4, 0.3: [0.3] * 4, 0.2: [0.2] * 4}  # fmt: skip
    for t, wo, w, dps in (("Q2_K", 0.5, 0.4, (-1.0, -0.5)), ("Q4_K_M", 0.06, 0.065, (-0.2, -0.4)),
                          ("IQ2_XS", None, 0.7, (None, -2.0)), ("IQ3_XXS", 0.3, 0.2, (-1.0, -0.8))):  # fmt: skip
        for flag, k, dp in ((False, wo, dps[0]), (True, w, dps[1])):
            if k is not None:
                rows.append({"type": t, "imatrix": flag, "bpw": 5.0, "kld_mean": k, "same_top_pct": 80.0,
                             "dp_mean_pct": dp, "mix": mixes.get((t, flag), f"{t} ×30"),
                             "prompt_kld": per_prompt[k]})  # fmt: skip
    res = importance.ImportanceStudy(None, ["Q2_K", "Q4_K_M", "IQ2_XS", "IQ3_XXS"], [], {"IQ2_XS": "needs a matrix."},
                                     None, pd.DataFrame(rows))  # type: ignore[arg-type]  # fmt: skip
    table = importance.gain_table(res)
    assert table.loc["Q2_K", "KLD change (%)"] == -20.0 and table.loc["Q4_K_M", "KLD change (%)"] == pytest.approx(8.3)
    assert table.loc["Q2_K", "± se (%)"] == pytest.approx(
        100 * np.std([-0.09, -0.1, -0.12, -0.09], ddof=1) / 2 / 0.5, abs=0.1
    )
    assert pd.isna(table.loc["IQ2_XS", "KLD without"])
    assert table.loc["IQ3_XXS", "Tensor types"] == "different mixes: Q3_K ×27, Q4_K ×3 → IQ3_XXS ×27, Q4_K ×3"
    q = importance.quoted()
    q2 = q[q["quant"] == "Q2_K"].set_index("imatrix")["kld_mean"]
    assert table.loc["Q2_K", "LLaMA-3-8B change (%) (quoted)"] == round(100 * (q2["WT 10m"] / q2["None"] - 1), 1)
    text = importance.reading(table, res.refused)
    # IQ3_XXS's -33 % compares different mixes: not counted among the types the matrix helps
    assert "Of the 2 types made both ways with the same tensor types, the KL divergence is lower with it for 1" in text
    assert "1 of the 2 changes are larger than twice their standard error over prompts (Q2_K)" in text
    assert "**Not like for like**: IQ3_XXS's two files hold Q3_K ×27, Q4_K ×3 → IQ3_XXS ×27, Q4_K ×3" in text
    assert "**Δp mean moves the other way** for Q4_K_M (-0.20 → -0.40 %)" in text
    assert (
        "The direction differs for some types." in text
        and "**IQ2_XS without a matrix**: not made; needs a matrix." in text
    )


def test_across_reading_finds_the_own_type_and_the_ladder() -> None:
    from localllms.study import across

    rows = [("a", "Q2_K", 5.1, 0.5), ("a", "Q4_1" + across.OWN, 5.7, 0.004), ("a", "Q8_0", 8.5, 0.005),
            ("b", "Q2_K", 6.9, 0.6), ("b", "Q4_K_M" + across.OWN, 7.4, 0.006), ("b", "Q8_0", 8.5, 0.003)]  # fmt: skip
    table = pd.DataFrame(
        [{"Model": m, "Variant": v, "BPW": bpw, "KLD mean": k, "Same top (%)": 90.0} for m, v, bpw, k in rows]
    ).set_index(["Model", "Variant"])
    text = across.reading([], table)
    assert (
        "**a, re-quantized to Q4_1**" in text
        and "no other variant comes closer to the reference, including 1 with" in text
    )
    assert "**b, re-quantized to Q4_K_M**" in text and "1 variant of the 2 comes closer." in text
    assert "**The ladder across models** (Q2_K, Q8_0): the order of KL divergence is the same for both models" in text
    assert across.second_model("x", "x") != "x" and across.second_model("y", "x") == "y"


def test_repack_reading_claims_a_gain_only_where_the_rounds_separate_it() -> None:
    drift = [1.0, 1.3, 0.9, 1.25, 1.1]

    def study(on_off: dict[str, list[float]], repacked: tuple[str, ...]) -> speed.SpeedStudy:
        values = {}
        for m, ratios in on_off.items():
            values[(m, "pp")] = [500 * d * r for d, r in zip(drift, ratios, strict=True)]
            values[(f"{m} · repack off", "pp")] = [500 * d for d in drift]
        shares = pd.DataFrame({"repack": [50.0 if m in repacked else 0.0 for m in on_off]}, index=list(on_off))
        return speed.SpeedStudy(_made_up_rounds(values), [], 2, [1, 2], [0], {}, {}, shares, list(on_off), {})

    clear = speed.repack_reading(
        study({"F16": [1.0, 1.02, 0.99, 1.01, 1.0], "Q2_K": [1.3, 1.4, 1.35, 1.32, 1.38]}, ("Q2_K",))
    )
    assert "Q2_K ×1.35 (1.30–1.40)" in clear and "range 0.99–1.02" in clear
    assert clear.endswith("Repacking helps Q2_K: the interval lies above 1.")
    noisy = speed.repack_reading(
        study({"F16": [1.0, 1.02, 0.99, 1.01, 1.0], "Q2_K": [1.3, 0.95, 1.35, 1.32, 1.38]}, ("Q2_K",))
    )
    assert noisy.endswith("For no repacked model does the interval lie above 1: not separated on this machine.")
    assert speed.repack_reading(study({"F16": [1.0] * 5}, ())) is None  # nothing repacked


def test_roofline_shares_and_exceptions_are_per_round() -> None:
    from types import SimpleNamespace

    from localllms.study import roofline_exceptions, roofline_table

    df = pd.DataFrame({"quant": ["F16", "Q4_K_M"], "tg_tps": [100.0, 100.0], "tg_lo": [90.0, 90.0],
                       "tg_hi": [110.0, 110.0], "bytes_per_token": [250e6, 100e6], "threads": [2, 2]})  # fmt: skip
    bw = [30.0, 36.0, 27.0, 33.0, 30.0]
    drift = [b / 30 for b in bw]  # generation moves with the bandwidth, round by round
    under = _made_up_rounds({("F16", "tg"): [100.0 * d for d in drift], ("Q4_K_M", "tg"): [100.0 * d for d in drift],
                             ("bandwidth · 2 threads", "bw"): bw})  # fmt: skip
    table = roofline_table(SimpleNamespace(rows=df, speed=under))
    assert table.loc["F16", "Share of bandwidth (%)"] == "83.3 (83.3–83.3)"  # 25 GB/s of 30, in every round
    assert roofline_exceptions(table) == ""
    over = _made_up_rounds({("F16", "tg"): [130.0 * d for d in drift], ("Q4_K_M", "tg"): [100.0 * d for d in drift],
                            ("bandwidth · 2 threads", "bw"): bw})  # fmt: skip
    text = roofline_exceptions(roofline_table(SimpleNamespace(rows=df, speed=over)))
    assert text.startswith("Exception: F16 (108 (108–108) %) read more than the bandwidth") and "Q4_K_M" not in text


def test_for_page_shows_empty_cells_as_dashes_and_keeps_decimals() -> None:
    from localllms.study import for_page

    t = pd.DataFrame({"kld": [0.5041, float("nan"), 0.0657], "change": [-28.7, float("nan"), -10.0],
                      "whole": [1.0, 2.0, 3.0]}, index=["a", "b", "c"])  # fmt: skip
    shown = for_page(t)
    assert list(shown["kld"]) == ["0.5041", "—", "0.0657"]
    assert list(shown["change"]) == ["-28.7", "—", "-10.0"]
    assert shown["whole"].dtype.kind == "f"  # a column without an empty cell is left as it is
    assert t["kld"].isna().sum() == 1  # the table itself keeps its NaN (readings and plots drop them)


def test_preset_table_has_no_nan() -> None:
    from localllms import tensors

    table = tensors.preset_table(["Q4_K_M", "Q8_0"])
    assert table.loc["Q8_0", "fallback BPW"] == "—"
    assert table.loc["Q4_K_M", "fallback BPW"] == 5.5
    assert not table.isna().any().any()
