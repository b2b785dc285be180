"""Our evaluator: the reference's and each variant's logits, compared token by token.

The logits of the reference and of each variant are computed through the Python
binding of the local build and compared while they are in memory: per scored
position we keep a :class:`~localllms.metrics.TokenStats` record (the two negative
log-likelihoods of the next token, the KL divergence and whether both models rank
the same top token). No tokens x vocabulary file of base logits is ever written
(llama-perplexity's ``--kl-divergence-base`` file holds about 2 bytes x vocabulary
per token). The metrics computed from these records are declared in ``metrics.py``.

Prompts share a decode (one KV stream each, up to 512 tokens in all) wherever that
leaves every logit bit for bit as it is when the prompt is decoded alone; which
prompts may is decided by what the CPU kernels do with a batch (:func:`packing`,
:func:`plan`). The statistics are computed on the logits where llama.cpp leaves
them, a slice of rows at a time (every pass over a slice stays in the core's cache),
split over the threads.

``evaluate_windows`` scores a text the way llama-perplexity does (chunks of
``n_ctx`` tokens, BOS first, only the second half of each chunk scored) so the two
can be compared on the same tokens (``study/crosscheck.py`` runs the tool itself).
"""

from __future__ import annotations

import inspect
import platform
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import metrics, progress
from .build import BuildInfo, current_build, llama_log_path, use_build_for_binding
from .errors import UserError
from .metrics import TokenStats
from .models import ResolvedModel
from .paths import cache_dir, code_key, content_key

# --------------------------------------------------------------------------- per-token records


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32, stable against large logits."""
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True, dtype=np.float64)).astype(np.float32)


# Rows of logits are worked on in slices of about 1 MiB, so that the passes over a slice (max,
# exp, sums) read it from the core's cache rather than from memory; the slices go to the threads
# of the run's pool (numpy releases the GIL). Each row's numbers do not depend on the slicing.
_SLICE_BYTES = 1 << 20
_scratch = threading.local()


def _buffer(name: str, rows: int, cols: int) -> np.ndarray:
    """A float32 scratch array of the calling thread, reused from one slice to the next."""
    buf = getattr(_scratch, name, None)
    if buf is None or buf.size < rows * cols:
        buf = np.empty(rows * cols, np.float32)
        setattr(_scratch, name, buf)
    return buf[: rows * cols].reshape(rows, cols)


def _pool(threads: int) -> AbstractContextManager[Executor | None]:
    """The run's threads for the statistics: ``threads`` resolved where the run starts, passed down."""
    return ThreadPoolExecutor(max_workers=threads) if threads > 1 else nullcontext()


def _by_rows(fn: Callable[[slice], None], n_rows: int, n_cols: int, pool: Executor | None) -> None:
    """Call ``fn`` on consecutive slices of ``n_rows`` rows, on ``pool``'s threads when given."""
    step = max(1, _SLICE_BYTES // (4 * max(n_cols, 1)))
    slices = [slice(a, min(a + step, n_rows)) for a in range(0, n_rows, step)]
    if pool is None or len(slices) < 2:
        for sl in slices:
            fn(sl)
    else:
        for _ in pool.map(fn, slices):  # consumed, so that an error in a slice is raised here
            pass


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
    def _empty(cls, n: int, v: int) -> Reference:
        f32 = np.float32
        return cls(np.empty((n, v), f32), np.empty((n, v), f32), np.empty(n), np.empty(n), np.empty(n, np.intp))

    @classmethod
    def exact(cls, logits: np.ndarray, pool: Executor | None = None) -> Reference:
        logits = np.asarray(logits, dtype=np.float32)
        ref = cls._empty(*logits.shape)

        def side(sl: slice) -> None:
            x, lp, p = logits[sl], ref.lp[sl], ref.p[sl]
            top = x.argmax(-1)
            np.subtract(x, x[np.arange(len(x)), top][:, None], out=lp)  # z = x - max x
            np.exp(lp, out=p)
            s = p.sum(-1, dtype=np.float64)
            np.divide(p, s.astype(np.float32)[:, None], out=p)  # p = e^z / s
            np.subtract(lp, np.log(s).astype(np.float32)[:, None], out=lp)  # lp = z - log s
            ref.negent[sl] = np.multiply(p, lp, out=_buffer("a", *x.shape)).sum(-1, dtype=np.float64)
            ref.mass[sl] = p.sum(-1, dtype=np.float64)
            ref.top[sl] = top

        _by_rows(side, *logits.shape, pool)
        return ref

    @classmethod
    def as_llama_perplexity_stores_it(cls, logits: np.ndarray, pool: Executor | None = None) -> Reference:
        """The reference as ``llama-perplexity --kl-divergence-base`` keeps it (tools/perplexity):
        per row, logits below max - 16 are raised to max - 16, the rest rounded to 16 bits between
        that floor and the max; probabilities below e^-16 are then left out of the KL sum. Used
        to show, and remove, the one cause of difference between our numbers and the tool's."""
        logits = np.asarray(logits, dtype=np.float32)
        ref = cls._empty(*logits.shape)

        def side(sl: slice) -> None:
            x = logits[sl]
            mx = x.max(-1)
            lo = np.maximum(x.min(-1), mx - 16)
            e = np.exp(x - mx[:, None])
            lse = np.log(e.sum(-1, dtype=np.float64)).astype(np.float32)
            scale = ((mx - lo) / np.float32(65535)).astype(np.float32)
            inv = np.where(scale > 0, 1 / np.where(scale > 0, scale, 1), 0).astype(np.float32)
            q16 = np.where(x > lo[:, None], np.rint(inv[:, None] * (x - lo[:, None])), 0).astype(np.float32)
            lp = ref.lp[sl]
            lp[:] = scale[:, None] * q16 + (lo - mx - lse)[:, None]
            p = ref.p[sl]
            p[:] = np.where(lp > -16, np.exp(lp), 0)
            ref.negent[sl] = (p * lp).sum(-1, dtype=np.float64)
            ref.mass[sl] = p.sum(-1, dtype=np.float64)
            ref.top[sl] = lp.argmax(-1)

        _by_rows(side, *logits.shape, pool)
        return ref

    def itself(self, targets: np.ndarray) -> TokenStats:
        """The reference compared with itself: no divergence, by definition rather than by rounding."""
        nll = -self.lp[np.arange(len(targets)), targets].astype(np.float64)
        return TokenStats(nll, nll.copy(), np.zeros(len(targets)), np.ones(len(targets), dtype=bool))


def token_stats(
    base: np.ndarray | Reference, q_logits: np.ndarray, targets: np.ndarray, pool: Executor | None = None
) -> TokenStats:
    """Compare the reference with a variant at the same positions; ``targets`` are the next tokens.

    ``base`` is the reference's logits, or its :class:`Reference` side when one reference is
    compared with several variants, so that side is computed once. ``pool`` spreads the rows
    over its threads (the caller's, sized by the run's thread count); without one, this thread.
    """
    ref = base if isinstance(base, Reference) else Reference.exact(base, pool)
    if base is q_logits:
        return ref.itself(targets)
    q_logits = np.asarray(q_logits, dtype=np.float32)
    if ref.lp.shape != q_logits.shape:
        raise UserError(
            f"The reference and the variant have different vocabularies ({ref.lp.shape[-1]} vs {q_logits.shape[-1]}); "
            "compare variants of the same model only."
        )
    n = len(q_logits)
    nll_q, kld, top = np.empty(n), np.empty(n), np.empty(n, np.intp)

    def side(sl: slice) -> None:
        q = q_logits[sl]
        rows = np.arange(len(q))
        t = q.argmax(-1)
        z = np.subtract(q, q[rows, t][:, None], out=_buffer("a", *q.shape))
        e = np.exp(z, out=_buffer("b", *q.shape))
        lse = np.log(e.sum(-1, dtype=np.float64))
        pz = np.multiply(ref.p[sl], z, out=e).sum(-1, dtype=np.float64)
        kld[sl] = ref.negent[sl] - (pz - lse * ref.mass[sl])
        nll_q[sl] = lse - z[rows, targets[sl]]
        top[sl] = t

    _by_rows(side, *q_logits.shape, pool)
    rows = np.arange(n)
    return TokenStats(
        nll_base=-ref.lp[rows, targets].astype(np.float64),
        nll_q=nll_q,
        kld=np.maximum(kld, 0.0),  # exact KL is >= 0; tiny negatives are float rounding
        same_top=ref.top == top,
    )


# --------------------------------------------------------------------------- which prompts share a decode
#
# A prompt decoded beside others (each in its own KV stream, kv_unified off) gets the logits it gets
# alone, bit for bit, when the CPU back end computes each of its rows as it does alone. Read from the
# vendored ggml-cpu source (ops.cpp, repack.cpp, tiled/, llamafile/sgemm.cpp) and checked on every
# type of the book (tests/test_evaluate.py):
#
# * attention: a stream's cells start at 0, as when alone, so flash attention groups its keys in the
#   same 64-cell tiles. The tiled kernel runs when a stream has 64 queries or more (GGML_FA_TILE_Q),
#   the one-row kernel below that, and they round differently: a prompt of fewer than 64 tokens only
#   shares a decode with prompts of fewer than 64 tokens, all padded to fewer than 64.
# * matrix products: tinyBLAS (2 rows or more), the tiled K-quant kernel (8 rows or more) and ggml's dot
#   product compute each row alone. The repacked kernels (and AMX) take the rows four at a time from
#   the first (GEMM) and the last rows % 4 one by one (GEMV), which round differently; the last layer
#   and the output see only the rows whose logits are asked for. Alone, a prompt of n tokens asks for
#   n - 1 rows: all of them go through the GEMM in every layer when n % 4 == 1, and only then. So a
#   model with a repacked type shares decodes only between prompts of 4k + 1 tokens, each decoded for
#   a multiple of 4 tokens (its first 4k, then padding).
# * padding comes after a prompt's tokens, in its own stream: causal attention hides it from them.
#
# Elsewhere (not x86, whose repacked layouts are not read here), every prompt is decoded alone.

FA_TILE = 64  # GGML_FA_TILE_Q in ggml-cpu/common.h (checked against the source by `packing`)
MIN_ROWS = 8  # the tiled K-quant kernel's smallest batch (ggml_tiled_min_batch); tinyBLAS needs 2
SHARE_ANY, SHARE_4K1, SHARE_NONE = "any", "4k+1", "none"


def _compiled_source(build: BuildInfo) -> Path | None:
    """The llama.cpp tree this build was compiled from, as CMake recorded it beside the binaries
    (an absolute path, so it holds whatever cache directory the process is pointed at)."""
    try:
        text = (Path(build.bin_dir).parent / "CMakeCache.txt").read_text()
    except OSError:
        return None
    found = re.search(r"^CMAKE_HOME_DIRECTORY:INTERNAL=(.+)$", text, re.M)
    return Path(found.group(1)) if found and Path(found.group(1)).is_dir() else None


_GROUPED: dict[str, frozenset[str] | None] = {}


def _grouped_types(build: BuildInfo) -> frozenset[str] | None:
    """The weight types whose matrix products take rows four at a time in this build (repacked or
    AMX), read from its source once per process; None when the source is not there or its
    attention tiling is not the one the rules above were read from."""
    from . import kernels

    if build.key not in _GROUPED:
        source = _compiled_source(build)
        common = source / "ggml" / "src" / "ggml-cpu" / "common.h" if source else None
        found = re.search(r"#define\s+GGML_FA_TILE_Q\s+(\d+)", common.read_text()) if common else None
        if found and int(found.group(1)) == FA_TILE:
            paths = kernels.matmul_paths(source, build.cpu_features, build.compiled or None)
            _GROUPED[build.key] = frozenset(paths.repack) | frozenset(paths.amx)
        else:
            _GROUPED[build.key] = None
    return _GROUPED[build.key]


def packing(path: Path, build: BuildInfo) -> str:
    """Which prompts this model file decodes beside others, bit for bit as alone (see above):
    ``"any"``, ``"4k+1"`` (prompts of 4k + 1 tokens: the file has a type the CPU back end takes
    four rows at a time) or ``"none"`` (not x86, or the build's source not found)."""
    from . import gguf_file

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return SHARE_NONE
    grouped = _grouped_types(build)
    if grouped is None:
        return SHARE_NONE
    types = {t.type for t in gguf_file.read(path).tensors if len(t.shape) >= 2}
    return SHARE_4K1 if types & grouped else SHARE_ANY


def shares(mode: str, n: int) -> bool:
    """Whether a prompt of ``n`` tokens may share a decode under ``mode`` (:func:`packing`)."""
    if mode == SHARE_NONE or n - 1 < MIN_ROWS:
        return False
    return mode == SHARE_ANY or n % 4 == 1


def stream_length(lengths: Sequence[int]) -> int:
    """Tokens each prompt is decoded for when these share a decode: the longest's scored positions,
    and at least FA_TILE when they are that long (so each stream runs the kernel it runs alone)."""
    return max(max(n - 1 for n in lengths), FA_TILE if min(lengths) >= FA_TILE else 0)


def plan(lengths: Sequence[int], tokens: int, seqs: int, rows: int, by_four: bool = True) -> list[list[int]]:
    """The prompts (indices into ``lengths``) in windows of one kind (fewer than FA_TILE tokens
    or not; with ``by_four``, 4k + 1 tokens or not) and similar lengths: at most ``seqs`` prompts,
    ``tokens`` tokens once padded and ``rows`` scored rows. Each model decodes a window in one
    decode, or its prompts one by one, as :func:`shares` says; the reference's side of a window is
    kept while the variants run (``rows`` bounds its memory). ``by_four`` when a model of the run
    shares only prompts of 4k + 1 tokens; without it, windows mix them and pad less."""
    kind = [(n >= FA_TILE, by_four and n % 4 == 1) for n in lengths]
    out: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: (kind[i], lengths[i], i)):
        cur = out[-1] if out else None
        grown = [lengths[j] for j in cur] + [lengths[i]] if cur else []
        if (
            cur
            and shares(SHARE_ANY, lengths[i])
            and shares(SHARE_ANY, lengths[cur[0]])
            and kind[cur[0]] == kind[i]
            and len(grown) <= seqs
            and len(grown) * stream_length(grown) <= tokens
            and sum(n - 1 for n in grown) <= rows
        ):
            cur.append(i)
        else:
            out.append([i])
    return out


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


class _Tokenizer:
    """The tokenizer side of ``llama_cpp.Llama`` (``tokenize``, ``detokenize``), on a loaded model."""

    def __init__(self, model) -> None:  # a llama_cpp._internals.LlamaModel, as Llama holds one
        self._model = model

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        return self._model.tokenize(text, add_bos, special)

    def detokenize(self, tokens: list[int], prev_tokens: list[int] | None = None, special: bool = False) -> bytes:
        return self._model.detokenize(tokens, special=special)


def _load(path: Path, vocab_only: bool = False):
    """The model as ``llama_cpp.Llama`` loads it (CPU only, memory-mapped)."""
    import llama_cpp
    from llama_cpp import _internals

    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0
    params.vocab_only = vocab_only
    try:
        return _internals.LlamaModel(path_model=str(path), params=params, verbose=False)
    except ValueError as e:
        raise UserError(f"llama.cpp could not load {path.name} ({e}); its log: {llama_log_path()}.") from None


def tokenize(
    model: ResolvedModel, texts: Sequence[str], build: BuildInfo | None = None
) -> tuple[list[np.ndarray], int]:
    """Each text's tokens (BOS first where the model adds one) and the vocabulary size, from the
    model's vocabulary alone (no weights are loaded)."""
    use_build_for_binding(build)
    import llama_cpp

    vocab_model = _load(model.path, vocab_only=True)
    try:
        tok = _Tokenizer(vocab_model)
        lists = [np.array(tok.tokenize(t.encode("utf-8")), dtype=np.int32) for t in texts]
        return lists, int(llama_cpp.llama_vocab_n_tokens(vocab_model.vocab))
    finally:
        vocab_model.close()


class LogitsModel:
    """A model loaded through the binding of the local build, returning logits.

    Uses the binding's low-level API: a context with ``n_seq`` KV streams (one per prompt of a
    shared decode), a batch filled through numpy views, logits asked for only at the positions
    that are scored (as llama-perplexity does). ``n_ctx`` is each stream's context; ``n_batch``
    (default ``n_ctx``) the most tokens one decode takes, in micro-batches of at most 512.
    ``llm`` keeps the tokenizer side of ``llama_cpp.Llama`` for callers that use it.
    """

    def __init__(
        self,
        model: ResolvedModel,
        n_ctx: int,
        threads: int,
        build: BuildInfo | None = None,
        cache_type: str = "f16",
        n_seq: int = 1,
        n_batch: int | None = None,
    ) -> None:
        from .models import check_not_synthetic  # reads only the GGUF header

        check_not_synthetic(model.path)  # quality is never computed on synthetic weights
        build = use_build_for_binding(build)
        import llama_cpp
        from llama_cpp import _internals

        self._lc = llama_cpp
        self.model = model
        self.n_ctx, self.n_seq = n_ctx, n_seq
        n_batch = n_batch or n_ctx
        self.n_ubatch = min(n_batch, 512)
        self._model = _load(model.path)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx * n_seq  # split into n_seq streams of n_ctx cells (kv_unified is off)
        params.n_batch, params.n_ubatch, params.n_seq_max = n_batch, self.n_ubatch, n_seq
        params.n_threads = params.n_threads_batch = threads
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED  # as llama-perplexity's "auto" on CPU
        if cache_type != "f16":  # a quantized V cache needs flash attention, which is on
            params.type_k = params.type_v = CACHE_TYPES[cache_type]
        try:
            self._ctx = _internals.LlamaContext(model=self._model, params=params, verbose=False)
        except ValueError:
            self._model.close()
            raise UserError(
                f"llama.cpp could not make a context for {model.path.name}; its log: {llama_log_path()}."
            ) from None
        self._batch = _internals.LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=1, verbose=False)
        self.llm = _Tokenizer(self._model)
        vocab = self._model.vocab
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self.bos = int(llama_cpp.llama_vocab_bos(vocab))
        self.sharing = packing(model.path, build) if n_seq > 1 else SHARE_NONE
        # numpy views of the batch's arrays; a token's sequence id is written only when it changes
        batch = self._batch.batch
        self._n_batch = n_batch
        self._token = np.ctypeslib.as_array(batch.token, shape=(n_batch,))
        self._pos = np.ctypeslib.as_array(batch.pos, shape=(n_batch,))
        self._want = np.ctypeslib.as_array(batch.logits, shape=(n_batch,))
        np.ctypeslib.as_array(batch.n_seq_id, shape=(n_batch,))[:] = 1
        self._seq = np.zeros(n_batch, np.int32)
        for i in range(n_batch):
            batch.seq_id[i][0] = 0

    def tokenize(self, text: str) -> np.ndarray:
        return np.array(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False), dtype=np.int32)

    def _set_seq(self, seq: np.ndarray) -> None:
        batch = self._batch.batch
        for i in np.flatnonzero(self._seq[: len(seq)] != seq):
            batch.seq_id[i][0] = int(seq[i])
        self._seq[: len(seq)] = seq

    def _decode(self, n_tokens: int, n_rows: int, what: str) -> np.ndarray:
        lc, ctx = self._lc, self._ctx.ctx
        lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
        self._batch.batch.n_tokens = n_tokens
        if lc.llama_decode(ctx, self._batch.batch) != 0:
            raise UserError(f"llama_decode failed on {self.model.path.name} for {what}; its log: {llama_log_path()}.")
        out = np.ctypeslib.as_array(lc.llama_get_logits(ctx), shape=(n_rows * self.n_vocab,))
        return out.reshape(n_rows, self.n_vocab)

    def logits_view(self, tokens: Sequence[int], first: int = 0, last: int | None = None) -> np.ndarray:
        """Logits at positions ``first``..``last - 1`` of ``tokens``, decoded as a fresh sequence:
        a view of llama.cpp's buffer, valid until this model decodes again."""
        n = len(tokens)
        last = n if last is None else last
        if n > min(self.n_ctx, self._n_batch):
            raise UserError(f"{n} tokens do not fit the context of {self.n_ctx}; raise n_ctx.")
        self._token[:n] = tokens
        self._pos[:n] = np.arange(n)
        self._set_seq(np.zeros(n, np.int32))
        self._want[:n] = 0
        self._want[first:last] = 1
        return self._decode(n, last - first, f"a sequence of {n} tokens")

    def logits(self, tokens: Sequence[int], first: int = 0, last: int | None = None) -> np.ndarray:
        """As :meth:`logits_view`, copied (the caller may keep it)."""
        return self.logits_view(tokens, first, last).copy()

    def logits_shared(self, token_lists: Sequence[np.ndarray]) -> np.ndarray:
        """Several prompts in one decode, each in its own stream and decoded for
        :func:`stream_length` tokens (its own, then padding): the logits at all but each prompt's
        last position, prompt after prompt; a view, valid until this model decodes again. Only
        for prompts that :func:`shares` says may share (then every row is as alone)."""
        lengths = [len(t) for t in token_lists]
        width = stream_length(lengths)
        n = len(lengths) * width
        if len(lengths) > self.n_seq or n > self.n_ubatch or width > self.n_ctx:
            raise UserError(
                f"{len(lengths)} prompts of {width} tokens do not fit one decode of {self.model.path.name}."
            )
        for s, t in enumerate(token_lists):
            at = s * width
            k = min(len(t), width)
            self._token[at : at + k] = t[:k]
            self._token[at + k : at + width] = t[-1]  # padding: after the prompt, so it never sees it
            self._pos[at : at + width] = np.arange(width)
            self._want[at : at + width] = 0
            self._want[at : at + len(t) - 1] = 1
        self._set_seq(np.repeat(np.arange(len(lengths), dtype=np.int32), width))
        return self._decode(n, sum(lengths) - len(lengths), f"{len(lengths)} prompts of up to {width} tokens")

    def scored_rows(
        self, token_lists: Sequence[np.ndarray], members: Sequence[int]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """The logits at each listed prompt's scored positions (all but its last), as ``(index,
        rows)``: the prompts of one :func:`plan` window in one decode where this model may share
        it, else one by one. Each view is valid until the next is asked for."""
        together = len(members) > 1 and all(shares(self.sharing, len(token_lists[i])) for i in members)
        if together:
            rows = self.logits_shared([token_lists[i] for i in members])
            at = 0
            for i in members:
                k = len(token_lists[i]) - 1
                yield i, rows[at : at + k]
                at += k
        else:
            for i in members:
                tokens = token_lists[i]
                yield i, self.logits_view(tokens, 0, len(tokens) - 1)

    def close(self) -> None:
        self._batch.close()
        self._ctx.close()
        self._model.close()


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


MAX_SEQS = 16  # KV streams per context: the most prompts one decode takes
SIDE_BYTES = 1 << 29  # the reference's side of a window (lp and p, float32) kept while the variants run


def context_tokens(lengths: Sequence[int]) -> int:
    """The context every prompt is decoded in: the longest prompt's tokens, rounded up to a power of
    two and at least 512 (part of each record's key: the same prompt in another context is another
    decode)."""
    return max(512, int(2 ** np.ceil(np.log2(max(lengths)))))


def shares_by_four(paths: Iterable[Path], build: BuildInfo) -> bool:
    """Whether one of these files decodes beside others bit for bit only in prompts of 4k + 1
    tokens (``packing``): then every window keeps to one kind, else windows mix them."""
    return any(packing(path, build) == SHARE_4K1 for path in paths)


@dataclass(frozen=True)
class DecodeLayout:
    """How a set of prompts is decoded: the context, a stream's cells, and the windows (indices
    into the prompts' lengths), each decoded in one pass of every model."""

    n_ctx: int
    stream: int
    windows: list[list[int]]

    @property
    def n_seq(self) -> int:
        return max(len(w) for w in self.windows)


def decode_layout(lengths: Sequence[int], needed: Sequence[int], n_vocab: int, by_four: bool) -> DecodeLayout:
    """The decodes :func:`evaluate_prompts` makes for the prompts ``needed`` (indices into
    ``lengths``, the token counts of every prompt of the run). ``make bench`` times the same
    decodes with nothing computed on the logits, so both read this one layout."""
    max_rows = max(1, SIDE_BYTES // (8 * n_vocab))  # the reference's side of a window within SIDE_BYTES
    chosen = [lengths[i] for i in needed]
    windows = [[needed[j] for j in w] for w in plan(chosen, 512, MAX_SEQS, max_rows, by_four)]
    stream = -(-max(lengths) // 256) * 256  # a stream's cells: the longest prompt's, as llama.cpp pads them
    return DecodeLayout(context_tokens(lengths), stream, windows)


def cache_code() -> str:
    """The digest of the code that computes the cached records: this module and the record's class."""
    return content_key(code_key("evaluate"), inspect.getsource(TokenStats))


def evaluate_prompts(
    reference: ResolvedModel,
    variants: Iterable[ResolvedModel | Scored],
    prompts: Sequence[str],
    threads: int,
    build: BuildInfo | None = None,
    progress_bars: bool = True,
) -> PromptEvaluation:
    """Score every prompt under the reference (f16 cache) and each variant, in lockstep.

    The prompts go in windows (:func:`plan`); for each, the reference's logits are computed once
    and compared with each variant's while both are in memory. Each (variant, prompt) result is
    cached by content (model hashes, cache type, prompt text, build, the evaluator's code), so an
    interrupted run resumes and a new variant costs only its own passes plus the reference
    passes it needs. ``threads`` is the run's thread count, for llama.cpp and the statistics.
    """
    build = build or current_build()
    scored = [Scored.of(v) for v in variants]
    if not prompts:
        raise UserError("There are no prompts to evaluate; build the corpus first (python -m localllms prompts).")
    labels = [v.label for v in scored]
    if len(set(labels)) != len(labels):
        raise UserError(f"Two variants share a label ({', '.join(labels)}); give each its own.")
    ref = Scored.of(reference)

    # Tokenise once with the reference's vocabulary (variants share it) to size the context.
    token_lists, n_vocab = tokenize(reference, prompts, build)
    lengths = [len(t) for t in token_lists]
    n_ctx = context_tokens(lengths)
    if n_ctx > reference.info.context_length > 0:
        raise UserError(
            f"A prompt has more tokens than the model's context ({reference.info.context_length}); lower MAX_PROMPT_LENGTH."
        )

    result = PromptEvaluation(
        {lab: [] for lab in labels}, {lab: 0.0 for lab in labels}, {lab: 0 for lab in labels}, n_ctx
    )
    code = cache_code()  # a change to this module recomputes every pass
    store = cache_dir("eval", "prompts")
    paths = {
        v.label: [
            store / f"{content_key(code, build.key, n_ctx, reference.sha256, *v.identity, p)}.npz" for p in prompts
        ]
        for v in scored
    }
    found: dict[str, list[TokenStats | None]] = {lab: [None] * len(prompts) for lab in labels}
    bar = progress.Bar(len(prompts) * len(scored), "evaluate", "pass", progress_bars)
    todo: dict[str, set[int]] = {}
    for v in scored:
        for i, path in enumerate(paths[v.label]):
            if path.exists():
                found[v.label][i] = TokenStats.load(path)
                bar.update()
        todo[v.label] = {i for i, s in enumerate(found[v.label]) if s is None}
    needed = sorted(set().union(*todo.values()))
    loaded: dict[tuple[str, str], LogitsModel] = {}
    try:
        if needed:
            by_four = shares_by_four({v.model.path for v in (ref, *scored)}, build)
            layout = decode_layout(lengths, needed, n_vocab, by_four)

            def model_for(v: Scored) -> LogitsModel:
                if v.identity not in loaded:
                    loaded[v.identity] = LogitsModel(v.model, layout.stream, threads, build, v.cache_type,
                                                     layout.n_seq, layout.n_ctx)  # fmt: skip
                return loaded[v.identity]

            with _pool(threads) as pool:
                for window in layout.windows:
                    wanted = {lab: [i for i in window if i in todo[lab]] for lab in labels}
                    sides = {i: Reference.exact(x, pool) for i, x in model_for(ref).scored_rows(token_lists, window)}
                    for v in scored:
                        if not wanted[v.label]:
                            continue
                        started = time.perf_counter()
                        if v.identity == ref.identity:
                            pairs = ((i, sides[i].itself(token_lists[i][1:])) for i in wanted[v.label])
                        else:
                            pairs = (
                                (i, token_stats(sides[i], q, token_lists[i][1:], pool))
                                for i, q in model_for(v).scored_rows(token_lists, wanted[v.label])
                            )
                        for i, stats in pairs:
                            stats.save(paths[v.label][i])
                            found[v.label][i] = stats
                            result.computed[v.label] += 1
                            bar.update()
                        result.seconds[v.label] += time.perf_counter() - started
    finally:
        bar.close()
        for lm in loaded.values():
            lm.close()
    for lab in labels:
        result.per_prompt[lab] = [s for s in found[lab] if s is not None]
        assert len(result.per_prompt[lab]) == len(prompts)
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
        with _pool(threads) as pool:
            for chunk, targets, first in chunks:
                started = time.perf_counter()
                b = base.logits_view(chunk, first, n_ctx - 1)
                q = b if var is base else var.logits_view(chunk, first, n_ctx - 1)
                exact.append(token_stats(b, q, targets, pool))
                seconds += (
                    time.perf_counter() - started
                )  # the emulation below is the cross-check's, not the evaluator's
                as_tool.append(token_stats(Reference.as_llama_perplexity_stores_it(b, pool), q, targets, pool))
    finally:
        base.close()
        if var is not base:
            var.close()
    return WindowEvaluation(TokenStats.concat(exact), TokenStats.concat(as_tool), seconds)
