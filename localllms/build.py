"""Build llama.cpp from the tree vendored in the pinned llama-cpp-python sdist.

One compile serves both the command-line tools (llama-quantize, llama-perplexity,
llama-bench, llama-server, llama-cli) and the Python binding, which loads this
build's ``libllama`` through ``LLAMA_CPP_LIB_PATH``. The build is cached outside
the work tree under a key made of the llama.cpp commit, the CMake flags, the
compiler and the CPU (the build is tuned with ``-march=native``), so a second
``make book`` or a CI run on the same machine does not compile again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC
from importlib import metadata
from pathlib import Path

from tqdm import tqdm

from .errors import UserError
from .paths import cache_dir, write_atomic

LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # fallback when the binding is not installed
# The tools the book runs. A cached build that lacks one (an older version of this list) gets
# the missing targets compiled incrementally in its own build tree, not a new build.
TOOLS = ("llama-quantize", "llama-perplexity", "llama-bench", "llama-server", "llama-cli", "llama-imatrix",
         "llama-fit-params")  # fmt: skip

# Release build tuned for this CPU, shared libraries so the binding can load them,
# nothing that needs the network at build time (no TLS, no prebuilt web UI).
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
)


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

    def tool(self, name: str) -> Path:
        """Path of one of the built tools, e.g. ``tool("llama-quantize")``."""
        path = Path(self.bin_dir) / name
        if not path.exists():
            raise UserError(f"{name} is not in the build at {self.bin_dir}; run `make setup` to rebuild.")
        return path

    @property
    def flags_summary(self) -> str:
        return " ".join(f.removeprefix("-D") for f in self.cmake_flags)


def binding_version() -> str:
    """Version of the installed llama-cpp-python, so tools and binding share a commit."""
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return LLAMA_CPP_PYTHON_VERSION


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The instruction-set extensions that change which ggml kernels are compiled in.
_SIMD_FLAGS = (
    "sse3 ssse3 sse4_1 sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni "
    "avx512_bf16 avx_vnni amx_tile amx_int8 amx_bf16 neon asimd sve"
).split()


def cpu_features() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    if "pni" in flags:  # Linux names SSE3 "pni"
        flags.add("sse3")
    return [f for f in _SIMD_FLAGS if f in flags]


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


def build_key(commit: str, flags: tuple[str, ...], compiler: str, features: list[str]) -> str:
    blob = json.dumps([commit, list(flags), compiler, features, platform.machine()])
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


def _run_with_progress(cmd: list[str], log: Path, desc: str) -> tqdm | None:
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
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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


def build(force: bool = False, jobs: int | None = None) -> BuildInfo:
    """Return the cached build for this machine, compiling it first if needed."""
    version = binding_version()
    tree = _sdist_source(version)
    commit = vendored_commit(tree, version)
    compiler = compiler_version()
    features = cpu_features()
    key = build_key(commit, CMAKE_FLAGS, compiler, features)
    info_file = _info_path(key)
    if info_file.exists() and not force:
        return _complete(load_build_info(info_file), jobs)
    if shutil.which("cmake") is None:
        raise UserError("cmake is not installed; install it (Debian: apt-get install cmake) and rerun `make setup`.")

    root = info_file.parent
    build_dir = root / "build"
    log = root / "build.log"
    root.mkdir(parents=True, exist_ok=True)
    with _lock(root / ".lock"):
        if info_file.exists() and not force:  # another process finished it while we waited
            return _complete(load_build_info(info_file), jobs)
        import time
        from datetime import datetime

        started = time.monotonic()
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        llama_src = tree / "vendor" / "llama.cpp"
        _run_with_progress(
            ["cmake", "-S", str(llama_src), "-B", str(build_dir), *generator, *CMAKE_FLAGS],
            log,
            "configure llama.cpp",
        )
        jobs = jobs or os.cpu_count() or 2
        _run_with_progress(
            ["cmake", "--build", str(build_dir), "-j", str(jobs), "--target", "llama", *TOOLS],
            log,
            f"compile llama.cpp {commit}",
        )
        info = BuildInfo(
            llama_cpp_commit=commit,
            llama_cpp_python_version=version,
            cmake_flags=list(CMAKE_FLAGS),
            compiler=compiler,
            cpu=cpu_name(),
            cpu_features=features,
            key=key,
            bin_dir=str(build_dir / "bin"),
            build_seconds=round(time.monotonic() - started, 1),
            built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        for name in TOOLS:
            info.tool(name)
        write_atomic(info_file, json.dumps(asdict(info), indent=2))  # written last: it means the build is complete
    return info


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
