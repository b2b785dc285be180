"""Does the method hold? Synthetic files against the real files of the same types.

For each catalog model and type, the real file is the one the case study makes (the model's F16
reference quantized by ``llama-quantize``) and the synthetic one is ``synth.make`` of the model's
published row at the same type: the same tensors, in the same order, at the same types and bytes
(``same_tensors``), with made-up values. The claim under test is that llama.cpp's speed and memory
do not depend on the values:

* **speed**: both files of every pair run in the same rounds, one after the other (``rounds.run``,
  a group per pair); the synthetic file's prompt and generation speed over the real one's is taken
  within each round. The pair **agrees** when that ratio's interval lies inside 1 ± ``margin`` (10 %),
  **differs** when it lies wholly outside, and is **not decided** when it crosses the margin
  (``verdict``): an equivalence test, since "the interval includes 1" would call any pair equal
  that was measured too coarsely, and flag tiny differences measured finely. The intervals are
  widened for the number of comparisons (``intervals.familywise``), so that all of them hold
  together with ``level`` (90 %). The same question is also asked of all pairs at once
  (``POOLED``: every round's ratio of every pair together): the claim is one claim about
  llama.cpp, and on this machine a single pair's 512-token prompt runs move by 10 to 20 % from
  round to round, more than the margin, so a pair alone is seldom decided;
* **memory**: llama-server's peak resident memory with each file, at one context and one
  512-token prompt; the pair agrees when the synthetic peak is within ``RSS_TOLERANCE`` (2 %) of
  the real one (``rss_agreement``).

The readings (``verdict``, ``speed_agreement``, ``rss_agreement``) are plain functions of the measurements, so
they are tested on made-up rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from .. import gguf_file, intervals, rounds
from ..build import BuildInfo
from ..errors import UserError
from ..intervals import Estimate
from ..models import ResolvedModel
from ..selection.measure import MemoryMeasurement
from ..selection.memory import MIB
from .plan import RSS_TOLERANCE, VALIDATE_LEVEL, VALIDATE_MARGIN


@dataclass(frozen=True)
class Pair:
    """A catalog model at one type: the real file and its synthetic twin."""

    model: str  # catalog name
    name: str  # the published row's short name
    quant: str
    real: ResolvedModel
    synthetic: ResolvedModel

    @property
    def label(self) -> str:
        return f"{self.name} {self.quant}"

    @property
    def real_label(self) -> str:
        return f"{self.label}: real"

    @property
    def synthetic_label(self) -> str:
        return f"{self.label}: synthetic"


def make_pairs(models: Sequence[str], types: Sequence[str], build: BuildInfo, progress_bars: bool = True) -> list[Pair]:
    """Real and synthetic files of every catalog model at every type (each made once, then cached)."""
    from .. import synth
    from ..models import CATALOG, resolve, synth_spec
    from ..quantize import check_quant_types, make_reference, quantize

    if not models or not types:
        raise UserError("VALIDATE_MODELS and VALIDATE_TYPES need at least one catalog model and one type each.")
    not_catalog = [m for m in models if m not in CATALOG]
    if not_catalog:
        raise UserError(
            f"{', '.join(not_catalog)}: the check needs a model whose real file is on this machine and whose "
            f"architecture is in the published table; use the catalog models ({', '.join(CATALOG)})."
        )
    qtypes = check_quant_types(list(types), build)
    out = []
    for m in models:
        hp = synth.row(m)  # the catalog model's own row
        reference = make_reference(resolve(m), build)
        for q in qtypes:
            real = quantize(reference, q, build)
            synth.make(hp, q, build=build, progress_bars=progress_bars)
            out.append(Pair(m, synth.short_name(hp), q, real, resolve(synth_spec(synth.short_name(hp), q))))
    return out


def tensor_table(path) -> list[tuple[str, str, tuple[int, ...], int]]:
    """(name, type, shape, bytes) of every tensor, in file order."""
    return [(t.name, t.type, tuple(t.shape), int(t.n_bytes)) for t in gguf_file.read(path).tensors]


def same_tensors(pair: Pair) -> bool:
    """Whether both files hold the same tensors, in the same order, at the same types, shapes and bytes."""
    return tensor_table(pair.real.path) == tensor_table(pair.synthetic.path)


def files_table(pairs: Sequence[Pair]) -> pd.DataFrame:
    """What the two files of each pair are: sizes and whether their tensor tables are the same."""
    rows = []
    for p in pairs:
        table = tensor_table(p.synthetic.path)
        rows.append(
            {
                "model": p.model,
                "type": p.quant,
                "tensors": len(table),
                "tensor bytes (MiB)": round(sum(t[3] for t in table) / MIB, 1),
                "same tensors, order, types and bytes": "yes" if same_tensors(p) else "no",
                "real file (MiB)": round(p.real.info.file_size / MIB, 1),
                "synthetic file (MiB)": round(p.synthetic.info.file_size / MIB, 1),
            }
        )
    return pd.DataFrame(rows).set_index(["model", "type"])


def depth_label(pair: Pair, depth: int, which: str = "") -> str:
    """The label of a pair run with ``depth`` tokens in the context ("smollm2-135m Q4_K_M @ 2048: real")."""
    return f"{pair.label} @ {depth}" + (f": {which}" if which else "")


def settings(
    pairs: Sequence[Pair], threads: int, n_prompt: int, n_gen: int, deep: Sequence[Pair] = (), depth: int = 0
) -> list[rounds.Setting]:
    """Both files of every pair, and of the ``deep`` pairs again at ``depth``, as configurations of one
    set of rounds; the two files of a pair form a group, so they run one after the other."""
    out = []
    for p in pairs:
        for label, f in ((p.real_label, p.real), (p.synthetic_label, p.synthetic)):
            out.append(rounds.Setting(label, str(f.path), f.sha256, threads, n_prompt, n_gen, group=p.label))
    for p in deep:
        for which, f in (("real", p.real), ("synthetic", p.synthetic)):
            out.append(rounds.Setting(depth_label(p, depth, which), str(f.path), f.sha256, threads, n_prompt, n_gen,
                                      depth, group=depth_label(p, depth)))  # fmt: skip
    return out


def n_comparisons(n_pairs: int, deep: bool) -> int:
    """The check's speed comparisons: prompt and generation of every pair, of the deep pair, and of
    all of them pooled (when there is more than one)."""
    n = n_pairs + int(deep)
    return 2 * (n + int(n > 1))


# --------------------------------------------------------------------------- the readings

AGREES = "agrees"  # the interval lies inside 1 ± margin
DIFFERS = "differs"  # the interval lies wholly outside it
UNDECIDED = "not decided"  # the interval crosses the margin: these rounds cannot tell
NO_INTERVAL = "no interval"  # too few rounds for the interval's coverage
POOLED = "all pairs, pooled"  # the row of every pair's per-round ratios together


def verdict(ratio: Estimate, margin: float = VALIDATE_MARGIN) -> str:
    """What a paired ratio's interval says about equivalence within ``margin``."""
    if not ratio.has_interval:
        return NO_INTERVAL
    if 1 - margin <= ratio.lo and ratio.hi <= 1 + margin:
        return AGREES
    if ratio.hi < 1 - margin or ratio.lo > 1 + margin:
        return DIFFERS
    return UNDECIDED


def speed_agreement(
    speed: rounds.Rounds,
    pairs: Sequence[tuple[str, str, str]],
    margin: float = VALIDATE_MARGIN,
    level: float = VALIDATE_LEVEL,
    pool: bool = False,
) -> pd.DataFrame:
    """For each (name, synthetic label, real label) and test: the synthetic over real ratio within
    each round, as an Estimate whose interval is wide enough that all of them hold together with
    ``level``, and its verdict against 1 ± ``margin``. With ``pool``, a row ``POOLED`` per test
    too: the median of every pair's per-round ratios together, one more comparison of the family."""
    each = intervals.familywise(2 * (len(pairs) + int(pool)), level)
    rows = []
    for name, synthetic, real in pairs:
        for test in ("pp", "tg"):
            r = speed.ratio(synthetic, real, test, each)
            rows.append({"file": name, "test": test, "ratio": r, "verdict": verdict(r, margin)})
    if pool:
        for test in ("pp", "tg"):
            # each ratio is taken within its own pair's seconds, so the pairs' ratios of one round
            # are treated as separate draws of the same question
            r = intervals.estimate([x for _, a, b in pairs for x in _ratios(speed, a, b, test)], each)
            rows.append({"file": POOLED, "test": test, "ratio": r, "verdict": verdict(r, margin)})
    return pd.DataFrame(rows)


def _ratios(speed: rounds.Rounds, a: str, b: str, test: str) -> list[float]:
    """A over B in each round where both ran."""
    return intervals.paired_ratios(speed.values(a, test), speed.values(b, test))


def round_spread(speed: rounds.Rounds, pairs: Sequence[tuple[str, str, str]], test: str) -> float:
    """How much a pair's ratio moves from round to round: the standard deviation of its per-round
    log ratio (about the relative one at these sizes), the median over ``pairs``. Not a robust one:
    the occasional slow round is what sets the intervals' ends at a few rounds."""
    sds = [float(np.std(np.log(r), ddof=1)) for _, a, b in pairs if len(r := _ratios(speed, a, b, test)) > 1]
    return float(np.median(sds)) if sds else float("nan")


def rss_agreement(real_peak: int, synthetic_peak: int, tolerance: float = RSS_TOLERANCE) -> tuple[float, bool]:
    """The synthetic file's peak over the real one's, less 1, and whether it is within ``tolerance``."""
    if real_peak <= 0:
        raise ValueError("the real file's peak must be positive")
    diff = synthetic_peak / real_peak - 1
    return diff, abs(diff) <= tolerance


# --------------------------------------------------------------------------- the check itself


@dataclass
class Validation:
    pairs: list[Pair]
    speed: rounds.Rounds
    memory: dict[str, MemoryMeasurement]  # by setting label
    context: int
    tolerance: float
    n_prompt: int
    n_gen: int
    deep: list[Pair] = field(default_factory=list)  # pairs also run with ``depth`` tokens in the context
    depth: int = 0
    margin: float = VALIDATE_MARGIN
    level: float = VALIDATE_LEVEL

    @property
    def labels(self) -> list[tuple[str, str, str]]:
        """(name, synthetic label, real label) of every comparison: the pairs, then the deep ones."""
        out = [(p.label, p.synthetic_label, p.real_label) for p in self.pairs]
        return out + [(depth_label(p, self.depth), depth_label(p, self.depth, "synthetic"),
                       depth_label(p, self.depth, "real")) for p in self.deep]  # fmt: skip

    @cached_property  # the outcome, the table and the sentence all read it: the rounds are read once
    def speed_rows(self) -> pd.DataFrame:
        """Every pair's ratios and verdicts, then (with more than one pair) the pooled ones."""
        return speed_agreement(self.speed, self.labels, self.margin, self.level, pool=len(self.labels) > 1)

    @property
    def pair_rows(self) -> pd.DataFrame:
        return self.speed_rows[self.speed_rows["file"] != POOLED]

    @property
    def pooled_rows(self) -> pd.DataFrame:
        return self.speed_rows[self.speed_rows["file"] == POOLED]

    def rss(self, pair: Pair) -> tuple[float, bool]:
        return rss_agreement(
            self.memory[pair.real_label].peak_rss, self.memory[pair.synthetic_label].peak_rss, self.tolerance
        )

    @property
    def outcome(self) -> str:
        """AGREES when every speed ratio agrees and every peak is within the tolerance; DIFFERS when
        a ratio differs or a peak is outside; UNDECIDED otherwise (an interval crosses the margin,
        or the rounds were too few for intervals)."""
        verdicts = set(self.speed_rows["verdict"])
        if DIFFERS in verdicts or not all(self.rss(p)[1] for p in self.pairs):
            return DIFFERS
        return AGREES if verdicts == {AGREES} else UNDECIDED

    @property
    def holds(self) -> bool:
        return self.outcome == AGREES

    @property
    def holds_pooled(self) -> bool:
        """Whether all pairs together agree (both pooled ratios inside the margin) while no pair
        and no peak differs: the claim holds on average, whether or not each pair is decided."""
        pooled = self.pooled_rows
        return len(pooled) > 0 and set(pooled["verdict"]) == {AGREES} and self.outcome != DIFFERS

    def describe(self) -> str:
        """How the rounds ran and what their intervals cover, with the numbers of this run."""
        m = n_comparisons(len(self.pairs), bool(self.deep))
        pooled = "; each pair's, and all pairs' pooled" if len(self.labels) > 1 else ""
        each = intervals.familywise(m, self.level)
        n = self.speed.n_rounds
        ranks = intervals.order_ranks(n, each)
        if ranks is None:
            cover = (f"{n} rounds are too few for intervals that hold together: {m} comparisons need "
                     f"{intervals.fewest_rounds(each)}")  # fmt: skip
        else:
            lo, hi, coverage = ranks
            which = "the lowest to the highest" if lo == 1 else f"the {_nth(lo)} lowest to the {_nth(lo)} highest"
            cover = (f"each ratio's interval ({which} of the {n} rounds) covers its median with {100 * coverage:.1f} %, "
                     f"so all {m} hold together with at least {100 * (1 - m * (1 - coverage)):.1f} %")  # fmt: skip
        return (
            f"{n} rounds of {len(self.speed.settings)} files; in each round the two files of a pair ran one after "
            f"the other, the pairs and the files within a pair in an order shuffled per round (seed "
            f"{self.speed.seed}). {m} speed comparisons (synthetic over real, within each round{pooled}): {cover}. "
            f"A pair agrees when its interval lies inside 1 ± {100 * self.margin:g} %, differs when it lies wholly "
            f"outside, and is not decided when it crosses the margin."
        )


def _nth(k: int) -> str:
    return {2: "second", 3: "third", 4: "fourth"}.get(k, f"{k}th")


def validate(
    models: Sequence[str],
    types: Sequence[str],
    threads: int,
    n_rounds: int | None,
    n_prompt: int,
    n_gen: int,
    context: int,
    build: BuildInfo,
    depth: int = 0,
    tolerance: float = RSS_TOLERANCE,
    progress_bars: bool = True,
    margin: float = VALIDATE_MARGIN,
    level: float = VALIDATE_LEVEL,
) -> Validation:
    """Make the pairs, run every file in the same rounds (the first pair also with ``depth`` tokens in
    the context, when ``depth`` > 0), and serve each once for its peak memory. ``n_rounds`` None: the
    fewest rounds whose intervals hold together with ``level``."""
    from .. import progress
    from ..selection.measure import measure_memory_cached

    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise UserError(f"VALIDATE_DEPTH must be a whole number of tokens (0: none), not {depth!r}.")
    if n_rounds is not None and (isinstance(n_rounds, bool) or not isinstance(n_rounds, int) or n_rounds < 1):
        raise UserError(
            f"VALIDATE_ROUNDS must be a whole number of at least 1, or None for the fewest whose intervals hold "
            f"together, not {n_rounds!r}."
        )
    if not 0 < margin < 1:
        raise UserError(f"VALIDATE_MARGIN must be a fraction between 0 and 1 (0.10 for ±10 %), not {margin!r}.")
    if not 0 < level < 1:
        raise UserError(f"VALIDATE_LEVEL must be a coverage between 0 and 1 (0.90 for 90 %), not {level!r}.")
    pairs = make_pairs(models, types, build, progress_bars)
    deep = pairs[:1] if depth else []
    if n_rounds is None:
        n_rounds = intervals.fewest_rounds(intervals.familywise(n_comparisons(len(pairs), bool(deep)), level))
    plan = settings(pairs, threads, n_prompt, n_gen, deep, depth)
    speed = rounds.run(plan, build, n_rounds, progress_bars=progress_bars, desc="synthetic vs real")
    memory = {}
    files = [(p.real_label, p.real) for p in pairs] + [(p.synthetic_label, p.synthetic) for p in pairs]
    for label, f in progress.track(files, "memory: synthetic vs real", "server", progress_bars):
        memory[label] = measure_memory_cached(f, context, 1, threads, build)
    return Validation(pairs, speed, memory, context, tolerance, n_prompt, n_gen, list(deep), depth, margin, level)


def validation_table(v: Validation) -> pd.DataFrame:
    """Per pair: the speed ratios with their intervals and verdicts, and the peak memories."""
    speed = v.speed_rows
    within = f"within ±{100 * v.margin:g} %"
    rows = []

    def ratios(rec: dict, label: str) -> None:
        for test, word in (("pp", "prompt"), ("tg", "generation")):
            r = speed[(speed["file"] == label) & (speed["test"] == test)].iloc[0]
            rec[f"{word}: synthetic / real"] = r["ratio"].times(3)
            rec[f"{word}: {within}"] = r["verdict"]

    for p in v.pairs:
        rec: dict[str, object] = {"model": p.model, "type": p.quant}
        ratios(rec, p.label)
        diff, ok = v.rss(p)
        rec["peak RSS real (MiB)"] = round(v.memory[p.real_label].peak_rss / MIB, 1)
        rec["peak RSS synthetic (MiB)"] = round(v.memory[p.synthetic_label].peak_rss / MIB, 1)
        rec["difference (%)"] = round(100 * diff, 2)
        rec[f"within {100 * v.tolerance:.0f} %"] = "yes" if ok else "no"
        rows.append(rec)
    for p in v.deep:  # the same files with a filled context: speed only (their memory is the row above)
        rec = {"model": p.model, "type": f"{p.quant}, {v.depth:,} tokens in the context"}
        ratios(rec, depth_label(p, v.depth))
        rows.append(rec)
    if len(v.pooled_rows):  # every pair's rounds together: speed only
        rec = {"model": POOLED, "type": f"{len(v.labels)} comparisons x {v.speed.n_rounds} rounds"}
        ratios(rec, POOLED)
        rows.append(rec)
    df = pd.DataFrame(rows).set_index(["model", "type"])
    memory = [c for c in df.columns if not c.startswith(("prompt", "generation"))]
    df[memory] = df[memory].astype(object).where(df[memory].notna(), "")  # speed-only rows: blank, not NaN
    return df


def _named(rows: pd.DataFrame) -> str:
    word = {"pp": "prompt", "tg": "generation"}
    return "; ".join(f"{r['file']} {word[r['test']]} {r['ratio'].times(3)}" for _, r in rows.iterrows())


def validation_sentence(v: Validation) -> str:
    """What the check shows, computed from its own numbers."""
    speed = v.pair_rows
    m, margin = len(speed), f"1 ± {100 * v.margin:g} %"
    diffs = [v.rss(p)[0] for p in v.pairs]
    within = sum(abs(d) <= v.tolerance for d in diffs)
    mem = (
        f"Peak memory at {v.context:,} tokens: {within} of {len(diffs)} synthetic files within "
        f"{100 * v.tolerance:.0f} % of the real one (from {100 * min(diffs):+.2f} % to {100 * max(diffs):+.2f} %)."
    )
    differ = speed[speed["verdict"] == DIFFERS]
    open_ = speed[speed["verdict"].isin([UNDECIDED, NO_INTERVAL])]
    agree = speed[speed["verdict"] == AGREES]
    if (speed["verdict"] == NO_INTERVAL).all():
        return (f"Not decided: {v.speed.n_rounds} rounds are too few for intervals that hold together over "
                f"{len(v.speed_rows)} comparisons (see above), so no pair can be said to agree or to differ. {mem}")  # fmt: skip
    decided = [r for r in speed["ratio"] if r.has_interval]
    lo, hi = min(r.lo for r in decided), max(r.hi for r in decided)  # the span of every interval together
    if v.outcome == AGREES:
        head = (f"The method holds on both catalog models on this run: all {m} speed ratios, synthetic over real, "
                f"lie inside {margin} with their intervals (together ×{lo:.2f} to ×{hi:.2f}).")  # fmt: skip
    elif v.outcome == DIFFERS:
        parts = []
        if len(differ):
            lie = "lies" if len(differ) == 1 else "lie"
            parts.append(f"{len(differ)} of {m} speed ratios {lie} wholly outside {margin} ({_named(differ)})")
        if within < len(diffs):
            n = len(diffs) - within
            what = "peak memory differs" if n == 1 else "peak memories differ"
            parts.append(f"{n} {what} by more than {100 * v.tolerance:.0f} %")
        head = "The method does not hold everywhere on this run: " + "; ".join(parts) + "."
        if len(open_):
            head += f" Not decided: {_named(open_)}."
    else:
        lie = "lies inside {} with its interval" if len(agree) == 1 else "lie inside {} with their intervals"
        by_pair = "Pair by pair, not decided" if len(v.pooled_rows) else "Not decided"
        head = (f"{by_pair} on this run: {len(agree)} of {m} speed ratios {lie.format(margin)} and "
                f"none lies wholly outside, but the intervals of {_named(open_)} cross the margin, so these "
                f"rounds cannot tell whether those pairs alone differ by more than {100 * v.margin:g} %. What they "
                f"do rule out is a larger difference than the intervals' ends, together ×{lo:.2f} to ×{hi:.2f}.")  # fmt: skip
    return " ".join(x for x in (head, pooled_sentence(v), mem) if x)


def pooled_sentence(v: Validation) -> str:
    """All pairs together, and how much one pair's ratio moved from round to round."""
    pooled = v.pooled_rows.set_index("test")
    if not len(pooled):
        return ""
    word = {AGREES: f"inside 1 ± {100 * v.margin:g} %", DIFFERS: f"wholly outside 1 ± {100 * v.margin:g} %",
            UNDECIDED: "across the margin", NO_INTERVAL: "without an interval"}  # fmt: skip
    pp, tg = pooled.loc["pp"], pooled.loc["tg"]
    both = pp["verdict"] == tg["verdict"]
    where = (f"both {word[pp['verdict']]}" if both
             else f"prompt {word[pp['verdict']]}, generation {word[tg['verdict']]}")  # fmt: skip
    spread = {t: 100 * round_spread(v.speed, v.labels, t) for t in ("pp", "tg")}
    text = (f"All {len(v.labels)} pairs together (every round's ratio of every pair, in the same family of "
            f"intervals): prompt {pp['ratio'].times(3)} and generation {tg['ratio'].times(3)}, {where}. From round "
            f"to round one pair's prompt ratio moved by about {spread['pp']:.0f} % and its generation ratio by about "
            f"{spread['tg']:.0f} % (standard deviation over the rounds, the median over the pairs).")  # fmt: skip
    for test, what in (("pp", "prompt"), ("tg", "generation")):
        r = pooled.loc[test, "ratio"]
        if r.excludes(1.0):  # inside the margin or not, a difference these rounds do separate
            way = intervals.comparison(r)
            text += (f" Pooled {what} speed is separated from 1: the synthetic files are {way} than the real ones by "
                     f"about {100 * abs(r.median - 1):.0f} % on average.")  # fmt: skip
    if v.holds_pooled and (v.pair_rows["verdict"] != AGREES).any():
        text += (f" So on average over the pairs the claim is decided within the margin; whether one pair alone "
                 f"differs by more than {100 * v.margin:g} % stays open at this noise (more rounds, VALIDATE_ROUNDS, "
                 f"narrow each pair's interval).")  # fmt: skip
    return text
