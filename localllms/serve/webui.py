"""llama-server's web page: what it serves at "/", a chat UI for it if needed, and a screenshot.

* ``ui_embedded``: whether this build compiled the web UI into llama-server.
* ``build_ui``: otherwise build the UI from the llama.cpp sources with npm (cached by commit),
  to serve it with ``llama-server --path``.
* ``chromium_screenshot``: headless Chromium driven over the DevTools protocol (``_Cdp``), so the
  picture is taken once the single-page UI has rendered, optionally after typing a question.
* ``screenshot``: all of it for the book's figure, with the server's answer on the page.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import progress
from ..build import BuildInfo, current_build, llama_cpp_source
from ..errors import UserError
from ..models import ResolvedModel
from ..paths import cache_dir, write_atomic
from .clients import CHAT_USER, probe_root, request
from .process import LlamaServer


def ui_embedded(build: BuildInfo | None = None) -> bool:
    """Whether this build compiled web UI assets into llama-server (the generated ui.h says so)."""
    build = build or current_build()
    header = Path(build.bin_dir).parent / "tools" / "ui" / "ui.h"
    try:
        return "#define LLAMA_UI_HAS_ASSETS 1" in header.read_text()
    except OSError:
        return False


def run_logged(
    cmd: list[str], log: Path, timeout: float, what: str, cwd: Path | None = None, env: dict | None = None
) -> float:
    """Run one setup command with its output appended to ``log`` and return its seconds; a timeout or
    a failure is one sentence naming ``what``, the log and, on failure, the log's last lines."""
    started = time.monotonic()
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        try:
            proc = subprocess.run(
                cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise UserError(f"{what} did not finish within {timeout:.0f} s; see {log}.") from exc
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise UserError(f"{what} failed with exit code {proc.returncode}; see {log}.\nLast lines of the log:\n{tail}")
    return round(time.monotonic() - started, 1)


def build_ui(build: BuildInfo | None = None, timeout: float = 1200) -> Path:
    """Build the web UI from the llama.cpp source tree with npm (once; cached by commit) and return its dist dir.

    This is what CMake does with -DLLAMA_BUILD_UI=ON, but outside the C++ build: the assets are
    served with ``llama-server --path`` instead of being compiled in, so the cached build stays valid.
    """
    build = build or current_build()
    root = cache_dir("ui", build.llama_cpp_commit)
    dist = root / "dist"
    if (dist / "index.html").exists():
        return dist
    progress.note("==> web UI: building llama.cpp's tools/ui with npm (once per llama.cpp commit, about 1.5 minutes)")
    partial = root / "dist.partial"  # renamed when complete: an interrupted build is never served
    shutil.rmtree(partial, ignore_errors=True)
    npm = shutil.which("npm")
    if not npm:
        raise UserError("npm is not installed, so the web UI cannot be built; install Node.js 20+ with npm and rerun.")
    ui_src = llama_cpp_source(build) / "tools" / "ui"
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
    for cmd in steps:
        run_logged(cmd, log, timeout, f"`npm {' '.join(cmd[1:])}` for the web UI", cwd=work, env=env)
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
                # anything else is an event (Page/Runtime.enable turn them on): not needed here
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
    input_selector: str | None = None,
) -> Path:
    """Screenshot ``url`` in headless Chromium once ``ready_selector`` exists (fresh profile, no sync/updates).

    With ``prompt``, type it into the page's text box (``input_selector``, default ``ready_selector``:
    a textarea or a contenteditable editor), press Enter, and wait until ``busy()`` turns false and
    the page text stops changing, so the picture shows the answer.
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
                box = json.dumps(input_selector or ready_selector)
                cdp.evaluate(f"document.querySelector({box}).focus()")
                cdp.call("Input.insertText", {"text": prompt})
                for kind in ("keyDown", "keyUp"):
                    cdp.call(
                        "Input.dispatchKeyEvent",
                        {"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"},
                    )
                # the conversation view shows the question; then wait for an answer that stops growing
                cdp.wait_for(
                    # sent: the text box is empty again (a textarea's value, an editor's text)
                    f"!((el) => el?.value ?? el?.innerText ?? '')(document.querySelector({box})).trim() && "
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
            write_atomic(out, base64.b64decode(shot))
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

    def describe(self) -> str:
        """What "/" answered without and with the built UI, and where the UI came from."""
        bare, ui = self.root_without_path, self.root_with_ui
        lines = [f"GET / on this build: HTTP {bare['status']} {bare['content_type']}: {bare['body_start']}"]
        if ui:
            lines.append(f"GET / with --path: HTTP {ui['status']} {ui['content_type']}, {ui['bytes']:,} bytes")
        return "\n".join([*lines, f"UI: {self.ui_source}"])


def slots_busy(srv: LlamaServer) -> bool:
    """Whether any slot of the server is still generating (a chat typed into a page is not done yet)."""
    try:
        slots = request(srv.endpoint, "GET", "/slots", timeout=5).json()
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
            image = chromium_screenshot(srv.url + "/", out, size, prompt=prompt, busy=lambda: slots_busy(srv))
            return ScreenshotResult(image, bare, None, "embedded in llama-server at build time", None, prompt)
    dist = build_ui(build)
    with LlamaServer(model, threads=threads, build=build, static_path=dist, extra_args=defaults) as srv:
        with_ui = probe_root(srv)
        if with_ui["status"] != 200:
            raise UserError(f"llama-server --path {dist} answered {with_ui['status']} at /; see {srv.log_path}.")
        image = chromium_screenshot(srv.url + "/", out, size, prompt=prompt, busy=lambda: slots_busy(srv))
    source = "built from tools/ui with npm, served with llama-server --path"
    return ScreenshotResult(image, bare, with_ui, source, dist, prompt)
