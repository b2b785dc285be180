"""Does it fit? The RAM llama.cpp needs for a model at a context length, from the GGUF metadata.

The estimate follows llama.cpp's own allocation rules; ``measure.py`` checks it against the
peak resident memory of a real ``llama-server``.

Memory model (``llama-server`` with its defaults: flash attention, f16 cache, a
physical batch of 512 tokens, weights read into RAM rather than memory-mapped):

    weights   the bytes of the GGUF tensors;
    KV cache  per slot and layer: cells x kv heads x (key + value length) x 2 bytes,
              where cells is the context rounded up to 256, or, on the sliding-window
              layers of Gemma-style models, the window plus one batch, rounded up to 256;
    compute   one batch of activations, 4 bytes x 512 x (3 x FFN width + 4 x embedding
              width), plus the f16 attention mask, 2 bytes x 512 x cells, plus one row of
              logits; fitted to the compute buffer sizes llama.cpp logs, see
              ``compute_bytes``;
    output    one row of logits per slot;
    tokenizer the vocabulary tables llama.cpp builds (``TOKEN_BYTES`` per token,
              ``MERGE_BYTES`` per BPE merge);
    runtime   the server's own code and heap, ``RUNTIME_BYTES`` (measured with a
              one-layer toy model by ``measure.runtime_footprint``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import gguf_file
from ..errors import UserError
from ..model_info import ResolvedModel

MIB = 2**20
GIB = 2**30
N_UBATCH = 512  # llama.cpp's default physical batch: the compute buffer is sized for it
CTX_PAD = 256  # llama.cpp rounds every KV cache (and the context) up to a multiple of 256
CACHE_BYTES = 2.0  # f16 K and V, the default cache type
# Tokenizer tables, per entry: the GGUF loader's copy of the token (a 32-byte string, score,
# type), llama_vocab's token record (40 B), its text-to-id hash node and bucket (~64 B) and the
# token-to-piece cache (32 B); a BPE merge keeps a string in the loader and a pair of strings in
# an ordered map (~200 B). A vocabulary-only load of each model measured 174 B/token
# (Gemma 3) and 374 B/token (SmolLM2, 48,900 merges for 49,152 tokens).
TOKEN_BYTES = 180
MERGE_BYTES = 200
# llama-server's own resident memory without a model (code of its libraries and heap):
# about 19 MiB measured on this build with a one-layer, 262-token toy model; see measure.runtime_footprint.
RUNTIME_BYTES = 20 * MIB
FIT_SHARE = 0.80  # "fits" below 80% of available RAM: room for the estimate's error and the OS
MEMORY_TOLERANCE = 0.15  # the estimate must land within ±15% of the measured peak
# Layers with sliding-window attention, when the GGUF does not list them: llama.cpp's
# per-architecture pattern n (layer il uses the window when il % n < n - 1).
SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "cohere2": 4}


def _pad(n: int, to: int = CTX_PAD) -> int:
    return -(-n // to) * to


def _scalar_or_list(value: object, n: int) -> list[int]:
    """GGUF keys such as head_count_kv may be one number or one per layer."""
    if isinstance(value, list | tuple | np.ndarray):
        vals = [int(v) for v in value]
        return vals if len(vals) == n else [max(vals)] * n
    return [int(value)] * n


@dataclass(frozen=True)
class Architecture:
    """The GGUF hyperparameters that decide how much memory llama.cpp allocates."""

    name: str
    layers: int
    embedding: int
    ffn: int
    head_count: int
    head_count_kv: list[int]
    key_length: int
    value_length: int
    vocab: int
    merges: int
    sliding_window: int
    swa_layers: list[bool]
    trained_context: int
    weight_bytes: int

    @property
    def n_swa_layers(self) -> int:
        return sum(self.swa_layers)


_ARCH_CACHE: dict[tuple[str, str], Architecture] = {}


def architecture(model: ResolvedModel) -> Architecture:
    """Read what the memory estimate needs from the GGUF, as llama.cpp interprets it.

    Remembered per file and digest: parsing a 262k-token vocabulary takes seconds.
    """
    key = (str(model.path), model.sha256)
    if key not in _ARCH_CACHE:
        _ARCH_CACHE[key] = _read_architecture(model)
    return _ARCH_CACHE[key]


def _read_architecture(model: ResolvedModel) -> Architecture:
    reader = gguf_file.read(model.path)
    arch = model.info.architecture

    def get(key: str, default: object = None) -> object:
        return reader.get(f"{arch}.{key}", default)

    layers = model.info.layers
    heads = max(_scalar_or_list(get("attention.head_count", 0), layers))
    embd = model.info.embedding_length
    head_dim = embd // heads if heads else 0
    window = int(get("attention.sliding_window", 0) or 0)
    pattern = get("attention.sliding_window_pattern")
    if window == 0:
        swa = [False] * layers
    elif isinstance(pattern, list) and len(pattern) == layers:
        swa = [bool(p) for p in pattern]
    else:
        # No per-layer list: llama.cpp's default pattern for the architecture; for an
        # architecture it does not know, all layers full (an estimate on the safe side).
        n = int(pattern) if isinstance(pattern, int) else SWA_PATTERNS.get(arch, 0)
        swa = [n > 0 and il % n < n - 1 for il in range(layers)]
        if n == 0:
            window = 0
    merges = reader.get("tokenizer.ggml.merges")
    return Architecture(
        name=arch,
        layers=layers,
        embedding=embd,
        ffn=max(_scalar_or_list(get("feed_forward_length", 0), layers)),
        head_count=heads,
        head_count_kv=_scalar_or_list(get("attention.head_count_kv", heads), layers),
        key_length=int(get("attention.key_length", head_dim) or head_dim),
        value_length=int(get("attention.value_length", head_dim) or head_dim),
        vocab=model.info.vocab_size,
        merges=len(merges) if merges is not None else 0,
        sliding_window=window,
        swa_layers=swa,
        trained_context=model.info.context_length,
        weight_bytes=sum(int(t.n_bytes) for t in reader.tensors),
    )


def kv_cells(arch: Architecture, n_ctx: int, n_ubatch: int = N_UBATCH) -> tuple[int, int]:
    """Cells of the full-attention cache and of the sliding-window cache, per slot.

    llama.cpp keeps ``n_ctx`` (rounded up to 256) cells for full-attention layers; a
    sliding-window layer only ever attends to the last ``window`` positions, so its cache
    holds the window plus one batch, rounded up to 256 (llama_kv_cache_iswa).
    """
    full = _pad(n_ctx)
    swa = _pad(min(full, arch.sliding_window + n_ubatch)) if arch.n_swa_layers else 0
    return full, swa


def kv_bytes(
    arch: Architecture, n_ctx: int, n_parallel: int = 1, cache_bytes: float = CACHE_BYTES, n_ubatch: int = N_UBATCH
) -> int:
    """K and V for every layer and slot: cells x kv heads x (key + value length) x bytes per element."""
    full, swa = kv_cells(arch, n_ctx, n_ubatch)
    total = 0.0
    for il in range(arch.layers):
        cells = swa if arch.swa_layers[il] else full
        total += cells * arch.head_count_kv[il] * (arch.key_length + arch.value_length) * cache_bytes
    return int(total * n_parallel)


def compute_bytes(arch: Architecture, n_ctx: int, n_ubatch: int = N_UBATCH) -> int:
    """llama.cpp's compute buffer, reserved for a full batch against a full cache.

    Read off the sizes the build logs: the buffer grows by exactly 1 KiB per context cell
    (the f16 attention mask, 2 bytes x 512 tokens x cells, one mask per cache), and its
    fixed part is one batch of activations, 4 bytes x 512 x (3 x FFN width + 4 x embedding
    width: gate, up and their product, with the residual stream and its copies), plus
    one row of logits. Logged: SmolLM2 15.51/21.51/45.51 MiB at 2048/8192/32768, Gemma 3
    20.77/26.77/50.77 MiB; this formula gives 15.69/21.69/45.69 and 21.00/27.00/51.00.
    Assumes flash attention, which llama.cpp turns on for the CPU.
    """
    full, swa = kv_cells(arch, n_ctx, n_ubatch)
    activations = 4 * n_ubatch * (3 * arch.ffn + 4 * arch.embedding)
    mask = 2 * n_ubatch * (full + swa)
    return activations + mask + 4 * arch.vocab


@dataclass(frozen=True)
class MemoryEstimate:
    model: str
    context: int  # as asked
    n_ctx: int  # per slot, after clipping to the trained context and padding to 256
    clipped: bool
    n_parallel: int
    weights: int
    kv: int
    compute: int
    output: int
    tokenizer: int
    runtime: int

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute + self.output + self.tokenizer + self.runtime


def estimate_memory(
    model: ResolvedModel,
    context: int,
    n_parallel: int = 1,
    clip: bool = True,
    arch: Architecture | None = None,
    runtime_bytes: int = RUNTIME_BYTES,
) -> MemoryEstimate:
    """RAM llama-server needs for ``model`` with ``n_parallel`` slots of ``context`` tokens."""
    if context < 1 or n_parallel < 1:
        raise UserError(f"The context ({context}) and the number of parallel slots ({n_parallel}) must be positive.")
    return estimate_architecture(arch or architecture(model), context, n_parallel, clip, runtime_bytes, model.spec)


def estimate_architecture(
    arch: Architecture,
    context: int,
    n_parallel: int = 1,
    clip: bool = True,
    runtime_bytes: int = RUNTIME_BYTES,
    name: str = "",
) -> MemoryEstimate:
    """The same estimate for an Architecture without a file: read from a GGUF (``architecture``)
    or built from a model's published hyperparameters (``published.published_architecture``)."""
    if context < 1 or n_parallel < 1:
        raise UserError(f"The context ({context}) and the number of parallel slots ({n_parallel}) must be positive.")
    clipped = clip and 0 < arch.trained_context < context
    n_ctx = _pad(arch.trained_context if clipped else context)
    n_ubatch = min(N_UBATCH, n_ctx * n_parallel)  # llama.cpp never batches more than the context
    return MemoryEstimate(
        model=name or arch.name,
        context=context,
        n_ctx=n_ctx,
        clipped=clipped,
        n_parallel=n_parallel,
        weights=arch.weight_bytes,
        kv=kv_bytes(arch, n_ctx, n_parallel, n_ubatch=n_ubatch),
        compute=compute_bytes(arch, n_ctx, n_ubatch),
        output=4 * arch.vocab * n_parallel,
        tokenizer=TOKEN_BYTES * arch.vocab + MERGE_BYTES * arch.merges,
        runtime=runtime_bytes,
    )


def verdict(total: int, available: int) -> str:
    """fits below ``FIT_SHARE`` of available RAM, tight up to all of it, else does not fit."""
    if total <= FIT_SHARE * available:
        return "fits"
    if total <= available:
        return "tight"
    return "does not fit"


def max_context(model: ResolvedModel, available: int, n_parallel: int = 1, arch: Architecture | None = None) -> int:
    """The largest context (multiple of 256, at most the trained one) that still 'fits'."""
    arch = arch or architecture(model)
    limit = arch.trained_context or 131072  # a file that states no trained context: search up to 128k
    best, lo, hi = 0, 1, max(1, limit // CTX_PAD)
    while lo <= hi:  # memory grows with the context, so bisect over multiples of 256
        mid = (lo + hi) // 2
        est = estimate_memory(model, mid * CTX_PAD, n_parallel, clip=False, arch=arch)
        if verdict(est.total, available) == "fits":
            best, lo = mid * CTX_PAD, mid + 1
        else:
            hi = mid - 1
    return best


def memory_table(models: Sequence[ResolvedModel], contexts: Sequence[int], n_parallel: int = 1) -> pd.DataFrame:
    """Deterministic estimates per candidate and context, in MiB; a clipped context is noted on
    the row of the context it was clipped to, so no estimate is listed (or measured) twice."""
    rows: list[dict] = []
    for m in models:
        arch = architecture(m)
        by_ctx: dict[int, dict] = {}
        for c in contexts:
            e = estimate_memory(m, c, n_parallel, arch=arch)
            row = by_ctx.get(e.n_ctx)
            if row is None:
                row = by_ctx[e.n_ctx] = {
                    "model": m.spec,
                    "context": e.n_ctx,
                    "note": "",
                    "weights": e.weights / MIB,
                    "KV cache": e.kv / MIB,
                    "compute": e.compute / MIB,
                    "output+tokenizer+runtime": (e.output + e.tokenizer + e.runtime) / MIB,
                    "total (MiB)": e.total / MIB,
                }
                rows.append(row)
            if e.clipped:
                row["note"] = f"{c} clipped to the trained {arch.trained_context}"
    return pd.DataFrame(rows).round(1)


def fit_table(
    models: Sequence[ResolvedModel], contexts: Sequence[int], available: int, n_parallel: int = 1
) -> pd.DataFrame:
    """The verdict per candidate and context against RAM available now, and the largest context that fits."""
    rows = []
    for m in models:
        arch = architecture(m)
        largest = max_context(m, available, n_parallel, arch)
        for c in sorted({estimate_memory(m, c, n_parallel, arch=arch).n_ctx for c in contexts}):
            e = estimate_memory(m, c, n_parallel, arch=arch)
            rows.append(
                {
                    "model": m.spec,
                    "context": c,
                    "estimate (MiB)": round(e.total / MIB, 1),
                    "share of available RAM (%)": round(100 * e.total / available, 2),
                    "verdict": verdict(e.total, available),
                    "largest context that fits": largest,
                }
            )
    return pd.DataFrame(rows)
