"""The load generator: the workload of ``workload`` sent to llama-server as serving benchmarks send it.

* ``sequential_latency``: one client, one request after another, after a stated number of
  warm-up requests that are left out of the statistics: every request's TTFT, TPOT, end to end
  and every inter-token gap.
* ``open_loop``: requests sent at the times of a seeded Poisson schedule, whether or not earlier
  ones have finished (the way users arrive), against one server; ``run_probe`` summarizes one
  such run; ``rate_search`` runs it at rising rates to find the highest that meets a service
  target (``options.compare_options`` runs it once per server configuration).
* ``check_open_loop``: the parameters, checked before any server starts. The search's table and
  the sentences read from it are in ``capacity``, outside the measuring code.

Every loop is bounded in count and in time (no request is sent after the time budget; every
request has a total deadline), talks only to the loopback server it started, and every result is
cached by content (``records.cached``) as soon as it is complete.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import defaults, progress
from ..build import BuildInfo, current_build
from ..errors import UserError
from ..models import ResolvedModel
from . import records as rec
from .capacity import Probe, RateSearchResult
from .clients import SEED
from .process import LlamaServer, ManagedServer
from .stats import ServiceTarget, poisson_arrivals, run_summary, search_highest_rate
from .workload import Workload, benchmark_server, timed_request, warm_up

if TYPE_CHECKING:
    pass

MAX_IN_FLIGHT = 64  # open loop: at most this many requests outstanding at once (a bound, far above any level here)


# =========================================================================== one client, in sequence


def sequential_latency(
    model: ResolvedModel,
    workload: Workload,
    n_requests: int = defaults.N_REQUESTS,
    warmup: int = defaults.WARMUP_REQUESTS,
    *,
    threads: int,
    time_budget_s: float = 300.0,
    build: BuildInfo | None = None,
    log_dir: Path | None = None,
) -> dict:
    """``warmup`` + ``n_requests`` streamed requests, one after another, on a fresh one-slot server.

    Returns ``{"command": ..., "records": [...]}`` (one record per request, warm-ups marked);
    bounded by ``time_budget_s`` (no request is sent after it). Cached by content.
    """
    if n_requests < 1 or warmup < 0:
        raise UserError(f"Need at least one measured request and no negative warm-up (got {n_requests}, {warmup}).")
    build = build or current_build()

    def measure() -> dict:
        with benchmark_server(model, threads, 1, (), build, log_dir=log_dir) as srv:
            rows = warm_up(workload, srv, warmup, 0)
            deadline = time.monotonic() + time_budget_s
            t0 = time.perf_counter()
            for i in progress.track(range(n_requests), "latency", "request"):
                if time.monotonic() > deadline:
                    break
                rows.append(timed_request(workload, srv, warmup + i, t0, warmup=False))
            return {"command": srv.command_line(), "records": rows}

    parts = (model.sha256, build.key, threads, workload.identity(), n_requests, warmup, time_budget_s)
    return rec.cached("sequential", parts, measure)


# =========================================================================== open loop


def open_loop(
    srv: ManagedServer,
    workload: Workload,
    rate: float,
    n_requests: int,
    seed: int = SEED,
    first_request: int = 0,
    time_budget_s: float = 120.0,
) -> tuple[list[dict], float]:
    """Send ``n_requests`` at the times of a Poisson schedule of ``rate`` per second, not waiting for answers.

    Bounded: no request is sent after ``time_budget_s``, each request has the endpoint's total
    deadline, and at most ``MAX_IN_FLIGHT`` are outstanding. Returns the records (``scheduled_s``,
    ``sent_s``, ``done_s`` from the first send) and the run's duration (first send to last answer).
    """
    schedule = poisson_arrivals(rate, n_requests, seed)
    futures = []
    with ThreadPoolExecutor(max_workers=min(n_requests, MAX_IN_FLIGHT)) as pool:
        t0 = time.perf_counter()
        for k, at in enumerate(schedule):
            if at > time_budget_s:
                break
            delay = at - (time.perf_counter() - t0)
            if delay > 0:
                time.sleep(delay)
            futures.append(
                pool.submit(
                    timed_request, workload, srv, first_request + k, t0, warmup=False, rate=rate, scheduled_s=at
                )
            )
        rows = [f.result() for f in futures]
    duration = max([r["done_s"] for r in rows], default=0.0)
    return rows, duration


def run_probe(
    srv: ManagedServer, workload: Workload, rate: float, n: int, seed: int, target: ServiceTarget, budget: float
) -> dict:
    """One open-loop run at ``rate``: its records, its duration and its summary against ``target``.

    The run meets the target only if all ``n`` requests were sent within ``budget`` and the share of
    them within the bounds reaches the target's (:meth:`~localllms.serve.stats.ServiceTarget.met_by`).
    """
    import pandas as pd

    rows, duration = open_loop(srv, workload, rate, n, seed, first_request=0, time_budget_s=budget)
    summary = run_summary(pd.DataFrame(rows), target, duration, min_requests=n) if rows else {}
    return {"rate": rate, "records": rows, "duration_s": duration, "summary": summary}


def rate_search(
    model: ResolvedModel,
    workload: Workload,
    target: ServiceTarget,
    start_rate: float = defaults.RATE_START,
    requests_per_rate: int = defaults.REQUESTS_PER_RATE,
    max_probes: int = defaults.MAX_PROBES,
    tolerance: float = defaults.RATE_TOLERANCE,
    parallel: int = defaults.PARALLEL,
    warmup: int = defaults.WARMUP_REQUESTS,
    *,
    threads: int,
    seed: int = SEED,
    time_budget_s: float = 120.0,
    min_rate: float = 0.25,
    build: BuildInfo | None = None,
    log_dir: Path | None = None,
) -> RateSearchResult:
    """The highest Poisson arrival rate at which ``target`` holds, by :func:`~localllms.serve.stats.search_highest_rate`.

    One server with ``parallel`` slots serves every probe (after ``warmup`` requests, excluded);
    each probe sends ``requests_per_rate`` requests on the same seeded schedule scaled to its
    rate, sent within ``time_budget_s``; a probe passes when all of them were sent and the share
    within the bounds reaches the target's (:func:`run_probe`). The search goes no lower than
    ``min_rate``. Each probe is cached as soon as it ends, so an interrupted search resumes where it stopped.
    """
    check_open_loop(start_rate, requests_per_rate, max_probes, tolerance, parallel)
    build = build or current_build()
    base = (model.sha256, build.key, threads, workload.identity(), parallel, warmup, seed, requests_per_rate)
    state: dict[str, Any] = {"server": None, "warmup": []}
    probes: list[Probe] = []
    bar = progress.Bar(max_probes, "rate search", "rate")

    def server() -> LlamaServer:
        if state["server"] is None:
            srv = benchmark_server(model, threads, parallel, (), build, log_dir=log_dir).start()
            state["server"] = srv
            state["warmup"] = warm_up(workload, srv, warmup, 10_000)
        return state["server"]

    def passes(rate: float) -> bool:
        budget = time_budget_s
        got = rec.cached(
            "probe",
            (*base, rate, target.ttft_ms, target.tpot_ms, budget),
            lambda: run_probe(server(), workload, rate, requests_per_rate, seed, target, budget),
        )
        probes.append(Probe(got["rate"], got["records"], got["duration_s"], got["summary"]))
        bar.update()
        met, sent = int(got["summary"].get("met", 0)), int(got["summary"].get("sent", 0))
        bar.set_postfix_str(f"{rate:g} req/s: {met} of {sent} within target")
        # the verdict from the counts, not the stored summary: the target's share is not in the cache key
        return target.met_by(met, sent, requests_per_rate)

    try:
        search = search_highest_rate(passes, start_rate, max_probes, tolerance, min_rate)
        command = (state["server"] or benchmark_server(model, threads, parallel, (), build)).command_line()
    finally:
        bar.close()
        if state["server"] is not None:
            state["server"].stop()
    return RateSearchResult(probes, search, target, command, parallel, state["warmup"], seed)


# =========================================================================== parameters


def check_open_loop(
    start_rate: float, requests_per_rate: int, max_probes: int, tolerance: float, parallel: int
) -> None:
    """The open-loop parameters, checked before any server starts (one sentence for the first bad one)."""
    if not isinstance(start_rate, int | float) or not start_rate > 0:
        raise UserError(f"RATE_START must be a positive number of requests per second, not {start_rate!r}.")
    for name, value in (("REQUESTS_PER_RATE", requests_per_rate), ("MAX_PROBES", max_probes), ("PARALLEL", parallel)):
        if not isinstance(value, int | float) or int(value) != value or value < 1:
            raise UserError(f"{name} must be a whole number of at least 1, not {value!r}.")
    if not isinstance(tolerance, int | float) or not tolerance > 0:
        raise UserError(f"RATE_TOLERANCE must be positive (a share of the rate, e.g. 0.25), not {tolerance!r}.")
