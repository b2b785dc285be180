"""make bench's evaluator item: the decodes it times against llama-bench's pp512, and the arithmetic beside them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from localllms import evaluate
from localllms.corpus import build_prompts
from localllms.selection.published import load_published, tensors

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("model", ["smollm2", "gemma"])
def test_the_output_layer_arithmetic_reads_the_same_from_the_file_and_the_published_shapes(
    bench, model, request
) -> None:
    m = request.getfixturevalue(model)
    published = next(hp for hp in load_published() if hp.catalog == m.spec)
    from_file = bench.file_output_layer_share(m.path)
    assert from_file == bench.output_layer_share(tensors(published))
    head, body = from_file
    assert head == published.vocab * published.embedding  # tied: the token embedding is the output matrix


def test_last_rows_only_returns_each_streams_last_position_as_alone(bench, reference, build, tmp_path) -> None:
    """The measurement-only model asks for one row per stream, and that row is the logits of the
    stream's last position (checked against the same padded sequence decoded alone)."""
    texts = build_prompts(100, source="offline", out_dir=tmp_path).texts
    token_lists, _ = evaluate.tokenize(reference, texts, build)
    token_lists = sorted(token_lists, key=len)[:3]  # the shortest: three fit one micro-batch
    assert all(evaluate.shares(evaluate.packing(reference.path, build), len(t)) for t in token_lists)
    width = evaluate.stream_length([len(t) for t in token_lists])
    last = bench._LastRowsOnly(reference, 512, 2, build, "f16", 3, 512)
    alone = evaluate.LogitsModel(reference, 512, 2, build)
    try:
        rows = last.logits_shared(token_lists).copy()
        assert rows.shape == (3, last.n_vocab)
        for s, t in enumerate(token_lists):
            padded = np.concatenate([t[:width], np.full(width - min(len(t), width), t[-1])])
            # alone, one row reaches the output layer (ggml's dot product), beside the others three (tinyBLAS):
            # they round apart by about 1e-3, far below what separates two positions' logits
            np.testing.assert_allclose(rows[s], alone.logits(padded, width - 1, width)[0], rtol=0, atol=5e-3)
        assert not np.allclose(rows[0], rows[1])  # different prompts, different rows
    finally:
        last.close()
        alone.close()


def test_one_decode_asks_for_every_rows_logits_or_the_last_only(bench, smollm2, build) -> None:
    one = bench.OneDecode(smollm2, 64, 2)
    try:
        assert one.seconds(every_row=True) > 0
        assert one.has_row(0) and one.has_row(31) and one.has_row(63)
        one.seconds(every_row=False)
        assert not one.has_row(0) and not one.has_row(31) and one.has_row(63)
    finally:
        one.close()
