"""Command line: ``python -m localllms {build,models,prompts,reference,quant-types}``.

Each command does one job and ends with a parseable summary (``key: value`` lines,
or JSON with ``--json``), in the manner of llama.cpp's own tools.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from . import corpus
from .errors import UserError


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localllms", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="compile llama.cpp (cached) and print its identity")
    p.add_argument("--force", action="store_true", help="rebuild even if a cached build exists")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("models", help="resolve models and print their metadata and sha256")
    p.add_argument("specs", nargs="*", help="catalog names, .gguf paths or owner/repo:file.gguf (default: the catalog)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("reference", help="make the study's F16 reference of a model")
    p.add_argument("model")
    p.set_defaults(func=cmd_reference)

    p = sub.add_parser("quant-types", help="list the quant types this build's llama-quantize accepts")
    p.set_defaults(func=cmd_quant_types)

    p = sub.add_parser("prompts", help="select the prompts corpus and write it under data/prompts")
    p.add_argument("--num", type=int, default=corpus.NUM_PROMPTS)
    p.add_argument("--min-length", type=int, default=corpus.MIN_PROMPT_LENGTH)
    p.add_argument("--max-length", type=int, default=corpus.MAX_PROMPT_LENGTH)
    p.add_argument("--source", choices=["auto", "wikitext", "offline"], default="auto")
    p.add_argument("--out-dir", type=Path, default=None, help="where to write the prompts file (default data/prompts)")
    p.set_defaults(func=cmd_prompts)

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
