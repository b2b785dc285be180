"""Build llama.cpp from the tree vendored in the pinned llama-cpp-python sdist.

One compile serves both the command-line tools (llama-quantize, llama-perplexity,
llama-bench, llama-server, llama-cli) and the Python binding, which loads this
build's ``libllama`` through ``LLAMA_CPP_LIB_PATH``. The build is cached outside
the work tree under a key made of the llama.cpp commit, the CMake flags, the
compiler and the CPU (the build is tuned with ``-march=native``), so a second
``make book`` or a CI run on the same machine does not compile again.

A new build proves itself before it is used (:mod:`localllms.smoke`): if it dies by an illegal
instruction, a configuration that avoids the failing code is compiled and tested instead, and
that choice, with its reason, is recorded in ``build-info.json`` and every provenance line.
A reader adds CMake flags of their own (a GPU back end, a working AMX stack, a portable build)
with ``LOCALLLMS_CMAKE_ARGS`` (``make book LLAMA_CMAKE_ARGS="-DGGML_CUDA=ON"``); they enter the
build key.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC
from importlib import metadata
from pathlib import Path

from tqdm import tqdm

from . import cpu, smoke
from .catalog import CATALOG, catalog_path
from .cpu import cpu_features, cpu_name
from .errors import UserError
from .paths import cache_dir, write_atomic

__all__ = ["BuildInfo", "build", "cpu_features", "cpu_name", "current_build", "use_build_for_binding"]

LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # fallback when the binding is not installed
# The tools the book runs. A cached build that lacks one (an older version of this list) gets
# the missing targets compiled incrementally in its own build tree, not a new build.
TOOLS = ("llama-quantize", "llama-perplexity", "llama-bench", "llama-server", "llama-cli", "llama-imatrix",
         "llama-fit-params")  # fmt: skip

# Release build, shared libraries so the binding can load them, nothing that needs the network
# at build time (no TLS, no prebuilt web UI). The CPU part (GGML_NATIVE=ON, or the instruction
# sets named one by one) comes from a cpu.Configuration; a reader's flags come last.
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
)
EXTRA_FLAGS_ENV = "LOCALLLMS_CMAKE_ARGS"  # the reader's own CMake flags (Makefile: LLAMA_CMAKE_ARGS)


def extra_cmake_flags() -> tuple[str, ...]:
    """The reader's own CMake flags, from ``$LOCALLLMS_CMAKE_ARGS``; each must be a -D option."""
    flags = tuple(shlex.split(os.environ.get(EXTRA_FLAGS_ENV, "")))
    bad = [f for f in flags if not f.startswith("-D")]
    if bad:
        raise UserError(
            f"{EXTRA_FLAGS_ENV} must hold CMake cache options of the form -DNAME=VALUE, not {' '.join(bad)}; "
            'for example LOCALLLMS_CMAKE_ARGS="-DGGML_CUDA=ON".'
        )
    return flags


@dataclass(frozen=True)
class BuildInfo:
    """The identity of one llama.cpp build, written next to it as build-info.json."""

    llama_cpp_commit: str
    llama_cpp_python_version: str
    cmake_flags: list[str]
    compiler: str
    cpu: str
    cpu_features: list[str]
    key: str
    bin_dir: str
    build_seconds: float
    built_at: str
    configuration: str = "native"  # cpu.Configuration.name
    configuration_reason: str = "the default: tuned for the CPU that compiles it (-march=native)"
    extra_cmake_flags: list[str] = field(default_factory=list)  # the reader's own, from LOCALLLMS_CMAKE_ARGS
    smoke: dict = field(default_factory=dict)  # smoke.SmokeResult of this build on this machine
    replaced: list[dict] = field(default_factory=list)  # configurations that died first, and how

    def tool(self, name: str) -> Path:
        """Path of one of the built tools, e.g. ``tool("llama-quantize")``."""
        path = Path(self.bin_dir) / name
        if not path.exists():
            raise UserError(f"{name} is not in the build at {self.bin_dir}; run `make setup` to rebuild.")
        return path

    @property
    def flags_summary(self) -> str:
        return " ".join(f.removeprefix("-D") for f in self.cmake_flags)

    @property
    def note(self) -> str:
        """Why this build is not the default native one ("" when it is)."""
        return "" if self.configuration == "native" else self.configuration_reason

    @property
    def compiled(self) -> list[str]:
        """The CPU features the build reports compiled in (AVX2, AVX512, AMX_INT8, REPACK, ...)."""
        return cpu.compiled_features(self.smoke.get("system_info", ""))


def binding_version() -> str:
    """Version of the installed llama-cpp-python, so tools and binding share a commit."""
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return LLAMA_CPP_PYTHON_VERSION


def compiler_version() -> str:
    cc = os.environ.get("CC", "cc")
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise UserError(
            f"No C compiler found ({cc}); install gcc and cmake (Debian: apt-get install build-essential cmake)."
        ) from exc
    return out.splitlines()[0].strip()


def _sdist_source(version: str) -> Path:
    """Download (once) and unpack the llama-cpp-python sdist; return its source root."""
    src_root = cache_dir("src")
    tree = src_root / f"llama_cpp_python-{version}"
    if (tree / "vendor" / "llama.cpp" / "CMakeLists.txt").exists():
        return tree
    tarballs = list(src_root.glob(f"llama_cpp_python-{version}.tar.gz"))
    if not tarballs:
        print(f"Downloading the llama-cpp-python {version} source (vendors llama.cpp) ...", flush=True)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={version}",
                "-d",
                str(src_root),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise UserError(
                f"Could not download the llama-cpp-python {version} source from PyPI "
                f"({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no error text'}); "
                "check the network or put the sdist in " + str(src_root) + "."
            )
        tarballs = list(src_root.glob(f"llama_cpp_python-{version}.tar.gz"))
    partial = src_root / f".partial-{version}"
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(tarballs[0]) as tar:
        tar.extractall(partial, filter="data")
    (partial / f"llama_cpp_python-{version}").rename(tree)  # atomic: a tree is complete or absent
    shutil.rmtree(partial, ignore_errors=True)
    return tree


def vendored_commit(tree: Path, version: str) -> str:
    """The llama.cpp commit the sdist vendors, as its changelog records it."""
    text = (tree / "CHANGELOG.md").read_text(encoding="utf-8")
    section = re.search(rf"## \[{re.escape(version)}\](.*?)(?=\n## \[|\Z)", text, re.S)
    match = re.search(r"llama\.cpp@([0-9a-f]{7,40})", section.group(1) if section else "")
    return match.group(1) if match else "unknown"


def build_key(
    commit: str, flags: Sequence[str], compiler: str, features: list[str], configuration: str = "native"
) -> str:
    blob = json.dumps([commit, list(flags), compiler, features, platform.machine(), configuration])
    return f"{commit}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Serialise builds of the same key (two `make` runs at once must not race)."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_NINJA_STEP = re.compile(r"^\[\s*(\d+)\s*/\s*(\d+)\]")  # ninja: "[12/230] Building CXX object ..."
_MAKE_PERCENT = re.compile(r"^\[\s*(\d+)%\]")  # Makefiles: "[ 45%] Building CXX object ..."


@dataclass(frozen=True)
class Progress:
    """How far a build is, read from one line of its output."""

    done: int
    total: int
    unit: str  # "step" for ninja's n/N, "%" for the Makefile generator's percentages


def parse_progress(line: str) -> Progress | None:
    """The progress a build-tool line reports (ninja "[n/N]" or make "[ p%]"), or None."""
    if m := _NINJA_STEP.match(line):
        return Progress(int(m.group(1)), int(m.group(2)), "step")
    if m := _MAKE_PERCENT.match(line):
        return Progress(int(m.group(1)), 100, "%")
    return None


def _run_with_progress(cmd: list[str], log: Path, desc: str, env: dict | None = None) -> tqdm | None:
    """Run a build step, keep its log, show its progress; return the progress bar, if any.

    A compile shows ninja's steps as n/N with rate and time left (the total is taken
    from the first "[n/N]" line). A step that reports no progress (cmake configure)
    gets one line when it starts and one with its duration when it ends.
    On failure the compiler's own error lines are raised, not a generic message.
    """
    import time

    started = time.monotonic()
    print(f"{desc} ... (log: {log})", file=sys.stderr, flush=True)
    bar: tqdm | None = None
    with open(log, "a") as logf:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                logf.write(line)
                progress = parse_progress(line)
                if progress is None:
                    continue
                if bar is None:
                    bar = tqdm(total=progress.total, desc=desc, unit=progress.unit, leave=True, dynamic_ncols=True)
                elif progress.total != bar.total:  # ninja can grow its plan while it runs
                    bar.total = progress.total
                    bar.refresh()
                if progress.done > bar.n:
                    bar.update(progress.done - bar.n)
        except BaseException:  # e.g. Ctrl-C: do not leave the compiler running
            proc.kill()
            raise
        finally:
            code = proc.wait()
            if bar is not None:
                bar.close()
    if code != 0:
        lines = log.read_text(errors="replace").splitlines()
        errors = [ln for ln in lines if "error" in ln.lower()][:15] or lines[-15:]
        raise UserError(f"{desc} failed (exit {code}); the compiler said:\n" + "\n".join(errors) + f"\nFull log: {log}")
    if bar is None:
        print(f"{desc}: done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return bar


def _info_path(key: str) -> Path:
    return cache_dir("llama.cpp") / key / "build-info.json"


@dataclass(frozen=True)
class _Request:
    """What a build is asked for: the source, the compiler, this CPU, the reader's flags and
    the runner its smoke test goes through (an emulator in the tests; none otherwise)."""

    version: str
    tree: Path
    commit: str
    compiler: str
    features: list[str]
    extra: tuple[str, ...]
    runner: tuple[str, ...]

    @classmethod
    def here(cls, runner: Sequence[str] = ()) -> _Request:
        version = binding_version()
        tree = _sdist_source(version)
        return cls(version, tree, vendored_commit(tree, version), compiler_version(), cpu_features(),
                   extra_cmake_flags(), tuple(runner))  # fmt: skip

    def flags(self, config: cpu.Configuration) -> list[str]:
        return [*CMAKE_FLAGS, *config.flags, *self.extra]

    def key(self, config: cpu.Configuration) -> str:
        return build_key(self.commit, self.flags(config), self.compiler, self.features, config.name)

    @property
    def choice_file(self) -> Path:
        """Which configuration passed its smoke test for this request (written once one has)."""
        blob = json.dumps([self.commit, list(CMAKE_FLAGS), list(self.extra), self.compiler, self.features,
                           list(self.runner)])  # fmt: skip
        return cache_dir("llama.cpp", "chosen") / f"{hashlib.sha256(blob.encode()).hexdigest()[:16]}.json"


def _ccache_env(root: Path) -> dict:
    """ccache (used by ggml's CMake when installed) kept in our cache, with paths under it made
    relative: a fallback configuration recompiles only the CPU back end, not the 200 other files."""
    return {**os.environ, "CCACHE_DIR": str(cache_dir("ccache")), "CCACHE_BASEDIR": str(root.parent)}


def build(force: bool = False, jobs: int | None = None, runner: Sequence[str] = ()) -> BuildInfo:
    """Return the working build for this machine: cached, or compiled and smoke-tested now.

    The native configuration is tried first. If its smoke test dies by an illegal instruction,
    :func:`localllms.smoke.next_configuration` names the next configuration, which is compiled
    and tested in turn; when none is left, one sentence names the signal, the tool and the log.
    ``runner`` runs the smoke tests through a command prefix (an emulated CPU in the tests).
    """
    req = _Request.here(runner)
    if req.choice_file.exists() and not force:
        chosen = _info_path(json.loads(req.choice_file.read_text())["key"])
        if chosen.exists():
            return _complete(load_build_info(chosen), jobs)
    if shutil.which("cmake") is None:
        raise UserError("cmake is not installed; install it (Debian: apt-get install cmake) and rerun `make setup`.")
    with _lock(cache_dir("llama.cpp") / f".{req.choice_file.stem}.lock"):
        config = cpu.NATIVE
        replaced: list[dict] = []
        features: set[str] | None = None
        while True:
            info = _compiled(req, config, replaced, force, jobs)
            result = _smoke(info, req.runner, force)
            info = replace(info, smoke=result.to_json())
            if result.passed:
                break
            assert result.crash is not None
            if features is None:
                features = cpu.running_features(req.runner)
            nxt = smoke.next_configuration(config, result.crash, features, req.extra)
            if nxt is None:
                raise UserError(smoke.failure_sentence(result.crash, config, Path(info.bin_dir)))
            print(f"llama.cpp's {config.name} build {result.crash.describe()}; taking the '{nxt.name}' configuration instead",
                  file=sys.stderr)  # fmt: skip
            replaced.append({"configuration": config.name, "key": info.key, "crash": result.crash.describe(),
                             "log": result.crash.log})  # fmt: skip
            config = nxt
        write_atomic(req.choice_file, json.dumps({"key": info.key, "runner": list(req.runner)}))
    return info


def _compiled(
    req: _Request, config: cpu.Configuration, replaced: list[dict], force: bool, jobs: int | None
) -> BuildInfo:
    """The build of one configuration: from the cache, or configured and compiled now."""
    import time
    from datetime import datetime

    key = req.key(config)
    info_file = _info_path(key)
    root = info_file.parent
    root.mkdir(parents=True, exist_ok=True)
    if info_file.exists() and not force:
        return _complete(load_build_info(info_file), jobs)
    with _lock(root / ".lock"):
        if info_file.exists() and not force:  # another process finished it while we waited
            return load_build_info(info_file)
        build_dir = root / "build"
        log = root / "build.log"
        env = _ccache_env(root)
        started = time.monotonic()
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        llama_src = req.tree / "vendor" / "llama.cpp"
        _run_with_progress(
            ["cmake", "-S", str(llama_src), "-B", str(build_dir), *generator, *req.flags(config)],
            log,
            f"configure llama.cpp ({config.name})",
            env,
        )
        jobs = jobs or os.cpu_count() or 2
        _run_with_progress(
            ["cmake", "--build", str(build_dir), "-j", str(jobs), "--target", "llama", *TOOLS],
            log,
            f"compile llama.cpp {req.commit} ({config.name})",
            env,
        )
        info = BuildInfo(
            llama_cpp_commit=req.commit,
            llama_cpp_python_version=req.version,
            cmake_flags=req.flags(config),
            compiler=req.compiler,
            cpu=cpu_name(),
            cpu_features=req.features,
            key=key,
            bin_dir=str(build_dir / "bin"),
            build_seconds=round(time.monotonic() - started, 1),
            built_at=datetime.now(UTC).isoformat(timespec="seconds"),
            configuration=config.name,
            configuration_reason=config.reason,
            extra_cmake_flags=list(req.extra),
            replaced=list(replaced),
        )
        for name in TOOLS:
            info.tool(name)
        write_atomic(info_file, json.dumps(asdict(info), indent=2))  # written last: it means the build is complete
    return info


def _smoke(info: BuildInfo, runner: Sequence[str], force: bool = False) -> smoke.SmokeResult:
    """The build's smoke test through ``runner``, run once and kept beside the build."""
    root = Path(info.bin_dir).parent.parent
    record = root / "smoke.json"
    runs = json.loads(record.read_text()) if record.exists() else {}
    name = " ".join(runner) or "native"
    if name in runs and not force:
        return smoke.SmokeResult.from_json(runs[name])
    model_path = catalog_path(CATALOG[_SMOKE_MODEL])
    print(
        f"smoke test of the {info.configuration} build{' under ' + name if runner else ''} ...",
        file=sys.stderr,
        flush=True,
    )
    result = smoke.smoke_test(Path(info.bin_dir), model_path, root / "smoke.log", runner)
    print(
        f"smoke test: {'passed' if result.passed else result.crash.describe() if result.crash else 'failed'} "
        f"in {result.seconds:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    runs[name] = result.to_json()
    write_atomic(record, json.dumps(runs, indent=2))
    if not runner:  # the build's own record carries the smoke test on this machine
        info_file = root / "build-info.json"
        write_atomic(info_file, json.dumps(asdict(replace(info, smoke=result.to_json())), indent=2))
    return result


_SMOKE_MODEL = "smollm2-135m-instruct"  # the catalog model every chapter runs


def _complete(info: BuildInfo, jobs: int | None = None) -> BuildInfo:
    """Compile the tools a cached build lacks (ninja rebuilds only what they need)."""
    missing = [t for t in TOOLS if not (Path(info.bin_dir) / t).exists()]
    if not missing:
        return info
    root = Path(info.bin_dir).parent.parent
    with _lock(root / ".lock"):
        missing = [t for t in TOOLS if not (Path(info.bin_dir) / t).exists()]
        if missing:
            _run_with_progress(
                ["cmake", "--build", str(Path(info.bin_dir).parent), "-j", str(jobs or os.cpu_count() or 2),
                 "--target", *missing],
                root / "build.log",
                f"compile {', '.join(missing)}",
                _ccache_env(root),
            )  # fmt: skip
    for name in TOOLS:
        info.tool(name)
    return info


def llama_cpp_source(build: BuildInfo | None = None) -> Path:
    """The llama.cpp source tree a build was compiled from (grammars, tools/ui, scripts, ...)."""
    version = build.llama_cpp_python_version if build else binding_version()
    return _sdist_source(version) / "vendor" / "llama.cpp"


def load_build_info(path: Path) -> BuildInfo:
    return BuildInfo(**json.loads(Path(path).read_text()))


def current_build() -> BuildInfo:
    """The build for this machine; it must exist already (``make setup`` makes it)."""
    override = os.environ.get("LOCALLLMS_BUILD_INFO")
    if override:
        return load_build_info(Path(override))
    return build()


def use_build_for_binding(info: BuildInfo | None = None) -> BuildInfo:
    """Point llama-cpp-python at this build's libllama; call before importing llama_cpp.

    llama.cpp's own log goes to a file (``llama_log_path()``), never onto a page.
    """
    info = info or current_build()
    if "llama_cpp" in sys.modules and os.environ.get("LLAMA_CPP_LIB_PATH") != info.bin_dir:
        raise UserError("llama_cpp was imported before the local build was selected; restart the kernel.")
    os.environ["LLAMA_CPP_LIB_PATH"] = info.bin_dir
    _route_llama_log()
    return info


# ggml.h numbers its log levels NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (a continued line).
_LOG_DEBUG, _LOG_ERROR, _LOG_CONT = 1, 4, 5
_LOG: dict = {}  # the installed ctypes callback must stay referenced, or llama.cpp calls freed memory


def llama_log_path() -> Path:
    """The file llama.cpp's log lines go to in this process (shown when something fails)."""
    return cache_dir("logs") / f"llama-{os.getpid()}.log"


def _route_llama_log() -> None:
    """Send llama.cpp's log (loader, context, KV cache messages) to a file.

    llama-cpp-python 0.3.36 installs a callback that prints to ``sys.stderr`` and maps the
    levels of an older ggml (so warnings print even with ``verbose=False``); in a notebook
    that text lands on the page. Errors still reach the terminal's stderr (not the page).
    """
    if _LOG:
        return
    import ctypes

    import llama_cpp

    handle = open(llama_log_path(), "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives with the process
    last = [0]

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        line = text.decode("utf-8", errors="replace")
        level = last[0] if level == _LOG_CONT else level
        last[0] = level
        if level > _LOG_DEBUG:
            handle.write(line)
        if level == _LOG_ERROR:
            (sys.__stderr__ or sys.stderr).write(line)

    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    _LOG.update(callback=callback, handle=handle)
