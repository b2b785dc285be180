"""Prompt length and llama-server's prompt cache: what a long shared prefix costs, and what reusing it saves.

A chat tool sends the same long system prompt (or document, or conversation so far) before every
new question. ``prompt_cache_sweep`` measures time to first token for prefixes of the prompts
corpus of growing length, each followed by a short question that changes from request to request:

* **no cache**: ``cache_prompt: false``, so the server processes the whole prompt every time;
* **prefix cached**: ``cache_prompt: true`` (llama-server's default); after one request that fills
  the slot's cache, the next requests share the prefix and the server processes only what follows
  it (it reports the reused tokens as ``timings.cache_n``).

The prompts are sent as token ids to ``/v1/completions``, so their lengths are exact and no chat
template is needed (base models too); a chat request whose system prompt holds the same tokens
costs the same. ``prompt_cache_reading`` says in a sentence where prompt processing dominates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .. import defaults, progress
from ..build import BuildInfo, current_build
from ..errors import UserError
from ..models import ResolvedModel
from ..paths import content_key
from . import records as rec
from .clients import tokenize
from .process import LlamaServer
from .streaming import stream_completion

if TYPE_CHECKING:
    import pandas as pd

NO_CACHE, CACHED, PRIMING = "no cache", "prefix cached", "first with cache (fills it)"
N_PREDICT = 4  # tokens generated per request: only the time to the first one is measured here


def _question(k: int) -> str:
    return f"\n\nQuestion {k + 1}: what is the text above about?\nAnswer:"


def check_lengths(lengths: Sequence[int]) -> list[int]:
    """The prompt lengths, validated: whole positive numbers, each once, ascending."""
    numbers = not isinstance(lengths, str) and all(isinstance(n, int | float) for n in lengths)
    if not lengths or not numbers or any(int(n) != n or n < 1 for n in lengths):
        raise UserError(f"PROMPT_LENGTHS must be positive whole numbers of tokens, not {list(lengths)!r}.")
    return sorted({int(n) for n in lengths})


def prompt_cache_sweep(
    model: ResolvedModel,
    texts: Sequence[str],
    lengths: Sequence[int] = defaults.PROMPT_LENGTHS,
    repeats: int = defaults.PROMPT_REPEATS,
    *,
    threads: int,
    build: BuildInfo | None = None,
    log_dir: Path | None = None,
) -> dict:
    """TTFT for each prefix length, with and without the prompt cache (``repeats`` requests each).

    Returns ``{"command": ..., "records": [...]}`` with one record per request: length, mode,
    repetition, TTFT, prompt tokens, tokens reused from the cache, llama.cpp's prompt time.
    Cached by content.
    """
    lengths = check_lengths(lengths)
    if repeats < 1:
        raise UserError(f"PROMPT_REPEATS must be at least 1, not {repeats}.")
    build = build or current_build()
    ctx = max(lengths) + 256  # the longest prefix, the question and the answer fit one slot
    if ctx > model.info.context_length:
        raise UserError(
            f"The longest prompt ({max(lengths)} tokens) does not fit {model.path.name}'s trained context "
            f"of {model.info.context_length} tokens; lower PROMPT_LENGTHS."
        )
    corpus = "\n\n".join(texts)

    def measure() -> dict:
        rows = []
        with LlamaServer(model, threads=threads, parallel=1, ctx_size=ctx, build=build, log_dir=log_dir) as srv:
            ids = tokenize(srv, corpus)
            if len(ids) < max(lengths):
                raise UserError(
                    f"The prompts corpus has only {len(ids)} tokens, fewer than the longest prompt length "
                    f"{max(lengths)}; lower PROMPT_LENGTHS."
                )
            questions = [tokenize(srv, _question(k)) for k in range(repeats + 1)]
            plan = [(n, NO_CACHE, k) for n in lengths for k in range(repeats)]
            plan += [(n, PRIMING, repeats) for n in lengths] + [(n, CACHED, k) for n in lengths for k in range(repeats)]
            plan.sort(key=lambda p: (p[0], [NO_CACHE, PRIMING, CACHED].index(p[1]), p[2]))
            for n, mode, k in progress.track(plan, "prompt length x cache", "request"):
                t = stream_completion(
                    srv, ids[:n] + questions[k], max_tokens=N_PREDICT, cache_prompt=mode != NO_CACHE, ignore_eos=True
                )
                rows.append(
                    {
                        "prefix_tokens": n,
                        "mode": mode,
                        "repetition": k,
                        "ttft_ms": t.ttft_ms,
                        "prompt_tokens": t.prompt_tokens,
                        "cached_tokens": t.cached_tokens,
                        "server_prompt_ms": t.server_prompt_ms,
                    }
                )
            return {"command": srv.command_line(), "records": rows}

    parts = (model.sha256, build.key, threads, content_key(corpus), lengths, repeats, N_PREDICT)
    return rec.cached("prompt-cache", parts, measure)


def prompt_cache_table(records: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """Per prefix length: median TTFT without and with the cache, tokens processed, prompt speed, saving."""
    import pandas as pd

    r = records.assign(processed=records["prompt_tokens"] - records["cached_tokens"].fillna(0))
    rows = []
    for n, g in r.groupby("prefix_tokens"):
        cold, warm = g[g["mode"] == NO_CACHE], g[g["mode"] == CACHED]
        ttft_cold, ttft_warm = cold["ttft_ms"].median(), warm["ttft_ms"].median()
        rows.append(
            {
                "prefix tokens": int(n),
                "prompt tokens": int(cold["prompt_tokens"].median()),
                "TTFT, no cache (ms)": ttft_cold,
                "TTFT, prefix cached (ms)": ttft_warm,
                "tokens processed, cached": int(warm["processed"].median()),
                "prompt tok/s, no cache": (cold["prompt_tokens"] / cold["server_prompt_ms"] * 1000).median(),
                "TTFT saved by the cache (%)": 100 * (1 - ttft_warm / ttft_cold),
            }
        )
    return pd.DataFrame(rows).set_index("prefix tokens").round(digits)


def prompt_cache_reading(table: pd.DataFrame, tpot_ms: float, max_tokens: int) -> str:
    """Where prompt processing dominates, and what the cache saves, as sentences computed from ``table``.

    ``tpot_ms`` and ``max_tokens`` give the time to generate an answer of the workload's length
    (``(max_tokens - 1) * tpot_ms`` after the first token), against which TTFT is set.
    """
    gen_ms = (max_tokens - 1) * tpot_ms
    cold = table["TTFT, no cache (ms)"]
    over = [int(n) for n in table.index if cold[n] > gen_ms]
    # the shortest length from which every longer measured length is also dominated by the prompt
    from_on = next((int(n) for n in table.index if all(cold[m] > gen_ms for m in table.index if m >= n)), None)
    answer = f"a {max_tokens}-token answer takes about {gen_ms:.0f} ms to generate after its first token"
    answer += f" (at the median TPOT of {tpot_ms:.1f} ms)"
    if not over:
        first = f"At every prompt length measured, {answer}, more than processing the prompt took."
    elif from_on is not None and over == [int(n) for n in table.index if n >= from_on]:
        first = (
            f"Without the cache, processing the prompt takes longer than generating the answer from {from_on} "
            f"prompt tokens up ({cold[from_on]:.0f} ms there): {answer}."
        )
    else:
        first = (
            f"Without the cache, processing the prompt takes longer than generating the answer at "
            f"{', '.join(map(str, over))} prompt tokens: {answer}."
        )
    longest = int(table.index.max())
    row = table.loc[longest]
    second = (
        f"With the {longest}-token prefix cached, TTFT falls from {row['TTFT, no cache (ms)']:.0f} ms to "
        f"{row['TTFT, prefix cached (ms)']:.0f} ms ({row['TTFT saved by the cache (%)']:.0f} % less), because the "
        f"server processes only the {int(row['tokens processed, cached'])} tokens after the shared prefix."
    )
    cached = table["tokens processed, cached"]
    missed = [int(n) for n in table.index if cached[n] >= table.loc[n, "prompt tokens"]]
    third = ""
    if missed:
        third = (
            f" At {', '.join(map(str, missed))} prefix tokens the server did not reuse its cache (the cached requests "
            "processed their whole prompt again), so the cache saved nothing there and the two columns differ only "
            "by noise."
        )
    return first + " " + second + third
