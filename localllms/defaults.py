"""Every default of the book in one place, each with the reason for its value.

The parameters that use them are declared once elsewhere: a study parameter as a field of
``localllms.study.config.StudyConfig``, any other notebook parameter in its chapter's entry of
``localllms.chapters.CHAPTERS``. The notebooks' papermill ``parameters`` cells are written from
those declarations (``python -m localllms parameters --write``, part of ``make format``), never
by hand.
"""

from __future__ import annotations

import os

from .errors import UserError

# --------------------------------------------------------------------------- machine


def cores() -> int:
    """The cores this process may run on (the affinity mask: taskset, a container's cpuset), which
    is what "every core" means; not the same question as how many threads a run uses."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads(requested: int | None = None) -> int:
    """The one rule for thread counts: ``None`` means every core this process may run on.

    llama.cpp's CPU kernels scale with cores until memory bandwidth is the limit; the
    affinity mask (taskset, a container's cpuset) is respected, unlike ``os.cpu_count()``.
    """
    if requested is None:
        return cores()
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
# Speed rounds: every configuration runs once per round, in an order shuffled per round. 5 is the
# fewest rounds whose [min, max] covers the median with at least 90 % (93.8 %) whatever the
# distribution: the interval every speed is printed with.
ROUNDS = 5
N_PROMPT = 512  # llama-bench -p: llama-bench's own default prompt length
N_GEN = 128  # llama-bench -n: llama-bench's own default generation length
CROSSCHECK_QUANT = "Q4_K_M"  # the variant also scored by llama-perplexity: the common choice
CROSSCHECK_CTX = 512  # llama-perplexity -c: the context its published KL tables use
# Chunks the cross-check scores: it compares the two evaluators token by token on the same tokens, so
# its agreement does not need all of the prompts (19 chunks); 8 chunks are 2,040 scored tokens (two
# of them above the KLD p99.9) in less than half the time.
CROSSCHECK_CHUNKS = 8
# Case study, part two (importance matrices, KV caches, sweeps, a second model).
IMATRIX_QUANT_TYPES = ("Q2_K", "Q3_K_M", "Q4_K_M")  # the low-bit k-quants llama.cpp's README shows with and without
IQUANT_TYPES = ("IQ2_XS", "IQ3_XXS", "IQ4_XS")  # an i-quant at each of 2, 3 and 4 bits
IMATRIX_TOKENS = 8192  # calibration tokens: 16 chunks of 512; llama.cpp's README finds no gain from more
DETAIL_NUM_PROMPTS = 20  # the first 20 prompts score the KV-cache variants: ~2,000 tokens each
# The imatrix variants are scored on the first 60 prompts: the gain is a paired difference per prompt,
# and at 20 prompts the 4-bit gain's standard error was as large as the gain itself.
IMATRIX_NUM_PROMPTS = 60
KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")  # the cache types the CPU back end runs with flash attention
# The sweeps are the costliest rounds: a run at depth 2048 first fills the context (Q5_K_M 13.6 s,
# F16 and Q4_K_M 9.4 s a run on the AMD EPYC, against 2-3 s at depth 0). By default they hold the
# reference and the common choice, at an empty context and a long chat (the depths the model-sizes
# chapter measures); Q5_K_M and depth 512 would add about 155 s by those per-run times (the
# cold run's rounds went from 418 s to 254 s without them) and are a parameter away. Q5_K_M's slow
# prompt speed is explained by the kernel experiment, not the sweeps.
SWEEP_QUANTS = ("Q4_K_M",)  # swept beside the reference: the common choice
SWEEP_DEPTHS = (0, 2048)  # tokens already in the context: empty, a long chat
SECOND_MODEL = "gemma-3-270m"  # the other catalog model, set beside the first
SECOND_QUANT_TYPES = ("Q2_K", "Q4_K_M", "Q8_0")  # low, the source's own type, high: within the time budget
SECOND_NUM_PROMPTS = 20  # a fifth of the main run's prompts: its 262k-token vocabulary makes scoring slow
SECOND_ROUNDS = ROUNDS  # the second model's speed rounds (its speeds serve the comparison page)

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
# ...for 90 % of requests. GuideLLM's chat example asks 99 %, but a probe shows 99 % only with 100 requests
# or more (fewer allow no miss at all, so one slow request decides it); 90 % is what a probe of
# REQUESTS_PER_RATE can check within the chapter's few minutes.
SLO_ATTAINMENT = 0.9
RATE_START = 1.0  # req/s where the rate search starts (a single slot answers a request in well under 1 s)
# Poisson arrivals per probed rate (and per server configuration compared at one rate). The trade-off:
# more requests per probe, fewer probes. A probe passes when all its requests were sent and at least
# 90 % of them met the bounds: 15 of 16, so one slow request never decides a probe (at 8 requests and
# 99 % it did). Every attainment is stated with its count and its exact 90 % interval (16 of 16 met:
# 83-100 %). A probe takes 16 to 32 s at the rates a 2-core machine reaches, twice the old 8; at most
# 4 probes (MAX_PROBES), 3 when the first bisection brackets the rate within RATE_TOLERANCE.
REQUESTS_PER_RATE = 16
MAX_PROBES = 4  # rates probed at most: double (or halve) until the verdict changes, then bisect once
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
SELECTION_ROUNDS = ROUNDS  # speed rounds of the two candidates, interleaved
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
COMPARE_ROUNDS = SECOND_ROUNDS  # the second model's study is then reused as it is
