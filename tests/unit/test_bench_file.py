"""data/results/bench.json: a run of some items replaces only their rows, and keeps the run of the rest."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench_script():
    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_run_of_one_item_keeps_the_other_items_with_their_run(tmp_path: Path) -> None:
    script = _bench_script()
    path = tmp_path / "bench.json"
    old_rows = [{"name": "1. evaluator speed (scored tokens/s)", "ratio": 1.7}, {"name": "2. roofline F16 (run 1)", "ratio": 0.6},
                {"name": "4. no-change make book", "ratio": 0.007}]  # fmt: skip
    path.write_text(
        json.dumps({"finished": "2026-01-01T00:00:00+00:00", "items": list(script.ITEMS), "rows": old_rows})
    )
    run = {"finished": "2026-02-02T00:00:00+00:00", "items": ["roofline"]}
    new = script.merged(path, run, [{"name": "2. roofline F16 (run 1)", "ratio": 0.9}])
    assert [(r["name"][:2], r["ratio"], r["run_finished"][:7]) for r in new["rows"]] == [
        ("1.", 1.7, "2026-01"), ("2.", 0.9, "2026-02"), ("4.", 0.007, "2026-01")
    ]  # fmt: skip
    assert [r["finished"][:7] for r in new["runs"]] == ["2026-01", "2026-02"]
    path.write_text(json.dumps(new))  # and again: the first run stays while rows still cite it
    run3 = {"finished": "2026-03-03T00:00:00+00:00", "items": ["evaluator", "rebuild"]}
    newer = script.merged(path, run3, [{"name": "1. evaluator speed (scored tokens/s)", "ratio": 1.8},
                                       {"name": "4. no-change make book", "ratio": 0.01}])  # fmt: skip
    assert [r["finished"][:7] for r in newer["runs"]] == ["2026-02", "2026-03"]
