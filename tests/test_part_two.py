"""Case study, part two, on the real build and models: the importance matrix, i-quants, KV-cache
types, llama-bench sweeps, kernel paths read from the vendored source, and the quoted figures."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from localllms import bandwidth, corpus, evaluate, imatrix, kernels, metrics, tensors
from localllms.build import llama_cpp_source
from localllms.errors import UserError
from localllms.llama_bench import bytes_per_token
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


def test_rounds_measure_every_configuration_once_per_round_and_resume(reference, smollm2, build, monkeypatch,
                                                                      tmp_path) -> None:  # fmt: skip
    """Real llama-bench runs: each configuration once per round (depth, threads, repacking off and the
    bandwidth probe among them); a rerun reads the rounds back, REMEASURE takes them again, and a
    new configuration measures the whole set again (its rounds must be shared to be paired)."""
    from localllms import rounds

    monkeypatch.setenv("LOCALLLMS_CACHE", str(tmp_path))
    plan = [
        rounds.Setting("ref", str(reference.path), reference.sha256, 2, 16, 4),
        rounds.Setting("ref · depth 64", str(reference.path), reference.sha256, 2, 16, 4, depth=64),
        rounds.Setting("q4 · 1 thread", str(smollm2.path), smollm2.sha256, 1, 16, 4),
        rounds.Setting("q4 · repack off", str(smollm2.path), smollm2.sha256, 2, 16, 0, repack=False),
        rounds.Setting("bandwidth · 1 thread", "", "", 1, kind="bandwidth"),
    ]
    first = rounds.run(plan, build, 2, seed=5, progress_bars=False)
    assert first.n_rounds == 2 and len(first.runs) == 2 * (2 + 2 + 2 + 1 + 1)
    assert (first.runs["value"] > 0).all()
    assert set(first.runs.loc[first.runs["label"] == "q4 · repack off", "test"]) == {"pp"}
    assert first.values("bandwidth · 1 thread", "bw")[0] > 0
    again = rounds.run(plan, build, 2, seed=5, progress_bars=False)
    assert again.runs["value"].tolist() == first.runs["value"].tolist()  # read back, not measured
    monkeypatch.setenv("LOCALLLMS_REMEASURE", "1")
    anew = rounds.run(plan, build, 2, seed=5, progress_bars=False)
    assert anew.runs["value"].tolist() != first.runs["value"].tolist()
    with pytest.raises(UserError, match="share a label"):
        rounds.run([plan[0], plan[0]], build, 1, progress_bars=False)
    with pytest.raises(UserError, match="llama-bench failed on no-such.gguf"):
        rounds.run([rounds.Setting("x", "/tmp/no-such.gguf", "x", 1, 8, 2)], build, 1, progress_bars=False)


def test_a_prompt_test_longer_than_the_warm_up_runs_behind_it_and_only_its_own_speed_is_kept(
    smollm2, build, monkeypatch
) -> None:
    """The 64-token warm-up runs first in the same llama-bench process, in place of llama-bench's own
    (which would repeat the whole prompt test); its row is dropped. A test no longer than the warm-up
    keeps llama-bench's own warm-up."""
    import subprocess

    from localllms import rounds

    calls = []
    real_run = subprocess.run

    def spy(cmd, **kw):
        proc = real_run(cmd, **kw)
        calls.append((cmd, proc.stdout))
        return proc

    monkeypatch.setattr(rounds.subprocess, "run", spy)
    long = rounds._measure(rounds.Setting("q4", str(smollm2.path), smollm2.sha256, 2, 96, 4, depth=32), build)
    cmd, out = calls[-1]
    assert "--no-warmup" in cmd and cmd[cmd.index("-p") + 1] == f"{rounds.WARMUP_PROMPT},96"
    rows = {(r["n_prompt"], r["n_gen"]): r["avg_ts"] for r in __import__("json").loads(out)}
    assert set(rows) == {(rounds.WARMUP_PROMPT, 0), (96, 0), (0, 4)}
    assert long["values"] == {"pp": rows[(96, 0)], "tg": rows[(0, 4)]}  # the warm-up's row is not a value
    short = rounds._measure(rounds.Setting("q4", str(smollm2.path), smollm2.sha256, 2, rounds.WARMUP_PROMPT, 4), build)
    cmd, _ = calls[-1]
    assert "--no-warmup" not in cmd and cmd[cmd.index("-p") + 1] == str(rounds.WARMUP_PROMPT)
    assert set(short["values"]) == {"pp", "tg"}


def test_roofline_pairs_each_generation_run_with_the_ceiling_around_it(smollm2, reference, build) -> None:
    """The bench's roofline: every llama-bench run is set between two reads of the model's own file,
    and the ratio is taken per run (tok/s x bytes per token over that run's ceiling)."""
    probe = bandwidth.file_bandwidth(smollm2.path, 2, passes=4, min_mib=0)
    assert len(probe.samples_gbs) == 4 and min(probe.samples_gbs) > 0
    assert probe.buffer_mib == smollm2.path.stat().st_size >> 20
    lines = bandwidth.generation_roofline([smollm2, reference], 2, repetitions=2, n_gen=8, passes=2, build=build)
    for m in (smollm2, reference):
        r = lines[m.display]
        assert r.bytes_per_token == bytes_per_token(m.path) and len(r.tg_tps) == len(r.ceiling_gbs) == 2
        assert r.ratios == pytest.approx(
            [t * r.bytes_per_token / 1e9 / c for t, c in zip(r.tg_tps, r.ceiling_gbs, strict=True)]
        )
        assert 0 < r.ratio < 5 and min(r.ceiling_gbs) > 0
    with pytest.raises(UserError, match="bandwidth probe failed: /no/such/model.gguf: No such file"):
        bandwidth.file_bandwidth(Path("/no/such/model.gguf"), 2)


def test_kernel_paths_of_this_build(build) -> None:
    paths = kernels.matmul_paths()  # what the build reports compiled in (its smoke test's record)
    assert set(build.compiled) >= {"AVX2", "LLAMAFILE", "REPACK"}
    assert ("AMX_INT8" in build.compiled) == bool(paths.amx)
    assert paths == kernels.matmul_paths(compiled=build.compiled)
    with_amx = kernels.matmul_paths(compiled=[*build.compiled, "AMX_INT8"])
    assert (
        with_amx.prompt("Q4_1") == "AMX"
        and with_amx.generation("Q4_K") == "AMX"
        and with_amx.prompt("Q5_1") == "generic"
    )
    assert {"Q8_0", "Q4_0", "Q5_0", "F16"} <= set(paths.tinyblas)
    assert {"Q6_K", "Q5_K", "Q3_K"} <= set(paths.tiled)
    if not paths.amx:
        assert paths.prompt("Q5_1") == "generic" and paths.prompt("Q4_1") == "generic"
    if "AVX2" in build.compiled:
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
