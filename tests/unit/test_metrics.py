"""The metric registry and its definitions, on synthetic token records (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from localllms import evaluate, metrics
from localllms.errors import UserError


def _parts(sizes=(5, 9, 14), seed=0) -> list[metrics.TokenStats]:
    rng = np.random.default_rng(seed)
    parts = []
    for n in sizes:
        nb = rng.uniform(1, 4, n)
        parts.append(
            metrics.TokenStats(nb, nb + rng.uniform(0, 0.5, n), rng.uniform(0, 1, n), rng.uniform(size=n) > 0.3)
        )
    return parts


def test_summary_definitions() -> None:
    parts = _parts()
    s = metrics.summarize(parts)
    ratios = np.array([np.exp(p.nll_q.mean()) / np.exp(p.nll_base.mean()) for p in parts])
    assert s["ppl_ratio_pct"] == pytest.approx(100 * (ratios.mean() - 1))
    assert s["ppl_ratio_se"] == pytest.approx(100 * ratios.std(ddof=1) / np.sqrt(3))
    lq = np.log([np.exp(p.nll_q.mean()) for p in parts])
    lb = np.log([np.exp(p.nll_base.mean()) for p in parts])
    assert s["prompt_ln_ppl_corr_pct"] == pytest.approx(100 * np.corrcoef(lq, lb)[0, 1])
    allt = metrics.TokenStats.concat(parts)
    assert s["ln_ppl_corr_pct"] == pytest.approx(100 * np.corrcoef(allt.nll_q, allt.nll_base)[0, 1])
    assert s["ppl_q"] == pytest.approx(np.exp(allt.nll_q.mean()))
    assert s["ln_ppl_ratio"] == pytest.approx(allt.nll_q.mean() - allt.nll_base.mean())
    assert s["kld_mean"] == pytest.approx(allt.kld.mean())
    assert s["kld_p99"] == pytest.approx(np.percentile(allt.kld, 99))
    assert s["same_top_pct"] == pytest.approx(100 * allt.same_top.mean())
    assert s["n_tokens"] == 28 and s["n_prompts"] == 3


def test_registry_drives_columns_and_crosscheck() -> None:
    names = [m.name for m in metrics.METRICS]
    assert len(names) == len(set(names)), "a metric is declared twice"
    s = metrics.summarize(_parts())
    assert set(names) <= set(s)
    for m in metrics.CROSSCHECKED:
        assert m.tolerance and m.tolerance[0] in ("rel", "abs") and m.tolerance[1] > 0, m.name
    assert {m.name for m in metrics.CROSSCHECKED} >= {"ppl_q", "kld_mean", "same_top_pct"}


def test_identical_models_score_zero() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 50)).astype(np.float32)
    targets = rng.integers(0, 50, 6)
    stats = evaluate.token_stats(logits, logits, targets)
    assert np.allclose(stats.kld, 0, atol=1e-6) and stats.same_top.all()
    s = metrics.summarize([stats])
    assert s["kld_mean"] == pytest.approx(0, abs=1e-6) and s["ppl_q"] == s["ppl_base"]


def test_vocabulary_mismatch_is_refused() -> None:
    with pytest.raises(UserError, match="different vocabularies"):
        evaluate.token_stats(np.zeros((2, 5), np.float32), np.zeros((2, 6), np.float32), np.array([0, 1]))


def test_windows_follow_llama_perplexity() -> None:
    tokens = np.arange(10, 35)  # 25 tokens, n_ctx 8: three whole chunks, the rest dropped
    chunks = evaluate.windows(tokens, 8, bos=1)
    assert len(chunks) == 3
    chunk, targets, first = chunks[1]
    assert first == 4 and chunk[0] == 1 and list(chunk[1:]) == list(range(19, 26))
    assert list(targets) == [23, 24, 25]  # predicted from positions 4..6


def test_token_records_round_trip(tmp_path) -> None:
    stats = _parts((7,))[0]
    path = tmp_path / "x.npz"
    stats.save(path)
    again = metrics.TokenStats.load(path)
    for f in ("nll_base", "nll_q", "kld", "same_top"):
        assert np.array_equal(getattr(stats, f), getattr(again, f))


def test_prompts_share_a_decode_only_where_each_row_stays_as_alone() -> None:
    """The plan's windows (evaluate.py, "which prompts share a decode"): one kind of prompt each
    (under 64 tokens or not, 4k + 1 tokens or not), within the decode's tokens, streams and rows."""
    lengths = [30, 45, 62, 63, 64, 65, 69, 100, 101, 200, 5, 33, 37, 41, 129, 210]
    plan = evaluate.plan(lengths, 512, 4, 400)
    assert sorted(i for w in plan for i in w) == list(range(len(lengths)))
    assert [10] in plan  # 4 scored rows: fewer than the tiled kernel's 8, decoded alone
    for w in plan:
        ns = [lengths[i] for i in w]
        if len(w) == 1:
            continue
        width = evaluate.stream_length(ns)
        assert len({n >= evaluate.FA_TILE for n in ns}) == 1 and len({n % 4 == 1 for n in ns}) == 1
        assert len(w) <= 4 and len(w) * width <= 512 and sum(n - 1 for n in ns) <= 400
        assert width >= max(ns) - 1 and (width >= evaluate.FA_TILE) == (ns[0] >= evaluate.FA_TILE)
        if ns[0] % 4 == 1:
            assert width % 4 == 0  # each stream's rows start on a multiple of four
    assert any(len(w) > 1 for w in plan)
    assert evaluate.stream_length([64, 65]) == 64 and evaluate.stream_length([30, 41]) == 40
    assert evaluate.shares("any", 30) and evaluate.shares("any", 64) and not evaluate.shares("any", 8)
    assert evaluate.shares("4k+1", 65) and not evaluate.shares("4k+1", 64) and not evaluate.shares("none", 65)


def test_the_evaluator_and_its_bench_ceiling_read_one_layout() -> None:
    """decode_layout: the windows of the prompts still to score (indices into every prompt's
    lengths), in the context and streams of the whole run, whichever prompts are left."""
    lengths = [30, 45, 62, 300, 64, 65, 700, 101]
    whole = evaluate.decode_layout(lengths, range(len(lengths)), 49152, True)
    assert sorted(i for w in whole.windows for i in w) == list(range(len(lengths)))
    assert whole.n_ctx == 1024 and whole.stream == 768 and whole.n_seq == max(len(w) for w in whole.windows)
    left = evaluate.decode_layout(lengths, [1, 3, 5], 49152, True)  # a resumed run: three prompts to go
    assert sorted(i for w in left.windows for i in w) == [1, 3, 5]
    assert (left.n_ctx, left.stream) == (whole.n_ctx, whole.stream)  # the context is the run's, so keys match
    assert evaluate.context_tokens([10, 20]) == 512 and evaluate.context_tokens([513]) == 1024
