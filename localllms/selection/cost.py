"""What does it cost? Cost per input and output token run locally, the total cost of ownership,
and the monthly volume at which owning the machine beats the per-token prices of hosted models."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from ..errors import UserError

INPUT_PER_OUTPUT = 3  # blend of 3 input tokens per output token, as the chapter's price figures use


@dataclass(frozen=True)
class CostAssumptions:
    """What running locally costs per hour; prices in one currency (the cloud prices are in USD)."""

    electricity_price_kwh: float
    power_w: float  # average draw of the machine while it runs the model
    hardware_price: float
    lifetime_years: float
    hours_per_day: float  # hours a day the machine serves the model; the hardware is paid off over them

    def __post_init__(self) -> None:
        for name in ("electricity_price_kwh", "power_w", "hardware_price"):
            if getattr(self, name) < 0:
                raise UserError(f"{name.upper()} must not be negative, not {getattr(self, name)}.")
        if self.lifetime_years <= 0 or not 0 < self.hours_per_day <= 24:
            raise UserError(
                f"HARDWARE_LIFETIME_YEARS must be positive and HOURS_PER_DAY in (0, 24], not {self.lifetime_years} and {self.hours_per_day}."
            )

    @property
    def service_hours(self) -> float:
        """Hours the model runs over the life of the hardware."""
        return self.lifetime_years * 365 * self.hours_per_day

    @property
    def energy_per_hour(self) -> float:
        return self.power_w / 1000 * self.electricity_price_kwh

    @property
    def hardware_per_hour(self) -> float:
        return self.hardware_price / self.service_hours

    @property
    def cost_per_hour(self) -> float:
        return self.energy_per_hour + self.hardware_per_hour


def cost_per_million(tokens_per_second: float, a: CostAssumptions) -> float:
    """Cost of one million tokens at a throughput: the machine's hourly cost over tokens per hour."""
    if tokens_per_second <= 0:
        raise UserError(f"The throughput must be positive to price a token, not {tokens_per_second}.")
    return a.cost_per_hour / (tokens_per_second * 3600) * 1e6


def energy_per_million(tokens_per_second: float, a: CostAssumptions) -> float:
    """The electricity alone per million tokens: the marginal cost once the hardware is bought."""
    return a.energy_per_hour / (tokens_per_second * 3600) * 1e6


def blended(input_price: float, output_price: float, ratio: float = INPUT_PER_OUTPUT) -> float:
    """Price per token of a mix of ``ratio`` input tokens per output token."""
    return (ratio * input_price + output_price) / (ratio + 1)


def tco(a: CostAssumptions) -> dict:
    """Total cost of ownership over the hardware's life: purchase plus electricity while serving."""
    energy = a.power_w / 1000 * a.service_hours * a.electricity_price_kwh
    return {
        "hardware": a.hardware_price,
        "electricity": energy,
        "total": a.hardware_price + energy,
        "service hours": a.service_hours,
    }


def local_cost(pp_tps: float, tg_tps: float, a: CostAssumptions) -> dict:
    """CPIT and CPOT per million tokens, blended 3:1, and the monthly capacity of the machine."""
    cpit, cpot = cost_per_million(pp_tps, a), cost_per_million(tg_tps, a)
    # seconds for one blended token: 3 prompt tokens and 1 generated, per 4 tokens
    sec_per_token = (INPUT_PER_OUTPUT / pp_tps + 1 / tg_tps) / (INPUT_PER_OUTPUT + 1)
    return {
        "CPIT per M": cpit,
        "CPOT per M": cpot,
        "blended per M": blended(cpit, cpot),
        "energy per M (blended)": blended(energy_per_million(pp_tps, a), energy_per_million(tg_tps, a)),
        "capacity per month (M tokens)": a.hours_per_day * 3600 * 365 / 12 / sec_per_token / 1e6,
    }


def break_even_tokens(hardware_per_month: float, local_marginal_per_m: float, cloud_per_m: float) -> float:
    """Monthly tokens (millions) above which owning the hardware is cheaper than the cloud price.

    Local: a fixed monthly share of the hardware plus electricity per token; cloud: a price
    per token. They cross at fixed / (cloud - local marginal); never if the cloud's price
    is at or below the local marginal cost.
    """
    gap = cloud_per_m - local_marginal_per_m
    return hardware_per_month / gap if gap > 0 else math.inf


@dataclass(frozen=True)
class CloudPrice:
    model: str
    input_per_m: float  # USD per million input tokens
    output_per_m: float
    cite: str  # bib key of the source the chapter quotes
    note: str = ""

    @property
    def blended_per_m(self) -> float:
        return blended(self.input_per_m, self.output_per_m)


# Per-million-token prices as the chapter quotes them; they change often. DeepSeek-V3's are the
# standard rates of DeepSeek's API price list (deepseek-chat; input on a cache miss), announced at
# the model's release for after its launch discount ended on 8 February 2025 -- not from its
# technical report, which gives no prices.
CLOUD_PRICES = (
    CloudPrice("Mistral NeMo", 0.15, 0.15, "mistraltechnology2024", "Mistral, fine-tuned model prices, 22 Dec 2024"),
    CloudPrice("Mistral Small", 0.2, 0.6, "mistraltechnology2024", "Mistral, fine-tuned model prices, 22 Dec 2024"),
    CloudPrice("Codestral", 0.2, 0.6, "mistraltechnology2024", "Mistral, fine-tuned model prices, 22 Dec 2024"),
    CloudPrice(
        "DeepSeek-V3", 0.27, 1.1, "deepseek2025apipricing", "DeepSeek API price list, standard rate from 8 Feb 2025"
    ),
    CloudPrice(
        "Mistral Large 24.11", 2.0, 6.0, "mistraltechnology2024", "Mistral, fine-tuned model prices, 22 Dec 2024"
    ),
)


def cloud_table(prices: Sequence[CloudPrice] = CLOUD_PRICES) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "model": p.model,
                "input (USD/M)": p.input_per_m,
                "output (USD/M)": p.output_per_m,
                "blended 3:1 (USD/M)": round(p.blended_per_m, 4),
                "source": p.note,
            }
            for p in prices
        ]
    ).set_index("model")


def cost_table(speeds: Sequence[dict], a: CostAssumptions, prices: Sequence[CloudPrice] = CLOUD_PRICES) -> pd.DataFrame:
    """Local CPIT/CPOT per candidate and the monthly volume at which each cloud price is beaten."""
    per_month = a.hardware_price / (a.lifetime_years * 12)
    rows = []
    for s in speeds:
        c = local_cost(s["pp_tps"], s["tg_tps"], a)
        row = {"model": s["model"], **{k: round(v, 4) for k, v in c.items()}}
        for p in prices:
            t = break_even_tokens(per_month, c["energy per M (blended)"], p.blended_per_m)
            if not math.isfinite(t):
                text = "never: electricity alone costs more"
            elif t > c["capacity per month (M tokens)"]:
                text = f"{t:,.1f}, beyond this machine's capacity"
            else:
                text = f"{t:,.1f}"
            row[f"break-even vs {p.model} (M tokens/month)"] = text
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")
