"""Server options on the same load: one fresh llama-server per configuration, the same open-loop run.

* ``SERVER_OPTIONS``: the configurations compared (slots, continuous batching on or off).
* ``compare_options``: the same seeded open-loop run against each (the rate search's own run
  reused for the default configuration). The table, the winner and the sentences computed from
  the runs are in ``options_reading``, outside the measuring code, so rewording them never
  measures again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .. import defaults, progress
from ..build import BuildInfo, current_build
from ..models import ResolvedModel
from . import records as rec
from .clients import SEED
from .loadgen import RateSearchResult, run_probe
from .stats import ServiceTarget
from .workload import Workload, benchmark_server, warm_up

# llama-server options that change these numbers for a local user: the number of slots (-np), and
# continuous batching (-cb, on by default; --no-cont-batching turns it off). Label -> (slots, extra arguments).
SERVER_OPTIONS: dict[str, tuple[int, tuple[str, ...]]] = {
    "1 slot": (1, ()),
    "4 slots": (4, ()),
    "8 slots": (8, ()),
    "4 slots, no continuous batching": (4, ("--no-cont-batching",)),
}
FROM_SEARCH = " (the rate search's run)"


def compare_options(
    model: ResolvedModel,
    workload: Workload,
    target: ServiceTarget,
    rate: float,
    requests: int = defaults.REQUESTS_PER_RATE,
    options: dict[str, tuple[int, tuple[str, ...]]] | None = None,
    warmup: int = defaults.WARMUP_REQUESTS,
    *,
    threads: int,
    seed: int = SEED,
    time_budget_s: float = 120.0,
    searched: RateSearchResult | None = None,
    build: BuildInfo | None = None,
    log_dir: Path | None = None,
) -> list[dict]:
    """The same open-loop run (``requests`` at ``rate`` per second, same seed) against one server per option set.

    Returns one dict per option set: its label, command line, summary and records. Each is cached
    as soon as it ends. A rate search (``searched``) that already ran this rate with the same requests, seed and
    default options supplies that configuration's run instead of a new one (its label says so).
    """
    build = build or current_build()
    options = options or SERVER_OPTIONS
    out = []
    for label, (parallel, extra) in progress.track(list(options.items()), "server options", "config"):
        reused = _from_search(searched, rate, parallel, extra, requests, seed, target) if searched else None
        if reused is not None:
            out.append({"label": label + FROM_SEARCH, "parallel": parallel, "extra_args": [], **reused})
            continue

        def measure(parallel: int = parallel, extra: tuple[str, ...] = extra) -> dict:
            with benchmark_server(model, threads, parallel, extra, build, log_dir=log_dir) as srv:
                warm = warm_up(workload, srv, warmup, 10_000)
                got = run_probe(srv, workload, rate, requests, seed, target, time_budget_s)
                return {"command": srv.command_line(), "warmup": warm, **got}

        parts = (model.sha256, build.key, threads, workload.identity(), parallel, list(extra), warmup, seed, requests)
        got = rec.cached("options", (*parts, rate, target.ttft_ms, target.tpot_ms, time_budget_s), measure)
        out.append({"label": label, "parallel": parallel, "extra_args": list(extra), **got})
    return out


def _from_search(
    searched: RateSearchResult,
    rate: float,
    parallel: int,
    extra: Sequence[str],
    requests: int,
    seed: int,
    t: ServiceTarget,
) -> dict | None:
    same = parallel == searched.parallel and not extra and seed == searched.seed and t == searched.target
    probe = next((p for p in searched.probes if p.rate == rate and len(p.records) == requests), None)
    if not same or probe is None:
        return None
    return {"command": searched.command, "warmup": [], "rate": rate, "records": probe.records,
            "duration_s": probe.duration_s, "summary": probe.summary}  # fmt: skip
