"""Which configurations a study's speed rounds hold.

Every speed of the case study is measured in one set of interleaved rounds
(:mod:`localllms.rounds`), so a configuration printed in two tables is one measurement and any
two can be compared round by round:

* the **main table**: every model (reference and variants) at the study's threads, empty context,
  ``N_PROMPT`` prompt tokens and ``N_GEN`` generated ones;
* the **depth sweep**: the swept models with tokens already in the context (``-d``);
* the **thread sweep**: the swept models at fewer threads, and the read bandwidth at every count
  (the roofline's ceiling, measured in the same rounds);
* the **kernels**: every model's prompt speed with weight repacking off, and a variant re-made with
  its slow-path tensors in a type that has a fast kernel (a controlled experiment), both ways.

Labels name the configuration: ``"Q4_K_M"``, ``"Q4_K_M · depth 2048"``, ``"Q4_K_M · 1 thread"``,
``"Q4_K_M · repack off"``, ``"bandwidth · 2 threads"``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .. import kernels, tensors
from ..build import BuildInfo
from ..errors import UserError
from ..models import ResolvedModel
from ..quantize import quantize
from ..rounds import Setting

# A slow-path type and the type of the same block size, without the minimum, that has a fast
# kernel: the experiment re-stores one against the other (fewer bits, so never slower by size).
FAST_SIBLING = {"Q5_1": "Q5_0", "Q4_1": "Q4_0"}
GENERIC_SHARE_FOR_EXPERIMENT = 10.0  # %: a variant with this much of its bytes on the generic path gets re-made


@dataclass(frozen=True)
class SpeedPlan:
    """What part two sweeps beside the main table (None: the main table alone)."""

    quants: tuple[str, ...]  # swept with the reference over depth and threads
    depths: tuple[int, ...]  # tokens already in the context; 0 is the main table's
    threads: tuple[int, ...] | None = None  # None: 1 ... every core
    kernels: bool = True  # repack off, and the kernel experiment

    def __post_init__(self) -> None:
        if not self.depths or min(self.depths) < 0:
            raise UserError(
                f"SWEEP_DEPTHS must be tokens already in the context, 0 or more, not {list(self.depths)!r}."
            )
        if self.threads is not None and (not self.threads or min(self.threads) < 1):
            raise UserError(f"SWEEP_THREADS must be whole numbers of at least 1, not {list(self.threads)!r}.")


def thread_counts(requested: Sequence[int] | None, all_cores: int) -> list[int]:
    """1 ... every core (doubling, and every core itself) when not given."""
    if requested:
        return sorted({int(t) for t in requested})
    counts = {1, all_cores}
    t = 2
    while t < all_cores:
        counts.add(t)
        t *= 2
    return sorted(counts)


def label(model: str, threads: int | None = None, depth: int = 0, repack: bool = True) -> str:
    parts = [model]
    if depth:
        parts.append(f"depth {depth}")
    if threads is not None:
        parts.append(f"{threads} thread{'s' if threads != 1 else ''}")
    if not repack:
        parts.append("repack off")
    return " · ".join(parts)


def bandwidth_label(threads: int) -> str:
    return f"bandwidth · {threads} thread{'s' if threads != 1 else ''}"


def _bench(m: ResolvedModel, lab: str, threads: int, n_prompt: int, n_gen: int, depth: int = 0,
           repack: bool = True) -> Setting:  # fmt: skip
    return Setting(lab, str(m.path), m.sha256, threads, n_prompt, n_gen, depth, repack)


def settings(
    models: Sequence[ResolvedModel],
    threads: int,
    n_prompt: int,
    n_gen: int,
    plan: SpeedPlan | None = None,
    experiments: Sequence[ResolvedModel] = (),
) -> list[Setting]:
    """The configurations of a study's rounds. ``models[0]`` is the reference; ``experiments``
    are re-made variants (measured for prompt speed, repacking on and off)."""
    out = [_bench(m, m.display, threads, n_prompt, n_gen) for m in models]
    out.append(Setting(bandwidth_label(threads), "", "", threads, kind="bandwidth"))
    if plan is None:
        return out
    by_label = {m.display: m for m in models}
    missing = [q for q in plan.quants if q not in by_label]
    if missing:
        raise UserError(
            f"SWEEP_QUANTS names {', '.join(missing)}, which the study did not make; pick from QUANT_TYPES."
        )
    swept = [models[0], *(by_label[q] for q in plan.quants if q != models[0].display)]
    for m in swept:
        for d in plan.depths:
            if d:
                out.append(_bench(m, label(m.display, depth=d), threads, n_prompt, n_gen, depth=d))
        for t in thread_counts(plan.threads, threads):
            if t != threads:
                out.append(_bench(m, label(m.display, threads=t), t, n_prompt, n_gen))
    for t in thread_counts(plan.threads, threads):
        if t != threads:
            out.append(Setting(bandwidth_label(t), "", "", t, kind="bandwidth"))
    if plan.kernels:
        for m in [*models, *experiments]:
            out.append(_bench(m, label(m.display, repack=False), threads, n_prompt, 0, repack=False))
        for m in experiments:
            out.append(_bench(m, m.display, threads, n_prompt, 0))
    return out


def kernel_shares(models: Sequence[ResolvedModel], paths: kernels.MatmulPaths) -> dict[str, dict[str, float]]:
    """% of each model's layer-matrix bytes a prompt batch runs through each kernel family."""
    return {m.display: kernels.kernel_shares(tensors.tensor_table(m.path), paths) for m in models}


def experiments(
    reference: ResolvedModel, variants: Sequence[ResolvedModel], build: BuildInfo, paths: kernels.MatmulPaths
) -> dict[str, ResolvedModel]:
    """Variant label -> the variant re-made with its slow-path layer matrices in their fast sibling
    type, for every variant with at least ``GENERIC_SHARE_FOR_EXPERIMENT`` % of its bytes on the
    generic path."""
    shares = kernel_shares(variants, paths)
    out = {}
    for m in variants:
        if shares[m.display]["generic"] >= GENERIC_SHARE_FOR_EXPERIMENT:
            made = _fast_sibling_variant(reference, m, build, paths)
            if made is not None:
                out[m.display] = made
    return out


def _fast_sibling_variant(
    reference: ResolvedModel, m: ResolvedModel, build: BuildInfo, paths: kernels.MatmulPaths
) -> ResolvedModel | None:
    """``m`` re-made with every layer matrix stored in a slow-path type put in its fast sibling."""
    t = tensors.tensor_table(m.path)
    slow = t[t["group"].isin(("attention", "feed-forward")) & (t["type"].map(paths.prompt) == "generic")]
    slow = slow[slow["type"].isin(FAST_SIBLING)]
    if slow.empty:
        return None
    overrides: dict[str, str] = {}
    for (short, ty), names in slow.groupby([slow["name"].str.split(".").str[-2], "type"])["name"]:
        layers = "|".join(sorted({n.split(".")[1] for n in names}, key=int))
        overrides[rf"^blk\.({layers})\.{re.escape(short)}\.weight$"] = FAST_SIBLING[ty]
    swaps = ", ".join(f"{a}→{b}" for a, b in FAST_SIBLING.items() if a in set(slow["type"]))
    return quantize(reference, m.info.quant_type, build, tensor_types=overrides, label=f"{m.display} ({swaps})")
