"""Where a number came from: machine, llama.cpp build, model file, date."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime

from .build import BuildInfo, cpu_name
from .models import ResolvedModel


def machine() -> dict:
    try:
        import psutil

        ram = psutil.virtual_memory().total
    except ImportError:  # pragma: no cover - psutil is in requirements
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count() or 1,
        "ram_gib": round(ram / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def record(build: BuildInfo, model: ResolvedModel | None = None, threads: int | None = None) -> dict:
    """A provenance record to store beside every result."""
    rec = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **{f"machine_{k}": v for k, v in machine().items()},
        "cpu_features": " ".join(build.cpu_features),
        "llama_cpp_commit": build.llama_cpp_commit,
        "llama_cpp_python": build.llama_cpp_python_version,
        "build_flags": build.flags_summary,
        "build_configuration": build.configuration,
        "build_note": build.note,
        "compiler": build.compiler,
        "threads": threads,
    }
    if model is not None:
        rec.update(model=model.spec, model_file=model.path.name, model_sha256=model.sha256, model_source=model.source)
    return rec


def line(build: BuildInfo, model: ResolvedModel | None = None, threads: int | None = None) -> str:
    """The one-line provenance each notebook prints under its title."""
    m = machine()
    parts = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM",
        f"llama.cpp {build.llama_cpp_commit} (llama-cpp-python {build.llama_cpp_python_version}; {build.flags_summary})",
    ]
    if build.note:  # a build other than the native one says why, on every page
        parts.append(f"build: {build.note}")
    if model is not None:
        parts.append(f"model {model.path.name} sha256 {model.sha256[:16]}…")
    if threads:
        parts.append(f"{threads} threads")
    parts.append(datetime.now(UTC).strftime("%Y-%m-%d"))
    return " · ".join(parts)


def row_columns(build: BuildInfo, prov: dict) -> dict:
    """The build and machine columns of a results-store row (``prov`` from :func:`record`), one
    definition for every writer: the study pipeline and the sweep's speed-only synthetic study."""
    return {
        "llama_cpp_commit": build.llama_cpp_commit,
        "build_key": build.key,
        "build_flags": build.flags_summary,
        "build_note": build.note,
        "cpu": prov["machine_cpu"],
        "cores": prov["machine_cores"],
        "cpu_features": prov["cpu_features"],
        "ram_gib": prov["machine_ram_gib"],
        "os": prov["machine_os"],
    }
