"""Speed as it is used, and why the study's speeds are what they are.

* a **depth sweep**: llama-bench with tokens already in the context (``-d``), so generation reads
  the KV cache as well as the weights;
* a **thread sweep**: 1 ... every core, with the memory read bandwidth measured at each count,
  so each model's generation can be placed against what that many threads can read;
* the **kernels**: which matrix-multiplication path each variant's layer matrices take in this
  build (``localllms.kernels``), prompt speed with weight repacking on and off, and one variant
  re-made with its slow-path tensors in a type that has a fast kernel (a controlled experiment).

The sentences that explain the case study's two anomalies are computed from these tables
(:func:`anomalies`); what they infer beyond the measurements is labelled as a hypothesis.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd

from .. import bench, kernels, progress, tensors
from ..build import BuildInfo
from ..errors import UserError
from ..models import ResolvedModel
from ..paths import cache_dir, code_key, content_key, remeasuring, write_atomic
from ..quantize import quantize
from ..selection import memory
from .pipeline import Study, variant

# A slow-path type and the type of the same block size, without the minimum, that has a fast
# kernel: the experiment re-stores one against the other (fewer bits, so never slower by size).
FAST_SIBLING = {"Q5_1": "Q5_0", "Q4_1": "Q4_0"}
GENERIC_SHARE_FOR_EXPERIMENT = 10.0  # %: a variant with this much of its bytes on the generic path gets re-made


@dataclass
class SpeedStudy:
    models: list[ResolvedModel]  # the reference and the swept variants
    depth: pd.DataFrame
    threads: pd.DataFrame
    bandwidth: dict[int, float]  # threads -> median read bandwidth, GB/s
    kernel_shares: pd.DataFrame  # every model of the study: % of layer-matrix bytes per kernel path
    repack: pd.DataFrame  # every model of the study (and the experiment): prompt tok/s, repack on and off
    experiment: dict[str, str]  # variant label -> the re-made variant's label


def thread_counts(requested: Sequence[int] | None, all_cores: int) -> list[int]:
    """1 ... every core (doubling, and every core itself) when not given."""
    if requested:
        counts = sorted({int(t) for t in requested})
        if counts[0] < 1:
            raise UserError(f"SWEEP_THREADS must be whole numbers of at least 1, not {list(requested)!r}.")
        return counts
    counts = {1, all_cores}
    t = 2
    while t < all_cores:
        counts.add(t)
        t *= 2
    return sorted(counts)


def run(
    study: Study,
    sweep_quants: Sequence[str],
    depths: Sequence[int],
    threads: Sequence[int] | None,
    repetitions: int,
    n_prompt: int = 128,
    n_gen: int = 32,
    progress_bars: bool = True,
) -> SpeedStudy:
    """The sweeps, the kernel paths and the repack/experiment runs for one study."""
    if not depths or min(depths) < 0:
        raise UserError(f"SWEEP_DEPTHS must be tokens already in the context, 0 or more, not {list(depths)!r}.")
    build, all_cores = study.build, study.config.n_threads
    counts = thread_counts(threads, all_cores)
    models = [study.reference, *(variant(study, q) for q in sweep_quants)]
    steps = len(models) * 2 + len(study.variants) + 1 + len(counts)  # sweeps, repack runs, bandwidth
    bar = progress.Bar(steps, "speed", "run", progress_bars)
    try:
        depth_rows, thread_rows = [], []
        for m in models:
            arch = memory.architecture(m)
            weights = bench.bytes_per_token(m.path)
            for p in bench.llama_bench_sweep(m, [all_cores], list(depths), n_prompt, n_gen, repetitions, build=build):
                kv = memory.kv_bytes(arch, p.depth) if p.depth else 0
                depth_rows.append({"model": m.display, "depth": p.depth, "test": p.test, "tps": p.tps, "sd": p.sd,
                                   "bytes_per_token": weights + kv})  # fmt: skip
            bar.update()
            for p in bench.llama_bench_sweep(m, counts, [0], n_prompt, n_gen, repetitions, build=build):
                thread_rows.append({"model": m.display, "threads": p.threads, "test": p.test, "tps": p.tps,
                                    "sd": p.sd, "bytes_per_token": weights})  # fmt: skip
            bar.update()
        settings = (counts, n_prompt, n_gen, repetitions)
        bandwidth = _bandwidth([m.sha256 for m in models], settings, build, bar)
        paths = kernels.matmul_paths(cpu_flags=build.cpu_features)
        everyone = [study.reference, *study.variants]
        shares = pd.DataFrame(
            [{"Model": m.display, **kernels.kernel_shares(tensors.tensor_table(m.path), paths)} for m in everyone]
        ).set_index("Model")
        experiment = {}
        for m in study.variants:
            if shares.loc[m.display, "generic"] >= GENERIC_SHARE_FOR_EXPERIMENT:
                made = _fast_sibling_variant(study, m, paths)
                if made is not None:
                    everyone.append(made)
                    experiment[m.display] = made.display
                    bar.bar.total += 1  # one more repack run: the re-made variant
                    bar.bar.refresh()
        repack_rows = []
        pp_size = study.config.n_prompt or n_prompt  # the study's prompt test, whose speeds are explained
        for m in everyone:
            for p in bench.llama_bench_sweep(m, [all_cores], [0], pp_size, 0, repetitions, (False, True), build):
                repack_rows.append({"model": m.display, "repack": p.repack, "tps": p.tps, "sd": p.sd})
            bar.update()
    finally:
        bar.close()
    return SpeedStudy(
        models, pd.DataFrame(depth_rows), pd.DataFrame(thread_rows), bandwidth, shares,
        pd.DataFrame(repack_rows), experiment,
    )  # fmt: skip


def bandwidth_beside(
    threads: int, paired_with: Sequence[object], build: BuildInfo, passes: int = 10
) -> bench.Bandwidth:
    """The read bandwidth (``passes`` samples) set beside the speeds that ``paired_with`` identifies,
    cached under the same inputs: a re-executed page reads both back from one run, never a new
    bandwidth beside earlier speeds, and ``REMEASURE=1`` takes both again."""
    key = content_key(code_key("bench"), "bandwidth", build.key, threads, passes, list(paired_with))
    cached = cache_dir("bench") / f"bandwidth-{key}.json"
    if not remeasuring() and cached.exists():
        return bench.Bandwidth(**json.loads(cached.read_text()))
    bw = bench.memory_bandwidth(threads, passes=passes)
    write_atomic(cached, json.dumps(asdict(bw)))
    return bw


def study_bandwidth(study: Study) -> bench.Bandwidth:
    """The bandwidth the main table's generation speeds are set against (its roofline), kept with them."""
    c = study.config
    shas = [m.sha256 for m in (study.reference, *study.variants)]
    return bandwidth_beside(c.n_threads, [shas, c.repetitions, c.n_prompt, c.n_gen], study.build)


def _bandwidth(shas: list[str], settings: tuple, build: BuildInfo, bar: progress.Bar) -> dict[int, float]:
    """Median read bandwidth per thread count (``settings[0]``), kept with the thread sweeps."""
    bandwidth = {}
    for t in settings[0]:
        bandwidth[t] = bandwidth_beside(t, [shas, *settings], build, passes=5).median_gbs
        bar.update()
    return bandwidth


def _fast_sibling_variant(study: Study, m: ResolvedModel, paths: kernels.MatmulPaths) -> ResolvedModel | None:
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
    label = f"{m.display} ({swaps})"
    return quantize(study.reference, m.info.quant_type, study.build, tensor_types=overrides, label=label)


# --------------------------------------------------------------------------- tables


def _pm(x: float, sd: float) -> str:
    return f"{x:.1f} ± {sd:.1f}"


def depth_table(s: SpeedStudy) -> pd.DataFrame:
    """Prompt and generation tokens/s per depth; generation relative to depth 0, measured and as
    the bytes read per token (weights plus the K and V of every cached token) would have it."""
    d = s.depth
    rows = []
    for (model, depth), g in d.groupby(["model", "depth"], sort=False):
        pp, tg = g[g["test"] == "pp"], g[g["test"] == "tg"]
        tg0 = d[(d["model"] == model) & (d["depth"] == 0) & (d["test"] == "tg")]
        row = {"Model": model, "Depth": depth}
        if len(pp):
            row["Prompt (tok/s)"] = _pm(pp["tps"].iloc[0], pp["sd"].iloc[0])
        if len(tg):
            row["Generation (tok/s)"] = _pm(tg["tps"].iloc[0], tg["sd"].iloc[0])
            row["MB read per token"] = round(tg["bytes_per_token"].iloc[0] / 1e6, 1)
            if len(tg0):
                row["Generation vs depth 0 (%)"] = round(100 * tg["tps"].iloc[0] / tg0["tps"].iloc[0], 1)
                row["If bytes alone counted (%)"] = round(
                    100 * tg0["bytes_per_token"].iloc[0] / tg["bytes_per_token"].iloc[0], 1
                )
        rows.append(row)
    return pd.DataFrame(rows).set_index(["Model", "Depth"])


def thread_table(s: SpeedStudy) -> pd.DataFrame:
    """Tokens/s per thread count, and generation's achieved read rate against the bandwidth that
    many threads measured."""
    d = s.threads
    rows = []
    for (model, t), g in d.groupby(["model", "threads"], sort=False):
        pp, tg = g[g["test"] == "pp"], g[g["test"] == "tg"]
        row = {"Model": model, "Threads": t}
        if len(pp):
            row["Prompt (tok/s)"] = _pm(pp["tps"].iloc[0], pp["sd"].iloc[0])
        if len(tg):
            gbs = tg["tps"].iloc[0] * tg["bytes_per_token"].iloc[0] / 1e9
            row["Generation (tok/s)"] = _pm(tg["tps"].iloc[0], tg["sd"].iloc[0])
            row["Achieved read (GB/s)"] = round(gbs, 2)
            row["Bandwidth, same threads (GB/s)"] = round(s.bandwidth[t], 2)
            row["Share (%)"] = round(100 * gbs / s.bandwidth[t], 1)
        rows.append(row)
    return pd.DataFrame(rows).set_index(["Model", "Threads"])


def repack_table(s: SpeedStudy) -> pd.DataFrame:
    """Prompt tokens/s with weight repacking off and on, per model."""
    r = s.repack.pivot_table(index="model", columns="repack", values="tps", sort=False)
    out = pd.DataFrame(
        {
            "Prompt, repack off (tok/s)": r[False].round(1),
            "Prompt, repack on (tok/s)": r[True].round(1),
            "On / off": (r[True] / r[False]).round(2),
        }
    )
    out.index.name = "Model"
    return out


# --------------------------------------------------------------------------- the reading


def anomalies(study_rows: pd.DataFrame, s: SpeedStudy) -> str:
    """The case study's speed anomalies, explained with the measurements above (computed)."""
    out = []
    rows = study_rows.set_index("quant")
    ref = study_rows.loc[study_rows["quant"] == study_rows["reference_label"], "quant"].iloc[0]
    q = rows.drop(index=ref)
    # 1. prompt processing: the slowest variant, and the kernels its bytes go through
    slow = q["pp_tps"].idxmin()
    others = q.drop(index=slow)["pp_tps"]
    g = s.kernel_shares["generic"]
    if len(others):
        text = (
            f"* **Why {slow} processes prompts at {q.loc[slow, 'pp_tps']:.0f} tok/s, "
            f"{q.loc[slow, 'pp_tps'] / others.median():.2f}× the median of the other variants "
            f"({others.min():.0f}–{others.max():.0f} tok/s).** "
        )
        if g.get(slow, 0) > 0 and g.get(slow, 0) == g.max():
            text += (
                f"{g[slow]:.0f} % of its layer-matrix bytes are in a type that has no repacked, tiled or tinyBLAS "
                f"kernel in this build, so every product with them runs ggml's generic one-row-at-a-time dot product; "
                f"no other model of the study has more than {g.drop(index=slow).max():.0f} % of its bytes on that path."
            )
        else:
            text += "Its bytes are not the ones most on the generic path; the kernel table does not explain it."
        if slow in s.experiment:
            rp = repack_table(s)["Prompt, repack on (tok/s)"]
            made = s.experiment[slow]
            text += (
                f" Re-made with those tensors in the sibling type that has a tinyBLAS kernel ({made}), the same "
                f"variant processes prompts at {rp[made]:.0f} tok/s against {rp[slow]:.0f} in the same run "
                f"(×{rp[made] / rp[slow]:.2f}): the kernel, not the bits, is the cause."
            )
        out.append(text)
    repacked = list(s.kernel_shares.index[s.kernel_shares["repack"] > 0])
    text = repack_reading(repack_table(s), repacked, list(s.kernel_shares.index))
    if text:
        out.append(text)
    # 2. generation against the roofline, from the thread sweep
    tt = s.threads[s.threads["test"] == "tg"].copy()
    if len(tt):
        tt["gbs"] = tt["tps"] * tt["bytes_per_token"] / 1e9
        one, most = min(s.bandwidth), max(s.bandwidth)
        by = tt.pivot_table(index="model", columns="threads", values="gbs", sort=False)
        tps = tt.pivot_table(index="model", columns="threads", values="tps", sort=False)
        share1 = 100 * by[one] / s.bandwidth[one]
        parts = [f"{m} {by.loc[m, one]:.1f} GB/s ({share1[m]:.0f} %)" for m in by.index]
        text = (
            f"* **Why the reference reaches more of the memory roofline than the quantized variants.** With "
            f"{one} thread, which can read {s.bandwidth[one]:.1f} GB/s, generation reads: " + "; ".join(parts) + ". "
        )
        if most != one:
            gain = tps[most] / tps[one]
            text += (
                f"With {most} threads the bandwidth rises ×{s.bandwidth[most] / s.bandwidth[one]:.2f} and generation "
                "speeds up " + ", ".join(f"×{gain[m]:.2f} ({m})" for m in gain.index) + ". "
            )
        rq = by.index[0]
        quant = [m for m in by.index if m != rq]
        if quant and share1[rq] > share1[quant].max():
            text += (
                f"One thread reading {rq}'s 16-bit weights comes closest to what memory delivers; one thread "
                "reading a quantized variant falls further short, because each block must be unpacked (bit "
                "fields, scales, minimums) and each activation row quantized to 8 bits before the dot product. "
                "Quantized generation on this 2-core machine is therefore limited by that arithmetic as much as "
                "by memory. *Hypothesis, not separated by these measurements*: the rest of the gap is the work "
                "each token costs besides reading weights (attention, norms, and the two threads waiting for each "
                "other after each of the graph's few hundred operations), which weighs more the fewer bytes a "
                "variant reads."
            )
        else:
            text += "Here the reference does not reach a larger share than the variants with one thread."
        out.append(text)
    # 3. depth
    dd = s.depth[s.depth["test"] == "tg"]
    if dd["depth"].nunique() > 1:
        deepest = dd["depth"].max()
        parts = []
        for m, g2 in dd.groupby("model", sort=False):
            base, far = g2[g2["depth"] == 0], g2[g2["depth"] == deepest]
            if len(base) and len(far):
                measured = 100 * far["tps"].iloc[0] / base["tps"].iloc[0]
                by_bytes = 100 * base["bytes_per_token"].iloc[0] / far["bytes_per_token"].iloc[0]
                parts.append(f"{m} {measured:.0f} % (bytes alone: {by_bytes:.0f} %)")
        out.append(
            f"* **Speed as the context fills**: with {deepest:,} tokens already in the context, generation runs at "
            + "; ".join(parts)
            + " of its speed on an empty context. Each new token also reads the K and V of every cached token; "
            "where the measured fall exceeds the bytes' share, attention's arithmetic adds to it."
        )
    return "\n".join(out)


def repack_reading(rt: pd.DataFrame, repacked: list[str], studied: list[str]) -> str | None:
    """Repacking on against off, judged against the models the switch cannot change (``studied``
    models with no repacked tensor): their on/off ratios are the difference between two runs."""
    on_off = rt["On / off"]
    unrepacked = [m for m in on_off.index if m in studied and m not in repacked]
    if not repacked or not unrepacked:
        return None
    best = on_off.reindex(repacked).idxmax()
    lo, hi = on_off.reindex(unrepacked).min(), on_off.reindex(unrepacked).max()
    text = (
        f"* **Repacking** (weights rearranged at load time for the CPU's vector units): turned off, {best} "
        f"processes prompts at {rt.loc[best, 'Prompt, repack off (tok/s)']:.0f} instead of "
        f"{rt.loc[best, 'Prompt, repack on (tok/s)']:.0f} tok/s (×{on_off[best]:.2f} with it). The models "
        f"with no repacked tensor, which the switch cannot speed up, show how far two runs of the same file "
        f"differ here: {lo:.2f}–{hi:.2f}. "
    )
    if on_off[best] > hi:
        return text + f"{best}'s ratio lies above that range, so repacking helps it."
    below = any(on_off[m] < lo for m in repacked)
    return text + (
        f"Every repacked model's ratio ({', '.join(f'{m} ×{on_off[m]:.2f}' for m in repacked)}) lies "
        + ("within or below" if below else "within")
        + " that range, so this run cannot tell repacking's effect from the difference between runs."
    )
