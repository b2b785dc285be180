"""A run that is not the deliberate re-recording (`make record`) must not change a tracked file.

Found on a fresh machine: `make book MODEL=gemma-3-270m` replaced the committed screenshot and
results, and nbval rewrote `data/results/quantization.csv`. Runs now write under `_build/`; these
tests run the real code with non-default inputs and compare `git status` before and after.
(`.ci/run` checks the same after the whole `make test`.)
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from localllms.paths import OUTPUT_RESULTS_DIR, PROJECT_ROOT

pytestmark = pytest.mark.slow  # runs a study and a notebook end to end


def _status() -> set[str]:
    out = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=normal"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        pytest.skip(f"not a git work tree: {out.stderr.strip()}")
    return set(out.stdout.splitlines())


def test_a_non_default_study_writes_only_under_build() -> None:
    before = _status()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "localllms",
            "study",
            "gemma-3-270m",
            "--quants",
            "Q8_0",
            "--prompts",
            "3",
            "--rounds",
            "1",
            "--n-prompt",
            "16",
            "--n-gen",
            "4",
        ],  # fmt: skip
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert _status() == before, "a non-default study changed tracked files"
    # its rows went to a CSV of its own under _build/results, not to the committed ones
    written = sorted(OUTPUT_RESULTS_DIR.glob("quantization-gemma-3-270m-*.csv"))
    assert written, "the study wrote no CSV under _build/results"


def test_the_notebooks_name_no_tracked_output_directory() -> None:
    """The notebooks write figures and screenshots through the package's output paths
    (`paths.OUTPUT_IMAGES_DIR`, `paths.OUTPUT_RESULTS_DIR`), never into book/ or data/ directly."""
    offenders = []
    for nb in sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            src = "".join(cell["source"])
            if cell["cell_type"] == "code" and any(
                s in src for s in ('"book"', "'book'", "book/images", "data/results", "DATA_DIR", "RESULTS_DIR /")
            ):
                offenders.append(f"{nb.name}: {src.splitlines()[0]}")
    assert not offenders, offenders
