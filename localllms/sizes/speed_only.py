"""The sweep's study of a synthetic spec: speed rounds only, never quality.

``python -m localllms sweep --models synth:qwen2.5-7b --quants Q4_K_M,Q8_0`` measures a real size on
every machine of a cluster without its download: each machine writes the synthetic files itself
(``synth:NAME:TYPE``; a spec that names a type measures that type alone) and runs them in its own
interleaved speed rounds, with the sweep's llama-bench sizes. The study pipeline refuses a synthetic
file (``models.check_not_synthetic``: quality is never computed on made-up weights), so this is
the sweep's other path: its rows have the study's key and speed columns, ``synthetic`` set, no
reference (there is no F16 to compare with: a 7B's would be 15 GB) and every quality column empty.
The comparing page keeps them apart from the real-weight rows.
"""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from .. import progress, provenance, rounds
from ..build import BuildInfo, current_build
from ..errors import UserError
from ..gguf_file import SYNTHETIC_NOTE
from ..models import ResolvedModel, Spec, parse_spec, resolve, synth_spec
from ..paths import content_key
from ..study.config import StudyConfig

NOTE = SYNTHETIC_NOTE
CORPUS = "none: synthetic weights"  # the corpus column of a synthetic row: no prompt is scored


def is_synthetic_spec(spec: str) -> bool:
    try:
        return parse_spec(spec).kind == "synth"
    except UserError:
        return False


def _spec(config: StudyConfig) -> Spec:
    parsed = parse_spec(config.model)
    if parsed.kind != "synth":
        raise UserError(f"{config.model!r} is not a synthetic spec (synth:NAME or synth:NAME:TYPE).")
    return parsed


def types(config: StudyConfig, build: BuildInfo | None = None) -> list[str]:
    """The spec's own type when it names one, else the sweep's types (checked against llama-quantize)."""
    from ..quantize import check_quant_types

    parsed = _spec(config)
    return check_quant_types([parsed.quant] if parsed.quant else list(config.quant_types), build or current_build())


def model_name(config: StudyConfig) -> str:
    """The rows' model column: the architecture's spec without a type, so its types group together."""
    return f"synth:{_spec(config).arch}"


def model_digest(config: StudyConfig) -> str:
    """What the rows' ``model_sha256`` holds: a digest of the published row the files are made from."""
    from .. import synth

    return "synthetic-" + content_key(asdict(synth.row(_spec(config).arch)))


def files(config: StudyConfig, build: BuildInfo | None = None) -> list[ResolvedModel]:
    """The synthetic file of every type, written on this machine if missing."""
    arch = _spec(config).arch
    return [resolve(synth_spec(arch, q)) for q in types(config, build)]


def probe(config: StudyConfig) -> dict:
    """The sweep's probe of a synthetic spec on a machine (the files are written here)."""
    try:
        quants = [f.info.quant_type for f in files(config)]
        return {
            "sha256": model_digest(config),
            "reference": None,
            "labels": quants,
            "quants": quants,
            "threads": config.n_threads,
            "corpus": CORPUS,
        }
    except UserError as exc:
        return {"error": str(exc)}


def study(config: StudyConfig, host: dict | None = None, progress_bars: bool = True) -> pd.DataFrame:
    """Speed rounds of every synthetic file of the spec; one row per type, quality columns empty."""
    from .. import synth
    from ..llama_bench import bytes_per_token

    build = current_build()
    made = files(config, build)
    threads = config.n_threads
    plan = [rounds.Setting(f.info.quant_type, str(f.path), f.sha256, threads, config.n_prompt, config.n_gen)
            for f in made]  # fmt: skip
    speed = rounds.run(plan, build, config.rounds, progress_bars=progress_bars, desc="synthetic speed rounds")
    prov = provenance.record(build, None, threads)
    hp = synth.row(_spec(config).arch)
    rows = []
    for f in made:
        q = f.info.quant_type
        pp, tg = speed.estimate(q, "pp"), speed.estimate(q, "tg")
        rows.append(
            {
                "model": model_name(config),
                "model_name": f"{hp.model} ({NOTE})",
                "quant": q,
                "reference_label": "",
                "size_mib": round(f.info.file_size / 2**20, 2),
                "bpw": f.info.bits_per_weight,
                "bpb": float("nan"),
                "pp_tps": pp.median, "pp_lo": pp.lo, "pp_hi": pp.hi,
                "tg_tps": tg.median, "tg_lo": tg.lo, "tg_hi": tg.hi,
                "pp_vs_ref": float("nan"), "pp_vs_ref_lo": float("nan"), "pp_vs_ref_hi": float("nan"),
                "tg_vs_ref": float("nan"), "tg_vs_ref_lo": float("nan"), "tg_vs_ref_hi": float("nan"),
                "shuffle_seed": speed.seed,
                "bytes_per_token": bytes_per_token(f.path),
                **config.run_values(threads=threads, corpus=CORPUS),
                **provenance.row_columns(build, prov),
                "model_sha256": model_digest(config),
                "variant_sha256": f.sha256,
                "measured_at": speed.runs["measured_at"].max() if len(speed.runs) else "",
                "synthetic": True,
                **(host or {}),
            }
        )  # fmt: skip
    progress.note(f"sweep: {model_name(config)}: {len(rows)} synthetic files measured ({NOTE})")
    return pd.DataFrame(rows)
