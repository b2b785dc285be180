"""Streamed requests timed on the client, as serving benchmarks time them.

* :class:`StreamTiming`: one streamed request: time to first token, every gap between streamed
  tokens, time per output token, end to end, and what the server reported.
* ``stream_chat``, ``stream_completion``: one streamed ``/v1/chat/completions`` or
  ``/v1/completions`` request (the latter needs no chat template, so base models too).
* ``measure_latency``, ``latency_summary``: a few sequential streamed requests, summarized.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from .clients import SEED, Endpoint, as_endpoint, chat_body, completion_body, request

if TYPE_CHECKING:
    from .process import ManagedServer


@dataclass
class StreamTiming:
    """One streamed request as the client saw it (times in ms from sending the request).

    The definitions are those of vLLM's ``bench serve``: ``ttft_ms`` until the first content
    chunk; ``itl_ms`` every gap between successive content chunks (one token each on
    llama-server); ``tpot_ms`` = (end-to-end - TTFT) / (output tokens - 1), the mean of those
    gaps, None for a one-token answer; ``e2e_ms`` until the end of the stream.
    """

    ttft_ms: float
    tpot_ms: float | None
    e2e_ms: float
    output_tokens: int
    text: str
    itl_ms: list[float] = field(default_factory=list, repr=False)
    prompt_tokens: int | None = None
    cached_tokens: int | None = None  # prompt tokens the server reused from its cache (timings.cache_n)
    finish_reason: str | None = None
    server_prompt_ms: float | None = None  # llama.cpp's own timing of prompt processing

    def row(self) -> dict:
        """The scalar fields, for a table (the gaps and the text left out)."""
        return {k: v for k, v in asdict(self).items() if k not in ("itl_ms", "text")}


def _stream(ep: Endpoint, path: str, body: dict, piece: Callable[[dict], str | None]) -> StreamTiming:
    """POST a streamed request and time every content chunk; ``piece`` extracts a chunk's text."""
    import requests

    deadline = time.monotonic() + ep.timeout  # a total bound, on top of the per-read timeout
    t0 = time.perf_counter()
    r = request(ep, "POST", path, json_body=body, stream=True)
    arrivals: list[float] = []
    done = False
    usage: dict = {}
    timings: dict = {}
    finish: str | None = None
    parts: list[str] = []
    try:
        for line in r.iter_lines():
            if time.monotonic() > deadline:
                raise UserError(f"{ep.name} streamed for more than {ep.timeout:.0f} s; lower max_tokens.")
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                done = True
                break
            obj = json.loads(data)
            usage = obj.get("usage") or usage
            timings = obj.get("timings") or timings
            for choice in obj.get("choices", []):
                finish = choice.get("finish_reason") or finish
                text = piece(choice)
                if text:
                    arrivals.append(time.perf_counter())
                    parts.append(text)
    except (requests.RequestException, ValueError) as exc:
        ep.raise_if_dead()
        raise UserError(f"The stream from {ep.name} broke off ({type(exc).__name__}); check the server log.") from exc
    finally:
        r.close()
    end = time.perf_counter()
    if not done:  # the connection closed before the end marker: the server died or cut us off
        ep.raise_if_dead()
        raise UserError(f"The stream from {ep.name} ended without its [DONE] marker; check the server log.")
    if not arrivals:
        ep.raise_if_dead()
        raise UserError(f"{ep.name} streamed no tokens; check the model and max_tokens.")
    n_out = int(usage.get("completion_tokens") or len(arrivals))
    first = arrivals[0]
    cached = timings.get("cache_n", (usage.get("prompt_tokens_details") or {}).get("cached_tokens"))
    return StreamTiming(
        ttft_ms=(first - t0) * 1000,
        tpot_ms=(end - first) * 1000 / (n_out - 1) if n_out > 1 else None,
        e2e_ms=(end - t0) * 1000,
        output_tokens=n_out,
        text="".join(parts),
        itl_ms=[(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:], strict=False)],
        prompt_tokens=usage.get("prompt_tokens"),
        cached_tokens=cached,
        finish_reason=finish,
        server_prompt_ms=timings.get("prompt_ms"),
    )


_STREAM_EXTRAS = {"stream": True, "stream_options": {"include_usage": True}}


def stream_chat(
    target: ManagedServer | Endpoint,
    messages: list[dict] | None = None,
    max_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = SEED,
    **extra: Any,
) -> StreamTiming:
    """One streamed chat request (``/v1/chat/completions``), timed on the client.

    ``extra`` adds request fields, e.g. llama.cpp's ``ignore_eos=True`` to force a long answer
    or ``cache_prompt=True`` to let the server reuse a cached prefix.
    """
    ep = as_endpoint(target)
    body = chat_body(ep, messages, max_tokens, temperature, seed, **_STREAM_EXTRAS, **extra)
    return _stream(ep, "/v1/chat/completions", body, lambda c: (c.get("delta") or {}).get("content"))


def stream_completion(
    target: ManagedServer | Endpoint,
    prompt: str | list[int],
    max_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = SEED,
    **extra: Any,
) -> StreamTiming:
    """One streamed text completion (``/v1/completions``: no chat template, so base models too), timed
    on the client. ``prompt`` is text or token ids (sent as they are, no BOS added)."""
    ep = as_endpoint(target)
    body = completion_body(ep, prompt, max_tokens, temperature, seed, **_STREAM_EXTRAS, **extra)
    return _stream(ep, "/v1/completions", body, lambda c: c.get("text"))


def measure_latency(
    target: ManagedServer | Endpoint,
    n_requests: int = 5,
    max_tokens: int = 64,
    messages: list[dict] | None = None,
    time_budget_s: float = 120.0,
):
    """``n_requests`` sequential streamed requests (stopping early at the time budget); one row each."""
    import pandas as pd

    rows = []
    deadline = time.monotonic() + time_budget_s
    for i in range(n_requests):
        if time.monotonic() > deadline:
            break
        t = stream_chat(target, messages, max_tokens=max_tokens)
        rows.append({"request": i + 1, **{k: getattr(t, k) for k in ("ttft_ms", "tpot_ms", "e2e_ms", "output_tokens")}})
    return pd.DataFrame(rows)


def latency_summary(df) -> Any:
    """Median and 95th percentile of each latency column (in ms)."""
    import pandas as pd

    cols = [c for c in ("ttft_ms", "tpot_ms", "e2e_ms") if c in df]
    out = pd.DataFrame(
        {
            "median": [df[c].median() for c in cols],
            "p95": [df[c].quantile(0.95) for c in cols],
            "n": [int(df[c].count()) for c in cols],
        },
        index=pd.Index(["time to first token (ms)", "time per output token (ms)", "end-to-end (ms)"][: len(cols)]),
    )
    return out.round(1)
