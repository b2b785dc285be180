"""Open WebUI without installing it: the pins, the chapter's account of them, the not-installed message."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from localllms.errors import UserError
from localllms.paths import PROJECT_ROOT
from localllms.serve import openwebui, openwebui_venv

CHAPTER = (PROJECT_ROOT / "book" / "user_interfaces.md").read_text()


def test_the_chapter_names_every_setting_the_server_sets() -> None:
    for name in [*openwebui.SETTINGS, *openwebui.PER_START]:
        assert f"`{name}`" in CHAPTER, name


def test_the_chapter_shows_the_pinned_versions_and_their_count() -> None:
    pins = re.findall(r"^[A-Za-z0-9_.-]+==\S+", openwebui.CONSTRAINTS.read_text(), re.M)
    assert f"open-webui=={openwebui.pinned('open-webui')}" in CHAPTER
    assert f"torch=={openwebui.pinned('torch')}" in CHAPTER
    assert f"{len(pins)} pinned packages" in CHAPTER
    # torch is pinned without its local label, so the same line matches the CPU wheel (2.13.0+cpu)
    assert "+" not in openwebui.pinned("torch")


def test_a_missing_pin_is_one_sentence() -> None:
    with pytest.raises(UserError, match=r"^requirements-openwebui.txt pins no version of no-such-package; add"):
        openwebui.pinned("no-such-package")


def test_not_installed_is_one_sentence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOCALLLMS_CACHE", str(tmp_path))
    assert openwebui.installed() is None
    with pytest.raises(UserError) as err:
        openwebui.require_installed()
    message = str(err.value)
    assert message.startswith(f"Open WebUI is not installed in {tmp_path / 'open-webui' / 'venv'}")
    assert "`make open-webui`" in message and message.endswith("first.") and "\n" not in message


def test_an_install_record_for_other_pins_is_not_an_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # a record written under another constraints file (an upgrade since) must not be trusted
    monkeypatch.setenv("LOCALLLMS_CACHE", str(tmp_path))
    venv = tmp_path / "open-webui" / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "open-webui").write_text("")
    record = {
        "version": "0.0.1", "torch": "0", "python": "3.11", "venv": str(venv), "seconds": {}, "bytes_on_disk": 0,
        "files": 0, "commands": [], "installed_at": "", "key": "other-pins", "log": "",
    }  # fmt: skip
    (tmp_path / "open-webui" / "install.json").write_text(json.dumps(record))
    assert openwebui.installed() is None
    record["key"] = openwebui_venv.install_key()
    (tmp_path / "open-webui" / "install.json").write_text(json.dumps(record))
    assert openwebui.installed() is not None
