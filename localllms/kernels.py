"""Which matrix-multiplication kernel this build's CPU back end runs for each weight type.

Read from the vendored ggml source (``ggml/src/ggml-cpu``) and the features the build reports
compiled in (``llama_print_system_info``: AVX2, AVX512, AMX_INT8, REPACK, LLAMAFILE, ...; recorded
by its smoke test), in the order ggml tries them for a matrix product with a batch of tokens:

0. **AMX**: Intel's tile instructions, for the types ``qtype_has_amx_kernels`` lists
   (``amx/common.h``), when the build has AMX_INT8 (its own buffer type, tried first);
1. **repack**: weights rearranged at load time into an interleaved layout ("CPU_REPACK" buffer)
   with their own GEMM and GEMV kernels (``repack.cpp``, ``ggml_repack_get_optimal_repack_type``);
   which types qualify depends on the CPU's features (AVX2, AVX-512, NEON, ...);
2. **tiled**: a tiled K-quant/i-quant GEMM for batches of 8 tokens or more (``tiled/tiled.cpp``,
   ``ggml_tiled_supported``; ``GGML_CPU_TILED_MM=0`` turns it off);
3. **tinyBLAS**: llamafile's GEMM for batches of 2 tokens or more (``llamafile/sgemm.cpp``,
   the ``case`` branches of ``llamafile_sgemm`` with an x86 implementation);
4. **generic**: ggml's row-by-row dot product (``ggml_vec_dot_<type>``), one output at a time.

Generating one token at a time is a matrix-vector product: only the repacked types have their
own kernel for it (GEMV); every other type runs the generic dot product.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from .build import BuildInfo

# ggml_cpu_has_X() -> the name llama_print_system_info gives it: both say what was compiled in
X86_FEATURES = {"avx": "AVX", "avx2": "AVX2", "avx512": "AVX512"}
# /proc/cpuinfo flag -> compiled-feature name, for callers that pass a CPU's flags
# (never AMX: a CPU with AMX may run a build that leaves it out, as this book's fallback does)
_CPUINFO = {"avx": "AVX", "avx2": "AVX2", "avx512f": "AVX512"}


@dataclass(frozen=True)
class MatmulPaths:
    """The types each fast path takes on this CPU, read from the source."""

    repack: dict[str, str]  # ggml type -> its repacked layout, e.g. "q4_0_8x8_q8_0"
    tiled: tuple[str, ...]
    tinyblas: tuple[str, ...]
    amx: tuple[str, ...] = ()  # empty unless the build has AMX_INT8

    def prompt(self, type_name: str) -> str:
        """The kernel a batch of tokens (prompt processing) runs for weights of this type."""
        if type_name in self.amx:
            return "AMX"
        if type_name in self.repack:
            return "repack"
        if type_name in self.tiled:
            return "tiled"
        if type_name in self.tinyblas:
            return "tinyBLAS"
        return "generic"

    def generation(self, type_name: str) -> str:
        """The kernel one token at a time (generation) runs for weights of this type."""
        if type_name in self.amx:
            return "AMX"
        return "repack" if type_name in self.repack else "generic"


def _function(text: str, signature: str, occurrence: int = -1) -> str:
    starts = [m.start() for m in re.finditer(re.escape(signature), text)]
    if not starts:
        raise ValueError(f"{signature!r} not found")
    start = starts[occurrence]
    return text[start : text.index("\n}\n", start)]


def repacked_types(repack_cpp: str, compiled: Sequence[str]) -> dict[str, str]:
    """Types ``ggml_repack_get_optimal_repack_type`` repacks in an x86 build with these features
    compiled in (``AVX2``, ``AVX512``; /proc/cpuinfo names such as ``avx2`` are accepted too)."""
    compiled = [_CPUINFO.get(f, f) for f in compiled]
    body = _function(repack_cpp, "ggml_repack_get_optimal_repack_type(const struct ggml_tensor * cur) {")
    parts = re.split(r"cur->type == GGML_TYPE_(\w+)\)", body)
    out = {}
    for name, block in zip(parts[1::2], parts[2::2], strict=True):
        for cond, layout in re.findall(
            r"if \(([^{]*)\)\s*\{\s*if \(cur->ne\[1\] % \d+ == 0\)\s*\{\s*return &(\w+);", block
        ):
            needed = re.findall(r"ggml_cpu_has_(\w+)\(\)", cond)
            x86 = [f for f in needed if f in X86_FEATURES]
            if x86 and all(X86_FEATURES[f] in compiled for f in x86):
                out.setdefault(name, layout)
    return out


def tiled_types(tiled_cpp: str) -> tuple[str, ...]:
    """Types the x86 ``ggml_tiled_supported`` accepts (the branch compiled with AVX)."""
    body = _function(tiled_cpp, "static bool ggml_tiled_supported(")
    switch = body[body.index("switch (src0->type)") : body.index("return true;", body.index("switch (src0->type)"))]
    return tuple(re.findall(r"case GGML_TYPE_(\w+):", switch))


def tinyblas_types(sgemm_cpp: str) -> tuple[str, ...]:
    """Weight types ``llamafile_sgemm`` has an x86 (AVX/AVX2/AVX-512) implementation for."""
    body = _function(sgemm_cpp, "bool llamafile_sgemm(")
    parts = re.split(r"\n\s*case GGML_TYPE_(\w+): \{", body)
    return tuple(name for name, block in zip(parts[1::2], parts[2::2], strict=True) if "__AVX" in block)


def amx_types(common_h: str) -> tuple[str, ...]:
    """Types ``qtype_has_amx_kernels`` accepts (``amx/common.h``)."""
    body = common_h[common_h.index("qtype_has_amx_kernels") :]
    return tuple(re.findall(r"GGML_TYPE_(\w+)", body[: body.index(";")]))


def matmul_paths(
    source: Path | None = None, cpu_flags: Sequence[str] | None = None, compiled: Sequence[str] | None = None
) -> MatmulPaths:
    """The fast paths of the vendored source in this build: ``compiled`` is what the build reports
    compiled in (default: the current build's smoke-test record); ``cpu_flags``, /proc/cpuinfo
    names, is the older way to say the same on a build compiled for its CPU."""
    from .build import current_build, llama_cpp_source

    cpu = Path(source or llama_cpp_source()) / "ggml" / "src" / "ggml-cpu"
    if compiled is None and cpu_flags is None:
        build = current_build()
        compiled = build.compiled or None  # a build recorded before smoke tests: from its CPU's flags
        cpu_flags = build.cpu_features
    if compiled is None:
        compiled = [_CPUINFO.get(f, f) for f in cpu_flags or ()] + ["REPACK", "LLAMAFILE"]  # ggml's defaults
    has = set(compiled)
    return MatmulPaths(
        repack=repacked_types((cpu / "repack.cpp").read_text(), list(has)) if "REPACK" in has else {},
        tiled=tiled_types((cpu / "tiled" / "tiled.cpp").read_text()) if "AVX" in has else (),
        tinyblas=tinyblas_types((cpu / "llamafile" / "sgemm.cpp").read_text()) if "LLAMAFILE" in has else (),
        amx=amx_types((cpu / "amx" / "common.h").read_text()) if "AMX_INT8" in has else (),
    )


def path_table(types: Sequence[str], paths: MatmulPaths) -> pd.DataFrame:
    """For each type: the prompt-processing and the generation kernel on this build."""
    return pd.DataFrame(
        [
            {
                "type": t,
                "prompt (batch)": paths.prompt(t),
                "generation (one token)": paths.generation(t),
                "repacked layout": paths.repack.get(t, "—"),
            }
            for t in dict.fromkeys(types)
        ]  # fmt: skip
    ).set_index("type")


def kernel_shares(tensors: pd.DataFrame, paths: MatmulPaths) -> dict[str, float]:
    """Share (%) of the bytes of a model's layer matrices (attention and feed-forward) that a
    prompt batch runs through each kernel.

    ``tensors`` is :func:`localllms.tensors.tensor_table` of the model. The output matrix is left
    out: llama-bench's prompt test (like any prompt that is not scored) asks for the logits of the
    last token only, so the output product is one matrix-vector product per batch.
    """
    mats = tensors[tensors["group"].isin(("attention", "feed-forward"))]
    by = mats.groupby(mats["type"].map(paths.prompt))["bytes"].sum()
    total = float(by.sum())
    families = (
        ("AMX", "repack", "tiled", "tinyBLAS", "generic") if paths.amx else ("repack", "tiled", "tinyBLAS", "generic")
    )
    return {k: round(100 * float(by.get(k, 0)) / total, 1) for k in families}


FAMILIES = {  # what each family is, in a phrase, for the build page
    "AMX": "Intel AMX tile instructions (their own weight buffer, tried first)",
    "repack": "weights rearranged at load into interleaved blocks, with their own GEMM and GEMV",
    "tiled": "a tiled GEMM for K-quants and i-quants, batches of 8 tokens or more",
    "tinyBLAS": "llamafile's GEMM, batches of 2 tokens or more",
    "generic": "ggml's row-by-row dot product: every type, and every type's one-token product",
}


def build_page(build: BuildInfo) -> str:
    """Markdown for the llama.cpp page: this build's configuration, what it compiled in (as its
    smoke test read it from the build), and the kernel families it has, with their types."""
    from .cpu import compiled_features

    compiled = compiled_features(build.smoke.get("system_info", ""))
    paths = matmul_paths(compiled=compiled) if compiled else matmul_paths(cpu_flags=build.cpu_features)
    has = {
        "AMX": list(paths.amx),
        "repack": list(paths.repack),
        "tiled": list(paths.tiled),
        "tinyBLAS": list(paths.tinyblas),
        "generic": ["all"],
    }
    smoke = build.smoke or {}
    steps = ", ".join(f"{s['tool']} {s['seconds']:.1f} s" for s in smoke.get("steps", []))
    rows = [
        ("llama.cpp", f"{build.llama_cpp_commit} (vendored by llama-cpp-python {build.llama_cpp_python_version})"),
        ("CPU", f"{build.cpu}; SIMD extensions it reports: {' '.join(build.cpu_features) or 'none'}"),
        ("configuration", f"`{build.configuration}`: {build.configuration_reason}"),
        (
            "reader's CMake flags",
            " ".join(f"`{f}`" for f in build.extra_cmake_flags) or "none (`LOCALLLMS_CMAKE_ARGS`)",
        ),
        ("compiled in", " ".join(compiled) or "not recorded (a build made before smoke tests)"),
        ("smoke test", f"{'passed' if smoke.get('passed') else 'not run'}: {steps} (SmolLM2-135M, a few tokens)"),
    ]
    for old in build.replaced:
        rows.append((f"replaced: `{old['configuration']}`", f"{old['crash']} during its smoke test"))
    cell = lambda v: v.replace("|", "/").replace("<", "\\<")  # noqa: E731 - table cells: no pipes, no HTML
    out = ["| | this build |", "| --- | --- |", *(f"| {k} | {cell(v)} |" for k, v in rows), ""]
    out += ["| kernel family | in this build | weight types it takes |", "| --- | --- | --- |"]
    for family, types in has.items():
        present = "yes" if types else "no"
        if family == "AMX" and not types and any(f.startswith("amx") for f in build.cpu_features):
            present = "no: the CPU has AMX, the build leaves it out"
        out.append(
            f"| {family}: {FAMILIES[family]} | {present} | {', '.join(types) if types != ['all'] else 'every type'} |"
        )
    return "\n".join(out) + "\n"
