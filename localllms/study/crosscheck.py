"""Cross-check: our evaluator against llama.cpp's own ``llama-perplexity`` on the same tokens.

The prompts are joined one per line into the file llama-perplexity reads; both tools
score it in the tool's chunks of ``n_ctx`` tokens (BOS first, the second half of each
chunk scored). Which statistics are compared, and within what tolerance, is declared
with each metric in ``metrics.METRICS`` (its ``tool`` label and ``tolerance``).

Our numbers use exact base log-probabilities; the tool stores the base as 16-bit
quantized log-probs and drops base probabilities below e^-16 from the KL sum, so
base-side figures differ by that quantization, variant-side ones not at all.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from .. import evaluate, metrics
from ..build import BuildInfo, current_build
from ..errors import UserError
from ..models import ResolvedModel
from ..paths import cache_dir, code_key, content_key, write_atomic
from .pipeline import Study, variant

_NUM = r"(-?[\d.]+(?:e[-+]?\d+)?)"


@dataclass
class ToolResult:
    """What llama-perplexity printed (by metric name), and what the run cost."""

    values: dict[str, float]
    n_chunks: int
    base_logits_bytes: int
    seconds_base: float
    seconds_variant: float
    command: str


def parse_tool_output(text: str) -> dict[str, float]:
    """The value of every cross-checked metric from llama-perplexity's --kl-divergence output."""
    values = {}
    for m in metrics.CROSSCHECKED:
        found = re.search(m.tool + r"\s*:\s*" + _NUM, text)
        if not found:
            raise UserError(f"llama-perplexity's output has no '{m.tool}' line; read its log.")
        values[m.name] = float(found.group(1))
    return values


def run_llama_perplexity(
    reference: ResolvedModel,
    variant: ResolvedModel,
    text_file: Path,
    n_ctx: int,
    threads: int,
    workdir: Path,
    build: BuildInfo | None = None,
    max_chunks: int | None = None,
) -> ToolResult:
    """llama-perplexity --kl-divergence-base on the reference, then --kl-divergence on the variant."""
    return run_llama_perplexity_many(reference, [variant], text_file, n_ctx, threads, workdir, build, max_chunks)[0]


def run_llama_perplexity_many(
    reference: ResolvedModel,
    variants: Sequence[ResolvedModel],
    text_file: Path,
    n_ctx: int,
    threads: int,
    workdir: Path,
    build: BuildInfo | None = None,
    max_chunks: int | None = None,
) -> list[ToolResult]:
    """One base pass writing the reference's logits file, then one --kl-divergence pass per
    variant against it: the tool's way to score several variants (``make bench`` times it)."""
    build = build or current_build()
    tool = str(build.tool("llama-perplexity"))
    workdir.mkdir(parents=True, exist_ok=True)
    base_file = workdir / f"{reference.sha256[:12]}-{n_ctx}.kld"
    common = ["-f", str(text_file), "-c", str(n_ctx), "-b", str(n_ctx), "-t", str(threads),
              "--kl-divergence-base", str(base_file)]  # fmt: skip
    if max_chunks:
        common += ["--chunks", str(max_chunks)]

    def run(args: list[str]) -> tuple[str, float]:
        started = time.perf_counter()
        proc = subprocess.run([tool, *args], capture_output=True, text=True)
        out = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise UserError(f"llama-perplexity failed (exit {proc.returncode}):\n" + "\n".join(out.splitlines()[-10:]))
        return out, time.perf_counter() - started

    try:
        _, t_base = run(["-m", str(reference.path), *common])
        results = []
        for variant in variants:
            out, t_var = run(["-m", str(variant.path), *common, "--kl-divergence"])
            chunks = re.findall(r"^\s*(\d+)\s+[\d.]+\s+±", out, re.M)
            results.append(
                ToolResult(
                    values=parse_tool_output(out),
                    n_chunks=int(chunks[-1]) if chunks else 0,
                    base_logits_bytes=base_file.stat().st_size,
                    seconds_base=t_base,
                    seconds_variant=t_var,
                    command=" ".join([Path(tool).name, "-m", variant.path.name, *common, "--kl-divergence"]),
                )
            )
    finally:
        base_file.unlink(missing_ok=True)  # measured; not kept (it is the file our evaluator avoids)
    return results


def compare(ours: dict[str, float], tool: dict[str, float], exact: dict[str, float] | None = None) -> pd.DataFrame:
    """Per cross-checked metric: ours with the tool's storage of the reference (``ours``), the
    tool's value, their difference and the verdict against the metric's tolerance; with
    ``exact``, also our exact value (what the study reports) beside them."""
    rows = []
    for m in metrics.CROSSCHECKED:
        assert m.tolerance is not None
        kind, tol = m.tolerance
        a, b = float(ours[m.name]), float(tool[m.name])
        diff = abs(a - b) if kind == "abs" else abs(a - b) / max(abs(b), 1e-12)
        row = {"metric": m.name}
        if exact is not None:
            row["ours, exact"] = float(exact[m.name])
        row.update({"ours, as the tool stores the reference": a, "llama-perplexity": b, "difference": diff,
                    "kind": kind, "tolerance": tol, "within": diff <= tol})  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows).set_index("metric")


@dataclass
class CrossCheck:
    """The comparison, and what it rests on: the tool's run, our seconds, and how many scored
    tokens the tool's 16-bit storage clamps (the one source of difference it has from ours)."""

    table: pd.DataFrame
    tool: ToolResult
    ours_seconds: float
    n_ctx: int
    n_tokens: int
    n_clamped: int  # scored tokens whose reference log-probability is more than 16 below the top one

    @property
    def agrees(self) -> bool:
        return bool(self.table["within"].all())

    def storage_effect(self) -> str:
        """One sentence, computed: what the tool's storage of the reference changes, and why."""
        t = self.table
        ppl_exact, ppl_stored = (
            t.loc["ppl_base", "ours, exact"],
            t.loc["ppl_base", "ours, as the tool stores the reference"],
        )
        return (
            f"Of {self.n_tokens:,} scored tokens, {self.n_clamped} have a reference log-probability more than 16 "
            f"below the reference's top token; llama-perplexity stores those at that floor, so its PPL(base) is "
            f"{ppl_stored:.4f} where the exact value is {ppl_exact:.4f} ({100 * (ppl_stored / ppl_exact - 1):+.3f} %). "
            "With the reference stored the same way, our evaluator reproduces every figure of the tool within the "
            "tolerance declared with each metric, whatever the run's size."
        )


def crosscheck(study: Study, quant: str, n_ctx: int = 512, max_chunks: int | None = None) -> CrossCheck:
    """Score the study's prompts with llama-perplexity and with our evaluator, side by side.

    Cached by the code of both sides, the build, the models and the text: the same inputs
    give the same numbers (the timings shown are then those of the first run).
    """
    var = variant(study, quant)
    if n_ctx < 8:
        raise UserError(f"CROSSCHECK_CTX must be at least 8 tokens, not {n_ctx}.")
    text = study.prompts.as_text()
    key = content_key(code_key("evaluate", "study.crosscheck", "metrics"), study.build.key, study.reference.sha256,
                      var.sha256, n_ctx, max_chunks, text)  # fmt: skip
    cached = cache_dir("eval", "crosscheck") / f"{key}.json"
    if cached.exists():
        saved = json.loads(cached.read_text())
        tool = ToolResult(**saved["tool"])
    else:
        workdir = cache_dir("eval", "llama-perplexity")
        text_file = write_atomic(workdir / f"{key}.txt", text)
        threads = study.threads
        tool = run_llama_perplexity(study.reference, var, text_file, n_ctx, threads, workdir, study.build, max_chunks)
        text_file.unlink()
        ours = evaluate.evaluate_windows(study.reference, var, text, n_ctx, threads, study.build, max_chunks)
        saved = {
            "tool": asdict(tool),
            "exact": metrics.summarize([ours.exact]),
            "as_tool": metrics.summarize([ours.as_tool]),
            "seconds": ours.seconds,
            "n_clamped": int((ours.exact.nll_base - ours.as_tool.nll_base > evaluate.FLOOR_SHIFT).sum()),
        }
        write_atomic(cached, json.dumps(saved))
    exact, as_tool = saved["exact"], saved["as_tool"]
    if exact["n_tokens"] != tool.n_chunks * (n_ctx - 1 - n_ctx // 2):
        raise UserError(
            f"The evaluator scored {exact['n_tokens']} tokens but llama-perplexity {tool.n_chunks} chunks; the chunking differs."
        )
    table = compare(as_tool, tool.values, exact)
    return CrossCheck(table, tool, saved["seconds"], n_ctx, exact["n_tokens"], saved["n_clamped"])
