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
# Case study, part two (importance matrices, KV caches, sweeps, a second model).
IMATRIX_QUANT_TYPES = ("Q2_K", "Q3_K_M", "Q4_K_M")  # the low-bit k-quants llama.cpp's README shows with and without
IQUANT_TYPES = ("IQ2_XS", "IQ3_XXS", "IQ4_XS")  # an i-quant at each of 2, 3 and 4 bits
IMATRIX_TOKENS = 8192  # calibration tokens: 16 chunks of 512; llama.cpp's README finds no gain from more
DETAIL_NUM_PROMPTS = 20  # the first 20 prompts score the imatrix and KV-cache variants: ~2,000 tokens each
KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")  # the cache types the CPU back end runs with flash attention
SWEEP_QUANTS = ("Q4_K_M", "Q5_K_M")  # swept beside the reference: the common choice and the slow-prompt one
SWEEP_DEPTHS = (0, 512, 2048)  # tokens already in the context: empty, one chunk, a long chat
SWEEP_REPETITIONS = 2  # llama-bench -r per sweep point: a spread at a fifth of the main table's cost
SECOND_MODEL = "gemma-3-270m"  # the other catalog model, set beside the first
SECOND_QUANT_TYPES = ("Q2_K", "Q4_K_M", "Q8_0")  # low, the source's own type, high: within the time budget
SECOND_NUM_PROMPTS = 20  # a fifth of the main run's prompts: its 262k-token vocabulary makes scoring slow
SECOND_REPETITIONS = 3  # llama-bench -r of the second model's study (its speeds serve the comparison page): a spread at a third of the cost

# --------------------------------------------------------------------------- serving

N_REQUESTS = 30  # sequential streamed requests for the latency percentiles: ~900 token gaps for the ITL p99
CONCURRENCY = (1, 2, 4, 8)  # clients in the load test, doubling up to 4x the cores here
REQUESTS_PER_CLIENT = 2  # per level: enough to see queueing, few enough for ~1 min in all
MAX_TOKENS = 32  # tokens per chat request: a short answer, so a level takes seconds
WARMUP_REQUESTS = 2  # per server, left out of every statistic: the first requests pay one-time costs
PROMPT_LENGTHS = (64, 128, 256, 512, 1024, 2048)  # prefix tokens: a short system prompt up to a page of document
PROMPT_REPEATS = 2  # requests per length and cache mode: the second shows whether the first was an outlier
PARALLEL = 4  # slots of the open-loop server: 2x the cores, where the closed-loop throughput still rose
SLO_TTFT_MS = 1000.0  # service target: the answer starts within a second...
SLO_TPOT_MS = 100.0  # ...and streams at 10 tokens/s or faster, faster than people read
SLO_ATTAINMENT = 0.99  # ...for 99 % of requests (GuideLLM's chat examples state targets at 99 %)
RATE_START = 1.0  # req/s where the rate search starts (a single slot answers a request in well under 1 s)
REQUESTS_PER_RATE = 8  # Poisson arrivals per probed rate: a 99 % target then allows no miss; keeps the search short
MAX_PROBES = 6  # rates probed at most: double until one fails, then bisect
RATE_TOLERANCE = (
    0.4  # stop bisecting when the bracket is within 40 % of the passing rate: a probe at these rates costs ~30 s
)
STRUCTURED_MAX_TOKENS = 128  # per structured-output reply: three times a complete object's ~40 tokens

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
# "Will it fit?" for published models (estimated, not run here).
FIT_QUANT_TYPES = ("Q4_K_M", "Q5_K_M", "Q8_0", "F16")  # the common 4-bit type, a step up, 8-bit, unquantized
FIT_CONTEXTS = (4096, 32768)  # a chat and a long document; each model's trained maximum is added
MACHINES_GB = (8, 16, 32, 64)  # RAM of common laptops and desktops, in GiB as sold

# --------------------------------------------------------------------------- comparing models

# The comparison page's sweep: the case study's second-model run (types, prompts, repetitions) for
# both catalog models, so the rows that chapter stores are reused.
COMPARE_MODELS = CANDIDATES  # the two catalog models
COMPARE_QUANT_TYPES = SECOND_QUANT_TYPES  # low, the common choice, high: three points per model
COMPARE_NUM_PROMPTS = SECOND_NUM_PROMPTS  # 20 prompts: bits per byte separates the two models clearly
COMPARE_REPETITIONS = SECOND_REPETITIONS  # llama-bench -r: the second model's study is then reused as it is

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
        "IMATRIX_QUANT_TYPES": list(IMATRIX_QUANT_TYPES),
        "IQUANT_TYPES": list(IQUANT_TYPES),
        "IMATRIX_TOKENS": IMATRIX_TOKENS,
        "DETAIL_NUM_PROMPTS": DETAIL_NUM_PROMPTS,
        "KV_CACHE_TYPES": list(KV_CACHE_TYPES),
        "SWEEP_QUANTS": list(SWEEP_QUANTS),
        "SWEEP_DEPTHS": list(SWEEP_DEPTHS),
        "SWEEP_THREADS": None,
        "SWEEP_REPETITIONS": SWEEP_REPETITIONS,
        "SECOND_MODEL": SECOND_MODEL,
        "SECOND_QUANT_TYPES": list(SECOND_QUANT_TYPES),
        "SECOND_NUM_PROMPTS": SECOND_NUM_PROMPTS,
        "SECOND_REPETITIONS": SECOND_REPETITIONS,
    },
    "serving": {
        "MODEL": DEFAULT_MODEL,
        "THREADS": None,
        "N_REQUESTS": N_REQUESTS,
        "CONCURRENCY": list(CONCURRENCY),
        "REQUESTS_PER_CLIENT": REQUESTS_PER_CLIENT,
        "MAX_TOKENS": MAX_TOKENS,
        "WARMUP_REQUESTS": WARMUP_REQUESTS,
        "PROMPT_LENGTHS": list(PROMPT_LENGTHS),
        "PROMPT_REPEATS": PROMPT_REPEATS,
        "PARALLEL": PARALLEL,
        "SLO_TTFT_MS": SLO_TTFT_MS,
        "SLO_TPOT_MS": SLO_TPOT_MS,
        "SLO_ATTAINMENT": SLO_ATTAINMENT,
        "RATE_START": RATE_START,
        "REQUESTS_PER_RATE": REQUESTS_PER_RATE,
        "MAX_PROBES": MAX_PROBES,
        "RATE_TOLERANCE": RATE_TOLERANCE,
        "STRUCTURED_MAX_TOKENS": STRUCTURED_MAX_TOKENS,
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
        "FIT_QUANT_TYPES": list(FIT_QUANT_TYPES),
        "FIT_CONTEXTS": list(FIT_CONTEXTS),
        "MACHINES_GB": list(MACHINES_GB),
    },
    "comparing_models": {
        "MODEL": DEFAULT_MODEL,
        "MODELS": list(COMPARE_MODELS),
        "QUANT_TYPES": list(COMPARE_QUANT_TYPES),
        "NUM_PROMPTS": COMPARE_NUM_PROMPTS,
        "MIN_PROMPT_LENGTH": MIN_PROMPT_LENGTH,
        "MAX_PROMPT_LENGTH": MAX_PROMPT_LENGTH,
        "THREADS": None,
        "REPETITIONS": COMPARE_REPETITIONS,
        "N_PROMPT": N_PROMPT,
        "N_GEN": N_GEN,
        "CORPUS_SOURCE": CORPUS_SOURCE,
        "SCHEDULER": None,
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
