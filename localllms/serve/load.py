"""A bounded load test: several clients against one llama-server with as many slots.

Bounded in count (requests per client) and in time (no new request after the budget of a
level), on loopback only, so an overloaded or dead server ends the test instead of hanging it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..build import BuildInfo
from ..errors import UserError
from ..models import ResolvedModel
from .clients import Endpoint, chat_requests
from .process import LlamaServer


def load_test(
    model: ResolvedModel,
    concurrency: Sequence[int] = (1, 2, 4, 8),
    requests_per_client: int = 2,
    max_tokens: int = 32,
    threads: int | None = None,
    time_budget_s: float = 60.0,
    build: BuildInfo | None = None,
    log_dir: Path | None = None,
):
    """For each level c: a server with c slots, c clients each sending up to ``requests_per_client`` requests.

    Bounded in count (``requests_per_client``) and time (no new request after ``time_budget_s`` per level),
    loopback only. One row per level: aggregate tokens/s, latency median/p95, failed requests, health after.
    """
    import pandas as pd

    rows, per_request = [], []
    for c in concurrency:
        with LlamaServer(model, threads=threads, parallel=c, build=build, log_dir=log_dir) as srv:
            ep = srv.endpoint
            deadline = time.monotonic() + time_budget_s

            def client(cid: int, ep: Endpoint = ep, deadline: float = deadline) -> list[dict]:
                results = []
                for i in range(requests_per_client):
                    if time.monotonic() > deadline:
                        break
                    t0 = time.perf_counter()
                    try:
                        res = chat_requests(ep, max_tokens=max_tokens)
                        results.append(
                            {
                                "client": cid,
                                "request": i,
                                "ok": True,
                                "latency_ms": (time.perf_counter() - t0) * 1000,
                                "tokens": int(res.usage.get("completion_tokens", 0)),
                                "error": "",
                            }
                        )
                    except UserError as exc:
                        results.append(
                            {
                                "client": cid,
                                "request": i,
                                "ok": False,
                                "latency_ms": (time.perf_counter() - t0) * 1000,
                                "tokens": 0,
                                "error": str(exc).splitlines()[0],
                            }
                        )
                return results

            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=c) as pool:
                results = [r for batch in pool.map(client, range(c)) for r in batch]
            wall = time.perf_counter() - t0
            try:
                healthy = srv.health().get("status") == "ok"
            except UserError:
                healthy = False
        ok = [r for r in results if r["ok"]]
        lat = pd.Series([r["latency_ms"] for r in ok], dtype=float)
        tokens = sum(r["tokens"] for r in ok)
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
                "healthy_after": healthy,
            }
        )
        per_request += [{"clients": c, **r} for r in results]
    return pd.DataFrame(rows), pd.DataFrame(per_request)
