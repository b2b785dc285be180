"""Real sizes on this machine: every synthetic file in one set of interleaved rounds, with the bandwidth.

Each round runs, in a shuffled order, every file at an empty context, the files of ``DEPTH_SIZES``
again with ``DEPTH`` tokens already in it, and one probe of the machine's memory read bandwidth.
From the rounds (``localllms.rounds``):

* each speed is the median over rounds with its order-statistic interval;
* the **share of the memory roofline** of a file's generation, per round: tokens/s x bytes read
  per token (``bench.bytes_per_token``) / the bandwidth probed in the same round; its median and
  interval over rounds (``roofline_share``);
* comparisons between sizes are ratios within a round (``share_ratio``), said to differ only when
  the ratio's interval excludes 1.

The case study found the book's small models generating at 41-61 % of the roofline and read it as
"quantized generation here is limited by unpacking arithmetic, not memory". If that is so, a larger
file, whose arithmetic per byte is the same but whose bytes no longer fit any cache, should move
toward the roofline; ``roofline_sentence`` says what the rounds show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from .. import intervals, rounds
from ..build import BuildInfo
from ..errors import UserError
from ..intervals import Estimate
from .plan import SizeFile

BANDWIDTH = "memory bandwidth"  # the label of the bandwidth probe in the rounds


def label(f: SizeFile, depth: int = 0) -> str:
    return f.label if depth == 0 else f"{f.label} @ {depth}"


def settings(
    files: Sequence[SizeFile], threads: int, n_prompt: int, n_gen: int, depth: int, deep: Sequence[str]
) -> list[rounds.Setting]:
    """Every file at an empty context, the ``deep`` ones again at ``depth``, and the bandwidth probe."""
    specs = {f.spec for f in files}
    unknown = [s for s in deep if s not in specs]
    if unknown:
        raise UserError(f"DEPTH_SIZES names {', '.join(unknown)}, which SIZES does not; list it there too.")
    if depth < 1 and deep:
        raise UserError(f"DEPTH must be at least 1 token to measure DEPTH_SIZES at, not {depth!r}.")
    out = []
    for f in files:
        r = f.resolved
        out.append(rounds.Setting(label(f), str(r.path), r.sha256, threads, n_prompt, n_gen))
        if f.spec in deep:
            out.append(rounds.Setting(label(f, depth), str(r.path), r.sha256, threads, n_prompt, n_gen, depth))
    out.append(rounds.Setting(BANDWIDTH, "", "", threads, kind="bandwidth"))
    return out


@dataclass
class Sizes:
    """The rounds of every size, and what they were run with."""

    files: list[SizeFile]
    speed: rounds.Rounds
    threads: int
    n_prompt: int
    n_gen: int
    depth: int
    deep: list[str]

    def file(self, spec: str) -> SizeFile:
        return next(f for f in self.files if f.spec == spec)


def measure(
    files: Sequence[SizeFile],
    threads: int,
    n_rounds: int,
    n_prompt: int,
    n_gen: int,
    depth: int,
    deep: Sequence[str],
    build: BuildInfo,
    progress_bars: bool = True,
) -> Sizes:
    plan = settings(files, threads, n_prompt, n_gen, depth, deep)
    speed = rounds.run(plan, build, n_rounds, progress_bars=progress_bars, desc="sizes: speed rounds")
    return Sizes(list(files), speed, threads, n_prompt, n_gen, depth, [s for s in deep])


# --------------------------------------------------------------------------- the roofline


def shares(tg: Sequence[float], bandwidth_gbs: Sequence[float], bytes_per_token: int) -> list[float]:
    """The share of the memory roofline in each round: tg x bytes per token / that round's bandwidth."""
    if len(tg) != len(bandwidth_gbs):
        raise ValueError(f"shares need the same rounds: {len(tg)} generation values against {len(bandwidth_gbs)}")
    return [t * bytes_per_token / (b * 1e9) for t, b in zip(tg, bandwidth_gbs, strict=True)]


def roofline_share(s: Sizes, f: SizeFile) -> Estimate:
    return intervals.estimate(
        shares(s.speed.values(label(f), "tg"), s.speed.values(BANDWIDTH, "bw"), f.bytes_per_token)
    )


def share_ratio(s: Sizes, a: SizeFile, b: SizeFile) -> Estimate:
    """A's share of the roofline over B's, within each round (the bandwidth cancels: the same probe)."""
    bw = s.speed.values(BANDWIDTH, "bw")
    sa = shares(s.speed.values(label(a), "tg"), bw, a.bytes_per_token)
    sb = shares(s.speed.values(label(b), "tg"), bw, b.bytes_per_token)
    return intervals.paired_ratio(sa, sb)


# --------------------------------------------------------------------------- tables and readings


def speed_table(s: Sizes) -> pd.DataFrame:
    """Per file: size, prompt and generation speed (median and interval over rounds) at an empty
    context and at ``depth``, and the time to first token and per output token they imply."""
    rows = []
    for f in s.files:
        rec: dict[str, object] = {
            "model": f.model,
            "type": f.quant,
            "parameters (B)": round(f.parameters / 1e9, 2),
            "file (GB)": round(f.file_bytes / 1e9, 2),
        }
        for depth in (0, s.depth):
            where = "empty context" if depth == 0 else f"at {depth:,}"
            if depth and f.spec not in s.deep:
                rec[f"prompt tok/s, {where}"] = rec[f"generation tok/s, {where}"] = "not measured"
                continue
            pp, tg = s.speed.estimate(label(f, depth), "pp"), s.speed.estimate(label(f, depth), "tg")
            rec[f"prompt tok/s, {where}"] = pp.text(1 if pp.median < 100 else 0)
            rec[f"generation tok/s, {where}"] = tg.text(2 if tg.median < 10 else 1)
        tpot = intervals.estimate([1000 / x for x in s.speed.values(label(f), "tg")])
        rec["ms per output token, empty context"] = tpot.text(0)
        rows.append(rec)
    return pd.DataFrame(rows).set_index(["model", "type"])


def roofline_table(s: Sizes) -> pd.DataFrame:
    """Per file: bytes read per token, generation speed, the bandwidth of the same rounds, and the
    share of the roofline, each median (interval) over rounds."""
    bw = s.speed.estimate(BANDWIDTH, "bw")
    rows = []
    for f in s.files:
        tg = s.speed.estimate(label(f), "tg")
        share = roofline_share(s, f)
        rows.append(
            {
                "model": f.model,
                "type": f.quant,
                "read per token (MB)": round(f.bytes_per_token / 1e6, 1),
                "generation tok/s": tg.text(2 if tg.median < 10 else 1),
                "bandwidth (GB/s)": bw.text(1),
                "roofline tok/s": f"{bw.median * 1e9 / f.bytes_per_token:.1f}",
                "share of the roofline (%)": Estimate(
                    100 * share.median, 100 * share.lo, 100 * share.hi, share.n, share.coverage
                ).text(0),  # fmt: skip
            }
        )
    return pd.DataFrame(rows).set_index(["model", "type"])


def _pct(e: Estimate) -> str:
    if not e.has_interval:
        return f"{100 * e.median:.0f} % (n={e.n})"
    return f"{100 * e.median:.0f} % ({100 * e.lo:.0f}–{100 * e.hi:.0f} %)"


def roofline_sentence(s: Sizes) -> str:
    """Does quantized generation move toward memory-bound as the model grows? The share of the
    roofline per size of the smallest file's type, and the largest against the smallest within rounds."""
    if not s.files:
        return "No file was measured."
    quant = s.files[0].quant
    same = sorted((f for f in s.files if f.quant == quant), key=lambda f: f.bytes_per_token)
    per_size = "; ".join(f"{f.model} {_pct(roofline_share(s, f))}" for f in same)
    text = (
        f"Generation at {quant}, as a share of the memory roofline (tokens/s x bytes read per token over the "
        f"bandwidth probed in the same round, median and interval over {s.speed.n_rounds} rounds): {per_size}."
    )
    above = [f.model for f in same if roofline_share(s, f).median > 1]
    if above:
        text += (
            f" Above 100 %, {', '.join(above)} read{'s' if len(above) == 1 else ''} faster than memory can deliver: "
            "its weights are served from the processor's caches, which the probe (a buffer far larger than "
            "them) does not measure."
        )
    if len(same) < 2:
        return text
    small, large = same[0], same[-1]
    r = share_ratio(s, large, small)
    how = f"×{r.median:.2f}" + (f", {r.lo:.2f}–{r.hi:.2f}" if r.has_interval else f", n={r.n}")
    words = intervals.comparison(r, "higher", "lower")
    if words == "not separated on this machine":
        verdict = (
            f"{large.model}'s share and {small.model}'s are not separated on this machine ({how} within rounds): "
            "the rounds do not show generation moving toward the roofline as the file grows"
        )
    elif words == "higher":
        verdict = (
            f"{large.model}'s share is higher than {small.model}'s ({how} within rounds): as the file grows, "
            "quantized generation moves toward the memory roofline"
        )
    else:
        verdict = (
            f"{large.model}'s share is lower than {small.model}'s ({how} within rounds): the larger file moves "
            "away from the memory roofline, not toward it"
        )
    steps = []  # the sizes between: does every step up in size raise the share, or only the whole span?
    for a, b in zip(same[:-1], same[1:], strict=True) if len(same) > 2 else ():
        step = share_ratio(s, b, a)
        said = intervals.comparison(step, "higher", "lower")
        if said != "higher":
            steps.append(f"from {a.model} to {b.model} {step.times()}, {said}")
    if steps:
        verdict += "; not at every step, though: " + "; ".join(steps)
    return f"{text} {verdict}."


def depth_sentence(s: Sizes) -> str:
    """What ``depth`` tokens already in the context cost each measured file, as ratios within rounds."""
    parts = []
    for spec in s.deep:
        f = s.file(spec)
        for test, word in (("pp", "prompt"), ("tg", "generation")):
            r = s.speed.ratio(label(f, s.depth), label(f), test)
            how = f"×{r.median:.2f}" + (f" ({r.lo:.2f}–{r.hi:.2f})" if r.has_interval else f" (n={r.n})")
            kept = "" if r.excludes(1.0) else ", not separated from an empty context"
            parts.append(f"{f.label} {word} {how}{kept}")
    if not parts:
        return "No file was measured with a filled context."
    return (
        f"Speed with {s.depth:,} tokens already in the context over an empty one, within rounds: "
        + "; ".join(parts)
        + "."
    )


def plot_roofline(s: Sizes):
    """Generation speed against the bytes each token reads, with the roofline of the same rounds."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    bw = s.speed.estimate(BANDWIDTH, "bw")
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    xs = np.geomspace(min(f.bytes_per_token for f in s.files) / 1.5, max(f.bytes_per_token for f in s.files) * 1.5)
    ax.plot(xs / 1e9, bw.median * 1e9 / xs, "--", c="grey", label=f"roofline at {bw.median:.1f} GB/s (median)")
    ax.fill_between(xs / 1e9, bw.lo * 1e9 / xs, bw.hi * 1e9 / xs, color="grey", alpha=0.15, label="its interval")
    for f in s.files:
        tg = s.speed.estimate(label(f), "tg")
        ax.errorbar(f.bytes_per_token / 1e9, tg.median, yerr=[[tg.median - tg.lo], [tg.hi - tg.median]], fmt="o",
                    capsize=4, label=f"{f.model} {f.quant}")  # fmt: skip
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="weights read per generated token (GB, log scale)",
        ylabel="generation (tokens/s, log scale)",
        title="Generation against the memory roofline (synthetic weights: speed and memory only)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def depth_cost_sentence(s: Sizes) -> str:
    """What measuring the files left out of ``deep`` at ``depth`` would have cost: llama-bench fills the
    context before each run, at no more than the file's prompt speed at an empty context."""
    left = [f for f in s.files if f.spec not in s.deep]
    if not left or s.depth < 1:
        return f"Every file was also measured with {s.depth:,} tokens in the context."
    parts = []
    for f in left:
        pp = s.speed.estimate(label(f), "pp").median
        per_run = s.depth / pp
        parts.append(
            f"{f.model} at {f.quant} would spend at least {per_run:,.0f} s per run filling the context "
            f"({s.depth:,} tokens at its {pp:.1f} tokens/s), {per_run * s.speed.n_rounds / 60:,.1f} min over "
            f"{s.speed.n_rounds} rounds"
        )
    return "Not measured with a filled context: " + "; ".join(parts) + "."


def span_seconds(r: rounds.Rounds) -> float:
    """Seconds from the first run of the rounds to the start of the last (their own clock: the last run's
    length is left out); 0 without runs."""
    if r.runs.empty:
        return 0.0
    times = pd.to_datetime(r.runs["measured_at"], utc=True)
    return float((times.max() - times.min()).total_seconds())


def clock_sentence(check_rounds: rounds.Rounds, size_rounds: rounds.Rounds) -> str:
    """What this run's rounds took, by their own time stamps (rounds read from the cache took none now)."""
    a, b = span_seconds(check_rounds), span_seconds(size_rounds)
    return (
        f"By the time stamps of their runs, the check's rounds took {a / 60:.1f} min and the sizes' rounds "
        f"{b / 60:.1f} min on this machine when they were measured."
    )
