"""The server process: a free loopback port, a managed child process, and ``LlamaServer``.

* ``port_in_use``, ``free_port``: loopback ports (servers here never bind other addresses).
* :class:`ManagedServer`: a local HTTP server process, started on a port, ready when its
  ``/health`` says ok, and always stopped: process-group kill, an ``atexit`` hook over every
  live server, and the kernel's parent-death signal if Python itself dies hard. Its log is kept
  in a file whose tail is shown when something fails.
* :class:`LlamaServer`: a managed ``llama-server`` for one model.
* ``pid_exists``: whether a process still runs (for checking that nothing outlives its owner).
* ``shell_line``: a command as a reader would type it, paths shortened to file names.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from ..build import BuildInfo, current_build
from ..errors import UserError
from ..models import ResolvedModel
from ..paths import cache_dir
from .clients import SEED, Endpoint, request, session

LOOPBACK = "127.0.0.1"


def shell_line(cmd: Sequence[str]) -> str:
    """``cmd`` as one shell line with every path shortened to its file name (``llama-server -m model.gguf ...``),
    so a reader can rerun it by hand from the directory holding the build's tools and the model."""
    return shlex.join(Path(a).name if a.startswith("/") and len(a) > 1 else a for a in cmd)


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


def live_servers() -> frozenset[ManagedServer]:
    """The servers started and not yet stopped: the ones the ``atexit`` hook would stop."""
    with _LIVE_LOCK:
        return frozenset(_LIVE)


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
        # SIGKILL, not SIGTERM: with nobody left to answer, a graceful shutdown has nothing to save,
        # and llama-server was seen ignoring SIGTERM for seconds (an orphan in CI)
        return [setpriv, "--pdeathsig", "SIGKILL", "--"]
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

    def healthy(self, payload: object) -> bool:
        """Whether the JSON at ``health_path`` says ready (llama.cpp's is ``{"status": "ok"}``)."""
        return isinstance(payload, dict) and payload.get("status") == "ok"

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
        http = session()
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
                r = http.get(self.url + self.health_path, timeout=2)
                if r.ok and self.healthy(r.json()):
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
        r = request(self.endpoint, "GET", self.health_path, timeout=timeout)
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

    ``threads`` is the run's thread count, resolved where the run starts (``-t`` and ``-tb``);
    ``parallel`` is the number of slots (``-np``);
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
        threads: int,
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
        if threads < 1:
            raise UserError(f"threads must be at least 1, not {threads}; resolve THREADS where the run starts.")
        self.model = model
        self.threads = threads
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

    def command_line(self, port: int | None = None) -> str:
        """The exact command this server runs (or would run), paths shortened to file names."""
        return shell_line(self.command(port or self.port or 8080))

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
