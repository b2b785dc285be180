"""Choosing a model for this machine: what fits, how fast, how good, at what cost.

One function per question, each taking the candidates (catalog names or GGUF paths):

* ``load_candidates`` / ``model_cards``: what each GGUF file says about itself; a
  candidate that cannot be read becomes a row with its one-sentence error, and the
  others go on;
* ``estimate_memory`` / ``measure_memory``: the RAM llama.cpp needs for a model at a
  context length, predicted from the GGUF metadata with llama.cpp's own allocation
  rules and measured as the peak resident memory of a real ``llama-server``;
* ``bits_per_byte``: quality on the same text for models with different tokenizers;
* ``speed``: time to first token and per output token, from ``llama-bench``;
* ``CostAssumptions`` and the functions after it: cost per input and output token,
  total cost of ownership and the break-even volume against cloud prices;
* ``recommend``: a ranking for this machine with a reason per candidate.

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
              one-layer toy model by ``runtime_footprint``).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .build import BuildInfo, cpu_features, cpu_name, current_build
from .errors import UserError
from .models import ResolvedModel, resolve
from .paths import cache_dir, content_key
from .serve import free_port

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MIB = 2**20
GIB = 2**30
CONTEXTS = (2048, 8192, 32768)
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
# about 19 MiB measured on this build with a one-layer, 262-token toy model; see runtime_footprint.
RUNTIME_BYTES = 20 * MIB
FIT_SHARE = 0.80  # "fits" below 80% of available RAM: room for the estimate's error and the OS
MEMORY_TOLERANCE = 0.15  # the estimate must land within ±15% of the measured peak
# Layers with sliding-window attention, when the GGUF does not list them: llama.cpp's
# per-architecture pattern n (layer il uses the window when il % n < n - 1).
SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "cohere2": 4}
SELECT_VERSION = "1"  # bump when cached numbers would change


# --------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class Candidate:
    """One candidate as given, resolved to a model or to the reason it could not be."""

    spec: str
    model: ResolvedModel | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.model is not None


def load_candidates(specs: Sequence[str | ResolvedModel]) -> list[Candidate]:
    """Resolve each spec; a bad one is kept with its error so the table can show it."""
    out = []
    for spec in specs:
        if isinstance(spec, ResolvedModel):  # already resolved: nothing to read again
            out.append(Candidate(spec.spec, spec))
            continue
        try:
            out.append(Candidate(str(spec), resolve(spec)))
        except UserError as exc:
            out.append(Candidate(str(spec), None, str(exc).splitlines()[0]))
    return out


def usable(candidates: Sequence[Candidate]) -> list[ResolvedModel]:
    return [c.model for c in candidates if c.model is not None]


def model_card(candidate: Candidate) -> dict:
    """One table row: what the GGUF metadata says, or the status of a bad candidate."""
    if candidate.model is None:
        return {"model": candidate.spec, "status": candidate.error}
    m = candidate.model
    info = m.info
    return {
        "model": m.spec,
        "status": "ok",
        "file": m.path.name,
        "architecture": info.architecture,
        "parameters (M)": round(info.parameters / 1e6, 1),
        "layers": info.layers,
        "trained context": info.context_length,
        "vocabulary": info.vocab_size,
        "quant": info.quant_type,
        "bits/weight": round(info.bits_per_weight, 2),
        "size (MiB)": round(info.file_size / MIB, 1),
        "chat template": "yes (instruction-tuned)" if info.chat_template else "no (base model)",
        "license": info.license or "not stated",
    }


def model_cards(candidates: Sequence[Candidate]) -> pd.DataFrame:
    return pd.DataFrame([model_card(c) for c in candidates]).set_index("model")


# --------------------------------------------------------------------------- hardware


@dataclass(frozen=True)
class Hardware:
    cpu: str
    cores: int
    ram_total: int
    ram_available: int
    cpu_features: list[str]
    accelerator: str


def hardware() -> Hardware:
    """This machine: RAM (total and available now), cores and the SIMD extensions ggml uses."""
    import psutil

    vm = psutil.virtual_memory()
    return Hardware(
        cpu=cpu_name(),
        cores=os.cpu_count() or 1,
        ram_total=int(vm.total),
        ram_available=int(vm.available),
        cpu_features=cpu_features(),
        accelerator="none: llama.cpp is built for the CPU only here",
    )


def hardware_table(hw: Hardware) -> pd.DataFrame:
    rows = {
        "CPU": hw.cpu,
        "cores": hw.cores,
        "RAM total (GiB)": round(hw.ram_total / GIB, 1),
        "RAM available now (GiB)": round(hw.ram_available / GIB, 1),
        "SIMD extensions": " ".join(hw.cpu_features) or "none detected",
        "accelerator": hw.accelerator,
    }
    return pd.DataFrame({"value": rows})


# --------------------------------------------------------------------------- memory estimate


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
    from gguf import GGUFReader

    reader = GGUFReader(model.path)
    arch = model.info.architecture

    def get(key: str, default: object = None) -> object:
        f = reader.fields.get(f"{arch}.{key}")
        return default if f is None else f.contents()

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
    merges = reader.fields.get("tokenizer.ggml.merges")
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
        merges=len(merges.data) if merges is not None else 0,
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
    arch = arch or architecture(model)
    clipped = clip and 0 < arch.trained_context < context
    n_ctx = _pad(arch.trained_context if clipped else context)
    n_ubatch = min(N_UBATCH, n_ctx * n_parallel)  # llama.cpp never batches more than the context
    return MemoryEstimate(
        model=model.spec,
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


# --------------------------------------------------------------------------- memory measurement


@dataclass
class MemoryMeasurement:
    """Peak resident memory of a llama-server that loaded the model and served one prompt."""

    model: str
    n_ctx: int
    n_parallel: int
    mmap: bool
    peak_rss: int  # VmHWM
    idle_rss: int  # after loading and the warm-up, before the prompt
    rss_anon: int
    rss_file: int
    reported: dict[str, float] = field(default_factory=dict)  # MiB per buffer kind, from llama.cpp's log
    probe_tokens: int = 0
    prompt_ms: float = float("nan")
    load_seconds: float = float("nan")
    flash_attention: bool = True


_BUFFER = re.compile(r"(\S+)\s+(model|KV|compute|output) buffer size\s*=\s*([\d.]+) MiB")
_PROBE_TEXT = (
    "The river rises in the hills north of the town and flows south through farmland, woods and two small "
    "villages before it reaches the sea. Its valley has been settled since the Bronze Age, and the old "
    "bridge, built of local stone in the fourteenth century, still carries the road across it. "
)


def _proc_status(pid: int) -> dict[str, int]:
    """Resident memory of a process in bytes, from /proc (VmHWM is the peak over its life)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    except OSError as exc:
        raise UserError(f"Cannot read /proc/{pid}/status ({exc}); measuring memory needs Linux.") from exc
    return out


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # localhost must not go through a proxy


def _post(url: str, payload: dict, timeout: float) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with _OPENER.open(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def measure_memory(
    model: ResolvedModel | Path,
    context: int,
    n_parallel: int = 1,
    threads: int | None = None,
    build: BuildInfo | None = None,
    probe_tokens: int = N_UBATCH,
    mmap: bool = False,
    timeout: float = 300,
) -> MemoryMeasurement:
    """Start llama-server with this context, send one prompt, and read its peak resident memory.

    Weights are read into RAM (``--load-mode none``) so they are resident from the start:
    memory-mapped weights count as resident only once touched and can be dropped by the
    kernel, and repacked tensors would be counted twice. The KV cache is cleared (written)
    when llama.cpp allocates it, so it is resident too. The prompt of ``probe_tokens``
    tokens runs a full batch through the model, which touches the compute buffer's
    activations and the sampler's vocabulary-sized arrays.
    """
    build = build or current_build()
    path = model.path if isinstance(model, ResolvedModel) else Path(model)
    name = model.spec if isinstance(model, ResolvedModel) else path.name
    threads = threads or os.cpu_count() or 1
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [str(build.tool("llama-server")), "-m", str(path), "-c", str(context * n_parallel), "-np", str(n_parallel),
           "-t", str(threads), "-fa", "on", "--fit", "off", "-cram", "0", "--no-webui", "-lv", "4",
           "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    if not mmap:
        cmd += ["-lm", "none"]
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a full pipe would block the server
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    tail = " | ".join(log.read().strip().splitlines()[-3:])
                    raise UserError(f"llama-server exited (code {proc.returncode}) loading {path.name}: {tail}")
                try:
                    with _OPENER.open(f"{base}/health", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() - started > timeout:
                    raise UserError(f"llama-server did not load {path.name} within {timeout:.0f} s; raise the timeout.")
                time.sleep(0.1)
            load_seconds = time.monotonic() - started
            idle = _proc_status(proc.pid)
            prompt_ms = float("nan")
            if probe_tokens:
                text = _PROBE_TEXT * (1 + probe_tokens // 40)
                try:
                    tokens = _post(f"{base}/tokenize", {"content": text}, timeout)["tokens"][:probe_tokens]
                    out = _post(
                        f"{base}/completion",
                        {"prompt": tokens, "n_predict": 4, "cache_prompt": False, "seed": 1},
                        timeout,
                    )
                except OSError as exc:
                    raise UserError(
                        f"llama-server failed the {probe_tokens}-token probe prompt on {path.name} ({exc})."
                    ) from exc
                prompt_ms = float(out.get("timings", {}).get("prompt_ms", float("nan")))
            status = _proc_status(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.seek(0)
        text_log = log.read()
    reported: dict[str, float] = {}
    for _, kind, mib in _BUFFER.findall(text_log):
        reported[kind] = reported.get(kind, 0.0) + float(mib)
    return MemoryMeasurement(
        model=name,
        n_ctx=context,
        n_parallel=n_parallel,
        mmap=mmap,
        peak_rss=status["VmHWM"],
        idle_rss=idle["VmRSS"],
        rss_anon=status.get("RssAnon", 0),
        rss_file=status.get("RssFile", 0),
        reported=reported,
        probe_tokens=probe_tokens,
        prompt_ms=prompt_ms,
        load_seconds=load_seconds,
        flash_attention=bool(re.search(r"flash_attn\s*=\s*enabled|Flash Attention enabled", text_log)),
    )


def compare_memory(estimate: MemoryEstimate, measured: MemoryMeasurement) -> dict:
    """One row of estimate against measurement, with the relative error of the estimate."""
    err = (estimate.total - measured.peak_rss) / measured.peak_rss
    r = measured.reported
    return {
        "model": estimate.model,
        "context": estimate.n_ctx,
        "estimate (MiB)": round(estimate.total / MIB, 1),
        "measured peak (MiB)": round(measured.peak_rss / MIB, 1),
        "error (%)": round(100 * err, 1),
        "within ±15%": abs(err) <= MEMORY_TOLERANCE,
        "idle after load (MiB)": round(measured.idle_rss / MIB, 1),
        "KV est. / llama.cpp (MiB)": f"{estimate.kv / MIB:.1f} / {r.get('KV', float('nan')):.1f}",
        "compute est. / llama.cpp (MiB)": f"{estimate.compute / MIB:.1f} / {r.get('compute', float('nan')):.1f}",
        "weights est. / llama.cpp (MiB)": f"{estimate.weights / MIB:.1f} / {r.get('model', float('nan')):.1f}",
    }


def write_toy_model(path: Path) -> Path:
    """A one-layer llama model with a 262-token vocabulary: llama-server with (almost) no model."""
    import gguf

    n_embd, n_ff, n_head = 64, 128, 2
    tokens = ["<unk>", "<s>", "</s>", *[f"<0x{i:02X}>" for i in range(256)], "▁", "▁a", "a"]
    types = [2, 3, 3, *[6] * 256, 1, 1, 1]  # unknown, control x2, byte x256, normal x3
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name("toy")
    w.add_block_count(1)
    w.add_context_length(4096)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    rng = np.random.default_rng(0)

    def rand(*shape: int) -> np.ndarray:
        return (0.02 * rng.standard_normal(shape)).astype(np.float32)

    w.add_tensor("token_embd.weight", rand(len(tokens), n_embd))
    for name in ("output_norm", "blk.0.attn_norm", "blk.0.ffn_norm"):
        w.add_tensor(f"{name}.weight", np.ones(n_embd, np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        w.add_tensor(f"blk.0.{name}.weight", rand(n_embd, n_embd))
    w.add_tensor("blk.0.ffn_gate.weight", rand(n_ff, n_embd))
    w.add_tensor("blk.0.ffn_up.weight", rand(n_ff, n_embd))
    w.add_tensor("blk.0.ffn_down.weight", rand(n_embd, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(path)
    return path


def runtime_footprint(build: BuildInfo | None = None, threads: int | None = None) -> int:
    """Peak resident memory of llama-server serving a toy model: the runtime's share of every run."""
    toy = cache_dir("select") / "toy-llama.gguf"
    if not toy.exists():
        write_toy_model(toy)
    return measure_memory(toy, 256, 1, threads, build, probe_tokens=8).peak_rss


# --------------------------------------------------------------------------- quality


@dataclass(frozen=True)
class BitsPerByte:
    """Negative log-likelihood of a text in bits, per UTF-8 byte of the text predicted."""

    model: str
    n_prompts: int
    tokens: int  # predicted tokens
    bytes: int  # UTF-8 bytes those tokens spell
    bits: float

    @property
    def bpb(self) -> float:
        return self.bits / self.bytes

    @property
    def bits_per_token(self) -> float:
        return self.bits / self.tokens

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / self.tokens


def bits_per_byte(
    model: ResolvedModel,
    texts: Sequence[str],
    threads: int | None = None,
    build: BuildInfo | None = None,
    n_ctx: int = 1024,
    use_cache: bool = True,
) -> BitsPerByte:
    """Bits per byte over ``texts``: comparable across tokenizers, unlike perplexity per token.

    Each text is scored as its own sequence through the binding. Every token after the
    first is predicted; the first is the BOS token for models that add one (Gemma), and
    the first text token for models that do not (SmolLM2), whose bytes are then left out.
    Cached by model, build and texts, since the number is deterministic for a build and CPU.
    """
    from .evaluate import LogitsModel, log_softmax

    build = build or current_build()
    threads = threads or os.cpu_count() or 1
    cached = (
        cache_dir("select") / f"bpb-{model.sha256[:16]}-{build.key}-{content_key(SELECT_VERSION, list(texts))}.json"
    )
    if use_cache and cached.exists():
        return BitsPerByte(**json.loads(cached.read_text()))
    lm = LogitsModel(model, n_ctx, threads, build)
    bits, n_tokens, n_bytes = 0.0, 0, 0
    try:
        for text in texts:
            tokens = lm.tokenize(text)
            if len(tokens) < 2:
                continue
            logprobs = log_softmax(lm.logits(tokens, 0, len(tokens) - 1))
            nll = -logprobs[np.arange(len(tokens) - 1), tokens[1:]].astype(np.float64)
            bits += float(nll.sum()) / math.log(2)
            n_tokens += len(tokens) - 1
            # bytes predicted = the text minus what the unpredicted first token spells (b"" for BOS)
            n_bytes += len(text.encode("utf-8")) - len(lm.llm.detokenize([int(tokens[0])]))
    finally:
        lm.close()
    if n_tokens == 0:
        raise UserError(f"No text had two tokens or more under {model.path.name}; give longer prompts.")
    result = BitsPerByte(model.spec, len(texts), n_tokens, n_bytes, bits)
    cached.write_text(json.dumps(asdict(result)))
    return result


def quality_table(results: Sequence[BitsPerByte]) -> pd.DataFrame:
    rows = [
        {
            "model": r.model,
            "bits per byte": round(r.bpb, 4),
            "bits per token": round(r.bits_per_token, 3),
            "bytes per token": round(r.bytes_per_token, 3),
            "predicted tokens": r.tokens,
            "bytes": r.bytes,
        }
        for r in results
    ]
    return pd.DataFrame(rows).set_index("model")


# --------------------------------------------------------------------------- speed


def speed(
    model: ResolvedModel,
    threads: int | None = None,
    repetitions: int = 3,
    n_prompt: int = 256,
    n_gen: int = 32,
    build: BuildInfo | None = None,
) -> dict:
    """Throughput from llama-bench and the latency a user sees, for a prompt of ``n_prompt`` tokens.

    TTFT is the time to process the prompt, ``n_prompt / pp``: the first output token comes
    from the logits of the prompt's last position. TPOT is ``1 / tg``. Their spread is
    propagated from llama-bench's standard deviations (first order).
    """
    from .bench import llama_bench

    threads = threads or os.cpu_count() or 1
    t = llama_bench(model, threads, repetitions, n_prompt, n_gen, build)
    return {
        "model": model.spec,
        "pp_tps": t.pp_tps,
        "pp_sd": t.pp_sd,
        "tg_tps": t.tg_tps,
        "tg_sd": t.tg_sd,
        "ttft_s": n_prompt / t.pp_tps,
        "ttft_sd": n_prompt * t.pp_sd / t.pp_tps**2,
        "tpot_ms": 1000 / t.tg_tps,
        "tpot_sd": 1000 * t.tg_sd / t.tg_tps**2,
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        "repetitions": repetitions,
        "threads": threads,
    }


def speed_table(rows: Sequence[dict]) -> pd.DataFrame:
    def pm(mean: float, sd: float, digits: int) -> str:
        return f"{mean:.{digits}f} ± {sd:.{digits}f}"

    out = []
    for r in rows:
        out.append(
            {
                "model": r["model"],
                f"TTFT, {r['n_prompt']}-token prompt (s)": pm(r["ttft_s"], r["ttft_sd"], 3),
                "TPOT (ms)": pm(r["tpot_ms"], r["tpot_sd"], 1),
                "prompt (tok/s)": pm(r["pp_tps"], r["pp_sd"], 1),
                "generation (tok/s)": pm(r["tg_tps"], r["tg_sd"], 1),
            }
        )
    return pd.DataFrame(out).set_index("model")


# --------------------------------------------------------------------------- cost

HOURS_PER_YEAR = 365 * 24
INPUT_PER_OUTPUT = 3  # blend of 3 input tokens per output token, as the chapter's price figures use


@dataclass(frozen=True)
class CostAssumptions:
    """What running locally costs per hour; prices in one currency (the cloud prices are in USD)."""

    electricity_price_kwh: float
    power_w: float  # average draw of the machine while it runs the model
    hardware_price: float
    lifetime_years: float
    hours_per_day: float  # hours a day the machine serves the model; the hardware is paid off over them

    def __post_init__(self) -> None:
        for name in ("electricity_price_kwh", "power_w", "hardware_price"):
            if getattr(self, name) < 0:
                raise UserError(f"{name.upper()} must not be negative, not {getattr(self, name)}.")
        if self.lifetime_years <= 0 or not 0 < self.hours_per_day <= 24:
            raise UserError(
                f"HARDWARE_LIFETIME_YEARS must be positive and HOURS_PER_DAY in (0, 24], not {self.lifetime_years} and {self.hours_per_day}."
            )

    @property
    def service_hours(self) -> float:
        """Hours the model runs over the life of the hardware."""
        return self.lifetime_years * 365 * self.hours_per_day

    @property
    def energy_per_hour(self) -> float:
        return self.power_w / 1000 * self.electricity_price_kwh

    @property
    def hardware_per_hour(self) -> float:
        return self.hardware_price / self.service_hours

    @property
    def cost_per_hour(self) -> float:
        return self.energy_per_hour + self.hardware_per_hour


def cost_per_million(tokens_per_second: float, a: CostAssumptions) -> float:
    """Cost of one million tokens at a throughput: the machine's hourly cost over tokens per hour."""
    if tokens_per_second <= 0:
        raise UserError(f"The throughput must be positive to price a token, not {tokens_per_second}.")
    return a.cost_per_hour / (tokens_per_second * 3600) * 1e6


def energy_per_million(tokens_per_second: float, a: CostAssumptions) -> float:
    """The electricity alone per million tokens: the marginal cost once the hardware is bought."""
    return a.energy_per_hour / (tokens_per_second * 3600) * 1e6


def blended(input_price: float, output_price: float, ratio: float = INPUT_PER_OUTPUT) -> float:
    """Price per token of a mix of ``ratio`` input tokens per output token."""
    return (ratio * input_price + output_price) / (ratio + 1)


def tco(a: CostAssumptions) -> dict:
    """Total cost of ownership over the hardware's life: purchase plus electricity while serving."""
    energy = a.power_w / 1000 * a.service_hours * a.electricity_price_kwh
    return {
        "hardware": a.hardware_price,
        "electricity": energy,
        "total": a.hardware_price + energy,
        "service hours": a.service_hours,
    }


def local_cost(pp_tps: float, tg_tps: float, a: CostAssumptions) -> dict:
    """CPIT and CPOT per million tokens, blended 3:1, and the monthly capacity of the machine."""
    cpit, cpot = cost_per_million(pp_tps, a), cost_per_million(tg_tps, a)
    # seconds for one blended token: 3 prompt tokens and 1 generated, per 4 tokens
    sec_per_token = (INPUT_PER_OUTPUT / pp_tps + 1 / tg_tps) / (INPUT_PER_OUTPUT + 1)
    return {
        "CPIT per M": cpit,
        "CPOT per M": cpot,
        "blended per M": blended(cpit, cpot),
        "energy per M (blended)": blended(energy_per_million(pp_tps, a), energy_per_million(tg_tps, a)),
        "capacity per month (M tokens)": a.hours_per_day * 3600 * 365 / 12 / sec_per_token / 1e6,
    }


def break_even_tokens(hardware_per_month: float, local_marginal_per_m: float, cloud_per_m: float) -> float:
    """Monthly tokens (millions) above which owning the hardware is cheaper than the cloud price.

    Local: a fixed monthly share of the hardware plus electricity per token; cloud: a price
    per token. They cross at fixed / (cloud - local marginal); never if the cloud's price
    is at or below the local marginal cost.
    """
    gap = cloud_per_m - local_marginal_per_m
    return hardware_per_month / gap if gap > 0 else math.inf


@dataclass(frozen=True)
class CloudPrice:
    model: str
    input_per_m: float  # USD per million input tokens
    output_per_m: float
    cite: str  # bib key of the source the chapter quotes
    note: str = ""

    @property
    def blended_per_m(self) -> float:
        return blended(self.input_per_m, self.output_per_m)


# Per-million-token prices as the chapter quotes them (late 2024); they change often.
CLOUD_PRICES = (
    CloudPrice("Mistral NeMo", 0.15, 0.15, "mistraltechnology2024", "Mistral, fine-tuned model prices, 22 Dec 2024"),
    CloudPrice("Mistral Small", 0.2, 0.6, "mistraltechnology2024", "Mistral, fine-tuned model prices, 22 Dec 2024"),
    CloudPrice("Codestral", 0.2, 0.6, "mistraltechnology2024", "Mistral, fine-tuned model prices, 22 Dec 2024"),
    CloudPrice("DeepSeek-V3", 0.27, 1.1, "deepseek2024v3", "DeepSeek's own figures at release"),
    CloudPrice(
        "Mistral Large 24.11", 2.0, 6.0, "mistraltechnology2024", "Mistral, fine-tuned model prices, 22 Dec 2024"
    ),
)


def cloud_table(prices: Sequence[CloudPrice] = CLOUD_PRICES) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "model": p.model,
                "input (USD/M)": p.input_per_m,
                "output (USD/M)": p.output_per_m,
                "blended 3:1 (USD/M)": round(p.blended_per_m, 4),
                "source": p.note,
            }
            for p in prices
        ]
    ).set_index("model")


def cost_table(speeds: Sequence[dict], a: CostAssumptions, prices: Sequence[CloudPrice] = CLOUD_PRICES) -> pd.DataFrame:
    """Local CPIT/CPOT per candidate and the monthly volume at which each cloud price is beaten."""
    per_month = a.hardware_price / (a.lifetime_years * 12)
    rows = []
    for s in speeds:
        c = local_cost(s["pp_tps"], s["tg_tps"], a)
        row = {"model": s["model"], **{k: round(v, 4) for k, v in c.items()}}
        for p in prices:
            t = break_even_tokens(per_month, c["energy per M (blended)"], p.blended_per_m)
            if not math.isfinite(t):
                text = "never: electricity alone costs more"
            elif t > c["capacity per month (M tokens)"]:
                text = f"{t:,.1f}, beyond this machine's capacity"
            else:
                text = f"{t:,.1f}"
            row[f"break-even vs {p.model} (M tokens/month)"] = text
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


# --------------------------------------------------------------------------- licensing

# The chapter's table of open-model licenses, restated.
OPEN_MODEL_LICENSES = (
    ("Meta AI", "LLaMA 3", "custom", "Free until a service passes 700 million users; its outputs may not be used to train other (non-LLaMA) LLMs."),
    ("Microsoft", "Phi-3", "MIT", "Permissive: use, change and redistribute, commercially too, under simple terms."),
    ("Mistral AI", "Mistral", "Apache 2.0", "Permissive: broad commercial rights with few restrictions."),
    ("Alibaba", "Qwen2.5", "custom", "Free until a service passes 100 million users; its outputs may not be used to train other (non-Qwen) LLMs."),
    ("Google", "Gemma", "custom", "Free, with usage restrictions; a model trained on Gemma's outputs counts as a Gemma derivative."),
    ("DeepSeek", "DeepSeek-V2", "custom", "Free, with usage restrictions; a model trained on its outputs counts as a DeepSeek derivative."),
)  # fmt: skip

# How the license names found in GGUF files read, and what kind of license each is.
_LICENSE_KINDS = {
    "apache-2.0": ("Apache 2.0", "permissive"),
    "mit": ("MIT", "permissive"),
    "gemma": ("Gemma Terms of Use", "custom"),
    "gemma terms of use": ("Gemma Terms of Use", "custom"),
    "llama3": ("Llama 3 Community License", "custom"),
    "llama3.1": ("Llama 3.1 Community License", "custom"),
    "llama3.2": ("Llama 3.2 Community License", "custom"),
    "qwen": ("Qwen License", "custom"),
}


def licenses_table() -> pd.DataFrame:
    return pd.DataFrame(OPEN_MODEL_LICENSES, columns=["creator", "model family", "license", "in short"]).set_index(
        "creator"
    )


def candidate_license(model: ResolvedModel) -> dict:
    raw = (model.info.license or "").strip()
    name, kind = _LICENSE_KINDS.get(raw.lower(), (raw or "not stated", "unknown: read the model card"))
    return {"model": model.spec, "license (GGUF)": raw or "not stated", "license": name, "kind": kind}


# --------------------------------------------------------------------------- recommendation

_FIT_ORDER = {"fits": 0, "tight": 1, "does not fit": 2}


def recommend(
    models: Sequence[ResolvedModel],
    contexts: Sequence[int],
    available: int,
    quality: Sequence[BitsPerByte],
    speeds: Sequence[dict],
    a: CostAssumptions,
    n_parallel: int = 1,
) -> pd.DataFrame:
    """Rank the candidates: first by fit at their largest asked context, then by their mean rank on
    quality (bits per byte), generation speed and blended cost, ties going to quality."""
    q = {r.model: r for r in quality}
    s = {r["model"]: r for r in speeds}
    rows = []
    for m in models:
        arch = architecture(m)
        e = estimate_memory(m, max(contexts), n_parallel, arch=arch)
        cost = local_cost(s[m.spec]["pp_tps"], s[m.spec]["tg_tps"], a)
        rows.append(
            {
                "model": m.spec,
                "context": e.n_ctx,
                "fit": verdict(e.total, available),
                "memory (MiB)": round(e.total / MIB, 1),
                "bits per byte": round(q[m.spec].bpb, 4),
                "generation (tok/s)": round(s[m.spec]["tg_tps"], 1),
                "blended cost (USD/M)": round(cost["blended per M"], 4),
                "chat template": m.info.chat_template,
                "license": candidate_license(m)["license"],
                "clipped": e.clipped,
            }
        )
    df = pd.DataFrame(rows)
    ranks = pd.concat(
        [
            df["bits per byte"].rank(method="min"),
            df["generation (tok/s)"].rank(ascending=False, method="min"),
            df["blended cost (USD/M)"].rank(method="min"),
        ],
        axis=1,
    ).mean(axis=1)
    df["score"] = ranks
    df["_fit"] = df["fit"].map(_FIT_ORDER)
    df = df.sort_values(["_fit", "score", "bits per byte"]).drop(columns="_fit").reset_index(drop=True)
    best = {
        "bits per byte": df["bits per byte"].min(),
        "generation (tok/s)": df["generation (tok/s)"].max(),
        "blended cost (USD/M)": df["blended cost (USD/M)"].min(),
    }
    df["reason"] = [_reason(r, best, available) for r in df.to_dict("records")]
    df.insert(0, "rank", range(1, len(df) + 1))
    return df.drop(columns=["score", "clipped"]).set_index("rank")


def _reason(r: dict, best: dict, available: int) -> str:
    parts = [
        f"{r['fit']} at {r['context']:,} tokens ({r['memory (MiB)']:.0f} MiB of {available / GIB:.1f} GiB available)"
    ]
    if r["bits per byte"] == best["bits per byte"]:
        parts.append(f"best quality ({r['bits per byte']:.3f} bits/byte)")
    else:
        parts.append(f"{r['bits per byte'] / best['bits per byte'] - 1:+.0%} bits/byte against the best")
    if r["generation (tok/s)"] == best["generation (tok/s)"]:
        parts.append(f"fastest generation ({r['generation (tok/s)']:.0f} tok/s)")
    else:
        parts.append(f"{r['generation (tok/s)'] / best['generation (tok/s)']:.1f}x the fastest generation")
    if r["blended cost (USD/M)"] == best["blended cost (USD/M)"]:
        parts.append("cheapest per token")
    parts.append("instruction-tuned (chat template)" if r["chat template"] else "base model: no chat template")
    parts.append(f"{r['license']} license")
    return "; ".join(parts)


# --------------------------------------------------------------------------- figures


def plot_memory(estimates: pd.DataFrame, measured: pd.DataFrame | None = None) -> Figure:
    """Stacked estimate per candidate and context, with the measured peak as a marker."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    parts = ["weights", "KV cache", "compute", "output+tokenizer+runtime"]
    df = estimates.copy()
    df["label"] = df["model"] + "\n" + df["context"].map(lambda c: f"{c:,}")
    fig, ax = plt.subplots(figsize=(10, 4.2))
    bottom = np.zeros(len(df))
    for part, color in zip(parts, sns.color_palette("crest", len(parts)), strict=True):
        ax.bar(df["label"], df[part], bottom=bottom, label=part, color=color)
        bottom += df[part].to_numpy()
    if measured is not None and len(measured):
        lab = measured["model"] + "\n" + measured["context"].map(lambda c: f"{c:,}")
        ax.scatter(lab, measured["measured peak (MiB)"], color="black", marker="D", zorder=3, label="measured peak")
    ax.set_ylabel("MiB")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title("Estimated memory by part (bars) and measured peak resident memory")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_break_even(
    speeds: Sequence[dict], a: CostAssumptions, prices: Sequence[CloudPrice] = CLOUD_PRICES, max_m: float = 1e4
) -> Figure:
    """Monthly cost against monthly tokens: owning the machine (per candidate) versus cloud prices."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    tokens_m = np.logspace(-1, math.log10(max_m), 200)
    per_month = a.hardware_price / (a.lifetime_years * 12)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for p, color in zip(prices, sns.color_palette("flare", len(prices)), strict=True):
        ax.plot(tokens_m, tokens_m * p.blended_per_m, color=color, lw=1.2, ls="--", label=f"cloud: {p.model}")
    for s, color in zip(speeds, sns.color_palette("crest", len(speeds)), strict=True):
        c = local_cost(s["pp_tps"], s["tg_tps"], a)
        cap = c["capacity per month (M tokens)"]
        t = tokens_m[tokens_m <= cap]
        ax.plot(t, per_month + t * c["energy per M (blended)"], color=color, lw=2.5, label=f"local: {s['model']}")
        ax.axvline(cap, color=color, lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens per month (millions, 3 input : 1 output)")
    ax.set_ylabel("cost per month (USD)")
    ax.set_title("Break-even: owning this machine versus paying per token (dotted: local capacity)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_quality_speed(quality: Sequence[BitsPerByte], speeds: Sequence[dict]) -> Figure:
    """Bits per byte against generation speed: lower and further right is better."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    s = {r["model"]: r for r in speeds}
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in quality:
        x, y = s[r.model]["tg_tps"], r.bpb
        ax.errorbar(x, y, xerr=s[r.model]["tg_sd"], fmt="o", ms=8, capsize=3)
        ax.annotate(r.model, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.set_xlabel("generation (tokens/s, ± sd)")
    ax.set_ylabel("bits per byte (lower is better)")
    ax.set_title("Quality against speed on this machine")
    fig.tight_layout()
    return fig
