"""The CPU a build runs on, and the CPU part of a build's CMake configuration.

A llama.cpp build made with ``GGML_NATIVE=ON`` uses every instruction the compiling CPU
reports. That is the fastest build, and it can still die on the machine that made it (the
vendored AMX kernels raise SIGILL on some AMX Xeons) or on another CPU that runs it. The
alternatives name the instruction sets explicitly (``GGML_NATIVE=OFF`` and ``GGML_AVX2=ON``...),
from what the CPU that runs the build reports, so a build can leave one family out (AMX) and
keep the rest. :mod:`localllms.smoke` decides which one to try when a build dies.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .paths import cache_dir

# The instruction-set extensions that change which ggml kernels are compiled in, as Linux's
# /proc/cpuinfo names them. These enter the build key and every provenance record.
SIMD_FLAGS = (
    "sse3 ssse3 sse4_1 sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni "
    "avx512_bf16 avx_vnni amx_tile amx_int8 amx_bf16 neon asimd sve"
).split()

# x86 extension (cpuinfo name) -> the ggml CMake option that compiles code for it when
# GGML_NATIVE is off (ggml/src/ggml-cpu/CMakeLists.txt). AVX-512 needs its F, CD, VL, DQ, BW
# subsets together: ggml's GGML_AVX512 passes all five to the compiler.
GGML_OPTIONS = {
    "sse4_2": "GGML_SSE42",
    "avx": "GGML_AVX",
    "avx2": "GGML_AVX2",
    "bmi2": "GGML_BMI2",
    "fma": "GGML_FMA",
    "f16c": "GGML_F16C",
    "avx_vnni": "GGML_AVX_VNNI",
    "avx512f": "GGML_AVX512",
    "avx512vbmi": "GGML_AVX512_VBMI",
    "avx512_vnni": "GGML_AVX512_VNNI",
    "avx512_bf16": "GGML_AVX512_BF16",
    "amx_tile": "GGML_AMX_TILE",
    "amx_int8": "GGML_AMX_INT8",
    "amx_bf16": "GGML_AMX_BF16",
}
AVX512_BASE = ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")
AMX = ("amx_tile", "amx_int8", "amx_bf16")
# Options that choose the CPU's instruction sets: a reader who sets one in LOCALLLMS_CMAKE_ARGS
# has chosen them, and no fallback overrides the choice.
CPU_OPTIONS = ("GGML_NATIVE", "GGML_CPU_ALL_VARIANTS", "GGML_BACKEND_DL", *GGML_OPTIONS.values())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    if "pni" in flags:  # Linux names SSE3 "pni"
        flags.add("sse3")
    return flags


def cpu_features() -> list[str]:
    """The SIMD extensions of this machine's CPU that matter to ggml (the build key's list)."""
    flags = _cpuinfo_flags()
    return [f for f in SIMD_FLAGS if f in flags]


# A probe of the CPU a program actually runs on: under an emulator (qemu-x86_64 -cpu Haswell)
# /proc/cpuinfo still describes the host, but CPUID answers for the emulated CPU. GCC's
# __builtin_cpu_supports reads CPUID and checks that the OS saves the registers (XCR0).
_PROBE_C = r"""
#include <stdio.h>
int main(void) {
    __builtin_cpu_init();
#define F(gcc, linux) if (__builtin_cpu_supports(gcc)) printf("%s\n", linux);
    F("sse3", "sse3") F("ssse3", "ssse3") F("sse4.1", "sse4_1") F("sse4.2", "sse4_2")
    F("avx", "avx") F("avx2", "avx2") F("fma", "fma") F("f16c", "f16c") F("bmi2", "bmi2")
    F("avxvnni", "avx_vnni") F("avx512f", "avx512f") F("avx512cd", "avx512cd")
    F("avx512vl", "avx512vl") F("avx512dq", "avx512dq") F("avx512bw", "avx512bw")
    F("avx512vbmi", "avx512vbmi") F("avx512vnni", "avx512_vnni") F("avx512bf16", "avx512_bf16")
    F("amx-tile", "amx_tile") F("amx-int8", "amx_int8") F("amx-bf16", "amx_bf16")
    return 0;
}
"""


def running_features(runner: Sequence[str] = ()) -> set[str]:
    """The x86 extensions of the CPU that runs programs through ``runner`` (empty: this CPU).

    Without a runner this is /proc/cpuinfo; with one (an emulator), a small CPUID probe is
    compiled once and run through it. On other architectures: /proc/cpuinfo.
    """
    if not runner or platform.machine() not in ("x86_64", "AMD64"):
        return _cpuinfo_flags()
    probe = cache_dir("cpu-probe") / "cpu-probe"
    if not probe.exists():
        cc = shutil.which("gcc") or shutil.which("cc")
        if cc is None:
            raise RuntimeError("no C compiler to build the CPU probe")
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "probe.c"
            src.write_text(_PROBE_C)
            out = Path(tmp) / "probe"
            subprocess.run([cc, "-O1", str(src), "-o", str(out)], check=True, capture_output=True)
            shutil.move(out, probe)  # complete or absent
    proc = subprocess.run([*runner, str(probe)], capture_output=True, text=True, timeout=120, check=True)
    return set(proc.stdout.split())


@dataclass(frozen=True)
class Configuration:
    """The CPU part of a build's CMake flags, with its name and the reason it was chosen."""

    name: str  # "native", "no-amx", "cpu-features"
    flags: tuple[str, ...]
    reason: str = "the default: tuned for the CPU that compiles it (-march=native)"
    left_out: tuple[str, ...] = field(default=())  # instruction families deliberately not compiled

    @property
    def has_amx(self) -> bool:
        return self.name == "native" or "-DGGML_AMX_INT8=ON" in self.flags


NATIVE = Configuration("native", ("-DGGML_NATIVE=ON",))


def explicit(features: set[str], name: str, reason: str, leave_out: Sequence[str] = ()) -> Configuration:
    """A build for exactly these x86 extensions (GGML_NATIVE off), minus ``leave_out``."""
    have = set(features) - set(leave_out)
    avx512 = all(f in have for f in AVX512_BASE)  # ggml compiles AVX-512 code for the five together
    flags = ["-DGGML_NATIVE=OFF"]
    for feature, option in GGML_OPTIONS.items():
        on = feature in have and (avx512 or not feature.startswith("avx512"))
        flags.append(f"-D{option}={'ON' if on else 'OFF'}")
    return Configuration(name, tuple(flags), reason, tuple(leave_out))


def user_sets_cpu(extra_flags: Sequence[str]) -> bool:
    """Whether a reader's own CMake flags choose the instruction sets (then they are theirs)."""
    return any(f.removeprefix("-D").split("=", 1)[0].split(":", 1)[0] in CPU_OPTIONS for f in extra_flags)


def compiled_features(system_info: str) -> list[str]:
    """The features a build reports as compiled in (``llama_print_system_info``'s CPU line)."""
    out = []
    for part in system_info.replace("\n", "|").split("|"):
        name, _, value = part.partition("=")
        name = name.strip().removeprefix("CPU :").strip()
        if value.strip() == "1" and name:
            out.append(name)
    return out
