"""What makes a notebook execute again: its code, and the package code it reaches."""

from __future__ import annotations

from localllms import book


def test_package_modules_follow_imports_through_the_package() -> None:
    mods = book.package_modules(["from localllms import study\nimport pandas as pd"])
    # the study package and what its modules import, transitively
    for m in ("study", "study.pipeline", "study.crosscheck", "evaluate", "metrics", "store", "rounds", "quantize"):
        assert m in mods, m
    assert not [m for m in mods if m.split(".")[0] in ("serve", "sizes", "chapters")]  # nothing it does not reach
    assert not [m for m in mods if m.startswith("selection") and m not in ("selection.memory", "selection.published")]
    assert book.package_modules(["print('no package here')"]) == []


def test_prose_changes_keep_the_outputs() -> None:
    def cell(kind: str, src: str, tags: tuple[str, ...] = (), outputs: list | None = None) -> dict:
        c = {"cell_type": kind, "source": src, "metadata": {"tags": list(tags)}}
        if kind == "code":
            c.update(outputs=outputs or [], execution_count=1)
        return c

    executed = {"metadata": {}, "cells": [
        cell("markdown", "old prose"), cell("code", "N = 1", ("parameters",)),
        cell("code", "N = 2", ("injected-parameters",)), cell("code", "print(N)", outputs=[{"text": "2"}]),
    ]}  # fmt: skip
    source = {"metadata": {}, "cells": [
        cell("markdown", "new prose"), cell("code", "N = 1", ("parameters",)), cell("markdown", "a new paragraph"),
        cell("code", "print(N)"),
    ]}  # fmt: skip
    merged = book._merge_prose(source, executed)
    assert [c["source"] for c in merged["cells"]] == ["new prose", "N = 1", "N = 2", "a new paragraph", "print(N)"]
    assert merged["cells"][-1]["outputs"] == [{"text": "2"}]
    book._hide_parameters(merged)
    assert ["remove-cell" in c["metadata"]["tags"] for c in merged["cells"]] == [False, True, True, False, False]
    assert book._code_cells(source) == book._code_cells(
        executed | {"cells": executed["cells"][1:2] + executed["cells"][3:]}
    )


def test_a_recorded_source_with_its_own_injected_cell_merges() -> None:
    # committed notebooks are recorded runs: they carry papermill's injected cell of that run; a
    # no-change `make book` after a clone must merge, not fail (it once raised IndexError here)
    def cell(kind: str, src: str, tags: tuple[str, ...] = ()) -> dict:
        c = {"cell_type": kind, "source": src, "metadata": {"tags": list(tags)}}
        return c | ({"outputs": [{"text": src}], "execution_count": 1} if kind == "code" else {})

    executed = {"metadata": {}, "cells": [
        cell("code", "N = 1", ("parameters",)), cell("code", "N = 2", ("injected-parameters",)), cell("code", "print(N)"),
    ]}  # fmt: skip
    source = {"metadata": {}, "cells": [
        cell("markdown", "prose"), cell("code", "N = 1", ("parameters",)),
        cell("code", "N = 3", ("injected-parameters",)), cell("code", "print(N)"),
    ]}  # fmt: skip
    merged = book._merge_prose(source, executed)
    assert [c["source"] for c in merged["cells"]] == ["prose", "N = 1", "N = 2", "print(N)"]
