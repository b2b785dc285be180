"""The machine's memory read bandwidth, measured the way llama.cpp reads weights.

A small C program (compiled once with OpenMP) streams a buffer with every thread reading its own
contiguous block, as generation reads weights: an anonymous buffer far larger than the caches
(``memory_bandwidth``), or a model file's own pages mapped as llama.cpp maps them
(``file_bandwidth``). ``generation_roofline`` sets each generation run between two such probes
(the bench script's roofline item).
"""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .build import BuildInfo
from .errors import UserError
from .llama_bench import bytes_per_token, llama_bench
from .models import ResolvedModel
from .paths import cache_dir, content_key, write_atomic

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
    def best_gbs(self) -> float:
        return max(self.samples_gbs)


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
