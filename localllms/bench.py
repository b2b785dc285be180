"""Speed: llama-bench throughput, and the machine's memory read bandwidth.

Text generation on a CPU is bound by memory: every new token reads (nearly) every
weight once. ``bytes_per_token`` estimates that traffic from the GGUF tensors and
``memory_bandwidth`` measures how fast this machine can read memory, so a variant's
generation speed can be placed against the physical limit (a roofline).
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

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
    key = content_key(code_key("bench"), model.sha256, build.key, threads, repetitions, n_prompt, n_gen)
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


_MEMBW_C = textwrap.dedent(
    r"""
    // Read bandwidth as llama.cpp's generation reads weights: every thread streams its own block
    // of rows (a contiguous, disjoint range) once a pass. Given a file, the buffer is that file
    // mapped from the page cache, as llama.cpp maps a model: the same physical pages its weights
    // are read from. Otherwise an anonymous buffer far larger than the caches.
    #include <stdio.h>
    #include <stdlib.h>
    #include <stdint.h>
    #include <fcntl.h>
    #include <sys/mman.h>
    #include <sys/stat.h>
    #include <omp.h>
    int main(int argc, char **argv) {
        size_t bytes = (size_t)atol(argv[1]) << 20; int passes = atoi(argv[2]); int threads = atoi(argv[3]);
        uint64_t *a;
        if (argc > 4) {
            int fd = open(argv[4], O_RDONLY); struct stat st;
            if (fd < 0 || fstat(fd, &st) != 0) { perror(argv[4]); return 1; }
            bytes = (size_t)st.st_size & ~(size_t)63;
            a = mmap(NULL, bytes, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
            if (a == MAP_FAILED) { perror("mmap"); return 1; }
            uint64_t w = 0;  /* an unmeasured pass: the first one after mapping runs slow */
            #pragma omp parallel for simd schedule(static) num_threads(threads) reduction(+:w)
            for (size_t i = 0; i < bytes / sizeof(uint64_t); i++) w += a[i];
            if (w == 1) printf("w\n");
        } else {
            a = aligned_alloc(64, bytes);
            #pragma omp parallel for schedule(static) num_threads(threads)
            for (size_t i = 0; i < bytes / sizeof(uint64_t); i++) a[i] = i;  /* first touch by its reader */
        }
        size_t n = bytes / sizeof(uint64_t);
        uint64_t sink = 0;
        for (int r = 0; r < passes; r++) {
            double t0 = omp_get_wtime(); uint64_t s = 0;
            #pragma omp parallel for simd schedule(static) num_threads(threads) reduction(+:s)
            for (size_t i = 0; i < n; i++) s += a[i];
            double dt = omp_get_wtime() - t0; sink += s;
            printf("pass %d %.3f GB/s\n", r, bytes / dt / 1e9);
        }
        printf("sink %llu\n", (unsigned long long)(sink & 1));
        return 0;
    }
    """
)


@dataclass(frozen=True)
class Bandwidth:
    """Read bandwidth samples (GB/s), one per pass over the buffer; the median is the figure used."""

    samples_gbs: list[float]
    buffer_mib: int
    threads: int

    @property
    def median_gbs(self) -> float:
        return float(np.median(self.samples_gbs))

    @property
    def spread_gbs(self) -> tuple[float, float]:
        """The 10th and 90th percentiles of the samples: how much the machine moved while measured."""
        return float(np.percentile(self.samples_gbs, 10)), float(np.percentile(self.samples_gbs, 90))

    @property
    def best_gbs(self) -> float:
        return max(self.samples_gbs)

    def __add__(self, other: Bandwidth) -> Bandwidth:
        return Bandwidth(self.samples_gbs + other.samples_gbs, self.buffer_mib, self.threads)


def _membw_exe() -> Path:
    exe = cache_dir("bench") / f"membw-{content_key(_MEMBW_C)}"
    if not exe.exists():
        src = write_atomic(exe.with_suffix(".c"), _MEMBW_C)
        partial = exe.with_name(exe.name + ".partial")
        proc = subprocess.run(
            ["cc", "-O3", "-march=native", "-fopenmp", str(src), "-o", str(partial)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise UserError("Could not compile the bandwidth benchmark: " + proc.stderr.strip().splitlines()[-1])
        partial.replace(exe)
    return exe


def memory_bandwidth(threads: int, buffer_mib: int = 1024, passes: int = 10) -> Bandwidth:
    """Measure this machine's memory read bandwidth: ``passes`` samples in GB/s (use the median)."""
    return _probe([str(buffer_mib), str(passes), str(threads)], buffer_mib, threads)


def file_bandwidth(path: Path, threads: int, passes: int = 3, min_mib: int = 1024) -> Bandwidth:
    """Read bandwidth over a model file's own pages, mapped as llama.cpp maps it: at least
    ``passes`` passes and at least ``min_mib`` read (a pass over a small file takes milliseconds,
    and one preempted thread would decide a short probe)."""
    mib = (Path(path).stat().st_size if Path(path).is_file() else 0) >> 20
    passes = max(passes, -(-min_mib // max(mib, 1)))
    return _probe(["0", str(passes), str(threads), str(path)], mib, threads)


def _probe(args: list[str], buffer_mib: int, threads: int) -> Bandwidth:
    proc = subprocess.run([str(_membw_exe()), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError("The bandwidth probe failed: " + (proc.stderr.strip() or f"exit {proc.returncode}"))
    samples = [float(line.split()[2]) for line in proc.stdout.splitlines() if line.startswith("pass ")]
    return Bandwidth(samples_gbs=samples, buffer_mib=buffer_mib, threads=threads)


@dataclass(frozen=True)
class Roofline:
    """One model's generation runs, each set between two reads of its own file's pages.

    The read ceiling of a shared machine moves from minute to minute; a ratio of a speed to a
    ceiling measured minutes away mixes two states of the machine. Each run here is paired
    with the ceiling measured in the seconds around it, and the ratio is taken per pair.
    """

    model: str
    bytes_per_token: int
    tg_tps: list[float]
    ceiling_gbs: list[float]  # mean of the probes just before and just after each run

    @property
    def achieved_gbs(self) -> list[float]:
        return [t * self.bytes_per_token / 1e9 for t in self.tg_tps]

    @property
    def ratios(self) -> list[float]:
        return [a / c for a, c in zip(self.achieved_gbs, self.ceiling_gbs, strict=True)]

    @property
    def ratio(self) -> float:
        return float(np.median(self.ratios))

    @property
    def ratio_spread(self) -> tuple[float, float]:
        return float(np.percentile(self.ratios, 10)), float(np.percentile(self.ratios, 90))


def generation_roofline(
    models: Sequence[ResolvedModel],
    threads: int,
    repetitions: int = 8,
    n_gen: int = 128,
    passes: int = 3,
    build: BuildInfo | None = None,
) -> dict[str, Roofline]:
    """Generation speed of each model against the read ceiling, interleaved: for every
    repetition, each model in turn is probed (its file's pages), run once by llama-bench, and
    probed again."""
    runs: dict[str, tuple[list[float], list[float]]] = {m.display: ([], []) for m in models}
    for _ in range(repetitions):
        for m in models:
            before = file_bandwidth(m.path, threads, passes).median_gbs
            tg = llama_bench(m, threads, 1, 0, n_gen, build, use_cache=False).tg_tps
            after = file_bandwidth(m.path, threads, passes).median_gbs
            runs[m.display][0].append(tg)
            runs[m.display][1].append((before + after) / 2)
    return {m.display: Roofline(m.display, bytes_per_token(m.path), *runs[m.display]) for m in models}


# --------------------------------------------------------------------------- sweeps


@dataclass(frozen=True)
class SweepPoint:
    """One llama-bench test of a sweep: prompt processing (``n_gen == 0``) or generation at a
    thread count, a depth (tokens already in the context) and a repack setting."""

    model_sha256: str
    test: str  # "pp" or "tg"
    n_prompt: int
    n_gen: int
    depth: int
    threads: int
    repack: bool
    tps: float
    sd: float
    samples: list[float]
    measured_at: str


def parse_llama_bench_sweep(rows: list[dict], model_sha256: str) -> list[SweepPoint]:
    """Every test of a llama-bench JSON run with lists of settings, one point each."""
    return [
        SweepPoint(
            model_sha256=model_sha256,
            test="tg" if r["n_gen"] else "pp",
            n_prompt=int(r["n_prompt"]),
            n_gen=int(r["n_gen"]),
            depth=int(r.get("n_depth", 0)),
            threads=int(r["n_threads"]),
            repack=bool(r.get("repack", True)),
            tps=float(r["avg_ts"]),
            sd=float(r["stddev_ts"]),
            samples=[float(x) for x in r["samples_ts"]],
            measured_at=str(r["test_time"]),
        )
        for r in rows
    ]


def llama_bench_sweep(
    model: ResolvedModel,
    threads: Sequence[int] = (1,),
    depths: Sequence[int] = (0,),
    n_prompt: int = 512,
    n_gen: int = 128,
    repetitions: int = 3,
    repack: Sequence[bool] = (True,),
    build: BuildInfo | None = None,
    use_cache: bool = True,
) -> list[SweepPoint]:
    """llama-bench over every combination of thread count, depth and repack setting, in one run
    with its own list syntax (``-t 1,2 -d 0,512,2048 --repack 0,1 -o json``).

    Depth is the number of tokens already in the context when a test starts (llama-bench fills
    them first, untimed). Cached like :func:`llama_bench`, by model, build and every setting.
    """
    if not threads or not depths or not repack:
        raise UserError("A llama-bench sweep needs at least one thread count, one depth and one repack setting.")
    if min(threads) < 1 or min(depths) < 0 or repetitions < 1 or (n_prompt == 0 and n_gen == 0):
        raise UserError(
            "llama-bench sweep: threads and repetitions must be at least 1, depths at least 0, "
            "and N_PROMPT or N_GEN above 0."
        )
    build = build or current_build()
    settings = (list(threads), list(depths), n_prompt, n_gen, repetitions, [bool(r) for r in repack])
    key = content_key(code_key("bench"), "sweep", model.sha256, build.key, *settings)
    cached = cache_dir("bench") / f"sweep-{key}.json"
    if use_cache and not remeasuring() and cached.exists():
        return [SweepPoint(**p) for p in json.loads(cached.read_text())]

    def csv(xs: Sequence[object]) -> str:
        return ",".join(str(int(x)) for x in xs)

    cmd = [str(build.tool("llama-bench")), "-m", str(model.path), "-r", str(repetitions), "-t", csv(threads),
           "-d", csv(depths), "-p", str(n_prompt), "-n", str(n_gen), "--repack", csv(repack), "-o", "json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(
            f"llama-bench failed on {model.path.name} (exit {proc.returncode}): " + proc.stderr.strip().splitlines()[-1]
        )
    points = parse_llama_bench_sweep(json.loads(proc.stdout), model.sha256)
    write_atomic(cached, json.dumps([asdict(p) for p in points]))
    return points
