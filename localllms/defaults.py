"""Every default of the book in one place, each with the reason for its value.

The notebooks' papermill ``parameters`` cells must hold literal values, so they repeat the
``NOTEBOOK_PARAMETERS`` below; ``tests/unit/test_defaults.py`` checks that each cell agrees
with this module. Change a default here and in the cell, never in one alone.
"""

from __future__ import annotations

import os

from .errors import UserError

# --------------------------------------------------------------------------- machine


def threads(requested: int | None = None) -> int:
    """The one rule for thread counts: ``None`` means every core this process may run on.

    llama.cpp's CPU kernels scale with cores until memory bandwidth is the limit; the
    affinity mask (taskset, a container's cpuset) is respected, unlike ``os.cpu_count()``.
    """
    if requested is None:
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1
    if int(requested) != requested or requested < 1:
        raise UserError(f"THREADS must be a whole number of at least 1 (or None for all cores), not {requested!r}.")
    return int(requested)


# --------------------------------------------------------------------------- models and data

# The book's model: instruction-tuned (so the serving chapter can chat with it) and small
# enough that the whole book runs in minutes on two cores.
DEFAULT_MODEL = "smollm2-135m-instruct"

# The prompts, as in the seed chapter's case study: the first 100 non-empty texts of
# 100 < length < 1000 characters; "auto" takes WikiText-2 when the Hub answers.
NUM_PROMPTS = 100
MIN_PROMPT_LENGTH = 100
MAX_PROMPT_LENGTH = 1000
CORPUS_SOURCE = "auto"

# --------------------------------------------------------------------------- quantization study

# The seed's three types (Q2_K, Q4_K_M, Q6_K) and the steps between and above them.
QUANT_TYPES = ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
REPETITIONS = 10  # llama-bench -r: as the seed; enough for a standard deviation
N_PROMPT = 512  # llama-bench -p: llama-bench's own default prompt length
N_GEN = 128  # llama-bench -n: llama-bench's own default generation length
CROSSCHECK_QUANT = "Q4_K_M"  # the variant also scored by llama-perplexity: the common choice
CROSSCHECK_CTX = 512  # llama-perplexity -c: the context its published KL tables use

# --------------------------------------------------------------------------- serving

N_REQUESTS = 8  # sequential streamed requests for the latency table: a median and a p95
CONCURRENCY = (1, 2, 4, 8)  # clients in the load test, doubling up to 4x the cores here
REQUESTS_PER_CLIENT = 2  # per level: enough to see queueing, few enough for ~1 min in all
MAX_TOKENS = 32  # tokens per chat request: a short answer, so a level takes seconds

# --------------------------------------------------------------------------- model selection

CANDIDATES = ("smollm2-135m-instruct", "gemma-3-270m")  # the two catalog models
CONTEXTS = (2048, 8192, 32768)  # a chat, a long document, the longest either model was trained for
N_PARALLEL = 1  # llama-server slots: one user
# Cost assumptions (not measurements): a small desktop's draw and price, an EU-ish tariff.
ELECTRICITY_PRICE_KWH = 0.30
POWER_W = 65
HARDWARE_PRICE = 800
HARDWARE_LIFETIME_YEARS = 4
HOURS_PER_DAY = 8
SELECTION_NUM_PROMPTS = 20  # bits per byte: 20 prompts separate the two models clearly
SELECTION_REPETITIONS = 3  # llama-bench -r for the speed table: a spread, in seconds
SELECTION_N_PROMPT = 256  # the prompt length TTFT is quoted for
SELECTION_N_GEN = 32

# --------------------------------------------------------------------------- notebooks

# The literal parameters cell of each notebook, as papermill sees it.
NOTEBOOK_PARAMETERS: dict[str, dict[str, object]] = {
    "quantization": {
        "MODEL": DEFAULT_MODEL,
        "QUANT_TYPES": list(QUANT_TYPES),
        "NUM_PROMPTS": NUM_PROMPTS,
        "MIN_PROMPT_LENGTH": MIN_PROMPT_LENGTH,
        "MAX_PROMPT_LENGTH": MAX_PROMPT_LENGTH,
        "THREADS": None,
        "REPETITIONS": REPETITIONS,
        "N_PROMPT": N_PROMPT,
        "N_GEN": N_GEN,
        "CORPUS_SOURCE": CORPUS_SOURCE,
        "CROSSCHECK_QUANT": CROSSCHECK_QUANT,
        "CROSSCHECK_CTX": CROSSCHECK_CTX,
    },
    "serving": {
        "MODEL": DEFAULT_MODEL,
        "THREADS": None,
        "N_REQUESTS": N_REQUESTS,
        "CONCURRENCY": list(CONCURRENCY),
        "REQUESTS_PER_CLIENT": REQUESTS_PER_CLIENT,
        "MAX_TOKENS": MAX_TOKENS,
        "OLLAMA_HOST": None,
        "LLAMAFILE": None,
    },
    "model_selection": {
        "MODEL": DEFAULT_MODEL,
        "CANDIDATES": list(CANDIDATES),
        "CONTEXTS": list(CONTEXTS),
        "N_PARALLEL": N_PARALLEL,
        "ELECTRICITY_PRICE_KWH": ELECTRICITY_PRICE_KWH,
        "POWER_W": POWER_W,
        "HARDWARE_PRICE": HARDWARE_PRICE,
        "HARDWARE_LIFETIME_YEARS": HARDWARE_LIFETIME_YEARS,
        "HOURS_PER_DAY": HOURS_PER_DAY,
        "THREADS": None,
        "NUM_PROMPTS": SELECTION_NUM_PROMPTS,
        "CORPUS_SOURCE": CORPUS_SOURCE,
        "REPETITIONS": SELECTION_REPETITIONS,
        "N_PROMPT": SELECTION_N_PROMPT,
        "N_GEN": SELECTION_N_GEN,
    },
}


def describe_parameters(notebook: str, namespace: dict[str, object]) -> str:
    """The one statement of the parameters a notebook ran with, for its page (the parameter cells
    themselves are hidden there), naming any that differ from the book's defaults."""
    book = NOTEBOOK_PARAMETERS[notebook]
    values = {k: namespace[k] for k in book}
    changed = [k for k in book if values[k] != book[k]]
    shown = ", ".join(f"{k} = {v!r}" for k, v in values.items())
    if not changed:
        return f"Parameters of this run (the book's defaults): {shown}."
    diff = "; ".join(f"{k} (default {book[k]!r})" for k in changed)
    return f"Parameters of this run: {shown}. Changed from the book's defaults: {diff}."
