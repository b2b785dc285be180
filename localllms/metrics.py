"""The quality metrics of a variant against its reference, each declared once.

The evaluator (``evaluate.py``) keeps, per scored position, the record defined here,
:class:`TokenStats`: both models' negative log-likelihood of the next token, the KL
divergence of the variant from the reference, and whether both rank the same token
first. Every metric below is a function of those records, and is
declared once in ``METRICS`` with its column name, its table heading, its printed
rounding, the tables that show it (``tables``: a tag of ``TABLES``, or a :class:`Column`
where that table's heading, "mean ± se" or order differs, or, in the imatrix table, where the
metric's :class:`Change` is the gain) and, when ``llama-perplexity``
prints the same statistic, the label of that line and the tolerance of the cross-check.
The summary, the CSV columns, every table of metrics (``columns(table)``) and the
cross-check all read this one list.

To add a metric: write its function of a :class:`Sample` and add one ``Metric(...)``
line, tagged with the tables that should show it. Definitions, as in the case study
(per prompt *i*, over its positions):

* ``PPL_i = exp(mean NLL)``; Avg PPL ratio = mean_i PPL_i(Q) / PPL_i(base);
* ``Corr(ln PPL_i(Q), ln PPL_i(base))`` across prompts (the case study's) and across
  tokens (llama-perplexity's);
* KL divergence per position ``sum_v p_base(v) (ln p_base(v) - ln p_Q(v))``;
* same top token: share of positions where both argmax tokens agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path

import numpy as np


@dataclass
class TokenStats:
    """Per scored position: NLL under each model, KL(base || Q), same top token.

    The evaluator writes one per prompt (and caches it, ``save``/``load``); every metric reads them.
    """

    nll_base: np.ndarray
    nll_q: np.ndarray
    kld: np.ndarray
    same_top: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence[TokenStats]) -> TokenStats:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **{f.name: getattr(self, f.name) for f in fields(self)})
        tmp.replace(path)  # complete or absent: an interrupt never leaves half a result

    @classmethod
    def load(cls, path: Path) -> TokenStats:
        with np.load(path) as d:
            return cls(*(d[f.name] for f in fields(cls)))


@dataclass(frozen=True)
class Sample:
    """What a metric is computed from: the token records of each prompt (or chunk)."""

    prompts: Sequence[TokenStats]

    @cached_property
    def tokens(self) -> TokenStats:
        """All prompts' records joined: the token-level view llama-perplexity takes."""
        return TokenStats.concat(self.prompts)

    @cached_property
    def ppl_per_prompt(self) -> tuple[np.ndarray, np.ndarray]:
        """(PPL_i(Q), PPL_i(base)) for every prompt."""
        q = np.array([np.exp(s.nll_q.mean()) for s in self.prompts])
        b = np.array([np.exp(s.nll_base.mean()) for s in self.prompts])
        return q, b

    @cached_property
    def dp(self) -> np.ndarray:
        """Δp per position: p_Q(next token) - p_base(next token), as llama-perplexity defines it."""
        return np.exp(-self.tokens.nll_q) - np.exp(-self.tokens.nll_base)


# The tables that show metrics: a metric lists the tags of those that show it (Metric.tables).
QUALITY = "quality"  # study.quality_table, the case study's main table
CASE_STUDY = "case study"  # study.case_study_table, the seed chapter's table extended (and the CLI's)
TAIL = "tail"  # study.tail_table: Δp and the KL divergence's far tail
KV_CACHE = "kv cache"  # study.kvcache: the reference with a quantized KV cache against its f16 cache
TWO_MODELS = "two models"  # study.across.side_by_side: two models' variants side by side
IMATRIX = "imatrix"  # study.importance.gain_table: each metric without and with the importance matrix
COMPARING = "comparing"  # compare.quality_columns: the comparing page, across models and machines
CLI = "cli"  # the parseable "study:" line per variant of `python -m localllms study`
TABLES = (QUALITY, CASE_STUDY, TAIL, KV_CACHE, TWO_MODELS, IMATRIX, COMPARING, CLI)
MEAN_SE_TABLES = (CASE_STUDY, TAIL)  # the tables that print text columns, so can print "mean ± se"


@dataclass(frozen=True)
class Change:
    """A metric's relative change from a table's "without" column to its "with" column (%), and that
    change's standard error over prompts, from the metric per prompt (paired differences)."""

    heading: str  # the change's column
    se_heading: str  # its standard error's column
    per_prompt: str  # the study's row column that holds the metric per prompt (a list)
    digits: int = 1  # rounding of both


@dataclass(frozen=True)
class Column:
    """A metric's column in one table, where it differs from a plain tag: its label as heading,
    its value alone, in the registry's order."""

    table: str  # one of TABLES
    heading: str | None = None  # None: the metric's label; IMATRIX puts "without" / "with" at "{}"
    with_se: bool = False  # "mean ± se", the se being the metric Metric.se names (MEAN_SE_TABLES only)
    order: int = 0  # a table's columns sort by this, then by registry order (the tail's groups)
    change: Change | None = None  # IMATRIX: the metric whose change is the gain, in columns after its own


@dataclass(frozen=True)
class Metric:
    """One quality metric: how it is computed, named, rounded, shown and cross-checked."""

    name: str  # column in the results CSV and the store
    label: str  # heading in a table, unless that table's Column gives another
    compute: Callable[[Sample], float]
    digits: int  # rounding wherever the book prints it
    tool: str | None = None  # regex of the label llama-perplexity prints it under
    tolerance: tuple[str, float] | None = None  # ("rel" | "abs", bound) against the tool
    se: str | None = None  # the metric that is its standard error, for "mean ± se" columns
    tables: tuple[str | Column, ...] = ()  # the tables that show it: a tag of TABLES, or a Column


@dataclass(frozen=True)
class Shown:
    """A metric as one table shows it (``columns``): CSV column, heading, rounding, and the CSV
    column of its standard error when the table prints "mean ± se" (else None)."""

    name: str
    heading: str
    digits: int
    se: str | None = None
    change: Change | None = None  # its change between "without" and "with" (Column.change), else None


# --------------------------------------------------------------------------- definitions


def _se(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(100 * np.corrcoef(a, b)[0, 1])


def ppl_q(s: Sample) -> float:
    return float(np.exp(s.tokens.nll_q.mean()))


def ppl_base(s: Sample) -> float:
    return float(np.exp(s.tokens.nll_base.mean()))


def ln_ppl_ratio(s: Sample) -> float:
    return float(s.tokens.nll_q.mean() - s.tokens.nll_base.mean())


def ppl_ratio_pct(s: Sample) -> float:
    q, b = s.ppl_per_prompt
    return float(100 * ((q / b).mean() - 1))


def ppl_ratio_se(s: Sample) -> float:
    q, b = s.ppl_per_prompt
    return 100 * _se(q / b)


def prompt_ln_ppl_corr_pct(s: Sample) -> float:
    q, b = s.ppl_per_prompt
    return _corr(np.log(q), np.log(b))


def token_ln_ppl_corr_pct(s: Sample) -> float:
    return _corr(s.tokens.nll_q, s.tokens.nll_base)


def kld_mean(s: Sample) -> float:
    return float(s.tokens.kld.mean())


def kld_se(s: Sample) -> float:
    return _se(s.tokens.kld)


def kld_median(s: Sample) -> float:
    return float(np.median(s.tokens.kld))


def kld_p99(s: Sample) -> float:
    return float(np.percentile(s.tokens.kld, 99))


def same_top_pct(s: Sample) -> float:
    return float(100 * s.tokens.same_top.mean())


# The tail statistics llama-perplexity prints (Δp in percent), with its own percentile rule.


def tool_percentile(values: np.ndarray, fraction: float) -> float:
    """A percentile as llama-perplexity computes it (tools/perplexity/perplexity.cpp): the values
    sorted as float32, the index fraction x (n - 1) in float32, linear between its two neighbours;
    fraction 0.5 is the median (the middle value, or the mean of the two middle ones)."""
    v = np.sort(np.asarray(values, dtype=np.float32))
    if fraction == 0.5:
        n = v.size
        return float(v[n // 2] if n % 2 else np.float32(0.5) * (v[n // 2] + v[n // 2 - 1]))
    if fraction <= 0 or fraction >= 1:
        return float(v[0] if fraction <= 0 else v[-1])
    p = np.float32(fraction) * np.float32(v.size - 1)
    ip = int(p)
    p = np.float32(p - np.float32(ip))
    return float((np.float32(1) - p) * v[ip] + p * v[min(ip + 1, v.size - 1)])


def kld_p999(s: Sample) -> float:
    return tool_percentile(s.tokens.kld, 0.999)


def kld_max(s: Sample) -> float:
    return float(s.tokens.kld.max())


def dp_mean_pct(s: Sample) -> float:
    return float(100 * s.dp.mean())


def dp_se_pct(s: Sample) -> float:
    return 100 * _se(s.dp)


def dp_rms_pct(s: Sample) -> float:
    return float(100 * np.sqrt(np.mean(s.dp**2)))


def _dp_at(fraction: float) -> Callable[[Sample], float]:
    def f(s: Sample) -> float:
        return 100 * tool_percentile(s.dp, fraction)

    return f


DP_PERCENTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)  # min, ..., median, ..., max


# The tail table's column groups after Δp's mean ± se (the registry order puts the KLD's first).
_DP_TAIL, _RMS_TAIL, _KLD_TAIL = Column(TAIL, order=1), Column(TAIL, order=2), Column(TAIL, order=3)

METRICS: tuple[Metric, ...] = (
    Metric("ppl_q", "PPL", ppl_q, 3, r"Mean PPL\(Q\)", ("rel", 1e-5), tables=(QUALITY, CASE_STUDY, CLI)),
    Metric("ppl_base", "PPL (reference)", ppl_base, 3, r"Mean PPL\(base\)", ("rel", 1e-5)),
    Metric("ln_ppl_ratio", "ln PPL ratio", ln_ppl_ratio, 4, r"Mean ln\(PPL\(Q\)/PPL\(base\)\)", ("abs", 1e-5)),
    Metric(
        "ppl_ratio_pct",
        "PPL ratio - 1 (%)",
        ppl_ratio_pct,
        2,
        se="ppl_ratio_se",
        tables=(QUALITY, COMPARING, Column(CASE_STUDY, "PPL Ratio - 1 (%)", with_se=True), CLI),
    ),
    Metric("ppl_ratio_se", "PPL ratio - 1, se (%)", ppl_ratio_se, 2),
    Metric(
        "prompt_ln_ppl_corr_pct",
        "Corr (%)",
        prompt_ln_ppl_corr_pct,
        2,
        tables=(QUALITY, Column(CASE_STUDY, "Correlation (%)")),
    ),
    Metric(
        "ln_ppl_corr_pct",
        "Token corr (%)",
        token_ln_ppl_corr_pct,
        2,
        r"Cor\(ln\(PPL\(Q\)\), ln\(PPL\(base\)\)\)",
        ("abs", 0.01),
    ),  # fmt: skip
    Metric(
        "kld_mean",
        "KLD mean",
        kld_mean,
        4,
        r"Mean\s+KLD",
        ("rel", 1e-4),
        se="kld_se",
        tables=(
            QUALITY,
            COMPARING,
            Column(CASE_STUDY, "KL Divergence (mean ± se)", with_se=True),
            KV_CACHE,
            TWO_MODELS,
            Column(IMATRIX, "KLD {}", change=Change("KLD change (%)", "± se (%)", "prompt_kld")),
            CLI,
        ),
    ),
    Metric("kld_se", "KLD se", kld_se, 4),
    Metric("kld_median", "KLD median", kld_median, 4, r"Median\s+KLD", ("rel", 1e-4), tables=(CASE_STUDY,)),
    Metric(
        "kld_p99",
        "KLD p99",
        kld_p99,
        3,
        r"99\.0%\s+KLD",
        ("rel", 1e-4),
        tables=(QUALITY, COMPARING, CASE_STUDY, KV_CACHE, TWO_MODELS, CLI),
    ),
    Metric(
        "same_top_pct",
        "Same top (%)",
        same_top_pct,
        1,
        r"Same top p",
        ("abs", 1e-3),
        tables=(QUALITY, COMPARING, CASE_STUDY, KV_CACHE, TWO_MODELS, Column(IMATRIX, "Same top {} (%)"), CLI),
    ),
    # The tail (tail_table): the tool prints the KLD at 6 decimals and Δp in percent at 3, so
    # the bounds are its printing (5e-7 on a KLD of order 1; 5e-4 percentage points) with room
    # for float32 rounding; the percentiles follow its index rule (tool_percentile).
    Metric("kld_p999", "KLD p99.9", kld_p999, 3, r"99\.9%\s+KLD", ("rel", 1e-4), tables=(_KLD_TAIL,)),
    Metric("kld_max", "KLD max", kld_max, 3, r"Maximum KLD", ("rel", 1e-4), tables=(_KLD_TAIL,)),
    Metric(
        "dp_mean_pct",
        "Δp mean (%)",
        dp_mean_pct,
        2,
        r"Mean\s+Δp",
        ("abs", 1e-3),
        se="dp_se_pct",
        tables=(
            Column(TAIL, "Δp mean ± se (%)", with_se=True),
            KV_CACHE,
            TWO_MODELS,
            Column(IMATRIX, "Δp mean {} (%)"),
        ),
    ),
    Metric("dp_se_pct", "Δp se (%)", dp_se_pct, 2),
    Metric("dp_rms_pct", "RMS Δp (%)", dp_rms_pct, 2, r"RMS Δp", ("abs", 1e-3), tables=(_RMS_TAIL, KV_CACHE)),
    Metric("dp_min_pct", "Δp min (%)", _dp_at(0.0), 1, r"Minimum Δp", ("abs", 1e-3), tables=(_DP_TAIL,)),
    Metric("dp_p1_pct", "Δp p1 (%)", _dp_at(0.01), 1, r"(?<![\d.])1\.0%\s+Δp", ("abs", 1e-3), tables=(_DP_TAIL,)),
    Metric("dp_p5_pct", "Δp p5 (%)", _dp_at(0.05), 1, r"(?<![\d.])5\.0%\s+Δp", ("abs", 1e-3), tables=(_DP_TAIL,)),
    Metric("dp_p25_pct", "Δp p25 (%)", _dp_at(0.25), 2, r"25\.0%\s+Δp", ("abs", 1e-3), tables=(_DP_TAIL,)),
    Metric("dp_median_pct", "Δp median (%)", _dp_at(0.5), 2, r"Median\s+Δp", ("abs", 1e-3), tables=(_DP_TAIL,)),
    Metric("dp_p75_pct", "Δp p75 (%)", _dp_at(0.75), 2, r"75\.0%\s+Δp", ("abs", 1e-3), tables=(_DP_TAIL,)),
    Metric("dp_p95_pct", "Δp p95 (%)", _dp_at(0.95), 1, r"95\.0%\s+Δp", ("abs", 1e-3), tables=(_DP_TAIL,)),
    Metric("dp_p99_pct", "Δp p99 (%)", _dp_at(0.99), 1, r"99\.0%\s+Δp", ("abs", 1e-3), tables=(_DP_TAIL,)),
    Metric("dp_max_pct", "Δp max (%)", _dp_at(1.0), 1, r"Maximum Δp", ("abs", 1e-3), tables=(_DP_TAIL,)),
)
# The tolerances above are for the cross-check against llama-perplexity with the reference stored
# as the tool stores it (16-bit, floored 16 below the top logit; study/crosscheck.py): then only the
# printing remains, 6 decimals for PPL and KLD (ours sum in float64, the tool partly in float32),
# 2 for the correlation and 3 for the same-top share, so the bounds hold for a run of any size.
BY_NAME = {m.name: m for m in METRICS}
CROSSCHECKED = tuple(m for m in METRICS if m.tool)


def summarize(prompts: Sequence[TokenStats]) -> dict[str, float]:
    """Every metric for one variant, plus the counts it rests on."""
    sample = Sample(list(prompts))
    return {
        "n_prompts": len(sample.prompts),
        "n_tokens": int(sample.tokens.kld.size),
        **{m.name: m.compute(sample) for m in METRICS},
    }


def columns(table: str) -> list[Shown]:
    """The metrics ``table`` (one of ``TABLES``) shows, in its order: those tagged with it in
    ``METRICS``, so adding a tag to a metric adds its column to that table."""
    if table not in TABLES:
        raise ValueError(f"{table!r} is not a table of metrics (metrics.TABLES: {', '.join(TABLES)})")
    found = []
    for position, m in enumerate(METRICS):
        for c in m.tables:
            c = Column(c) if isinstance(c, str) else c
            if c.table not in TABLES:
                raise ValueError(f"{m.name} is tagged for {c.table!r}, not a table of metrics.TABLES")
            if c.table != table:
                continue
            if c.with_se and (table not in MEAN_SE_TABLES or m.se not in BY_NAME):
                raise ValueError(f"{m.name} cannot be printed as mean ± se in the {table} table")
            se = m.se if c.with_se else None
            if c.change and table != IMATRIX:
                raise ValueError(f"{m.name}'s change (without to with the matrix) belongs to the {IMATRIX} table")
            found.append(((c.order, position), Shown(m.name, c.heading or m.label, m.digits, se, c.change)))
    return [shown for _, shown in sorted(found, key=lambda x: x[0])]


def identical() -> dict[str, float]:
    """Every metric of a variant identical to its reference (what a table prints for the reference
    set beside its variants): computed, so a new metric needs no value of its own for that row."""
    nll = np.array([0.5, 1.0, 2.0, 4.0])
    same = TokenStats(nll, nll.copy(), np.zeros(nll.size), np.ones(nll.size, dtype=bool))
    return summarize([same, same, same])
