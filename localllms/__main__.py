"""Command line: ``python -m localllms COMMAND`` (``--help`` lists them).

Each command does one job and ends with a parseable summary (``key: value`` lines, a
table, or JSON with ``--json``), in the manner of llama.cpp's own tools:

* the stages: ``build``, ``models``, ``reference``, ``prompts``, ``quant-types``;
* the case study without a notebook: ``study`` (same code, CSV and store rows as the notebook);
* many models and machines: ``sweep`` (one study per model and machine on Dask, rows into one store);
* the book: ``run-notebooks`` (only what changed), ``build-html``, ``record`` (re-record the
  committed default run: the one command that writes tracked files);
* try before you download: ``synth`` (a published architecture's GGUF with synthetic weights,
  for speed and memory only; ``synth --clean`` removes them).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from . import corpus, defaults
from .errors import UserError

if TYPE_CHECKING:  # the study package is imported only by the commands that run it
    from .study.config import StudyConfig


def _emit(data: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        for k, v in data.items():
            print(f"{k}: {v}")


def cmd_build(args: argparse.Namespace) -> None:
    from .build import build

    info = build(force=args.force)
    _emit(asdict(info), args.json)


def cmd_build_ui(args: argparse.Namespace) -> None:
    from .build import current_build
    from .serve import webui

    build = current_build()
    if webui.ui_embedded(build):
        _emit({"ui": "embedded in llama-server at build time"}, args.json)
        return
    dist = webui.build_ui(build)
    _emit({"ui": str(dist), "source": "tools/ui built with npm, served with llama-server --path"}, args.json)


def cmd_models(args: argparse.Namespace) -> None:
    from .models import CATALOG, resolve

    specs = args.specs or list(CATALOG)
    failed = 0
    for spec in specs:
        try:
            m = resolve(spec)
        except UserError as exc:
            failed += 1
            print(f"error: {spec}: {exc}", file=sys.stderr)
            continue
        _emit(
            {"spec": m.spec, "path": str(m.path), "source": m.source, "sha256": m.sha256, **asdict(m.info)}, args.json
        )
        print()
    if failed:
        raise SystemExit(1)


def cmd_reference(args: argparse.Namespace) -> None:
    from .models import resolve
    from .quantize import make_reference

    ref = make_reference(resolve(args.model))
    _emit(
        {
            "label": ref.label,
            "path": str(ref.path),
            "sha256": ref.sha256,
            "quant_type": ref.info.quant_type,
            "source": ref.source,
        },
        args.json,
    )


def cmd_quant_types(args: argparse.Namespace) -> None:
    from .build import current_build
    from .quantize import valid_quant_types

    print(" ".join(valid_quant_types(str(current_build().tool("llama-quantize")))))


def cmd_prompts(args: argparse.Namespace) -> None:
    p = corpus.build_prompts(args.num, args.min_length, args.max_length, args.source, args.out_dir)
    lengths = [len(t) for t in p.texts]
    _emit(
        {
            "path": str(p.path),
            "source": p.source.description,
            "license": p.source.license,
            "origin": p.source.origin,
            "prompts": len(p.texts),
            "min_chars": min(lengths),
            "max_chars": max(lengths),
        },
        args.json,
    )


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _add_study_options(p: argparse.ArgumentParser, threads_help: str) -> None:
    """The study's settings, shared by ``study`` and ``sweep``: one option per declared parameter."""
    from .study.config import add_cli_options

    add_cli_options(p, threads_help)


def _study_config(args: argparse.Namespace, **model: str) -> StudyConfig:
    from .study.config import from_cli

    return from_cli(args, **model)


def cmd_timings(args: argparse.Namespace) -> None:
    from .book import timings

    rows = timings()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        raise UserError("No notebook has been executed in this tree yet; run `make notebooks` first.")
    for r in rows:
        print(f"chapter: {r['notebook']} seconds={r['seconds']} executed_at={r['executed_at']}")
        for st in r["stages"]:
            print(f"  stage: {st['stage']} items={st['items']} seconds={st['seconds']}")


def cmd_parameters(args: argparse.Namespace) -> None:
    from .chapters import stale_cells, write_cells

    if args.write:
        written = write_cells()
        _emit({"written": ", ".join(written) or "none (every parameters cell is current)"}, args.json)
        return
    stale = stale_cells()
    if stale:
        raise UserError(
            f"The parameters cell of {', '.join(stale)} differs from its declaration (localllms/chapters.py, "
            "localllms/study/config.py); run `make format` (python -m localllms parameters --write)."
        )
    _emit({"parameters cells": "current"}, args.json)


def cmd_study(args: argparse.Namespace) -> None:
    from . import metrics, provenance, study

    config = _study_config(args, model=args.model)  # checks every value before anything heavy runs
    result = study.run(config)
    df = result.rows
    if args.json:
        print(df.to_json(orient="records", indent=2))
        return
    print(provenance.line(result.build, result.model, config.n_threads))
    print(f"reference: {result.reference.label}; {int(df['n_tokens'].iloc[0])} scored tokens from "
          f"{int(df['n_prompts'].iloc[0])} prompts ({result.prompts.source.name})")  # fmt: skip
    print()
    print(study.case_study_table(df).to_markdown())
    print()
    shown = metrics.columns(metrics.CLI)
    for r in df.to_dict("records"):  # one parseable line per model
        fields = [f"quant={r['quant']}", f"size_mib={r['size_mib']:.2f}", f"bpw={r['bpw']:.3f}",
                  *(f"{m.name}={r[m.name]:.{m.digits}f}" for m in shown),
                  f"pp_tps={r['pp_tps']:.2f}", f"tg_tps={r['tg_tps']:.2f}"]  # fmt: skip
        print("study: " + " ".join(fields))
    print(f"csv: {result.csv}")


def _parameters(pairs: list[list[str]]) -> dict:
    params = {}
    for name, value in pairs:
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    return params


def cmd_sweep(args: argparse.Namespace) -> None:
    from . import compare, sweep

    config = _study_config(args)  # checks every value before a cluster starts
    result = sweep.run(args.models, config, args.scheduler, args.workers, args.force, args.store)
    if args.json:
        outcomes = [vars(o) for o in result.outcomes]
        print(json.dumps({"outcomes": outcomes, "rows": json.loads(result.rows.to_json(orient="records"))}, indent=2))
    else:
        print("\n".join(sweep.summary(result)))
        if not result.rows.empty:
            df = compare.prepare(result.rows, args.models)
            print()
            print("Quality and size (the same on machines with the same build and CPU features):")
            print(compare.quality_table(df).to_markdown())
            print()
            print("Throughput (each machine's own; not comparable across machines):")
            print(compare.speed_table(df).to_markdown())
    if not result.ok:
        raise SystemExit(1)


def cmd_run_notebooks(args: argparse.Namespace) -> None:
    from . import book

    for path in book.run_notebooks(args.model, _parameters(args.param), args.only, args.remeasure):
        print(f"notebook: {path}")


def cmd_record(args: argparse.Namespace) -> None:
    from . import book

    for path in book.record(from_build=args.from_build):
        print(f"recorded: {path}")


def cmd_build_html(args: argparse.Namespace) -> None:
    from . import book

    print(f"book: {book.build_html()}")


def cmd_synth(args: argparse.Namespace) -> None:
    from . import synth

    _emit(synth.command(args.name, args.quant, args.context, args.clean, args.list), args.json)


def cmd_open_webui(args: argparse.Namespace) -> None:
    from .serve import openwebui

    openwebui.main([args.action, *args.options])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localllms", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="compile llama.cpp (cached) and print its identity")
    p.add_argument("--force", action="store_true", help="rebuild even if a cached build exists")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser(
        "build-ui", help="build llama-server's web UI from the llama.cpp tree with npm (cached by commit)"
    )
    p.set_defaults(func=cmd_build_ui)

    p = sub.add_parser("models", help="resolve models and print their metadata and sha256")
    p.add_argument("specs", nargs="*", help="catalog names, .gguf paths or owner/repo:file.gguf (default: the catalog)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("reference", help="make the study's F16 reference of a model")
    p.add_argument("model")
    p.set_defaults(func=cmd_reference)

    p = sub.add_parser("quant-types", help="list the quant types this build's llama-quantize accepts")
    p.set_defaults(func=cmd_quant_types)

    p = sub.add_parser("prompts", help="select the prompts corpus and write its prompts file")
    p.add_argument("--num", type=int, default=corpus.NUM_PROMPTS)
    p.add_argument("--min-length", type=int, default=corpus.MIN_PROMPT_LENGTH)
    p.add_argument("--max-length", type=int, default=corpus.MAX_PROMPT_LENGTH)
    p.add_argument("--source", choices=corpus.SOURCES, default="auto")
    p.add_argument("--out-dir", type=Path, default=None, help="where to write the prompts file (default: the cache)")
    p.set_defaults(func=cmd_prompts)

    p = sub.add_parser("study", help="run the quantization study without a notebook and print its table")
    p.add_argument("model", nargs="?", default=defaults.DEFAULT_MODEL, help="catalog name, .gguf path or hub file")
    _add_study_options(p, "default: every core")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser(
        "sweep",
        help="run the study for many models (and machines) on Dask; rows into one store",
        description="One study per model and machine, run by Dask distributed: a LocalCluster of this machine, "
        "or the cluster of --scheduler. Concurrency rule: a host runs at most max(1, cores // threads) studies "
        "at once (studies x threads <= cores), because llama-bench's throughput is spoiled by a study running "
        "beside it; with --threads unset (every core) that is one study at a time. Studies already in the "
        "store are skipped; a failed study is reported and the others finish (exit status 1).",
    )
    p.add_argument("--models", type=_csv_list, required=True, help="comma-separated catalog names or .gguf paths")
    p.add_argument(
        "--scheduler", default=None, help="a Dask scheduler address (tcp://HOST:8786); default: a LocalCluster"
    )
    p.add_argument("--workers", type=int, default=None,
                   help="LocalCluster workers (default and maximum: max(1, cores // threads))")  # fmt: skip
    p.add_argument("--force", action="store_true", help="run studies whose rows are in the store already")
    p.add_argument(
        "--store", type=Path, default=None, help="the DuckDB results store (default: data/results/results.duckdb)"
    )
    _add_study_options(p, "threads per study (default: every core of its host)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser(
        "parameters", help="check (or --write) the notebooks' parameters cells against their declarations"
    )
    p.add_argument("--write", action="store_true", help="write every stale parameters cell")
    p.set_defaults(func=cmd_parameters)

    p = sub.add_parser("run-notebooks", help="execute the book's notebooks with papermill")
    p.add_argument("--model", default=defaults.DEFAULT_MODEL)
    p.add_argument("--only", nargs="*", help="notebook names to run (default: all)")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="another papermill parameter (value parsed as JSON when it can be)")  # fmt: skip
    p.add_argument("--remeasure", action="store_true", help="execute every notebook and take every measurement again")
    p.set_defaults(func=cmd_run_notebooks)

    p = sub.add_parser("record", help="re-record the book's default run into notebooks/, data/ and book/images/")
    p.add_argument("--from-build", action="store_true",
                   help="record the default run already executed in _build/executed (e.g. by a cold make book) without executing again")  # fmt: skip
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("build-html", help="build the HTML book from the executed notebooks")
    p.set_defaults(func=cmd_build_html)

    p = sub.add_parser(
        "synth", help="write a published architecture's GGUF with synthetic weights (speed and memory only; cached)"
    )
    p.add_argument("name", nargs="?", help="e.g. qwen2.5-7b, llama-3.2-1b (--list shows them)")
    p.add_argument("--quant", default="Q4_K_M", help="llama-quantize type whose per-tensor types the file takes")
    p.add_argument("--context", type=int, default=4096, help="tokens of KV cache in the memory check")
    p.add_argument("--list", action="store_true", help="list the architecture names")
    p.add_argument("--clean", action="store_true", help="remove every synthetic file")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("open-webui", help="optional: Open WebUI in its own venv, on llama-server, and its screenshot")
    p.add_argument("action", choices=["install", "status", "screenshot"])
    p.add_argument("options", nargs=argparse.REMAINDER, help="the action's options (open-webui ACTION --help)")
    p.set_defaults(func=cmd_open_webui)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished steps are kept and a rerun resumes.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
