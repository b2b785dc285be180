"""The book: it builds with warnings as errors, and a real browser sees its figures and citations."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from localllms import book
from localllms.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow  # builds the whole HTML book

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
# No network for the page: every host name fails to resolve and every request goes to a
# proxy that is not there (either alone already stops a https:// load; checked with a
# page that fetches from a reachable host). file:// pages still load their local files.
OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--proxy-server=127.0.0.1:9"]


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


def test_printed_readings_wrap_at_the_page_width(html: Path) -> None:
    # the readings are printed sentences; without this style a paragraph scrolls sideways
    assert "white-space: pre-wrap" in (html / "_static" / "outputs.css").read_text()
    for nb in book.notebooks():
        assert "_static/outputs.css" in (html / "notebooks" / f"{nb.stem}.html").read_text(), nb.stem


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


# Tags whose src/href the browser loads by itself (an <a href> is only followed when clicked).
ASSET_TAGS = {"script", "link", "img", "iframe", "source", "audio", "video", "embed", "object", "track", "input"}


class _RemoteAssets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ASSET_TAGS:
            return
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster") and value and re.match(r"\s*(https?:)?//", value):
                self.found.append(f"<{tag} {name}={value}>")


def test_pages_load_nothing_from_the_web(html: Path) -> None:
    pages = sorted(html.rglob("*.html"))
    assert len(pages) > 5
    for page in pages:
        text = page.read_text()
        parser = _RemoteAssets()
        parser.feed(text)
        assert not parser.found, f"{page.relative_to(html)} loads {parser.found}"
        # MathJax loads its own components on demand: one script tag, never its parts.
        assert len(re.findall(r"<script[^>]+src=\"[^\"]*mathjax/", text)) <= 1, page
        # sphinx-thebe names a CDN copy of thebe in every page; it is fetched only by a launch button.
        assert "thebe-launch-button" not in text, page
    for sheet in html.joinpath("_static").rglob("*.css"):
        remote = re.findall(
            r"(?:url\(\s*[\"']?|@import\s+[\"'])((?:https?:)?//[^\"')]+)", sheet.read_text(errors="replace")
        )
        assert not remote, f"{sheet.relative_to(html)} loads {remote}"


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make setup installs it on Debian as root)")
@pytest.mark.parametrize("name", ["model_selection", "quantization"])
def test_formulas_render_offline(html: Path, name: str) -> None:
    page = html / "notebooks" / f"{name}.html"
    formulas = re.findall(r'<(?:span|div) class="math notranslate nohighlight"[^>]*>', page.read_text())
    assert formulas, f"{name} has no formulas to check"
    dom = _chromium(*OFFLINE, "--virtual-time-budget=10000", "--dump-dom", page.as_uri()).stdout
    rendered = re.findall(r'<(span|div) class="math notranslate nohighlight"[^>]*>(.*?)</\1>', dom, re.S)
    assert len(rendered) == len(formulas), "the page lost formulas"
    for _, body in rendered:
        assert "<mjx-container" in body, f"MathJax did not typeset {body[:200]!r}"
        assert not re.search(r"\\\(|\\\[|\$\$", body), f"raw LaTeX left: {body[:200]!r}"
    assert 'jax="CHTML"' in dom
