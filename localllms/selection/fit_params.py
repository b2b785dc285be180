"""What llama.cpp's own ``llama-fit-params`` projects, on a build without a GPU.

``llama-fit-params`` (``tools/fit-params`` in the vendored tree) loads a model without allocating
it, builds a context, reads llama.cpp's memory breakdown, and prints the command-line arguments
(``-c``, ``-ngl``, tensor overrides) that fit the model into free *device* memory. On a CPU-only
build there is no device: it prints ``-c N -ngl -1`` and changes nothing. Its projection of host
memory exists all the same, in its log at verbosity 4: a "memory breakdown" table (model, context
and compute buffers per buffer type) and "projected to use N MiB of host memory". ``fit_params``
runs it that way, parses those lines, and caches the result by content (the tool's code, the
model file, the build and the settings).

Two things make its projection differ from a running ``llama-server``, both read in the vendored
source: its compute buffer is reserved for a batch whose every token returns logits (it leaves
``n_outputs_max`` at the batch size, where llama-server limits it to one per slot), and its
projected total counts only the "Host" row of the breakdown, not tensors the CPU back end repacks
into its ``CPU_REPACK`` buffer (listed on a row of their own).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import pandas as pd

from ..build import BuildInfo, current_build
from ..errors import UserError
from ..models import ResolvedModel
from ..paths import cache_dir, code_key, content_key, write_atomic
from .memory import MIB, N_UBATCH, architecture, estimate_memory

_ROW = re.compile(r"\|\s+-\s+(\S+)\s+\|\s+(\d+)\s+=\s+(\d+)\s+\+\s+(\d+)\s+\+\s+(\d+)\s+\|")
_PROJECTED = re.compile(r"projected to use (\d+) MiB of host memory")


@dataclass(frozen=True)
class FitParams:
    """One run of llama-fit-params: what it printed, and its host-memory projection (MiB, as printed)."""

    model: str
    n_ctx: int
    n_parallel: int
    command: list[str]
    stdout: str  # the fitted arguments: all the tool prints without -lv 4
    breakdown: dict[str, list[int]] = field(default_factory=dict)  # buffer type -> [self, model, context, compute]
    projected: int = 0  # "projected to use N MiB of host memory"

    @property
    def host(self) -> list[int]:
        return self.breakdown.get("Host", [0, 0, 0, 0])


def command(model: ResolvedModel, context: int, n_parallel: int = 1, build: BuildInfo | None = None) -> list[str]:
    """The command line: the model, the context of every slot together, flash attention as llama-server
    uses it on the CPU, and ``-lv 4`` for the projection in the log."""
    build = build or current_build()
    return [
        str(build.tool("llama-fit-params")),
        "-m", str(model.path),
        "-c", str(context * n_parallel),
        "-np", str(n_parallel),
        "-fa", "on",
        "-lv", "4",
    ]  # fmt: skip


def parse(log: str) -> tuple[dict[str, list[int]], int]:
    """The memory breakdown rows and the projected host total from llama-fit-params' log."""
    breakdown = {name: [int(x) for x in nums] for name, *nums in _ROW.findall(log)}
    m = _PROJECTED.search(log)
    return breakdown, int(m.group(1)) if m else 0


def llama_fit_params(
    model: ResolvedModel, context: int, n_parallel: int = 1, build: BuildInfo | None = None, use_cache: bool = True
) -> FitParams:
    """Run llama-fit-params on ``model`` at ``context`` tokens per slot and keep what it projects."""
    if context < 1 or n_parallel < 1:
        raise UserError(f"The context ({context}) and the number of parallel slots ({n_parallel}) must be positive.")
    build = build or current_build()
    cmd = command(model, context, n_parallel, build)
    key = content_key(code_key("selection.fit_params"), model.sha256, build.key, context, n_parallel)
    cached = cache_dir("selection") / f"fit-params-{key}.json"
    if use_cache and cached.exists():
        return FitParams(**{**json.loads(cached.read_text()), "model": model.spec, "command": cmd})
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    log = proc.stderr + proc.stdout
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"llama-fit-params failed on {model.path.name} (exit {proc.returncode}): {last}")
    breakdown, projected = parse(log)
    if "Host" not in breakdown or not projected:
        raise UserError(f"llama-fit-params printed no host-memory projection for {model.path.name}; its log changed.")
    result = FitParams(model.spec, context, n_parallel, cmd, proc.stdout.strip(), breakdown, projected)
    write_atomic(cached, json.dumps(asdict(result)))
    return result


def shown_command(result: FitParams) -> str:
    """The command as a reader would type it: tool and model by file name."""
    tool, _, path, *rest = result.command
    return " ".join([tool.rsplit("/", 1)[-1], "-m", path.rsplit("/", 1)[-1], *rest])


def fit_params_table(
    models: Sequence[ResolvedModel], contexts: Sequence[int], n_parallel: int = 1, build: BuildInfo | None = None
) -> pd.DataFrame:
    """llama-fit-params' host projection beside this chapter's estimate, part by part (MiB)."""
    rows = []
    for m in models:
        arch = architecture(m)
        for n_ctx in sorted({estimate_memory(m, c, n_parallel, arch=arch).n_ctx for c in contexts}):
            r = llama_fit_params(m, n_ctx, n_parallel, build)
            e = estimate_memory(m, n_ctx, n_parallel, arch=arch)
            _, model_mib, context_mib, compute_mib = r.host
            repack = r.breakdown.get("CPU_REPACK", [0, 0, 0, 0])[0]
            rows.append(
                {
                    "model": m.spec,
                    "context": n_ctx,
                    "printed to stdout": r.stdout,
                    "fit-params: model / context / compute": f"{model_mib} / {context_mib} / {compute_mib}",
                    "fit-params: CPU_REPACK (not in its total)": repack,
                    "fit-params: projected total": r.projected,
                    "estimate: weights / KV / compute": f"{e.weights / MIB:.0f} / {e.kv / MIB:.0f} / {e.compute / MIB:.0f}",
                    "estimate: total": round(e.total / MIB, 1),
                    f"logits for {N_UBATCH} tokens": round(4 * arch.vocab * N_UBATCH / MIB, 1),
                }
            )
    return pd.DataFrame(rows)


def fit_params_vs_measured(table: pd.DataFrame, validation: pd.DataFrame) -> pd.DataFrame:
    """The projection, the estimate and the measured peak of the same model and context (MiB)."""
    t = table[["model", "context", "fit-params: projected total", "estimate: total"]].merge(
        validation[["model", "context", "measured peak (MiB)"]], on=["model", "context"], how="inner"
    )
    peak = t["measured peak (MiB)"]
    t["fit-params error (%)"] = (100 * (t["fit-params: projected total"] - peak) / peak).round(1)
    t["estimate error (%)"] = (100 * (t["estimate: total"] - peak) / peak).round(1)
    return t


def fit_params_sentence(table: pd.DataFrame) -> str:
    """What the comparison shows, computed from the table: the gap and how much of it is the logits."""
    gap = table["fit-params: projected total"] - table["estimate: total"]
    logits = table[f"logits for {N_UBATCH} tokens"]
    return (
        f"llama-fit-params projects {gap.min():.0f} to {gap.max():.0f} MiB more than this estimate; its compute "
        f"buffer holds the logits of all {N_UBATCH} tokens of a batch ({logits.min():.0f} MiB for the smaller "
        f"vocabulary, {logits.max():.0f} MiB for the larger), which llama-server, asking for one row of logits "
        f"per slot, does not reserve. Its total also leaves out what the estimate adds for the tokenizer "
        f"tables and the server itself, and the tensors it lists under CPU_REPACK."
    )
