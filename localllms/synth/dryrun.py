"""The type of every tensor, as llama-quantize decides it: its own ``--dry-run`` on a sparse F16 probe.

The probe (``writer.write_probe``) has the architecture's exact header and tensor table, F16
matrices and F32 vectors as ``convert_hf_to_gguf`` writes them, and no data. ``llama-quantize
--dry-run probe.gguf TYPE`` loads the header, applies its per-tensor rules and prints one line per
tensor, in the order it would write them::

    [  25/ 272] blk.2.attn_v.weight - [   576,    192,      1,      1], type =    f16, size =     0.21 MiB ->     0.11 MiB (q8_0)
    [  26/ 272] blk.2.ffn_norm.weight - [   576,      1,      1,      1], type =    f32, size =    0.002 MiB

A line without ``-> ... (type)`` keeps the tensor's type. The rules live in the vendored
``src/llama-quant.cpp``; running them rather than restating them is what makes the synthetic
file's type mix the one ``llama-quantize`` produces. The result is cached per architecture row,
file type and llama.cpp commit (the rules are its source).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from ..build import BuildInfo
from ..errors import UserError
from ..paths import cache_dir, code_key, content_key, write_atomic
from ..selection.published import Hyperparameters, tensors
from . import writer

_LINE = re.compile(
    r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)\s+- \[([\d,\s]+)\], type =\s*(\w+), size =\s*[\d.]+ MiB"
    r"(?: ->\s*[\d.]+ MiB \((\w+)\))?"
)
_IMATRIX = "will require an imatrix"


@dataclass(frozen=True)
class Plan:
    """What the synthetic file will hold: tensors in llama-quantize's order, and its header length."""

    ftype: str
    file_type: int  # llama_ftype, the value of general.file_type
    tensors: tuple[tuple[str, tuple[int, ...], str], ...]  # name, ggml shape, type
    header_bytes: int  # the header padded to the alignment; the same for the probe and the final file

    @property
    def data_bytes(self) -> int:
        return writer.data_bytes(self.tensors)

    @property
    def file_bytes(self) -> int:
        return self.header_bytes + self.data_bytes

    def type_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, _, t in self.tensors:
            counts[t] = counts.get(t, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


@lru_cache(maxsize=4)
def file_types(quantize_tool: str) -> dict[str, int]:
    """Type name -> llama_ftype number, from llama-quantize's own usage text (``  15  or  Q4_K_M :``)."""
    proc = subprocess.run([quantize_tool, "--help"], capture_output=True, text=True)
    found = re.findall(r"^\s*(\d+)\s+or\s+([A-Z0-9_]+)\s*:", proc.stdout + proc.stderr, re.M)
    return {name: int(number) for number, name in found}


def probe_tensors(hp: Hyperparameters) -> list[tuple[str, tuple[int, ...], str]]:
    """The converter's tensor set: F16 matrices, F32 vectors."""
    return [(name, shape, "F16" if len(shape) > 1 else "F32") for name, shape in tensors(hp)]


def parse(output: str, expected: int) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, ggml shape, chosen type) of every tensor line of a ``--dry-run`` log."""
    out = []
    for line in output.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        dims = [int(d) for d in m.group(4).replace(" ", "").split(",") if d]
        while len(dims) > 1 and dims[-1] == 1:  # ggml prints four dimensions; the file has the real ones
            dims.pop()
        out.append((m.group(3), tuple(dims), (m.group(6) or m.group(5)).upper()))
    if len(out) != expected:
        tail = "\n".join(output.strip().splitlines()[-6:])
        raise UserError(f"llama-quantize --dry-run listed {len(out)} of {expected} tensors; its output ended:\n{tail}")
    return out


def plan(hp: Hyperparameters, ftype: str, build: BuildInfo) -> Plan:
    """The per-tensor types for ``ftype`` (cached by row, type, llama.cpp commit and this code)."""
    tool = str(build.tool("llama-quantize"))
    numbers = file_types(tool)
    if ftype not in numbers:
        raise UserError(f"Unknown quant type {ftype!r}; this llama-quantize makes: {', '.join(numbers)}.")
    key = content_key(asdict(hp), ftype, build.llama_cpp_commit, code_key("synth"))
    cached = cache_dir("synth", "plans") / f"{key}.json"
    if cached.exists():
        saved = json.loads(cached.read_text())
        return Plan(ftype, saved["file_type"], tuple((n, tuple(s), t) for n, s, t in saved["tensors"]), saved["header"])
    probe_list = probe_tensors(hp)
    with tempfile.TemporaryDirectory(prefix=".probe-", dir=cache_dir("synth")) as tmp:
        probe = Path(tmp) / "probe-f16.gguf"
        header = writer.write_probe(probe, hp, probe_list, numbers["F16"])
        proc = subprocess.run([tool, "--dry-run", str(probe), ftype], capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        tail = "\n".join(log.strip().splitlines()[-6:])
        raise UserError(f"llama-quantize --dry-run refused {ftype} for {hp.model} (exit {proc.returncode}):\n{tail}")
    if _IMATRIX in log:
        raise UserError(
            f"llama-quantize makes {ftype} only with an importance matrix, which changes its type choices; "
            "synth makes only types llama-quantize makes without one (e.g. Q4_K_M, Q8_0, Q2_K)."
        )
    chosen = parse(log, len(probe_list))
    shapes = dict((n, s) for n, s, _ in probe_list)
    for name, shape, type_name in chosen:
        if shapes.get(name) != shape:
            raise UserError(f"llama-quantize --dry-run reported {name} as {shape}, not {shapes.get(name)}.")
        if not writer.supported(type_name):
            raise UserError(f"{ftype} puts {name} in {type_name}, a type the synthetic writer does not fill.")
    result = Plan(ftype, numbers[ftype], tuple(chosen), header)
    write_atomic(cached, json.dumps({"file_type": result.file_type, "tensors": chosen, "header": header}))
    return result
