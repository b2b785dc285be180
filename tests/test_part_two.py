"""Case study, part two, on the real build and models: the importance matrix, i-quants, KV-cache
types, llama-bench sweeps, kernel paths read from the vendored source, and the quoted figures."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from localllms import bench, corpus, evaluate, imatrix, kernels, metrics, tensors
from localllms.build import llama_cpp_source
from localllms.errors import UserError
from localllms.quantize import ImatrixRequired, quantize
from localllms.study import importance, kvcache


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    return corpus.build_prompts(6, source="offline", out_dir=tmp_path_factory.mktemp("prompts"))


def test_calibration_is_disjoint_from_the_prompts(prompts, reference, build) -> None:
    cal = imatrix.calibration(prompts, reference, 1024, build=build)
    assert cal.n_tokens == 1024 and cal.n_chunks == 2 and cal.first_index > cal.prompts_last_index
    lines = cal.text.splitlines()
    assert len(lines) == cal.n_texts and not set(lines) & {p.replace("\n", " ") for p in prompts.texts}
    texts, _ = corpus.load_texts("offline")
    assert texts[cal.prompts_last_index] == prompts.texts[-1]  # the last prompt, found in its source
    assert "the first 1,024 tokens (2 chunks of 512)" in cal.describe()


def test_imatrix_changes_the_quantization_and_unlocks_iquants(prompts, reference, build) -> None:
    cal = imatrix.calibration(prompts, reference, 512, build=build)
    m = imatrix.compute(reference, cal, 2, build, progress_bars=False)
    assert m.entries >= 7 * reference.info.layers  # q, k, v, output, gate, up, down in every layer
    again = imatrix.compute(reference, cal, 2, build, progress_bars=False)  # cached by content
    assert again.sha256 == m.sha256 and again.seconds == m.seconds
    plain, tuned = quantize(reference, "Q2_K", build), quantize(reference, "Q2_K", build, imatrix=m)
    assert tuned.display == "Q2_K+imatrix" and tuned.sha256 != plain.sha256
    with pytest.raises(ImatrixRequired, match="only with an importance matrix"):
        quantize(reference, "IQ2_XS", build)
    iq = quantize(reference, "IQ2_XS", build, imatrix=m)
    types = set(tensors.tensor_table(iq.path)["type"])
    assert "IQ2_XS" in types and "IQ4_NL" in types  # 1536-wide rows take the i-quant, 576-wide ones its fallback


def test_kv_cache_types_cost_quality_in_order(prompts, reference, build) -> None:
    scored = [evaluate.Scored(reference, f"kv {c}", c) for c in ("f16", "q8_0", "q4_0")]
    ev = evaluate.evaluate_prompts(reference, scored, prompts.texts[:3], 2, build, progress_bars=False)
    k = {c: metrics.summarize(ev.per_prompt[f"kv {c}"])["kld_mean"] for c in ("f16", "q8_0", "q4_0")}
    assert k["f16"] == 0  # the same model and cache as the reference: no divergence by definition
    assert 0 < k["q8_0"] < k["q4_0"], k  # fewer bits in the cache, further from the reference
    arch_bytes = [kvcache.bytes_per_element(c) for c in ("f16", "q8_0", "q4_0")]
    assert arch_bytes == sorted(arch_bytes, reverse=True)


def test_llama_bench_sweep_runs_every_combination(reference, build) -> None:
    pts = bench.llama_bench_sweep(reference, [1], [0, 64], 16, 4, 1, build=build, use_cache=False)
    assert sorted((p.test, p.depth) for p in pts) == [("pp", 0), ("pp", 64), ("tg", 0), ("tg", 64)]
    assert all(p.tps > 0 and p.threads == 1 and p.repack for p in pts)


def test_roofline_pairs_each_generation_run_with_the_ceiling_around_it(smollm2, reference, build) -> None:
    """The bench's roofline: every llama-bench run is set between two reads of the model's own file,
    and the ratio is taken per run (tok/s x bytes per token over that run's ceiling)."""
    probe = bench.file_bandwidth(smollm2.path, 2, passes=4, min_mib=0)
    assert len(probe.samples_gbs) == 4 and min(probe.samples_gbs) > 0
    assert probe.buffer_mib == smollm2.path.stat().st_size >> 20
    lines = bench.generation_roofline([smollm2, reference], 2, repetitions=2, n_gen=8, passes=2, build=build)
    for m in (smollm2, reference):
        r = lines[m.display]
        assert r.bytes_per_token == bench.bytes_per_token(m.path) and len(r.tg_tps) == len(r.ceiling_gbs) == 2
        assert r.ratios == pytest.approx(
            [t * r.bytes_per_token / 1e9 / c for t, c in zip(r.tg_tps, r.ceiling_gbs, strict=True)]
        )
        assert 0 < r.ratio < 5 and min(r.ceiling_gbs) > 0
    with pytest.raises(UserError, match="bandwidth probe failed: /no/such/model.gguf: No such file"):
        bench.file_bandwidth(Path("/no/such/model.gguf"), 2)


def test_kernel_paths_of_this_build(build) -> None:
    paths = kernels.matmul_paths(cpu_flags=build.cpu_features)
    assert {"Q8_0", "Q4_0", "Q5_0", "F16"} <= set(paths.tinyblas)
    assert {"Q6_K", "Q5_K", "Q3_K"} <= set(paths.tiled)
    assert paths.prompt("Q5_1") == "generic" and paths.prompt("Q4_1") == "generic"
    if "avx2" in build.cpu_features:
        assert paths.prompt("Q4_0") == "repack" and paths.repack["Q4_0"].startswith("q4_0_")
    fb = tensors.fallbacks()
    assert fb["Q5_K"] == "Q5_1" and fb["Q2_K"] == "Q4_0" and fb["IQ2_XS"] == "IQ4_NL"


def test_bytes_by_group_add_up(reference, build) -> None:
    q2 = quantize(reference, "Q2_K", build)
    g = tensors.bytes_by_group([reference, q2])
    parts = [c for c in g.columns if c.endswith("(MiB)") and c != "total (MiB)"]
    assert np.allclose(g[parts].sum(axis=1), g["total (MiB)"], atol=0.05)
    assert g.loc["Q2_K", "BPW"] == pytest.approx(q2.info.bits_per_weight, abs=0.01)
    assert g.loc["Q2_K", "BPW without embedding"] < g.loc["Q2_K", "BPW"]


def test_quoted_imatrix_figures_match_the_vendored_readme() -> None:
    text = (llama_cpp_source() / "tools" / "perplexity" / "README.md").read_text()
    table = text[text.index("## LLaMA 3 8b Scoreboard") : text.index("## LLaMA 2 vs. LLaMA 3")]
    found = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and re.fullmatch(r"i?q\d\w*", cells[0]):
            found[(cells[0].upper(), cells[1])] = cells
    q = importance.quoted()
    assert len(q) == 9
    for _, r in q.iterrows():
        cells = found[(r["quant"], r["imatrix"])]
        assert float(cells[2]) == r["size_gib"] and float(cells[3].split("±")[0]) == r["ppl"]
        assert float(cells[5].split("±")[0]) == r["kld_mean"]
        assert float(cells[6].split("±")[0]) == r["dp_mean_pct"] and float(cells[7].split("±")[0]) == r["dp_rms_pct"]
    assert isinstance(q, pd.DataFrame)


def test_bandwidth_is_kept_with_the_sweeps_it_is_compared_with(build, monkeypatch, tmp_path) -> None:
    """Measured once (for real) and read back while the sweeps' inputs are unchanged; REMEASURE
    measures it again, as it does the sweeps."""
    from localllms import progress
    from localllms.study import speed

    monkeypatch.setenv("LOCALLLMS_CACHE", str(tmp_path))
    bar = progress.Bar(3, "bandwidth", "run", False)
    first = speed._bandwidth(["sha-a"], ([1], 128, 32, 2), build, bar)
    assert list(first) == [1] and first[1] > 0
    calls = []
    real = bench.memory_bandwidth
    monkeypatch.setattr(bench, "memory_bandwidth", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert speed._bandwidth(["sha-a"], ([1], 128, 32, 2), build, bar) == first and not calls  # read back
    speed._bandwidth(["sha-b"], ([1], 128, 32, 2), build, bar)  # another model: measured anew
    monkeypatch.setenv("LOCALLLMS_REMEASURE", "1")
    speed._bandwidth(["sha-a"], ([1], 128, 32, 2), build, bar)
    assert len(calls) == 2
    bar.close()
