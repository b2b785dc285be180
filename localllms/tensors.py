"""What a GGUF file is made of: bytes by tensor group, the types its tensors are stored in,
and the block formats of those types.

Bits per weight of a small model are far above the nominal figure of its quant type, for two
reasons this module makes visible:

* the token embedding (often also the output matrix) is kept at a higher type, and in a small
  model with a large vocabulary it is a large share of the weights;
* k-quants and most i-quants store weights in super-blocks of 256, so a tensor whose rows are
  not a multiple of 256 cannot use them: llama-quantize falls back to a 32-weight type for it
  (``tensor_type_fallback`` in llama.cpp's ``src/llama-quant.cpp``, read by :func:`fallbacks`).
  SmolLM2-135M's rows are 576 wide, so every attention and gate/up matrix falls back.

The block formats (weights per block, bytes per block) come from the ``gguf`` package's
``GGML_QUANT_SIZES``, which mirrors ggml's type traits; nothing here is typed in by hand
except what the letters of each name mean.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from . import gguf_file
from .models import ResolvedModel

GROUPS = ("token embedding", "output", "attention", "feed-forward", "norms", "other")
MIB = 2**20


def group_of(name: str) -> str:
    """The group of a GGUF tensor name (llama.cpp's naming: token_embd, blk.N.attn_q, ...)."""
    if "norm" in name:
        return "norms"
    if name.startswith("token_embd"):
        return "token embedding"
    if name.startswith("output."):
        return "output"
    if ".attn_" in name:
        return "attention"
    if ".ffn_" in name:
        return "feed-forward"
    return "other"


def tensor_table(path: Path) -> pd.DataFrame:
    """One row per tensor: name, group, ggml type, row length, elements and bytes."""
    rows = [(t.name, t.type, t.shape[0], t.n_elements, t.n_bytes) for t in gguf_file.read(Path(path)).tensors]
    df = pd.DataFrame(rows, columns=["name", "type", "row", "elements", "bytes"])
    df.insert(1, "group", [group_of(n) for n in df["name"]])
    return df


def bytes_by_group(models: Sequence[ResolvedModel]) -> pd.DataFrame:
    """Per model: MiB of each tensor group, the embedding's share of all bytes, and bits per
    weight over all tensors and over all but the token embedding."""
    rows = []
    for m in models:
        t = tensor_table(m.path)
        by = t.groupby("group")["bytes"].sum()
        total, elements = int(t["bytes"].sum()), int(t["elements"].sum())
        embd = t[t["group"] == "token embedding"]
        row: dict[str, object] = {"Model": m.display}
        for g in GROUPS:
            if g in by.index or g != "other":
                row[f"{g} (MiB)"] = round(float(by.get(g, 0)) / MIB, 2)
        row["total (MiB)"] = round(total / MIB, 2)
        row["embedding share (%)"] = round(100 * int(embd["bytes"].sum()) / total, 1)
        row["BPW"] = round(8 * total / elements, 2)
        rest_e = elements - int(embd["elements"].sum())
        row["BPW without embedding"] = round(8 * (total - int(embd["bytes"].sum())) / rest_e, 2) if rest_e else None
        rows.append(row)
    return pd.DataFrame(rows).set_index("Model")


def type_mix(models: Sequence[ResolvedModel], groups: Sequence[str] = GROUPS[:4]) -> pd.DataFrame:
    """Per model and tensor group: the ggml types its tensors are stored in, with their count
    (e.g. ``Q4_0 ×60, Q3_K ×30``), largest share of bytes first."""
    rows = []
    for m in models:
        t = tensor_table(m.path)
        row = {"Model": m.display}
        for g in groups:
            sub = t[t["group"] == g]
            if sub.empty:
                row[g] = "—"
                continue
            agg = sub.groupby("type").agg(n=("name", "size"), b=("bytes", "sum")).sort_values("b", ascending=False)
            row[g] = ", ".join(f"{ty} ×{int(r.n)}" for ty, r in agg.iterrows())
        rows.append(row)
    return pd.DataFrame(rows).set_index("Model")


def requested_share(model: ResolvedModel, base_type: str) -> float:
    """Share (%) of a model's matrix bytes (all but norms) stored in ``base_type`` itself."""
    t = tensor_table(model.path)
    t = t[t["group"] != "norms"]
    return round(100 * float(t.loc[t["type"] == base_type, "bytes"].sum()) / float(t["bytes"].sum()), 1)


# --------------------------------------------------------------------------- block formats


def block_format(type_name: str) -> tuple[int, int]:
    """(weights per block, bytes per block) of a ggml type, from gguf's GGML_QUANT_SIZES."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]


def base_type(preset: str) -> str:
    """The ggml type a llama-quantize preset is named after: Q4_K_M -> Q4_K, IQ2_XS -> IQ2_XS."""
    from gguf.constants import GGMLQuantizationType

    if preset in GGMLQuantizationType.__members__:
        return preset
    m = re.fullmatch(r"(Q\d_K)_(?:S|M|L|XL)", preset)
    if m:
        return m.group(1)
    m = re.fullmatch(r"(IQ\d)_M", preset)  # IQ2_M, IQ3_M mix around the _S type
    if m:
        return m.group(1) + "_S"
    raise KeyError(preset)


def meaning(type_name: str) -> str:
    """What the letters of a ggml type's name mean (k-quants: llama.cpp PR 1684; legacy naming:
    issue 1240; i-quants: PRs 4773, 4856, 5196, 5590, 5747)."""
    if type_name in ("F32", "F16", "BF16"):
        return {"F32": "32-bit float", "F16": "16-bit float (IEEE half)", "BF16": "16-bit bfloat"}[type_name]
    m = re.fullmatch(r"Q(\d)_([01])", type_name)
    if m:
        how = "a scale per block, x = d·q" if m.group(2) == "0" else "a scale and a minimum per block, x = d·q + m"
        return f"legacy {m.group(1)}-bit: blocks of 32, {how}"
    m = re.fullmatch(r"Q(\d)_K", type_name)
    if m:
        kind = "scale only" if m.group(1) in "36" else "scale and minimum"
        return f"k-quant {m.group(1)}-bit: super-blocks of 256 in sub-blocks with quantized {kind}"
    if type_name == "IQ4_NL":
        return "i-quant 4-bit non-linear grid (NL), blocks of 32 with a scale"
    if type_name == "IQ4_XS":
        return "i-quant 4-bit non-linear grid, super-blocks of 256 with 6-bit sub-block scales"
    m = re.fullmatch(r"IQ(\d)_(XXS|XS|S|M)", type_name)
    if m:
        size = {"XXS": "extra-extra-small", "XS": "extra-small", "S": "small", "M": "medium"}[m.group(2)]
        return f"i-quant ~{m.group(1)}-bit: groups of weights coded as points of a lattice codebook, {size}"
    return ""


def quant_type_table(types: Sequence[str]) -> pd.DataFrame:
    """Block size, bytes per block and bits per weight of each ggml type, and its name's meaning."""
    rows = []
    for ty in dict.fromkeys(types):
        block, nbytes = block_format(ty)
        rows.append(
            {
                "type": ty,
                "weights per block": block,
                "bytes per block": nbytes,
                "bits per weight": round(8 * nbytes / block, 4),
                "meaning": meaning(ty),
            }
        )
    return pd.DataFrame(rows).set_index("type")


# --------------------------------------------------------------------------- llama-quantize's fallbacks


def fallbacks(source: Path | None = None) -> dict[str, str]:
    """What llama-quantize stores a tensor in when its rows are not a multiple of the target type's
    block, read from ``tensor_type_fallback`` in the vendored ``src/llama-quant.cpp``."""
    if source is None:
        from .build import llama_cpp_source

        source = llama_cpp_source()
    text = (Path(source) / "src" / "llama-quant.cpp").read_text()
    start = text.index("tensor_type_fallback(")
    body = text[start : text.index("\n}\n", start)]
    out, pending = {}, []
    for line in body.splitlines():
        pending += re.findall(r"case GGML_TYPE_(\w+):", line)
        target = re.search(r"return_type = GGML_TYPE_(\w+)", line)
        if target and pending:
            out.update(dict.fromkeys(pending, target.group(1)))
            pending = []
    return out


def preset_table(presets: Sequence[str], source: Path | None = None) -> pd.DataFrame:
    """Per llama-quantize preset: its base type and bits per weight, and the 32-weight type a
    tensor falls back to when its rows are not a multiple of 256, with that type's bits per weight."""
    fb = fallbacks(source)
    rows = []
    for p in presets:
        base = base_type(p)
        block, nbytes = block_format(base)
        back = fb.get(base) if block > 32 else None
        row = {"preset": p, "base type": base, "base BPW": round(8 * nbytes / block, 4),
               "fallback for rows not a multiple of 256": back or "—"}  # fmt: skip
        if back:
            b2, n2 = block_format(back)
            row["fallback BPW"] = round(8 * n2 / b2, 4)
        else:
            row["fallback BPW"] = "—"  # no fallback: shown as the column beside it shows it, not as NaN
        rows.append(row)
    return pd.DataFrame(rows).set_index("preset")
