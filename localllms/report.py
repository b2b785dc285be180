"""The quantization study end to end, its results store, tables and figures.

``quantization_study`` chains the stages (model -> F16 reference -> variants ->
prompts -> quality -> throughput) and returns one row per variant with the
provenance of every number. Rows go to an embedded DuckDB store, keyed so that a
rerun replaces its own rows, and the default run's rows also to a CSV in the repo.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from . import bench, corpus, evaluate, provenance
from .build import BuildInfo, current_build
from .errors import UserError
from .models import DEFAULT_MODEL, ResolvedModel, resolve
from .paths import PROJECT_ROOT, RESULTS_DIR, cache_dir, content_key
from .quantize import check_quant_types, make_reference, quantize

DEFAULT_QUANT_TYPES = ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
STORE = RESULTS_DIR / "results.duckdb"
# The columns that identify a run: rerunning with the same values replaces the rows.
RUN_KEY = ("model_sha256", "quant", "cpu", "llama_cpp_commit", "build_key", "threads", "n_prompts",
           "min_prompt_length", "max_prompt_length", "corpus", "repetitions", "n_prompt", "n_gen")  # fmt: skip


@dataclass(frozen=True)
class StudyConfig:
    model: str = DEFAULT_MODEL
    quant_types: tuple[str, ...] = DEFAULT_QUANT_TYPES
    num_prompts: int = corpus.NUM_PROMPTS
    min_prompt_length: int = corpus.MIN_PROMPT_LENGTH
    max_prompt_length: int = corpus.MAX_PROMPT_LENGTH
    threads: int = 2
    repetitions: int = 10
    n_prompt: int = 512
    n_gen: int = 128
    corpus_source: str = "auto"

    @property
    def is_default(self) -> bool:
        return self == StudyConfig(threads=self.threads)


@dataclass
class Study:
    config: StudyConfig
    build: BuildInfo
    model: ResolvedModel
    reference: ResolvedModel
    variants: list[ResolvedModel]
    prompts: corpus.Prompts
    evaluation: evaluate.PromptEvaluation
    throughput: dict[str, bench.Throughput]
    rows: pd.DataFrame
    provenance: dict = field(default_factory=dict)

    @property
    def all_models(self) -> list[ResolvedModel]:
        return [self.reference, *self.variants]


def quantization_study(
    config: StudyConfig, progress: bool = True, store: Path = STORE, prompts_dir: Path | None = None
) -> Study:
    """Run (or resume) the whole case study for one model; every stage is cached."""
    from tqdm import tqdm

    build = current_build()
    qtypes = check_quant_types(list(config.quant_types), build)
    model = resolve(config.model)
    reference = make_reference(model, build)
    variants = [quantize(reference, q, build) for q in tqdm(qtypes, desc="quantize", disable=not progress)]
    prompts = corpus.build_prompts(
        config.num_prompts, config.min_prompt_length, config.max_prompt_length, config.corpus_source, prompts_dir
    )
    models = [reference, *variants]
    evaluation = evaluate.evaluate_prompts(reference, models, prompts.texts, config.threads, build, progress)
    throughput = {
        m.display: bench.llama_bench(m, config.threads, config.repetitions, config.n_prompt, config.n_gen, build)
        for m in tqdm(models, desc="llama-bench", disable=not progress)
    }
    prov = provenance.record(build, model, config.threads)
    rows = []
    for m in models:
        q = evaluation.summary(m.display)
        t = throughput[m.display]
        rows.append(
            {
                "model": model.spec,
                "model_name": model.info.name,
                "quant": m.display,
                "reference_label": reference.label,
                "size_mib": round(m.info.file_size / 2**20, 2),
                "bpw": m.info.bits_per_weight,
                "ppl": q["ppl"],
                "ppl_ratio_pct": q["ppl_ratio_pct"],
                "ppl_ratio_se": q["ppl_ratio_se"],
                "ln_ppl_corr_pct": q["ln_ppl_corr_pct"],
                "kld_mean": q["kld_mean"],
                "kld_se": q["kld_se"],
                "kld_median": q["kld_median"],
                "kld_p99": q["kld_p99"],
                "same_top_pct": q["same_top_pct"],
                "pp_tps": t.pp_tps,
                "pp_sd": t.pp_sd,
                "tg_tps": t.tg_tps,
                "tg_sd": t.tg_sd,
                "bytes_per_token": bench.bytes_per_token(m.path),
                "threads": config.threads,
                "repetitions": config.repetitions,
                "n_prompt": config.n_prompt,
                "n_gen": config.n_gen,
                "n_prompts": q["n_prompts"],
                "n_tokens": q["n_tokens"],
                "min_prompt_length": config.min_prompt_length,
                "max_prompt_length": config.max_prompt_length,
                "corpus": prompts.source.name,
                "llama_cpp_commit": build.llama_cpp_commit,
                "build_key": build.key,
                "build_flags": build.flags_summary,
                "cpu": prov["machine_cpu"],
                "cores": prov["machine_cores"],
                "model_sha256": model.sha256,
                "variant_sha256": m.sha256,
                "measured_at": t.measured_at,
            }
        )
    df = pd.DataFrame(rows)
    study = Study(config, build, model, reference, variants, prompts, evaluation, throughput, df, prov)
    save_results(df, config, store)
    return study


# --------------------------------------------------------------------------- cross-check


@dataclass
class CrossCheck:
    table: pd.DataFrame
    tool: evaluate.PerplexityToolResult
    ours_seconds: float
    n_ctx: int

    @property
    def agrees(self) -> bool:
        return bool(self.table["within"].all())


def crosscheck(study: Study, quant: str, n_ctx: int = 512, max_chunks: int | None = None) -> CrossCheck:
    """Score the same text with llama-perplexity and with our evaluator, side by side.

    The prompts are joined one per line into the file llama-perplexity reads; both
    score it in the tool's chunks of ``n_ctx`` tokens (second half of each scored).
    """
    variant = next((v for v in study.variants if v.display == quant), None)
    if variant is None:
        raise UserError(f"{quant} is not among this study's variants ({', '.join(v.display for v in study.variants)}).")
    text = study.prompts.as_text()
    key = content_key(
        evaluate.EVALUATOR_VERSION, study.build.key, study.reference.sha256, variant.sha256, n_ctx, max_chunks, text
    )
    cached = cache_dir("eval", "crosscheck") / f"{key}.json"
    if cached.exists():  # same inputs, same build: the same numbers (timings are those of the first run)
        saved = json.loads(cached.read_text())
        tool, ours, seconds = evaluate.PerplexityToolResult(**saved["tool"]), saved["ours"], saved["ours_seconds"]
    else:
        text_file = study.prompts.path.with_suffix(".txt")
        text_file.write_text(text, encoding="utf-8")
        workdir = cache_dir("eval", "llama-perplexity")
        threads = study.config.threads
        tool = evaluate.run_llama_perplexity(
            study.reference, variant, text_file, n_ctx, threads, workdir, study.build, max_chunks
        )
        stats, seconds = evaluate.evaluate_windows(
            study.reference, variant, text, n_ctx, threads, study.build, max_chunks
        )
        ours = evaluate.token_level_summary(stats)
        cached.write_text(json.dumps({"tool": asdict(tool), "ours": ours, "ours_seconds": seconds}))
    if ours["n_tokens"] != tool.n_chunks * (n_ctx - 1 - n_ctx // 2):
        raise UserError(
            f"The evaluator scored {ours['n_tokens']} tokens but llama-perplexity {tool.n_chunks} chunks; the chunking differs."
        )
    return CrossCheck(pd.DataFrame(evaluate.compare_with_tool(ours, tool)).set_index("metric"), tool, seconds, n_ctx)


# --------------------------------------------------------------------------- results store


def save_results(df: pd.DataFrame, config: StudyConfig, store: Path = STORE) -> Path:
    """Write rows to the DuckDB store (replacing this run's earlier rows) and to a CSV."""
    import duckdb

    store.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(store)) as con:
        con.register("new_rows", df)
        con.execute("CREATE TABLE IF NOT EXISTS quantization AS SELECT * FROM new_rows WHERE false")
        existing = {
            r[0]
            for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'quantization'"
            ).fetchall()
        }
        for col in df.columns:  # a newer version may add columns: widen the table, keep old rows
            if col not in existing:
                con.execute(f'ALTER TABLE quantization ADD COLUMN "{col}" {_duck_type(df[col])}')
        con.execute("BEGIN")
        cond = " AND ".join(f'q."{k}" IS NOT DISTINCT FROM n."{k}"' for k in RUN_KEY)
        con.execute(f"DELETE FROM quantization q WHERE EXISTS (SELECT 1 FROM new_rows n WHERE {cond})")
        con.execute("INSERT INTO quantization BY NAME SELECT * FROM new_rows")
        con.execute("COMMIT")
    csv = store.parent / ("quantization.csv" if config.is_default else f"quantization-{_slug(config)}.csv")
    df.to_csv(csv, index=False, float_format="%.6g")
    return csv


def _duck_type(series: pd.Series) -> str:
    if pd.api.types.is_integer_dtype(series):
        return "BIGINT"
    if pd.api.types.is_float_dtype(series):
        return "DOUBLE"
    return "VARCHAR"


def _slug(config: StudyConfig) -> str:
    name = (
        Path(config.model).stem if config.model.endswith(".gguf") else config.model.replace("/", "_").replace(":", "_")
    )
    digest = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:8]
    return f"{name}-{digest}"


def query(sql: str, store: Path = STORE) -> pd.DataFrame:
    """Run a query against the results store, e.g. to compare models and machines."""
    import duckdb

    if not store.exists():
        raise UserError(f"No results store at {store} yet; run the quantization notebook first.")
    with duckdb.connect(str(store), read_only=True) as con:
        return con.execute(sql).df()


# --------------------------------------------------------------------------- tables


def case_study_table(df: pd.DataFrame) -> pd.DataFrame:
    """The case study's table, extended: one row per variant, rounded for reading."""
    t = pd.DataFrame(
        {
            "Model": df["quant"],
            "Size (MiB)": df["size_mib"].round(1),
            "BPW": df["bpw"].round(2),
            "Prompt throughput (tok/s)": [f"{m:.1f} ± {s:.1f}" for m, s in zip(df["pp_tps"], df["pp_sd"], strict=True)],
            "Generation (tok/s)": [f"{m:.1f} ± {s:.1f}" for m, s in zip(df["tg_tps"], df["tg_sd"], strict=True)],
            "PPL": df["ppl"].round(3),
            "PPL Ratio - 1 (%)": [
                f"{m:.2f} ± {s:.2f}" for m, s in zip(df["ppl_ratio_pct"], df["ppl_ratio_se"], strict=True)
            ],
            "Correlation (%)": df["ln_ppl_corr_pct"].round(2),
            "KL Divergence (mean ± se)": [
                f"{m:.4f} ± {s:.4f}" for m, s in zip(df["kld_mean"], df["kld_se"], strict=True)
            ],
            "KLD median": df["kld_median"].round(4),
            "KLD p99": df["kld_p99"].round(3),
            "Same top (%)": df["same_top_pct"].round(2),
        }
    )
    return t.set_index("Model")


def quality_table(df: pd.DataFrame) -> pd.DataFrame:
    """Only the deterministic columns (sizes and quality), at a stated rounding; nbval compares these."""
    cols = {"quant": "Model", "size_mib": "Size (MiB)", "bpw": "BPW", "ppl": "PPL", "ppl_ratio_pct": "PPL ratio - 1 (%)",
            "ln_ppl_corr_pct": "Corr (%)", "kld_mean": "KLD mean", "kld_p99": "KLD p99", "same_top_pct": "Same top (%)"}  # fmt: skip
    t = df[list(cols)].rename(columns=cols).set_index("Model")
    return t.round(
        {
            "Size (MiB)": 1,
            "BPW": 2,
            "PPL": 3,
            "PPL ratio - 1 (%)": 2,
            "Corr (%)": 2,
            "KLD mean": 4,
            "KLD p99": 3,
            "Same top (%)": 1,
        }
    )


def roofline_table(df: pd.DataFrame, bandwidth_gbs: float) -> pd.DataFrame:
    """Generation speed x bytes read per token, against the measured read bandwidth."""
    achieved = df["tg_tps"] * df["bytes_per_token"] / 1e9
    return pd.DataFrame(
        {
            "Model": df["quant"],
            "MB read per token": (df["bytes_per_token"] / 1e6).round(1),
            "Generation (tok/s)": df["tg_tps"].round(1),
            "Achieved read (GB/s)": achieved.round(2),
            "Share of bandwidth (%)": (100 * achieved / bandwidth_gbs).round(1),
            "Roofline limit (tok/s)": (bandwidth_gbs * 1e9 / df["bytes_per_token"]).round(1),
        }
    ).set_index("Model")


def seed_comparison(df: pd.DataFrame) -> pd.DataFrame:
    """Our relative figures beside the seed chapter's Qwen2.5-0.5B ones (not measured here)."""
    seed = pd.read_csv(PROJECT_ROOT / "data" / "reference" / "seed_qwen2.5-0.5b.csv")
    seed_base = seed[seed["quant"] == "F16"].iloc[0]
    ref = df[df["quant"] == df["reference_label"]].iloc[0]
    rows = []
    for _, s in seed[seed["quant"] != "F16"].iterrows():
        ours = df[df["quant"] == s["quant"]]
        o = ours.iloc[0] if len(ours) else None
        rows.append(
            {
                "Variant": s["quant"],
                "Size reduction (%) seed": round(100 * (1 - s["size_mib"] / seed_base["size_mib"]), 1),
                "Size reduction (%) here": round(100 * (1 - o["size_mib"] / ref["size_mib"]), 1)
                if o is not None
                else None,
                "PPL ratio - 1 (%) seed": s["ppl_ratio_pct"],
                "PPL ratio - 1 (%) here": round(o["ppl_ratio_pct"], 2) if o is not None else None,
                "KLD seed": s["kld_mean"],
                "KLD here": round(o["kld_mean"], 4) if o is not None else None,
                "Generation speed-up seed": round(s["tg_tps"] / seed_base["tg_tps"], 2),
                "Generation speed-up here": round(o["tg_tps"] / ref["tg_tps"], 2) if o is not None else None,
            }
        )
    return pd.DataFrame(rows).set_index("Variant")


def reading(df: pd.DataFrame) -> str:
    """The seed's claims checked against this run, as sentences computed from the numbers."""
    ref = df[df["quant"] == df["reference_label"]].iloc[0]
    q = df[df["quant"] != df["reference_label"]].set_index("quant")
    out = []

    def have(*names: str) -> bool:
        return all(n in q.index for n in names)

    if have("Q6_K"):
        r = q.loc["Q6_K"]
        near = r["ppl_ratio_pct"] < 1.0 and r["kld_mean"] < 0.01
        out.append(
            f"* **Q6_K ≈ lossless?** {'Yes' if near else 'No'}: perplexity {r['ppl_ratio_pct']:+.2f} % and mean KL divergence "
            f"{r['kld_mean']:.4f} (the seed: +0.93 % and 0.004), at {100 * (1 - r['size_mib'] / ref['size_mib']):.0f} % less size."
        )
    if have("Q2_K", "Q4_K_M", "Q6_K"):
        k = q.loc[["Q2_K", "Q4_K_M", "Q6_K"], "kld_mean"]
        middle = k["Q6_K"] < k["Q4_K_M"] < k["Q2_K"]
        out.append(
            f"* **Q4 a middle ground?** {'Yes' if middle else 'No'}: its KL divergence {k['Q4_K_M']:.4f} lies "
            f"{'between' if middle else 'outside'} Q6_K's {k['Q6_K']:.4f} and Q2_K's {k['Q2_K']:.4f}."
        )
    if have("Q2_K"):
        worst = q["kld_mean"].idxmax()
        out.append(
            f"* **Q2 the largest loss?** {'Yes' if worst == 'Q2_K' else 'No, ' + worst + ' is'}: Q2_K's perplexity rises by "
            f"{q.loc['Q2_K', 'ppl_ratio_pct']:.1f} % (the seed: 10.4 %), its mean KL divergence is {q.loc['Q2_K', 'kld_mean']:.3f} "
            f"(the seed: 0.112) and it keeps the reference's top token at {q.loc['Q2_K', 'same_top_pct']:.0f} % of positions."
        )
    ladder = q.sort_values("bpw")
    inversions = [
        f"{hi} ({ladder.loc[hi, 'bpw']:.2f} bpw, KLD {ladder.loc[hi, 'kld_mean']:.4f}) diverges more than {lo} "
        f"({ladder.loc[lo, 'bpw']:.2f} bpw, KLD {ladder.loc[lo, 'kld_mean']:.4f})"
        for lo, hi in zip(ladder.index[:-1], ladder.index[1:], strict=True)
        if ladder.loc[hi, "kld_mean"] > ladder.loc[lo, "kld_mean"]
    ]
    out.append(
        "* **More bits, less divergence, at every step?** "
        + (
            "Yes."
            if not inversions
            else "No: "
            + "; ".join(inversions)
            + ". Re-quantizing an already quantized model need not follow the ladder."
        )
    )
    rho = df[["size_mib", "tg_tps"]].corr(method="spearman").iloc[0, 1]
    out.append(
        f"* **Generation speed rising as size falls?** {'Yes' if rho < -0.5 else 'Not cleanly'}: rank correlation of size with "
        f"generation tokens/s is {rho:+.2f} (−1 would be a perfect ordering); the fastest variant, {df.loc[df['tg_tps'].idxmax(), 'quant']}, "
        f"generates {df['tg_tps'].max() / ref['tg_tps']:.2f}× as fast as the reference (the seed's Q2_K: 2.16×)."
    )
    pp_gain = df["pp_tps"].max() / ref["pp_tps"]
    out.append(
        f"* **Prompt processing** is compute-bound: its best variant is {pp_gain:.2f}× the reference's speed, "
        f"against {df['tg_tps'].max() / ref['tg_tps']:.2f}× for generation."
    )
    tail = (q["kld_p99"] / q["kld_mean"]).median()
    out.append(
        f"* **The tail**: across variants the 99th percentile of the KL divergence is a median {tail:.0f}× its mean."
    )
    return "\n".join(out)


def default_threads() -> int:
    """All cores of this machine: llama.cpp's CPU kernels scale with them."""
    import os

    return os.cpu_count() or 1


# --------------------------------------------------------------------------- figures


def _order(df: pd.DataFrame) -> list[str]:
    return list(df.sort_values("bpw", ascending=False)["quant"])


def plot_quality(df: pd.DataFrame):
    """KL divergence (mean ± se) and PPL ratio - 1 (± se) by variant."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    q = df[df["quant"] != df["reference_label"]]
    order = [o for o in _order(df) if o in set(q["quant"])]
    q = q.set_index("quant").loc[order].reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    sns.barplot(data=q, x="quant", y="kld_mean", hue="quant", palette="viridis", ax=axes[0], legend=False)
    axes[0].errorbar(range(len(q)), q["kld_mean"], yerr=q["kld_se"], fmt="none", c="k", capsize=3)
    axes[0].set(yscale="log", xlabel="variant", ylabel="KL divergence vs reference (mean, log scale)")
    sns.barplot(data=q, x="quant", y="ppl_ratio_pct", hue="quant", palette="viridis", ax=axes[1], legend=False)
    axes[1].errorbar(range(len(q)), q["ppl_ratio_pct"], yerr=q["ppl_ratio_se"], fmt="none", c="k", capsize=3)
    axes[1].set(xlabel="variant", ylabel="Avg PPL ratio - 1 (%)")
    fig.suptitle(f"Quality against the reference: {df['reference_label'].iloc[0]}")
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: the notebook shows it exactly once
    return fig


def plot_throughput(df: pd.DataFrame):
    """Prompt processing and generation tokens/s (mean ± sd over repetitions)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    d = df.set_index("quant").loc[_order(df)].reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, col, sd, title in (
        (axes[0], "pp_tps", "pp_sd", "Prompt processing"),
        (axes[1], "tg_tps", "tg_sd", "Text generation"),
    ):
        sns.barplot(data=d, x="quant", y=col, hue="quant", palette="mako", ax=ax, legend=False)
        ax.errorbar(range(len(d)), d[col], yerr=d[sd], fmt="none", c="k", capsize=3)
        ax.set(xlabel="", ylabel="tokens/s", title=title)
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: the notebook shows it exactly once
    return fig


def pareto_front(df: pd.DataFrame) -> list[str]:
    """Variants not beaten by a smaller variant with lower or equal KL divergence."""
    front, best = [], float("inf")
    for _, r in df.sort_values(["size_mib", "kld_mean"]).iterrows():
        if r["kld_mean"] < best:
            front.append(r["quant"])
            best = r["kld_mean"]
    return front


def plot_pareto(df: pd.DataFrame):
    """Size against KL divergence; the Pareto front joins the variants worth choosing."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    q = df[df["quant"] != df["reference_label"]]
    front = q[q["quant"].isin(pareto_front(q))].sort_values("size_mib")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.scatterplot(data=q, x="size_mib", y="kld_mean", hue="quant", s=80, ax=ax, legend=False)
    ax.plot(front["size_mib"], front["kld_mean"], "--", c="grey", label="Pareto front")
    for _, r in q.iterrows():
        ax.annotate(r["quant"], (r["size_mib"], r["kld_mean"]), textcoords="offset points", xytext=(5, 4))
    ref = df[df["quant"] == df["reference_label"]].iloc[0]
    ax.axvline(ref["size_mib"], c="k", lw=0.8)
    ax.text(ref["size_mib"], ax.get_ylim()[1], f" {ref['quant']}", va="top", ha="right", rotation=90, fontsize=8)
    ax.set(
        yscale="log",
        xlabel="file size (MiB)",
        ylabel="KL divergence (mean, log scale)",
        title="Size against quality loss",
    )
    ax.legend()
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: the notebook shows it exactly once
    return fig


def plot_roofline(df: pd.DataFrame, bandwidth_gbs: float):
    """Generation speed against the memory-bandwidth limit, per variant."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    mb = df["bytes_per_token"] / 1e6
    xs = np.linspace(mb.min() * 0.8, mb.max() * 1.1, 100)
    ax.plot(xs, bandwidth_gbs * 1e3 / xs, c="k", label=f"limit: {bandwidth_gbs:.1f} GB/s measured read bandwidth")
    sns.scatterplot(x=mb, y=df["tg_tps"], hue=df["quant"], s=80, ax=ax)
    ax.errorbar(mb, df["tg_tps"], yerr=df["tg_sd"], fmt="none", c="grey")
    ax.set(
        xlabel="MB of weights read per generated token",
        ylabel="generation tokens/s",
        title="Text generation against the memory roofline",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # returned, not left open: the notebook shows it exactly once
    return fig
