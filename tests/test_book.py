"""The book: it builds with warnings as errors, and a real browser sees its figures and citations."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from localllms import book
from localllms.paths import PROJECT_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def html() -> Path:
    index = book.build_html()  # from the committed notebooks (or this tree's executed ones)
    return index.parent


def _chromium(*args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        return subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_every_chapter_is_built(html: Path) -> None:
    for nb in book.notebooks():
        assert (html / "notebooks" / f"{nb.stem}.html").exists(), nb.stem
    for page in ("intro", "references"):
        assert (html / "book" / f"{page}.html").exists()


def test_notebooks_show_their_provenance(html: Path) -> None:
    for nb in book.notebooks():
        text = (html / "notebooks" / f"{nb.stem}.html").read_text()
        assert "llama.cpp 0c1e57098" in text and "sha256" in text and "Machine:" in text, nb.stem


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make setup installs it on Debian as root)")
def test_case_study_in_a_real_browser(html: Path) -> None:
    page = html / "notebooks" / "quantization.html"
    dom = _chromium("--dump-dom", page.as_uri()).stdout
    assert "<title>" in dom and "quantization" in dom.lower()
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', dom)
    assert len(images) >= 4, images  # quality, throughput, Pareto, roofline
    for src in images:
        assert (page.parent / src).resolve().exists(), src
    cites = re.findall(r'<a[^>]+href="([^"]*references\.html#[^"]+)"', dom)
    assert cites, "no citation links to the bibliography"
    bib = (html / "book" / "references.html").read_text()
    for href in set(cites):
        anchor = href.split("#", 1)[1]
        assert f'id="{anchor}"' in bib, href
    shot = PROJECT_ROOT / "_build" / "screenshots" / "quantization.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    _chromium(f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri())
    assert shot.exists() and shot.stat().st_size > 20_000
