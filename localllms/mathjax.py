"""MathJax shipped with the book, so that its formulas render offline.

Sphinx loads MathJax from a CDN by default; a book opened without the network then
shows raw LaTeX. ``ensure_mathjax`` fetches the pinned MathJax 3 package from the npm
registry once (``npm pack``, checked against its pinned digest) into the user cache;
``stage_mathjax`` copies the renderer into the staged book, where ``_config.yml``
points Sphinx at it (``html_static_path: [_vendor_static]`` and
``mathjax_path: mathjax/tex-chtml-full.js``, which Sphinx resolves under ``_static/``).

The files sit in their own static folder, not in the book's ``_static/``: Jupyter Book
adds every ``.js`` file under ``_static/`` to every page, and MathJax's components
must only be loaded on demand by MathJax itself.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from .errors import UserError
from .paths import cache_dir

MATHJAX_VERSION = "3.2.2"
# The npm registry's integrity digest of mathjax-3.2.2.tgz.
MATHJAX_INTEGRITY = "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
ENTRY = "tex-chtml-full.js"  # TeX input with every extension built in, CommonHTML output
# What the entry script loads at run time: its web fonts, the menu and the accessibility
# components (with the speech rule engine's maps), all relative to the script's own folder.
RUNTIME = ("output/chtml", "ui", "a11y", "sre", "adaptors")
STATIC_DIR = "_vendor_static"  # in the staged book; must match html_static_path in _config.yml


def ensure_mathjax() -> Path:
    """The ``es5`` folder of the pinned MathJax in the user cache, fetched with npm the first time."""
    root = cache_dir("mathjax", MATHJAX_VERSION)
    es5 = root / "es5"
    if (es5 / ENTRY).exists():
        return es5
    npm = shutil.which("npm")
    if npm is None:
        raise UserError(
            f"npm is not installed, and the book needs it once to fetch MathJax {MATHJAX_VERSION} for its formulas; "
            "install Node.js and npm (Debian: apt-get install nodejs npm) and rerun."
        )
    with tempfile.TemporaryDirectory(dir=root, prefix=".partial-") as tmp:
        tarball = _npm_pack(npm, Path(tmp))
        _check_integrity(tarball)
        with tarfile.open(tarball) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(("package/es5/", "package/LICENSE"))]
            tar.extractall(tmp, members=members, filter="data")
        shutil.move(Path(tmp) / "package" / "LICENSE", Path(tmp) / "package" / "es5" / "LICENSE")
        try:
            (Path(tmp) / "package" / "es5").rename(es5)  # atomic: the folder is complete or absent
        except OSError:
            if not (es5 / ENTRY).exists():  # not another process that finished first
                raise
    return es5


def _npm_pack(npm: str, dest: Path) -> Path:
    spec = f"mathjax@{MATHJAX_VERSION}"
    cmd = [npm, "pack", spec, "--pack-destination", str(dest), "--fetch-retries=1", "--no-update-notifier"]
    env = {**os.environ, "npm_config_fund": "false", "npm_config_audit": "false"}
    try:
        proc = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=600, env=env)
    except subprocess.TimeoutExpired:
        proc = None
    tarballs = list(dest.glob("mathjax-*.tgz"))
    if proc is None or proc.returncode != 0 or not tarballs:
        why = _npm_reason(proc.stderr if proc else "", proc.returncode if proc else None)
        raise UserError(
            f"Could not fetch {spec} from the npm registry ({why}); check the network and "
            "`npm config get registry`, then rerun (it is fetched once and cached)."
        )
    return tarballs[0]


def _npm_reason(stderr: str, code: int | None) -> str:
    """The line of npm's error output that says why, e.g. "request to ... failed, reason: ..."."""
    if code is None:
        return "npm timed out after 10 minutes"
    for pattern in (
        r"request to \S+ failed, reason: [^\n]+",
        r"No matching version found for [^\n]+",
        r"\b40[134] [^\n]+",
    ):
        if m := re.search(pattern, stderr):
            return m.group(0).strip()
    if m := re.search(r"npm error code (\S+)", stderr):
        return f"npm error {m.group(1)}"
    return f"npm exited with {code}"


def _check_integrity(tarball: Path) -> None:
    algo, _, want = MATHJAX_INTEGRITY.partition("-")
    got = base64.b64encode(hashlib.new(algo, tarball.read_bytes()).digest()).decode()
    if got != want:
        raise UserError(
            f"The MathJax package from the npm registry is not the pinned mathjax@{MATHJAX_VERSION} "
            f"({tarball.name} has {algo} {got}); check which registry npm uses."
        )


def stage_mathjax(stage_dir: Path) -> Path:
    """Copy MathJax into a staged book as ``<stage>/_vendor_static/mathjax``; return that folder.

    Sphinx copies it to ``_static/mathjax/`` of the built HTML.
    """
    es5 = ensure_mathjax()
    dest = Path(stage_dir) / STATIC_DIR / "mathjax"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in (ENTRY, "LICENSE"):
        shutil.copyfile(es5 / name, dest / name)
    for sub in RUNTIME:
        shutil.copytree(es5 / sub, dest / sub)
    return dest
