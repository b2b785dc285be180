"""A chapter is one registration: its parameters cell, its cache key and its statement follow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localllms import book, chapters


def test_a_new_chapter_is_one_registration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, build, smollm2, gemma
) -> None:
    extra = chapters.Chapter(
        "extra",
        (
            chapters.Param("MODEL", "smollm2-135m-instruct", "the model", model=True),
            chapters.Param("OTHER", "gemma-3-270m", "a second model", model=True),
            chapters.Param("N", 3, "a count"),
        ),
        depends=("quantization",),
    )
    monkeypatch.setitem(chapters.CHAPTERS, "extra", extra)
    assert chapters.model_parameters("extra") == ("MODEL", "OTHER")
    cell = chapters.render_cell(extra)
    assert 'MODEL = "smollm2-135m-instruct"  # the model' in cell and "N = 3  # a count" in cell
    assert chapters.cell_values(cell) == extra.defaults
    assert chapters.describe_parameters("extra", {**extra.defaults, "N": 4}).endswith(
        "Changed from the book's defaults: N (default 3)."
    )
    nb = {"cells": [{"cell_type": "code", "source": cell, "metadata": {"tags": ["parameters"]}, "outputs": []}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}  # fmt: skip
    path = tmp_path / "extra.ipynb"
    path.write_text(json.dumps(nb))
    inputs = book.notebook_inputs(path, {})
    # every model-valued parameter's file digest is in the key, and so is the chapter it reads
    assert inputs["models"] == {"smollm2-135m-instruct": smollm2.sha256[:16], "gemma-3-270m": gemma.sha256[:16]}
    assert set(inputs["depends_on"]) == {"quantization"}
    swapped = book.notebook_inputs(path, {"OTHER": "smollm2-135m-instruct"})
    assert swapped["models"] != inputs["models"]  # pointing a model parameter at another file changes the key
