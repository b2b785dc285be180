"""Sweeps: the case study over many models and many machines, run by Dask distributed.

    python -m localllms sweep --models A,B,... --quants Q4_K_M,... [study parameters] [--scheduler ADDR]

One *task* is one study (``localllms.study.run``: the code of the notebook and of the
``study`` command) of one model on one machine. Dask distributed runs the tasks: with no
scheduler address on a ``LocalCluster`` of this machine (loopback only), with an address on
that scheduler's workers. Dask's dashboard shows the tasks; the terminal gets a progress bar.

* **Machines.** Every worker first makes sure of its own llama.cpp build (``build.build()``: the
  cached build of its machine, or a compile) and reports its host, CPU, cores and build key.
  For the store a *machine* is a CPU model and a llama.cpp build (commit, flags, compiler, CPU
  features): the study's ``RUN_KEY`` names those, not the host. Each model is studied once per
  machine, on whichever host of that machine has a slot free, so identical hosts share the work.
* **The concurrency rule** (``sweep_rules.study_slots``): a host never runs more studies at once
  than ``max(1, cores // threads)``. The client enforces it on any cluster, however many workers a
  host has; the default LocalCluster starts exactly that many workers. Studies that do run side
  by side (two 1-thread studies on 2 cores) still share memory bandwidth: their throughput is
  comparable only with runs made the same way, and their rows say how many could run at once
  (``host_study_slots``).
* **One store.** Workers never open the results store: DuckDB allows one writing process, and a
  remote worker does not share the client's disk. A task returns its rows (and keeps a copy as
  Parquet in its own machine's cache); the client saves them into the DuckDB store as each task
  finishes, with the study's ``RUN_KEY``, so a rerun replaces rows instead of adding to them and an
  interrupt or a later failure loses no finished task.
* **Skipping** (``sweep_rules.already_stored``). Before anything is submitted each model is resolved
  on its machine (a probe: the file, its sha256, the quant types, the corpus), and a study whose rows
  are all in the store already is not submitted again; ``force=True`` (``--force``) runs it anyway.
  The study caches each of its stages by content besides, so a task that does run recomputes only
  what changed. A model name that is wrong on every machine stops the sweep before a cluster starts.
* **Synthetic specs** (``synth:NAME`` with the sweep's types, or ``synth:NAME:TYPE``): a published
  architecture with made-up weights, written on each machine, measures a real size's speed there
  without its download. The study would refuse it (quality is never computed on synthetic weights),
  so its task is ``sizes.speed_only``: speed rounds, rows with ``synthetic`` set and the quality
  columns empty, skipped on a rerun once their speeds are stored.
* **Failures.** A task that fails (a bad model path, a worker lost) is reported with its reason,
  and so is a worker that cannot take part (no build, other code); the other tasks finish, and the
  command exits non-zero.

Each row gets, besides the study's columns, the bits per byte of its model on the study's prompts
(``selection.quality.bits_per_byte``: comparable across tokenizers, so across models) and the
worker's provenance: host name, CPU features, RAM, operating system.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd

from . import defaults, progress, store
from .errors import UserError
from .paths import cache_dir, code_key, content_key, package_modules, write_atomic
from .study.config import StudyConfig
from .study.pipeline import RUN_KEY, TABLE
from .sweep_rules import Machine, already_stored, check, matching, run_values, stored_rows, study_slots

# The package code a worker runs: a worker whose copy differs from the client's would write rows
# that the client's keys do not describe, so it is left out (install the same commit everywhere).
# The code a worker must share with the client: every module the sweep's study reaches.
CODE_MODULES = tuple(package_modules(["from localllms import sweep", "from localllms.study import pipeline"]))
WAIT_SECONDS = 2.0  # how often the client looks for finished tasks and for hosts that left
LOST_AFTER = 30.0  # seconds a host may be without a worker (one restarting) before its tasks fail


@dataclass
class Outcome:
    """What became of one (model, machine) study."""

    model: str
    machine: str
    status: str  # "done", "skipped" (rows already in the store) or "failed"
    reason: str = ""
    rows: int = 0
    seconds: float = 0.0
    hostname: str = ""

    def line(self) -> str:
        """One parseable line: ``sweep: model=... status=... ...``."""
        parts = [f"model={self.model}", f"status={self.status}", f"machine={self.machine!r}"]
        if self.hostname:
            parts.append(f"host={self.hostname}")
        if self.status != "failed":
            parts.append(f"rows={self.rows}")
        if self.status == "done":
            parts.append(f"seconds={self.seconds:.1f}")
        if self.reason:
            parts.append(f"reason={self.reason!r}")
        return "sweep: " + " ".join(parts)


@dataclass
class Sweep:
    """A finished sweep: one outcome per (model, machine), and the store's rows for all of them."""

    outcomes: list[Outcome]
    rows: pd.DataFrame
    machines: list[Machine]
    dashboard: str
    cluster: str
    seconds: float
    store_path: Path
    excluded: list[str] = field(default_factory=list)  # workers that could not take part, and why

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def ok(self) -> bool:
        """Every study ran or was in the store already, and every worker could take part."""
        return not self.failed and not self.excluded


# --------------------------------------------------------------------------- on the workers


def _machine() -> dict:
    """Run on every worker: its build (compiled if this machine has none yet) and its identity."""
    from . import provenance
    from .build import current_build

    try:
        info = current_build()  # this machine's cached build (or $LOCALLLMS_BUILD_INFO's), else a compile
    except UserError as exc:
        return {"error": f"cannot build llama.cpp: {exc}", "hostname": socket.gethostname()}
    m = provenance.machine()
    return {
        "hostname": socket.gethostname(),
        "cpu": m["cpu"],
        "cores": defaults.cores(),
        "cpu_features": " ".join(info.cpu_features),
        "build_key": info.key,
        "llama_cpp_commit": info.llama_cpp_commit,
        "code": code_key(*CODE_MODULES),
    }


def corpus_name(source: str) -> str:
    """The corpus name a study's rows will carry, as ``corpus.load_texts`` chooses it."""
    from . import corpus
    from .models import hub_reachable

    if source == "wikitext" or (source == "auto" and hub_reachable()):
        return corpus.WIKITEXT.name
    return corpus.offline_source().name


def _probe(config: StudyConfig) -> dict:
    """Run on the machine before its study: resolve the model (its file, sha256 and type) and check the
    quant types, so a bad model is one sentence before anything is submitted."""
    from .build import current_build
    from .models import resolve
    from .quantize import check_quant_types, reference_label
    from .sizes import speed_only

    if speed_only.is_synthetic_spec(config.model):  # speed only: its files are written on this machine
        return speed_only.probe(config)
    try:
        quants = check_quant_types(list(config.quant_types), current_build())
        model = resolve(config.model)
        return {
            "sha256": model.sha256,
            "reference": reference_label(model.info.quant_type),
            "quants": quants,
            "threads": config.n_threads,
            "corpus": corpus_name(config.corpus_source),
        }
    except UserError as exc:
        return {"error": str(exc)}


def _study(config: StudyConfig, slots: int) -> dict:
    """Run on a worker: one whole study (its rows, written by the pipeline's one writer with this
    host's name and study slots, and bits per byte from the evaluation)."""
    from .sizes import speed_only
    from .study import pipeline

    started = time.monotonic()
    host = {"hostname": socket.gethostname(), "host_study_slots": slots}
    try:
        if speed_only.is_synthetic_spec(config.model):  # never quality on synthetic weights: speed rounds only
            rows = speed_only.study(config, host, progress_bars=False)
            digest, build_key = speed_only.model_digest(config), str(rows["build_key"].iloc[0])
        else:
            with tempfile.TemporaryDirectory(prefix="localllms-sweep-") as tmp:
                # the task's own scratch store and CSV: the shared store is written by the client only
                result = pipeline.run(config, False, Path(tmp) / "task.duckdb", results_dir=Path(tmp), host=host)
            rows, digest, build_key = result.rows.copy(), result.model.sha256, result.build.key
    except UserError as exc:
        return {"error": str(exc), "hostname": socket.gethostname()}
    # this machine's own copy of the rows, should the client be gone when the task ends
    key = content_key(code_key("sweep"), asdict(config), digest, build_key, socket.gethostname())
    write_atomic(cache_dir("sweep", "rows") / f"{key}.parquet", rows.to_parquet(index=False))
    return {"rows": rows, "seconds": round(time.monotonic() - started, 1), "hostname": socket.gethostname()}


# --------------------------------------------------------------------------- on the client


def _connect(scheduler: str | None, workers: int):
    """A Dask client: on a new loopback LocalCluster, or on the scheduler at ``scheduler``."""
    from distributed import Client, LocalCluster

    if scheduler is None:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,  # a worker runs one study at a time
            processes=True,  # each study in its own process: the binding loads llama.cpp there
            host="127.0.0.1",  # scheduler, workers and dashboard listen on loopback only
            dashboard_address="127.0.0.1:0",
            memory_limit=0,  # the studies' memory is llama.cpp's, outside what Dask accounts for
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
        return client, cluster, f"LocalCluster of {workers} worker process(es) on this machine"
    try:
        client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise UserError(
            f"Could not reach a Dask scheduler at {scheduler} ({type(exc).__name__}); start one with "
            "`dask scheduler` and pass the address it prints (tcp://HOST:8786)."
        ) from exc
    try:
        client.wait_for_workers(1, timeout=60)
    except TimeoutError as exc:
        client.close()
        raise UserError(
            f"The Dask scheduler at {scheduler} has no workers after 60 s; start one on each machine with "
            f"`dask worker {scheduler} --nthreads 1`."
        ) from exc
    return client, None, f"Dask scheduler {scheduler}"


def _machines(client, problems: list[str]) -> list[Machine]:
    """Group the workers into machines (CPU and build); workers that cannot take part are reported."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    answers = client.run(_machine, on_error="return")
    mine = code_key(*CODE_MODULES)
    groups: dict[tuple[str, str], dict] = {}
    for address, answer in sorted(answers.items()):
        host = info[address]["host"]
        if isinstance(answer, BaseException):
            problems.append(f"worker {address} cannot run the study ({type(answer).__name__}: {answer})")
            continue
        if "error" in answer:
            problems.append(f"worker {address} ({answer['hostname']}) {answer['error']}")
            continue
        if answer["code"] != mine:
            problems.append(
                f"worker {address} ({answer['hostname']}) runs other localllms code than this client; "
                "install the same commit on every machine"
            )
            continue
        g = groups.setdefault(
            (answer["cpu"], answer["build_key"]),
            {"answer": answer, "hosts": {}, "hostnames": {}},
        )
        g["hosts"][host] = answer["cores"]
        g["hostnames"][answer["hostname"]] = None
    return [
        Machine(
            cpu=cpu,
            build_key=key,
            llama_cpp_commit=g["answer"]["llama_cpp_commit"],
            cpu_features=g["answer"]["cpu_features"],
            hosts=sorted(g["hosts"]),
            hostnames=tuple(sorted(g["hostnames"])),
            cores=dict(g["hosts"]),
        )
        for (cpu, key), g in sorted(groups.items())
    ]


def run(
    models: Sequence[str],
    template: StudyConfig | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    force: bool = False,
    store_path: Path | None = None,
    progress_bars: bool = True,
) -> Sweep:
    """Study every model on every machine of the cluster; save the rows into one store.

    ``template`` holds the study parameters (its ``model`` is replaced by each of ``models``).
    With no ``scheduler`` a LocalCluster of ``workers`` processes is started, by default as many
    as the concurrency rule allows here (``study_slots``); with one, its workers are used.
    """
    started = time.monotonic()
    template = template or StudyConfig()
    store_path = Path(store_path or store.STORE)
    local_threads = template.n_threads
    specs = check(models, workers, local_threads)
    if scheduler is not None and workers is not None:
        raise UserError(
            "The number of workers sizes a LocalCluster; a cluster at a scheduler has the workers started "
            "on its machines (`dask worker ADDRESS --nthreads 1`)."
        )
    n_local = workers or study_slots(defaults.cores(), local_threads)
    client, cluster, description = _connect(scheduler, n_local)
    outcomes: list[Outcome] = []
    try:
        progress.note(f"sweep: Dask dashboard {client.dashboard_link}")
        problems: list[str] = []
        machines = _machines(client, problems)
        for p in problems:
            progress.note(f"sweep: {p}")
        if not machines:
            raise UserError("No worker can run the study: " + "; ".join(problems) + ".")
        outcomes, rows = _sweep(client, machines, specs, template, force, store_path, progress_bars)
        seconds = time.monotonic() - started
        return Sweep(outcomes, rows, machines, client.dashboard_link, description, seconds, store_path, problems)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _sweep(
    client,
    machines: list[Machine],
    specs: list[str],
    template: StudyConfig,
    force: bool,
    store_path: Path,
    progress_bars: bool,
) -> tuple[list[Outcome], pd.DataFrame]:
    from distributed import wait

    outcomes: list[Outcome] = []
    # 1. probes: resolve each model on each machine, in parallel
    probes = {
        (spec, i): client.submit(_probe, replace(template, model=spec), workers=list(m.hosts), pure=False)
        for spec in specs
        for i, m in enumerate(machines)
    }
    stored = stored_rows(store_path)
    hosts = _Hosts(client)
    queue: dict[int, deque] = {i: deque() for i in range(len(machines))}
    wanted: list[tuple[dict, list[str]]] = []  # key values and labels of every (model, machine) study
    for (spec, i), fut in probes.items():
        m = machines[i]
        probe = _answer(fut, m, hosts)
        if "error" in probe:
            outcomes.append(Outcome(spec, m.label, "failed", probe["error"]))
            continue
        values = run_values(template, m, probe)
        labels = probe.get("labels") or [probe["reference"], *probe["quants"]]  # a synthetic spec has no reference
        wanted.append((values, labels))
        if not force and already_stored(stored, values, labels):
            have = matching(stored, values)
            n = int(have["quant"].isin(labels).sum())
            outcomes.append(Outcome(spec, m.label, "skipped", "already in the store", n))
            continue
        queue[i].append(replace(template, model=spec))
    for o in outcomes:
        progress.note(f"sweep: {o.model} on {o.machine}: {o.status}: {o.reason}")

    # 2. the studies, at most study_slots(cores, threads) at once on each host
    total = sum(len(q) for q in queue.values())
    running: dict = {}  # future -> (spec, machine index, host)
    busy: dict[str, int] = {h: 0 for m in machines for h in m.hosts}
    bar = progress.Bar(total, "sweep", "study", progress_bars and total > 0)
    try:
        while any(queue.values()) or running:
            for i, m in enumerate(machines):
                for host in m.hosts:
                    threads = template.threads or m.cores[host]
                    slots = study_slots(m.cores[host], threads)
                    while queue[i] and busy[host] < slots:
                        config = queue[i].popleft()
                        fut = client.submit(_study, config, slots, workers=[host], pure=False)
                        running[fut] = (config.model, i, host)
                        busy[host] += 1
            if not running:  # studies left whose machine has no host any more
                for i, q in queue.items():
                    while q:
                        lost = q.popleft()
                        outcomes.append(Outcome(lost.model, machines[i].label, "failed", "no worker of it is left"))
                        bar.update()
                break
            try:
                done, _ = wait(list(running), timeout=WAIT_SECONDS, return_when="FIRST_COMPLETED")
            except TimeoutError:  # none finished yet: look for hosts that left, then wait again
                done = set()
            for fut in done:
                spec, i, host = running.pop(fut)
                busy[host] -= 1
                outcome = _finish(fut, spec, machines[i], store_path)
                outcomes.append(outcome)
                bar.set_postfix_str(f"{spec}: {outcome.status}")
                bar.update()
                if outcome.status == "failed":
                    progress.note(f"sweep: {spec} on {machines[i].label} failed: {outcome.reason}")
            _drop_lost_hosts(machines, running, busy, outcomes, bar, hosts)
    except BaseException:
        for fut in running:
            fut.cancel()
        raise
    finally:
        bar.close()
    order = {s: n for n, s in enumerate(specs)}
    outcomes.sort(key=lambda o: (order.get(o.model, len(order)), o.machine))
    stored = stored_rows(store_path)
    mine = [m[m["quant"].isin(labels)] for m, labels in ((matching(stored, v), ls) for v, ls in wanted)]
    rows = pd.concat(mine) if mine and not stored.empty else stored.iloc[0:0]
    return outcomes, rows.reset_index(drop=True)


def _finish(fut, spec: str, machine: Machine, store_path: Path) -> Outcome:
    """Save a finished task's rows into the store now (an interrupt later loses nothing)."""
    try:
        answer = fut.result()
    except Exception as exc:  # noqa: BLE001 - KilledWorker (the worker died), CancelledError, ...
        return Outcome(spec, machine.label, "failed", f"{type(exc).__name__}: {exc}")
    if "error" in answer:
        return Outcome(spec, machine.label, "failed", answer["error"], hostname=answer.get("hostname", ""))
    rows = answer["rows"]
    store.save(TABLE, rows, RUN_KEY, store_path)
    return Outcome(spec, machine.label, "done", "", len(rows), answer["seconds"], answer["hostname"])


class _Hosts:
    """Which hosts still have workers. A host is lost only after LOST_AFTER seconds without one: a
    LocalCluster's nanny restarts a worker that died, and Dask retries its task there (a task that
    keeps killing its workers ends as KilledWorker, which is reported as the task's failure)."""

    def __init__(self, client) -> None:
        self.client = client
        self.missing: dict[str, float] = {}  # host -> when it was first seen without a worker

    def lost(self, hosts: Sequence[str]) -> set[str]:
        alive = {w["host"] for w in self.client.scheduler_info(n_workers=-1)["workers"].values()}
        now = time.monotonic()
        for h in hosts:
            if h in alive:
                self.missing.pop(h, None)
            else:
                self.missing.setdefault(h, now)
        return {h for h in hosts if h in self.missing and now - self.missing[h] >= LOST_AFTER}


def _answer(fut, machine: Machine, hosts: _Hosts) -> dict:
    """A probe's answer; a machine left without workers is an error, not a hang."""
    while True:
        try:
            return fut.result(timeout=WAIT_SECONDS)
        except TimeoutError:
            if hosts.lost(machine.hosts) == set(machine.hosts):
                fut.cancel()
                return {"error": f"worker lost: no worker of {machine.label} for {LOST_AFTER:.0f} s"}
        except Exception as exc:  # noqa: BLE001 - KilledWorker, an import error on the worker: reported
            return {"error": f"{type(exc).__name__}: {exc}"}


def _drop_lost_hosts(machines: list[Machine], running: dict, busy: dict, outcomes: list, bar, hosts: _Hosts) -> None:
    """A host with no worker left will never run the tasks restricted to it: report them as failed."""
    lost = hosts.lost([h for m in machines for h in m.hosts])
    for fut, (spec, i, host) in list(running.items()):
        if host in lost:
            fut.cancel()
            running.pop(fut)
            busy[host] -= 1
            reason = f"worker lost: host {host} has had no worker for {LOST_AFTER:.0f} s"
            outcomes.append(Outcome(spec, machines[i].label, "failed", reason))
            bar.update()
    for m in machines:
        m.hosts = [h for h in m.hosts if h not in lost]


def summary(sweep: Sweep) -> list[str]:
    """The parseable lines the command prints: cluster, machines, one line per study, store."""
    lines = [f"cluster: {sweep.cluster}", f"dashboard: {sweep.dashboard}"]
    for m in sweep.machines:
        per_host = ", ".join(f"{h}: {m.cores[h]} cores" for h in m.hosts)
        lines.append(f"machine: {m.label}; {per_host}")
    lines += [f"excluded: {p}" for p in sweep.excluded]
    lines += [o.line() for o in sweep.outcomes]
    done = sum(o.status == "done" for o in sweep.outcomes)
    skipped = sum(o.status == "skipped" for o in sweep.outcomes)
    lines.append(
        f"studies: {done} run, {skipped} skipped (already in the store), {len(sweep.failed)} failed "
        f"in {sweep.seconds:.0f} s"
    )
    lines.append(f"store: {sweep.store_path} (table {TABLE}, {len(sweep.rows)} rows of this sweep)")
    return lines
