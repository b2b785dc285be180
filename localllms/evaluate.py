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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from . import defaults, metrics, progress
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


# Rows are independent, and numpy releases the GIL: split them over the cores while no decode runs.
_POOL = ThreadPoolExecutor(max_workers=defaults.threads())


def _by_rows(fn, *arrays: np.ndarray) -> list:
    n = len(arrays[0])
    parts = min(_POOL._max_workers, max(1, n // 32))
    bounds = np.linspace(0, n, parts + 1).astype(int)
    slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return list(_POOL.map(lambda sl: fn(*(a[sl] for a in arrays)), slices))


# llama-perplexity's 16-bit storage moves a reference log-probability by at most half a step,
# 16 / 65535 / 2 = 1.2e-4; a larger move is the floor 16 below the top logit.
FLOOR_SHIFT = 2.5e-4


@dataclass
class Reference:
    """The reference's side of the comparison at the scored positions, computed once and
    compared with every variant: its log-probabilities ``lp``, probabilities ``p`` (zero where a
    position's sum leaves them out), ``negent`` = sum p * lp and ``mass`` = sum p per row, and
    its top token.

    Written so that a variant costs five passes over its logits: with ``z = q - max(q)`` and
    ``lse = log sum exp z``, KL(base || Q) = negent - (sum p * z - lse * mass).
    """

    lp: np.ndarray
    p: np.ndarray
    negent: np.ndarray
    mass: np.ndarray
    top: np.ndarray

    @classmethod
    def exact(cls, logits: np.ndarray) -> Reference:
        def side(x: np.ndarray) -> tuple:
            top = x.argmax(-1)
            z = x - x[np.arange(len(x)), top][:, None]
            e = np.exp(z)
            s = e.sum(-1, dtype=np.float64)
            lp = z - np.log(s).astype(np.float32)[:, None]
            p = e / s.astype(np.float32)[:, None]
            return lp, p, (p * lp).sum(-1, dtype=np.float64), p.sum(-1, dtype=np.float64), top

        return cls(*(np.concatenate(a) for a in zip(*_by_rows(side, logits), strict=True)))

    @classmethod
    def as_llama_perplexity_stores_it(cls, logits: np.ndarray) -> Reference:
        """The reference as ``llama-perplexity --kl-divergence-base`` keeps it (tools/perplexity):
        per row, logits below max - 16 are raised to max - 16, the rest rounded to 16 bits between
        that floor and the max; probabilities below e^-16 are then left out of the KL sum. Used
        to show, and remove, the one cause of difference between our numbers and the tool's."""

        def side(x: np.ndarray) -> tuple:
            mx = x.max(-1)
            lo = np.maximum(x.min(-1), mx - 16)
            e = np.exp(x - mx[:, None])
            lse = np.log(e.sum(-1, dtype=np.float64)).astype(np.float32)
            scale = ((mx - lo) / np.float32(65535)).astype(np.float32)
            inv = np.where(scale > 0, 1 / np.where(scale > 0, scale, 1), 0).astype(np.float32)
            q16 = np.where(x > lo[:, None], np.rint(inv[:, None] * (x - lo[:, None])), 0).astype(np.float32)
            lp = scale[:, None] * q16 + (lo - mx - lse)[:, None]
            kept = lp > -16
            p = np.where(kept, np.exp(lp), 0).astype(np.float32)
            return lp, p, (p * lp).sum(-1, dtype=np.float64), p.sum(-1, dtype=np.float64), lp.argmax(-1)

        return cls(*(np.concatenate(a) for a in zip(*_by_rows(side, logits), strict=True)))

    def itself(self, targets: np.ndarray) -> TokenStats:
        """The reference compared with itself: no divergence, by definition rather than by rounding."""
        nll = -self.lp[np.arange(len(targets)), targets].astype(np.float64)
        return TokenStats(nll, nll.copy(), np.zeros(len(targets)), np.ones(len(targets), dtype=bool))


def token_stats(base: np.ndarray | Reference, q_logits: np.ndarray, targets: np.ndarray) -> TokenStats:
    """Compare the reference with a variant at the same positions; ``targets`` are the next tokens.

    ``base`` is the reference's logits, or its :class:`Reference` side when one reference is
    compared with several variants, so that side is computed once.
    """
    ref = base if isinstance(base, Reference) else Reference.exact(base)
    if base is q_logits:
        return ref.itself(targets)
    if ref.lp.shape != q_logits.shape:
        raise UserError(
            f"The reference and the variant have different vocabularies ({ref.lp.shape[-1]} vs {q_logits.shape[-1]}); "
            "compare variants of the same model only."
        )

    def side(q: np.ndarray, p: np.ndarray, negent: np.ndarray, mass: np.ndarray, t: np.ndarray) -> tuple:
        rows = np.arange(len(q))
        top = q.argmax(-1)
        z = q - q[rows, top][:, None]
        lse = np.log(np.exp(z).sum(-1, dtype=np.float64))
        kld = negent - ((p * z).sum(-1, dtype=np.float64) - lse * mass)
        return lse - z[rows, t], kld, top

    parts = _by_rows(side, q_logits, ref.p, ref.negent, ref.mass, targets)
    nll_q, kld, top = (np.concatenate(a) for a in zip(*parts, strict=True))
    rows = np.arange(len(targets))
    return TokenStats(
        nll_base=-ref.lp[rows, targets].astype(np.float64),
        nll_q=nll_q,
        kld=np.maximum(kld, 0.0),  # exact KL is >= 0; tiny negatives are float rounding
        same_top=ref.top == top,
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
        # numpy views of the batch's arrays: every sequence is sequence 0, so only tokens,
        # positions and the logits flags change from one call to the next
        batch = self.llm._batch.batch
        self._token = np.ctypeslib.as_array(batch.token, shape=(n_ctx,))
        self._pos = np.ctypeslib.as_array(batch.pos, shape=(n_ctx,))
        self._want = np.ctypeslib.as_array(batch.logits, shape=(n_ctx,))
        np.ctypeslib.as_array(batch.n_seq_id, shape=(n_ctx,))[:] = 1
        for i in range(n_ctx):
            batch.seq_id[i][0] = 0
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
        self._token[:n] = tokens
        self._pos[:n] = np.arange(n)
        self._want[:n] = 0
        self._want[first:last] = 1
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
            base_logits = base_side = None
            for v in scored:
                path = store / f"{keys[v.label][i]}.npz"
                if path.exists():
                    result.per_prompt[v.label].append(TokenStats.load(path))
                    bar.update()
                    continue
                if base_logits is None:
                    base_logits = model_for(ref, n_ctx).logits(tokens, 0, len(tokens) - 1)
                    base_side = Reference.exact(base_logits)
                started = time.perf_counter()
                if v.identity == ref.identity:
                    stats = base_side.itself(targets)
                else:
                    stats = token_stats(base_side, model_for(v, n_ctx).logits(tokens, 0, len(tokens) - 1), targets)
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


@dataclass
class WindowEvaluation:
    """A text scored in llama-perplexity's chunks: our exact statistics, the same with the
    reference stored as the tool stores it, and the seconds our evaluator took."""

    exact: TokenStats
    as_tool: TokenStats
    seconds: float


def evaluate_windows(
    reference: ResolvedModel,
    variant: ResolvedModel,
    text: str,
    n_ctx: int,
    threads: int,
    build: BuildInfo | None = None,
    max_chunks: int | None = None,
) -> WindowEvaluation:
    """Score ``text`` in llama-perplexity's chunks, exactly and with the tool's 16-bit reference."""
    base = LogitsModel(reference, n_ctx, threads, build)
    var = base if variant.sha256 == reference.sha256 else LogitsModel(variant, n_ctx, threads, build)
    try:
        tokens = base.tokenize(text)
        chunks = windows(tokens, n_ctx, base.bos if base.add_bos else None)[:max_chunks]
        if not chunks:
            raise UserError(f"The text has {len(tokens)} tokens, fewer than one context of {n_ctx}; use more prompts.")
        exact, as_tool = [], []
        seconds = 0.0
        for chunk, targets, first in chunks:
            started = time.perf_counter()
            b = base.logits(chunk, first, n_ctx - 1)
            q = b if var is base else var.logits(chunk, first, n_ctx - 1)
            exact.append(token_stats(b, q, targets))
            seconds += time.perf_counter() - started  # the emulation below is the cross-check's, not the evaluator's
            as_tool.append(token_stats(Reference.as_llama_perplexity_stores_it(b), q, targets))
    finally:
        base.close()
        if var is not base:
            var.close()
    return WindowEvaluation(TokenStats.concat(exact), TokenStats.concat(as_tool), seconds)
