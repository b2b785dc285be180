"""The build on another CPU: QEMU's user-mode emulator runs this machine's build as a Haswell
(AVX2, no AVX-512), where it must die, and the fallback must give a build that runs there."""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

import pytest

from localllms import build as b
from localllms import smoke

HASWELL = ("qemu-x86_64", "-cpu", "Haswell")


@pytest.mark.slow
def test_a_build_that_dies_on_an_emulated_cpu_is_replaced_by_one_that_runs_there(
    build, smollm2, tmp_path: Path
) -> None:
    if platform.machine() != "x86_64":
        pytest.skip("the emulated CPU is an x86-64 one; this machine is not")
    if shutil.which(HASWELL[0]) is None:
        pytest.skip("qemu-x86_64 is not installed (Debian: apt-get install qemu-user; make setup does as root)")
    if "avx512f" not in build.cpu_features:
        pytest.skip("this machine has no AVX-512, so its build would run on the emulated Haswell as it is")

    # This machine's build uses AVX-512: on the emulated CPU it dies by an illegal instruction.
    host = smoke.smoke_test(Path(build.bin_dir), smollm2.path, tmp_path / "host.log", HASWELL)
    assert not host.passed and host.crash is not None
    assert host.crash.signal == "SIGILL" and host.crash.tool == "llama-bench", host.crash

    # Asked for a build that runs there, the ladder catches the native build's crash and builds
    # for the instruction sets the emulated CPU reports (compiled once, then cached).
    there = b.build(runner=HASWELL)
    assert there.configuration == "cpu-features"
    assert there.replaced and there.replaced[0]["configuration"] == "native"
    assert "SIGILL" in there.replaced[0]["crash"]
    assert "-DGGML_AVX2=ON" in there.cmake_flags and "-DGGML_AVX512=OFF" in there.cmake_flags
    assert there.note.startswith("built for the instruction sets the running CPU reports (avx, avx2")
    assert there.key != build.key

    # ...and that build passes the smoke test on the emulated CPU, run again now.
    again = smoke.smoke_test(Path(there.bin_dir), smollm2.path, tmp_path / "there.log", HASWELL)
    assert again.passed, (tmp_path / "there.log").read_text()[-2000:]
    compiled = set(smoke.cpu.compiled_features(again.system_info))
    assert {"AVX2", "FMA", "F16C"} <= compiled and "AVX512" not in compiled
