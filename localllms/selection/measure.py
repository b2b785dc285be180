"""Does it fit, really? The peak resident memory of a real ``llama-server``, against the estimate.

``measure_memory`` starts the build's server through :class:`localllms.serve.LlamaServer` (its
own process group, stopped on exit, interrupt or error), sends one prompt, and reads the peak
resident memory from ``/proc`` while the server is still alive; the sizes of the buffers
llama.cpp reports allocating come from the server's log. ``runtime_footprint`` measures the
runtime's own share with a one-layer toy model written by ``write_toy_model``.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import serve
from ..build import BuildInfo
from ..errors import UserError
from ..models import ResolvedModel, resolve
from ..paths import cache_dir, code_key, content_key, remeasuring, write_atomic
from .memory import MEMORY_TOLERANCE, MIB, N_UBATCH, MemoryEstimate


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
    pid: int = 0  # of the server, stopped by the time the measurement is returned


_BUFFER = re.compile(r"(\S+)\s+(model|KV|compute|output) buffer size\s*=\s*([\d.]+) MiB")
_FLASH_ATTENTION = re.compile(r"flash_attn\s*=\s*enabled|Flash Attention enabled")
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


def measure_memory(
    model: ResolvedModel | Path,
    context: int,
    n_parallel: int,
    threads: int,
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
    resolved = model if isinstance(model, ResolvedModel) else resolve(Path(model))
    name = model.spec if isinstance(model, ResolvedModel) else Path(model).name
    args = ["-fa", "on", "--fit", "off", "-cram", "0", "--no-webui", "-lv", "4"]
    if not mmap:
        args += ["-lm", "none"]
    srv = serve.LlamaServer(
        resolved,
        threads=threads,
        parallel=n_parallel,
        ctx_size=context * n_parallel,
        extra_args=args,
        build=build,
        startup_timeout=timeout,
        request_timeout=timeout,
    )
    prompt_ms = float("nan")
    with srv:
        assert srv.pid is not None
        idle = _proc_status(srv.pid)
        if probe_tokens:
            tokens = serve.tokenize(srv, _PROBE_TEXT * (1 + probe_tokens // 40))[:probe_tokens]
            out = serve.complete(srv, tokens, n_predict=4, cache_prompt=False, seed=1)
            prompt_ms = float(out.get("timings", {}).get("prompt_ms", float("nan")))
        status = _proc_status(srv.pid)  # VmHWM while the server is alive: it goes with the process
    assert srv.log_path is not None
    log = srv.log_path.read_text(errors="replace")
    reported: dict[str, float] = {}
    for _, kind, mib in _BUFFER.findall(log):
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
        load_seconds=srv.ready_seconds or float("nan"),
        flash_attention=bool(_FLASH_ATTENTION.search(log)),
        pid=srv.pid,
    )


def measure_memory_cached(
    model: ResolvedModel,
    context: int,
    n_parallel: int,
    threads: int,
    build: BuildInfo | None = None,
    reuse: bool = False,
) -> MemoryMeasurement:
    """``measure_memory``, kept under the file's digest, the context, the slots, the threads, the
    build and this code: a 7B server with a 512-token prompt takes a minute here, so an unchanged
    rerun reads the measurement back. ``REMEASURE=1`` measures again, unless ``reuse``: a chapter
    that runs after the one that measured (its ``depends``) reads that run's measurement."""
    from ..build import current_build

    build = build or current_build()
    key = content_key(code_key("selection.measure", "serve.process"), model.sha256, context, n_parallel, threads,
                      build.key)  # fmt: skip
    cached = cache_dir("selection", "memory") / f"{key}.json"
    if cached.exists() and (reuse or not remeasuring()):
        return MemoryMeasurement(**json.loads(cached.read_text()))
    measured = measure_memory(model, context, n_parallel, threads, build)
    write_atomic(cached, json.dumps(asdict(measured)))
    return measured


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


# The toy model: one llama layer and a 262-token vocabulary (unknown, BOS, EOS, 256 bytes, 3 words).
_TOY = {"n_embd": 64, "n_ff": 128, "n_head": 2, "context": 4096, "seed": 0}
_TOY_TOKENS = ["<unk>", "<s>", "</s>", *[f"<0x{i:02X}>" for i in range(256)], "▁", "▁a", "a"]
_TOY_TYPES = [2, 3, 3, *[6] * 256, 1, 1, 1]  # unknown, control x2, byte x256, normal x3


def write_toy_model(path: Path) -> Path:
    """A one-layer llama model with a 262-token vocabulary: llama-server with (almost) no model."""
    import gguf

    n_embd, n_ff, n_head = _TOY["n_embd"], _TOY["n_ff"], _TOY["n_head"]
    tokens = _TOY_TOKENS
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir) / "toy.gguf"
        w = gguf.GGUFWriter(str(tmp), "llama")
        w.add_name("toy")
        w.add_block_count(1)
        w.add_context_length(_TOY["context"])
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
        w.add_token_types(_TOY_TYPES)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        rng = np.random.default_rng(_TOY["seed"])

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
        data = tmp.read_bytes()
    return write_atomic(path, data)


def runtime_footprint(build: BuildInfo | None, threads: int) -> int:
    """Peak resident memory of llama-server serving a toy model: the runtime's share of every run."""
    toy = cache_dir("selection") / f"toy-llama-{content_key(_TOY, _TOY_TOKENS, _TOY_TYPES)}.gguf"
    if not toy.exists():
        write_toy_model(toy)
    return measure_memory(toy, 256, 1, threads, build, probe_tokens=8).peak_rss
