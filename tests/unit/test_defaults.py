"""Every parameter is declared once (a StudyConfig field, or its chapter's entry); the rest follows."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import pytest
import yaml

from localllms import chapters, defaults
from localllms.errors import UserError
from localllms.paths import PROJECT_ROOT
from localllms.study import config as study_config
from localllms.study.config import StudyConfig


def test_every_parameters_cell_is_written_from_its_declarations() -> None:
    assert chapters.stale_cells() == [], "run `make format` (python -m localllms parameters --write)"
    for ch in chapters.CHAPTERS.values():
        nb = json.loads(ch.path.read_text())
        cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
        assert chapters.cell_values("".join(cell["source"])) == ch.defaults


def test_every_notebook_of_the_book_is_a_registered_chapter() -> None:
    toc = yaml.safe_load((PROJECT_ROOT / "_toc.yml").read_text())
    listed = {c["file"].removeprefix("notebooks/") for p in toc["parts"] for c in p["chapters"]
              if c["file"].startswith("notebooks/")}  # fmt: skip
    assert listed == set(chapters.CHAPTERS)
    assert {p.stem for p in (PROJECT_ROOT / "notebooks").glob("*.ipynb")} == set(chapters.CHAPTERS)


def test_every_parameter_that_names_a_model_is_marked() -> None:
    """A parameter whose default is a catalog name (or a list of them) must be declared ``model``:
    its file's digest then enters the notebook's cache key (SECOND_MODEL was once left out)."""
    from localllms.models import CATALOG

    for ch in chapters.CHAPTERS.values():
        for p in ch.params:
            values = p.default if isinstance(p.default, list) else [p.default]
            if any(isinstance(v, str) and v in CATALOG for v in values):
                assert p.model, f"{ch.name}.{p.name} names a model but is not declared model=True"
    assert "SECOND_MODEL" in chapters.model_parameters("quantization")


def test_a_study_parameter_is_one_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Add a field to StudyConfig (here, on a subclass made for the test): the CLI option, the run's
    store key, the comparison filter's values and the notebook's cell and statement all follow."""

    @dataclasses.dataclass(frozen=True)
    class WithTopK(StudyConfig):
        top_k: int = study_config.param(40, "TOP_K", "sampling: the k most likely tokens", cli="--top-k", store="top_k")

    monkeypatch.setattr(study_config, "StudyConfig", WithTopK)
    monkeypatch.setattr(study_config, "declared", lambda: list(dataclasses.fields(WithTopK)))
    parser = argparse.ArgumentParser()
    study_config.add_cli_options(parser)
    args = parser.parse_args(["--top-k", "7", "--quants", "Q4_K_M,Q8_0"])
    cfg = study_config.from_cli(args)
    assert isinstance(cfg, WithTopK) and cfg.top_k == 7 and cfg.quant_types == ("Q4_K_M", "Q8_0")
    values = cfg.run_values(threads=2, corpus="x")
    assert values["top_k"] == 7 and values["rounds"] == defaults.ROUNDS and values["threads"] == 2
    params = {p.name: p for p in chapters.study_params()}
    assert params["TOP_K"].default == 40 and "TOP_K = 40  # sampling" in chapters.render_cell(
        dataclasses.replace(chapters.CHAPTERS["quantization"], params=tuple(params.values()))
    )
    assert WithTopK.from_notebook({"TOP_K": 3, "MODEL": "m"}).top_k == 3


def test_one_thread_rule() -> None:
    assert defaults.threads(None) == len(os.sched_getaffinity(0))
    assert defaults.threads(3) == 3
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(UserError, match="THREADS must be a whole number"):
            defaults.threads(bad)  # type: ignore[arg-type]


def test_the_parameters_statement_names_what_changed() -> None:
    values = dict(chapters.CHAPTERS["serving"].defaults)
    assert chapters.describe_parameters("serving", values).startswith(
        "Parameters of this run (the book's defaults): MODEL = "
    )
    values["MAX_TOKENS"] = 7
    text = chapters.describe_parameters("serving", values)
    assert text.endswith(f"Changed from the book's defaults: MAX_TOKENS (default {defaults.MAX_TOKENS!r}).")
