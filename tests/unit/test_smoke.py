"""The fallback decision after a build dies, on made-up crashes and CPUs (no build, no model)."""

from __future__ import annotations

import signal
import stat
from pathlib import Path

import pytest

from localllms import cpu, smoke
from localllms.build import extra_cmake_flags
from localllms.errors import UserError

AMX_XEON = {"sse4_2", "avx", "avx2", "bmi2", "fma", "f16c", "avx_vnni", *cpu.AVX512_BASE, "avx512vbmi",
            "avx512_vnni", "avx512_bf16", *cpu.AMX}  # fmt: skip
HASWELL = {"sse4_2", "avx", "avx2", "bmi2", "fma", "f16c"}


def sigill(tool: str = "llama-bench") -> smoke.Crash:
    return smoke.Crash(tool, -int(signal.SIGILL), "/tmp/smoke.log", "libggml-cpu.so: tinygemm_kernel_amx<...>")


def test_a_native_build_dying_of_sigill_on_an_amx_cpu_is_rebuilt_without_amx() -> None:
    nxt = smoke.next_configuration(cpu.NATIVE, sigill(), AMX_XEON)
    assert nxt is not None and nxt.name == "no-amx"
    assert nxt.reason.startswith("AMX kernels left out: the native build died with SIGILL in llama-bench")
    assert "tinygemm_kernel_amx" in nxt.reason
    assert "-DGGML_NATIVE=OFF" in nxt.flags and "-DGGML_AVX512=ON" in nxt.flags
    assert all(f"-D{o}=OFF" in nxt.flags for o in ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"))
    assert "-DGGML_AVX512_VNNI=ON" in nxt.flags and "-DGGML_AVX_VNNI=ON" in nxt.flags
    assert not nxt.has_amx


def test_a_native_build_dying_on_another_cpu_is_rebuilt_for_that_cpus_instruction_sets() -> None:
    nxt = smoke.next_configuration(cpu.NATIVE, sigill(), HASWELL)
    assert nxt is not None and nxt.name == "cpu-features"
    assert "-DGGML_AVX2=ON" in nxt.flags and "-DGGML_FMA=ON" in nxt.flags and "-DGGML_F16C=ON" in nxt.flags
    assert "-DGGML_AVX512=OFF" in nxt.flags and "-DGGML_AVX512_VNNI=OFF" in nxt.flags
    assert "avx2" in nxt.reason and "the native build died with SIGILL" in nxt.reason


def test_avx512_extras_need_the_whole_base_set() -> None:
    partial = HASWELL | {"avx512f", "avx512_vnni"}  # no BW/VL/DQ/CD: ggml cannot use AVX-512 here
    config = cpu.explicit(partial, "x", "r")
    assert "-DGGML_AVX512=OFF" in config.flags and "-DGGML_AVX512_VNNI=OFF" in config.flags


def test_no_rebuild_when_none_can_help() -> None:
    segv = smoke.Crash("llama-bench", -int(signal.SIGSEGV), "/tmp/log")
    assert smoke.next_configuration(cpu.NATIVE, segv, AMX_XEON) is None  # not an instruction-set problem
    exit_1 = smoke.Crash("the Python binding", 1, "/tmp/log")
    assert smoke.next_configuration(cpu.NATIVE, exit_1, AMX_XEON) is None
    # the reader chose the instruction sets: their choice stands
    assert smoke.next_configuration(cpu.NATIVE, sigill(), AMX_XEON, ["-DGGML_AMX_INT8=ON"]) is None
    assert smoke.next_configuration(cpu.NATIVE, sigill(), AMX_XEON, ["-DGGML_CUDA=ON"]) is not None  # a GPU flag is not
    # the explicit build for this very CPU died too: nothing left to try
    no_amx = smoke.next_configuration(cpu.NATIVE, sigill(), AMX_XEON)
    assert no_amx is not None and smoke.next_configuration(no_amx, sigill(), AMX_XEON) is None
    haswell = smoke.next_configuration(cpu.NATIVE, sigill(), HASWELL)
    assert haswell is not None and smoke.next_configuration(haswell, sigill(), HASWELL) is None


def test_crash_names_signal_tool_and_place() -> None:
    assert sigill().signal == "SIGILL"
    assert sigill().describe() == "died with SIGILL in llama-bench (libggml-cpu.so: tinygemm_kernel_amx<...>)"
    assert smoke.Crash("llama-bench", 132, "/l").signal == "SIGILL"  # a shell's 128 + 4
    assert smoke.Crash("the Python binding", 1, "/l").describe() == "exited with code 1 in the Python binding"
    sentence = smoke.failure_sentence(sigill(), cpu.NATIVE, Path("/c/build/bin"))
    assert "SIGILL" in sentence and "llama-bench" in sentence and "/tmp/smoke.log" in sentence
    assert sentence.endswith(").") and ". " not in sentence and "\n" not in sentence  # one sentence


def test_kernel_trap_lines_give_library_and_offset() -> None:
    log = (
        "[  100.000001] traps: llama-bench[10] trap invalid opcode ip:7f0000001000 sp:7ffc error:0\n"
        "[  100.000002]  in libggml-cpu.so.0.25.3[1000,7f0000000000+16c000]\n"
        "[  486.636729] traps: llama-bench[8536] trap invalid opcode ip:7f722b07bb21 sp:7f721ea90c00 error:0\n"
        "[  486.636736]  in libggml-cpu.so.0.25.3[7bb21,7f722b014000+16c000]\n"
    )
    assert smoke.parse_trap(log, 8535, 480.0) == ("libggml-cpu.so.0.25.3", 0x7BB21)  # a worker thread of 8535
    assert smoke.parse_trap(log, 9000, 480.0) is None  # an earlier process
    assert smoke.parse_trap(log, 5, 500.0) is None  # before the step started
    older = (
        "[ 5.0] traps: python[77] trap invalid opcode ip:7f0000001234 sp:1 error:0 in libllama.so[7f0000000000+9000]\n"
    )
    assert smoke.parse_trap(older, 77, 1.0) == ("libllama.so", 0x1234)


def test_a_faked_crash_in_a_build_is_caught_and_gets_a_rebuild(tmp_path: Path) -> None:
    """A 'build' whose llama-bench dies of SIGILL: the smoke test reports it, and the decision
    on the CPU of this machine is a rebuild (no-amx here, or cpu-features on a CPU without AMX)."""
    bench = tmp_path / "llama-bench"
    bench.write_text("#!/bin/sh\nkill -ILL $$\n")
    bench.chmod(bench.stat().st_mode | stat.S_IEXEC)
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    result = smoke.smoke_test(tmp_path, model, tmp_path / "smoke.log")
    assert not result.passed and result.crash is not None
    assert result.crash.signal == "SIGILL" and result.crash.tool == "llama-bench"
    assert [s["tool"] for s in result.steps] == ["llama-bench"]  # stops at the first failure
    assert "llama-bench" in (tmp_path / "smoke.log").read_text()
    here = cpu.running_features()
    nxt = smoke.next_configuration(cpu.NATIVE, result.crash, here)
    assert nxt is not None
    assert nxt.name == ("no-amx" if "amx_int8" in here else "cpu-features")
    assert smoke.SmokeResult.from_json(result.to_json()) == result


def test_readers_flags_must_be_cmake_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALLLMS_CMAKE_ARGS", "-DGGML_CUDA=ON '-DCMAKE_CUDA_ARCHITECTURES=86;89'")
    assert extra_cmake_flags() == ("-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=86;89")
    monkeypatch.setenv("LOCALLLMS_CMAKE_ARGS", "GGML_CUDA=ON")
    with pytest.raises(UserError, match="-DNAME=VALUE"):
        extra_cmake_flags()
    monkeypatch.delenv("LOCALLLMS_CMAKE_ARGS")
    assert extra_cmake_flags() == ()
    assert cpu.user_sets_cpu(["-DGGML_NATIVE=OFF"]) and cpu.user_sets_cpu(["-DGGML_AVX2:BOOL=ON"])
    assert not cpu.user_sets_cpu(["-DGGML_VULKAN=ON"])


def test_compiled_features_are_read_from_system_info() -> None:
    info = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 0 | LLAMAFILE = 1 | REPACK = 1 |"
    assert cpu.compiled_features(info) == ["SSE3", "AVX", "AVX2", "AVX512", "LLAMAFILE", "REPACK"]
    assert cpu.compiled_features("") == []
