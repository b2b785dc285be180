"""The serving benchmark's requests: a workload from the prompts corpus, and one timed request.

* :class:`Workload`: the requests: texts of the prompts corpus, each asking for a short summary of
  exactly ``max_tokens`` tokens (``ignore_eos``, so every request does the same amount of
  generation), as chat requests for a model with a chat template and as plain text completions
  (``/v1/completions``) for a base model. Every request is streamed and timed on the client.
* ``timed_request``: one request of a workload as a record (a failure is a record too);
  ``warm_up``: the requests sent before measuring, marked as warm-ups.
* ``benchmark_server``: the llama-server every measurement of the load generator starts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..build import BuildInfo
from ..errors import UserError
from ..models import ResolvedModel
from ..paths import content_key
from .process import LlamaServer, ManagedServer
from .streaming import StreamTiming, stream_chat, stream_completion

SUMMARY_SYSTEM = "Summarize the user's text in one sentence."
SUMMARY_SUFFIX = "\n\nIn one sentence, the text above is about"  # the same task as plain text, for a base model


@dataclass(frozen=True)
class Workload:
    """The requests of a serving benchmark: request ``i`` summarizes text ``i`` (cycling) in ``max_tokens`` tokens."""

    texts: tuple[str, ...]
    max_tokens: int
    chat: bool
    ignore_eos: bool = True

    def __post_init__(self) -> None:
        if not self.texts:
            raise UserError("A workload needs at least one prompt text.")
        if self.max_tokens < 2:
            raise UserError(f"max_tokens must be at least 2 for a time per output token, not {self.max_tokens}.")

    @property
    def endpoint(self) -> str:
        return "/v1/chat/completions" if self.chat else "/v1/completions"

    def identity(self) -> dict:
        """What the workload's results depend on (for cache keys and the store)."""
        return {
            "texts": content_key(list(self.texts)),
            "n_texts": len(self.texts),
            "max_tokens": self.max_tokens,
            "endpoint": self.endpoint,
            "ignore_eos": self.ignore_eos,
        }

    def send(self, target: ManagedServer, i: int) -> StreamTiming:
        """Request ``i``, streamed and timed."""
        text = self.texts[i % len(self.texts)]
        extra = {"ignore_eos": True} if self.ignore_eos else {}
        if self.chat:
            messages = [{"role": "system", "content": SUMMARY_SYSTEM}, {"role": "user", "content": text}]
            return stream_chat(target, messages, max_tokens=self.max_tokens, **extra)
        return stream_completion(target, text + SUMMARY_SUFFIX, max_tokens=self.max_tokens, **extra)


def corpus_workload(model: ResolvedModel, texts: Sequence[str], max_tokens: int) -> Workload:
    """The workload over ``texts`` (the prompts corpus): chat if the model has a chat template, else completions."""
    return Workload(tuple(texts), max_tokens, chat=model.info.chat_template)


def timed_request(workload: Workload, target: ManagedServer, i: int, t0: float, **tags: Any) -> dict:
    """Send request ``i`` and return its record (a failure is a record too, with its one-sentence reason)."""
    sent = time.perf_counter() - t0
    try:
        t = workload.send(target, i)
        return {
            **tags,
            "request": i,
            "sent_s": sent,
            "done_s": time.perf_counter() - t0,
            "ok": True,
            "error": "",
            **t.row(),
            "itl_ms": t.itl_ms,
        }
    except UserError as exc:
        return {
            **tags,
            "request": i,
            "sent_s": sent,
            "done_s": time.perf_counter() - t0,
            "ok": False,
            "error": str(exc).splitlines()[0],
            "ttft_ms": None,
            "tpot_ms": None,
            "e2e_ms": None,
            "output_tokens": 0,
            "itl_ms": [],
        }


def warm_up(workload: Workload, srv: ManagedServer, n: int, first: int) -> list[dict]:
    """``n`` requests (numbered from ``first``) before measuring, marked ``warmup=True``."""
    t0 = time.perf_counter()
    return [timed_request(workload, srv, first + k, t0, warmup=True) for k in range(n)]


def benchmark_server(
    model: ResolvedModel, threads: int, parallel: int, extra_args: Sequence[str], build: BuildInfo, **kw: Any
) -> LlamaServer:
    """A llama-server with ``parallel`` slots and a generous request timeout (requests queue under load)."""
    return LlamaServer(
        model, threads=threads, parallel=parallel, extra_args=list(extra_args), build=build, request_timeout=120, **kw
    )
