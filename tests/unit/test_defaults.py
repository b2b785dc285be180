"""Every parameter is declared once (a StudyConfig field, or its chapter's entry); the rest follows."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import re

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


# Where THREADS becomes a number (the one rule, ``defaults.threads``): only where a run starts. Every
# function below takes ``threads: int``, the resolved count, and passes it down without resolving again.
THREAD_ENTRY_POINTS = {
    "localllms/study/config.py",  # StudyConfig.n_threads: the study's THREADS (the CLI, a sweep, the notebooks)
    "localllms/__main__.py",  # the command line
    "scripts/bench.py",  # the benchmark script's --threads
}
# Functions whose ``threads=None`` is not "every core": provenance leaves the count out, and a speed
# label without a thread count is the study's own (its main table's label).
NONE_IS_NOT_EVERY_CORE = {
    ("localllms/provenance.py", "record"),
    ("localllms/provenance.py", "line"),
    ("localllms/study/speed_plan.py", "label"),
    ("localllms/study/speed.py", "_at"),
}


def _sources() -> list[tuple[str, ast.Module]]:
    paths = [*(PROJECT_ROOT / "localllms").rglob("*.py"), *(PROJECT_ROOT / "scripts").rglob("*.py")]
    return [(p.relative_to(PROJECT_ROOT).as_posix(), ast.parse(p.read_text())) for p in sorted(paths)]


def test_thread_counts_are_resolved_only_where_a_run_starts() -> None:
    resolving = set()
    for rel, tree in _sources():
        for node in ast.walk(tree):
            call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "threads"
            if call and isinstance(node.func.value, ast.Name) and node.func.value.id == "defaults":
                resolving.add(rel)
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("defaults"):
                if any(a.name == "threads" for a in node.names):  # `from .defaults import threads` hides the call
                    resolving.add(rel)
    assert resolving <= THREAD_ENTRY_POINTS, (
        f"resolve THREADS where the run starts and pass it down, not in {sorted(resolving - THREAD_ENTRY_POINTS)}"
    )
    assert "localllms/study/config.py" in resolving  # the rule is still applied at its home
    for ch in chapters.CHAPTERS.values():  # a notebook resolves it once, in its setup cell
        nb = json.loads(ch.path.read_text())
        code = "".join("".join(c["source"]) + "\n" for c in nb["cells"] if c["cell_type"] == "code")
        assert len(re.findall(r"\bdefaults\.threads\(", code)) <= 1, ch.name


def test_no_function_below_an_entry_point_takes_threads_none_for_every_core() -> None:
    found = set()
    for rel, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                positional = a.posonlyargs + a.args
                pairs = [
                    *zip(positional[len(positional) - len(a.defaults) :], a.defaults, strict=True),
                    *zip(a.kwonlyargs, a.kw_defaults, strict=True),
                ]
                for arg, default in pairs:
                    if arg.arg == "threads" and isinstance(default, ast.Constant) and default.value is None:
                        found.add((rel, node.name))
    assert found <= NONE_IS_NOT_EVERY_CORE, (
        f"take `threads: int`, resolved by the caller: {sorted(found - NONE_IS_NOT_EVERY_CORE)}"
    )


def test_the_parameters_statement_names_what_changed() -> None:
    values = dict(chapters.CHAPTERS["serving"].defaults)
    assert chapters.describe_parameters("serving", values).startswith(
        "Parameters of this run (the book's defaults): MODEL = "
    )
    values["MAX_TOKENS"] = 7
    text = chapters.describe_parameters("serving", values)
    assert text.endswith(f"Changed from the book's defaults: MAX_TOKENS (default {defaults.MAX_TOKENS!r}).")
