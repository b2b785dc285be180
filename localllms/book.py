"""Execute the notebooks with papermill and build the Jupyter Book from them.

The committed notebooks in ``notebooks/`` carry the outputs of the default run
(nbval compares against them). ``run_notebooks`` executes each one into
``_build/executed/``; only a run with the default parameters is copied back over
the committed notebooks, so ``make book MODEL=...`` on another model never
overwrites the reference outputs. ``build_html`` stages the book sources with the
executed notebooks and runs ``jupyter-book build`` with warnings as errors.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .errors import UserError
from .mathjax import stage_mathjax
from .models import DEFAULT_MODEL
from .paths import PROJECT_ROOT

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
BUILD_DIR = PROJECT_ROOT / "_build"
EXECUTED_DIR = BUILD_DIR / "executed"
STAGE_DIR = BUILD_DIR / "stage"
BOOK_SOURCES = ("_config.yml", "_toc.yml", "references.bib", "book")


def notebooks() -> list[Path]:
    """The book's notebooks, in the order of the table of contents."""
    import yaml

    toc = yaml.safe_load((PROJECT_ROOT / "_toc.yml").read_text())

    def files(node: object) -> list[str]:
        if isinstance(node, dict):
            return ([node["file"]] if "file" in node else []) + [f for v in node.values() for f in files(v)]
        if isinstance(node, list):
            return [f for item in node for f in files(item)]
        return []

    names = [f for f in files(toc) if f.startswith("notebooks/")]
    return [PROJECT_ROOT / f"{n.removesuffix('.ipynb')}.ipynb" for n in names]


def run_notebooks(
    model: str = DEFAULT_MODEL, parameters: dict | None = None, only: list[str] | None = None
) -> list[Path]:
    """Execute the notebooks with papermill; return the executed copies."""
    import papermill as pm

    params = {"MODEL": model, **(parameters or {})}
    default_run = model == DEFAULT_MODEL and not parameters
    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    done = []
    for nb in notebooks():
        if only and nb.stem not in only:
            continue
        out = EXECUTED_DIR / nb.name
        started = time.monotonic()
        print(f"==> executing {nb.name} with {params}", flush=True)
        try:
            pm.execute_notebook(
                str(nb), str(out), parameters=params, cwd=str(NOTEBOOK_DIR), kernel_name="python3", progress_bar=True
            )
        except pm.PapermillExecutionError as exc:
            raise UserError(
                f"{nb.name} failed in cell {exc.exec_count} ({exc.ename}: {exc.evalue}); the partly executed notebook is {out}."
            ) from exc
        print(f"    {nb.name}: {time.monotonic() - started:.0f} s", flush=True)
        if default_run:
            shutil.copyfile(out, nb)  # refresh the committed outputs of the default run
        done.append(out)
    return done


def stage() -> Path:
    """Copy the book sources and the executed notebooks into one tree for jupyter-book."""
    if STAGE_DIR.exists():
        shutil.rmtree(STAGE_DIR)
    STAGE_DIR.mkdir(parents=True)
    for name in BOOK_SOURCES:
        src = PROJECT_ROOT / name
        if src.is_dir():
            shutil.copytree(src, STAGE_DIR / name)
        else:
            shutil.copyfile(src, STAGE_DIR / name)
    (STAGE_DIR / "notebooks").mkdir()
    for nb in notebooks():
        executed = EXECUTED_DIR / nb.name
        if not executed.exists():
            executed = nb  # not run in this tree yet: the committed default-run outputs
        _check_executed(executed)
        shutil.copyfile(executed, STAGE_DIR / "notebooks" / nb.name)
    stage_mathjax(STAGE_DIR)  # formulas render offline: MathJax ships with the book
    return STAGE_DIR


def _check_executed(nb: Path) -> None:
    cells = json.loads(nb.read_text())["cells"]
    if not any(c.get("outputs") for c in cells if c["cell_type"] == "code"):
        raise UserError(f"{nb} has no outputs; run `make notebooks` first.")


def build_html() -> Path:
    """Build the HTML book with warnings as errors; return the path of its index."""
    stage()
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(STAGE_DIR), "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = BUILD_DIR / "jupyter-book.log"
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        problems = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "WARNING" in ln or "ERROR" in ln]
        raise UserError("jupyter-book reported problems:\n" + "\n".join(problems[:20]) + f"\nFull log: {log}")
    html = BUILD_DIR / "html"
    if html.exists():
        shutil.rmtree(html)
    shutil.copytree(STAGE_DIR / "_build" / "html", html)
    return html / "index.html"
