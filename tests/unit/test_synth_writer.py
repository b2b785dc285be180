"""Synthetic GGUFs without a build: names, the writer's header and blocks, the cache cap, the refusals."""

from __future__ import annotations

import os
import types
from pathlib import Path

import numpy as np
import pytest

from localllms import gguf_file, models, synth
from localllms.errors import UserError
from localllms.selection.published import Hyperparameters, tensor_bytes, tensors
from localllms.synth import cache, dryrun, writer


def tiny(**changes: object) -> Hyperparameters:
    base: dict[str, object] = dict(
        model="Tiny 1M", arch="llama", parameters="1.69M", layers=2, embedding=256, ffn=512, heads=4, kv_heads=2,
        head_dim=64, vocab=1000, tied_embeddings=False, sliding_window=0, swa_period=0, trained_context=4096,
        tokenizer="bpe", source="none", rope_theta=10000.0, norm_eps=1e-5,
    )  # fmt: skip
    base.update(changes)
    return Hyperparameters(**base)  # type: ignore[arg-type]


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LOCALLLMS_CACHE", str(tmp_path))
    monkeypatch.delenv(cache.CAP_ENV, raising=False)
    return tmp_path


def test_names_map_to_rows_and_an_unknown_name_lists_them() -> None:
    rows = synth.names()
    for name in ("qwen2.5-7b", "llama-3.1-8b", "gemma-2-9b", "llama-3.2-1b", "qwen2.5-0.5b", "gemma-3-4b"):
        assert name in rows
    assert rows["qwen2.5-7b"].model == "Qwen2.5-7B-Instruct"
    assert synth.row("smollm2-135m-instruct") == synth.row("smollm2-135m")  # the catalog name works too
    assert synth.row("Gemma-3-1B").model == "Gemma 3 1B"
    with pytest.raises(UserError, match=r"No published architecture is called 'qwen9-1b'; use one of: .*llama-3\.2-1b"):
        synth.row("qwen9-1b")


def test_dry_run_lines_are_parsed() -> None:
    log = (
        "warning: blk.0.attn_v.weight - ncols 576 not divisible by 256 (required for type q6_K) -> falling back\n"
        "[   1/   3] output_norm.weight                 - [   576,      1,      1,      1], type =    f32, size =    0.002 MiB\n"
        "[   2/   3] blk.0.attn_v.weight                - [   576,    192,      1,      1], type =    f16, size =     0.21 MiB ->     0.11 MiB (q8_0)\n"
        "[   3/   3] blk.0.ffn_down.weight              - [  1536,    576,      1,      1], type =    f16, size =     1.69 MiB ->     0.69 MiB (q6_K)\n"
    )  # fmt: skip
    assert dryrun.parse(log, 3) == [
        ("output_norm.weight", (576,), "F32"),
        ("blk.0.attn_v.weight", (576, 192), "Q8_0"),
        ("blk.0.ffn_down.weight", (1536, 576), "Q6_K"),
    ]
    with pytest.raises(UserError, match="listed 3 of 4 tensors"):
        dryrun.parse(log, 4)


def test_blocks_have_small_finite_scales_and_the_right_size() -> None:
    rng = np.random.default_rng(0)
    for type_name in [*writer.HALF_FIELDS, "IQ1_M", "F16", "F32", "BF16"]:
        block, size = writer.block_layout(type_name)
        data = writer.random_blocks(type_name, 64 * size, rng)
        assert data.dtype == np.uint8 and data.size == 64 * size, type_name
        for offset in writer.HALF_FIELDS.get(type_name, ()):
            halves = data.reshape(64, size)[:, offset : offset + 2].copy().view("<f2").astype(np.float32)
            assert np.all((halves >= writer.SCALE_RANGE[0] * 0.99) & (halves <= writer.SCALE_RANGE[1] * 1.01))
    iq1m = writer.random_blocks("IQ1_M", 56 * 8, rng).reshape(8, 56)[:, 48:56].copy().view("<u2")
    packed = (iq1m[:, 0] >> 12) | ((iq1m[:, 1] >> 8) & 0xF0) | ((iq1m[:, 2] >> 4) & 0xF00) | (iq1m[:, 3] & 0xF000)
    scale = packed.astype("<u2").view("<f2").astype(np.float32)  # as ggml's dequantize_row_iq1_m reassembles it
    assert np.all((scale >= writer.SCALE_RANGE[0] * 0.99) & (scale <= writer.SCALE_RANGE[1] * 1.01))
    f16 = writer.random_blocks("F16", 2000, rng).view("<f2")
    assert np.isfinite(f16).all() and 0.01 < float(np.std(f16)) < 0.04


def test_q8_0_blocks_are_normal_weights_quantized_as_llama_quantize_does() -> None:
    # Uniformly random Q8_0 bytes generated 8 % slower than a real file; quantized normal values did not
    blocks = writer.random_blocks("Q8_0", 4096 * 34, np.random.default_rng(1)).reshape(4096, 34)
    d = blocks[:, :2].copy().view("<f2").astype(np.float32).ravel()
    q = blocks[:, 2:].view(np.int8).astype(np.int32)
    assert np.all(np.abs(q).max(axis=1) == 127)  # d = max|x| / 127, so each block's largest quant is ±127
    assert 40 < q.std() < 60  # normal values, not uniform bytes (whose std would be 74)
    x = q * d[:, None]
    assert 0.015 < float(x.std()) < 0.025  # dequantized: the weight scale the F16 matrices use (0.02)


def test_bpe_tokenizer_merges_join_two_tokens_of_the_vocabulary() -> None:
    class Recorder:
        def __getattr__(self, name: str):  # every add_* call is kept
            return lambda value: setattr(self, name.removeprefix("add_"), value)

    rec = Recorder()
    writer.add_tokenizer(rec, tiny(vocab=70_000))  # beyond 65,536: three-character tokens whose prefix is a token
    tokens, merges = rec.token_list, rec.token_merges
    assert len(tokens) == 70_000 and len(set(tokens)) == 70_000 and len(merges) == 70_000 - 258
    vocab = set(tokens)
    for merge in merges[:50] + merges[-50:]:
        left, right = merge.split(" ")
        assert left in vocab and right in vocab and left + right in vocab
    spm = Recorder()
    writer.add_tokenizer(spm, tiny(vocab=1000, tokenizer="spm"))
    assert len(spm.token_list) == len(spm.token_scores) == len(spm.token_types) == 1000
    assert spm.token_list[3 + 10] == "<0x0A>" and spm.tokenizer_model == "llama"


def test_the_written_file_says_it_is_synthetic(tmp_path: Path) -> None:
    hp = tiny()
    plan = [(n, s, "Q8_0" if len(s) > 1 else "F32") for n, s in tensors(hp)]
    path = tmp_path / "tiny.gguf"
    seen: list[int] = []
    size = writer.write_synthetic(path, hp, plan, 7, on_bytes=seen.append)
    header = gguf_file.read(path)
    assert header.get("general.name") == "Tiny 1M (synthetic weights: speed and memory only)"
    assert header.get(synth.SYNTHETIC_KEY) is True and header.get("general.file_type") == 7
    assert header.get("llama.block_count") == 2 and header.get("llama.attention.head_count_kv") == 2
    assert len(header.get("tokenizer.ggml.tokens")) == 1000
    assert [(t.name, t.shape, t.type) for t in header.tensors] == plan
    assert size == path.stat().st_size == sum(seen)
    assert size == header.tensors[0].data_offset + writer.data_bytes(plan)
    norm = next(t for t in header.tensors if t.name == "output_norm.weight")
    values = np.frombuffer(path.read_bytes()[norm.data_offset : norm.data_offset + norm.n_bytes], "<f4")
    assert np.all(values == 1.0)  # norms are ones
    assert models.is_synthetic(path) and not models.is_synthetic(tmp_path / "missing.gguf")
    with pytest.raises(UserError, match="tiny.gguf has synthetic weights .speed and memory only.; quality is never"):
        models.check_not_synthetic(path)
    # the probe has the same header length and no data on disk
    probe = tmp_path / "probe.gguf"
    f16 = [(n, s, "F16" if len(s) > 1 else "F32") for n, s in tensors(hp)]
    assert writer.write_probe(probe, hp, f16, 1) == header.tensors[0].data_offset
    assert probe.stat().st_size == header.tensors[0].data_offset + writer.data_bytes(f16)
    assert tensor_bytes((256, 1000), "F16") == 512_000


def test_quality_entry_point_refuses_a_synthetic_file(tmp_path: Path) -> None:
    from localllms.evaluate import LogitsModel

    hp = tiny()
    path = tmp_path / "tiny.gguf"
    writer.write_synthetic(path, hp, [(n, s, "F32") for n, s in tensors(hp)], 0)
    with pytest.raises(UserError, match="synthetic weights"):
        LogitsModel(types.SimpleNamespace(path=path), n_ctx=64, threads=1)  # type: ignore[arg-type]


def _fake(path: Path, size: int, atime: int) -> Path:
    path.write_bytes(b"\0" * size)
    os.utime(path, ns=(atime, 1_000_000_000))
    return path


def test_cap_evicts_least_recently_used_files_first(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.CAP_ENV, "0.000003")  # 3,000 bytes
    root = cache.directory()
    a = _fake(root / "a.gguf", 1000, 1_000_000_000_000)
    b = _fake(root / "b.gguf", 1000, 2_000_000_000_000)
    c = _fake(root / "c.gguf", 1000, 3_000_000_000_000)
    cache.touch(a)  # a is now the most recently used; its mtime stays
    assert a.stat().st_mtime_ns == 1_000_000_000
    assert cache.files() == [b, c, a]
    assert cache.to_evict(500) == [b]  # 3,000 + 500 > 3,000: the oldest use goes
    assert cache.to_evict(2500) == [b, c, a]
    assert cache.to_evict(0) == []
    assert cache.evict(cache.to_evict(1500)) == 2000 and cache.files() == [a]
    (root / ".x.gguf.partial").write_bytes(b"\0" * 10)
    (root / "plans").mkdir()
    assert cache.clean() == {"removed_files": 2, "freed_bytes": 1010, "directory": str(root)}
    assert not any(root.iterdir())
    monkeypatch.setenv(cache.CAP_ENV, "lots")
    with pytest.raises(UserError, match="is not a number of GB"):
        cache.cap_bytes()
    monkeypatch.delenv(cache.CAP_ENV)
    assert cache.cap_bytes() == int(cache.CAP_GB * 1e9)


def test_a_row_llama_cpp_cannot_load_is_refused_before_the_build_is_needed() -> None:
    with pytest.raises(UserError, match="llama.cpp's qwen2 needs heads x head dim = embedding, not 4 x 32 against 256"):
        synth.make(tiny(arch="qwen2", head_dim=32), "Q4_K_M")


def test_memory_estimate_uses_the_exact_weight_bytes() -> None:
    hp = synth.row("llama-3.2-1b")
    e = synth.memory_estimate(hp, 800_000_000, 4096)
    assert e.weights == 800_000_000 and e.n_ctx == 4096
    assert e.kv == 16 * 4096 * 8 * (64 + 64) * 2  # layers x cells x kv heads x (key + value) x f16
