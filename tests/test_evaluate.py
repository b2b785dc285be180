"""Quality metrics: checked against an independent computation, against llama-perplexity, and for resuming."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from localllms import evaluate, metrics, store, study
from localllms.corpus import build_prompts
from localllms.quantize import quantize
from localllms.study.crosscheck import compare, run_llama_perplexity


@pytest.fixture(scope="module")
def q2k(reference, build):
    return quantize(reference, "Q2_K", build)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    return build_prompts(100, source="offline", out_dir=tmp_path_factory.mktemp("prompts"))


@pytest.fixture(scope="module")
def real_logits(reference, q2k, prompts, build):
    """Logits of the reference and of Q2_K on the first prompt, from the real build."""
    base = evaluate.LogitsModel(reference, 512, 2, build)
    var = evaluate.LogitsModel(q2k, 512, 2, build)
    tokens = base.tokenize(prompts.texts[0])
    b, q = base.logits(tokens, 0, len(tokens) - 1), var.logits(tokens, 0, len(tokens) - 1)
    base.close()
    var.close()
    return b, q, tokens[1:]


def test_metrics_match_an_independent_computation(real_logits) -> None:
    b, q, targets = real_logits
    stats = evaluate.token_stats(b, q, targets)
    # Independent: float64, softmax by its definition, KL by its definition, position by position.
    for t in range(len(targets)):
        pb = np.exp(b[t].astype(np.float64) - b[t].max())
        pb /= pb.sum()
        pq = np.exp(q[t].astype(np.float64) - q[t].max())
        pq /= pq.sum()
        assert stats.nll_base[t] == pytest.approx(-np.log(pb[targets[t]]), rel=1e-4, abs=1e-5)
        assert stats.nll_q[t] == pytest.approx(-np.log(pq[targets[t]]), rel=1e-4, abs=1e-5)
        mask = pb > 0
        kl = float(np.sum(pb[mask] * (np.log(pb[mask]) - np.log(pq[mask]))))
        assert stats.kld[t] == pytest.approx(kl, rel=1e-3, abs=1e-6)
        assert stats.same_top[t] == (np.argmax(pb) == np.argmax(pq))
    assert stats.kld.mean() > 0.01  # Q2_K really differs from its reference


def test_identical_models_have_zero_divergence(real_logits) -> None:
    b, _, targets = real_logits
    stats = evaluate.token_stats(b, b, targets)
    assert np.allclose(stats.kld, 0, atol=1e-6)
    assert stats.same_top.all()
    assert np.array_equal(stats.nll_base, stats.nll_q)


@pytest.mark.parametrize(
    ("model", "quants", "n_prompts"), [("smollm2", ("Q4_K_M", "Q8_0"), 40), ("gemma", ("Q2_K",), 12)]
)
def test_shared_decodes_give_the_numbers_of_one_prompt_at_a_time(
    request, build, prompts, tmp_path, monkeypatch, model, quants, n_prompts
) -> None:
    """Prompts decoded together (one KV stream each) give every per-token record bit for bit as
    decoding each prompt alone, the old way (a one-sequence context of 512): for a file the CPU
    back end repacks (Q4_K_M, Q2_K: only prompts of 4k + 1 tokens share) and for one it does not
    (F16, Q8_0: every prompt shares). Exactly, not within a tolerance: the kernels compute each
    row as alone (see evaluate.py), so any difference is a bug."""
    from localllms.quantize import make_reference

    ref = make_reference(request.getfixturevalue(model), build)
    variants = [quantize(ref, q, build) for q in quants]
    texts = prompts.texts[:n_prompts]
    assert evaluate.packing(ref.path, build) == "any"
    assert {evaluate.packing(v.path, build) for v in variants} >= ({"4k+1"} if model == "gemma" else {"4k+1", "any"})
    tokens, n_vocab = evaluate.tokenize(ref, texts, build)
    lengths = [len(t) for t in tokens]
    plan = evaluate.plan(lengths, 512, evaluate.MAX_SEQS, evaluate.SIDE_BYTES // (8 * n_vocab))
    assert any(len(w) > 1 for w in plan) and any(len(w) > 1 and lengths[w[0]] % 4 == 1 for w in plan)

    monkeypatch.setenv("LOCALLLMS_CACHE", str(tmp_path / "cache"))  # computed now, not read from an earlier run
    shared = evaluate.evaluate_prompts(ref, [ref, *variants], texts, 2, build, progress_bars=False)
    assert all(n == n_prompts for n in shared.computed.values())
    alone = {m.display: evaluate.LogitsModel(m, 512, 2, build) for m in (ref, *variants)}
    try:
        for i, t in enumerate(tokens):
            side = evaluate.Reference.exact(alone[ref.display].logits(t, 0, len(t) - 1))
            expected = {ref.display: side.itself(t[1:])}
            for v in variants:
                expected[v.display] = evaluate.token_stats(side, alone[v.display].logits_view(t, 0, len(t) - 1), t[1:])
            for label, want in expected.items():
                got = shared.per_prompt[label][i]
                for f in ("nll_base", "nll_q", "kld", "same_top"):
                    assert np.array_equal(getattr(got, f), getattr(want, f)), (label, i, lengths[i], f)
    finally:
        for lm in alone.values():
            lm.close()


@pytest.mark.parametrize(
    ("quant", "n_prompts", "n_ctx", "chunks", "floors"), [("Q2_K", 100, 256, 4, False), ("Q4_K_M", 10, 512, 2, True)]
)
def test_evaluator_agrees_with_llama_perplexity(
    reference, build, tmp_path, quant, n_prompts, n_ctx, chunks, floors
) -> None:
    """Same tokens, same build, any run size: with the reference stored as the tool stores it, our
    numbers are the tool's within each metric's declared tolerance; exactly, they differ only by
    the tokens the tool's 16-bit storage floors (the 10-prompt, 2-chunk case failed before)."""
    variant = quantize(reference, quant, build)
    text = build_prompts(n_prompts, source="offline", out_dir=tmp_path).as_text()
    text_file = tmp_path / "prompts.txt"
    text_file.write_text(text)
    tool = run_llama_perplexity(reference, variant, text_file, n_ctx, 2, tmp_path, build, max_chunks=chunks)
    ours = evaluate.evaluate_windows(reference, variant, text, n_ctx, 2, build, max_chunks=chunks)
    as_tool, exact = metrics.summarize([ours.as_tool]), metrics.summarize([ours.exact])
    assert tool.n_chunks == chunks and exact["n_tokens"] == chunks * (n_ctx - 1 - n_ctx // 2)
    table = compare(as_tool, tool.values, exact)
    assert table["within"].all(), table
    assert tool.values["kld_mean"] > 0.05  # a real difference was measured, not two zeros
    # the storage is the cause: 16-bit rounding moves a reference NLL by at most half a step
    # (16 / 65535 / 2 = 1.2e-4); beyond that, only the floor 16 below the top logit moves it
    moved = ours.exact.nll_base - ours.as_tool.nll_base
    floored = moved > evaluate.FLOOR_SHIFT
    assert np.abs(moved[~floored]).max() <= evaluate.FLOOR_SHIFT
    if floors:  # the case that failed: the floor alone moves PPL(base) by 0.3 %, and explains the tool's value
        assert floored.any() and exact["ppl_base"] > tool.values["ppl_base"] * 1.002
        only_floor = np.exp((ours.exact.nll_base - np.where(floored, moved, 0)).mean())
        assert only_floor == pytest.approx(tool.values["ppl_base"], rel=1e-4)
    assert np.array_equal(ours.exact.nll_q, ours.as_tool.nll_q)  # the variant's side is untouched


def test_prompt_evaluation_resumes_and_adds_only_new_work(reference, q2k, build, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LOCALLLMS_CACHE", str(tmp_path / "cache"))
    texts = [
        "The quick brown fox jumps over the lazy dog near the river bank today. " * 2,
        "Paris is the capital of France. " * 4,
    ]
    first = evaluate.evaluate_prompts(reference, [reference, q2k], texts, 2, build, progress_bars=False)
    assert first.computed == {reference.display: 2, "Q2_K": 2}
    again = evaluate.evaluate_prompts(reference, [reference, q2k], texts, 2, build, progress_bars=False)
    assert again.computed == {reference.display: 0, "Q2_K": 0}
    assert again.summary("Q2_K") == pytest.approx(first.summary("Q2_K"), nan_ok=True)
    q8 = quantize(reference, "Q8_0", build)
    more = evaluate.evaluate_prompts(reference, [reference, q2k, q8], texts, 2, build, progress_bars=False)
    assert more.computed == {reference.display: 0, "Q2_K": 0, "Q8_0": 2}
    assert more.summary("Q8_0")["kld_mean"] < more.summary("Q2_K")["kld_mean"]
    # what is kept per prompt is a few numbers per token, not a vocabulary-sized row
    kept = sum(f.stat().st_size for f in (tmp_path / "cache" / "eval" / "prompts").glob("*.npz"))
    assert kept < 6 * 100 * 64


def test_small_study_end_to_end(tmp_path) -> None:
    config = study.StudyConfig(
        quant_types=("Q4_K_M", "Q8_0"), num_prompts=5, rounds=2, n_prompt=32, n_gen=8, corpus_source="offline"
    )
    store_path = tmp_path / "results.duckdb"
    kw = {"progress_bars": False, "store_path": store_path, "prompts_dir": tmp_path, "results_dir": tmp_path}
    result = study.run(config, **kw)
    df = result.rows
    assert list(df["quant"]) == ["F16 expanded from Q4_1", "Q4_K_M", "Q8_0"]
    assert (df["reference_label"] == "F16 expanded from Q4_1").all()
    needed = "model quant reference_label size_mib bpw ppl_q ppl_ratio_pct ppl_ratio_se ln_ppl_corr_pct kld_mean kld_se kld_median kld_p99 same_top_pct bpb pp_tps pp_lo pp_hi tg_tps tg_lo tg_hi tg_vs_ref tg_vs_ref_lo tg_vs_ref_hi rounds shuffle_seed threads n_prompts llama_cpp_commit cpu model_sha256".split()
    assert not set(needed) - set(df.columns)
    base = df.iloc[0]
    assert base["kld_mean"] == 0 and base["ppl_ratio_pct"] == 0 and base["same_top_pct"] == 100
    assert df.loc[df["quant"] == "Q8_0", "kld_mean"].item() < df.loc[df["quant"] == "Q4_K_M", "kld_mean"].item()
    assert (df["size_mib"].iloc[1:] < base["size_mib"]).all()
    assert (df["tg_tps"] > 0).all() and df["pp_lo"].isna().all()  # 2 rounds: a median, no interval (5 needed)
    assert df["tg_vs_ref"].iloc[0] == 1.0 and (df["bpb"] > 0).all()  # the reference against itself, round by round
    # the host's name, as a sweep's rows carry it: on the comparing page both are one machine
    assert (df["hostname"] == socket.gethostname()).all()
    assert len(result.speed.runs) == 2 * (3 * 2 + 1)  # 2 rounds: 3 models (pp, tg) and the bandwidth probe
    # a rerun replaces its rows in the store instead of adding to them
    study.run(config, **kw)
    counts = store.query("SELECT quant, count(*) AS n FROM quantization GROUP BY quant", store_path)
    assert len(counts) == 3 and (counts["n"] == 1).all()
    assert list((tmp_path).glob("quantization-smollm2-135m-instruct-*.csv"))
