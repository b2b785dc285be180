"""A warm cache never hides a change in results: cached numbers are keyed on the code that made them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from localllms.build import BuildInfo
from localllms.paths import PROJECT_ROOT, cache_dir

SCRIPT = """
import json
import sys
from localllms import evaluate
from localllms.build import use_build_for_binding
from localllms.models import resolve
from localllms.quantize import make_reference, quantize
b = use_build_for_binding()
ref = make_reference(resolve("smollm2-135m-instruct"), b)
q = quantize(ref, "Q8_0", b)
r = evaluate.evaluate_prompts(ref, [q], ["Paris is the capital of France and its largest city."], 2, b, False)
import localllms

import pytest

pytestmark = pytest.mark.slow  # executes notebooks twice
assert localllms.__file__.startswith(sys.argv[1]), localllms.__file__  # the copy, not the tree
print(json.dumps({"computed": r.computed["Q8_0"], "kld_mean": r.summary("Q8_0")["kld_mean"]}))
"""


def test_changing_the_evaluator_recomputes_its_cached_results(tmp_path: Path, build: BuildInfo) -> None:
    pkg = tmp_path / "pkg"
    shutil.copytree(PROJECT_ROOT / "localllms", pkg / "localllms", ignore=shutil.ignore_patterns("__pycache__"))
    env = {
        **os.environ,
        "PYTHONPATH": str(pkg),
        "LOCALLLMS_CACHE": str(tmp_path / "cache"),  # an empty cache: only this test's results in it
        "LOCALLLMS_BUILD_INFO": str(cache_dir("llama.cpp") / build.key / "build-info.json"),
    }

    def run() -> dict:
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(pkg)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    first, again = run(), run()
    assert first["computed"] == 1 and again["computed"] == 0  # the cache works...
    assert again["kld_mean"] == first["kld_mean"]
    evaluator = pkg / "localllms" / "evaluate.py"
    text = evaluator.read_text()
    clamp = "kld=np.maximum(kld, 0.0),"
    assert clamp in text
    evaluator.write_text(text.replace(clamp, "kld=np.maximum(kld, 0.0) + 1.0,"))  # a change in what it computes
    changed = run()
    assert changed["computed"] == 1  # ...and does not hide the change: no version had to be bumped
    assert changed["kld_mean"] == first["kld_mean"] + 1.0
