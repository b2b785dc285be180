"""Every default lives in localllms.defaults; the notebooks' literal parameters cells must agree."""

from __future__ import annotations

import ast
import json
import os

import pytest

from localllms import defaults
from localllms.errors import UserError
from localllms.paths import PROJECT_ROOT


def _parameters_cell(name: str) -> dict[str, object]:
    nb = json.loads((PROJECT_ROOT / "notebooks" / f"{name}.ipynb").read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{name}: expected one cell tagged 'parameters'"
    values = {}
    for node in ast.parse("".join(cells[0]["source"])).body:
        assert isinstance(node, ast.Assign), f"{name}: the parameters cell may only assign literals"
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


@pytest.mark.parametrize("name", sorted(defaults.NOTEBOOK_PARAMETERS))
def test_parameters_cell_agrees_with_the_package(name: str) -> None:
    assert _parameters_cell(name) == defaults.NOTEBOOK_PARAMETERS[name]


def test_every_notebook_has_its_defaults() -> None:
    found = {p.stem for p in (PROJECT_ROOT / "notebooks").glob("*.ipynb")}
    assert found == set(defaults.NOTEBOOK_PARAMETERS)


def test_one_thread_rule() -> None:
    assert defaults.threads(None) == len(os.sched_getaffinity(0))
    assert defaults.threads(3) == 3
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(UserError, match="THREADS must be a whole number"):
            defaults.threads(bad)  # type: ignore[arg-type]


def test_the_parameters_statement_names_what_changed() -> None:
    values = dict(defaults.NOTEBOOK_PARAMETERS["serving"])
    assert defaults.describe_parameters("serving", values).startswith(
        "Parameters of this run (the book's defaults): MODEL = "
    )
    values["MAX_TOKENS"] = 7
    text = defaults.describe_parameters("serving", values)
    assert text.endswith(f"Changed from the book's defaults: MAX_TOKENS (default {defaults.MAX_TOKENS!r}).")
