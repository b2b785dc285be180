"""Ways to serve a local model: llama-cli, llama-server, the Python binding, Ollama and llamafile.

* ``run_cli``: one non-interactive chat turn of llama-cli.
* ``LlamaServer``: a managed llama-server on a free loopback port, ready when ``/health`` says ok,
  stopped on exit, interrupt or error (process group kill, ``atexit``, and the kernel's
  parent-death signal), its log kept in a file whose tail is shown when something fails.
* Clients for its OpenAI-compatible API (plain ``requests`` and the ``openai`` package),
  streaming latency, a bounded load test, structured output (JSON grammar, JSON schema).
* The in-process binding (``llama_cpp.Llama``), detection of Ollama and llamafile, and a
  screenshot of the web page llama-server serves.

Every request has a timeout and every loop is bounded in count and time, so a server that dies
or hangs produces a :class:`UserError` within seconds instead of a hang.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .build import BuildInfo, current_build
from .errors import UserError
from .models import ResolvedModel
from .paths import cache_dir

LOOPBACK = "127.0.0.1"
CHAT_SYSTEM = "You are a helpful assistant - Be succinct."
CHAT_USER = "What is the meaning of life?"
SEED = 42


def chapter_messages() -> list[dict[str, str]]:
    """The chapter's chat request: a succinct assistant asked about the meaning of life."""
    return [{"role": "system", "content": CHAT_SYSTEM}, {"role": "user", "content": CHAT_USER}]


# =========================================================================== llama-cli


@dataclass
class CliResult:
    command: list[str]
    returncode: int
    text: str
    generated_tokens: int
    prompt_tps: float | None
    generation_tps: float | None
    log: str


_TIMINGS = re.compile(r"\[ Prompt: ([\d.]+) t/s \| Generation: ([\d.]+) t/s \]")


def count_tokens(model: ResolvedModel, text: str, build: BuildInfo | None = None) -> int:
    """Number of tokens ``text`` has under the model's own tokenizer (vocabulary only)."""
    from .build import use_build_for_binding

    use_build_for_binding(build)
    from llama_cpp import Llama

    vocab = Llama(model_path=str(model.path), vocab_only=True, verbose=False)
    try:
        return len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))
    finally:
        vocab.close()


def require_chat_template(model: ResolvedModel, what: str = "a chat request") -> None:
    """Refuse chat calls on a base model: without a template the prompt format would be a guess."""
    if not model.info.chat_template:
        raise UserError(
            f"{model.path.name} has no chat template, so {what} cannot be formatted for it; "
            "use an instruction-tuned model (e.g. smollm2-135m-instruct) or plain text completion."
        )


def run_cli(
    model: ResolvedModel,
    prompt: str,
    n_predict: int = 64,
    threads: int = 2,
    seed: int = 1,
    system: str | None = None,
    timeout: float = 300,
    build: BuildInfo | None = None,
) -> CliResult:
    """One chat turn through the llama-cli binary, non-interactive, output captured."""
    build = build or current_build()
    cmd = [
        str(build.tool("llama-cli")),
        "-m",
        str(model.path),
        "-p",
        prompt,
        "-n",
        str(n_predict),
        "-st",
        "--simple-io",
        "-t",
        str(threads),
        "--seed",
        str(seed),
        "--no-warmup",
    ]
    if system:
        cmd += ["-sys", system]
    if not model.info.chat_template:
        raise UserError(
            f"{model.path.name} has no chat template, and llama-cli runs a chat turn; use an instruction-tuned model."
        )
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise UserError(
            f"llama-cli did not finish within {timeout:.0f} s; lower n_predict or check the model."
        ) from exc
    out = proc.stdout
    marker = f"> {prompt}"
    body = out.split(marker, 1)[1] if marker in out else out
    m = _TIMINGS.search(body)
    text = body[: m.start()] if m else body.split("Exiting...", 1)[0]
    text = text.strip("\n")
    return CliResult(
        command=cmd,
        returncode=proc.returncode,
        text=text.strip(),
        generated_tokens=count_tokens(model, text.strip(), build) if text.strip() else 0,
        prompt_tps=float(m.group(1)) if m else None,
        generation_tps=float(m.group(2)) if m else None,
        log=proc.stderr[-4000:],
    )


# =========================================================================== ports


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """Whether something listens on ``host:port`` (SO_REUSEADDR: sockets in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = LOOPBACK) -> int:
    """A port the kernel considers free right now (a race remains; the server start retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


# =========================================================================== managed processes

_LIVE: set[ManagedServer] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all() -> None:
    """atexit hook: no server outlives the Python process that started it."""
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for srv in servers:
        with contextlib.suppress(Exception):
            srv.stop()


atexit.register(_stop_all)

_BIND_FAILED = re.compile(r"couldn't bind|address already in use|failed to bind", re.I)


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # llama-server reads LLAMA_ARG_* and LLAMA_API_KEY from the environment; a stray one
    # (say LLAMA_ARG_PORT) would silently override what this module asks for.
    env = {k: v for k, v in os.environ.items() if not (k.startswith("LLAMA_ARG_") or k == "LLAMA_API_KEY")}
    env.update(extra or {})
    return env


def _pdeathsig_prefix() -> list[str]:
    """``setpriv --pdeathsig`` makes the kernel kill the server if Python dies hard (SIGKILL).

    The signal fires when the *thread* that started the child exits, so it is only used
    from the main thread (cells and tests run there); other threads rely on stop()/atexit.
    """
    setpriv = shutil.which("setpriv")
    if setpriv and threading.current_thread() is threading.main_thread():
        return [setpriv, "--pdeathsig", "SIGTERM", "--"]
    return []


class ManagedServer:
    """A local HTTP server process: started on a loopback port, ready on /health, always stopped.

    Use it as a context manager; ``stop()`` is idempotent and also runs from ``atexit``.
    """

    name = "server"
    health_path = "/health"

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = LOOPBACK,
        api_key: str | None = None,
        startup_timeout: float = 120.0,
        request_timeout: float = 60.0,
        log_dir: Path | None = None,
    ) -> None:
        if not _is_loopback(host):
            raise UserError(f"This module binds servers to loopback only, not {host}; use host='127.0.0.1'.")
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.api_key = api_key
        self.startup_timeout = startup_timeout
        self.request_timeout = request_timeout
        self.log_dir = Path(log_dir) if log_dir else cache_dir("server-logs")
        self.log_path: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None
        self.ready_seconds: float | None = None
        self._stopped = False  # once stopped and reaped, the PID may belong to someone else: never signal it again

    # ----------------------------------------------------------------- to override
    def command(self, port: int) -> list[str]:
        raise NotImplementedError

    def child_env(self) -> dict[str, str]:
        return _clean_env()

    @property
    def model_name(self) -> str:
        return "local"

    @property
    def chat_template(self) -> bool:
        return True

    # ----------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        if self.port is None:
            raise UserError(f"The {self.name} is not started; use it as `with server:` or call start() first.")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> ManagedServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        if self.requested_port is not None and port_in_use(self.requested_port, self.host):
            raise UserError(
                f"Port {self.host}:{self.requested_port} is already in use; pass another port, "
                "or port=None to pick a free one."
            )
        # With a port of our choosing, a race with another program is retried on a new port.
        attempts = 1 if self.requested_port is not None else 3
        for attempt in range(attempts):
            port = self.requested_port or free_port(self.host)
            try:
                self._launch(port)
                self._wait_ready()
                return self
            except _BindError as exc:
                self.stop()
                if self.requested_port is not None:
                    raise UserError(
                        f"Port {self.host}:{port} is already in use; pass another port, "
                        "or port=None to pick a free one."
                    ) from exc
                if attempt == attempts - 1:
                    raise UserError(
                        f"The {self.name} could not bind a free port after {attempts} attempts; "
                        f"check what is listening on {self.host}.{self._tail_text()}"
                    ) from exc
            except BaseException:
                self.stop()  # interrupted or failed while starting: leave nothing behind
                raise
        raise AssertionError("unreachable")

    def _launch(self, port: int) -> None:
        self.port = port
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.log_path = self.log_dir / f"{self.name}-{stamp}-{port}.log"
        cmd = _pdeathsig_prefix() + self.command(port)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.child_env(),
                start_new_session=True,  # its own process group: one killpg stops it and its children
            )
        self.started_at = time.monotonic()
        self._stopped = False
        with _LIVE_LOCK:
            _LIVE.add(self)

    def _wait_ready(self) -> None:
        import requests

        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        session = _session()
        while True:
            code = self.proc.poll()
            if code is not None:
                if _BIND_FAILED.search(self.log_tail(40)):
                    raise _BindError(self.port)
                raise UserError(
                    f"The {self.name} exited with code {code} while starting; read its log {self.log_path}."
                    + self._tail_text()
                )
            try:
                r = session.get(self.url + self.health_path, timeout=2)
                if r.ok and r.json().get("status") == "ok":
                    self.ready_seconds = time.monotonic() - (self.started_at or 0)
                    return
            except (requests.RequestException, ValueError):
                pass  # not listening yet, or still loading the model (503)
            if time.monotonic() > deadline:
                raise UserError(
                    f"The {self.name} was not ready within {self.startup_timeout:.0f} s; "
                    f"raise startup_timeout or read its log {self.log_path}." + self._tail_text()
                )
            time.sleep(0.2)

    def stop(self, grace: float = 5.0) -> int | None:
        """Stop the whole process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
        proc = self.proc
        if proc is None or self._stopped:
            return proc.returncode if proc else None
        try:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=grace)
                # children that ignored SIGTERM die with the group (only now: the PID was ours a moment ago)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        finally:
            self._stopped = proc.poll() is not None
            with _LIVE_LOCK:
                _LIVE.discard(self)
        return proc.returncode

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ----------------------------------------------------------------- diagnostics
    def log_tail(self, lines: int = 15) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def _tail_text(self) -> str:
        tail = self.log_tail()
        return f"\nLast lines of {self.log_path}:\n{tail}" if tail else ""

    def raise_if_dead(self, wait: float = 2.0) -> None:
        """Raise a clear error if the process has exited (waits briefly: a killed child is reaped late)."""
        if self.proc is None:
            raise UserError(f"The {self.name} is not started; use it as `with server:` or call start() first.")
        try:
            code = self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return
        with _LIVE_LOCK:
            _LIVE.discard(self)
        raise UserError(
            f"The {self.name} (pid {self.proc.pid}) exited with code {code} during the request; "
            f"restart it and read its log {self.log_path}." + self._tail_text()
        )

    def health(self, timeout: float = 5.0) -> dict:
        """GET /health; a dead or hung server raises UserError instead of waiting."""
        r = _request(self.endpoint, "GET", self.health_path, timeout=timeout)
        return r.json()

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(
            base_url=self.url,
            model=self.model_name,
            api_key=self.api_key,
            name=self.name,
            timeout=self.request_timeout,
            chat_template=self.chat_template,
            check_alive=self.raise_if_dead,
        )


class _BindError(Exception):
    pass


class LlamaServer(ManagedServer):
    """A managed ``llama-server`` for one model.

    ``threads=None`` uses all cores; ``parallel`` is the number of slots (``-np``);
    ``ctx_size`` is the total KV cache shared by the slots (default 1024 tokens per slot).
    With ``api_key`` set, every endpoint except /health requires ``Authorization: Bearer <key>``;
    the key is passed through the environment (LLAMA_API_KEY), not the command line, so it does
    not show in ``ps``.
    """

    name = "llama-server"

    def __init__(
        self,
        model: ResolvedModel,
        *,
        threads: int | None = None,
        parallel: int = 1,
        ctx_size: int | None = None,
        api_key: str | None = None,
        port: int | None = None,
        static_path: Path | None = None,
        seed: int = SEED,
        extra_args: Sequence[str] = (),
        build: BuildInfo | None = None,
        startup_timeout: float = 120.0,
        request_timeout: float = 60.0,
        log_dir: Path | None = None,
    ) -> None:
        super().__init__(
            port=port,
            api_key=api_key,
            startup_timeout=startup_timeout,
            request_timeout=request_timeout,
            log_dir=log_dir,
        )
        if parallel < 1:
            raise UserError(f"parallel must be at least 1 slot, not {parallel}; pass parallel=1 or more.")
        self.model = model
        self.threads = threads or os.cpu_count() or 1
        self.parallel = parallel
        self.ctx_size = ctx_size or 1024 * parallel
        self.static_path = Path(static_path) if static_path else None
        self.seed = seed
        self.extra_args = list(extra_args)
        self.build = build or current_build()

    @property
    def model_name(self) -> str:
        return self.model.spec if "/" not in self.model.spec else self.model.path.stem

    @property
    def chat_template(self) -> bool:
        return self.model.info.chat_template

    def command(self, port: int) -> list[str]:
        cmd = [
            str(self.build.tool("llama-server")),
            "-m",
            str(self.model.path),
            "--alias",
            self.model_name,
            "--host",
            self.host,
            "--port",
            str(port),
            "-t",
            str(self.threads),
            "-tb",
            str(self.threads),
            "-np",
            str(self.parallel),
            "-c",
            str(self.ctx_size),
            "--seed",
            str(self.seed),
        ]
        if self.static_path:
            if not (self.static_path / "index.html").exists():
                raise UserError(f"{self.static_path} has no index.html to serve; build the web UI first.")
            cmd += ["--path", str(self.static_path)]
        return cmd + self.extra_args

    def child_env(self) -> dict[str, str]:
        return _clean_env({"LLAMA_API_KEY": self.api_key} if self.api_key else None)

    def describe(self) -> dict:
        """What was started, for the notebook (non-deterministic: port, pid, paths)."""
        return {
            "url": self.url,
            "pid": self.pid,
            "model": self.model.path.name,
            "threads": self.threads,
            "parallel_slots": self.parallel,
            "ctx_size": self.ctx_size,
            "api_key": "set" if self.api_key else "none",
            "ready_after_s": round(self.ready_seconds or 0.0, 2),
            "log": str(self.log_path),
        }


def pid_exists(pid: int) -> bool:
    """Whether a process with this PID still exists (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited; only its table entry remains until the parent reaps it
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


# =========================================================================== HTTP clients


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


def _as_endpoint(target: ManagedServer | Endpoint) -> Endpoint:
    return target.endpoint if isinstance(target, ManagedServer) else target


def _session():
    import requests

    s = requests.Session()
    s.trust_env = False  # loopback traffic must not go through an HTTP(S)_PROXY from the environment
    return s


_thread_local = threading.local()


def _thread_session():
    if not hasattr(_thread_local, "session"):
        _thread_local.session = _session()
    return _thread_local.session


def _headers(ep: Endpoint) -> dict[str, str]:
    return {"Authorization": f"Bearer {ep.api_key}"} if ep.api_key else {}


def _request(
    ep: Endpoint, method: str, path: str, *, json_body: dict | None = None, stream: bool = False, timeout=None
):
    """One HTTP call with timeouts; turns a dead server or an error status into one clear sentence."""
    import requests

    url = ep.base_url + path
    try:
        r = _thread_session().request(
            method, url, json=json_body, headers=_headers(ep), stream=stream, timeout=(5, timeout or ep.timeout)
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


def _chat_body(
    ep: Endpoint, messages: list[dict] | None, max_tokens: int, temperature: float, seed: int, **extra: Any
) -> dict:
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
    target: ManagedServer | Endpoint,
    messages: list[dict] | None = None,
    max_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = SEED,
    **extra: Any,
) -> ChatResult:
    """POST /v1/chat/completions with plain ``requests``."""
    ep = _as_endpoint(target)
    body = _chat_body(ep, messages, max_tokens, temperature, seed, **extra)
    t0 = time.perf_counter()
    r = _request(ep, "POST", "/v1/chat/completions", json_body=body)
    seconds = time.perf_counter() - t0
    raw = r.json()
    choice = raw["choices"][0]
    return ChatResult(
        client="requests",
        content=choice["message"].get("content") or "",
        finish_reason=choice.get("finish_reason"),
        usage=raw.get("usage", {}),
        timings=raw.get("timings"),
        seconds=seconds,
        raw=raw,
    )


def chat_openai(
    target: ManagedServer | Endpoint,
    messages: list[dict] | None = None,
    max_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = SEED,
) -> ChatResult:
    """The same request through the ``openai`` client pointed at the local server."""
    import openai

    ep = _as_endpoint(target)
    body = _chat_body(ep, messages, max_tokens, temperature, seed)
    client = openai.OpenAI(
        base_url=ep.base_url + "/v1",
        api_key=ep.api_key or "sk-no-key-required",  # the client insists on a key; llama-server ignores it if unset
        timeout=ep.timeout,
        max_retries=0,  # a retry would hide a dead server behind more waiting
    )
    t0 = time.perf_counter()
    try:
        completion = client.chat.completions.create(
            model=body["model"],
            messages=body["messages"],
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            extra_body={"cache_prompt": False},
        )
    except openai.AuthenticationError as exc:
        raise UserError(f"{ep.name} refused the request (401 Unauthorized); pass the server's API key.") from exc
    except (openai.APIConnectionError, openai.APITimeoutError) as exc:
        ep.raise_if_dead()
        raise UserError(
            f"{ep.name} at {ep.base_url} did not answer ({type(exc).__name__}); check that it is running."
        ) from exc
    finally:
        client.close()
    seconds = time.perf_counter() - t0
    raw = completion.model_dump()  # llama.cpp's extra "timings" field is kept by the pydantic model
    choice = completion.choices[0]
    return ChatResult(
        client="openai",
        content=choice.message.content or "",
        finish_reason=choice.finish_reason,
        usage=raw.get("usage") or {},
        timings=raw.get("timings"),
        seconds=seconds,
        raw=raw,
    )


# =========================================================================== streaming latency


@dataclass
class StreamTiming:
    ttft_ms: float
    tpot_ms: float | None
    e2e_ms: float
    output_tokens: int
    text: str


def stream_chat(
    target: ManagedServer | Endpoint,
    messages: list[dict] | None = None,
    max_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = SEED,
    **extra: Any,
) -> StreamTiming:
    """One streamed chat request, timed on the client: first token, per output token, end to end.

    ``extra`` adds request fields, e.g. llama.cpp's ``ignore_eos=True`` to force a long answer.
    """
    import requests

    ep = _as_endpoint(target)
    body = _chat_body(
        ep, messages, max_tokens, temperature, seed, stream=True, stream_options={"include_usage": True}, **extra
    )
    deadline = time.monotonic() + ep.timeout  # a total bound, on top of the per-read timeout
    t0 = time.perf_counter()
    r = _request(ep, "POST", "/v1/chat/completions", json_body=body, stream=True)
    first: float | None = None
    done = False
    chunks = 0
    usage: dict = {}
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
            if obj.get("usage"):
                usage = obj["usage"]
            for choice in obj.get("choices", []):
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    if first is None:
                        first = time.perf_counter()
                    chunks += 1
                    parts.append(delta)
    except (requests.RequestException, ValueError) as exc:
        ep.raise_if_dead()
        raise UserError(f"The stream from {ep.name} broke off ({type(exc).__name__}); check the server log.") from exc
    finally:
        r.close()
    end = time.perf_counter()
    if not done:  # the connection closed before the end marker: the server died or cut us off
        ep.raise_if_dead()
        raise UserError(f"The stream from {ep.name} ended without its [DONE] marker; check the server log.")
    if first is None:
        ep.raise_if_dead()
        raise UserError(f"{ep.name} streamed no tokens; check the model and max_tokens.")
    n_out = int(usage.get("completion_tokens") or chunks)
    return StreamTiming(
        ttft_ms=(first - t0) * 1000,
        tpot_ms=(end - first) * 1000 / (n_out - 1) if n_out > 1 else None,
        e2e_ms=(end - t0) * 1000,
        output_tokens=n_out,
        text="".join(parts),
    )


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
        rows.append({"request": i + 1, **{k: v for k, v in asdict(t).items() if k != "text"}})
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


# =========================================================================== load test


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


# =========================================================================== structured output

EXTRACTION_SYSTEM = (
    "Extract the appointment from the user's message. Reply with only a JSON object with the keys "
    '"title" (a short string), "time" (24-hour "HH:MM") and "participants" (a list of names).'
)

# prompt -> the time a correct extraction contains (schema validity does not check meaning)
EXTRACTION_PROMPTS: dict[str, str] = {
    "Schedule a call at 8pm.": "20:00",
    "Schedule a call with Anna at 8pm.": "20:00",
    "Book a meeting with Tom and Lisa at 9am.": "09:00",
    "Remind me to call the dentist at 3:30pm.": "15:30",
    "Set up lunch with Maria at noon.": "12:00",
    "Arrange a video call with the Berlin office at 6pm.": "18:00",
}

EXTRACTION_SCHEMA: dict = {
    "type": "object",
    "properties": {
        # length bounds keep a constrained reply finite: a small model otherwise repeats list items
        "title": {"type": "string", "minLength": 1, "maxLength": 40},
        "time": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
        "participants": {"type": "array", "items": {"type": "string", "maxLength": 24}, "maxItems": 4},
    },
    "required": ["title", "time", "participants"],
    "additionalProperties": False,
}

STRUCTURED_MODES = ("unconstrained", "json_grammar", "json_schema")


def json_grammar_path(build: BuildInfo | None = None) -> Path:
    """llama.cpp's generic JSON GBNF grammar, from the source tree this build was compiled from."""
    from .build import _sdist_source

    build = build or current_build()
    path = _sdist_source(build.llama_cpp_python_version) / "vendor" / "llama.cpp" / "grammars" / "json.gbnf"
    if not path.exists():
        raise UserError(f"{path} is missing from the llama.cpp source tree; run `make setup` to unpack it again.")
    return path


def check_json(text: str, schema: dict = EXTRACTION_SCHEMA) -> tuple[bool, bool, str]:
    """(parses, validates, reason): strict ``json.loads`` of the whole reply, then ``jsonschema``."""
    import jsonschema

    try:
        obj = json.loads(text)
    except ValueError as exc:
        return False, False, f"not JSON: {exc.msg}"
    try:
        jsonschema.validate(obj, schema, cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as exc:
        return True, False, f"schema: {exc.message[:80]}"
    return True, True, ""


def structured_output(
    target: ManagedServer | Endpoint,
    prompts: Sequence[str] | None = None,
    modes: Sequence[str] = STRUCTURED_MODES,
    max_tokens: int = 96,
    schema: dict = EXTRACTION_SCHEMA,
    build: BuildInfo | None = None,
):
    """Run each prompt in each mode (greedy), and check the reply parses and validates against the schema."""
    import pandas as pd

    grammar = json_grammar_path(build).read_text() if "json_grammar" in modes else None
    prompts = list(prompts or EXTRACTION_PROMPTS)
    rows = []
    for mode in modes:
        if mode == "unconstrained":
            extra: dict = {}
        elif mode == "json_grammar":
            extra = {"grammar": grammar}  # llama.cpp extension: a GBNF grammar constrains sampling
        elif mode == "json_schema":
            extra = {
                "response_format": {"type": "json_schema", "json_schema": {"name": "appointment", "schema": schema}}
            }
        else:
            raise UserError(f"Unknown structured-output mode {mode!r}; use one of {', '.join(STRUCTURED_MODES)}.")
        for prompt in prompts:
            messages = [{"role": "system", "content": EXTRACTION_SYSTEM}, {"role": "user", "content": prompt}]
            res = chat_requests(target, messages, max_tokens=max_tokens, **extra)
            parses, valid, reason = check_json(res.content, schema)
            time_ok = valid and json.loads(res.content).get("time") == EXTRACTION_PROMPTS.get(prompt)
            rows.append(
                {
                    "mode": mode,
                    "prompt": prompt,
                    "reply": res.content,
                    "finish_reason": res.finish_reason,
                    "parses": parses,
                    "valid": valid,
                    "time_correct": bool(time_ok),
                    "reason": reason,
                }
            )
    return pd.DataFrame(rows)


def validity_table(df, digits: int = 2):
    """Share of replies that parse as JSON and that validate against the schema, per mode."""
    out = df.groupby("mode", sort=False).agg(
        requests=("valid", "size"),
        parses_share=("parses", "mean"),
        valid_share=("valid", "mean"),
        time_correct_share=("time_correct", "mean"),
    )
    return out.round(digits)


# =========================================================================== Python binding


def binding_chat(
    model: ResolvedModel,
    messages: list[dict] | None = None,
    max_tokens: int = 64,
    threads: int | None = None,
    seed: int = SEED,
    n_ctx: int = 2048,
    build: BuildInfo | None = None,
) -> ChatResult:
    """The same chat in process: ``llama_cpp.Llama(...).create_chat_completion`` on this build's libllama."""
    from .build import use_build_for_binding

    require_chat_template(model, "create_chat_completion")
    use_build_for_binding(build)
    from llama_cpp import Llama

    threads = threads or os.cpu_count() or 1
    llm = Llama(model_path=str(model.path), n_ctx=n_ctx, n_threads=threads, seed=seed, verbose=False)
    try:
        t0 = time.perf_counter()
        raw = llm.create_chat_completion(
            messages=messages or chapter_messages(), max_tokens=max_tokens, temperature=0.0, seed=seed
        )
        seconds = time.perf_counter() - t0
    finally:
        llm.close()
    choice = raw["choices"][0]
    return ChatResult(
        client="llama_cpp.Llama",
        content=choice["message"].get("content") or "",
        finish_reason=choice.get("finish_reason"),
        usage=dict(raw.get("usage", {})),
        timings=None,
        seconds=seconds,
        raw=dict(raw),
    )


def binding_from_pretrained(
    repo_id: str = "bartowski/SmolLM2-135M-Instruct-GGUF", filename: str = "*Q4_K_M.gguf", **kwargs: Any
):
    """``Llama.from_pretrained`` with a fast, one-sentence failure when the Hub is unreachable."""
    from .build import use_build_for_binding
    from .models import hub_reachable

    if not hub_reachable():  # huggingface_hub would otherwise retry for a long time before failing
        raise UserError(
            f"Llama.from_pretrained({repo_id!r}, {filename!r}) downloads from the Hugging Face Hub, which is not "
            "reachable from this machine; pass a local GGUF file as Llama(model_path=...) instead."
        )
    use_build_for_binding()
    from llama_cpp import Llama

    try:
        return Llama.from_pretrained(repo_id=repo_id, filename=filename, verbose=False, **kwargs)
    except Exception as exc:  # network errors mid-download, missing repo or file
        raise UserError(
            f"Llama.from_pretrained({repo_id!r}, {filename!r}) failed ({type(exc).__name__}: {str(exc)[:120]}); "
            "check the repository and file names or use a local GGUF file."
        ) from exc


# =========================================================================== Ollama and llamafile

NOT_INSTALLED = "not installed on this machine"
NOT_MEASURED = "not measured"


@dataclass
class ToolStatus:
    tool: str
    present: bool
    where: str
    version: str = ""
    models: list[str] = field(default_factory=list)
    note: str = ""


def ollama_url(host: str | None = None) -> str:
    """Ollama's address as the CLI reads it: OLLAMA_HOST (host, host:port or URL), else 127.0.0.1:11434."""
    host = host or os.environ.get("OLLAMA_HOST") or "127.0.0.1:11434"
    if "://" not in host:
        host = "http://" + host
    scheme, rest = host.split("://", 1)
    hostport = rest.rstrip("/")
    if ":" not in hostport.rsplit("]", 1)[-1]:
        hostport += ":11434"
    if hostport.startswith("0.0.0.0"):  # a bind-all address; the server is reached on loopback
        hostport = LOOPBACK + hostport[len("0.0.0.0") :]
    return f"{scheme}://{hostport}"


def detect_ollama(host: str | None = None, timeout: float = 2.0) -> ToolStatus:
    """Ask a running Ollama server for its version and models; never assumes one is there."""
    import requests

    url = ollama_url(host)
    cli = shutil.which("ollama")
    try:
        r = _session().get(url + "/api/version", timeout=timeout)
        r.raise_for_status()
        version = r.json().get("version", "")
    except (requests.RequestException, ValueError):
        where = f"no server at {url}" + (f"; CLI at {cli}" if cli else "; no `ollama` on PATH")
        return ToolStatus("Ollama", False, where, note=NOT_INSTALLED if not cli else "installed, server not running")
    try:
        tags = _session().get(url + "/api/tags", timeout=timeout).json().get("models", [])
        models = [m["name"] for m in sorted(tags, key=lambda m: m.get("size", 0))]
    except (requests.RequestException, ValueError, KeyError):
        models = []
    return ToolStatus("Ollama", True, url, version=version, models=models, note="" if models else "no model pulled")


def ollama_endpoint(status: ToolStatus, model: str | None = None, timeout: float = 120.0) -> Endpoint:
    """Ollama's OpenAI-compatible endpoint, on the smallest pulled model unless one is named."""
    if not status.present:
        raise UserError(f"Ollama is {NOT_INSTALLED} (or not running); start `ollama serve` or set OLLAMA_HOST.")
    if not (model or status.models):
        raise UserError("The Ollama server has no model; pull one with `ollama pull smollm2:135m` and rerun.")
    return Endpoint(base_url=status.where, model=model or status.models[0], name="Ollama", timeout=timeout)


def detect_llamafile(path: str | os.PathLike | None) -> ToolStatus:
    """A llamafile executable given by path (there is no standard install location to search)."""
    if not path:
        return ToolStatus("llamafile", False, "no path given", note=NOT_INSTALLED)
    p = Path(path).expanduser()
    if not p.is_file():
        return ToolStatus("llamafile", False, f"{p} does not exist", note=NOT_INSTALLED)
    if not os.access(p, os.X_OK):
        return ToolStatus("llamafile", False, f"{p} is not executable", note="run chmod +x on it")
    try:
        out = subprocess.run([str(p), "--version"], capture_output=True, text=True, timeout=20)
        version = (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else ""
    except (OSError, subprocess.TimeoutExpired) as exc:
        return ToolStatus("llamafile", False, str(p), note=f"does not run here ({type(exc).__name__})")
    return ToolStatus("llamafile", True, str(p), version=version)


class LlamafileServer(ManagedServer):
    """A llamafile run as a server (its embedded weights, or ``model`` passed with -m)."""

    name = "llamafile"

    def __init__(
        self, path: str | os.PathLike, model: ResolvedModel | None = None, threads: int | None = None, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.path = Path(path)
        self.model = model
        self.threads = threads or os.cpu_count() or 1

    @property
    def model_name(self) -> str:
        return self.model.path.stem if self.model else self.path.stem

    def command(self, port: int) -> list[str]:
        cmd = [str(self.path), "--server", "--nobrowser", "--host", self.host, "--port", str(port)]
        cmd += ["-t", str(self.threads)]
        if self.model:
            cmd += ["-m", str(self.model.path)]
        return cmd


COMPARISON = {
    "llama.cpp": {
        "installation": "build from source with CMake (here), or release binaries / package managers",
        "model management": "you point it at a GGUF file (-m); -hf fetches one from Hugging Face",
        "containerization": "official server images; none needed for a local binary",
        "portability": "C/C++ on Linux, macOS, Windows; CPU and many GPU back ends",
    },
    "Ollama": {
        "installation": "installer or package that runs a background daemon",
        "model management": "`ollama pull name:tag` from its library; Modelfile imports a GGUF",
        "containerization": "official ollama/ollama image",
        "portability": "Linux, macOS, Windows; one daemon serving many models",
    },
    "llamafile": {
        "installation": "download one file and make it executable",
        "model management": "weights embedded in the executable, or -m with a GGUF",
        "containerization": "rarely needed: the single file is the deployment",
        "portability": "one Actually Portable Executable for Linux, macOS, Windows, BSD (x86-64, ARM64)",
    },
}


def comparison_table(measured: dict[str, dict] | None = None):
    """The qualitative comparison, extended with what was measured here ("not measured" elsewhere)."""
    import pandas as pd

    measured = measured or {}
    cols = list(dict.fromkeys(k for m in measured.values() for k in m))  # in the order first given
    rows = []
    for tool, facts in COMPARISON.items():
        row = {"tool": tool, **facts}
        for c in cols:
            row[c] = measured.get(tool, {}).get(c, NOT_MEASURED)
        rows.append(row)
    return pd.DataFrame(rows).set_index("tool")


# =========================================================================== web page and screenshot


def probe_root(target: ManagedServer | Endpoint) -> dict:
    """What the server answers at "/": status, content type, and the start of the body."""
    ep = _as_endpoint(target)
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


def ui_embedded(build: BuildInfo | None = None) -> bool:
    """Whether this build compiled web UI assets into llama-server (the generated ui.h says so)."""
    build = build or current_build()
    header = Path(build.bin_dir).parent / "tools" / "ui" / "ui.h"
    try:
        return "#define LLAMA_UI_HAS_ASSETS 1" in header.read_text()
    except OSError:
        return False


def build_ui(build: BuildInfo | None = None, timeout: float = 1200) -> Path:
    """Build the web UI from the llama.cpp source tree with npm (once; cached by commit) and return its dist dir.

    This is what CMake does with -DLLAMA_BUILD_UI=ON, but outside the C++ build: the assets are
    served with ``llama-server --path`` instead of being compiled in, so the cached build stays valid.
    """
    from .build import _sdist_source

    build = build or current_build()
    root = cache_dir("ui", build.llama_cpp_commit)
    dist = root / "dist"
    if (dist / "index.html").exists():
        return dist
    partial = root / "dist.partial"  # renamed when complete: an interrupted build is never served
    shutil.rmtree(partial, ignore_errors=True)
    npm = shutil.which("npm")
    if not npm:
        raise UserError("npm is not installed, so the web UI cannot be built; install Node.js 20+ with npm and rerun.")
    ui_src = _sdist_source(build.llama_cpp_python_version) / "vendor" / "llama.cpp" / "tools" / "ui"
    if not (ui_src / "package.json").exists():
        raise UserError(f"{ui_src} has no package.json; this llama.cpp tree has no web UI sources to build.")
    work = root / "src"
    if not (work / "package.json").exists():
        shutil.copytree(ui_src, work, ignore=shutil.ignore_patterns("node_modules"), dirs_exist_ok=True)
    log = root / "npm.log"
    env = {
        **os.environ,
        "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1",  # test-only dependency; no browser download
        "LLAMA_UI_OUT_DIR": str(partial),
        "LLAMA_BUILD_NUMBER": build.llama_cpp_commit,
    }
    steps = [] if (work / "node_modules" / ".package-lock.json").exists() else [[npm, "ci", "--no-audit", "--no-fund"]]
    steps.append([npm, "run", "build"])
    with open(log, "a") as fh:
        for cmd in steps:
            try:
                proc = subprocess.run(cmd, cwd=work, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise UserError(f"`{' '.join(cmd[1:])}` for the web UI took over {timeout:.0f} s; see {log}.") from exc
            if proc.returncode != 0:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                raise UserError(
                    f"`npm {' '.join(cmd[1:])}` for the web UI failed (exit {proc.returncode}); see {log}.\n{tail}"
                )
    if not (partial / "index.html").exists():
        raise UserError(f"The web UI build finished without {partial / 'index.html'}; see {log}.")
    partial.rename(dist)
    return dist


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    raise UserError(
        "No Chromium or Chrome is installed for the screenshot; install chromium (Debian: apt-get install chromium)."
    )


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


_FD_TRAMPOLINE = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); os.execv(sys.argv[3], sys.argv[3:])"
)


class _Cdp:
    """A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out).

    ``--screenshot`` alone captures at the load event, before the single-page UI has rendered
    (a blank page); driving the page over DevTools lets us wait for it, and type a question.
    """

    def __init__(self, size: tuple[int, int], profile: str, timeout: float) -> None:
        self.timeout = timeout
        self.events: list[dict] = []
        self._buf = b""
        self._id = 0
        import fcntl

        pipe_r, self._cmd_w = os.pipe()
        self._res_r, pipe_w = os.pipe()
        # copies numbered 10 and up, so that moving them onto 3 and 4 in the child cannot clobber one another
        cmd_r, res_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (pipe_r, pipe_w))
        os.close(pipe_r)
        os.close(pipe_w)
        self.log_path = cache_dir("server-logs") / f"chromium-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.log"
        args = [
            find_chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            f"--window-size={size[0]},{size[1]}",
            "about:blank",
        ]
        # a tiny Python trampoline moves our pipe ends to the fds Chromium expects (3 and 4) and execs it;
        # preexec_fn is unsafe in a threaded kernel, and sh cannot redirect fds above 9
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _FD_TRAMPOLINE, str(cmd_r), str(res_w), *args],
                pass_fds=(cmd_r, res_w),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        os.close(cmd_r)
        os.close(res_w)
        self.session: str | None = None

    def log_tail(self, lines: int = 8) -> str:
        # D-Bus complaints are normal in a container without a session bus; leave them out
        text = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        useful = [ln for ln in text if "dbus" not in ln.lower()]
        return f"\nLast lines of {self.log_path}:\n" + "\n".join(useful[-lines:]) if useful else ""

    def call(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        import select

        self._id += 1
        msg: dict = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        try:
            os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError as exc:
            raise UserError(
                f"Chromium exited (code {self.proc.poll()}) during {method}; see its log." + self.log_tail()
            ) from exc
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise UserError(
                            f"Chromium refused {method} ({reply['error'].get('message')}); see the DevTools log."
                        )
                    return reply.get("result", {})
                self.events.append(reply)
            ready, _, _ = select.select([self._res_r], [], [], 0.5)
            if ready:
                chunk = os.read(self._res_r, 1 << 20)
                if not chunk:
                    time.sleep(0.5)  # let it finish writing its log
                    raise UserError(
                        f"Chromium closed its DevTools pipe during {method} (exit code {self.proc.poll()}); "
                        "see its log." + self.log_tail()
                    )
                self._buf += chunk
        raise UserError(f"Chromium did not answer {method} within {self.timeout:.0f} s; check the page in a browser.")

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise UserError(f"The page did not {what} within {timeout:.0f} s; open it in a browser to check.")
            time.sleep(0.5)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("Browser.close", session=False)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # helper processes too
        self.proc.wait()
        for fd in (self._cmd_w, self._res_r):
            with contextlib.suppress(OSError):
                os.close(fd)


def chromium_screenshot(
    url: str,
    out: Path,
    size: tuple[int, int] = (1280, 800),
    ready_selector: str = "textarea",
    prompt: str | None = None,
    busy: Callable[[], bool] | None = None,
    timeout: float = 120,
) -> Path:
    """Screenshot ``url`` in headless Chromium once ``ready_selector`` exists (fresh profile, no sync/updates).

    With ``prompt``, type it into the page's text box, press Enter, and wait until ``busy()`` turns
    false and the page text stops changing, so the picture shows the answer.
    """
    import base64

    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cdp = _Cdp(size, profile, timeout=30)
        try:
            target = cdp.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
            cdp.session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)[
                "sessionId"
            ]
            cdp.call("Page.enable")
            cdp.call("Runtime.enable")
            cdp.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False},
            )
            cdp.call("Page.navigate", {"url": url})
            cdp.wait_for(f"!!document.querySelector({json.dumps(ready_selector)})", timeout, "render its chat box")
            if prompt:
                cdp.evaluate(f"document.querySelector({json.dumps(ready_selector)}).focus()")
                cdp.call("Input.insertText", {"text": prompt})
                for kind in ("keyDown", "keyUp"):
                    cdp.call(
                        "Input.dispatchKeyEvent",
                        {"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"},
                    )
                # the conversation view shows the question; then wait for an answer that stops growing
                cdp.wait_for(
                    "!document.querySelector('textarea')?.value && "
                    f"document.body.innerText.split({json.dumps(prompt)}).length > 1",
                    timeout,
                    "show the question",
                )
                asked = len(cdp.evaluate("document.body.innerText"))
                deadline = time.monotonic() + timeout
                last = None
                while True:
                    time.sleep(1.0)
                    text = cdp.evaluate("document.body.innerText")
                    if text == last and len(text) > asked + 20 and not (busy and busy()):
                        break
                    if time.monotonic() > deadline:
                        raise UserError(f"The chat page did not finish answering within {timeout:.0f} s; lower -n.")
                    last = text
            shot = cdp.call("Page.captureScreenshot", {"format": "png"})["data"]
            out.write_bytes(base64.b64decode(shot))
        finally:
            cdp.close()
    return out


@dataclass
class ScreenshotResult:
    image: Path
    root_without_path: dict  # what this build serves at "/" on its own
    root_with_ui: dict | None  # what it serves with --path <built UI>
    ui_source: str
    ui_dir: Path | None
    prompt: str | None


def _slots_busy(srv: LlamaServer) -> bool:
    try:
        slots = _request(srv.endpoint, "GET", "/slots", timeout=5).json()
    except UserError:
        return False
    return any(s.get("is_processing") for s in slots)


def screenshot(
    out: Path,
    model: ResolvedModel,
    build: BuildInfo | None = None,
    threads: int = 1,
    size: tuple[int, int] = (1280, 800),
    prompt: str | None = CHAT_USER,
    max_tokens: int = 48,
) -> ScreenshotResult:
    """Find out what llama-server serves at "/", get a chat UI onto it if needed, and screenshot it.

    With ``prompt``, the question is typed into the UI so the picture shows a local answer
    (greedy, at most ``max_tokens`` tokens: server defaults, since the UI leaves sampling to the server).
    """
    build = build or current_build()
    defaults = ["-n", str(max_tokens), "--temp", "0"]
    with LlamaServer(model, threads=threads, build=build, extra_args=defaults) as srv:
        bare = probe_root(srv)
        if ui_embedded(build) and bare["status"] == 200:
            image = chromium_screenshot(srv.url + "/", out, size, prompt=prompt, busy=lambda: _slots_busy(srv))
            return ScreenshotResult(image, bare, None, "embedded in llama-server at build time", None, prompt)
    dist = build_ui(build)
    with LlamaServer(model, threads=threads, build=build, static_path=dist, extra_args=defaults) as srv:
        with_ui = probe_root(srv)
        if with_ui["status"] != 200:
            raise UserError(f"llama-server --path {dist} answered {with_ui['status']} at /; see {srv.log_path}.")
        image = chromium_screenshot(srv.url + "/", out, size, prompt=prompt, busy=lambda: _slots_busy(srv))
    source = "built from tools/ui with npm, served with llama-server --path"
    return ScreenshotResult(image, bare, with_ui, source, dist, prompt)


def served_files(directory: Path) -> Iterator[Path]:
    """The files a --path directory serves (for a listing in the book)."""
    return (p for p in sorted(Path(directory).rglob("*")) if p.is_file())
