"""The sweep's rules, apart from Dask: which models it accepts, how many studies a host runs at
once, and which studies the store already holds (``localllms.sweep`` runs them on a cluster).

* **The concurrency rule.** A study measures throughput with llama-bench, and studies running
  on one host take cores and memory bandwidth from each other. A host therefore never runs more
  studies at once than ``max(1, cores // threads)``, ``threads`` being each study's thread count:
  concurrent studies x threads <= cores. With the default ``threads=None`` (every core) that is
  one study at a time per host.
* **The skip rule.** A study whose rows are all in the store already (same model digest,
  parameters, CPU and build, every quant type, with bits per byte) is not run again.
* **Model names.** A name that is neither a catalog name, nor a path, nor a hub file is wrong on
  every machine, so it is one sentence before a cluster starts; whether a path exists is a
  question for each machine, answered by its probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import defaults, store
from .errors import UserError
from .study.config import StudyConfig
from .study.pipeline import RUN_KEY, TABLE


@dataclass
class Machine:
    """A CPU model and a llama.cpp build: what the store's key calls a machine."""

    cpu: str
    build_key: str
    llama_cpp_commit: str
    cpu_features: str
    hosts: list[str]  # worker hosts (addresses) of this machine; a host that leaves is dropped
    hostnames: tuple[str, ...]
    cores: dict[str, int] = field(default_factory=dict)  # per host

    @property
    def label(self) -> str:
        return f"{', '.join(self.hostnames)} ({self.cpu}, build {self.build_key})"


def study_slots(cores: int, threads: int) -> int:
    """The concurrency rule: studies a host may run at once, so that studies x threads <= cores."""
    return max(1, cores // threads)


def spec_problem(spec: str) -> str | None:
    """Why ``spec`` names no model on any machine (a sentence), or None: ``models.parse_spec``'s
    grammar, without looking at a file (a path may exist on a worker only)."""
    from .models import parse_spec

    try:
        parse_spec(spec)
    except UserError as exc:
        return str(exc)
    return None


def check(models: Sequence[str], workers: int | None, local_threads: int) -> list[str]:
    """The models to sweep, each once; every mistake in them or in ``workers`` is one sentence."""
    specs = [str(m).strip() for m in models if str(m).strip()]
    if not specs:
        raise UserError("MODELS is empty; name at least one model, e.g. --models smollm2-135m-instruct,gemma-3-270m.")
    twice = sorted({s for s in specs if specs.count(s) > 1})
    if twice:
        raise UserError(f"MODELS names {', '.join(twice)} more than once; list each model once.")
    problems = [p for p in map(spec_problem, specs) if p]
    if problems:
        raise UserError(" ".join(problems))
    cores = defaults.cores()
    allowed = study_slots(cores, local_threads)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise UserError(f"The number of workers must be a whole number of at least 1, not {workers!r}.")
    if workers is not None and workers > allowed:
        raise UserError(
            f"This machine runs at most {allowed} studies at once ({cores} cores // {local_threads} threads per "
            f"study), so asking for {workers} workers would spoil its throughput numbers; ask for fewer workers "
            "or fewer threads per study."
        )
    return specs


def stored_rows(store_path: Path = store.STORE) -> pd.DataFrame:
    """Every row of the study's table in the store (an empty frame when there is none yet)."""
    if not Path(store_path).exists():
        return pd.DataFrame(columns=list(RUN_KEY))
    tables = store.query("SELECT table_name FROM information_schema.tables", store_path)
    if TABLE not in set(tables["table_name"]):
        return pd.DataFrame(columns=list(RUN_KEY))
    return store.query(f'SELECT * FROM "{TABLE}"', store_path)


def run_values(config: StudyConfig, machine: Machine, probe: dict) -> dict:
    """The RUN_KEY values (but the quant) that a study of ``config`` on ``machine`` will store:
    the machine's, and every declared parameter's (``StudyConfig.run_values``)."""
    return {
        "model_sha256": probe["sha256"],
        "cpu": machine.cpu,
        "llama_cpp_commit": machine.llama_cpp_commit,
        "build_key": machine.build_key,
        **config.run_values(threads=probe["threads"], corpus=probe["corpus"]),
    }


def matching(stored: pd.DataFrame, values: dict) -> pd.DataFrame:
    """The stored rows whose key columns equal ``values``."""
    if stored.empty:
        return stored
    mask = pd.Series(True, index=stored.index)
    for k, v in values.items():
        mask &= stored[k] == v
    return stored[mask]


def synthetic_rows(rows: pd.DataFrame) -> pd.Series:
    """Which rows are of synthetic files (speed only; rows from before the column are real)."""
    if "synthetic" not in rows.columns:
        return pd.Series(False, index=rows.index)
    return rows["synthetic"].astype("boolean").fillna(False).astype(bool)


def already_stored(stored: pd.DataFrame, values: dict, labels: Sequence[str]) -> bool:
    """The skip rule: every label (reference and quant types) has a row, with bits per byte; a
    synthetic file's row (speed only, never quality) with its generation speed."""
    rows = matching(stored, values)
    if rows.empty or "bpb" not in rows.columns:
        return False
    complete = rows["bpb"].notna() | (synthetic_rows(rows) & rows["tg_tps"].notna())
    have = set(rows.loc[complete, "quant"])
    return set(labels) <= have
