"""The parameters of one quantization study, checked before any heavy step runs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import defaults
from ..errors import UserError

CORPUS_SOURCES = ("auto", "wikitext", "offline")


@dataclass(frozen=True)
class StudyConfig:
    """What a study runs on; every default comes from ``localllms.defaults``.

    Construction checks everything that needs no model or build (counts, ranges,
    names), so a bad value is one sentence before anything is quantized; the quant
    types are checked against this build's llama-quantize by the pipeline's first step.
    """

    model: str = defaults.DEFAULT_MODEL
    quant_types: tuple[str, ...] = defaults.QUANT_TYPES
    num_prompts: int = defaults.NUM_PROMPTS
    min_prompt_length: int = defaults.MIN_PROMPT_LENGTH
    max_prompt_length: int = defaults.MAX_PROMPT_LENGTH
    threads: int | None = None  # None: every core (defaults.threads)
    repetitions: int = defaults.REPETITIONS
    n_prompt: int = defaults.N_PROMPT
    n_gen: int = defaults.N_GEN
    corpus_source: str = defaults.CORPUS_SOURCE

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
        _whole("REPETITIONS", self.repetitions, 1)
        _whole("N_PROMPT", self.n_prompt, 0)
        _whole("N_GEN", self.n_gen, 0)
        if self.n_prompt == 0 and self.n_gen == 0:
            raise UserError("N_PROMPT and N_GEN are both 0, so llama-bench would measure nothing; set one above 0.")
        if self.corpus_source not in CORPUS_SOURCES:
            raise UserError(f"CORPUS_SOURCE must be one of {', '.join(CORPUS_SOURCES)}, not {self.corpus_source!r}.")
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


def check_part_two(**counts: object) -> None:
    """Part two's whole-number parameters (e.g. ``SECOND_REPETITIONS=3``), checked by their own names
    before the study starts, so a bad one is one sentence now rather than after the main run."""
    for name, value in counts.items():
        _whole(name, value, 1)


def _whole(name: str, value: object, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UserError(f"{name} must be a whole number of at least {least}, not {value!r}.")
