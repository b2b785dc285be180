"""Clients for a running server: the chapter's chat request, OpenAI-compatible chat, streaming latency.

* :class:`Endpoint`: where a server answers (llama-server, Ollama, llamafile) and how to reach it.
* :func:`request`: the one HTTP call every client goes through (timeouts, dead-server check,
  401 and error statuses as one sentence).
* ``chat_requests`` and ``chat_openai``: the same chat request through plain ``requests`` and
  through the ``openai`` package (the book shows both on purpose).
* ``completion_requests`` and ``completion_openai``: ``/v1/completions``, plain text in and out,
  for base models that have no chat template.
* ``tokenize`` and ``complete``: llama.cpp's native endpoints, which need no chat template.
* ``as_endpoint``, ``chat_body``, ``completion_body``: the target and the request bodies every
  client shares (``streaming`` sends the same bodies streamed).
* ``probe_root``: what a server answers at "/".

A target is an :class:`Endpoint` or anything that has one, such as a running
:class:`~localllms.serve.process.ManagedServer` (typed here as :class:`Serving`, so that this module,
which ``process`` imports, does not import ``process`` back).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import UserError

CHAT_SYSTEM = "You are a helpful assistant - Be succinct."
CHAT_USER = "What is the meaning of life?"
COMPLETION_PROMPT = "The meaning of life is"  # the same question as text to continue, for a base model
SEED = 42


def chapter_messages() -> list[dict[str, str]]:
    """The chapter's chat request: a succinct assistant asked about the meaning of life."""
    return [{"role": "system", "content": CHAT_SYSTEM}, {"role": "user", "content": CHAT_USER}]


# =========================================================================== HTTP


@dataclass
class Endpoint:
    """An OpenAI-compatible server: llama-server, Ollama, llamafile."""

    base_url: str
    model: str = "local"
    api_key: str | None = None
    name: str = "server"
    timeout: float = 60.0
    chat_template: bool = True
    check_alive: Callable[[], None] | None = field(default=None, repr=False)

    def raise_if_dead(self) -> None:
        if self.check_alive:
            self.check_alive()


class Serving(Protocol):
    """A running server, as the clients see it: something with an endpoint."""

    @property
    def endpoint(self) -> Endpoint: ...


Target = Serving | Endpoint  # what every client accepts


def as_endpoint(target: Target) -> Endpoint:
    """The endpoint of a target: an :class:`Endpoint` itself, or a running server's."""
    return target if isinstance(target, Endpoint) else target.endpoint


def session():
    """A ``requests`` session that ignores proxy settings: loopback traffic must not leave the machine."""
    import requests

    s = requests.Session()
    s.trust_env = False  # loopback traffic must not go through an HTTP(S)_PROXY from the environment
    return s


_thread_local = threading.local()


def _thread_session():
    if not hasattr(_thread_local, "session"):
        _thread_local.session = session()
    return _thread_local.session


def _headers(ep: Endpoint) -> dict[str, str]:
    return {"Authorization": f"Bearer {ep.api_key}"} if ep.api_key else {}


def request(ep: Endpoint, method: str, path: str, *, json_body: dict | None = None, stream: bool = False, timeout=None):
    """One HTTP call with timeouts; turns a dead server or an error status into one clear sentence.

    ``timeout`` bounds each read (default: the endpoint's); connecting is bounded at 5 s. If the
    server does not answer, the endpoint's liveness check runs first, so a crashed server is
    reported as such. Returns the ``requests`` response (status below 400).
    """
    import requests

    url = ep.base_url + path
    headers = _headers(ep)
    if stream:
        # llama-server (cpp-httplib) closes a kept-alive connection after a few requests, and after a
        # streamed answer it cannot say so in the headers it already sent; a stream therefore gets a
        # connection of its own, so the next request never lands on a socket the server closed.
        headers["Connection"] = "close"
    try:
        r = _thread_session().request(
            method, url, json=json_body, headers=headers, stream=stream, timeout=(5, timeout or ep.timeout)
        )
    except requests.RequestException as exc:
        ep.raise_if_dead()
        raise UserError(
            f"{ep.name} at {url} did not answer ({type(exc).__name__}) within {timeout or ep.timeout:.0f} s; "
            "check that it is running and not overloaded."
        ) from exc
    if r.status_code == 401:
        raise UserError(f"{ep.name} refused the request to {path} (401 Unauthorized); pass the server's API key.")
    if r.status_code >= 400:
        try:
            msg = r.json().get("error", {}).get("message", r.text[:200])
        except ValueError:
            msg = r.text[:200]
        raise UserError(f"{ep.name} answered {r.status_code} to {path} ({msg}); check the request.")
    return r


# =========================================================================== chat


@dataclass
class ChatResult:
    client: str
    content: str
    finish_reason: str | None
    usage: dict
    timings: dict | None
    seconds: float
    raw: dict = field(repr=False)

    def fields(self) -> dict:
        """The response fields worth showing: choice, usage, llama.cpp's server-side timings."""
        return {
            "client": self.client,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.usage.get("prompt_tokens"),
            "completion_tokens": self.usage.get("completion_tokens"),
            "server_prompt_ms": round(self.timings["prompt_ms"], 1) if self.timings else None,
            "server_predicted_per_second": round(self.timings["predicted_per_second"], 1) if self.timings else None,
            "client_seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_response(cls, client: str, raw: dict, seconds: float) -> ChatResult:
        """Read an OpenAI-style chat or text completion given as a dict (llama-server's JSON, the binding's result)."""
        choice = raw["choices"][0]
        message = choice.get("message")  # a chat completion; a text completion has "text" instead
        return cls(
            client=client,
            content=(message.get("content") if message else choice.get("text")) or "",
            finish_reason=choice.get("finish_reason"),
            usage=dict(raw.get("usage") or {}),
            timings=raw.get("timings"),  # llama.cpp's server-side timings; absent elsewhere
            seconds=seconds,
            raw=dict(raw),
        )


def chat_body(
    ep: Endpoint, messages: list[dict] | None, max_tokens: int, temperature: float, seed: int, **extra: Any
) -> dict:
    """The JSON of a ``/v1/chat/completions`` request (``messages`` None: the chapter's question)."""
    if not ep.chat_template:
        raise UserError(
            f"The model behind {ep.name} has no chat template, so a chat request cannot be formatted for it; "
            "use an instruction-tuned model (e.g. smollm2-135m-instruct) or the /completion endpoint."
        )
    body = {
        "model": ep.model,
        "messages": messages or chapter_messages(),
        "max_tokens": max_tokens,
        "temperature": temperature,
        "seed": seed,
        # llama.cpp extension: recompute the prompt every time, so repeated requests measure the
        # same work and greedy outputs do not depend on what an earlier request left in the cache
        "cache_prompt": False,
    }
    body.update(extra)
    return body


def chat_requests(
    target: Target,
    messages: list[dict] | None = None,
    max_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = SEED,
    **extra: Any,
) -> ChatResult:
    """POST /v1/chat/completions with plain ``requests``."""
    ep = as_endpoint(target)
    body = chat_body(ep, messages, max_tokens, temperature, seed, **extra)
    t0 = time.perf_counter()
    r = request(ep, "POST", "/v1/chat/completions", json_body=body)
    seconds = time.perf_counter() - t0
    return ChatResult.from_response("requests", r.json(), seconds)


@contextmanager
def _openai_client(ep: Endpoint) -> Iterator[Any]:
    """An ``openai`` client on the local server whose failures read as one sentence (a dead server
    names its exit code and log), closed afterwards."""
    import openai

    client = openai.OpenAI(
        base_url=ep.base_url + "/v1",
        api_key=ep.api_key or "sk-no-key-required",  # the client insists on a key; llama-server ignores it if unset
        timeout=ep.timeout,
        max_retries=0,  # a retry would hide a dead server behind more waiting
    )
    try:
        yield client
    except openai.AuthenticationError as exc:
        raise UserError(f"{ep.name} refused the request (401 Unauthorized); pass the server's API key.") from exc
    except (openai.APIConnectionError, openai.APITimeoutError) as exc:
        ep.raise_if_dead()
        raise UserError(
            f"{ep.name} at {ep.base_url} did not answer ({type(exc).__name__}); check that it is running."
        ) from exc
    finally:
        client.close()


def chat_openai(
    target: Target,
    messages: list[dict] | None = None,
    max_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = SEED,
) -> ChatResult:
    """The same request through the ``openai`` client pointed at the local server."""
    ep = as_endpoint(target)
    body = chat_body(ep, messages, max_tokens, temperature, seed)
    with _openai_client(ep) as client:
        t0 = time.perf_counter()
        completion = client.chat.completions.create(
            model=body["model"],
            messages=body["messages"],
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            extra_body={"cache_prompt": False},
        )
    seconds = time.perf_counter() - t0
    # model_dump keeps llama.cpp's extra "timings" field, which the pydantic model does not declare
    return ChatResult.from_response("openai", completion.model_dump(), seconds)


def completion_body(
    ep: Endpoint, prompt: str | list[int], max_tokens: int, temperature: float, seed: int, **extra: Any
) -> dict:
    """The JSON of a ``/v1/completions`` request; ``extra`` adds or overrides fields."""
    body = {
        "model": ep.model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "seed": seed,
        "cache_prompt": False,  # as for chat: every request evaluates its whole prompt
    }
    body.update(extra)
    return body


def completion_requests(
    target: Target,
    prompt: str | list[int],
    max_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = SEED,
    **extra: Any,
) -> ChatResult:
    """POST /v1/completions with plain ``requests``: text (or token ids) in, text out, no chat template."""
    ep = as_endpoint(target)
    body = completion_body(ep, prompt, max_tokens, temperature, seed, **extra)
    t0 = time.perf_counter()
    r = request(ep, "POST", "/v1/completions", json_body=body)
    return ChatResult.from_response("requests", r.json(), time.perf_counter() - t0)


def completion_openai(
    target: Target,
    prompt: str,
    max_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = SEED,
) -> ChatResult:
    """The same text completion through the ``openai`` client (``client.completions.create``)."""
    ep = as_endpoint(target)
    with _openai_client(ep) as client:
        t0 = time.perf_counter()
        completion = client.completions.create(
            model=ep.model,
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            extra_body={"cache_prompt": False},
        )
    return ChatResult.from_response("openai", completion.model_dump(), time.perf_counter() - t0)


# =========================================================================== native endpoints


def tokenize(target: Target, text: str, timeout: float | None = None) -> list[int]:
    """POST /tokenize: the token ids the served model's tokenizer gives ``text`` (no BOS or other special tokens)."""
    r = request(as_endpoint(target), "POST", "/tokenize", json_body={"content": text}, timeout=timeout)
    return list(r.json()["tokens"])


def complete(
    target: Target,
    prompt: str | list[int],
    n_predict: int = 64,
    *,
    temperature: float = 0.0,
    seed: int = SEED,
    cache_prompt: bool = False,
    timeout: float | None = None,
    **extra: Any,
) -> dict:
    """POST /completion, llama.cpp's native endpoint: plain text (or token ids) in, no chat template.

    Works for base models. Returns the response JSON (``content``, ``timings``, ``tokens_predicted``, ...);
    ``extra`` adds request fields (e.g. ``n_probs``, ``ignore_eos``).
    """
    body = {
        "prompt": prompt,
        "n_predict": n_predict,
        "temperature": temperature,
        "seed": seed,
        "cache_prompt": cache_prompt,
        **extra,
    }
    return request(as_endpoint(target), "POST", "/completion", json_body=body, timeout=timeout).json()


# =========================================================================== the page at "/"


def probe_root(target: Target) -> dict:
    """What the server answers at "/": status, content type, and the start of the body."""
    ep = as_endpoint(target)
    import requests

    try:
        r = _thread_session().get(ep.base_url + "/", timeout=(5, 10), headers={"Accept-Encoding": "gzip"})
    except requests.RequestException as exc:
        ep.raise_if_dead()
        raise UserError(f"{ep.name} did not answer at / ({type(exc).__name__}); check that it is running.") from exc
    body = r.text
    title = re.search(r"<title>(.*?)</title>", body, re.S | re.I)
    return {
        "status": r.status_code,
        "content_type": r.headers.get("Content-Type", ""),
        "bytes": len(r.content),
        "title": title.group(1).strip() if title else "",
        "body_start": body[:120],
    }
