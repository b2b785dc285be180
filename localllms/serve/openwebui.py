"""Open WebUI on the managed llama-server: installed apart, started offline on loopback, screenshotted.

Open WebUI (the ``open-webui`` package on PyPI) is a heavy web application (FastAPI, torch through
sentence-transformers, chromadb, ...), so it never enters the project's environment:

* ``install``: its own venv under the cache (``cache_dir("open-webui")/venv``), Python 3.11, torch
  first (the pinned CPU wheel), then open-webui, both under the constraints file
  ``requirements-openwebui.txt``; the time each step took and the venv's size on disk are recorded
  in ``install.json``, written last, so an interrupted install is never taken for a finished one.
* ``installed``: that record, if the venv is complete and matches the constraints file.
* :class:`OpenWebUIServer`: ``open-webui serve`` as a managed process on 127.0.0.1, pointed at a
  managed llama-server's OpenAI-compatible API, offline (``SETTINGS``: no Ollama, no telemetry, no
  Hub downloads, no update check), one local user without login, a fresh data directory per start.
* ``screenshot``: both servers, a real chat typed into Open WebUI in headless Chromium
  (``webui.chromium_screenshot``), the picture in ``_build/images/open-webui.png`` and what ran
  (version, install time and size, settings, models, or the step that failed and its error) in
  ``open-webui.json`` beside it.

Command line: ``python -m localllms open-webui install|status|screenshot`` (``make open-webui``
runs the first and the last). Nothing here is needed by ``make book`` or ``make test``.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..build import BuildInfo
from ..errors import UserError
from ..models import ResolvedModel
from ..paths import OUTPUT_IMAGES_DIR, PROJECT_ROOT, cache_dir, write_atomic
from .clients import CHAT_USER, request
from .openwebui_venv import (  # re-exported: one import for the command line and the tests
    CONSTRAINTS as CONSTRAINTS,
)
from .openwebui_venv import (
    PYTHON,
    home,
    install,
    installed,
    pinned,
    require_installed,
    venv_dir,
)
from .openwebui_venv import (
    InstallInfo as InstallInfo,
)
from .process import LlamaServer, ManagedServer
from .runtimes import require_chat_template
from .webui import chromium_screenshot, find_chromium, slots_busy

CHAT_INPUT = "#chat-input"  # Open WebUI's message editor (a contenteditable TipTap editor, not a textarea)

# Environment for `open-webui serve`, each with its reason (names as Open WebUI's env.py/config.py read them).
SETTINGS: dict[str, str] = {
    "WEBUI_AUTH": "False",  # one local user, no login page (only possible on a fresh data directory)
    "ENABLE_OLLAMA_API": "False",  # no Ollama here: the only back end is the llama-server below
    "OFFLINE_MODE": "True",  # sets HF_HUB_OFFLINE=1, turns off the version update check and model auto-updates
    "HF_HUB_OFFLINE": "1",  # the Hugging Face Hub is unreachable: fail at once instead of retrying
    "RAG_EMBEDDING_MODEL": "",  # its default (sentence-transformers/all-MiniLM-L6-v2) would come from the Hub
    "ENABLE_PERSISTENT_CONFIG": "False",  # these variables win over settings stored by an earlier start
    "ENABLE_TITLE_GENERATION": "False",  # no extra requests to the 1-slot server after each answer
    "ENABLE_FOLLOW_UP_GENERATION": "False",
    "ENABLE_TAGS_GENERATION": "False",
    "ENABLE_COMMUNITY_SHARING": "False",  # no button that shares chats to openwebui.com
    "ANONYMIZED_TELEMETRY": "False",  # chromadb's usage reports
    "DO_NOT_TRACK": "True",  # huggingface_hub's usage reports
}
# Set per start: OPENAI_API_BASE_URL, OPENAI_API_KEY, DEFAULT_MODELS, DATA_DIR, WEBUI_SECRET_KEY, CORS_ALLOW_ORIGIN.
PER_START = (
    "OPENAI_API_BASE_URL",
    "OPENAI_API_KEY",
    "DEFAULT_MODELS",
    "DATA_DIR",
    "WEBUI_SECRET_KEY",
    "CORS_ALLOW_ORIGIN",
)


class OpenWebUIServer(ManagedServer):
    """``open-webui serve`` on loopback, its only model source the OpenAI-compatible API of ``backend``.

    ``backend`` must be started first (its URL goes into the environment). Each start gets a fresh
    data directory (SQLite database, uploads), removed on stop, unless ``data_dir`` is given.
    """

    name = "open-webui"
    health_path = "/ready"  # {"status": true} once its startup is complete and its database answers

    def __init__(
        self,
        backend: ManagedServer,
        *,
        data_dir: Path | None = None,
        port: int | None = None,
        startup_timeout: float = 300.0,
        request_timeout: float = 120.0,
        log_dir: Path | None = None,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout, request_timeout=request_timeout, log_dir=log_dir)
        self.install = require_installed()
        self.backend = backend
        self.data_dir = Path(data_dir) if data_dir else None
        self._own_data_dir: Path | None = None
        self._secret = secrets.token_urlsafe(32)

    @property
    def model_name(self) -> str:
        return self.backend.model_name

    def healthy(self, payload: object) -> bool:
        return isinstance(payload, dict) and payload.get("status") is True

    def command(self, port: int) -> list[str]:
        cli = Path(self.install.venv) / "bin" / "open-webui"
        return [str(cli), "serve", "--host", self.host, "--port", str(port)]

    def settings(self) -> dict[str, str]:
        """The variables this start sets (``SETTINGS`` and the per-start ones), without the secret key."""
        return {
            **SETTINGS,
            "OPENAI_API_BASE_URL": self.backend.url + "/v1",
            "OPENAI_API_KEY": self.backend.api_key or "none",  # llama-server without --api-key accepts any
            "DEFAULT_MODELS": self.backend.model_name,
            "DATA_DIR": str(self.data_dir or self._own_data_dir or ""),  # made by child_env at launch
            "CORS_ALLOW_ORIGIN": self.url,
        }

    def child_env(self) -> dict[str, str]:
        # WEBUI_SECRET_KEY signs its session tokens; through the environment, not a file in the cwd or `ps`
        self.data_path()
        return {**super().child_env(), **self.settings(), "WEBUI_SECRET_KEY": self._secret}

    def data_path(self) -> Path:
        """Its data directory: ``data_dir``, or a fresh one under the cache for this start (made here)."""
        if self.data_dir is not None:
            return self.data_dir
        if self._own_data_dir is None:
            self._own_data_dir = Path(tempfile.mkdtemp(prefix="data-", dir=home()))
        return self._own_data_dir

    def start(self) -> OpenWebUIServer:
        self.backend.url  # noqa: B018 - raises a clear UserError if the back end is not started
        super().start()
        return self

    def stop(self, grace: float = 10.0) -> int | None:
        try:
            return super().stop(grace)
        finally:
            if self._own_data_dir is not None and (self.proc is None or self.proc.poll() is not None):
                shutil.rmtree(self._own_data_dir, ignore_errors=True)
                self._own_data_dir = None

    # ----------------------------------------------------------------- its API
    def sign_in(self) -> str:
        """Sign in as the single local user (WEBUI_AUTH=False) and keep its token for later calls."""
        r = request(self.endpoint, "POST", "/api/v1/auths/signin", json_body={"email": "", "password": ""})
        self.api_key = r.json()["token"]
        return self.api_key

    def version(self) -> str:
        return request(self.endpoint, "GET", "/api/version").json()["version"]

    def models(self) -> list[str]:
        """The model ids Open WebUI offers (here: what it found at the back end's /v1/models)."""
        if not self.api_key:
            self.sign_in()
        return [m["id"] for m in request(self.endpoint, "GET", "/api/models").json()["data"]]

    def update_ui_settings(self, ui: dict[str, Any]) -> dict:
        """Store interface settings for the user, as its Settings dialog does."""
        if not self.api_key:
            self.sign_in()
        return request(self.endpoint, "POST", "/api/v1/users/user/settings/update", json_body={"ui": ui}).json()

    def chat(self, prompt: str, max_tokens: int = 16) -> str:
        """One chat turn through Open WebUI's own API (it forwards to the back end); the answer's text."""
        if not self.api_key:
            self.sign_in()
        body = {
            "model": self.model_name,
            "messages": [{"role": "user", "content": prompt}],
            "stream": False,
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        r = request(self.endpoint, "POST", "/api/chat/completions", json_body=body)
        return r.json()["choices"][0]["message"]["content"]

    def listening(self) -> list[str]:
        """The local addresses the server process listens on (from ``ss``), e.g. ``['127.0.0.1:8080']``."""
        ss = shutil.which("ss")
        if not ss or self.pid is None:
            return []
        out = subprocess.run([ss, "-Hltnp"], capture_output=True, text=True, timeout=30).stdout
        return sorted({ln.split()[3] for ln in out.splitlines() if f"pid={self.pid}," in ln})


# =========================================================================== the screenshot


@dataclass
class OpenWebUIShot:
    ok: bool
    step: str  # the last step reached: where it failed, or "done"
    error: str | None
    image: str | None
    version: str | None
    install: dict | None
    model: str | None
    models: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    listening: list[str] = field(default_factory=list)
    prompt: str | None = None
    max_tokens: int | None = None
    ready_seconds: float | None = None  # timing: how long `open-webui serve` took to be ready
    date: str = ""


def _portable(cmd: list[str]) -> list[str]:
    """A command as shown in the report: cache and project paths by name, not this machine's."""
    cache, root = str(cache_dir()), str(PROJECT_ROOT) + "/"
    return [
        re.sub(r"^/.*/(llama-server|python[\d.]*)$", r"\1", part.replace(cache, "$LOCALLLMS_CACHE").replace(root, ""))
        for part in cmd
    ]


def screenshot(
    model: ResolvedModel,
    out: Path = OUTPUT_IMAGES_DIR / "open-webui.png",
    prompt: str = CHAT_USER,
    max_tokens: int = 48,
    threads: int = 1,
    size: tuple[int, int] = (1280, 800),
    build: BuildInfo | None = None,
    timeout: float = 300,
) -> OpenWebUIShot:
    """A real chat in Open WebUI on the managed llama-server, screenshotted in headless Chromium.

    The answer is greedy and at most ``max_tokens`` tokens (llama-server defaults: Open WebUI leaves
    sampling to the server), as in the serving chapter's picture of llama-server's own page. What
    ran, or the step that failed with its error, is written to ``out`` with the suffix ``.json``;
    a failure is then raised as a UserError.
    """
    out = Path(out)
    report = out.with_suffix(".json")
    shot = OpenWebUIShot(False, "check the install", None, None, None, None, model.spec, prompt=prompt)
    shot.max_tokens = max_tokens
    try:
        info = require_installed()
        shot.install = asdict(info) | {"venv": _portable([info.venv])[0], "log": _portable([info.log])[0]}
        shot.install["commands"] = [_portable(c) for c in info.commands]
        shot.step = "check the prerequisites"
        find_chromium()
        require_chat_template(model, "a chat in Open WebUI")
        shot.step = "start llama-server"
        server_defaults = ["-n", str(max_tokens), "--temp", "0"]
        with LlamaServer(model, threads=threads, build=build, extra_args=server_defaults) as llm:
            shot.model = llm.model_name
            shot.commands["llama-server"] = _portable(llm.command(llm.port or 0))
            shot.step = "start open-webui serve"
            with OpenWebUIServer(llm) as ui:
                shot.commands["open-webui"] = _portable(ui.command(ui.port or 0))
                shot.settings = {k: v for k, v in ui.settings().items() if k != "DATA_DIR"}
                shot.ready_seconds = round(ui.ready_seconds or 0, 1)
                shot.listening = ui.listening()
                shot.step = "sign in and list models through Open WebUI's API"
                shot.version = ui.version()
                shot.models = ui.models()
                if shot.models != [llm.model_name]:
                    raise UserError(
                        f"Open WebUI lists {shot.models}, not just the llama-server model {llm.model_name}; "
                        f"see {ui.log_path}."
                    )
                # what its "What's New" dialog stores when dismissed, so the dialog does not cover the chat
                ui.update_ui_settings({"version": shot.version})
                shot.step = "chat in headless Chromium"
                image = chromium_screenshot(
                    ui.url + "/",
                    out,
                    size,
                    ready_selector=CHAT_INPUT,
                    prompt=prompt,
                    busy=lambda: slots_busy(llm),
                    timeout=timeout,
                )
        shot.image, shot.ok, shot.step = _portable([str(image)])[0], True, "done"
    except (UserError, OSError, KeyError, ValueError) as exc:
        shot.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, UserError) else str(exc)
        raise UserError(f"Open WebUI failed at the step '{shot.step}': {shot.error}") from exc
    finally:
        shot.date = datetime.now(UTC).isoformat(timespec="seconds")
        write_atomic(report, json.dumps(asdict(shot), indent=1) + "\n")
    return shot


# =========================================================================== command line


def _emit(data: dict) -> None:
    for k, v in data.items():
        print(f"{k}: {v}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m localllms open-webui", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_install = sub.add_parser("install", help="install the pinned Open WebUI into its own venv (once)")
    p_install.add_argument("--python", help=f"the interpreter for the venv (default: {PYTHON} on PATH)")
    p_install.add_argument("--force", action="store_true", help="reinstall even if installed")
    sub.add_parser("status", help="whether it is installed, and the install's version, time and size")
    p_shot = sub.add_parser("screenshot", help="a real chat in Open WebUI on llama-server, in headless Chromium")
    p_shot.add_argument("--model", default="smollm2-135m-instruct", help="catalog name or local GGUF path")
    p_shot.add_argument("--out", type=Path, default=OUTPUT_IMAGES_DIR / "open-webui.png")
    args = parser.parse_args(argv)
    try:
        if args.command in ("install", "status"):
            info = install(args.python, args.force) if args.command == "install" else installed()
            if info is None:
                _emit({"installed": False, "venv": venv_dir(), "pinned": pinned("open-webui")})
                return
            _emit(
                {
                    "installed": True,
                    "version": info.version,
                    "torch": info.torch,
                    "python": info.python,
                    "venv": info.venv,
                    "install_seconds": info.total_seconds,
                    "install_seconds_by_step": info.seconds,
                    "size_on_disk_gib": info.gib,
                    "files": info.files,
                    "installed_at": info.installed_at,
                }
            )
        else:
            from ..models import resolve

            model = resolve(args.model)
            shot = screenshot(model, args.out)
            report = Path(args.out).with_suffix(".json")
            _emit({"image": shot.image, "report": report, "version": shot.version, "models": shot.models})
            _emit({"listening": shot.listening, "ready_seconds": shot.ready_seconds})
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
