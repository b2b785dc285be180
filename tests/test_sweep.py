"""The sweep on real Dask clusters: a LocalCluster of two worker processes, and a `dask scheduler`
with a `dask worker` started as on a cluster (on loopback); both catalog models, the real llama.cpp
build, a temporary results store (no mocks).

The configuration is tiny (three prompts, one quant type, one llama-bench repetition) and each
study gets one thread, so two studies run side by side on two cores: the rule allows it
(2 studies x 1 thread <= 2 cores), but their throughput is comparable only with runs made the same
way, which is why the rows record ``host_study_slots``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from localllms import compare, defaults, sweep
from localllms.build import BuildInfo
from localllms.paths import PROJECT_ROOT
from localllms.study import StudyConfig
from localllms.study import run as run_study
from localllms.study.pipeline import RUN_KEY

pytestmark = pytest.mark.slow  # runs studies on Dask clusters

MODELS = ["smollm2-135m-instruct", "gemma-3-270m"]
TINY = StudyConfig(quant_types=("Q4_K_M",), num_prompts=3, threads=1, rounds=1, n_prompt=16, n_gen=8)
TINY_ARGS = ["--quants", "Q4_K_M", "--prompts", "3", "--threads", "1", "--rounds", "1", "--n-prompt", "16",
             "--n-gen", "8"]  # fmt: skip


@pytest.mark.timeout(900)
def test_a_sweep_on_two_workers_fills_one_store(tmp_path: Path, build: BuildInfo) -> None:
    store_path = tmp_path / "results.duckdb"
    missing = str(tmp_path / "no-such-model.gguf")

    first = sweep.run([MODELS[0], missing, MODELS[1]], TINY, workers=2, store_path=store_path, progress_bars=False)

    by_model = {o.model: o for o in first.outcomes}
    assert by_model[missing].status == "failed"
    assert "does not exist" in by_model[missing].reason  # its one sentence, not a traceback
    for m in MODELS:  # the bad path did not stop the others
        assert by_model[m].status == "done", by_model[m]
    rows = sweep.stored_rows(store_path)
    assert sorted(set(rows["model"])) == sorted(MODELS)
    for m in MODELS:  # the reference and the one variant of each model
        quants = set(rows.loc[rows["model"] == m, "quant"])
        assert "Q4_K_M" in quants and len(quants) == 2
    # every row carries the provenance of the worker that measured it
    assert (rows["hostname"] == socket.gethostname()).all()
    assert (rows["build_key"] == build.key).all()
    assert (rows["cpu_features"] == " ".join(build.cpu_features)).all()
    assert (rows["threads"] == 1).all()
    assert (rows["host_study_slots"] == sweep.study_slots(defaults.cores(), 1)).all()
    assert (rows["bpb"] > 0).all()
    assert not rows.duplicated(list(RUN_KEY)).any()
    assert first.rows.shape[0] == len(rows)

    # the worker ran the same code as the notebook and the study command: the same numbers
    direct = run_study(
        replace(TINY, model=MODELS[0]),
        progress_bars=False,
        store_path=tmp_path / "direct.duckdb",
        results_dir=tmp_path,
    ).rows.set_index("quant")
    swept = rows[rows["model"] == MODELS[0]].set_index("quant").loc[direct.index]
    for col in ("kld_mean", "ppl_q", "same_top_pct", "size_mib"):
        assert swept[col].tolist() == direct[col].tolist(), col

    # a rerun skips what the store holds, and adds nothing
    again = sweep.run(MODELS, TINY, workers=2, store_path=store_path, progress_bars=False)
    assert [o.status for o in again.outcomes] == ["skipped", "skipped"]
    assert len(sweep.stored_rows(store_path)) == len(rows)

    # a forced rerun replaces the rows instead of adding to them
    forced = sweep.run(MODELS[:1], TINY, workers=2, store_path=store_path, force=True, progress_bars=False)
    assert [o.status for o in forced.outcomes] == ["done"]
    after = sweep.stored_rows(store_path)
    assert len(after) == len(rows) and not after.duplicated(list(RUN_KEY)).any()

    # the comparison page reads both models back from the one store
    df = compare.load(TINY, store_path, first=MODELS)
    table = compare.quality_table(df)
    assert list(table.index.get_level_values("Model").unique()) == MODELS
    assert compare.pareto_front(df)  # some file is always on the front


@pytest.mark.timeout(600)
def test_the_command_reports_a_bad_model_and_exits_non_zero(tmp_path: Path, build: BuildInfo) -> None:
    missing = str(tmp_path / "no-such-model.gguf")
    proc = subprocess.run(
        [sys.executable, "-m", "localllms", "sweep", "--models", f"{MODELS[0]},{missing}", *TINY_ARGS,
         "--store", str(tmp_path / "results.duckdb")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert any(ln.startswith(f"sweep: model={MODELS[0]} status=") and "status=failed" not in ln for ln in lines)
    bad = [ln for ln in lines if ln.startswith(f"sweep: model={missing} ")]
    assert len(bad) == 1 and "status=failed" in bad[0] and "does not exist" in bad[0]
    assert any(ln.startswith("dashboard: http://127.0.0.1:") for ln in lines)
    assert "Quality and size" in proc.stdout


@contextmanager
def dask_cluster(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`dask scheduler` and one `dask worker`, started as a reader starts them on a cluster, on loopback;
    each in its own process group, which is ended when the test ends."""
    dask = Path(sys.executable).with_name("dask")
    info = tmp_path / "scheduler.json"
    common = {"cwd": tmp_path, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    procs = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0",
             "--scheduler-file", info], **common,
        )
    ]  # fmt: skip
    try:
        for _ in range(300):
            if info.exists() and info.stat().st_size:
                break
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        worker = subprocess.Popen(
            [dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"], **common
        )
        procs.append(worker)
        yield address, worker
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)


@pytest.mark.timeout(600)
def test_a_scheduler_address_sends_the_studies_to_that_clusters_workers(tmp_path: Path, build: BuildInfo) -> None:
    with dask_cluster(tmp_path) as (address, _):
        result = sweep.run(
            MODELS[:1], TINY, scheduler=address, store_path=tmp_path / "results.duckdb", progress_bars=False
        )
    assert result.cluster == f"Dask scheduler {address}"
    assert result.ok and [o.status for o in result.outcomes] == ["done"]
    rows = sweep.stored_rows(tmp_path / "results.duckdb")
    assert set(rows["model"]) == {MODELS[0]} and (rows["hostname"] == socket.gethostname()).all()


@pytest.mark.timeout(600)
def test_a_lost_worker_is_reported_and_the_sweep_ends(tmp_path: Path, build: BuildInfo) -> None:
    from distributed import Client

    with dask_cluster(tmp_path) as (address, worker):

        def kill_the_worker_once_its_study_runs() -> None:
            with Client(address, timeout="20s") as watcher:
                for _ in range(1200):
                    if any("_study" in str(k) for keys in watcher.processing().values() for k in keys):
                        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its nanny, mid-study
                        return
                    time.sleep(0.25)

        killer = threading.Thread(target=kill_the_worker_once_its_study_runs)
        killer.start()
        # gemma's study takes tens of seconds even from warm caches: time enough to lose its worker
        result = sweep.run(
            MODELS[1:], TINY, scheduler=address, store_path=tmp_path / "results.duckdb", progress_bars=False
        )
        killer.join()
    assert not result.ok
    (outcome,) = result.outcomes
    assert outcome.status == "failed" and "worker lost" in outcome.reason, outcome
    assert not (tmp_path / "results.duckdb").exists() or sweep.stored_rows(tmp_path / "results.duckdb").empty
