"""The other ways to run the same model: llama-cli, the in-process binding, Ollama and llamafile.

* ``run_cli``, ``cli_command``: one non-interactive turn of llama-cli (a base model continues the
  text through a pass-through template; ``count_tokens`` counts the output with the model's own
  tokenizer; ``require_chat_template`` refuses chat on a base model).
* ``binding_chat``, ``binding_complete``, ``binding_from_pretrained``: ``llama_cpp.Llama`` in this
  process, on the build's libllama (a chat turn, or a plain completion for a base model).
* Ollama and llamafile are detected, never assumed: ``detect_ollama``, ``ollama_endpoint``,
  ``detect_llamafile``, ``LlamafileServer``; what is absent is reported as ``NOT_INSTALLED``.
* ``COMPARISON``, ``comparison_table``: the qualitative comparison of the three, plus what was measured.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..build import BuildInfo, current_build, use_build_for_binding
from ..errors import UserError
from ..models import ResolvedModel, hub_reachable
from ..paths import cache_dir, write_atomic
from .clients import SEED, ChatResult, Endpoint, chapter_messages, session
from .process import LOOPBACK, ManagedServer

# =========================================================================== llama-cli


@dataclass
class CliResult:
    command: list[str]
    returncode: int
    text: str
    generated_tokens: int
    prompt_tps: float | None
    generation_tps: float | None
    log: str


def log_file(name: str, text: str) -> Path:
    """Keep a tool's log in a file (shown by path when something fails, never on a page)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return write_atomic(cache_dir("server-logs") / f"{name}-{stamp}-{os.getpid()}.log", text)


_TIMINGS = re.compile(r"\[ Prompt: ([\d.]+) t/s \| Generation: ([\d.]+) t/s \]")


def count_tokens(model: ResolvedModel, text: str, build: BuildInfo | None = None) -> int:
    """Number of tokens ``text`` has under the model's own tokenizer (no BOS or other special tokens).

    Loads the vocabulary only and creates no context: a context over a vocabulary-only load has
    no training context length, and llama.cpp would warn about that on every call.
    """
    use_build_for_binding(build)
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    handle = llama_cpp.llama_model_load_from_file(str(model.path).encode(), params)
    if not handle:
        raise UserError(f"Cannot read the vocabulary of {model.path}; download or rebuild it.")
    try:
        vocab, data = llama_cpp.llama_model_get_vocab(handle), text.encode("utf-8")
        # with no room for the tokens, llama_tokenize returns minus the number it needs
        return -llama_cpp.llama_tokenize(vocab, data, len(data), None, 0, False, False)
    finally:
        llama_cpp.llama_model_free(handle)


def require_chat_template(model: ResolvedModel, what: str = "a chat request") -> None:
    """Refuse chat calls on a base model: without a template the prompt format would be a guess."""
    if not model.info.chat_template:
        raise UserError(
            f"{model.path.name} has no chat template, so {what} cannot be formatted for it; "
            "use an instruction-tuned model (e.g. smollm2-135m-instruct) or plain text completion."
        )


# A chat template that passes the text through unchanged: with it, llama-cli's single turn is a plain
# text completion, which is what a base model (no template of its own) can do.
PLAIN_TEMPLATE = "{%- for message in messages -%}{{- message['content'] -}}{%- endfor -%}"


def plain_template_file() -> Path:
    """A file holding :data:`PLAIN_TEMPLATE`, for ``llama-cli --chat-template-file``."""
    path = cache_dir("templates") / "plain.jinja"
    if not path.exists() or path.read_text() != PLAIN_TEMPLATE:
        write_atomic(path, PLAIN_TEMPLATE)
    return path


def cli_command(
    model: ResolvedModel,
    prompt: str,
    n_predict: int = 64,
    *,
    threads: int,
    seed: int = 1,
    system: str | None = None,
    build: BuildInfo | None = None,
) -> list[str]:
    """The llama-cli command of one non-interactive turn (``-st``); a base model gets the pass-through
    template, so its turn is a plain continuation of ``prompt``."""
    build = build or current_build()
    cmd = [
        str(build.tool("llama-cli")),
        "-m",
        str(model.path),
        "-p",
        prompt,
        "-n",
        str(n_predict),
        "-st",
        "--simple-io",
        "-t",
        str(threads),
        "--seed",
        str(seed),
        "--no-warmup",
    ]
    if model.info.chat_template:
        if system:
            cmd += ["-sys", system]
    else:
        if system:
            raise UserError(
                f"{model.path.name} has no chat template, so it has no place for a system prompt; pass system=None."
            )
        cmd += ["--chat-template-file", str(plain_template_file())]
    return cmd


def run_cli(
    model: ResolvedModel,
    prompt: str,
    n_predict: int = 64,
    *,
    threads: int,
    seed: int = 1,
    system: str | None = None,
    timeout: float = 300,
    build: BuildInfo | None = None,
) -> CliResult:
    """One turn through the llama-cli binary, non-interactive, output captured (``-t threads``).

    A chat model answers ``prompt`` as a user message (with ``system`` as the system prompt); a base
    model continues ``prompt`` as plain text (see :func:`cli_command`).
    """
    build = build or current_build()
    cmd = cli_command(model, prompt, n_predict, threads=threads, seed=seed, system=system, build=build)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise UserError(
            f"llama-cli did not finish within {timeout:.0f} s; lower n_predict or check the model."
        ) from exc
    out = proc.stdout
    marker = f"> {prompt}"
    body = out.split(marker, 1)[1] if marker in out else out
    m = _TIMINGS.search(body)
    text = body[: m.start()] if m else body.split("Exiting...", 1)[0]
    text = text.strip("\n")
    if proc.returncode != 0 or not m:
        log = log_file("llama-cli", proc.stderr)
        raise UserError(f"llama-cli exited with code {proc.returncode} without its timing line; read its log {log}.")
    return CliResult(
        command=cmd,
        returncode=proc.returncode,
        text=text.strip(),
        generated_tokens=count_tokens(model, text.strip(), build) if text.strip() else 0,
        prompt_tps=float(m.group(1)),
        generation_tps=float(m.group(2)),
        log=proc.stderr[-4000:],
    )


# =========================================================================== Python binding


def binding_chat(
    model: ResolvedModel,
    messages: list[dict] | None = None,
    max_tokens: int = 64,
    *,
    threads: int,
    seed: int = SEED,
    n_ctx: int = 2048,
    build: BuildInfo | None = None,
) -> ChatResult:
    """The same chat in process: ``llama_cpp.Llama(...).create_chat_completion`` on this build's libllama."""
    require_chat_template(model, "create_chat_completion")
    use_build_for_binding(build)
    from llama_cpp import Llama

    llm = Llama(model_path=str(model.path), n_ctx=n_ctx, n_threads=threads, seed=seed, verbose=False)
    try:
        t0 = time.perf_counter()
        raw = llm.create_chat_completion(
            messages=messages or chapter_messages(), max_tokens=max_tokens, temperature=0.0, seed=seed
        )
        seconds = time.perf_counter() - t0
    finally:
        llm.close()
    return ChatResult.from_response("llama_cpp.Llama", dict(raw), seconds)


def binding_complete(
    model: ResolvedModel,
    prompt: str,
    max_tokens: int = 64,
    *,
    threads: int,
    seed: int = SEED,
    n_ctx: int = 2048,
    build: BuildInfo | None = None,
) -> ChatResult:
    """A plain text completion in process (``Llama(...).create_completion``): what a base model can do."""
    use_build_for_binding(build)
    from llama_cpp import Llama

    llm = Llama(model_path=str(model.path), n_ctx=n_ctx, n_threads=threads, seed=seed, verbose=False)
    try:
        t0 = time.perf_counter()
        raw = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, seed=seed)
        seconds = time.perf_counter() - t0
    finally:
        llm.close()
    return ChatResult.from_response("llama_cpp.Llama", dict(raw), seconds)


def binding_from_pretrained(
    repo_id: str = "bartowski/SmolLM2-135M-Instruct-GGUF", filename: str = "*Q4_K_M.gguf", **kwargs: Any
):
    """``Llama.from_pretrained`` with a fast, one-sentence failure when the Hub is unreachable."""
    if not hub_reachable():  # huggingface_hub would otherwise retry for a long time before failing
        raise UserError(
            f"Llama.from_pretrained({repo_id!r}, {filename!r}) downloads from the Hugging Face Hub, which is not "
            "reachable from this machine; pass a local GGUF file as Llama(model_path=...) instead."
        )
    use_build_for_binding()
    from llama_cpp import Llama

    try:
        return Llama.from_pretrained(repo_id=repo_id, filename=filename, verbose=False, **kwargs)
    except Exception as exc:  # network errors mid-download, missing repo or file
        raise UserError(
            f"Llama.from_pretrained({repo_id!r}, {filename!r}) failed ({type(exc).__name__}: {str(exc)[:120]}); "
            "check the repository and file names or use a local GGUF file."
        ) from exc


# =========================================================================== Ollama and llamafile

NOT_INSTALLED = "not installed on this machine"
NOT_MEASURED = "not measured"


@dataclass
class ToolStatus:
    tool: str
    present: bool
    where: str
    version: str = ""
    models: list[str] = field(default_factory=list)
    note: str = ""


def ollama_url(host: str | None = None) -> str:
    """Ollama's address as the CLI reads it: OLLAMA_HOST (host, host:port or URL), else 127.0.0.1:11434."""
    host = host or os.environ.get("OLLAMA_HOST") or "127.0.0.1:11434"
    if "://" not in host:
        host = "http://" + host
    scheme, rest = host.split("://", 1)
    hostport = rest.rstrip("/")
    if ":" not in hostport.rsplit("]", 1)[-1]:
        hostport += ":11434"
    if hostport.startswith("0.0.0.0"):  # a bind-all address; the server is reached on loopback
        hostport = LOOPBACK + hostport[len("0.0.0.0") :]
    return f"{scheme}://{hostport}"


def detect_ollama(host: str | None = None, timeout: float = 2.0) -> ToolStatus:
    """Ask a running Ollama server for its version and models; never assumes one is there."""
    import requests

    url = ollama_url(host)
    cli = shutil.which("ollama")
    try:
        r = session().get(url + "/api/version", timeout=timeout)
        r.raise_for_status()
        version = r.json().get("version", "")
    except (requests.RequestException, ValueError):
        where = f"no server at {url}" + (f"; CLI at {cli}" if cli else "; no `ollama` on PATH")
        return ToolStatus("Ollama", False, where, note=NOT_INSTALLED if not cli else "installed, server not running")
    try:
        tags = session().get(url + "/api/tags", timeout=timeout).json().get("models", [])
        models = [m["name"] for m in sorted(tags, key=lambda m: m.get("size", 0))]
    except (requests.RequestException, ValueError, KeyError):
        models = []
    return ToolStatus("Ollama", True, url, version=version, models=models, note="" if models else "no model pulled")


def ollama_endpoint(status: ToolStatus, model: str | None = None, timeout: float = 120.0) -> Endpoint:
    """Ollama's OpenAI-compatible endpoint, on the smallest pulled model unless one is named."""
    if not status.present:
        raise UserError(f"Ollama is {NOT_INSTALLED} (or not running); start `ollama serve` or set OLLAMA_HOST.")
    if not (model or status.models):
        raise UserError("The Ollama server has no model; pull one with `ollama pull smollm2:135m` and rerun.")
    return Endpoint(base_url=status.where, model=model or status.models[0], name="Ollama", timeout=timeout)


def detect_llamafile(path: str | os.PathLike | None) -> ToolStatus:
    """A llamafile executable given by path (there is no standard install location to search)."""
    if not path:
        return ToolStatus("llamafile", False, "no path given", note=NOT_INSTALLED)
    p = Path(path).expanduser()
    if not p.is_file():
        return ToolStatus("llamafile", False, f"{p} does not exist", note=NOT_INSTALLED)
    if not os.access(p, os.X_OK):
        return ToolStatus("llamafile", False, f"{p} is not executable", note="run chmod +x on it")
    try:
        out = subprocess.run([str(p), "--version"], capture_output=True, text=True, timeout=20)
        version = (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else ""
    except (OSError, subprocess.TimeoutExpired) as exc:
        return ToolStatus("llamafile", False, str(p), note=f"does not run here ({type(exc).__name__})")
    return ToolStatus("llamafile", True, str(p), version=version)


class LlamafileServer(ManagedServer):
    """A llamafile run as a server (its embedded weights, or ``model`` passed with -m)."""

    name = "llamafile"

    def __init__(self, path: str | os.PathLike, model: ResolvedModel | None = None, *, threads: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.path = Path(path)
        self.model = model
        self.threads = threads

    @property
    def model_name(self) -> str:
        return self.model.path.stem if self.model else self.path.stem

    def command(self, port: int) -> list[str]:
        cmd = [str(self.path), "--server", "--nobrowser", "--host", self.host, "--port", str(port)]
        cmd += ["-t", str(self.threads)]
        if self.model:
            cmd += ["-m", str(self.model.path)]
        return cmd


COMPARISON = {
    "llama.cpp": {
        "installation": "build from source with CMake (here), or release binaries / package managers",
        "model management": "you point it at a GGUF file (-m); -hf fetches one from Hugging Face",
        "containerization": "official server images; none needed for a local binary",
        "portability": "C/C++ on Linux, macOS, Windows; CPU and many GPU back ends",
    },
    "Ollama": {
        "installation": "installer or package that runs a background daemon",
        "model management": "`ollama pull name:tag` from its library; Modelfile imports a GGUF",
        "containerization": "official ollama/ollama image",
        "portability": "Linux, macOS, Windows; one daemon serving many models",
    },
    "llamafile": {
        "installation": "download one file and make it executable",
        "model management": "weights embedded in the executable, or -m with a GGUF",
        "containerization": "rarely needed: the single file is the deployment",
        "portability": "one Actually Portable Executable for Linux, macOS, Windows, BSD (x86-64, ARM64)",
    },
}


def comparison_table(measured: dict[str, dict] | None = None):
    """The qualitative comparison, extended with what was measured here ("not measured" elsewhere)."""
    import pandas as pd

    measured = measured or {}
    cols = list(dict.fromkeys(k for m in measured.values() for k in m))  # in the order first given
    rows = []
    for tool, facts in COMPARISON.items():
        row = {"tool": tool, **facts}
        for c in cols:
            row[c] = measured.get(tool, {}).get(c, NOT_MEASURED)
        rows.append(row)
    return pd.DataFrame(rows).set_index("tool")
