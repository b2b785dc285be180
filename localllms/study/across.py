"""Two models side by side: the same study code on a second model, and which conclusions hold
for both (computed from their rows).

The second model's study is a reduced run of :func:`localllms.study.pipeline.run` (fewer types
and prompts, stated on the page) so the default book stays within its time budget. Each study
also scores its reference re-quantized to the source file's own type: when the reference is an
expansion of a quantized file, that variant shows how much of a re-quantization's loss is the
second rounding rather than the bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import pandas as pd

from .. import defaults, evaluate, metrics, tensors
from ..models import ResolvedModel
from ..quantize import FULL_PRECISION, quantize
from .config import StudyConfig
from .pipeline import Study, first_prompts, run

OWN = " (the source's own type)"


def second_model(requested: str, first: str) -> str:
    """The model to set beside ``first``: ``requested``, or when that is the same model, the first
    catalog candidate that differs (so ``MODEL=gemma-3-270m`` is compared with SmolLM2)."""
    if requested != first:  # names compared, not files: resolving a large vocabulary takes seconds
        return requested
    return next(c for c in defaults.CANDIDATES if c != first)


def run_second(
    model: str,
    quant_types: Sequence[str],
    num_prompts: int,
    like: StudyConfig,
    rounds: int = defaults.SECOND_ROUNDS,
    progress_bars: bool = True,
) -> Study:
    """The reduced study of the second model: its own types, prompt count and speed rounds,
    every other declared parameter as ``like``, so the comparison chapter reuses its cached rows."""
    cfg = replace(like, model=model, quant_types=tuple(quant_types), num_prompts=num_prompts, rounds=rounds)
    return run(cfg, progress_bars)


@dataclass
class OwnType:
    variant: ResolvedModel
    summary: dict[str, float]


def own_type(study: Study, num_prompts: int, progress_bars: bool = True) -> OwnType | None:
    """The reference re-quantized to the source file's type, scored on the study's first
    ``num_prompts`` prompts (None when the source is full precision: then there is no earlier
    rounding to repeat)."""
    src = study.model.info.quant_type
    if src in FULL_PRECISION:
        return None
    v = next((x for x in study.variants if x.display == src), None) or quantize(study.reference, src, study.build)
    texts = first_prompts(study, num_prompts)
    ev = evaluate.evaluate_prompts(study.reference, [v], texts, study.threads, study.build, progress_bars)
    return OwnType(v, metrics.summarize(ev.per_prompt[v.display]))


def side_by_side(studies: Sequence[Study], owns: Sequence[OwnType | None], num_prompts: int) -> pd.DataFrame:
    """Per model and variant: bits per weight and the quality figures on the first ``num_prompts``
    prompts (the same texts for every model), the source's own type marked."""
    shown = metrics.columns(metrics.TWO_MODELS)
    rows = []
    for st, own in zip(studies, owns, strict=True):
        q = st.rows[st.rows["quant"] != st.rows["reference_label"]]
        per_prompt = st.evaluation.per_prompt
        entries = [
            (r["quant"], r["bpw"], metrics.summarize(per_prompt[r["quant"]][:num_prompts])) for _, r in q.iterrows()
        ]
        if own is not None and own.variant.display not in set(q["quant"]):
            entries.append((own.variant.display, own.variant.info.bits_per_weight, own.summary))
        for quant, bpw, r in entries:
            rows.append(
                {
                    "Model": st.model.spec,
                    "Variant": quant + (OWN if own is not None and quant == own.variant.display else ""),
                    "BPW": round(float(bpw), 2),
                    **{m.heading: round(float(r[m.name]), m.digits) for m in shown},
                    "Prompts": int(r["n_prompts"]),
                }
            )
    return pd.DataFrame(rows).sort_values(["Model", "BPW"], kind="stable").set_index(["Model", "Variant"])


def reading(studies: Sequence[Study], table: pd.DataFrame) -> str:
    """Which conclusions hold for every model, computed from the side-by-side table."""
    out = []
    own_rows = table[table.index.get_level_values("Variant").str.endswith(OWN)]
    for (model, variant), r in own_rows.iterrows():
        others = table.loc[model].drop(index=variant)
        bigger = others[others["BPW"] >= r["BPW"]]
        lower = int((others["KLD mean"] < r["KLD mean"]).sum())
        out.append(
            f"* **{model}, re-quantized to {variant.removesuffix(OWN)}** (the type its file came in): KL divergence "
            f"{r['KLD mean']:.4f}, top token kept at {r['Same top (%)']:.1f} %; "
            + (
                "no other variant comes closer to the reference"
                if lower == 0
                else f"{lower} variant{'s' if lower > 1 else ''} of the {len(others)} come{'s' if lower == 1 else ''} closer"
            )
            + (f", including {len(bigger)} with as many bits or more." if len(bigger) and lower == 0 else ".")
        )
    plain = table.rename(index=lambda v: v.removesuffix(OWN), level="Variant")
    common = None
    for model in plain.index.get_level_values("Model").unique():
        names = set(plain.loc[model].index)
        common = names if common is None else common & names
    common = sorted(common or [], key=lambda v: float(plain.xs(v, level="Variant")["BPW"].mean()))
    if len(common) >= 2:
        models = list(plain.index.get_level_values("Model").unique())
        orders = {m: plain.loc[m].loc[common, "KLD mean"].rank().tolist() for m in models}
        worst = {m: plain.loc[m].loc[common, "KLD mean"].idxmax() for m in models}
        same_order = len({tuple(v) for v in orders.values()}) == 1
        out.append(
            f"* **The ladder across models** ({', '.join(common)}): the order of KL divergence is "
            + ("the same for both models" if same_order else "not the same for both models")
            + "; the largest loss is "
            + "; ".join(f"{w} for {m}" for m, w in worst.items())
            + "."
        )
    if studies:  # the embedding's share, read from each study's reference file
        shares = {st.model.spec: float(tensors.bytes_by_group([st.reference])["embedding share (%)"].iloc[0])
                  for st in studies}  # fmt: skip
        text = "* **The embedding's weight**: the token embedding is " + " and ".join(
            f"{v:.0f} % of {m}'s F16 reference" for m, v in shares.items()
        )
        if len(common) >= 1 and len(shares) == 2:
            t0 = common[0]
            bpw = {m: float(plain.loc[m].loc[t0, "BPW"]) for m in shares}
            big, small = max(shares, key=shares.get), min(shares, key=shares.get)
            text += f"; at {t0}, {big} averages {bpw[big]:.2f} bits per weight and {small} {bpw[small]:.2f}" + (
                ", the larger embedding share going with the higher figure." if bpw[big] > bpw[small] else "."
            )
        out.append(text if text.endswith(".") else text + ".")
    return "\n".join(out)


@dataclass
class Comparison:
    studies: list[Study]
    owns: list[OwnType | None]
    table: pd.DataFrame
    num_prompts: int  # the first prompts every model's variants are compared on

    def reading(self) -> str:
        return reading(self.studies, self.table)

    def describe(self) -> str:
        s = self.studies[-1]
        return (
            f"{s.model.info.name} ({s.model.path.name}): reference {s.reference.label}; "
            f"{', '.join(v.display for v in s.variants)} on the first {len(s.prompts.texts)} prompts; "
            f"{s.config.rounds} speed rounds of llama-bench -p {s.config.n_prompt} -n {s.config.n_gen}; "
            f"both models' variants compared on the first {self.num_prompts} prompts"
        )


def compare(
    first: Study,
    second: str | None,
    quant_types: Sequence[str],
    num_prompts: int,
    rounds: int = defaults.SECOND_ROUNDS,
    progress_bars: bool = True,
) -> Comparison | None:
    """The second model's reduced study beside the first (None when ``second`` is None)."""
    if not second:
        return None
    name = second_model(second, first.config.model)
    other = run_second(name, quant_types, num_prompts, first.config, rounds, progress_bars)
    studies = [first, other]
    n = min(len(s.prompts.texts) for s in studies)  # both models judged on the same texts
    owns = [own_type(s, n, progress_bars) for s in studies]
    return Comparison(studies, owns, side_by_side(studies, owns, n), n)
