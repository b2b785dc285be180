"""Server options on the same load: one fresh llama-server per configuration, the same open-loop run.

* ``SERVER_OPTIONS``: the configurations compared (slots, continuous batching on or off).
* ``compare_options``: the same seeded open-loop run against each (the rate search's own run
  reused for the default configuration); ``options_table``, ``best_option`` and
  ``options_reading``: the table, the winner and the sentences computed from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .. import defaults, progress
from ..build import BuildInfo, current_build
from ..models import ResolvedModel
from . import records as rec
from .clients import SEED
from .loadgen import SweepResult, run_probe
from .stats import ServiceTarget
from .workload import Workload, benchmark_server, warm_up

if TYPE_CHECKING:
    import pandas as pd

# llama-server options that change these numbers for a local user: the number of slots (-np), and
# continuous batching (-cb, on by default; --no-cont-batching turns it off). Label -> (slots, extra arguments).
SERVER_OPTIONS: dict[str, tuple[int, tuple[str, ...]]] = {
    "1 slot": (1, ()),
    "4 slots": (4, ()),
    "8 slots": (8, ()),
    "4 slots, no continuous batching": (4, ("--no-cont-batching",)),
}
FROM_SEARCH = " (the rate search's run)"


def compare_options(
    model: ResolvedModel,
    workload: Workload,
    target: ServiceTarget,
    rate: float,
    requests: int = defaults.REQUESTS_PER_RATE,
    options: dict[str, tuple[int, tuple[str, ...]]] | None = None,
    warmup: int = defaults.WARMUP_REQUESTS,
    threads: int | None = None,
    seed: int = SEED,
    time_budget_s: float = 60.0,
    sweep: SweepResult | None = None,
    build: BuildInfo | None = None,
    log_dir: Path | None = None,
) -> list[dict]:
    """The same open-loop run (``requests`` at ``rate`` per second, same seed) against one server per option set.

    Returns one dict per option set: its label, command line, summary and records. Each is cached
    as soon as it ends. A ``sweep`` that already ran this rate with the same requests, seed and
    default options supplies that configuration's run instead of a new one (its label says so).
    """
    build = build or current_build()
    threads = defaults.threads(threads)
    options = options or SERVER_OPTIONS
    out = []
    for label, (parallel, extra) in progress.track(list(options.items()), "server options", "config"):
        reused = _from_sweep(sweep, rate, parallel, extra, requests, seed, target) if sweep else None
        if reused is not None:
            out.append({"label": label + FROM_SEARCH, "parallel": parallel, "extra_args": [], **reused})
            continue

        def measure(parallel: int = parallel, extra: tuple[str, ...] = extra) -> dict:
            with benchmark_server(model, threads, parallel, extra, build, log_dir=log_dir) as srv:
                warm = warm_up(workload, srv, warmup, 10_000)
                got = run_probe(srv, workload, rate, requests, seed, target, time_budget_s)
                return {"command": srv.command_line(), "warmup": warm, **got}

        parts = (model.sha256, build.key, threads, workload.identity(), parallel, list(extra), warmup, seed, requests)
        got = rec.cached("options", (*parts, rate, target.ttft_ms, target.tpot_ms, time_budget_s), measure)
        out.append({"label": label, "parallel": parallel, "extra_args": list(extra), **got})
    return out


def _from_sweep(
    sweep: SweepResult, rate: float, parallel: int, extra: Sequence[str], requests: int, seed: int, t: ServiceTarget
) -> dict | None:
    same = parallel == sweep.parallel and not extra and seed == sweep.seed and t == sweep.target
    probe = next((p for p in sweep.probes if p.rate == rate and len(p.records) == requests), None)
    if not same or probe is None:
        return None
    return {"command": sweep.command, "warmup": [], "rate": rate, "records": probe.records,
            "duration_s": probe.duration_s, "summary": probe.summary}  # fmt: skip


def options_table(results: list[dict], digits: int = 2) -> pd.DataFrame:
    """One row per server configuration: attainment, goodput, throughput and latency percentiles."""
    import pandas as pd

    rows = []
    for r in results:
        s = r["summary"]
        rows.append(
            {
                "server": r["label"],
                "slots (-np)": r["parallel"],
                "continuous batching": "--no-cont-batching" not in r["extra_args"],
                "achieved req/s": s["achieved_rps"],
                "output tok/s": s["output_tokens_per_s"],
                "TTFT p50 (ms)": s["ttft_p50_ms"],
                "TTFT p90 (ms)": s["ttft_p90_ms"],
                "TPOT p50 (ms)": s["tpot_p50_ms"],
                "TPOT p90 (ms)": s["tpot_p90_ms"],
                "meet target (share)": s["attainment"],
                "goodput (req/s)": s["goodput_rps"],
            }
        )
    return pd.DataFrame(rows).set_index("server").round(digits)


def best_option(table: pd.DataFrame) -> str:
    """The configuration with the highest goodput; ties go to the lower TTFT p90, then to fewer slots."""
    ranked = table.sort_values(
        ["goodput (req/s)", "meet target (share)", "TTFT p90 (ms)", "slots (-np)"],
        ascending=[False, False, True, True],
    )
    return str(ranked.index[0])


def options_reading(table: pd.DataFrame, rate: float, requests: int | None = None) -> str:
    """Which server configuration served ``rate`` best, and why, as sentences computed from ``table``;
    with ``requests`` (per configuration), a comparison decided by a single request is called so."""
    best = best_option(table)

    def close(a: pd.Series, b: pd.Series) -> str:
        if not requests:
            return ""
        met = [round(float(x["meet target (share)"]) * requests) for x in (a, b)]
        if abs(met[0] - met[1]) > 1:
            return ""
        return (
            f" ({met[0]} against {met[1]} of {requests} requests within the target: at most one request apart, "
            "which a rerun can change)"
        )

    b = table.loc[best]
    if b["goodput (req/s)"] == 0:
        fastest = table["TTFT p90 (ms)"].idxmin()
        return (
            f"At {rate:g} requests/s no configuration met the target for any request; the lowest TTFT p90 was "
            f"{table.loc[fastest, 'TTFT p90 (ms)']:.0f} ms, with {fastest}."
        )
    out = [
        f"At {rate:g} requests/s, **{best}** served best: goodput {b['goodput (req/s)']:.2f} requests/s, "
        f"{b['meet target (share)']:.0%} of requests within the target, TTFT p90 {b['TTFT p90 (ms)']:.0f} ms, "
        f"TPOT p50 {b['TPOT p50 (ms)']:.0f} ms."
    ]
    others = table.drop(index=best)
    if len(others):
        runner = best_option(others)
        if close(b, table.loc[runner]):
            out.append(f"The runner-up, {runner}, was close{close(b, table.loc[runner])}.")
    one = table[table["slots (-np)"] == 1]
    if best not in one.index and len(one):
        o = one.iloc[0]
        why = []
        if o["TTFT p90 (ms)"] > b["TTFT p90 (ms)"]:
            why.append(
                f"with one slot a request waits for the one before it to finish (TTFT p90 {o['TTFT p90 (ms)']:.0f} ms)"
            )
        if b["TPOT p50 (ms)"] > o["TPOT p50 (ms)"]:
            why.append(
                f"while with more slots each stream is slower (TPOT p50 {b['TPOT p50 (ms)']:.0f} against "
                f"{o['TPOT p50 (ms)']:.0f} ms), as the slots share the cores"
            )
        if why:
            out.append("More slots won because " + ", ".join(why) + ".")
    elif best in one.index:
        out.append("More slots did not help: on these cores they only divided the same compute between requests.")
    no_cb = [i for i in table.index if not table.loc[i, "continuous batching"]]
    for label in no_cb:
        n = table.loc[label]
        same = table[(table["slots (-np)"] == n["slots (-np)"]) & table["continuous batching"]]
        if len(same):
            c = same.iloc[0]
            gn, gc = n["goodput (req/s)"], c["goodput (req/s)"]
            verdict = "lower goodput than" if gn < gc else "higher goodput than" if gn > gc else "the same goodput as"
            out.append(
                f"Turning continuous batching off ({label}) gave {verdict} the same slots with it "
                f"({n['goodput (req/s)']:.2f} against {c['goodput (req/s)']:.2f} requests/s; TTFT p90 "
                f"{n['TTFT p90 (ms)']:.0f} against {c['TTFT p90 (ms)']:.0f} ms){close(n, c)}."
            )
    return " ".join(out)
