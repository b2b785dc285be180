"""The results store: one embedded DuckDB file, one table per kind of measurement.

Every row carries the provenance of its numbers (machine, llama.cpp build, model
digest, parameters). A rerun replaces the rows with the same key instead of adding
to them, and a newer version of the package may add columns without losing old rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .errors import UserError
from .paths import RESULTS_DIR, write_atomic

STORE = RESULTS_DIR / "results.duckdb"
# a trial run can keep its rows out of the tracked store: LOCALLLMS_STORE=/tmp/trial.duckdb
STORE = Path(os.environ["LOCALLLMS_STORE"]) if os.environ.get("LOCALLLMS_STORE") else STORE


def save(table: str, df: pd.DataFrame, key: Sequence[str], store: Path = STORE) -> None:
    """Insert ``df`` into ``table``, replacing earlier rows whose ``key`` columns are equal."""
    import duckdb

    missing = [k for k in key if k not in df.columns]
    if missing:
        raise ValueError(f"rows for {table} lack their key columns {missing}")
    store.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(store)) as con:
        con.register("new_rows", df)
        con.execute(f'CREATE TABLE IF NOT EXISTS "{table}" AS SELECT * FROM new_rows WHERE false')
        existing = {
            r[0]
            for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
            ).fetchall()
        }
        for col in df.columns:  # a newer version may add columns: widen the table, keep old rows
            if col not in existing:
                con.execute(f'ALTER TABLE "{table}" ADD COLUMN "{col}" {_duck_type(df[col])}')
        con.execute("BEGIN")
        cond = " AND ".join(f'q."{k}" IS NOT DISTINCT FROM n."{k}"' for k in key)
        con.execute(f'DELETE FROM "{table}" q WHERE EXISTS (SELECT 1 FROM new_rows n WHERE {cond})')
        con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM new_rows')
        con.execute("COMMIT")


def _duck_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "BOOLEAN"
    if pd.api.types.is_integer_dtype(series):
        return "BIGINT"
    if pd.api.types.is_float_dtype(series):
        return "DOUBLE"
    return "VARCHAR"


def query(sql: str, store: Path = STORE) -> pd.DataFrame:
    """Run a query against the store, e.g. to compare models and machines."""
    import duckdb

    if not store.exists():
        raise UserError(f"No results store at {store} yet; run a study first (python -m localllms study).")
    with duckdb.connect(str(store), read_only=True) as con:
        return con.execute(sql).df()


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """The rows as CSV at a stated precision (6 significant digits), written atomically."""
    return write_atomic(path, df.to_csv(index=False, float_format="%.6g"))
