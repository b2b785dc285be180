"""Open WebUI's own environment: a venv under the cache, pinned by requirements-openwebui.txt,
installed step by step with each step's time and the venv's size recorded in ``install.json``
(written last, so an interrupted install is never taken for a finished one). The server and the
screenshot are in ``openwebui``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from .. import progress
from ..errors import UserError
from ..paths import PROJECT_ROOT, cache_dir, content_key, write_atomic
from .webui import run_logged

CONSTRAINTS = PROJECT_ROOT / "requirements-openwebui.txt"
PYTHON = "python3.11"  # Open WebUI 0.12 requires Python >=3.11,<3.13
MIN_FREE_BYTES = 5 * 2**30  # the venv takes about 3 GB; pip unpacks wheels beside it


def pinned(name: str) -> str:
    """The version ``requirements-openwebui.txt`` pins for ``name`` (e.g. ``open-webui``, ``torch``)."""
    text = CONSTRAINTS.read_text() if CONSTRAINTS.exists() else ""
    m = re.search(rf"^{re.escape(name)}==([^\s#]+)", text, re.M | re.I)
    if not m:
        raise UserError(f"{CONSTRAINTS.name} pins no version of {name}; add a line `{name}==VERSION` to it.")
    return m.group(1)


def home() -> Path:
    """Where Open WebUI lives: ``$LOCALLLMS_CACHE/open-webui`` (outside the work tree and ``.venv``)."""
    return cache_dir("open-webui")


def venv_dir() -> Path:
    return home() / "venv"


def _record_path() -> Path:
    return home() / "install.json"


def install_key() -> str:
    """The key an install record must carry to count: a digest of the constraints file it was made under."""
    return content_key("open-webui install", CONSTRAINTS.read_text() if CONSTRAINTS.exists() else "")


# =========================================================================== install


@dataclass
class InstallInfo:
    version: str  # open-webui's version, as pinned and as its CLI reports it
    torch: str
    python: str
    venv: str
    seconds: dict[str, float]  # per step: venv, torch, open-webui
    bytes_on_disk: int
    files: int
    commands: list[list[str]]
    installed_at: str
    key: str
    log: str

    @property
    def total_seconds(self) -> float:
        return round(sum(self.seconds.values()), 1)

    @property
    def gib(self) -> float:
        return round(self.bytes_on_disk / 2**30, 2)


def installed() -> InstallInfo | None:
    """The record of a finished install that matches the constraints file, else None."""
    path = _record_path()
    try:
        info = InstallInfo(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if info.key != install_key() or not (Path(info.venv) / "bin" / "open-webui").exists():
        return None
    return info


def require_installed() -> InstallInfo:
    info = installed()
    if info is None:
        raise UserError(
            f"Open WebUI is not installed in {venv_dir()} (or not as {CONSTRAINTS.name} pins it); "
            "run `make open-webui` (or `python -m localllms open-webui install`) first."
        )
    return info


def disk_usage(path: Path) -> tuple[int, int]:
    """Bytes on disk (allocated blocks, hard links counted once) and number of files under ``path``."""
    seen: set[tuple[int, int]] = set()
    total = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
            files += 1
    return total, files


def _python_version(python: str) -> tuple[int, int, str]:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1], sys.version.split()[0])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        major, minor, full = out.stdout.split()
        return int(major), int(minor), full
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise UserError(
            f"{python} does not run ({type(exc).__name__}); pass a Python 3.11 or 3.12 with --python."
        ) from exc


def _run_step(name: str, cmd: list[str], log: Path, timeout: float) -> float:
    progress.note(f"==> open-webui: {name}")
    return run_logged(cmd, log, timeout, f"The step '{name}'")


def install(python: str | None = None, force: bool = False, timeout: float = 3600) -> InstallInfo:
    """Install the pinned Open WebUI into its own venv (once; ``force`` reinstalls). Returns the record."""
    if not force and (done := installed()):
        return done
    version, torch_version = pinned("open-webui"), pinned("torch")
    python = python or shutil.which(PYTHON) or ""
    if not python:
        raise UserError(f"No {PYTHON} on PATH; install Python 3.11 (Open WebUI {version} needs 3.11 or 3.12).")
    major, minor, full = _python_version(python)
    if (major, minor) not in ((3, 11), (3, 12)):
        raise UserError(f"{python} is Python {full}; Open WebUI {version} needs 3.11 or 3.12, pass one with --python.")
    free = shutil.disk_usage(home()).free
    if free < MIN_FREE_BYTES:
        raise UserError(
            f"Only {free / 2**30:.1f} GiB are free under {home()}; Open WebUI needs about 5 GiB to install."
        )
    venv = venv_dir()
    _record_path().unlink(missing_ok=True)  # from here on, a half-made venv is never taken for an install
    shutil.rmtree(venv, ignore_errors=True)
    log = home() / "install.log"
    log.write_text(f"# Open WebUI {version} install, {datetime.now(UTC).isoformat(timespec='seconds')}\n")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--progress-bar", "off", "-c", str(CONSTRAINTS)]
    steps = {
        "venv": [python, "-m", "venv", str(venv)],
        "torch": [*pip, f"torch=={torch_version}"],  # the CPU wheel first, so open-webui does not pull another
        "open-webui": [*pip, f"open-webui=={version}"],
    }
    seconds = {name: _run_step(name, cmd, log, timeout) for name, cmd in steps.items()}
    py = str(venv / "bin" / "python")
    query = "import importlib.metadata as m; print(m.version('open-webui'))"
    out = subprocess.run([py, "-c", query], capture_output=True, text=True, timeout=120)
    if out.stdout.strip() != version or not (venv / "bin" / "open-webui").exists():
        raise UserError(f"The venv reports open-webui {out.stdout.strip() or 'missing'}, not {version}; see {log}.")
    size, files = disk_usage(venv)
    info = InstallInfo(
        version=version,
        torch=torch_version,
        python=full,
        venv=str(venv),
        seconds=seconds,
        bytes_on_disk=size,
        files=files,
        commands=list(steps.values()),
        installed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        key=install_key(),
        log=str(log),
    )
    write_atomic(_record_path(), json.dumps(asdict(info), indent=1))
    return info


# =========================================================================== the server
