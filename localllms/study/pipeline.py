"""The quantization study, stage by stage, for one model.

    check parameters -> model -> prompts -> reference -> variants -> quality -> speed rounds -> rows

Every stage caches its result by content (model digests, parameters, the llama.cpp
build and the code that computes it), so a rerun only computes what changed and an
interrupted run resumes. The result is one row per model (reference and variants)
with the provenance of every number; rows go to the results store and to a CSV.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import corpus, evaluate, kernels, metrics, progress, provenance, rounds, store
from ..bits_per_byte import bits_per_byte_of, predicted_bytes
from ..build import BuildInfo, current_build
from ..errors import UserError
from ..llama_bench import bytes_per_token
from ..models import ResolvedModel, check_not_synthetic, resolve
from ..paths import OUTPUT_RESULTS_DIR
from ..quantize import check_quant_types, make_reference, quantize
from . import speed_plan
from .config import StudyConfig, declared

TABLE = "quantization"
# The columns that identify a run: the model, the machine and build, and every declared study
# parameter's store column (localllms.study.config); rerunning with the same values replaces the rows.
RUN_KEY = ("model_sha256", "quant", "cpu", "llama_cpp_commit", "build_key",
           *(f.metadata["store"] for f in declared() if f.metadata.get("store")))  # fmt: skip


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
    speed: rounds.Rounds  # every speed of the study, in one set of interleaved rounds
    rows: pd.DataFrame
    csv: Path | None = None
    provenance: dict = field(default_factory=dict)
    plan: speed_plan.SpeedPlan | None = None
    threads: int = 0  # THREADS resolved once, where the run started; every stage uses this
    paths: kernels.MatmulPaths | None = None  # the build's kernel families, by type
    experiments: dict[str, ResolvedModel] = field(default_factory=dict)  # variant -> re-made on fast kernels


def run(
    config: StudyConfig,
    progress_bars: bool = True,
    store_path: Path = store.STORE,
    prompts_dir: Path | None = None,
    results_dir: Path = OUTPUT_RESULTS_DIR,
    plan: speed_plan.SpeedPlan | None = None,
    host: dict | None = None,
) -> Study:
    """Run (or resume) the whole study for one model and save its rows (to the store, and to a
    CSV under ``results_dir``: ``_build/results/``, never a tracked file). ``plan`` adds part two's
    speed configurations to the same rounds; ``host`` adds columns describing the host that ran
    it (a sweep's worker: its name, study slots)."""
    build = current_build()
    # Cheap checks first: a bad type, model or prompt range is one sentence before any quantizing.
    qtypes = check_quant_types(list(config.quant_types), build)
    threads = config.n_threads  # resolved once, here, and passed down
    model = resolve(config.model)
    check_not_synthetic(model.path)  # a study scores quality: never on synthetic weights
    prompts = corpus.build_prompts(
        config.num_prompts, config.min_prompt_length, config.max_prompt_length, config.corpus_source, prompts_dir
    )
    reference = make_reference(model, build)
    variants = [quantize(reference, q, build) for q in progress.track(qtypes, "quantize", "type", progress_bars)]
    models = [reference, *variants]
    if plan is not None:  # a SWEEP_QUANTS the study did not make is one sentence before any scoring
        speed_plan.settings(models, threads, config.n_prompt, config.n_gen, plan)
    evaluation = evaluate.evaluate_prompts(reference, models, prompts.texts, threads, build, progress_bars)
    paths = kernels.matmul_paths(compiled=build.compiled) if build.compiled else kernels.matmul_paths()
    made = speed_plan.experiments(reference, variants, build, paths) if plan is not None and plan.kernels else {}
    settings = speed_plan.settings(models, threads, config.n_prompt, config.n_gen, plan, list(made.values()))
    speed = rounds.run(settings, build, config.rounds, progress_bars=progress_bars)
    prov = provenance.record(build, model, threads)
    # bits per byte, comparable across tokenizers, from the evaluator's own log-likelihoods
    byte_counts = predicted_bytes(reference, prompts.texts, build)
    df = pd.DataFrame(
        [
            _row(config, build, prov, model, reference, m, evaluation, speed, prompts, threads, host, byte_counts)
            for m in models
        ]
    )
    store.save(TABLE, df, RUN_KEY, store_path)
    csv = results_dir / ("quantization.csv" if config.is_default else f"quantization-{config.slug()}.csv")
    store.write_csv(df, csv)
    return Study(config, build, model, reference, variants, prompts, evaluation, speed, df, csv, prov, plan, threads, paths,
                 made)  # fmt: skip


def speed_columns(speed: rounds.Rounds, label: str, reference: str) -> dict:
    """A model's speeds from the rounds: the median and interval of each test, and its ratio to the
    reference within each round, with its interval."""
    out = {}
    for test in ("pp", "tg"):
        e = speed.estimate(label, test)
        r = speed.ratio(label, reference, test)
        out |= {f"{test}_tps": e.median, f"{test}_lo": e.lo, f"{test}_hi": e.hi,
                f"{test}_vs_ref": r.median, f"{test}_vs_ref_lo": r.lo, f"{test}_vs_ref_hi": r.hi}  # fmt: skip
    return out


def _row(
    config: StudyConfig,
    build: BuildInfo,
    prov: dict,
    model: ResolvedModel,
    reference: ResolvedModel,
    m: ResolvedModel,
    evaluation: evaluate.PromptEvaluation,
    speed: rounds.Rounds,
    prompts: corpus.Prompts,
    threads: int,
    host: dict | None,
    byte_counts: list[int],
) -> dict:
    """The one writer of a study's row: quality, speed, the run's declared parameters, provenance."""
    per_prompt = evaluation.per_prompt[m.display]
    return {
        "model": model.spec,
        "model_name": model.info.name,
        "quant": m.display,
        "reference_label": reference.label,
        "size_mib": round(m.info.file_size / 2**20, 2),
        "bpw": m.info.bits_per_weight,
        **metrics.summarize(per_prompt),
        "bpb": bits_per_byte_of([p.nll_q for p in per_prompt], byte_counts),
        **speed_columns(speed, m.display, reference.display),
        "shuffle_seed": speed.seed,
        "bytes_per_token": bytes_per_token(m.path),
        **config.run_values(threads=threads, corpus=prompts.source.name),
        **provenance.row_columns(build, prov),
        "model_sha256": model.sha256,
        "variant_sha256": m.sha256,
        "measured_at": speed.runs["measured_at"].max() if len(speed.runs) else "",
        # the host's name, as the sweep records it: one machine is one machine in the store, whichever
        # writer ran its study (without it, a notebook's rows and a sweep's looked like two machines)
        "hostname": socket.gethostname(),
        **(host or {}),
    }


def variant(study: Study, quant: str) -> ResolvedModel:
    """One of the study's variants by its label, or a sentence naming the ones it has."""
    found = next((v for v in study.variants if v.display == quant), None)
    if found is None:
        raise UserError(f"{quant} is not among this study's variants ({', '.join(v.display for v in study.variants)}).")
    return found


def first_prompts(study: Study, num_prompts: int | None, name: str = "DETAIL_NUM_PROMPTS") -> list[str]:
    """The study's first ``num_prompts`` prompts (all when None): the subset a detail section scores,
    so the variants it shares with the main table reuse their cached passes."""
    texts = list(study.prompts.texts)
    if num_prompts is None:
        return texts
    if isinstance(num_prompts, bool) or not isinstance(num_prompts, int) or not 1 <= num_prompts <= len(texts):
        raise UserError(f"{name} must be between 1 and NUM_PROMPTS ({len(texts)}), not {num_prompts!r}.")
    return texts[:num_prompts]
