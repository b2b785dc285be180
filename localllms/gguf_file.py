"""A GGUF file's header, read fast: its metadata and its tensor table.

``gguf.GGUFReader`` builds a numpy view for every element of every metadata array, which for
Gemma-3's 262k-token vocabulary (tokens, scores, token types) takes about ten seconds per file;
the book reads headers of every variant several times. This reader decodes scalars, strings
and numeric arrays, keeps only the length of a string array (the vocabulary, the merges), and
caches each file's header by path, size and modification time.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

GGUF_MAGIC = b"GGUF"
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9
DEFAULT_ALIGNMENT = 32  # GGUF's data alignment when general.alignment is absent
# The versions the vendored llama.cpp reads (ggml/src/gguf.cpp refuses 1 and anything above
# GGUF_VERSION, 3, in ggml/include/gguf.h; a test checks the vendored header).
READ_VERSIONS = (2, 3)
# The key this book writes into a GGUF whose weights are synthetic (localllms.synth: speed and memory
# only); quality is never computed on such a file (models.check_not_synthetic).
SYNTHETIC_KEY = "localllms.synthetic"
# What every page, file name and row says about such a file; declared here, beside its key.
SYNTHETIC_NOTE = "synthetic weights: speed and memory only"


class UnsupportedVersion(ValueError):
    """A GGUF file of a version this llama.cpp does not read (checked before anything else)."""

    def __init__(self, path: str, version: int) -> None:
        self.version = version
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        hint = f" (or a big-endian file of version {swapped})" if swapped in READ_VERSIONS else ""
        super().__init__(
            f"{path}: GGUF version {version}{hint}; this llama.cpp reads versions {READ_VERSIONS[0]}-{READ_VERSIONS[-1]}"
        )


@dataclass(frozen=True)
class StringArray:
    """A metadata array of strings (or of arrays), kept as its length: nothing here needs the words."""

    count: int

    def __len__(self) -> int:
        return self.count


@dataclass(frozen=True)
class Tensor:
    name: str
    type: str  # ggml type name, e.g. "Q4_K"
    shape: tuple[int, ...]  # ggml order: the row length first
    n_elements: int
    n_bytes: int
    data_offset: int  # from the start of the file


@dataclass(frozen=True)
class Header:
    fields: dict[str, object]
    tensors: tuple[Tensor, ...]

    def get(self, key: str, default: object = None) -> object:
        return self.fields.get(key, default)


def read(path: Path) -> Header:
    """The header of a GGUF file (cached while the file is unchanged); ValueError if it is not one
    or its header is cut short."""
    st = Path(path).stat()
    return _read(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=128)
def _read(path: str, size: int, mtime_ns: int) -> Header:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if mm[:4] != GGUF_MAGIC:
            raise ValueError(f"{path} is not a GGUF file")
        (version,) = struct.unpack_from("<I", mm, 4)
        if version not in READ_VERSIONS:
            raise UnsupportedVersion(path, version)
        n_tensors, n_kv = struct.unpack_from("<QQ", mm, 8)
        pos = 24

        def string(pos: int) -> tuple[str, int]:
            n = struct.unpack_from("<Q", mm, pos)[0]
            if pos + 8 + n > size:
                raise ValueError(f"{path}: a string runs past the end of the file")
            return bytes(mm[pos + 8 : pos + 8 + n]).decode("utf-8", errors="replace"), pos + 8 + n

        def skip(vtype: int, pos: int) -> int:
            if vtype in _SCALAR:
                return pos + struct.calcsize(_SCALAR[vtype])
            if vtype == _STRING:
                return pos + 8 + struct.unpack_from("<Q", mm, pos)[0]
            if vtype == _ARRAY:
                etype, count = struct.unpack_from("<IQ", mm, pos)
                pos += 12
                if etype in _SCALAR:
                    return pos + count * struct.calcsize(_SCALAR[etype])
                for _ in range(count):
                    pos = skip(etype, pos)
                return pos
            raise ValueError(f"{path}: unknown GGUF value type {vtype}")

        def value(vtype: int, pos: int) -> tuple[object, int]:
            if vtype in _SCALAR:
                fmt = "<" + _SCALAR[vtype]
                return struct.unpack_from(fmt, mm, pos)[0], pos + struct.calcsize(fmt)
            if vtype == _STRING:
                return string(pos)
            if vtype == _ARRAY:
                etype, count = struct.unpack_from("<IQ", mm, pos)
                if etype in _NUMPY:
                    end = pos + 12 + count * np.dtype(_NUMPY[etype]).itemsize
                    # A copy, not a view: a view left alive in a kept frame (Dask's profiler keeps
                    # them) stops the map from closing.
                    return np.frombuffer(mm[pos + 12 : end], dtype=_NUMPY[etype]).tolist(), end
                return StringArray(int(count)), skip(vtype, pos)
            raise ValueError(f"{path}: unknown GGUF value type {vtype}")

        fields: dict[str, object] = {}
        for _ in range(n_kv):
            key, pos = string(pos)
            fields[key], pos = value(struct.unpack_from("<I", mm, pos)[0], pos + 4)
        infos = []
        for _ in range(n_tensors):
            name, pos = string(pos)
            n_dims = struct.unpack_from("<I", mm, pos)[0]
            dims = tuple(int(d) for d in struct.unpack_from(f"<{n_dims}Q", mm, pos + 4))
            ttype, offset = struct.unpack_from("<IQ", mm, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            infos.append((name, GGMLQuantizationType(ttype), dims, offset))
        align = int(fields.get("general.alignment", DEFAULT_ALIGNMENT))  # type: ignore[arg-type]
        start = pos + (-pos % align)
        tensors = []
        for name, ttype, dims, offset in infos:
            elements = int(np.prod(dims, dtype=np.int64)) if dims else 1
            block, nbytes = GGML_QUANT_SIZES[ttype]
            tensors.append(Tensor(name, ttype.name, dims, elements, elements // block * nbytes, start + offset))
    return Header(fields, tuple(tensors))
