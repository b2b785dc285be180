"""What the study's files are made of: bytes by tensor group, the types each group is stored in,
the block formats of those types, and why a small model's bits per weight are high (computed)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .. import kernels, tensors
from ..models import ResolvedModel
from ..quantize import FULL_PRECISION, IMATRIX_SUFFIX


def study_types(models: Sequence[ResolvedModel], presets: Sequence[str]) -> list[str]:
    """The ggml types the study meets: each preset's base type, then every type stored in a file."""
    seen: list[str] = []
    for p in presets:
        try:
            seen.append(tensors.base_type(p))
        except KeyError:
            pass
    for m in models:
        seen += list(tensors.tensor_table(m.path)["type"])
    return list(dict.fromkeys(seen))


def type_table(models: Sequence[ResolvedModel], presets: Sequence[str], paths: kernels.MatmulPaths) -> pd.DataFrame:
    """The block format of every type the study meets, what its name means, and its kernels here."""
    types = study_types(models, presets)
    fmt = tensors.quant_type_table(types)
    return fmt.join(kernels.path_table(types, paths))


def bpw_reading(models: Sequence[ResolvedModel], presets: Sequence[str]) -> str:
    """For each preset variant: how far its file's bits per weight are above its type's, and why."""
    groups = tensors.bytes_by_group(models)
    fb = tensors.preset_table([p for p in presets if _known(p)])
    out = []
    for m in models:
        preset = m.display.removesuffix(IMATRIX_SUFFIX)
        if preset in FULL_PRECISION or preset not in fb.index:
            continue
        t = tensors.tensor_table(m.path)
        base = fb.loc[preset, "base type"]
        layer = t[t["group"].isin(("attention", "feed-forward"))]
        in_base = int((layer["type"] == base).sum())
        row = groups.loc[m.display]
        embd_type = ", ".join(sorted(set(t.loc[t["group"] == "token embedding", "type"])))
        text = (
            f"* **{m.display}**: {row['BPW']:.2f} bits per weight against {fb.loc[preset, 'base BPW']:.4g} for a "
            f"{base} block. The token embedding ({row['token embedding (MiB)']:.1f} MiB in {embd_type}, "
            f"{row['embedding share (%)']:.0f} % of the file) adds {row['BPW'] - row['BPW without embedding']:.2f} "
            f"to them: without it the file averages {row['BPW without embedding']:.2f}."
        )
        if in_base < len(layer):
            block = tensors.block_format(base)[0]
            misfit = layer[layer["row"] % block != 0]
            mixed = layer[(layer["row"] % block == 0) & (layer["type"] != base)]
            text += f" Of its {len(layer)} layer matrices, {in_base} are stored as {base}"
            if len(misfit):
                text += (
                    f"; {len(misfit)} have rows of {', '.join(map(str, sorted(set(misfit['row']))))} weights, not a "
                    f"multiple of its {block}-weight block, and are stored as {_counts(misfit)} instead"
                )
            if len(mixed):
                text += f"; {len(mixed)} are given other types by the preset's mix ({_counts(mixed)})"
            text += "."
        out.append(text)
    return "\n".join(out)


def _counts(t: pd.DataFrame) -> str:
    c = t["type"].value_counts()
    return ", ".join(f"{ty} ×{n}" for ty, n in c.items())


def _known(preset: str) -> bool:
    try:
        tensors.base_type(preset)
    except KeyError:
        return False
    return True
