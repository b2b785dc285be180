"""The local llama.cpp build: cached, identified, and working for tools and binding alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from localllms import build as b
from localllms.errors import UserError


def test_build_is_cached_and_identified(build: b.BuildInfo) -> None:
    again = b.build()  # a second call must reuse the cache, not compile
    assert again == build
    assert build.llama_cpp_commit != "unknown" and len(build.llama_cpp_commit) >= 7
    assert build.compiler and build.cpu
    # the build passed its smoke test on this machine; a configuration other than native says why
    assert build.smoke["passed"] and [s["tool"] for s in build.smoke["steps"]] == ["llama-bench", "the Python binding"]
    if build.configuration == "native":
        assert "-DGGML_NATIVE=ON" in build.cmake_flags and build.note == "" and not build.replaced
    else:
        assert "-DGGML_NATIVE=OFF" in build.cmake_flags and build.note and build.replaced
        assert "SIGILL" in build.replaced[0]["crash"] and build.replaced[0]["crash"] in build.note
    assert Path(build.bin_dir).is_dir()
    for name in b.TOOLS:
        assert build.tool(name).exists()


def test_build_key_depends_on_commit_flags_and_configuration() -> None:
    key = b.build_key("abc1234", b.CMAKE_FLAGS, "gcc 12", ["avx2"])
    assert key == b.build_key("abc1234", b.CMAKE_FLAGS, "gcc 12", ["avx2"])
    assert key != b.build_key("abc1235", b.CMAKE_FLAGS, "gcc 12", ["avx2"])
    assert key != b.build_key("abc1234", (*b.CMAKE_FLAGS, "-DGGML_OPENMP=OFF"), "gcc 12", ["avx2"])
    assert key != b.build_key("abc1234", b.CMAKE_FLAGS, "gcc 12", ["avx2", "avx512f"])
    assert key != b.build_key("abc1234", b.CMAKE_FLAGS, "gcc 12", ["avx2"], "no-amx")


def test_readers_flags_enter_the_build_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from localllms import cpu

    plain = b._Request.here()
    monkeypatch.setenv("LOCALLLMS_CMAKE_ARGS", "-DGGML_VULKAN=ON")
    theirs = b._Request.here()
    assert theirs.flags(cpu.NATIVE)[-1] == "-DGGML_VULKAN=ON"
    assert theirs.key(cpu.NATIVE) != plain.key(cpu.NATIVE) and theirs.choice_file != plain.choice_file


def test_provenance_line_names_a_fallback_build(build: b.BuildInfo, smollm2) -> None:
    from localllms import provenance

    line = provenance.line(build, smollm2, 2)
    if build.note:
        assert f"build: {build.note}" in line
    else:
        assert "build:" not in line
    assert provenance.record(build, smollm2, 2)["build_note"] == build.note


def test_vendored_commit_matches_changelog(build: b.BuildInfo) -> None:
    tree = b._sdist_source(build.llama_cpp_python_version)
    assert b.vendored_commit(tree, build.llama_cpp_python_version) == build.llama_cpp_commit


def test_tools_report_usage(build: b.BuildInfo) -> None:
    for name in ("llama-quantize", "llama-perplexity", "llama-bench"):
        proc = subprocess.run([str(build.tool(name)), "--help"], capture_output=True, text=True, timeout=60)
        assert "usage" in (proc.stdout + proc.stderr).lower(), name


def test_unknown_tool_is_one_sentence(build: b.BuildInfo) -> None:
    with pytest.raises(UserError, match="not in the build"):
        build.tool("llama-nonexistent")


def test_llama_cli_generates_tokens_from_smollm2(build: b.BuildInfo, smollm2) -> None:
    from localllms.serve import run_cli

    result = run_cli(smollm2, "The capital of France is", n_predict=16, threads=2, seed=1)
    assert result.returncode == 0, result.log
    assert result.generated_tokens >= 1
    assert result.text.strip()


def test_binding_uses_this_build(build: b.BuildInfo) -> None:
    import llama_cpp

    lib_path = Path(llama_cpp.llama_cpp._lib._name).resolve()
    assert lib_path.parent == Path(build.bin_dir).resolve()
    info = llama_cpp.llama_print_system_info().decode()
    assert "CPU" in info


def test_failed_compile_shows_compiler_error(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.14)\nproject(broken C)\nadd_executable(broken broken.c)\n"
    )
    (src / "broken.c").write_text("int main(void) { return undefined_symbol_xyz }\n")
    log = tmp_path / "build.log"
    b._run_with_progress(["cmake", "-S", str(src), "-B", str(tmp_path / "out")], log, "configure")
    with pytest.raises(UserError) as err:
        b._run_with_progress(["cmake", "--build", str(tmp_path / "out")], log, "compile broken")
    message = str(err.value)
    assert "compile broken failed" in message
    assert "undefined_symbol_xyz" in message and "error" in message
    assert str(log) in message


def test_parse_progress_reads_ninja_steps_and_make_percentages() -> None:
    assert b.parse_progress("[12/230] Building CXX object src/llama.cpp.o\n") == b.Progress(12, 230, "step")
    assert b.parse_progress("[ 45%] Building C object broken.c.o\n") == b.Progress(45, 100, "%")
    assert b.parse_progress("-- Configuring done (1.2s)\n") is None
    assert b.parse_progress("error: [1/2] is not a status line\n") is None


def test_progress_bar_counts_ninja_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = "import time\nfor i in (1, 2, 3):\n    print(f'[{i}/3] step {i}', flush=True)\n    time.sleep(0.05)\n"
    bar = b._run_with_progress([sys.executable, "-c", script], tmp_path / "log", "fake compile")
    assert bar is not None and bar.total == 3 and bar.n == 3 and bar.unit == "step"
    shown = capsys.readouterr().err
    assert "3/3" in shown and "step" in shown and "/100" not in shown
    assert (tmp_path / "log").read_text().splitlines() == ["[1/3] step 1", "[2/3] step 2", "[3/3] step 3"]


def test_step_without_progress_lines_gets_plain_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bar = b._run_with_progress([sys.executable, "-c", "print('-- Configuring done')"], tmp_path / "log", "configure")
    assert bar is None
    shown = capsys.readouterr().err
    assert "configure ..." in shown and "configure: done in" in shown


def test_llama_cpp_log_goes_to_a_file_not_to_stderr(build: b.BuildInfo, gemma, capsys) -> None:
    """Loading gemma-3-270m makes llama.cpp warn about its sliding-window cache; that is a log line,
    and it belongs in the log file, not on a notebook page (stderr)."""
    from localllms.evaluate import LogitsModel

    log = b.llama_log_path()
    before = log.read_text() if log.exists() else ""
    lm = LogitsModel(gemma, 512, 2, build)
    lm.close()
    captured = capsys.readouterr()
    assert "llama_" not in captured.err and "llama_" not in captured.out
    added = log.read_text()[len(before) :]
    assert "llama_kv_cache_iswa: using full-size SWA cache" in added
