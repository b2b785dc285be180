"""Where the serving measurements go: a content-keyed cache, and the results store with provenance.

* ``cached``: a measurement is stored under a key made of the code that takes it (``code_key`` of
  the serving modules) and every input that changes it (model digest, build, threads, workload,
  server options, rates); a rerun with the same inputs reads it back instead of loading the
  machine again, unless the run remeasures (``make book REMEASURE=1``). Each piece (a probe of
  the rate search, one server configuration) is cached as soon as it is complete, so an
  interrupt or a later failure loses nothing that finished.
* ``save_records``: the raw per-request records, one row each, into the results store's
  ``serving_requests`` table with the provenance of the run (machine, build, model digest,
  threads, date), keyed so that a rerun replaces its own rows and other machines add theirs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import provenance, store
from ..build import BuildInfo
from ..models import ResolvedModel
from ..paths import cache_dir, code_key, content_key, remeasuring, write_atomic

if TYPE_CHECKING:
    import pandas as pd

# the modules whose code produces the serving measurements: a change to any of them measures again
CODE = (
    "serve.clients",
    "serve.streaming",
    "serve.process",
    "serve.stats",
    "serve.workload",
    "serve.loadgen",
    "serve.options",
    "serve.prompt_cache",
    "serve.load",
)
TABLE = "serving_requests"


def cache_key(kind: str, *parts: Any) -> str:
    """The key of one serving measurement: its kind, the code that takes it, and its inputs."""
    return content_key(code_key(*CODE), kind, *parts)


def cached(kind: str, parts: tuple, compute: Callable[[], Any]) -> Any:
    """``compute()`` (JSON-able), or what an earlier call with the same ``kind`` and ``parts`` stored."""
    path = cache_dir("serving") / f"{kind}-{cache_key(kind, *parts)}.json"
    if path.exists() and not remeasuring():
        return json.loads(path.read_text())
    result = compute()
    write_atomic(path, json.dumps(result))
    return result


def save_records(
    records: pd.DataFrame,
    experiment: str,
    parameters: dict,
    model: ResolvedModel,
    build: BuildInfo,
    threads: int,
    store_path: Path | None = None,
) -> pd.DataFrame:
    """Write one experiment's per-request records to the store, with their provenance; returns the rows written.

    The rows are keyed by (``run_key``, ``row``): ``run_key`` digests the experiment, its
    parameters, the model file, the build and the machine, so the same run on the same machine
    replaces its rows and any other adds rows beside them. List columns (the inter-token gaps)
    are stored as JSON text.
    """
    import pandas as pd

    prov = provenance.record(build, model, threads)
    run_key = content_key(
        experiment, parameters, model.sha256, build.key, prov["machine_cpu"], prov["machine_cores"], threads
    )
    df = records.reset_index(drop=True).copy()
    for col in df.columns:
        if df[col].map(lambda v: isinstance(v, list | tuple | dict)).any():
            df[col] = df[col].map(json.dumps)
        elif df[col].dtype == object and df[col].map(lambda v: v is None or isinstance(v, int | float)).all():
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)  # all-None columns get a type
    df.insert(0, "row", range(len(df)))
    df.insert(0, "run_key", run_key)
    df.insert(1, "experiment", experiment)
    df["parameters"] = json.dumps(parameters, sort_keys=True)
    for k, v in prov.items():
        df[k] = v
    store.save(TABLE, df, ["run_key", "row"], store_path or store.STORE)
    return df
