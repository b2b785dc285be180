"""The quantization study, stage by stage, for one model.

    check parameters -> model -> prompts -> reference -> variants -> quality -> throughput -> rows

Every stage caches its result by content (model digests, parameters, the llama.cpp
build and the code that computes it), so a rerun only computes what changed and an
interrupted run resumes. The result is one row per model (reference and variants)
with the provenance of every number; rows go to the results store and to a CSV.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import bench, corpus, evaluate, metrics, progress, provenance, store
from ..build import BuildInfo, current_build
from ..errors import UserError
from ..models import ResolvedModel, resolve
from ..paths import OUTPUT_RESULTS_DIR
from ..quantize import check_quant_types, make_reference, quantize
from .config import StudyConfig

TABLE = "quantization"
# The columns that identify a run: rerunning with the same values replaces the rows.
RUN_KEY = ("model_sha256", "quant", "cpu", "llama_cpp_commit", "build_key", "threads", "n_prompts",
           "min_prompt_length", "max_prompt_length", "corpus", "repetitions", "n_prompt", "n_gen")  # fmt: skip


@dataclass
class Study:
    """Everything one run produced: its inputs, the models it made, and one row per model."""

    config: StudyConfig
    build: BuildInfo
    model: ResolvedModel
    reference: ResolvedModel
    variants: list[ResolvedModel]
    prompts: corpus.Prompts
    evaluation: evaluate.PromptEvaluation
    throughput: dict[str, bench.Throughput]
    rows: pd.DataFrame
    csv: Path | None = None
    provenance: dict = field(default_factory=dict)


def run(
    config: StudyConfig,
    progress_bars: bool = True,
    store_path: Path = store.STORE,
    prompts_dir: Path | None = None,
    results_dir: Path = OUTPUT_RESULTS_DIR,
) -> Study:
    """Run (or resume) the whole study for one model and save its rows (to the store, and to a
    CSV under ``results_dir``: ``_build/results/``, never a tracked file)."""
    build = current_build()
    # Cheap checks first: a bad type, model or prompt range is one sentence before any quantizing.
    qtypes = check_quant_types(list(config.quant_types), build)
    threads = config.n_threads
    model = resolve(config.model)
    prompts = corpus.build_prompts(
        config.num_prompts, config.min_prompt_length, config.max_prompt_length, config.corpus_source, prompts_dir
    )
    reference = make_reference(model, build)
    variants = [quantize(reference, q, build) for q in progress.track(qtypes, "quantize", "type", progress_bars)]
    models = [reference, *variants]
    evaluation = evaluate.evaluate_prompts(reference, models, prompts.texts, threads, build, progress_bars)
    throughput = {
        m.display: bench.llama_bench(m, threads, config.repetitions, config.n_prompt, config.n_gen, build)
        for m in progress.track(models, "llama-bench", "model", progress_bars)
    }
    prov = provenance.record(build, model, threads)
    df = pd.DataFrame(
        [_row(config, build, prov, model, reference, m, evaluation, throughput[m.display], prompts) for m in models]
    )
    store.save(TABLE, df, RUN_KEY, store_path)
    csv = results_dir / ("quantization.csv" if config.is_default else f"quantization-{config.slug()}.csv")
    store.write_csv(df, csv)
    return Study(config, build, model, reference, variants, prompts, evaluation, throughput, df, csv, prov)


def _row(
    config: StudyConfig,
    build: BuildInfo,
    prov: dict,
    model: ResolvedModel,
    reference: ResolvedModel,
    m: ResolvedModel,
    evaluation: evaluate.PromptEvaluation,
    t: bench.Throughput,
    prompts: corpus.Prompts,
) -> dict:
    return {
        "model": model.spec,
        "model_name": model.info.name,
        "quant": m.display,
        "reference_label": reference.label,
        "size_mib": round(m.info.file_size / 2**20, 2),
        "bpw": m.info.bits_per_weight,
        **metrics.summarize(evaluation.per_prompt[m.display]),
        "pp_tps": t.pp_tps,
        "pp_sd": t.pp_sd,
        "tg_tps": t.tg_tps,
        "tg_sd": t.tg_sd,
        "bytes_per_token": bench.bytes_per_token(m.path),
        "threads": t.threads,
        "repetitions": config.repetitions,
        "n_prompt": config.n_prompt,
        "n_gen": config.n_gen,
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


def variant(study: Study, quant: str) -> ResolvedModel:
    """One of the study's variants by its label, or a sentence naming the ones it has."""
    found = next((v for v in study.variants if v.display == quant), None)
    if found is None:
        raise UserError(f"{quant} is not among this study's variants ({', '.join(v.display for v in study.variants)}).")
    return found


def first_prompts(study: Study, num_prompts: int | None) -> list[str]:
    """The study's first ``num_prompts`` prompts (all when None): the subset a detail section scores,
    so the variants it shares with the main table reuse their cached passes."""
    texts = list(study.prompts.texts)
    if num_prompts is None:
        return texts
    if isinstance(num_prompts, bool) or not isinstance(num_prompts, int) or not 1 <= num_prompts <= len(texts):
        raise UserError(f"DETAIL_NUM_PROMPTS must be between 1 and NUM_PROMPTS ({len(texts)}), not {num_prompts!r}.")
    return texts[:num_prompts]
