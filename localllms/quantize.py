"""Make the study's model variants with llama-quantize.

The reference ("base") of the study should be full precision. When the only file
available is already quantized, the reference is an F16 *expansion* of it: the same
weights, dequantized, so it can carry no more information than its source. Its
label says so ("F16 expanded from Q4_1") wherever it appears. A true F16/BF16/F32
file is used as it is and labelled as the original.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from .build import BuildInfo, current_build
from .errors import UserError
from .models import ResolvedModel, read_info, sha256_file
from .paths import cache_dir

FULL_PRECISION = ("F32", "F16", "BF16", "ALL_F32")


@lru_cache(maxsize=4)
def valid_quant_types(quantize_tool: str) -> tuple[str, ...]:
    """The output types this build's llama-quantize accepts, read from its own usage text."""
    proc = subprocess.run([quantize_tool, "--help"], capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    types = re.findall(r"^\s+(?:\d+\s+)?or\s+([A-Z0-9_]+)\s*:", text, re.M)
    types += re.findall(r"^\s+([A-Z][A-Z0-9_]+)\s+:", text, re.M)
    return tuple(dict.fromkeys(t for t in types if t != "COPY"))


def check_quant_types(qtypes: list[str], build: BuildInfo | None = None) -> list[str]:
    """Normalise quant type names; an unknown one gets a sentence listing the valid ones."""
    build = build or current_build()
    valid = valid_quant_types(str(build.tool("llama-quantize")))
    out = []
    for q in qtypes:
        name = q.strip().upper()
        if name not in valid:
            raise UserError(f"Unknown quant type {q!r}; valid types for this llama-quantize are: {', '.join(valid)}.")
        out.append(name)
    return out


def reference_label(source_quant: str) -> str:
    if source_quant in FULL_PRECISION:
        return f"{source_quant} (original)"
    return f"F16 expanded from {source_quant}"


def _run_quantize(build: BuildInfo, src: Path, dst: Path, qtype: str) -> None:
    partial = dst.with_name(dst.name + ".partial")
    cmd = [str(build.tool("llama-quantize")), "--allow-requantize", str(src), str(partial), qtype]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not partial.exists():
        partial.unlink(missing_ok=True)
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        raise UserError(f"llama-quantize could not make {qtype} from {src.name} (exit {proc.returncode}):\n{tail}")
    partial.replace(dst)  # only a finished file gets the real name


def _derived(model: ResolvedModel, build: BuildInfo, qtype: str, label: str, kind: str) -> ResolvedModel:
    out_dir = cache_dir("models", "derived")
    dst = out_dir / f"{model.sha256[:16]}-{build.key}-{qtype}.gguf"
    if not dst.exists():
        _run_quantize(build, model.path, dst, qtype)
    info = read_info(dst)
    return ResolvedModel(
        spec=f"{model.spec}@{qtype}",
        path=dst,
        source=f"{kind} of {model.path.name} by llama-quantize --allow-requantize ({build.llama_cpp_commit})",
        sha256=sha256_file(dst),
        info=info,
        label=label,
        provenance={
            "parent_sha256": model.sha256,
            "parent_quant": model.info.quant_type,
            "llama_cpp_commit": build.llama_cpp_commit,
        },
    )


def make_reference(model: ResolvedModel, build: BuildInfo | None = None) -> ResolvedModel:
    """The study's base: the model itself if full precision, else its F16 expansion."""
    build = build or current_build()
    if model.info.quant_type in FULL_PRECISION:
        return replace(model, label=reference_label(model.info.quant_type))
    return _derived(model, build, "F16", reference_label(model.info.quant_type), "F16 expansion")


def quantize(reference: ResolvedModel, qtype: str, build: BuildInfo | None = None) -> ResolvedModel:
    """Quantize the reference to ``qtype`` (cached by reference hash, build and type)."""
    build = build or current_build()
    (qtype,) = check_quant_types([qtype], build)
    return _derived(reference, build, qtype, qtype, qtype)
