"""The test tree's own rule: pytest imports tests/ and tests/unit/ as top-level modules (neither is a
package), so two test files with one basename stop the whole run at collection."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_files_share_a_basename() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert len(names) > 10
    assert [n for n, k in names.items() if k > 1] == []
