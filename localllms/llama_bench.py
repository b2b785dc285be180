"""llama-bench's throughput, parsed from its JSON, and the bytes a generated token reads.

Text generation on a CPU is bound by memory: every new token reads (nearly) every weight once.
``bytes_per_token`` estimates that traffic from the GGUF tensors, so a variant's generation speed can
be set against the read bandwidth ``localllms.bandwidth`` measures (a roofline). The book's own speeds
come from interleaved rounds of single llama-bench runs (``localllms.rounds``); ``llama_bench`` here
serves the bench script and the tests.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from . import gguf_file
from .build import BuildInfo, current_build
from .errors import UserError
from .models import ResolvedModel
from .paths import cache_dir, code_key, content_key, remeasuring, write_atomic


@dataclass(frozen=True)
class Throughput:
    """llama-bench's result for one model: mean and standard deviation over repetitions."""

    model_sha256: str
    pp_tps: float
    pp_sd: float
    tg_tps: float
    tg_sd: float
    n_prompt: int
    n_gen: int
    repetitions: int
    threads: int
    pp_samples: list[float]
    tg_samples: list[float]
    measured_at: str


def llama_bench(
    model: ResolvedModel,
    threads: int,
    repetitions: int = 10,
    n_prompt: int = 512,
    n_gen: int = 128,
    build: BuildInfo | None = None,
    use_cache: bool = True,
) -> Throughput:
    """Prompt processing and generation tokens/s from ``llama-bench -o json``.

    Cached by model hash, build and every setting, so an unchanged rerun of the book
    reuses the measurement and a changed setting measures again.
    """
    build = build or current_build()
    key = content_key(code_key("llama_bench"), model.sha256, build.key, threads, repetitions, n_prompt, n_gen)
    cached = cache_dir("bench") / f"{key}.json"
    if use_cache and not remeasuring() and cached.exists():
        return Throughput(**json.loads(cached.read_text()))
    cmd = [str(build.tool("llama-bench")), "-m", str(model.path), "-r", str(repetitions), "-t", str(threads),
           "-p", str(n_prompt), "-n", str(n_gen), "-o", "json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(
            f"llama-bench failed on {model.path.name} (exit {proc.returncode}): " + proc.stderr.strip().splitlines()[-1]
        )
    result = parse_llama_bench(json.loads(proc.stdout), model.sha256, n_prompt, n_gen, repetitions, threads)
    write_atomic(cached, json.dumps(asdict(result)))
    return result


def parse_llama_bench(
    rows: list[dict], model_sha256: str, n_prompt: int, n_gen: int, repetitions: int, threads: int
) -> Throughput:
    """One Throughput from llama-bench's JSON rows (one row per test: pp, then tg).

    A zero size skips that test (llama-bench -p 0 or -n 0): its figures are then NaN.
    """
    missing = {"avg_ts": float("nan"), "stddev_ts": float("nan"), "samples_ts": [], "test_time": ""}
    pp = next((r for r in rows if r["n_prompt"] == n_prompt and r["n_gen"] == 0), missing) if n_prompt else missing
    tg = next((r for r in rows if r["n_gen"] == n_gen and r["n_prompt"] == 0), missing) if n_gen else missing
    return Throughput(
        model_sha256=model_sha256,
        pp_tps=pp["avg_ts"],
        pp_sd=pp["stddev_ts"],
        tg_tps=tg["avg_ts"],
        tg_sd=tg["stddev_ts"],
        n_prompt=n_prompt,
        n_gen=n_gen,
        repetitions=repetitions,
        threads=threads,
        pp_samples=list(pp["samples_ts"]),
        tg_samples=list(tg["samples_ts"]),
        measured_at=tg["test_time"] or pp["test_time"],
    )


def bytes_per_token(path: Path) -> int:
    """Bytes of weights read to generate one token.

    Every weight matrix is read once per token. The token-embedding table is the
    exception when the model has a separate output matrix: then only one of its rows
    is read. When the embeddings are tied to the output, the whole table is read.
    """
    tensors = gguf_file.read(path).tensors
    names = {t.name for t in tensors}
    tied = "output.weight" not in names
    return sum(int(t.n_bytes) for t in tensors if tied or t.name != "token_embd.weight")
