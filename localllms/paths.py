"""Where things live: the project tree, and a cache outside it that survives clones."""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
RESULTS_DIR = DATA_DIR / "results"  # tracked: only `make record` writes here
# Everything a run produces (executed notebooks, results, images, the HTML) goes under _build/;
# a run never changes a tracked file.
BUILD_DIR = PROJECT_ROOT / "_build"
OUTPUT_RESULTS_DIR = BUILD_DIR / "results"
OUTPUT_IMAGES_DIR = BUILD_DIR / "images"
REMEASURE_ENV = "LOCALLLMS_REMEASURE"


def remeasuring() -> bool:
    """Whether this run must take every measurement again instead of reading its cache
    (``make book REMEASURE=1``; quality numbers are deterministic and stay cached)."""
    return os.environ.get(REMEASURE_ENV, "") not in ("", "0")


def cache_dir(*parts: str) -> Path:
    """A directory under the user cache (``$LOCALLLMS_CACHE`` or ``~/.cache/local-llms``).

    The cache sits outside the work tree so that a fresh clone, ``make clean`` or CI
    on the same machine reuse the compiled llama.cpp, downloaded and derived models.
    """
    root = os.environ.get("LOCALLLMS_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "local-llms"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def content_key(*parts: object) -> str:
    """A short digest of JSON-able parts: the key under which a cached result is stored."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write ``data`` beside ``path`` and rename it into place: readers see all of it or none.

    Every cache file goes through here, so an interrupt never leaves half a result that a
    rerun would trust.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data, encoding="utf-8")
    tmp.replace(path)
    return path


@functools.cache
def code_key(*modules: str) -> str:
    """A digest of the source of the named modules of this package (e.g. ``"evaluate"``).

    Cached results are keyed on it, so a change to the code that produced a number
    recomputes that number; no version constant has to be remembered and bumped. A
    package name covers every module in it.
    """
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for name in sorted(modules):
        path = package.joinpath(*name.split("."))
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
        if not files or not files[0].exists():
            raise ValueError(f"code_key: no module localllms.{name}")
        for f in files:
            digest.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


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


# --------------------------------------------------------------------------- what code reaches


def _imports(source: str, package: str = "") -> set[str]:
    """Modules of localllms a piece of code imports (``package`` resolves relative imports)."""
    names: set[str] = set()
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: fall back to no imports from this cell
        return names
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative, inside the package
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                base = [p for p in base if p]
                mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and (node.module == "localllms" or node.module.startswith("localllms.")):
                mod = node.module.removeprefix("localllms").lstrip(".")
            else:
                continue
            names.add(mod)
            names.update(f"{mod}.{a.name}" if mod else a.name for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name.removeprefix("localllms.") for a in node.names if a.name.startswith("localllms."))
    return names


def package_modules(sources: list[str]) -> list[str]:
    """Every localllms module the code reaches, following imports through the package."""
    root = Path(__file__).resolve().parent
    seen: set[str] = set()
    todo = [m for s in sources for m in _imports(s)]
    while todo:
        name = todo.pop()
        path = root.joinpath(*name.split(".")) if name else root
        if path.is_dir() and (path / "__init__.py").exists():
            file, package = path / "__init__.py", name
        elif path.with_suffix(".py").exists():
            file, package = path.with_suffix(".py"), name.rpartition(".")[0]
        else:
            continue  # a name imported from a module (a function or class), not a module
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_imports(file.read_text(), package))
    return sorted(n for n in seen if n)
