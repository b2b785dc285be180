"""MathJax ships with the book: fetched once from the npm registry, staged beside the pages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from localllms import mathjax
from localllms.errors import UserError
from localllms.paths import PROJECT_ROOT


def test_mathjax_is_cached_and_staged_with_its_fonts(tmp_path: Path) -> None:
    es5 = mathjax.ensure_mathjax()
    assert es5 == mathjax.ensure_mathjax()  # the second call reuses the cache
    assert es5.parent.name == mathjax.MATHJAX_VERSION
    staged = mathjax.stage_mathjax(tmp_path)
    assert staged == tmp_path / mathjax.STATIC_DIR / "mathjax"
    assert (staged / mathjax.ENTRY).stat().st_size > 1_000_000
    assert f'VERSION="{mathjax.MATHJAX_VERSION}"' in (staged / mathjax.ENTRY).read_text()
    assert "Apache License" in (staged / "LICENSE").read_text()
    assert len(list((staged / "output" / "chtml" / "fonts" / "woff-v2").glob("MathJax_*.woff"))) >= 20
    # The staged folder is the one the book's config points Sphinx at.
    sphinx = yaml.safe_load((PROJECT_ROOT / "_config.yml").read_text())["sphinx"]["config"]
    assert mathjax.STATIC_DIR in sphinx["html_static_path"]
    assert sphinx["mathjax_path"] == f"mathjax/{mathjax.ENTRY}"


def test_missing_npm_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALLLMS_CACHE", str(tmp_path))  # nothing cached here
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="npm is not installed.*apt-get install nodejs npm"):
        mathjax.ensure_mathjax()


def test_unreachable_registry_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALLLMS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")  # nothing listens on the discard port
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("npm_config_fetch_retry_mintimeout", "100")
    monkeypatch.setenv("npm_config_fetch_retry_maxtimeout", "200")
    with pytest.raises(UserError, match=r"Could not fetch mathjax@3\.\d+\.\d+ from the npm registry") as err:
        mathjax.ensure_mathjax()
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "cache" / "mathjax").rglob("*.js"))  # nothing half-fetched is left
