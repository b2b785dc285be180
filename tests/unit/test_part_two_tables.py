"""Case study, part two: Δp and tail metrics, block formats, kernel paths, sweeps and readings
(pure: no build, no model)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from localllms import bench, evaluate, kernels, metrics, tensors
from localllms.errors import UserError
from localllms.study import importance, kvcache, speed, tail_reading, tail_table
from localllms.study.crosscheck import parse_tool_output

DATA = Path(__file__).parent / "data"


def _stats(n: int = 400, seed: int = 3) -> evaluate.TokenStats:
    rng = np.random.default_rng(seed)
    nb = rng.uniform(0.1, 5, n)
    return evaluate.TokenStats(nb, nb + rng.normal(0.1, 0.4, n), rng.exponential(0.1, n), rng.uniform(size=n) > 0.2)


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
    allt = evaluate.TokenStats.concat(parts)
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


def test_sweep_json_is_parsed_point_by_point() -> None:
    base = {"n_threads": 2, "n_depth": 512, "repack": True, "stddev_ts": 1.0, "test_time": "t"}
    rows = [
        dict(base, n_prompt=128, n_gen=0, avg_ts=600.0, samples_ts=[599.0, 601.0]),
        dict(base, n_prompt=0, n_gen=32, avg_ts=150.0, samples_ts=[150.0], repack=False, n_threads=1),
    ]
    pts = bench.parse_llama_bench_sweep(rows, "abc")
    assert [(p.test, p.depth, p.threads, p.repack, p.tps) for p in pts] == [
        ("pp", 512, 2, True, 600.0),
        ("tg", 512, 1, False, 150.0),
    ]
    assert speed.thread_counts(None, 2) == [1, 2] and speed.thread_counts(None, 8) == [1, 2, 4, 8]
    assert speed.thread_counts(None, 6) == [1, 2, 4, 6] and speed.thread_counts([2, 1, 2], 8) == [1, 2]
    with pytest.raises(UserError, match="SWEEP_THREADS"):
        speed.thread_counts([0], 2)


def _rows(q: dict[str, tuple[float, float, float, float]]) -> pd.DataFrame:
    """Study rows: per variant (Δp p1, Δp p99, Δp mean, Δp se)."""
    rows = [{"quant": "REF", "reference_label": "REF"}]
    for name, (p1, p99, mean, se) in q.items():
        rows.append({"quant": name, "reference_label": "REF", "dp_p1_pct": p1, "dp_p99_pct": p99, "dp_mean_pct": mean,
                     "dp_se_pct": se, "dp_rms_pct": abs(p1) / 3})  # fmt: skip
    df = pd.DataFrame(rows)
    for name in tail_table.__globals__["TAIL_METRICS"]:
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
    for t, wo, w in (("Q2_K", 0.5, 0.4), ("Q4_K_M", 0.06, 0.065), ("IQ2_XS", None, 0.7)):
        for flag, k in ((False, wo), (True, w)):
            if k is not None:
                rows.append({"type": t, "imatrix": flag, "bpw": 5.0, "kld_mean": k, "same_top_pct": 80.0,
                             "dp_mean_pct": -1.0})  # fmt: skip
    res = importance.ImportanceStudy(None, ["Q2_K", "Q4_K_M", "IQ2_XS"], [], {"IQ2_XS": "needs a matrix."}, None,
                                     pd.DataFrame(rows))  # type: ignore[arg-type]  # fmt: skip
    table = importance.gain_table(res)
    assert table.loc["Q2_K", "KLD change (%)"] == -20.0 and table.loc["Q4_K_M", "KLD change (%)"] == pytest.approx(8.3)
    assert pd.isna(table.loc["IQ2_XS", "KLD without"])
    q = importance.quoted()
    q2 = q[q["quant"] == "Q2_K"].set_index("imatrix")["kld_mean"]
    assert table.loc["Q2_K", "LLaMA-3-8B change (%) (quoted)"] == round(100 * (q2["WT 10m"] / q2["None"] - 1), 1)
    text = importance.reading(table, res.refused)
    assert "For 1 of the 2 types made both ways, the KL divergence is lower with it" in text
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


def test_repack_reading_judges_the_switch_against_models_it_cannot_change() -> None:
    from localllms.study.speed import repack_reading

    def table(ratios: dict[str, float]) -> pd.DataFrame:
        return pd.DataFrame(
            {"Prompt, repack off (tok/s)": [100.0] * len(ratios), "Prompt, repack on (tok/s)": [100 * r for r in ratios.values()],
             "On / off": list(ratios.values())},
            index=list(ratios),
        )  # fmt: skip

    studied = ["F16", "Q2_K", "Q4_K_M", "Q6_K"]
    clear = repack_reading(
        table({"F16": 1.02, "Q2_K": 1.40, "Q4_K_M": 1.10, "Q6_K": 0.97}), ["Q2_K", "Q4_K_M"], studied
    )
    assert "differ here: 0.97–1.02" in clear and clear.endswith(
        "Q2_K's ratio lies above that range, so repacking helps it."
    )
    noisy = repack_reading(
        table({"F16": 1.14, "Q2_K": 1.32, "Q4_K_M": 0.79, "Q6_K": 1.37}), ["Q2_K", "Q4_K_M"], studied
    )
    assert "(Q2_K ×1.32, Q4_K_M ×0.79) lies within or below that range, so this run cannot tell" in noisy
    assert repack_reading(table({"Q2_K": 1.3}), ["Q2_K"], ["Q2_K"]) is None  # no model to compare with


def test_roofline_exceptions_name_variants_above_the_measured_bandwidth() -> None:
    from localllms.study import roofline_exceptions, roofline_table

    df = pd.DataFrame({"quant": ["F16", "Q4_K_M"], "tg_tps": [100.0, 100.0], "bytes_per_token": [250e6, 100e6]})
    assert roofline_exceptions(roofline_table(df, 30.0)) == ""  # 25 and 10 GB/s of 30: both under the cap
    text = roofline_exceptions(roofline_table(df, 20.0))  # 25 GB/s read against 20 measured
    assert text.startswith("Exception: F16 (125 %) read more than the measured bandwidth") and "Q4_K_M" not in text
