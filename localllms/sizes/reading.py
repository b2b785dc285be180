"""Where sizes meet hardware: the source chapter's serving layer, hardware and latency / price figures,
each set beside what this machine measured.

The quoted figures are the source chapter's reading, in December 2024, of Artificial Analysis's
provider comparison {cite}`artificialanalysis2024methodology,artificialanalysis2024providers`:
never measured here, and stated as quoted wherever a sentence uses them.
"""

from __future__ import annotations

import pandas as pd

from .. import intervals
from ..intervals import Estimate
from ..selection.cost import CostAssumptions, cost_per_million, energy_per_million
from .speed import BANDWIDTH, Sizes, label

# Quoted, not measured: the source chapter's reading of Artificial Analysis (December 2024).
QUOTED_LATENCY_S = (
    0.5  # "latency of half a second or better" for options of the Llama, Nova Micro, Phi, Mistral families
)
# USD per 1M input / output tokens; the source calls it the most expensive, which its own range allows only
# among the open-weight models (it puts Claude 3.5 Sonnet and GPT-4o at several dollars)
QUOTED_MOST_EXPENSIVE = ("Mistral Large 2", 2.0, 6.0)


def _est(values: list[float]) -> Estimate:
    return intervals.estimate(values)


def ttft(s: Sizes, spec: str) -> Estimate:
    """Seconds to the first token of an ``n_prompt``-token prompt: n_prompt / pp, per round."""
    f = s.file(spec)
    return _est([s.n_prompt / x for x in s.speed.values(label(f), "pp")])


def latency_sentence(s: Sizes, memory: pd.DataFrame | None = None) -> str:
    """This machine's time to first token beside the quoted half second."""
    parts = []
    for f in s.files:
        e = ttft(s, f.spec)
        parts.append(f"{f.model} {f.quant} {e.text(2, 's')}")
    text = (
        f"Quoted from the source chapter: several hosted options answered within {QUOTED_LATENCY_S} s. Here, on "
        f"{s.threads} CPU cores, the first token of a {s.n_prompt}-token prompt comes after: " + "; ".join(parts) + "."
    )
    if memory is not None and not memory.empty:
        big = memory.sort_values("file (GB)").iloc[-1]
        text += (
            f" A 512-token prompt, one request to llama-server, took {big['512-token prompt (s)']:.1f} s on "
            f"{big['model']} {big['quant']} (one measurement, from the memory runs)."
        )
    return text


def price_sentence(s: Sizes, assumptions: CostAssumptions) -> str:
    """What a million generated tokens cost in machine time here, beside the quoted price spread."""
    name, p_in, p_out = QUOTED_MOST_EXPENSIVE
    parts = []
    for f in sorted(s.files, key=lambda f: f.bytes_per_token):
        tg = s.speed.estimate(label(f), "tg").median
        hours = 1e6 / tg / 3600
        parts.append(
            f"{f.model} {f.quant}: {hours:,.0f} machine-hours, {cost_per_million(tg, assumptions):,.2f} USD "
            f"({energy_per_million(tg, assumptions):,.2f} of it electricity)"
        )
    return (
        f"A million generated tokens, at the median generation speed of these rounds and the cost assumptions of "
        f"the model-selection chapter ({assumptions.power_w:g} W at {assumptions.electricity_price_kwh:g} USD/kWh, "
        f"{assumptions.hardware_price:g} USD of hardware over {assumptions.lifetime_years:g} years of "
        f"{assumptions.hours_per_day:g} hours a day): " + "; ".join(parts) + ". "
        f"Quoted from the source chapter: {name}, the dearest open-weight model it names, charged {p_in:g} / {p_out:g} "
        "USD per million input / output tokens, and the cheapest hosted models a few cents."
    )


def hardware_sentence(s: Sizes) -> str:
    """The roofline of this machine for the largest file, and what more bandwidth would buy."""
    bw = s.speed.estimate(BANDWIDTH, "bw")
    big = max(s.files, key=lambda f: f.bytes_per_token)
    tg = s.speed.estimate(label(big), "tg")
    cap = bw.median * 1e9 / big.bytes_per_token
    return (
        f"This machine read memory at {bw.text(1, 'GB/s')} in these rounds. Each token of {big.model} at {big.quant} "
        f"reads {big.bytes_per_token / 1e9:.2f} GB of weights, so no CPU kernel could generate it faster than "
        f"{cap:.1f} tokens/s here; it generated {tg.text(2)} tokens/s. The ceiling scales with the bandwidth: a "
        "device that reads its weights k times faster raises it k-fold, which is what the memory of a GPU or of an "
        "inference chip buys first."
    )


def serving_sentence(memory: pd.DataFrame) -> str:
    """The serving layer's first two jobs, as this machine's largest server did them."""
    if memory.empty:
        return "No server was measured."
    rows = memory[memory["file (GB)"] == memory["file (GB)"].max()].sort_values("context")
    first, last = rows.iloc[0], rows.iloc[-1]
    kv = [str(x).split(" / ")[1] for x in rows["KV est. / llama.cpp (MiB)"]]
    return (
        f"Loading and resources, as llama-server did them for {first['model']} at {first['quant']} "
        f"({first['file (GB)']:.1f} GB): it read the weights into memory in {first['load (s)']:.1f} s; its KV cache "
        f"took {kv[0]} MiB at {int(first['context']):,} tokens and {kv[-1]} MiB at {int(last['context']):,}; "
        f"the process peaked at {first['measured peak (GiB)']:.2f} and {last['measured peak (GiB)']:.2f} GiB."
    )
