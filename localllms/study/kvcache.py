"""Quantized KV caches: the reference scored with its K and V caches at each type, against the
reference with its default f16 cache, and the memory each type needs per token of context.

The evaluator runs the same F16 weights with ``type_k = type_v = q8_0`` (or ``q4_0``) and flash
attention on, which a quantized V cache needs (``evaluate.Scored``). The bytes come from the
model's architecture (``selection.memory``: layers x KV heads x (key + value length) per cell) and
each cache type's block format (``tensors.block_format``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

import localllms.selection.memory as memory

from .. import evaluate, metrics
from ..errors import UserError
from ..tensors import block_format
from .pipeline import Study, first_prompts

REFERENCE_CACHE = "f16"  # the cache the reference (and every variant of the study) runs with


def bytes_per_element(cache_type: str) -> float:
    """Bytes per cached K or V element: the type's block bytes over its block's elements."""
    block, nbytes = block_format(cache_type.upper())
    return nbytes / block


@dataclass
class KVCacheStudy:
    cache_types: list[str]
    evaluation: evaluate.PromptEvaluation
    table: pd.DataFrame


def run(
    study: Study,
    cache_types: Sequence[str],
    contexts: Sequence[int] = (2048, 8192),
    num_prompts: int | None = None,
    progress_bars: bool = True,
) -> KVCacheStudy:
    """Score the reference with each KV-cache type on the study's first ``num_prompts`` prompts;
    tabulate quality against the f16 cache, and memory."""
    types = [c.strip().lower() for c in cache_types]
    bad = [c for c in types if c not in evaluate.CACHE_TYPES]
    if bad or not types:
        raise UserError(f"KV_CACHE_TYPES must be among {', '.join(evaluate.CACHE_TYPES)}, not {cache_types!r}.")
    ref = study.reference
    scored = [evaluate.Scored(ref, label(c), c) for c in types if c != REFERENCE_CACHE]
    texts = first_prompts(study, num_prompts)
    ev = evaluate.evaluate_prompts(ref, scored, texts, study.threads, study.build, progress_bars)
    arch = memory.architecture(ref)
    shown = metrics.columns(metrics.KV_CACHE)
    rows = []
    for c in types:
        per_el = bytes_per_element(c)
        per_token = memory.kv_bytes(arch, memory.CTX_PAD, cache_bytes=per_el) / memory.CTX_PAD
        row = {"KV cache": c, "bytes per element": round(per_el, 4), "KV per token (KiB)": round(per_token / 1024, 2)}
        for n in contexts:
            row[f"KV at {n} tokens (MiB)"] = round(memory.kv_bytes(arch, n, cache_bytes=per_el) / memory.MIB, 1)
        # the f16 cache is the reference itself, not scored: its row is every metric of an identical variant
        s = metrics.identical() if c == REFERENCE_CACHE else metrics.summarize(ev.per_prompt[label(c)])
        row.update({m.heading: round(s[m.name], m.digits) for m in shown})
        rows.append(row)
    return KVCacheStudy(types, ev, pd.DataFrame(rows).set_index("KV cache"))


def label(cache_type: str) -> str:
    return f"reference, {cache_type} KV cache"


def reading(res: KVCacheStudy, weights_mib: float) -> str:
    """What the KV-cache table says, computed from it: memory saved against quality lost."""
    n_tokens_max = 1 + max((len(s.kld) for lst in res.evaluation.per_prompt.values() for s in lst), default=0)
    t = res.table
    ctx_cols = [c for c in t.columns if c.startswith("KV at ")]
    if REFERENCE_CACHE not in t.index or not ctx_cols:
        return ""
    big = ctx_cols[-1]
    base = t.loc[REFERENCE_CACHE, big]
    out = []
    for c in t.index.drop(REFERENCE_CACHE):
        r = t.loc[c]
        out.append(
            f"* **{c}**: {r[big]:.1f} MiB at {big.removeprefix('KV at ').removesuffix(' (MiB)')} instead of {base:.1f} "
            f"(saves {base - r[big]:.1f} MiB, {100 * (1 - r[big] / base):.0f} %), for a mean KL divergence of "
            f"{r['KLD mean']:.4f} from the f16 cache, the top token kept at {r['Same top (%)']:.1f} % of positions."
        )
    out.append(
        f"* **Scale**: the model's weights are {weights_mib:.1f} MiB, so at "
        f"{big.removeprefix('KV at ').removesuffix(' (MiB)')} the f16 cache is {100 * base / weights_mib:.0f} % "
        f"of them. The prompts scored here are at most {n_tokens_max} tokens long; the cache's effect on quality at long "
        "contexts was not measured."
    )
    return "\n".join(out)
