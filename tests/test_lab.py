"""`make lab` starts JupyterLab (also as root, as in containers), on localhost only."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from localllms.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow  # starts JupyterLab


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listeners(port: int) -> list[str]:
    """The local addresses of every TCP socket listening on ``port``, on any interface."""
    return sorted(
        c.laddr.ip
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    )


def test_make_lab_serves_on_localhost_only(tmp_path: Path) -> None:
    port = _free_port()
    out = tmp_path / "lab.log"
    with open(out, "w") as log:
        # Its own process group (make, the shell, jupyter-lab) so that all of it is stopped below.
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "lab", f"LAB_PORT={port}"],
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")},
        )
    try:
        url = None
        deadline = time.monotonic() + 300  # `make setup` first: quick once llama.cpp is built
        while time.monotonic() < deadline and proc.poll() is None:
            m = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=\w+", out.read_text())
            if m:
                url = m.group(0)
                break
            time.sleep(0.5)
        text = out.read_text()
        assert url, f"JupyterLab did not print its URL (exit {proc.poll()}):\n{text[-3000:]}"
        assert "Running as root is not recommended" not in text
        lab_lines = text[text.index("==> JupyterLab") :].splitlines()[:2]
        assert f"http://127.0.0.1:{port}/lab" in lab_lines[0] and "token" in lab_lines[0], lab_lines
        assert "127.0.0.1 only" in lab_lines[1], lab_lines

        for _ in range(60):  # it prints the URL just before it accepts connections
            try:
                status = urllib.request.urlopen(url.replace("/lab?", "/api/status?"), timeout=5)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError(f"nothing answers on 127.0.0.1:{port}")
        assert status.status == 200

        assert _listeners(port) == ["127.0.0.1"]
    finally:
        _stop_group(proc)
    assert not _listeners(port), "JupyterLab is still listening after it was stopped"


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the whole process group, SIGKILL what is left after 30 s; return when it is gone."""
    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()  # reap make itself
            if not _alive_in_group(proc.pid):
                return
            time.sleep(0.2)
    proc.wait(timeout=10)


def _alive_in_group(pgid: int) -> list[int]:
    alive = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return alive
