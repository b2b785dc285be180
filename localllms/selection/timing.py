"""How fast is it? Time to first token and per output token, from interleaved speed rounds."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .. import intervals, rounds
from ..build import BuildInfo, current_build
from ..models import ResolvedModel


def speeds(
    models: Sequence[ResolvedModel],
    threads: int,
    n_rounds: int = rounds.ROUNDS,
    n_prompt: int = 256,
    n_gen: int = 32,
    build: BuildInfo | None = None,
    progress_bars: bool = True,
) -> list[dict]:
    """Throughput and the latency a user sees, for a prompt of ``n_prompt`` tokens, of every model
    measured in the same interleaved rounds (each model once per round, shuffled).

    TTFT is the time to process the prompt, ``n_prompt / pp``: the first output token comes from
    the logits of the prompt's last position. TPOT is ``1 / tg``. Each is computed per round, so
    its median and interval come from the rounds; the first model is the others' paired reference.
    """
    build = build or current_build()
    plan = [rounds.Setting(m.spec, str(m.path), m.sha256, threads, n_prompt, n_gen) for m in models]
    r = rounds.run(plan, build, n_rounds, progress_bars=progress_bars, desc="speed rounds")
    out = []
    for m in models:
        pp, tg = r.values(m.spec, "pp"), r.values(m.spec, "tg")
        vs = r.ratio(m.spec, models[0].spec, "tg")
        out.append(
            {
                "model": m.spec,
                "pp": intervals.estimate(pp),
                "tg": intervals.estimate(tg),
                "pp_tps": intervals.estimate(pp).median,  # the medians, for the cost and the ranking
                "tg_tps": intervals.estimate(tg).median,
                "ttft_s": intervals.estimate([n_prompt / x for x in pp]),
                "tpot_ms": intervals.estimate([1000 / x for x in tg]),
                "tg_vs_first": vs,
                "n_prompt": n_prompt,
                "n_gen": n_gen,
                "rounds": r.n_rounds,
                "threads": threads,
                "describe": r.describe(),
            }
        )
    return out


def speed_table(rows: Sequence[dict]) -> pd.DataFrame:
    """Median (interval) over the rounds of each latency and throughput; the generation ratio of
    each model to the first within each round, and whether the rounds separate them."""
    out = []
    first = rows[0]["model"] if rows else ""
    for r in rows:
        vs = r["tg_vs_first"]
        out.append(
            {
                "model": r["model"],
                f"TTFT, {r['n_prompt']}-token prompt (s)": r["ttft_s"].text(3),
                "TPOT (ms)": r["tpot_ms"].text(1),
                "prompt (tok/s)": r["pp"].text(1),
                "generation (tok/s)": r["tg"].text(1),
                f"generation vs {first}": "—" if r["model"] == first else f"{vs.text(2)}: {intervals.comparison(vs)}",
            }
        )
    return pd.DataFrame(out).set_index("model")
