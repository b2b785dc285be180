"""Execute the notebooks and build the Jupyter Book, doing again only what changed.

Measuring is kept apart from rendering, in the manner of jupyter-cache and MyST-NB's
cache mode (which key a notebook on its code cells) with what they cannot see added:

* ``run_notebooks`` executes a notebook with papermill only when one of its inputs
  changed since its last execution in this tree: its code cells, its parameters, the
  package code it imports (every module it reaches, by source digest), the llama.cpp
  build, the digests of the models its parameters name, the data files it reads and
  the notebooks it depends on. Otherwise the executed copy in ``_build/executed/`` is
  reused, with the current markdown merged in, so a change of prose costs nothing.
  ``remeasure=True`` (``make book REMEASURE=1``) executes everything again and makes
  every measurement run instead of reading its cache.
* While a notebook runs, its stage progress goes to the terminal (``localllms.progress``
  writes to ``_build/progress-PID.log``; a thread here copies it to stderr as it grows);
  the page gets none of it.
* Executed notebooks, results and images of any run go under ``_build/``; nothing here
  writes a tracked file. ``record`` (``make record``) is the one deliberate exception: it
  re-records the book's default run into ``notebooks/``, ``data/`` and ``book/images/``.
* ``build_html`` stages the sources and the executed notebooks (a file is copied only when
  its content changed, so Sphinx re-reads only those) and runs ``jupyter-book build`` with
  warnings as errors; when nothing it reads changed, it does not run at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from . import defaults, progress
from .errors import UserError
from .mathjax import MATHJAX_VERSION, stage_mathjax
from .paths import (
    BUILD_DIR,
    DATA_DIR,
    OUTPUT_IMAGES_DIR,
    OUTPUT_RESULTS_DIR,
    PROJECT_ROOT,
    REMEASURE_ENV,
    code_key,
    content_key,
    package_modules,
    write_atomic,
)

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
EXECUTED_DIR = BUILD_DIR / "executed"
STAGE_DIR = BUILD_DIR / "stage"
HTML_DIR = BUILD_DIR / "html"
BOOK_SOURCES = ("_config.yml", "_toc.yml", "references.bib", "book")
# Data a notebook reads besides its models (tracked inputs, not results).
DATA_INPUTS = ("prompts", "reference")
# Which parameters name models (their digests are inputs of the notebook) and which chapters a
# notebook reads the results of (it is executed again when they are): localllms.chapters.
# The kernel's own log lines (a warning that its loopback sockets are unencrypted, a note that
# papermill's shutdown interrupted it) are not the user's business; a failing cell still is.
KERNEL_QUIET = ["--IPKernelApp.log_level=CRITICAL"]
HIDDEN = ("parameters", "injected-parameters")  # shown once, as a printed statement, not as code


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


# --------------------------------------------------------------------------- what a notebook depends on


def _code_cells(nb: dict) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def _tree_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for base in paths:
        for f in sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else [base]:
            digest.update(f.relative_to(PROJECT_ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


def notebook_inputs(nb_path: Path, params: dict) -> dict:
    """Everything the outputs of a notebook depend on, as short digests (its cache key's parts)."""
    from .build import current_build
    from .chapters import CHAPTERS, model_parameters
    from .models import resolve

    nb = json.loads(nb_path.read_text())
    code = _code_cells(nb)
    models = {}
    chapter = CHAPTERS[nb_path.stem]
    for name in model_parameters(nb_path.stem):
        value = params.get(name, chapter.defaults.get(name))
        for spec in [value] if isinstance(value, str) else list(value or []):
            try:
                models[spec] = resolve(spec).sha256[:16]
            except UserError as exc:  # the notebook will say it in its own words; execute it
                models[spec] = f"unresolved: {exc}"
    return {
        "code_cells": content_key(code),
        "parameters": content_key(params),
        "package": code_key(*package_modules(code)),
        "llama_cpp_build": current_build().key,
        "models": models,
        "data": _tree_digest(*(DATA_DIR / d for d in DATA_INPUTS)),
        "depends_on": {d: _executed_key(d) for d in chapter.depends},
    }


def _executed_meta(path: Path) -> dict:
    try:
        return json.loads(path.read_text())["metadata"].get("localllms", {})
    except (OSError, ValueError, KeyError):
        return {}


def _executed_key(name: str) -> str:
    return _executed_meta(EXECUTED_DIR / f"{name}.ipynb").get("key", "")


# --------------------------------------------------------------------------- executing


@contextmanager
def _progress_to_terminal() -> Iterator[None]:
    """Point the kernels' progress bars at a file and copy it to this terminal as it grows."""
    # one file per run: two runs in one tree (a test beside a build) must not mix their bars
    log = BUILD_DIR / f"progress-{os.getpid()}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    previous = os.environ.get(progress.ENV)
    os.environ[progress.ENV] = str(log)
    stop = threading.Event()

    def follow() -> None:
        with open(log, encoding="utf-8", errors="replace") as fh:
            while True:
                chunk = fh.read()
                if chunk:
                    sys.stderr.write(chunk)
                    sys.stderr.flush()
                elif stop.is_set():
                    return
                else:
                    time.sleep(0.2)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        log.unlink(missing_ok=True)
        if previous is None:
            os.environ.pop(progress.ENV, None)
        else:
            os.environ[progress.ENV] = previous


def _hide_parameters(nb: dict) -> None:
    """Tag the parameters cells so the page shows the parameters once (the notebook prints them)."""
    for cell in nb["cells"]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if any(t in tags for t in HIDDEN) and "remove-cell" not in tags:
            tags.append("remove-cell")


def _merge_prose(source: dict, executed: dict) -> dict:
    """The current notebook with the outputs of an execution whose code cells were the same."""
    outputs = [c for c in executed["cells"] if c["cell_type"] == "code"]
    injected = [c for c in outputs if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    outputs = [c for c in outputs if c not in injected]
    cells = []
    for cell in source["cells"]:
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            continue  # a recorded notebook carries papermill's cell of its own run: the execution's replaces it
        if cell["cell_type"] == "code":
            done = outputs.pop(0)
            cell = {**cell, "outputs": done.get("outputs", []), "execution_count": done.get("execution_count")}
            cells.append(cell)
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                cells.extend(injected)
        else:
            cells.append(cell)
    return {**executed, "cells": cells}


def run_notebooks(
    model: str = defaults.DEFAULT_MODEL,
    parameters: dict | None = None,
    only: list[str] | None = None,
    remeasure: bool = False,
) -> list[Path]:
    """Execute the notebooks whose inputs changed (all of them with ``remeasure``); return the
    executed copies, which are in ``_build/executed/``."""
    import papermill as pm

    params = {"MODEL": model, **(parameters or {})}
    selected = [nb for nb in notebooks() if not only or nb.stem in only]
    unknown = sorted(set(only or []) - {nb.stem for nb in notebooks()})
    if unknown:
        raise UserError(
            f"No notebook named {', '.join(unknown)}; the book has {', '.join(n.stem for n in notebooks())}."
        )
    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    if remeasure:
        os.environ[REMEASURE_ENV] = "1"  # the kernels inherit it: caches of measurements are bypassed
    done = []
    with _progress_to_terminal():
        for nb in selected:
            out = EXECUTED_DIR / nb.name
            inputs = notebook_inputs(nb, params)
            key = content_key(inputs)
            previous = _executed_meta(out)
            source = json.loads(nb.read_text())
            if previous.get("key") == key and not remeasure:
                merged = _merge_prose(source, json.loads(out.read_text()))
                _hide_parameters(merged)
                write_atomic(out, json.dumps(merged, indent=1, ensure_ascii=False) + "\n")
                when = previous.get("executed_at", "?")
                progress.note(f"==> {nb.stem}: inputs unchanged since {when}; outputs reused, prose updated")
                done.append(out)
                continue
            changed = [k for k, v in inputs.items() if previous.get("inputs", {}).get(k) != v] if previous else []
            why = "remeasure" if remeasure else (f"changed: {', '.join(changed)}" if changed else "first run here")
            progress.note(f"==> {nb.stem}: executing ({why}) with {params}")
            partial = out.with_name(out.stem + ".partial.ipynb")
            stages = Path(progress.stages_file() or BUILD_DIR / "stages.jsonl")
            stages.unlink(missing_ok=True)  # this notebook's stages only
            started = time.monotonic()
            try:
                pm.execute_notebook(
                    str(nb), str(partial), parameters=params, cwd=str(NOTEBOOK_DIR), kernel_name="python3",
                    progress_bar=False, log_output=False, extra_arguments=KERNEL_QUIET,
                )  # fmt: skip
            except pm.PapermillExecutionError as exc:
                raise UserError(
                    f"{nb.name} failed in cell {exc.exec_count} ({exc.ename}: {exc.evalue}); the partly executed "
                    f"notebook is {partial}."
                ) from exc
            executed = json.loads(partial.read_text())
            seconds = round(time.monotonic() - started, 1)
            executed["metadata"]["localllms"] = {
                "key": key,
                "inputs": inputs,
                "executed_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "seconds": seconds,
                # where the time went: every progress bar of the run, with its duration
                "stages": [json.loads(line) for line in stages.read_text().splitlines()] if stages.exists() else [],
            }
            _hide_parameters(executed)
            write_atomic(out, json.dumps(executed, indent=1, ensure_ascii=False) + "\n")
            partial.unlink()
            progress.note(f"    {nb.stem}: {seconds:.0f} s")
            done.append(out)
    return done


def timings() -> list[dict]:
    """Each executed notebook's seconds and the stages inside it (from its last execution here)."""
    out = []
    for nb in notebooks():
        meta = _executed_meta(EXECUTED_DIR / nb.name)
        if meta:
            out.append({"notebook": nb.stem, "seconds": meta.get("seconds"), "executed_at": meta.get("executed_at"),
                        "stages": meta.get("stages", [])})  # fmt: skip
    return out


def record(from_build: bool = False) -> list[Path]:
    """Re-record the book's default run: execute every notebook with its defaults, measuring
    afresh, and copy what the book commits (notebooks, results CSV, prompts file, images)
    into the tracked tree. The only step that writes tracked files, and only when asked.

    ``from_build`` copies the executed notebooks already in ``_build/executed/`` instead, e.g.
    after a cold ``make book`` on a quiet machine, provided each is the default run of the
    current sources (same key); otherwise it says which one is not and copies nothing."""
    if from_build:
        defaults_params = {"MODEL": defaults.DEFAULT_MODEL}
        stale = [
            nb.stem for nb in notebooks() if _executed_key(nb.stem) != content_key(notebook_inputs(nb, defaults_params))
        ]
        if stale:
            raise UserError(
                f"The executed {', '.join(stale)} in {EXECUTED_DIR} is not the default run of the current "
                "sources; run `make book` (default parameters) first, or `make record` to execute and record."
            )
        executed = [EXECUTED_DIR / nb.name for nb in notebooks()]
    else:
        executed = run_notebooks(remeasure=True)
    copied = []
    for out in executed:
        dest = NOTEBOOK_DIR / out.name
        nb = json.loads(out.read_text())
        nb["metadata"].pop("localllms", None)  # the key is this tree's, not the repository's
        nb["metadata"].get("papermill", {}).pop("input_path", None)
        nb["metadata"].get("papermill", {}).pop("output_path", None)
        write_atomic(dest, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        copied.append(dest)
    for src, dest_dir in (
        (OUTPUT_RESULTS_DIR, DATA_DIR / "results"),
        (OUTPUT_IMAGES_DIR, PROJECT_ROOT / "book" / "images"),
    ):
        for f in sorted(src.glob("*")) if src.exists() else []:
            if f.suffix in (".csv", ".png", ".json"):
                shutil.copyfile(f, dest_dir / f.name)
                copied.append(dest_dir / f.name)
    from .corpus import default_prompts_dir

    default = f"prompts-*-{defaults.NUM_PROMPTS}-{defaults.MIN_PROMPT_LENGTH}-{defaults.MAX_PROMPT_LENGTH}.json"
    for f in sorted(default_prompts_dir().glob(default)):
        shutil.copyfile(f, DATA_DIR / "prompts" / f.name)
        copied.append(DATA_DIR / "prompts" / f.name)
    return copied


# --------------------------------------------------------------------------- the HTML book


def _sync(src: Path, dest: Path) -> None:
    """Copy a file only if its content differs, so unchanged pages keep their time stamps."""
    if dest.exists() and dest.read_bytes() == src.read_bytes():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def _check_executed(nb: Path) -> None:
    cells = json.loads(nb.read_text())["cells"]
    if not any(c.get("outputs") for c in cells if c["cell_type"] == "code"):
        raise UserError(f"{nb} has no outputs; run `make notebooks` first.")


def stage() -> Path:
    """The book sources and the executed notebooks (or, before any run here, the committed
    ones) in one tree for jupyter-book; files are rewritten only when their content changed."""
    STAGE_DIR.mkdir(parents=True, exist_ok=True)
    wanted: set[Path] = set()
    for name in BOOK_SOURCES:
        src = PROJECT_ROOT / name
        for f in sorted(src.rglob("*")) if src.is_dir() else [src]:
            if f.is_file():
                dest = STAGE_DIR / f.relative_to(PROJECT_ROOT)
                _sync(f, dest)
                wanted.add(dest)
    # The llama.cpp page shows the build this copy of the book runs on, read from that build.
    from .build import current_build
    from .kernels import build_page

    generated = STAGE_DIR / "book" / "_generated" / "this_build.txt"
    page = build_page(current_build())
    if not generated.exists() or generated.read_text() != page:
        write_atomic(generated, page)
    wanted.add(generated)
    for nb in notebooks():
        executed = EXECUTED_DIR / nb.name
        if not executed.exists():
            executed = nb  # not run in this tree yet: the committed default-run outputs
        _check_executed(executed)
        dest = STAGE_DIR / "notebooks" / nb.name
        _sync(executed, dest)
        wanted.add(dest)
    for stale in [p for p in (STAGE_DIR / "book").rglob("*") if p.is_file() and p not in wanted]:
        stale.unlink()  # a page removed from the sources leaves the book too
    for stale in [p for p in (STAGE_DIR / "notebooks").glob("*.ipynb") if p not in wanted]:
        stale.unlink()
    stage_mathjax(STAGE_DIR)  # formulas render offline: MathJax ships with the book
    return STAGE_DIR


def _html_key() -> str:
    parts = [_tree_digest(*(STAGE_DIR / n for n in BOOK_SOURCES)), _tree_digest(STAGE_DIR / "notebooks")]
    return content_key(parts, MATHJAX_VERSION, code_key("book", "mathjax"))


def build_html() -> Path:
    """Build the HTML book with warnings as errors; return the path of its index."""
    stage()
    key = _html_key()
    stamp = HTML_DIR / ".localllms-key"
    if stamp.exists() and stamp.read_text() == key and (HTML_DIR / "index.html").exists():
        progress.note("==> html: sources unchanged; the book in _build/html is current")
        return HTML_DIR / "index.html"
    progress.note("==> html: jupyter-book build (pages whose sources changed)")
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(STAGE_DIR), "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = BUILD_DIR / "jupyter-book.log"
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        problems = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "WARNING" in ln or "ERROR" in ln]
        raise UserError("jupyter-book reported problems:\n" + "\n".join(problems[:20]) + f"\nFull log: {log}")
    if HTML_DIR.exists():
        shutil.rmtree(HTML_DIR)
    shutil.copytree(STAGE_DIR / "_build" / "html", HTML_DIR)
    write_atomic(stamp, key)
    return HTML_DIR / "index.html"
