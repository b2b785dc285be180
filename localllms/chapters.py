"""The computed chapters, registered once: each notebook's parameters, and what its results read.

A chapter is a notebook in ``notebooks/`` listed in ``_toc.yml``. Its entry here declares
every parameter its ``parameters`` cell holds (the name, the default, a line of help, and
whether it names a model), and the chapters whose results it reads. From this registry:

* the notebook's ``parameters`` cell is written (``python -m localllms parameters --write``,
  part of ``make format``; ``make lint`` fails when a cell differs, naming the command);
* every parameter that names a model has its file digest in the notebook's cache key, so
  changing the file it points to executes the notebook again (``model_parameters``);
* a chapter that reads another's results is executed again when that one is (``depends``);
* each page states the parameters it ran with (``describe_parameters``).

The quantization chapter's study parameters are the fields of ``StudyConfig``
(``localllms.study.config``), declared there once. Defaults and their reasons are in
``localllms.defaults``.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

from . import defaults as d
from .paths import PROJECT_ROOT


@dataclass(frozen=True)
class Param:
    """One notebook parameter: its name in the cell, default, a line of help, and whether it
    names a model (a catalog name, a .gguf path or a hub file, or a list of them)."""

    name: str
    default: object
    help: str = ""
    model: bool = False


@dataclass(frozen=True)
class Chapter:
    name: str  # notebooks/NAME.ipynb
    params: tuple[Param, ...]
    depends: tuple[str, ...] = field(default=())  # chapters whose stored results this one reads
    header: str = '# Parameters (papermill overrides these; see "Rerun it on your model").'

    @property
    def defaults(self) -> dict[str, object]:
        return {p.name: p.default for p in self.params}

    @property
    def path(self) -> Path:
        return PROJECT_ROOT / "notebooks" / f"{self.name}.ipynb"


def study_params() -> tuple[Param, ...]:
    """The study's parameters, from the fields of StudyConfig (their one declaration)."""
    from .study.config import declared

    out = []
    for f in declared():
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        out.append(Param(f.metadata["notebook"], default, f.metadata["help"], f.metadata.get("model", False)))
    return tuple(out)


def _chapters() -> dict[str, Chapter]:
    chapters = [
        Chapter(
            "model_selection",
            (
                Param(
                    "MODEL",
                    d.DEFAULT_MODEL,
                    "the book's model; added to the candidates when it is not one of them",
                    model=True,
                ),  # fmt: skip
                Param("CANDIDATES", list(d.CANDIDATES), "catalog names or paths to .gguf files", model=True),
                Param("CONTEXTS", list(d.CONTEXTS), "tokens per slot; clipped to each model's trained context"),
                Param("N_PARALLEL", d.N_PARALLEL, "llama-server slots (-np), each with the full context"),
                Param("ELECTRICITY_PRICE_KWH", d.ELECTRICITY_PRICE_KWH, "USD per kWh"),
                Param("POWER_W", d.POWER_W, "average power drawn by the machine while it serves the model"),
                Param("HARDWARE_PRICE", d.HARDWARE_PRICE, "USD paid for the machine"),
                Param("HARDWARE_LIFETIME_YEARS", d.HARDWARE_LIFETIME_YEARS, "years the machine is written off over"),
                Param("HOURS_PER_DAY", d.HOURS_PER_DAY, "hours a day the machine serves the model"),
                Param("THREADS", None, "None: every core of this machine"),
                Param("NUM_PROMPTS", d.SELECTION_NUM_PROMPTS, "prompts scored for bits per byte"),
                Param(
                    "CORPUS_SOURCE",
                    d.CORPUS_SOURCE,
                    '"auto": WikiText-2 when the Hub is reachable, else the shipped Wikipedia leads',
                ),  # fmt: skip
                Param("ROUNDS", d.SELECTION_ROUNDS, "speed rounds: both candidates once per round, shuffled"),
                Param("N_PROMPT", d.SELECTION_N_PROMPT, "llama-bench -p: the prompt length TTFT is given for"),
                Param("N_GEN", d.SELECTION_N_GEN, "llama-bench -n"),
                Param("FIT_QUANT_TYPES", list(d.FIT_QUANT_TYPES), 'file types of the "Will it fit?" table'),
                Param("FIT_CONTEXTS", list(d.FIT_CONTEXTS), "its contexts; each model's trained maximum is added"),
                Param("MACHINES_GB", list(d.MACHINES_GB), "RAM of the machines it is read against, in GiB as sold"),
            ),
            header="# Parameters (papermill overrides these).",
        ),
        Chapter(
            "serving",
            (
                Param("MODEL", d.DEFAULT_MODEL, "catalog name or path to a .gguf file", model=True),
                Param("THREADS", None, "None: all cores"),
                Param("N_REQUESTS", d.N_REQUESTS, "sequential streamed requests for the latency percentiles"),
                Param(
                    "CONCURRENCY",
                    list(d.CONCURRENCY),
                    "concurrent clients in the closed-loop load test, each level against as many slots",
                ),  # fmt: skip
                Param("REQUESTS_PER_CLIENT", d.REQUESTS_PER_CLIENT, "requests each client sends per level"),
                Param("MAX_TOKENS", d.MAX_TOKENS, "tokens generated per request of the serving workload"),
                Param(
                    "WARMUP_REQUESTS",
                    d.WARMUP_REQUESTS,
                    "requests per server before measuring, left out of every statistic",
                ),  # fmt: skip
                Param(
                    "PROMPT_LENGTHS", list(d.PROMPT_LENGTHS), "prefix lengths (tokens) for the prompt-cache measurement"
                ),  # fmt: skip
                Param("PROMPT_REPEATS", d.PROMPT_REPEATS, "requests per prefix length and cache mode"),
                Param("PARALLEL", d.PARALLEL, "slots (-np) of the open-loop server"),
                Param("SLO_TTFT_MS", d.SLO_TTFT_MS, "service target: time to first token at most this..."),
                Param("SLO_TPOT_MS", d.SLO_TPOT_MS, "...and time per output token at most this..."),
                Param("SLO_ATTAINMENT", d.SLO_ATTAINMENT, "...for this share of requests"),
                Param("RATE_START", d.RATE_START, "requests/s where the search for the highest rate starts"),
                Param("REQUESTS_PER_RATE", d.REQUESTS_PER_RATE, "Poisson arrivals per probed rate"),
                Param("MAX_PROBES", d.MAX_PROBES, "rates probed at most"),
                Param(
                    "RATE_TOLERANCE",
                    d.RATE_TOLERANCE,
                    "the search stops when it has bracketed the answer within this share",
                ),  # fmt: skip
                Param("STRUCTURED_MAX_TOKENS", d.STRUCTURED_MAX_TOKENS, "tokens allowed per structured-output reply"),
                Param("OLLAMA_HOST", None, "None: $OLLAMA_HOST, else 127.0.0.1:11434"),
                Param("LLAMAFILE", None, "path to a llamafile executable, if there is one"),
            ),
        ),
        Chapter(
            "quantization",
            (
                *study_params(),
                Param("CROSSCHECK_QUANT", d.CROSSCHECK_QUANT, "the variant also scored by llama-perplexity"),
                Param("CROSSCHECK_CTX", d.CROSSCHECK_CTX, "llama-perplexity -c"),
                Param("CROSSCHECK_CHUNKS", d.CROSSCHECK_CHUNKS, "chunks both evaluators score (None: every chunk)"),
                Param("IMATRIX_QUANT_TYPES", list(d.IMATRIX_QUANT_TYPES), "made without and with an importance matrix"),
                Param("IQUANT_TYPES", list(d.IQUANT_TYPES), "i-quants, with the matrix (and without, where allowed)"),
                Param(
                    "IMATRIX_TOKENS",
                    d.IMATRIX_TOKENS,
                    "llama-imatrix calibration tokens, from texts the prompts do not use",
                ),  # fmt: skip
                Param(
                    "IMATRIX_NUM_PROMPTS",
                    d.IMATRIX_NUM_PROMPTS,
                    "the first prompts, on which the variants with and without the matrix are scored",
                ),
                Param(
                    "DETAIL_NUM_PROMPTS",
                    d.DETAIL_NUM_PROMPTS,
                    "the first prompts, on which the KV-cache variants are scored",
                ),
                Param("KV_CACHE_TYPES", list(d.KV_CACHE_TYPES), "K and V cache types the reference is scored with"),
                Param("SWEEP_QUANTS", list(d.SWEEP_QUANTS), "swept with the reference over depth and threads"),
                Param("SWEEP_DEPTHS", list(d.SWEEP_DEPTHS), "llama-bench -d: tokens already in the context"),
                Param("SWEEP_THREADS", None, "llama-bench -t list; None: 1 ... every core"),
                Param(
                    "SECOND_MODEL",
                    d.SECOND_MODEL,
                    "set beside MODEL (the other catalog model if the same; None: skip)",
                    model=True,
                ),  # fmt: skip
                Param("SECOND_QUANT_TYPES", list(d.SECOND_QUANT_TYPES)),
                Param(
                    "SECOND_NUM_PROMPTS", d.SECOND_NUM_PROMPTS, "the first prompts; both models are compared on them"
                ),
                Param("SECOND_ROUNDS", d.SECOND_ROUNDS, "speed rounds of the second model's study"),
            ),
        ),
        Chapter(
            "comparing_models",
            (
                Param("MODEL", d.DEFAULT_MODEL, "the book's model: compared too, first", model=True),
                Param("MODELS", list(d.COMPARE_MODELS), "catalog names or paths to .gguf files", model=True),
                Param("QUANT_TYPES", list(d.COMPARE_QUANT_TYPES)),
                Param("NUM_PROMPTS", d.COMPARE_NUM_PROMPTS),
                Param("MIN_PROMPT_LENGTH", d.MIN_PROMPT_LENGTH, "characters, exclusive"),
                Param("MAX_PROMPT_LENGTH", d.MAX_PROMPT_LENGTH, "characters, exclusive"),
                Param("THREADS", None, "threads per study; None: every core of the machine that runs it"),
                Param(
                    "ROUNDS", d.COMPARE_ROUNDS, "speed rounds (as the case study's second model, whose rows are reused)"
                ),
                Param("N_PROMPT", d.N_PROMPT, "llama-bench -p"),
                Param("N_GEN", d.N_GEN, "llama-bench -n"),
                Param(
                    "CORPUS_SOURCE",
                    d.CORPUS_SOURCE,
                    '"auto": WikiText-2 when the Hub is reachable, else the shipped Wikipedia leads',
                ),  # fmt: skip
                Param("SCHEDULER", None, "a Dask scheduler address (tcp://HOST:8786); None: a cluster of this machine"),
            ),
            depends=("quantization",),
        ),
        _model_sizes(),
    ]
    return {c.name: c for c in chapters}


def _model_sizes() -> Chapter:
    """Try before you download: synthetic files of published architectures (defaults: localllms.sizes.plan)."""
    from .sizes import plan as sz

    return Chapter(
        "model_sizes",
        (
            Param(
                "VALIDATE_MODELS",
                list(sz.VALIDATE_MODELS),
                "catalog models checked as real and as synthetic files",
                model=True,
            ),  # fmt: skip
            Param("VALIDATE_TYPES", list(sz.VALIDATE_TYPES), "the types each is made at, both ways"),
            Param("VALIDATE_N_PROMPT", sz.VALIDATE_N_PROMPT, "llama-bench -p of the check"),
            Param("VALIDATE_N_GEN", sz.VALIDATE_N_GEN, "llama-bench -n of the check"),
            Param("VALIDATE_CONTEXT", sz.VALIDATE_CONTEXT, "llama-server context of the check's memory runs"),
            Param(
                "VALIDATE_MARGIN",
                sz.VALIDATE_MARGIN,
                "a pair agrees when its speed ratio's interval is inside 1 ± this",
            ),
            Param("VALIDATE_LEVEL", sz.VALIDATE_LEVEL, "coverage of all the check's speed intervals together"),
            Param(
                "VALIDATE_ROUNDS",
                sz.VALIDATE_ROUNDS,
                "rounds of the check (None: the fewest whose intervals hold together)",
            ),  # fmt: skip
            Param(
                "VALIDATE_DEPTH",
                sz.VALIDATE_DEPTH,
                "the first pair checked again with this many tokens in the context (0: not)",
            ),  # fmt: skip
            Param(
                "SIZES",
                list(sz.SIZES),
                "synthetic files, synth:NAME:TYPE (python -m localllms synth --list)",
                model=True,
            ),  # fmt: skip
            Param(
                "DEPTH_SIZES",
                list(sz.DEPTH_SIZES),
                "of SIZES, those also run with DEPTH tokens in the context",
                model=True,
            ),  # fmt: skip
            Param("DEPTH", sz.DEPTH, "llama-bench -d: tokens already in the context"),
            Param("N_PROMPT", sz.N_PROMPT, "llama-bench -p, kept short: a 7B reads over 4 GB per token"),
            Param("N_GEN", sz.N_GEN, "llama-bench -n"),
            Param("MEMORY_CONTEXTS", list(sz.MEMORY_CONTEXTS), "llama-server contexts of the peak memory runs"),
            Param("ROUNDS", sz.ROUNDS, "speed rounds: every file and the bandwidth probe once per round, shuffled"),
            Param("THREADS", None, "None: every core of this machine"),
        ),
        depends=("model_selection",),  # the model-selection chapter measures the "Will it fit?" rows' memory
    )


CHAPTERS = _chapters()


def chapter(name: str) -> Chapter:
    return CHAPTERS[name]


def model_parameters(name: str) -> tuple[str, ...]:
    """The parameters of a chapter that name models (their digests enter its cache key)."""
    return tuple(p.name for p in CHAPTERS[name].params if p.model)


def describe_parameters(notebook: str, namespace: dict[str, object]) -> str:
    """The one statement of the parameters a notebook ran with, for its page (the parameter cells
    themselves are hidden there), naming any that differ from the book's defaults."""
    book = CHAPTERS[notebook].defaults
    values = {k: namespace[k] for k in book}
    changed = [k for k in book if values[k] != book[k]]
    shown = ", ".join(f"{k} = {v!r}" for k, v in values.items())
    if not changed:
        return f"Parameters of this run (the book's defaults): {shown}."
    diff = "; ".join(f"{k} (default {book[k]!r})" for k in changed)
    return f"Parameters of this run: {shown}. Changed from the book's defaults: {diff}."


# --------------------------------------------------------------------------- the parameters cells


def render_cell(ch: Chapter) -> str:
    """The parameters cell of a chapter, as the registry declares it."""
    lines = [ch.header]
    for p in ch.params:
        value = json.dumps(p.default) if isinstance(p.default, str) else repr(p.default)
        lines.append(f"{p.name} = {value}" + (f"  # {p.help}" if p.help else ""))
    return "\n".join(lines) + "\n"


def cell_values(source: str) -> dict[str, object]:
    """The literal values a parameters cell assigns (papermill's view of it)."""
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def _parameters_cell(nb: dict) -> dict:
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError("a notebook needs exactly one cell tagged 'parameters'")
    return cells[0]


def stale_cells() -> list[str]:
    """The chapters whose notebook's parameters cell differs from the registry."""
    out = []
    for ch in CHAPTERS.values():
        cell = _parameters_cell(json.loads(ch.path.read_text()))
        if "".join(cell["source"]) != render_cell(ch):
            out.append(ch.name)
    return out


def write_cells() -> list[str]:
    """Write every stale parameters cell from the registry; return the chapters written."""
    written = []
    for name in stale_cells():
        ch = CHAPTERS[name]
        nb = json.loads(ch.path.read_text())
        text = render_cell(ch)
        _parameters_cell(nb)["source"] = text.splitlines(keepends=True)
        ch.path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        written.append(name)
    return written
