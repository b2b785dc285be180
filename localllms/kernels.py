"""Which matrix-multiplication kernel this build's CPU back end runs for each weight type.

Read from the vendored ggml source (``ggml/src/ggml-cpu``) and the build's CPU features, in
the order ggml tries them for a matrix product with a batch of tokens (prompt processing):

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

import pandas as pd

X86_FEATURES = {"avx": "avx", "avx2": "avx2", "avx512": "avx512f"}  # ggml_cpu_has_X -> /proc/cpuinfo flag


@dataclass(frozen=True)
class MatmulPaths:
    """The types each fast path takes on this CPU, read from the source."""

    repack: dict[str, str]  # ggml type -> its repacked layout, e.g. "q4_0_8x8_q8_0"
    tiled: tuple[str, ...]
    tinyblas: tuple[str, ...]

    def prompt(self, type_name: str) -> str:
        """The kernel a batch of tokens (prompt processing) runs for weights of this type."""
        if type_name in self.repack:
            return "repack"
        if type_name in self.tiled:
            return "tiled"
        if type_name in self.tinyblas:
            return "tinyBLAS"
        return "generic"

    def generation(self, type_name: str) -> str:
        """The kernel one token at a time (generation) runs for weights of this type."""
        return "repack" if type_name in self.repack else "generic"


def _function(text: str, signature: str, occurrence: int = -1) -> str:
    starts = [m.start() for m in re.finditer(re.escape(signature), text)]
    if not starts:
        raise ValueError(f"{signature!r} not found")
    start = starts[occurrence]
    return text[start : text.index("\n}\n", start)]


def repacked_types(repack_cpp: str, cpu_flags: Sequence[str]) -> dict[str, str]:
    """Types ``ggml_repack_get_optimal_repack_type`` repacks on an x86 CPU with these flags."""
    body = _function(repack_cpp, "ggml_repack_get_optimal_repack_type(const struct ggml_tensor * cur) {")
    parts = re.split(r"cur->type == GGML_TYPE_(\w+)\)", body)
    out = {}
    for name, block in zip(parts[1::2], parts[2::2], strict=True):
        for cond, layout in re.findall(
            r"if \(([^{]*)\)\s*\{\s*if \(cur->ne\[1\] % \d+ == 0\)\s*\{\s*return &(\w+);", block
        ):
            needed = re.findall(r"ggml_cpu_has_(\w+)\(\)", cond)
            x86 = [f for f in needed if f in X86_FEATURES]
            if x86 and all(X86_FEATURES[f] in cpu_flags for f in x86):
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


def matmul_paths(source: Path | None = None, cpu_flags: Sequence[str] | None = None) -> MatmulPaths:
    """The fast paths of the vendored source on this build's CPU."""
    from .build import current_build, llama_cpp_source

    cpu = Path(source or llama_cpp_source()) / "ggml" / "src" / "ggml-cpu"
    flags = list(cpu_flags) if cpu_flags is not None else list(current_build().cpu_features)
    return MatmulPaths(
        repack=repacked_types((cpu / "repack.cpp").read_text(), flags),
        tiled=tiled_types((cpu / "tiled" / "tiled.cpp").read_text()),
        tinyblas=tinyblas_types((cpu / "llamafile" / "sgemm.cpp").read_text()),
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
    return {k: round(100 * float(by.get(k, 0)) / total, 1) for k in ("repack", "tiled", "tinyBLAS", "generic")}
