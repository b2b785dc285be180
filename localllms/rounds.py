"""Every speed the book prints comes from interleaved rounds.

In each round every configuration (a model file and how it is run: threads, tokens already in
the context, repacking on or off; or a memory-bandwidth probe) runs once, for one llama-bench
repetition, in an order shuffled per round from a recorded seed. A speed is then the median over
rounds with its interval, and a comparison is the ratio of two configurations within each round
(:mod:`localllms.intervals`): both ran in the same minute of the machine, so a drift of the
machine between minutes, which is larger here than any effect the book studies, cancels out.

Each measurement is cached under the whole set of configurations, its round and the seed:
an interrupted run resumes where it stopped, and adding a configuration measures the set again
(its rounds must be shared to be paired). ``REMEASURE=1`` takes every round anew.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from . import progress
from .build import BuildInfo
from .errors import UserError
from .intervals import LEVEL, Estimate, estimate, paired_ratio
from .paths import cache_dir, code_key, content_key, remeasuring, write_atomic

ROUNDS = 5  # the fewest whose [min, max] covers the median with 90 % (93.8 %)
SHUFFLE_SEED = 20261206  # the shuffle's seed, recorded with every round
# The warm-up in front of each run, in prompt tokens. llama-bench's own warm-up repeats the whole
# prompt test (512 tokens: a third of a 135M run's time); a 64-token prompt test, run first in the
# same process and dropped, touches the same weights and threads. Run without any warm-up, the F16
# file's 512-token prompt speed came out ×0.916 (0.872-0.987) of the warmed-up one, because the
# first pass faults the file's pages in. With the 64-token warm-up, prompt and generation speeds were
# within ×0.971-1.026 of llama-bench's own warm-up (every interval includes 1; three files, 6
# interleaved rounds, 2026-12-07) and a run took 20-35 % less time.
WARMUP_PROMPT = 64


@dataclass(frozen=True)
class Setting:
    """One configuration of a round: a llama-bench run of one file (``kind="bench"``), or the
    memory read bandwidth at a thread count (``kind="bandwidth"``, ``model`` empty)."""

    label: str
    model: str  # the file's path ("" for a bandwidth probe)
    model_sha256: str
    threads: int
    n_prompt: int = 0
    n_gen: int = 0
    depth: int = 0
    repack: bool = True
    kind: str = "bench"
    # Settings that share a group run one after the other within a round (the group's place and
    # the order inside it are both shuffled): a comparison of two files in one group is then taken
    # seconds apart, not a round apart. "" (the default): a group of its own.
    group: str = ""

    def key(self) -> list:
        d = asdict(self)
        d.pop("model")  # the digest names the file, wherever it lies
        if not d["group"]:
            d.pop("group")  # the keys of ungrouped settings are what they were before groups existed
        return sorted(d.items())


@dataclass
class Rounds:
    """The measurements of one set of rounds: one row per (round, configuration, test)."""

    settings: list[Setting]
    seed: int
    runs: pd.DataFrame  # round, position, label, test ("pp", "tg" or "bw"), value, measured_at

    @property
    def n_rounds(self) -> int:
        return int(self.runs["round"].nunique()) if len(self.runs) else 0

    def values(self, label: str, test: str) -> list[float]:
        """One value per round (NaN where the test was not run), in round order."""
        r = self.runs[(self.runs["label"] == label) & (self.runs["test"] == test)]
        by = dict(zip(r["round"], r["value"], strict=True))
        return [by.get(i, float("nan")) for i in range(self.n_rounds)]

    def estimate(self, label: str, test: str, level: float = LEVEL) -> Estimate:
        return estimate(self.values(label, test), level)

    def ratio(self, a: str, b: str, test: str, level: float = LEVEL) -> Estimate:
        """A's value over B's within each round."""
        return paired_ratio(self.values(a, test), self.values(b, test), level)

    def describe(self) -> str:
        return (
            f"{self.n_rounds} rounds of {len(self.settings)} configurations, each run once per round for one "
            f"llama-bench repetition (behind a {WARMUP_PROMPT}-token warm-up) in an order shuffled per round "
            f"(seed {self.seed}); medians over rounds "
            f"with order-statistic intervals covering the median with at least {LEVEL:.0%}"
        )


def order(settings: Sequence[Setting], seed: int, round_: int) -> list[Setting]:
    """The order of one round: a permutation of the settings drawn from (seed, round), with the
    settings of a group kept together (the groups' order and each group's own order shuffled)."""
    ranked = sorted(settings, key=lambda s: s.label)
    rng = np.random.default_rng([seed, round_])
    if not any(s.group for s in ranked):
        return [ranked[i] for i in rng.permutation(len(ranked))]
    groups: dict[str, list[Setting]] = {}
    for s in ranked:
        groups.setdefault(s.group or f"\0{s.label}", []).append(s)
    names = sorted(groups)
    out = []
    for g in rng.permutation(len(names)):
        members = groups[names[g]]
        out += [members[i] for i in rng.permutation(len(members))]
    return out


def run(
    settings: Sequence[Setting],
    build: BuildInfo,
    rounds: int = ROUNDS,
    seed: int = SHUFFLE_SEED,
    progress_bars: bool = True,
    desc: str = "speed rounds",
) -> Rounds:
    """Measure every setting once per round, ``rounds`` times, in shuffled orders."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise UserError(f"ROUNDS must be a whole number of at least 1, not {rounds!r}.")
    labels = [s.label for s in settings]
    if len(set(labels)) != len(labels):
        raise UserError(f"two speed configurations share a label: {sorted({x for x in labels if labels.count(x) > 1})}")
    set_key = content_key(code_key("rounds"), build.key, seed, sorted(s.key() for s in settings))
    rows = []
    bar = progress.Bar(rounds * len(settings), desc, "run", progress_bars)
    try:
        for r in range(rounds):
            for pos, s in enumerate(order(settings, seed, r)):
                cached = cache_dir("rounds", set_key) / f"{content_key(r, s.key())}.json"
                if cached.exists() and not remeasuring():
                    result = json.loads(cached.read_text())
                else:
                    result = _measure(s, build)
                    write_atomic(cached, json.dumps(result))
                for test, value in result["values"].items():
                    rows.append({"round": r, "position": pos, "label": s.label, "test": test, "value": value,
                                 "measured_at": result["measured_at"]})  # fmt: skip
                bar.update()
    finally:
        bar.close()
    return Rounds(list(settings), seed, pd.DataFrame(rows))


def _measure(s: Setting, build: BuildInfo) -> dict:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if s.kind == "bandwidth":
        from .bandwidth import file_bandwidth, memory_bandwidth

        bw = file_bandwidth(Path(s.model), s.threads) if s.model else memory_bandwidth(s.threads, passes=5)
        return {"values": {"bw": bw.median_gbs}, "measured_at": now}
    cmd = [str(build.tool("llama-bench")), "-m", s.model, "-r", "1", "-t", str(s.threads), "-p", _prompts(s.n_prompt),
           "-n", str(s.n_gen), "-d", str(s.depth), "--repack", str(int(s.repack)), "-o", "json"]  # fmt: skip
    if s.n_prompt > WARMUP_PROMPT:
        cmd.append("--no-warmup")  # the short prompt test in front is the warm-up
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise UserError(f"llama-bench failed on {Path(s.model).name} ({s.label}): {last}")
    values = {}
    for row in json.loads(proc.stdout):
        if row["n_gen"] == 0 and row["n_prompt"] != s.n_prompt:
            continue  # the warm-up's row
        test = "pp" if row["n_gen"] == 0 else "tg"
        values[test] = float(row["avg_ts"])
    return {"values": values, "measured_at": now}


def _prompts(n_prompt: int) -> str:
    """llama-bench's -p: a prompt test longer than the warm-up is preceded by the warm-up's."""
    return f"{WARMUP_PROMPT},{n_prompt}" if n_prompt > WARMUP_PROMPT else str(n_prompt)
