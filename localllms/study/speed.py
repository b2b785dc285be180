"""Speed as it is used, and why the study's speeds are what they are, read from the study's rounds.

Every configuration below was measured in the study's one set of interleaved rounds
(:mod:`localllms.study.speed_plan` lists them): the main table's, and

* a **depth sweep**: tokens already in the context (``-d``), so generation reads the KV cache as
  well as the weights;
* a **thread sweep**: 1 ... every core, with the memory read bandwidth measured at each count in
  the same rounds, so each model's generation is placed against what that many threads can read;
* the **kernels**: which matrix-multiplication path each variant's layer matrices take in this
  build (``localllms.kernels``), prompt speed with weight repacking on and off, and one variant
  re-made with its slow-path tensors in a type that has a fast kernel (a controlled experiment).

Every comparison is a ratio within each round with its interval (:mod:`localllms.intervals`),
and the sentences that explain the case study's anomalies (:func:`anomalies`) claim a difference
only where that interval excludes 1; what they infer beyond the measurements is labelled as a
hypothesis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

import localllms.selection.memory as memory

from .. import intervals
from ..intervals import Estimate
from ..llama_bench import bytes_per_token
from ..models import ResolvedModel
from ..rounds import Rounds
from . import speed_plan
from .pipeline import Study, variant
from .speed_plan import FAST_SIBLING, GENERIC_SHARE_FOR_EXPERIMENT, bandwidth_label, label, thread_counts

__all__ = ["FAST_SIBLING", "GENERIC_SHARE_FOR_EXPERIMENT", "SpeedStudy", "read", "thread_counts"]


@dataclass
class SpeedStudy:
    rounds: Rounds
    models: list[ResolvedModel]  # the reference and the swept variants
    threads: int  # the study's (every core by default)
    counts: list[int]  # thread counts swept
    depths: list[int]
    bytes_per_token: dict[str, int]  # weights read per generated token, per model
    kv_bytes: dict[tuple[str, int], int]  # KV cache read per token at a depth, per model
    kernel_shares: pd.DataFrame  # every model of the study: % of layer-matrix bytes per kernel path
    everyone: list[str]  # every model of the study, and the re-made variants
    experiment: dict[str, str]  # variant label -> the re-made variant's label


def read(study: Study) -> SpeedStudy:
    """The sweeps, the kernel paths and the repack/experiment runs of a study run with a sweep."""
    if study.plan is None:
        raise ValueError("the study was run without part two's speeds: pass plan=study.SpeedPlan(...) to study.run")
    s = study.plan
    models = [study.reference, *(variant(study, q) for q in s.quants if q != study.reference.display)]
    shares = speed_plan.kernel_shares([study.reference, *study.variants], study.paths)
    kv = {}
    for m in models:
        arch = memory.architecture(m)
        for d in s.depths:
            kv[(m.display, d)] = memory.kv_bytes(arch, d) if d else 0
    everyone = [study.reference, *study.variants, *study.experiments.values()]
    return SpeedStudy(
        rounds=study.speed,
        models=models,
        threads=study.threads,
        counts=thread_counts(s.threads, study.threads),
        depths=sorted(set(s.depths) | {0}),
        bytes_per_token={m.display: bytes_per_token(m.path) for m in everyone},
        kv_bytes=kv,
        kernel_shares=pd.DataFrame.from_dict(shares, orient="index").rename_axis("Model"),
        everyone=[m.display for m in everyone],
        experiment={k: v.display for k, v in study.experiments.items()},
    )


def _at(s: SpeedStudy, model: str, threads: int | None = None, depth: int = 0, repack: bool = True) -> str:
    """The label of a configuration (the study's own threads give the main table's label)."""
    return label(model, None if threads in (None, s.threads) else threads, depth, repack)


def _bw(s: SpeedStudy, threads: int) -> list[float]:
    return s.rounds.values(bandwidth_label(threads), "bw")


def share_of_bandwidth(s: Rounds, lab: str, bytes_per_token: int, threads: int) -> Estimate:
    """Generation's read rate over the bandwidth measured in the same round, in %."""
    tg = s.values(lab, "tg")
    bw = s.values(bandwidth_label(threads), "bw")
    return intervals.estimate([100 * t * bytes_per_token / 1e9 / b for t, b in zip(tg, bw, strict=True)])


# --------------------------------------------------------------------------- tables


def depth_table(s: SpeedStudy) -> pd.DataFrame:
    """Prompt and generation tokens/s per depth; generation relative to depth 0 in the same round,
    and as the bytes read per token (weights plus the K and V of every cached token) would have it."""
    rows = []
    for m in s.models:
        name = m.display
        for d in s.depths:
            lab = _at(s, name, depth=d)
            w, kv0, kv = s.bytes_per_token[name], s.kv_bytes[(name, 0)], s.kv_bytes[(name, d)]
            rows.append(
                {
                    "Model": name,
                    "Depth": d,
                    "Prompt (tok/s)": s.rounds.estimate(lab, "pp").text(),
                    "Generation (tok/s)": s.rounds.estimate(lab, "tg").text(),
                    "MB read per token": round((w + kv) / 1e6, 1),
                    "Generation vs depth 0": "—" if d == 0 else s.rounds.ratio(lab, name, "tg").text(2),
                    "If bytes alone counted": round((w + kv0) / (w + kv), 2),
                }
            )
    return pd.DataFrame(rows).set_index(["Model", "Depth"])


def thread_table(s: SpeedStudy) -> pd.DataFrame:
    """Tokens/s per thread count, and generation's read rate against the bandwidth that many
    threads measured in the same round."""
    rows = []
    for m in s.models:
        name = m.display
        for t in s.counts:
            lab = _at(s, name, threads=t)
            tg = s.rounds.values(lab, "tg")
            rows.append(
                {
                    "Model": name,
                    "Threads": t,
                    "Prompt (tok/s)": s.rounds.estimate(lab, "pp").text(),
                    "Generation (tok/s)": s.rounds.estimate(lab, "tg").text(),
                    "Achieved read (GB/s)": round(float(np.nanmedian(tg)) * s.bytes_per_token[name] / 1e9, 2),
                    "Bandwidth, same threads (GB/s)": intervals.estimate(_bw(s, t)).text(2),
                    "Share (%)": share_of_bandwidth(s.rounds, lab, s.bytes_per_token[name], t).text(1),
                }
            )
    return pd.DataFrame(rows).set_index(["Model", "Threads"])


def repack_table(s: SpeedStudy) -> pd.DataFrame:
    """Prompt tokens/s with weight repacking off and on, per model, and on over off within each round."""
    rows = []
    for name in s.everyone:
        on, off = _at(s, name), _at(s, name, repack=False)
        ratio = s.rounds.ratio(on, off, "pp")
        rows.append(
            {
                "Model": name,
                "Prompt, repack off (tok/s)": s.rounds.estimate(off, "pp").text(),
                "Prompt, repack on (tok/s)": s.rounds.estimate(on, "pp").text(),
                "On / off": ratio.text(2),
                "Separated": intervals.comparison(ratio, "yes: faster on", "yes: slower on")
                if ratio.excludes(1.0)
                else "no",
            }
        )
    return pd.DataFrame(rows).set_index("Model")


def repack_ratios(s: SpeedStudy) -> dict[str, Estimate]:
    return {name: s.rounds.ratio(_at(s, name), _at(s, name, repack=False), "pp") for name in s.everyone}


# --------------------------------------------------------------------------- the reading


def anomalies(study_rows: pd.DataFrame, s: SpeedStudy) -> str:
    """The case study's speed anomalies, explained with the measurements above (computed)."""
    out = []
    ref = study_rows.loc[study_rows["quant"] == study_rows["reference_label"], "quant"].iloc[0]
    quants = [q for q in study_rows["quant"] if q != ref]
    g = s.kernel_shares["generic"]
    # 1. prompt processing: the slowest variant against the median of the others, round by round
    if len(quants) > 1:
        pp = {q: s.rounds.values(q, "pp") for q in quants}
        slow = min(quants, key=lambda q: np.nanmedian(pp[q]))
        others = [q for q in quants if q != slow]
        per_round = [v / np.median([pp[o][i] for o in others]) for i, v in enumerate(pp[slow])]
        rel = intervals.estimate(per_round)
        slow_est = s.rounds.estimate(slow, "pp")
        if rel.excludes(1.0) and rel.hi < 1:
            text = (
                f"* **Why {slow} processes prompts at {slow_est.text(0)} tok/s, {rel.times()} the median of the "
                "other variants in the same round.** "
            )
            if g.get(slow, 0) > 0 and g.get(slow, 0) == g.max():
                rest = g.drop(index=slow)
                text += (
                    f"{g[slow]:.1f} % of its layer-matrix bytes are in a type that has no repacked, tiled or tinyBLAS "
                    f"kernel in this build, so every product with them runs ggml's generic one-row-at-a-time dot "
                    f"product; the most any other model of the study has on that path is {rest.max():.1f} % "
                    f"({rest.idxmax()})."
                )
            else:
                text += "Its bytes are not the ones most on the generic path; the kernel table does not explain it."
            if slow in s.experiment:
                made = s.experiment[slow]
                r = s.rounds.ratio(made, slow, "pp")
                words = intervals.comparison(r)
                text += (
                    f" Re-made with those tensors in the sibling type that has a tinyBLAS kernel ({made}), the same "
                    f"variant processes prompts at {s.rounds.estimate(made, 'pp').text(0)} tok/s against "
                    f"{slow_est.text(0)} in the same rounds ({r.times()}): "
                    + (
                        "the kernel, not the bits, is the cause."
                        if words == "faster"
                        else "not separated on this machine, so the rounds do not show the kernel as the cause."
                    )
                )
        else:
            text = (
                f"* **Prompt processing**: the slowest variant, {slow}, runs at {rel.times()} the median of the "
                "others within a round: not separated on this machine."
            )
        out.append(text)
    text = repack_reading(s)
    if text:
        out.append(text)
    out.append(roofline_reading(s))
    out.append(depth_reading(s))
    return "\n".join(t for t in out if t)


def repack_reading(s: SpeedStudy) -> str | None:
    """Repacking on against off, per model: it helps a model only where the ratio's interval lies
    above 1; the models the switch cannot change show what the rounds' own spread looks like."""
    ratios = repack_ratios(s)
    repacked = [m for m in s.everyone if s.kernel_shares["repack"].get(m, 0) > 0]
    if not repacked:
        return None
    unrepacked = [m for m in s.everyone if m not in repacked]
    helped = [m for m in repacked if ratios[m].lo > 1]
    text = (
        "* **Repacking** (weights rearranged at load time for the CPU's vector units), prompt speed on over off "
        "within each round: " + "; ".join(f"{m} {ratios[m].times()}"
                                             for m in repacked) + ". "
    )  # fmt: skip
    if unrepacked and all(ratios[m].has_interval for m in unrepacked):
        lo = min(ratios[m].lo for m in unrepacked)
        hi = max(ratios[m].hi for m in unrepacked)
        text += f"The models with no repacked tensor, which the switch cannot change, range {lo:.2f}–{hi:.2f}. "
    if helped:
        return text + f"Repacking helps {', '.join(helped)}: the interval lies above 1."
    return text + "For no repacked model does the interval lie above 1: not separated on this machine."


def roofline_reading(s: SpeedStudy) -> str:
    """Generation against the bandwidth measured in the same rounds, by thread count."""
    one, most = min(s.counts), max(s.counts)
    shares = {
        m.display: share_of_bandwidth(s.rounds, _at(s, m.display, threads=one), s.bytes_per_token[m.display], one)
        for m in s.models
    }
    bw1 = intervals.estimate(_bw(s, one))
    text = (
        f"* **Generation against the memory roofline.** With {one} thread, which reads {bw1.text(1)} GB/s, "
        "generation reads (as a share of the bandwidth measured in the same round): "
        + "; ".join(f"{m} {e.text(0)} %" for m, e in shares.items())
        + ". "
    )
    if most != one:
        gains = {m.display: s.rounds.ratio(_at(s, m.display, most), _at(s, m.display, one), "tg") for m in s.models}
        bw_gain = intervals.paired_ratio(_bw(s, most), _bw(s, one))
        text += (
            f"From {one} to {most} threads the bandwidth rises {bw_gain.times()} "
            "and generation speeds up " + ", ".join(f"{r.times()} ({m})" for m, r in gains.items()) + ". "
        )
    ref = s.models[0].display
    quant = [m.display for m in s.models[1:]]
    if quant:
        one_lab = {m: _at(s, m, threads=one) for m in [ref, *quant]}
        ref_share = [
            100 * t * s.bytes_per_token[ref] / 1e9 / b
            for t, b in zip(s.rounds.values(one_lab[ref], "tg"), _bw(s, one), strict=True)
        ]
        above = []
        for q in quant:
            q_share = [
                100 * t * s.bytes_per_token[q] / 1e9 / b
                for t, b in zip(s.rounds.values(one_lab[q], "tg"), _bw(s, one), strict=True)
            ]
            r = intervals.paired_ratio(ref_share, q_share)
            if r.has_interval and r.lo > 1:
                above.append(f"{q} ({r.times()})")
        if len(above) == len(quant):
            text += (
                f"One thread reading {ref}'s 16-bit weights reaches a larger share of what memory delivers than every "
                f"quantized variant, round by round: {', '.join(above)}. A quantized block must be unpacked (bit "
                "fields, scales, minimums) and each activation row quantized to 8 bits before the dot product, so "
                "quantized generation here is limited by that arithmetic as well as by memory. *Hypothesis, not "
                "separated by these measurements*: the rest of the gap is the work each token costs besides reading "
                "weights (attention, norms, threads waiting for each other after each operation), which weighs more "
                "the fewer bytes a variant reads."
            )
        elif above:
            text += (
                f"{ref} reaches a larger share than {', '.join(above)} round by round; for the other variants the "
                "difference is not separated on this machine."
            )
        else:
            text += f"No variant's share is separated from {ref}'s on this machine."
    return text


def depth_reading(s: SpeedStudy) -> str:
    deepest = max(s.depths)
    if deepest == 0:
        return ""
    parts = []
    for m in s.models:
        name = m.display
        r = s.rounds.ratio(_at(s, name, depth=deepest), name, "tg")
        w = s.bytes_per_token[name]
        by_bytes = (w + s.kv_bytes[(name, 0)]) / (w + s.kv_bytes[(name, deepest)])
        below = r.has_interval and r.hi < by_bytes
        parts.append(
            f"{name} {r.times()} (bytes alone: ×{by_bytes:.2f}"
            + (", below it" if below else ", not separated from it")
            + ")"
        )
    return (
        f"* **Speed as the context fills**: with {deepest:,} tokens already in the context, generation runs at "
        + "; ".join(parts)
        + " of its speed on an empty context, within each round. Each new token also reads the K and V of every "
        "cached token; where the measured fall lies below what the bytes alone would give, attention's arithmetic "
        "adds to it."
    )
