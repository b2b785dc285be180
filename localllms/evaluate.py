"""Our evaluator: the reference's and each variant's logits, compared token by token.

The logits of the reference and of each variant are computed through the Python
binding of the local build, prompt by prompt, and compared while they are in
memory: per scored position we keep a :class:`TokenStats` record (the two negative
log-likelihoods of the next token, the KL divergence and whether both models rank
the same top token). No tokens x vocabulary file of base logits is ever written
(llama-perplexity's ``--kl-divergence-base`` file holds about 2 bytes x vocabulary
per token). The metrics computed from these records are declared in ``metrics.py``.

``evaluate_windows`` scores a text the way llama-perplexity does (chunks of
``n_ctx`` tokens, BOS first, only the second half of each chunk scored) so the two
can be compared on the same tokens (``study/crosscheck.py`` runs the tool itself).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from . import metrics, progress
from .build import BuildInfo, current_build, use_build_for_binding
from .errors import UserError
from .models import ResolvedModel
from .paths import cache_dir, code_key, content_key

# --------------------------------------------------------------------------- per-token records


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32, stable against large logits."""
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True, dtype=np.float64)).astype(np.float32)


@dataclass
class TokenStats:
    """Per scored position: NLL under each model, KL(base || Q), same top token."""

    nll_base: np.ndarray
    nll_q: np.ndarray
    kld: np.ndarray
    same_top: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence[TokenStats]) -> TokenStats:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **{f.name: getattr(self, f.name) for f in fields(self)})
        tmp.replace(path)  # complete or absent: an interrupt never leaves half a result

    @classmethod
    def load(cls, path: Path) -> TokenStats:
        with np.load(path) as d:
            return cls(*(d[f.name] for f in fields(cls)))


def token_stats(
    base_logits: np.ndarray, q_logits: np.ndarray, targets: np.ndarray, base_logprobs: np.ndarray | None = None
) -> TokenStats:
    """Compare two models' logits at the same positions; ``targets`` are the next tokens.

    ``base_logprobs`` (the reference's log-softmax) may be passed in when one
    reference is compared with several variants, so it is computed once.
    """
    if base_logits.shape != q_logits.shape:
        raise UserError(
            f"The reference and the variant have different vocabularies ({base_logits.shape[-1]} vs {q_logits.shape[-1]}); "
            "compare variants of the same model only."
        )
    lp_b = log_softmax(base_logits) if base_logprobs is None else base_logprobs
    lp_q = log_softmax(q_logits)
    rows = np.arange(len(targets))
    kld = (np.exp(lp_b) * (lp_b - lp_q)).sum(axis=-1, dtype=np.float64)
    return TokenStats(
        nll_base=-lp_b[rows, targets].astype(np.float64),
        nll_q=-lp_q[rows, targets].astype(np.float64),
        kld=np.maximum(kld, 0.0),  # exact KL is >= 0; tiny negatives are float rounding
        same_top=base_logits.argmax(-1) == q_logits.argmax(-1),
    )


# --------------------------------------------------------------------------- logits


# The KV-cache types llama.cpp's CPU back end can run with flash attention, by ggml_type id (ggml.h).
CACHE_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}


@dataclass(frozen=True)
class Scored:
    """A model as the evaluator runs it: the file, the label it is reported under, its KV-cache type.

    A plain :class:`ResolvedModel` is scored under its own label with the default f16 cache; the
    same file with a quantized cache is another ``Scored`` (e.g. to measure what a q8_0 cache costs).
    """

    model: ResolvedModel
    label: str
    cache_type: str = "f16"

    def __post_init__(self) -> None:
        if self.cache_type not in CACHE_TYPES:
            raise UserError(f"Unknown KV-cache type {self.cache_type!r}; use one of {', '.join(CACHE_TYPES)}.")

    @classmethod
    def of(cls, m: ResolvedModel | Scored) -> Scored:
        return m if isinstance(m, Scored) else cls(m, m.display)

    @property
    def identity(self) -> tuple[str, str]:
        return self.model.sha256, self.cache_type


class LogitsModel:
    """A model loaded through the binding of the local build, returning logits.

    Uses the binding's low-level API: one decode per sequence, asking for logits only
    at the positions that are scored (as llama-perplexity does), copied once.
    """

    def __init__(
        self, model: ResolvedModel, n_ctx: int, threads: int, build: BuildInfo | None = None, cache_type: str = "f16"
    ) -> None:
        use_build_for_binding(build)
        import llama_cpp
        from llama_cpp import Llama

        self._lc = llama_cpp
        self.model = model
        self.n_ctx = n_ctx
        cache = {} if cache_type == "f16" else {"type_k": CACHE_TYPES[cache_type], "type_v": CACHE_TYPES[cache_type]}
        self.llm = Llama(
            model_path=str(model.path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=min(n_ctx, 512),
            n_threads=threads,
            n_threads_batch=threads,
            flash_attn=True,  # as llama-perplexity's "auto" picks on CPU; same numbers, faster
            verbose=False,
            **cache,  # a quantized V cache needs flash attention, which is on
        )
        vocab = self.llm._model.vocab
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self.bos = int(llama_cpp.llama_vocab_bos(vocab))

    def tokenize(self, text: str) -> np.ndarray:
        return np.array(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False), dtype=np.int32)

    def logits(self, tokens: Sequence[int], first: int = 0, last: int | None = None) -> np.ndarray:
        """Logits at positions ``first``..``last - 1`` of ``tokens``, decoded as a fresh sequence."""
        n = len(tokens)
        last = n if last is None else last
        if n > self.n_ctx:
            raise UserError(f"{n} tokens do not fit the context of {self.n_ctx}; raise n_ctx.")
        lc, ctx, batch = self._lc, self.llm._ctx.ctx, self.llm._batch.batch
        lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
        batch.n_tokens = n
        for i, t in enumerate(tokens):
            batch.token[i] = int(t)
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = first <= i < last
        if lc.llama_decode(ctx, batch) != 0:
            raise UserError(f"llama_decode failed on {self.model.path.name} for a sequence of {n} tokens.")
        rows = last - first
        out = np.ctypeslib.as_array(lc.llama_get_logits(ctx), shape=(rows * self.n_vocab,))
        return out.reshape(rows, self.n_vocab).copy()

    def close(self) -> None:
        self.llm.close()


# --------------------------------------------------------------------------- per prompt


@dataclass
class PromptEvaluation:
    """Results of :func:`evaluate_prompts`: per variant label, the per-prompt statistics."""

    per_prompt: dict[str, list[TokenStats]]
    seconds: dict[str, float] = field(default_factory=dict)
    computed: dict[str, int] = field(default_factory=dict)  # prompts computed now (not from cache)
    n_ctx: int = 0

    def summary(self, label: str) -> dict:
        return metrics.summarize(self.per_prompt[label])


def evaluate_prompts(
    reference: ResolvedModel,
    variants: Iterable[ResolvedModel | Scored],
    prompts: Sequence[str],
    threads: int,
    build: BuildInfo | None = None,
    progress_bars: bool = True,
) -> PromptEvaluation:
    """Score every prompt under the reference (f16 cache) and each variant, in lockstep.

    For each prompt the reference's logits are computed once and compared with
    each variant's while both are in memory. Each (variant, prompt) result is
    cached by content (model hashes, cache type, prompt text, build, the evaluator's
    code), so an interrupted run resumes and a new variant costs only its own passes
    plus the reference passes it needs.
    """
    build = build or current_build()
    scored = [Scored.of(v) for v in variants]
    if not prompts:
        raise UserError("There are no prompts to evaluate; build the corpus first (python -m localllms prompts).")
    labels = [v.label for v in scored]
    if len(set(labels)) != len(labels):
        raise UserError(f"Two variants share a label ({', '.join(labels)}); give each its own.")
    store = cache_dir("eval", "prompts")
    loaded: dict[tuple[str, str], LogitsModel] = {}
    ref = Scored.of(reference)

    def model_for(v: Scored, n_ctx: int) -> LogitsModel:
        lm = loaded.get(v.identity)
        if lm is None or lm.n_ctx < n_ctx:
            if lm is not None:
                lm.close()
            lm = loaded[v.identity] = LogitsModel(v.model, n_ctx, threads, build, v.cache_type)
        return lm

    # Tokenise once with the reference (variants share its vocabulary) to size the context.
    tok = model_for(ref, 512)
    token_lists = [tok.tokenize(p) for p in prompts]
    n_ctx = max(512, int(2 ** np.ceil(np.log2(max(len(t) for t in token_lists)))))
    if n_ctx > reference.info.context_length > 0:
        raise UserError(
            f"A prompt has more tokens than the model's context ({reference.info.context_length}); lower MAX_PROMPT_LENGTH."
        )

    result = PromptEvaluation(
        {lab: [] for lab in labels}, {lab: 0.0 for lab in labels}, {lab: 0 for lab in labels}, n_ctx
    )
    code = code_key("evaluate")  # a change to this module recomputes every pass
    keys = {
        v.label: [content_key(code, build.key, n_ctx, reference.sha256, *v.identity, p) for p in prompts]
        for v in scored
    }
    bar = progress.Bar(len(prompts) * len(scored), "evaluate", "pass", progress_bars)
    try:
        for i, tokens in enumerate(token_lists):
            targets = tokens[1:]
            base_logits = base_lp = None
            for v in scored:
                path = store / f"{keys[v.label][i]}.npz"
                if path.exists():
                    result.per_prompt[v.label].append(TokenStats.load(path))
                    bar.update()
                    continue
                if base_logits is None:
                    base_logits = model_for(ref, n_ctx).logits(tokens, 0, len(tokens) - 1)
                    base_lp = log_softmax(base_logits)
                started = time.perf_counter()
                if v.identity == ref.identity:
                    q_logits = base_logits
                else:
                    q_logits = model_for(v, n_ctx).logits(tokens, 0, len(tokens) - 1)
                stats = token_stats(base_logits, q_logits, targets, base_lp)
                result.seconds[v.label] += time.perf_counter() - started
                result.computed[v.label] += 1
                stats.save(path)
                result.per_prompt[v.label].append(stats)
                bar.update()
    finally:
        bar.close()
        for lm in loaded.values():
            lm.close()
    return result


# --------------------------------------------------------------------------- llama-perplexity's way


def windows(tokens: np.ndarray, n_ctx: int, bos: int | None) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """llama-perplexity's chunking: whole chunks of n_ctx tokens, BOS first, second half scored.

    Returns, per chunk, the tokens to evaluate, the target tokens and the first scored
    logit row.
    """
    first = n_ctx // 2
    out = []
    for c in range(len(tokens) // n_ctx):
        chunk = tokens[c * n_ctx : (c + 1) * n_ctx].copy()
        targets = chunk[first + 1 :].copy()
        if bos is not None:
            chunk[0] = bos
        out.append((chunk, targets, first))
    return out


def evaluate_windows(
    reference: ResolvedModel,
    variant: ResolvedModel,
    text: str,
    n_ctx: int,
    threads: int,
    build: BuildInfo | None = None,
    max_chunks: int | None = None,
) -> tuple[TokenStats, float]:
    """Score ``text`` in llama-perplexity's chunks; return the statistics and the seconds spent."""
    base = LogitsModel(reference, n_ctx, threads, build)
    var = base if variant.sha256 == reference.sha256 else LogitsModel(variant, n_ctx, threads, build)
    try:
        tokens = base.tokenize(text)
        chunks = windows(tokens, n_ctx, base.bos if base.add_bos else None)[:max_chunks]
        if not chunks:
            raise UserError(f"The text has {len(tokens)} tokens, fewer than one context of {n_ctx}; use more prompts.")
        parts = []
        started = time.perf_counter()
        for chunk, targets, first in chunks:
            b = base.logits(chunk, first, n_ctx - 1)
            q = b if var is base else var.logits(chunk, first, n_ctx - 1)
            parts.append(token_stats(b, q, targets))
        seconds = time.perf_counter() - started
    finally:
        base.close()
        if var is not base:
            var.close()
    return TokenStats.concat(parts), seconds
