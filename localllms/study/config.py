"""The parameters of one quantization study, checked before any heavy step runs."""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .. import defaults
from ..corpus import SOURCES as _CORPUS_SOURCES
from ..errors import UserError


def param(
    default: object,
    notebook: str,
    help: str,
    *,
    cli: str | None = None,
    store: str | None = None,
    resolved: bool = False,
    model: bool = False,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """Declare a study parameter once, as a field of :class:`StudyConfig`: its default (the value
    and its reason live in ``localllms.defaults``), the name a notebook gives it, a line of help,
    its command-line flag and the store column that keeps it. Everything else follows from this:
    the CLI options (``add_cli_options``), the values that identify a run (``run_values``: the
    results store's key, the sweep's skip rule, the comparison page's filter), the second model's
    study (``dataclasses.replace``) and the notebook's parameters cell (``localllms.chapters``).

    ``resolved``: the stored value is what the run resolved (every core, the corpus found), not
    the field's own value, so the caller supplies it. ``model``: the value names a model, whose
    file digest then enters the notebook's cache key."""
    meta = {"notebook": notebook, "help": help, "cli": cli, "store": store, "resolved": resolved, "model": model,
            "choices": choices}  # fmt: skip
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class StudyConfig:
    """What a study runs on; every default comes from ``localllms.defaults``.

    Construction checks everything that needs no model or build (counts, ranges,
    names), so a bad value is one sentence before anything is quantized; the quant
    types are checked against this build's llama-quantize by the pipeline's first step.
    """

    model: str = param(defaults.DEFAULT_MODEL, "MODEL", "catalog name, path to a .gguf file, or owner/repo:file.gguf",
                       model=True)  # fmt: skip
    quant_types: tuple[str, ...] = param(defaults.QUANT_TYPES, "QUANT_TYPES", "the variants, by llama-quantize type",
                                         cli="--quants")  # fmt: skip
    num_prompts: int = param(defaults.NUM_PROMPTS, "NUM_PROMPTS", "prompts scored", cli="--prompts", store="n_prompts")
    min_prompt_length: int = param(defaults.MIN_PROMPT_LENGTH, "MIN_PROMPT_LENGTH", "characters, exclusive",
                                   cli="--min-length", store="min_prompt_length")  # fmt: skip
    max_prompt_length: int = param(defaults.MAX_PROMPT_LENGTH, "MAX_PROMPT_LENGTH", "characters, exclusive",
                                   cli="--max-length", store="max_prompt_length")  # fmt: skip
    threads: int | None = param(None, "THREADS", "None: every core of this machine", cli="--threads", store="threads",
                                resolved=True)  # fmt: skip
    rounds: int = param(defaults.ROUNDS, "ROUNDS", "speed rounds: every configuration once per round, shuffled",
                        cli="--rounds", store="rounds")  # fmt: skip
    n_prompt: int = param(defaults.N_PROMPT, "N_PROMPT", "llama-bench -p", cli="--n-prompt", store="n_prompt")
    n_gen: int = param(defaults.N_GEN, "N_GEN", "llama-bench -n", cli="--n-gen", store="n_gen")
    corpus_source: str = param(defaults.CORPUS_SOURCE, "CORPUS_SOURCE",
                               '"auto": WikiText-2 when the Hub is reachable, else the shipped Wikipedia leads',
                               cli="--corpus", store="corpus", resolved=True, choices=_CORPUS_SOURCES)  # fmt: skip

    def __post_init__(self) -> None:
        qtypes = tuple(str(q).strip().upper() for q in self.quant_types)
        if not qtypes:
            raise UserError("QUANT_TYPES is empty; name at least one type, e.g. ['Q4_K_M'].")
        if len(set(qtypes)) != len(qtypes):
            raise UserError(f"QUANT_TYPES names a type twice ({', '.join(qtypes)}); list each type once.")
        object.__setattr__(self, "quant_types", qtypes)
        _whole("NUM_PROMPTS", self.num_prompts, 1)
        _whole("MIN_PROMPT_LENGTH", self.min_prompt_length, 0)
        _whole("MAX_PROMPT_LENGTH", self.max_prompt_length, 1)
        if self.min_prompt_length >= self.max_prompt_length - 1:
            raise UserError(
                f"MIN_PROMPT_LENGTH ({self.min_prompt_length}) must be below MAX_PROMPT_LENGTH "
                f"({self.max_prompt_length}) by at least 2."
            )
        _whole("ROUNDS", self.rounds, 1)
        _whole("N_PROMPT", self.n_prompt, 0)
        _whole("N_GEN", self.n_gen, 0)
        if self.n_prompt == 0 and self.n_gen == 0:
            raise UserError("N_PROMPT and N_GEN are both 0, so llama-bench would measure nothing; set one above 0.")
        if self.corpus_source not in _CORPUS_SOURCES:
            raise UserError(f"CORPUS_SOURCE must be one of {', '.join(_CORPUS_SOURCES)}, not {self.corpus_source!r}.")
        defaults.threads(self.threads)  # validates

    @property
    def n_threads(self) -> int:
        return defaults.threads(self.threads)

    @property
    def is_default(self) -> bool:
        """The book's default run (on any machine: the thread count may differ)."""
        return self == StudyConfig(threads=self.threads)

    def slug(self) -> str:
        """A file-name-safe name for a non-default run: the model and a digest of the parameters."""
        m = self.model
        name = Path(m).stem if m.endswith(".gguf") else m.replace("/", "_").replace(":", "_")
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]
        return f"{name}-{digest}"

    @classmethod
    def from_notebook(cls, namespace: dict[str, object], **fixed: object) -> StudyConfig:
        """The config a notebook's parameters describe, by the names the declarations give them."""
        values = {f.name: namespace[f.metadata["notebook"]] for f in fields(cls) if f.metadata["notebook"] in namespace}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**{**values, **fixed})

    def run_values(self, **resolved: object) -> dict[str, object]:
        """The store columns that identify this study's rows (the model's digest, the machine and
        the build aside), from the declarations; ``resolved`` gives the values of the fields
        declared ``resolved`` (the thread count and the corpus the run actually used)."""
        out = {}
        for f in fields(self):
            col = f.metadata.get("store")
            if col is None:
                continue
            if f.metadata.get("resolved"):
                if col in resolved:
                    out[col] = resolved[col]
            else:
                out[col] = getattr(self, f.name)
        return out


def declared() -> list:
    """The declared study parameters (the fields of StudyConfig, with their metadata)."""
    return list(fields(StudyConfig))


def add_cli_options(p: argparse.ArgumentParser, threads_help: str | None = None) -> None:
    """One command-line option per declared parameter that has a flag."""
    for f in declared():
        flag = f.metadata.get("cli")
        if flag is None:
            continue
        help_ = threads_help if (f.name == "threads" and threads_help) else f.metadata["help"]
        if isinstance(f.default, tuple):
            p.add_argument(flag, dest=f.name, type=_csv_list, default=list(f.default), help=help_)
        elif f.metadata.get("choices"):
            p.add_argument(flag, dest=f.name, choices=f.metadata["choices"], default=f.default, help=help_)
        else:
            kind = int if isinstance(f.default, int) or f.name == "threads" else str
            p.add_argument(flag, dest=f.name, type=kind, default=f.default, help=help_)


def from_cli(args: argparse.Namespace, **fixed: object) -> StudyConfig:
    """The StudyConfig the declared options of ``args`` describe (``fixed``: e.g. the model)."""
    values = {f.name: getattr(args, f.name) for f in declared() if f.metadata.get("cli") and hasattr(args, f.name)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return StudyConfig(**{**values, **fixed})


def _csv_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def check_part_two(**counts: object) -> None:
    """Part two's whole-number parameters (e.g. ``SECOND_REPETITIONS=3``), checked by their own names
    before the study starts, so a bad one is one sentence now rather than after the main run."""
    for name, value in counts.items():
        _whole(name, value, 1)


def _whole(name: str, value: object, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UserError(f"{name} must be a whole number of at least {least}, not {value!r}.")
