"""A bounded closed-loop load test: several clients against one llama-server with as many slots.

Each client sends its next request as soon as its last one is answered (a closed loop, like a
fixed number of users who never pause); the open loop of ``loadgen`` sends at a given rate
instead. Bounded in count (requests per client) and in time (no new request after the budget of
a level), on loopback only, so an overloaded or dead server ends the test instead of hanging it.
Each level is cached by content as soon as it ends.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import progress
from ..build import BuildInfo, current_build
from ..errors import UserError
from ..models import ResolvedModel
from . import records as rec
from .clients import CHAT_USER
from .process import LlamaServer
from .workload import Workload, timed_request


def load_test(
    model: ResolvedModel,
    concurrency: Sequence[int] = (1, 2, 4, 8),
    requests_per_client: int = 2,
    max_tokens: int = 32,
    *,
    threads: int,
    time_budget_s: float = 60.0,
    build: BuildInfo | None = None,
    log_dir: Path | None = None,
    workload: Workload | None = None,
):
    """For each level c: a server with c slots, c clients each sending up to ``requests_per_client`` requests.

    ``workload`` defaults to the chapter's question (chat for a chat model, a text completion for a
    base model) with answers of up to ``max_tokens`` tokens. Bounded in count and time (no new
    request after ``time_budget_s`` per level), loopback only. Returns one row per level
    (aggregate tokens/s, latency median/p95, failed requests, health after) and the per-request records.
    """
    import pandas as pd

    if not concurrency or any(int(c) != c or c < 1 for c in concurrency):
        raise UserError(f"CONCURRENCY must list whole numbers of clients, at least 1, not {list(concurrency)!r}.")
    if requests_per_client < 1:
        raise UserError(f"REQUESTS_PER_CLIENT must be at least 1, not {requests_per_client}.")
    build = build or current_build()
    workload = workload or Workload((CHAT_USER,), max_tokens, chat=model.info.chat_template, ignore_eos=False)

    def level(c: int) -> dict:
        with LlamaServer(model, threads=threads, parallel=c, build=build, log_dir=log_dir) as srv:
            deadline = time.monotonic() + time_budget_s
            t0 = time.perf_counter()

            def client(cid: int) -> list[dict]:
                results = []
                for i in range(requests_per_client):
                    if time.monotonic() > deadline:
                        break
                    results.append(timed_request(workload, srv, cid * requests_per_client + i, t0, client=cid))
                return results

            with ThreadPoolExecutor(max_workers=c) as pool:
                results = [r for batch in pool.map(client, range(c)) for r in batch]
            wall = time.perf_counter() - t0
            try:
                healthy = srv.health().get("status") == "ok"
            except UserError:
                healthy = False
            return {"command": srv.command_line(), "records": results, "wall_s": wall, "healthy": healthy}

    rows, per_request = [], []
    for c in progress.track(list(concurrency), "closed-loop load", "level"):
        parts = (model.sha256, build.key, threads, workload.identity(), c, requests_per_client, time_budget_s)
        got = rec.cached("closed-loop", parts, lambda c=c: level(c))
        results, wall = got["records"], got["wall_s"]
        ok = [r for r in results if r["ok"]]
        lat = pd.Series([r["e2e_ms"] for r in ok], dtype=float)
        tokens = sum(r["output_tokens"] for r in ok)
        rows.append(
            {
                "clients": c,
                "parallel_slots": c,
                "requests": len(results),
                "failed": len(results) - len(ok),
                "output_tokens": tokens,
                "wall_s": round(wall, 2),
                "aggregate_tokens_per_s": round(tokens / wall, 1) if wall else 0.0,
                "latency_median_ms": round(lat.median(), 1) if len(lat) else None,
                "latency_p95_ms": round(lat.quantile(0.95), 1) if len(lat) else None,
                "healthy_after": got["healthy"],
            }
        )
        per_request += [{"clients": c, "command": got["command"], **r} for r in results]
    return pd.DataFrame(rows), pd.DataFrame(per_request)
