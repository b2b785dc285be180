"""A build proves itself before anything uses it.

Right after a compile, the build runs what the book runs, for a few tokens and in a
subprocess each: llama-bench (a prompt batch and a few generated tokens) and the Python
binding (load, a batch, a few single tokens), on the catalog model. A build that dies by a
signal there is not used: :func:`next_configuration` picks a configuration that avoids the
failing code (AMX left out, or exactly the instruction sets the running CPU reports), and
:mod:`localllms.build` compiles and tests that one. The result is kept with the build.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import cpu

SMOKE_PROMPT_TOKENS = 32  # a batch: the tiled, tinyBLAS, repacked and AMX paths all start at 8 or more
SMOKE_GEN_TOKENS = 4  # one-token matrix-vector products
# Under an emulator a token costs seconds (TCG runs AVX2 in software): the smallest batch that
# still takes the batched kernels, two generated tokens, no warm-up run.
RUNNER_PROMPT_TOKENS, RUNNER_GEN_TOKENS = 8, 2
NATIVE_TIMEOUT_S = 180  # a few seconds normally; generous for a loaded machine
RUNNER_TIMEOUT_S = 1200

# The binding, in its own process: the library is loaded exactly as the notebooks load it.
_BINDING_SCRIPT = r"""
import sys
import llama_cpp
print("SYSTEM_INFO " + llama_cpp.llama_print_system_info().decode().strip(), flush=True)
m = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=128, n_batch=64, n_threads=int(sys.argv[2]), verbose=False)
tokens = m.tokenize(b"The capital of France is Paris. The capital of Italy is Rome. " * 3)[: int(sys.argv[3])]
m.eval(tokens)
for _ in range(int(sys.argv[4])):
    m.eval([m.sample(temp=0.0)])
print("SMOKE_OK", len(tokens), flush=True)
"""


@dataclass(frozen=True)
class Crash:
    """How a smoke step failed: the tool, the signal (or exit code), the log, and where."""

    tool: str
    returncode: int
    log: str
    where: str = ""  # "libggml-cpu.so: tinygemm_kernel_amx<...>" when the kernel log names it

    @property
    def signal(self) -> str | None:
        if self.returncode < 0:
            try:
                return signal.Signals(-self.returncode).name
            except ValueError:
                return f"signal {-self.returncode}"
        if self.returncode > 128:  # a shell's report of a signal
            try:
                return signal.Signals(self.returncode - 128).name
            except ValueError:
                return None
        return None

    def describe(self) -> str:
        how = f"died with {self.signal}" if self.signal else f"exited with code {self.returncode}"
        return f"{how} in {self.tool}" + (f" ({self.where})" if self.where else "")


@dataclass(frozen=True)
class SmokeResult:
    passed: bool
    seconds: float
    runner: list[str]
    steps: list[dict] = field(default_factory=list)  # tool, seconds, returncode
    crash: Crash | None = None
    system_info: str = ""  # the binding's llama_print_system_info(): what the build compiled in

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SmokeResult:
        crash = data.get("crash")
        return cls(**{**data, "crash": Crash(**crash) if crash else None})


def _uptime() -> float:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def parse_trap(kernel_log: str, pid: int, since: float) -> tuple[str, int] | None:
    """The library and offset of the latest trap the kernel logged for process ``pid`` (or one
    of its threads) at or after ``since`` seconds of uptime, or None.

    Linux logs "traps: NAME[TID] trap invalid opcode ip:IP sp:... error:0" and on the next line
    " in LIB[OFFSET,BASE+SIZE]" (newer kernels) or " in LIB[BASE+SIZE]" (older: OFFSET = IP - BASE).
    """
    lines = kernel_log.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        m = re.search(r"^\[\s*([\d.]+)\] traps: \S+\[(\d+)\] .*?ip:([0-9a-f]+)", lines[i])
        if not m or float(m.group(1)) < since or int(m.group(2)) < pid:
            continue
        rest = " ".join(lines[i : i + 2])
        if lib := re.search(r" in ([^\s\[]+)\[([0-9a-f]+),([0-9a-f]+)\+", rest):
            return lib.group(1), int(lib.group(2), 16)
        if lib := re.search(r" in ([^\s\[]+)\[([0-9a-f]+)\+", rest):
            return lib.group(1), int(m.group(3), 16) - int(lib.group(2), 16)
        return None
    return None


def _trap_location(pid: int, since: float) -> str:
    """ "LIB: FUNCTION" of the trap the kernel logged for ``pid`` (best effort: "" when the log
    is unreadable, e.g. dmesg_restrict, or names no library)."""
    try:
        text = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    found = parse_trap(text, pid, since)
    if found is None:
        return ""
    lib, offset = found
    return f"{_short_lib(lib)}: {_function_at(lib, offset)}".rstrip(": ")


def _short_lib(name: str) -> str:
    return re.sub(r"(\.so)(\.\d+)+$", r"\1", name)


_BIN_DIRS: list[Path] = []


def _function_at(lib: str, offset: int) -> str:
    """The function at ``offset`` in ``lib`` (from the build's bin dir), via addr2line."""
    addr2line = shutil.which("addr2line")
    path = next((d / lib for d in _BIN_DIRS if (d / lib).exists()), None)
    if not addr2line or path is None:
        return ""
    try:
        out = subprocess.run([addr2line, "-f", "-C", "-e", str(path), hex(offset)], capture_output=True, text=True,
                             timeout=30).stdout.splitlines()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    name = out[0] if out else ""
    if name in ("", "??"):
        return ""
    name = re.sub(r" \[clone [^\]]*\]", "", name).replace("(anonymous namespace)::", "")
    name = re.sub(r"^void |\(.*\)$", "", name)  # the return type and the argument list
    return name.strip()


def _run_step(tool: str, cmd: list[str], env: dict, log: Path, timeout: float) -> tuple[dict, Crash | None, str]:
    started = time.monotonic()
    since = _uptime() - 1.0
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=fh, text=True, env=env)
            out, _ = proc.communicate(timeout=timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            fh.write(f"(timed out after {timeout:.0f} s)\n")
            code = -int(signal.SIGKILL)
        fh.write(out)
    step = {"tool": tool, "seconds": round(time.monotonic() - started, 2), "returncode": code}
    crash = None
    if code != 0:
        where = _trap_location(proc.pid, since) if code < 0 or code > 128 else ""
        crash = Crash(tool, code, str(log), where)
    return step, crash, out


def smoke_test(bin_dir: Path, model: Path, log: Path, runner: Sequence[str] = (), threads: int = 2) -> SmokeResult:
    """Run llama-bench and the binding on ``model`` with the build in ``bin_dir``; stop at the
    first failure. ``runner`` prefixes every command (e.g. ``qemu-x86_64 -cpu Haswell``)."""
    bin_dir = Path(bin_dir)
    _BIN_DIRS[:] = [bin_dir]
    timeout = RUNNER_TIMEOUT_S if runner else NATIVE_TIMEOUT_S
    n_prompt, n_gen = (RUNNER_PROMPT_TOKENS, RUNNER_GEN_TOKENS) if runner else (SMOKE_PROMPT_TOKENS, SMOKE_GEN_TOKENS)
    env = {**os.environ, "LLAMA_CPP_LIB_PATH": str(bin_dir), "LLAMA_ARG_THREADS": str(threads)}
    started = time.monotonic()
    steps: list[dict] = []
    bench = [*runner, str(bin_dir / "llama-bench"), "-m", str(model), "-p", str(n_prompt), "-n", str(n_gen),
             "-r", "1", "-t", str(threads), "-o", "json", *(["--no-warmup"] if runner else [])]  # fmt: skip
    step, crash, out = _run_step("llama-bench", bench, env, log, timeout)
    steps.append(step)
    if crash is None:
        try:
            rows = json.loads(out)
            if not rows or not all(r.get("avg_ts", 0) > 0 for r in rows):
                raise ValueError("no throughput")
        except ValueError:
            crash = Crash("llama-bench", 1, str(log), "its JSON output had no throughput")
    system_info = ""
    if crash is None:
        binding = [*runner, sys.executable, "-c", _BINDING_SCRIPT, str(model), str(threads),
                   str(n_prompt), str(n_gen)]  # fmt: skip
        step, crash, out = _run_step("the Python binding", binding, env, log, timeout)
        steps.append(step)
        system_info = next(
            (ln.removeprefix("SYSTEM_INFO ") for ln in out.splitlines() if ln.startswith("SYSTEM_INFO ")), ""
        )
        if crash is None and "SMOKE_OK" not in out:
            crash = Crash("the Python binding", 1, str(log), "it did not finish its tokens")
    return SmokeResult(crash is None, round(time.monotonic() - started, 2), list(runner), steps, crash, system_info)


def next_configuration(
    tried: cpu.Configuration, crash: Crash, features: set[str], extra_flags: Sequence[str] = ()
) -> cpu.Configuration | None:
    """The configuration to build after ``tried`` died as ``crash`` on a CPU with ``features``,
    or None when no rebuild can avoid it.

    Only an illegal instruction is a CPU-feature problem; any other failure (a segfault, a
    missing file) is not cured by other instruction sets. A reader's own CPU flags are kept.
    """
    if crash.signal != "SIGILL" or cpu.user_sets_cpu(extra_flags) or not (features & set(cpu.GGML_OPTIONS)):
        return None
    amx_here = any(f in features for f in cpu.AMX)
    if tried.name == "native" and amx_here:
        return cpu.explicit(
            features,
            "no-amx",
            f"AMX kernels left out: the native build {crash.describe()} during its smoke test",
            leave_out=cpu.AMX,
        )
    if tried.name in ("native", "no-amx"):
        candidate = cpu.explicit(
            features,
            "cpu-features",
            f"built for the instruction sets the running CPU reports ({', '.join(sorted(features & set(cpu.GGML_OPTIONS)))}): "
            f"the {tried.name} build {crash.describe()} during its smoke test",
            leave_out=cpu.AMX,
        )
        return candidate if candidate.flags != tried.flags else None
    return None


def failure_sentence(crash: Crash, configuration: cpu.Configuration, bin_dir: Path) -> str:
    """The one sentence a reader gets when no configuration passes."""
    return (
        f"The llama.cpp build in {bin_dir} ({configuration.name} configuration) {crash.describe()} during its "
        f"smoke test and no other configuration avoids it; the log is {crash.log} (set LOCALLLMS_CMAKE_ARGS to "
        "choose the CMake flags yourself, see the README)."
    )
