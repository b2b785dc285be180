"""Synthetic GGUFs on the real build: llama-quantize's own type mix, finite logits, the refusals, the cache."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from localllms import gguf_file, synth
from localllms.build import BuildInfo
from localllms.errors import UserError
from localllms.models import resolve
from localllms.quantize import make_reference, quantize
from localllms.selection import published
from localllms.synth import cache, dryrun

CATALOG = [("smollm2-135m-instruct", "smollm2-135m"), ("gemma-3-270m", "gemma-3-270m")]


def _tensors(path: Path) -> list[tuple[str, str, tuple[int, ...], int]]:
    return [(t.name, t.type, t.shape, t.n_bytes) for t in gguf_file.read(path).tensors]


@pytest.mark.parametrize("qtype", ["Q4_K_M", "Q8_0", "Q2_K"])
@pytest.mark.parametrize(("catalog", "name"), CATALOG)
def test_type_mix_equals_what_llama_quantize_makes(build: BuildInfo, catalog: str, name: str, qtype: str) -> None:
    real = quantize(make_reference(resolve(catalog), build), qtype, build)  # cached by the study
    made = synth.make(name, qtype, build=build, progress_bars=False)
    # same tensors, in the same order, with the same types, shapes and bytes
    assert _tensors(made.path) == _tensors(real.path)


def test_published_type_rules_agree_with_the_dry_run(build: BuildInfo) -> None:
    # the catalog rows, the 70B rule (llama and qwen2 at 80 layers), Qwen-72B's fallbacks, a gemma2
    for name in ("smollm2-135m", "gemma-3-270m", "llama-3.1-70b", "qwen2.5-72b", "gemma-2-9b", "llama-3.2-1b"):
        hp = synth.row(name)
        for ftype in ("Q4_K_M", "Q5_K_M", "Q8_0"):
            plan = dryrun.plan(hp, ftype, build)
            differ = [(n, t) for n, s, t in plan.tensors if published.tensor_type(n, s, ftype, hp) != t]
            assert differ == [], (name, ftype, differ[:5])


def test_an_importance_matrix_type_is_refused(build: BuildInfo) -> None:
    with pytest.raises(UserError, match="makes IQ2_XS only with an importance matrix"):
        dryrun.plan(synth.row("smollm2-135m"), "IQ2_XS", build)


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma-3-270m", "qwen2.5-0.5b"])
def test_synthetic_files_run_with_finite_logits(build: BuildInfo, name: str) -> None:
    from llama_cpp import Llama  # the conftest build fixture pointed the binding at this build

    made = synth.make(name, "Q4_K_M", build=build, progress_bars=False)
    llm = Llama(model_path=str(made.path), n_ctx=128, n_batch=128, logits_all=True, verbose=False, n_threads=2)
    try:
        tokens = [int(t) for t in np.random.default_rng(0).integers(0, llm.n_vocab(), 64)]
        llm.eval(tokens)
        logits = np.asarray(llm.scores[: len(tokens)])
    finally:
        llm.close()
    assert logits.shape == (64, synth.row(name).vocab)
    assert np.isfinite(logits).all() and logits.std() > 0
    cmd = [
        str(build.tool("llama-bench")),
        "-m",
        str(made.path),
        "-p",
        "32",
        "-n",
        "8",
        "-r",
        "1",
        "-t",
        "2",
        "-o",
        "json",
    ]
    runs = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert len(runs) == 2 and all(r["avg_ts"] > 0 for r in runs)


def test_a_rerun_reuses_the_file(build: BuildInfo) -> None:
    first = synth.make("smollm2-135m", "Q4_K_M", build=build, progress_bars=False)
    mtime = first.path.stat().st_mtime_ns
    again = synth.make("smollm2-135m", "Q4_K_M", build=build, progress_bars=False)
    assert again.path == first.path and not again.written
    assert again.path.stat().st_mtime_ns == mtime  # not written again
    assert again.path.stat().st_atime_ns >= again.path.stat().st_mtime_ns  # its use is recorded


def test_a_72b_is_refused_before_anything_is_written(build: BuildInfo) -> None:
    before = cache.files()
    with pytest.raises(
        UserError,
        match=r"^qwen2\.5-72b at Q4_K_M needs \d+\.\d GB of disk and \d+\.\d GiB of memory at 4096 tokens; "
        r"this machine has \d+\.\d GB free and \d+\.\d GiB available: pick a smaller model or type\.$",
    ):
        synth.make("qwen2.5-72b", "Q4_K_M", build=build, progress_bars=False)
    assert cache.files() == before


def test_the_cap_evicts_through_make(build: BuildInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALLLMS_CACHE", str(tmp_path))
    hp = published.Hyperparameters(
        model="Tiny", arch="llama", parameters="1.69M", layers=2, embedding=256, ffn=512, heads=4, kv_heads=2,
        head_dim=64, vocab=1000, tied_embeddings=False, sliding_window=0, swa_period=0, trained_context=4096,
        tokenizer="bpe", source="none", rope_theta=10000.0, norm_eps=1e-5,
    )  # fmt: skip
    first = synth.make(hp, "Q8_0", build=build, progress_bars=False)
    monkeypatch.setenv(cache.CAP_ENV, str(1.5 * first.file_bytes / 1e9))  # room for one file, not two
    second = synth.make(hp, "Q4_K_M", build=build, progress_bars=False)
    assert cache.files() == [second.path] and not first.path.exists()
    monkeypatch.setenv(cache.CAP_ENV, str(0.5 * first.file_bytes / 1e9))
    with pytest.raises(UserError, match=r"more than the synthetic cache's cap .* raise LOCALLLMS_SYNTH_CAP_GB"):
        synth.make(hp, "F16", build=build, progress_bars=False)
    assert synth.command(None, "Q4_K_M", 4096, clean=True)["removed_files"] == 1
    assert cache.files() == []


def test_the_study_refuses_a_synthetic_model(build: BuildInfo) -> None:
    from localllms import study
    from localllms.study.config import StudyConfig

    made = synth.make("smollm2-135m", "Q4_K_M", build=build, progress_bars=False)
    with pytest.raises(UserError, match="has synthetic weights .speed and memory only.; quality is never computed"):
        study.run(StudyConfig(model=str(made.path), quant_types=("Q8_0",)))


def test_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from localllms.__main__ import main

    assert main(["synth", "--list"]) == 0
    assert "qwen2.5-7b: Qwen2.5-7B-Instruct" in capsys.readouterr().out
    assert main(["synth", "llama-9"]) == 2
    assert "No published architecture is called 'llama-9'" in capsys.readouterr().err
    assert main(["synth", "smollm2-135m", "--quant", "Q4_K_M"]) == 0
    out = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert out["name"] == "smollm2-135m" and out["tensors"] == "272" and out["types"].startswith("Q5_0=166")


@pytest.mark.slow
def test_a_synthetic_f16_1b_quantized_by_llama_quantize_equals_the_direct_file(
    build: BuildInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCALLLMS_CACHE", str(tmp_path))  # 2.5 GB of F16 that nothing else needs
    f16 = synth.make("llama-3.2-1b", "F16", build=build, progress_bars=False)
    assert {t for _, t, _, _ in _tensors(f16.path)} == {"F16", "F32"}
    quantized = tmp_path / "quantized.gguf"
    subprocess.run([str(build.tool("llama-quantize")), str(f16.path), str(quantized), "Q4_K_M"],
                   capture_output=True, check=True)  # fmt: skip
    direct = synth.make("llama-3.2-1b", "Q4_K_M", build=build, progress_bars=False)
    assert _tensors(direct.path) == _tensors(quantized)
