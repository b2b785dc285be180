"""Make the study's model variants with llama-quantize.

The reference ("base") of the study should be full precision. When the only file
available is already quantized, the reference is an F16 *expansion* of it: the same
weights, dequantized, so it can carry no more information than its source. Its
label says so ("F16 expanded from Q4_1") wherever it appears. A true F16/BF16/F32
file is used as it is and labelled as the original.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import asdict, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from .build import BuildInfo, current_build
from .errors import UserError
from .models import ModelInfo, ResolvedModel, read_info, sha256_file
from .paths import cache_dir, content_key, write_atomic

if TYPE_CHECKING:
    from .imatrix import Imatrix

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


class ImatrixRequired(UserError):
    """llama-quantize refuses this type without an importance matrix (it would be garbage)."""


def _run_quantize(
    build: BuildInfo, src: Path, dst: Path, qtype: str, imatrix: Path | None = None, tensor_types: dict | None = None
) -> None:
    partial = dst.with_name(dst.name + ".partial")
    extra = ["--imatrix", str(imatrix)] if imatrix else []
    for name, ty in (tensor_types or {}).items():
        extra += ["--tensor-type", f"{name}={ty.lower()}"]
    cmd = [str(build.tool("llama-quantize")), "--allow-requantize", *extra, str(src), str(partial), qtype]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not partial.exists():
        partial.unlink(missing_ok=True)
        out = proc.stdout + proc.stderr
        if not imatrix and re.search(r"requires an (?:imatrix|importance matrix)", out):
            raise ImatrixRequired(f"llama-quantize makes {qtype} only with an importance matrix (--imatrix).")
        tail = "\n".join(out.strip().splitlines()[-8:])
        raise UserError(f"llama-quantize could not make {qtype} from {src.name} (exit {proc.returncode}):\n{tail}")
    partial.replace(dst)  # only a finished file gets the real name


def _derived(
    model: ResolvedModel,
    build: BuildInfo,
    qtype: str,
    label: str,
    kind: str,
    imatrix: Imatrix | None = None,
    tensor_types: dict[str, str] | None = None,
) -> ResolvedModel:
    out_dir = cache_dir("models", "derived")
    tag = f"-im{imatrix.sha256[:12]}" if imatrix else ""
    if tensor_types:
        tag += "-tt" + content_key(sorted(tensor_types.items()))[:12]
    dst = out_dir / f"{model.sha256[:16]}-{build.key}-{qtype}{tag}.gguf"
    if not dst.exists():
        _run_quantize(build, model.path, dst, qtype, imatrix.path if imatrix else None, tensor_types)
    info = _info(dst)
    how = f" --imatrix {imatrix.path.name}" if imatrix else ""
    how += "".join(f" --tensor-type {k}={v.lower()}" for k, v in (tensor_types or {}).items())
    return ResolvedModel(
        spec=f"{model.spec}@{qtype}{'+imatrix' if imatrix else ''}",
        path=dst,
        source=f"{kind} of {model.path.name} by llama-quantize --allow-requantize{how} ({build.llama_cpp_commit})",
        sha256=sha256_file(dst),
        info=info,
        label=label,
        provenance={
            "parent_sha256": model.sha256,
            "parent_quant": model.info.quant_type,
            "llama_cpp_commit": build.llama_cpp_commit,
            **({"imatrix_sha256": imatrix.sha256} if imatrix else {}),
            **({"tensor_types": dict(tensor_types)} if tensor_types else {}),
        },
    )


def make_reference(model: ResolvedModel, build: BuildInfo | None = None) -> ResolvedModel:
    """The study's base: the model itself if full precision, else its F16 expansion."""
    build = build or current_build()
    if model.info.quant_type in FULL_PRECISION:
        return replace(model, label=reference_label(model.info.quant_type))
    return _derived(model, build, "F16", reference_label(model.info.quant_type), "F16 expansion")


def _info(path: Path) -> ModelInfo:
    """The file's metadata, kept beside it once read (reading a 262k-token vocabulary takes seconds)."""
    st = path.stat()
    side = path.with_name(path.name + ".info.json")
    stamp = [st.st_size, st.st_mtime_ns]
    try:
        saved = json.loads(side.read_text())
        if saved["stamp"] == stamp:
            return ModelInfo(**saved["info"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    info = read_info(path)
    write_atomic(side, json.dumps({"stamp": stamp, "info": asdict(info)}))
    return info


IMATRIX_SUFFIX = "+imatrix"  # the label of a variant quantized with the importance matrix


def quantize(
    reference: ResolvedModel,
    qtype: str,
    build: BuildInfo | None = None,
    imatrix: Imatrix | None = None,
    tensor_types: dict[str, str] | None = None,
    label: str | None = None,
) -> ResolvedModel:
    """Quantize the reference to ``qtype`` (cached by reference hash, build, type, importance
    matrix and overrides); with ``imatrix`` the variant is labelled ``QTYPE+imatrix``.

    ``tensor_types`` overrides the type of the tensors whose name contains a key (llama-quantize
    ``--tensor-type attn_q=q5_0``), for experiments; such a variant needs its own ``label``.
    """
    build = build or current_build()
    (qtype,) = check_quant_types([qtype], build)
    if tensor_types and not label:
        raise UserError("A variant with tensor-type overrides needs a label of its own.")
    label = label or qtype + (IMATRIX_SUFFIX if imatrix else "")
    return _derived(reference, build, qtype, label, qtype, imatrix, tensor_types)
