"""How fast is it? Time to first token and per output token, from ``llama-bench``."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .. import defaults
from ..build import BuildInfo
from ..models import ResolvedModel


def speed(
    model: ResolvedModel,
    threads: int | None = None,
    repetitions: int = 3,
    n_prompt: int = 256,
    n_gen: int = 32,
    build: BuildInfo | None = None,
) -> dict:
    """Throughput from llama-bench and the latency a user sees, for a prompt of ``n_prompt`` tokens.

    TTFT is the time to process the prompt, ``n_prompt / pp``: the first output token comes
    from the logits of the prompt's last position. TPOT is ``1 / tg``. Their spread is
    propagated from llama-bench's standard deviations (first order).
    """
    from ..bench import llama_bench

    threads = defaults.threads(threads)
    t = llama_bench(model, threads, repetitions, n_prompt, n_gen, build)
    return {
        "model": model.spec,
        "pp_tps": t.pp_tps,
        "pp_sd": t.pp_sd,
        "tg_tps": t.tg_tps,
        "tg_sd": t.tg_sd,
        "ttft_s": n_prompt / t.pp_tps,
        "ttft_sd": n_prompt * t.pp_sd / t.pp_tps**2,
        "tpot_ms": 1000 / t.tg_tps,
        "tpot_sd": 1000 * t.tg_sd / t.tg_tps**2,
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        "repetitions": repetitions,
        "threads": threads,
    }


def speed_table(rows: Sequence[dict]) -> pd.DataFrame:
    def pm(mean: float, sd: float, digits: int) -> str:
        return f"{mean:.{digits}f} ± {sd:.{digits}f}"

    out = []
    for r in rows:
        out.append(
            {
                "model": r["model"],
                f"TTFT, {r['n_prompt']}-token prompt (s)": pm(r["ttft_s"], r["ttft_sd"], 3),
                "TPOT (ms)": pm(r["tpot_ms"], r["tpot_sd"], 1),
                "prompt (tok/s)": pm(r["pp_tps"], r["pp_sd"], 1),
                "generation (tok/s)": pm(r["tg_tps"], r["tg_sd"], 1),
            }
        )
    return pd.DataFrame(out).set_index("model")
