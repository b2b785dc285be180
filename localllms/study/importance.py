"""Importance-matrix quants: the low-bit k-quants made with and without llama-imatrix's matrix,
and the i-quants, scored on the study's prompts against the study's reference.

The matrix is computed on the reference over a calibration text disjoint from the prompts
(``localllms.imatrix``). Each type is quantized twice, without and with it; an i-quant that
llama-quantize refuses to make without a matrix is listed as such. The gain per type is set
beside the direction llama.cpp reports for LLaMA-3-8B (quoted in ``data/reference/``).

Like for like: without a matrix, llama-quantize silently stores some tensors of an i-quant preset
in other types (IQ3_XXS's feed-forward matrices as Q3_K and Q4_K), so the two files of a type can
hold different tensor-type mixes. Such a pair is marked "different mixes" and left out of the
count of types the matrix helps. Each gain comes with its standard error over prompts (the paired
per-prompt differences), so the page says whether the gain is larger than its error.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import evaluate, gguf_file, metrics
from .. import imatrix as imx
from ..errors import UserError
from ..models import ResolvedModel
from ..paths import DATA_DIR
from ..quantize import IMATRIX_SUFFIX, ImatrixRequired, check_quant_types, quantize
from .pipeline import Study, first_prompts

QUOTED_FILE = DATA_DIR / "reference" / "llama_cpp_imatrix_llama3_8b.csv"


@dataclass
class ImportanceStudy:
    imatrix: imx.Imatrix
    types: list[str]  # in the order asked: the k-quants, then the i-quants
    variants: list[ResolvedModel]
    refused: dict[str, str]  # type -> why there is no variant without the matrix
    evaluation: evaluate.PromptEvaluation
    rows: pd.DataFrame  # one row per variant: type, imatrix, size, bpw and every metric


def run(
    study: Study,
    k_types: list[str],
    i_types: list[str],
    n_tokens: int,
    num_prompts: int | None = None,
    progress_bars: bool = True,
) -> ImportanceStudy:
    """Compute (or reuse) the matrix, make each type without and with it, and score them all on
    the study's first ``num_prompts`` prompts (all of them when None)."""
    build, ref = study.build, study.reference
    texts = first_prompts(study, num_prompts, "IMATRIX_NUM_PROMPTS")
    types = check_quant_types([*k_types, *i_types], build)
    if len(set(types)) != len(types):
        raise UserError(f"A type is listed twice among IMATRIX_QUANT_TYPES and IQUANT_TYPES ({', '.join(types)}).")
    cal = imx.calibration(study.prompts, ref, n_tokens, build=build)
    matrix = imx.compute(ref, cal, study.threads, build, progress_bars)
    existing = {v.display: v for v in study.variants}
    variants, refused = [], {}
    for q in types:
        try:
            variants.append(existing.get(q) or quantize(ref, q, build))
        except ImatrixRequired as exc:
            refused[q] = str(exc)
        variants.append(quantize(ref, q, build, imatrix=matrix))
    ev = evaluate.evaluate_prompts(ref, variants, texts, study.threads, build, progress_bars)
    rows = []
    for v in variants:
        with_matrix = v.display.endswith(IMATRIX_SUFFIX)
        rows.append(
            {
                "type": v.display.removesuffix(IMATRIX_SUFFIX),
                "imatrix": with_matrix,
                "quant": v.display,
                "size_mib": round(v.info.file_size / 2**20, 2),
                "bpw": v.info.bits_per_weight,
                "mix": mix(v.path),
                **per_prompt(ev.per_prompt[v.display]),
                **metrics.summarize(ev.per_prompt[v.display]),
                "variant_sha256": v.sha256,
            }
        )
    return ImportanceStudy(matrix, types, variants, refused, ev, pd.DataFrame(rows))


def mix(path: Path) -> str:
    """The tensor-type mix of a file's 2-D tensors, e.g. "Q3_K ×27, Q4_K ×3, Q8_0 ×1"."""
    counts = Counter(t.type for t in gguf_file.read(path).tensors if len(t.shape) > 1)
    return ", ".join(f"{ty} ×{n}" for ty, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def per_prompt(prompts: list[metrics.TokenStats]) -> dict[str, list[float]]:
    """Each metric whose change the gain table shows (``Column.change``), computed on every prompt alone,
    under the column the table reads it from: its change's standard error is over these."""
    compute = {
        s.change.per_prompt: metrics.BY_NAME[s.name].compute for s in metrics.columns(metrics.IMATRIX) if s.change
    }
    return {column: [f(metrics.Sample([p])) for p in prompts] for column, f in compute.items()}


def gain_se(without: list[float], with_: list[float]) -> float:
    """Standard error of a metric's change (%), from the paired per-prompt differences."""
    d = np.asarray(with_) - np.asarray(without)
    base = float(np.mean(without))
    return float(100 * d.std(ddof=1) / np.sqrt(len(d)) / base) if len(d) > 1 and base else float("nan")


def quoted(path: Path = QUOTED_FILE) -> pd.DataFrame:
    """llama.cpp's LLaMA-3-8B figures with and without an importance matrix (quoted, not measured)."""
    return pd.read_csv(path, keep_default_na=False)  # "None" is a label here, not a missing value


def gain_table(res: ImportanceStudy, quoted_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per type: each metric tagged for this table (KLD, same-top share, mean Δp) without and with the
    matrix, the relative change of the one whose change is the gain (``Column.change``: the KLD) and
    that change's standard error, and llama.cpp's LLaMA-3-8B KLD without and with its matrix (quoted)."""
    q = quoted() if quoted_rows is None else quoted_rows
    shown = metrics.columns(metrics.IMATRIX)
    out = []
    for t in res.types:
        sub = res.rows[res.rows["type"] == t].set_index("imatrix")
        w = sub.loc[True]
        wo = sub.loc[False] if False in sub.index else None
        same_mix = wo is not None and wo["mix"] == w["mix"]
        row = {
            "Type": t,
            "BPW": round(w["bpw"], 2),
            "Tensor types": w["mix"] if wo is None or same_mix else f"different mixes: {wo['mix']} → {w['mix']}",
        }
        for m in shown:  # each metric tagged for this table, without and with the matrix
            heading = m.heading if "{}" in m.heading else m.heading + " {}"
            row[heading.format("without")] = round(wo[m.name], m.digits) if wo is not None else None
            row[heading.format("with")] = round(w[m.name], m.digits)
            if m.change:  # the metric whose change is the gain (the KLD's): that change and its error over prompts
                c = m.change
                if wo is None:
                    row[c.heading] = row[c.se_heading] = None
                else:
                    row[c.heading] = round(100 * (w[m.name] / wo[m.name] - 1), c.digits)
                    row[c.se_heading] = round(gain_se(wo[c.per_prompt], w[c.per_prompt]), c.digits)
        mine = q[q["quant"] == t].set_index("imatrix")["kld_mean"]
        none, wt = mine.get("None"), mine.get("WT 10m")
        row["LLaMA-3-8B KLD without (quoted)"] = none
        row["LLaMA-3-8B KLD with (quoted)"] = wt
        row["LLaMA-3-8B change (%) (quoted)"] = round(100 * (wt / none - 1), 1) if none and wt else None
        out.append(row)
    return pd.DataFrame(out).set_index("Type")


def reading(table: pd.DataFrame, refused: dict[str, str]) -> str:
    """What the gain table says, computed from it: only pairs of the same tensor-type mix are
    counted, each gain against its standard error, and Δp beside the KL divergence."""
    made = table.dropna(subset=["KLD change (%)"])
    differ = made[made["Tensor types"].astype(str).str.startswith("different mixes")]
    both = made.drop(index=differ.index)
    out = []
    if len(both):
        better = both[both["KLD change (%)"] < 0]
        beyond = both[both["KLD change (%)"].abs() > 2 * both["± se (%)"]]
        lo, hi = both["KLD change (%)"].min(), both["KLD change (%)"].max()
        out.append(
            f"* **Does the matrix help here?** Of the {len(both)} types made both ways with the same tensor types, "
            f"the KL divergence is lower with it for {len(better)}; the change ranges from {lo:+.1f} % to "
            f"{hi:+.1f} %, and {len(beyond)} of the {len(both)} changes are larger than twice their standard error "
            f"over prompts" + (f" ({', '.join(beyond.index)})." if len(beyond) else ".")
        )
    if len(differ):
        out.append(
            "* **Not like for like**: "
            + "; ".join(f"{t}'s two files hold {r['Tensor types'].removeprefix('different mixes: ')}" for t, r in differ.iterrows())
            + ". Without a matrix llama-quantize stored those tensors in other types, so the change compares "
            "different mixes and is left out of the count above."
        )  # fmt: skip
    worse_dp = made[made["Δp mean with (%)"] < made["Δp mean without (%)"]]
    if len(worse_dp):
        out.append(
            "* **Δp mean moves the other way** for "
            + ", ".join(f"{t} ({r['Δp mean without (%)']:+.2f} → {r['Δp mean with (%)']:+.2f} %)" for t, r in worse_dp.iterrows())
            + ": with the matrix the right token loses more probability on average, even where the KL divergence falls."
        )  # fmt: skip
    quoted_both = both.dropna(subset=["LLaMA-3-8B change (%) (quoted)"])
    if len(quoted_both):
        pairs = ", ".join(
            f"{t} {r['LLaMA-3-8B change (%) (quoted)']:+.0f} % (here {r['KLD change (%)']:+.0f} %)"
            for t, r in quoted_both.iterrows()
        )
        same = all(
            (r["KLD change (%)"] < 0) == (r["LLaMA-3-8B change (%) (quoted)"] < 0) for _, r in quoted_both.iterrows()
        )
        out.append(
            f"* **Against llama.cpp's own figures** (LLaMA-3-8B from full precision, quoted): {pairs}. "
            + ("The direction agrees for every type." if same else "The direction differs for some types.")
        )
    for t, why in refused.items():
        out.append(f"* **{t} without a matrix**: not made; {why}")
    return "\n".join(out)
