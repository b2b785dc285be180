"""The importance matrix: ``llama-imatrix`` on a calibration text that the study never evaluates.

An importance matrix records, for every weight matrix, the mean square of the activations
that multiply each of its columns over a calibration text; ``llama-quantize --imatrix`` then
spends its rounding error where the activations are small (llama.cpp PRs 4861 and 4930).

The calibration text must be disjoint from the evaluated prompts, or the gain would be
measured on the text the quantization was tuned for. It is taken from the same source as the
prompts, starting right after the last text the prompts use, leaving out any text equal to a
prompt, until it holds the requested number of tokens; llama-imatrix processes it in chunks of
``n_ctx`` tokens (BOS first, as llama-perplexity does). Which texts and how many tokens are
recorded in :class:`Calibration`.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import corpus, gguf_file, progress
from .build import BuildInfo, current_build, use_build_for_binding
from .errors import UserError
from .models import ResolvedModel, sha256_file
from .paths import cache_dir, code_key, content_key, write_atomic

N_CTX = 512  # llama-imatrix's chunk, as llama-perplexity's: the context the published imatrices use


@dataclass(frozen=True)
class Calibration:
    """The calibration text and where it comes from."""

    text: str
    source: str  # the corpus source's description
    first_index: int  # index in the source of the first text used (0-based)
    last_index: int  # ... and of the last (the chunks may end inside it)
    n_texts: int
    n_tokens: int  # tokens llama-imatrix processes: n_chunks x n_ctx
    n_chunks: int
    n_ctx: int
    prompts_last_index: int  # the last text the evaluated prompts use: all calibration texts lie after it

    def describe(self) -> str:
        return (
            f"the first {self.n_tokens:,} tokens ({self.n_chunks} chunks of {self.n_ctx}) of texts "
            f"#{self.first_index + 1}–#{self.last_index + 1} of {self.source}, after the "
            f"{self.prompts_last_index + 1} texts the evaluated prompts are drawn from; no evaluated text is among them"
        )


def _source_name(prompts: corpus.Prompts) -> str:
    return "wikitext" if prompts.source.name == corpus.WIKITEXT.name else "offline"


def _last_prompt_index(texts: list[str], prompts: corpus.Prompts) -> int:
    """Index in the source of the last text the prompts take (their selection rule, replayed)."""
    taken = [i for i, t in enumerate(texts) if t and t.strip() and prompts.min_length < len(t) < prompts.max_length][
        : prompts.num_prompts
    ]
    if [texts[i] for i in taken] != list(prompts.texts):
        raise UserError(
            "The prompts do not come from this corpus in its order; rebuild them (python -m localllms prompts)."
        )
    return taken[-1]


def calibration(
    prompts: corpus.Prompts, model: ResolvedModel, n_tokens: int, n_ctx: int = N_CTX, build: BuildInfo | None = None
) -> Calibration:
    """The texts after the prompts' in the same source, enough for ``n_tokens`` under ``model``'s tokenizer."""
    if n_tokens < n_ctx:
        raise UserError(f"IMATRIX_TOKENS ({n_tokens}) must be at least one chunk of {n_ctx} tokens.")
    texts, _ = corpus.load_texts(_source_name(prompts))
    last_prompt = _last_prompt_index(texts, prompts)
    banned = set(prompts.texts)
    n_chunks = n_tokens // n_ctx
    needed = n_chunks * n_ctx
    file_tokens = max(needed, 2 * n_ctx)  # llama-imatrix refuses a file of fewer than two contexts
    tokenize = _tokenizer(model, build)
    chosen: list[int] = []
    count = 1  # llama-imatrix puts BOS first
    for i in range(last_prompt + 1, len(texts)):
        t = texts[i]
        if not t or not t.strip() or t in banned:
            continue
        chosen.append(i)
        count += tokenize(t.replace("\n", " ") + "\n")
        if count >= file_tokens + 1:
            break
    if count < file_tokens + 1:
        raise UserError(f"The corpus holds fewer than {needed} tokens after the prompts; lower IMATRIX_TOKENS.")
    text = "\n".join(texts[i].replace("\n", " ") for i in chosen) + "\n"
    return Calibration(
        text=text,
        source=prompts.source.description,
        first_index=chosen[0],
        last_index=chosen[-1],
        n_texts=len(chosen),
        n_tokens=needed,
        n_chunks=n_chunks,
        n_ctx=n_ctx,
        prompts_last_index=last_prompt,
    )


def _tokenizer(model: ResolvedModel, build: BuildInfo | None):
    """Token count of a text under the model's vocabulary (loaded alone: no weights)."""
    use_build_for_binding(build)
    from llama_cpp import Llama

    llm = Llama(model_path=str(model.path), vocab_only=True, verbose=False)
    return lambda text: len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))


@dataclass(frozen=True)
class Imatrix:
    """An importance matrix file and what it was computed from."""

    path: Path
    sha256: str
    model_sha256: str
    calibration: Calibration
    seconds: float  # of the run that computed it (a cached matrix keeps its first run's time)
    entries: int  # weight matrices it covers


def compute(
    model: ResolvedModel,
    cal: Calibration,
    threads: int,
    build: BuildInfo | None = None,
    progress_bars: bool = True,
) -> Imatrix:
    """Run llama-imatrix on ``model`` over the calibration text, or reuse the cached result.

    Cached by the code, the build, the model and the calibration text; the file is written
    beside its final name and renamed when complete, so an interrupt leaves nothing half done.
    """
    build = build or current_build()
    key = content_key(code_key("imatrix"), build.key, model.sha256, cal.text, cal.n_ctx, cal.n_chunks)
    out_dir = cache_dir("imatrix")
    dst, meta = out_dir / f"{key}.gguf", out_dir / f"{key}.json"
    if dst.exists() and meta.exists():
        saved = json.loads(meta.read_text())
        return Imatrix(dst, saved["sha256"], model.sha256, cal, saved["seconds"], saved["entries"])
    text_file = write_atomic(out_dir / f"{key}.txt", cal.text)
    partial = out_dir / f".{key}.partial.gguf"  # .gguf: llama-imatrix picks its format by the extension
    cmd = [str(build.tool("llama-imatrix")), "-m", str(model.path), "-f", str(text_file), "-o", str(partial),
           "-c", str(cal.n_ctx), "-b", str(cal.n_ctx), "--chunks", str(cal.n_chunks), "-t", str(threads),
           "--no-ppl", "--output-frequency", str(cal.n_chunks + 1)]  # fmt: skip
    progress.note(f"llama-imatrix: {cal.n_chunks} chunks of {cal.n_ctx} tokens on {model.display}")
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    text_file.unlink(missing_ok=True)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or not partial.exists():
        partial.unlink(missing_ok=True)
        raise UserError(f"llama-imatrix failed (exit {proc.returncode}):\n" + "\n".join(out.strip().splitlines()[-8:]))
    chunks = re.search(r"computing over (\d+) chunks", out)
    if not chunks or int(chunks.group(1)) != cal.n_chunks:
        partial.unlink(missing_ok=True)
        raise UserError(f"llama-imatrix processed {chunks.group(1) if chunks else 'no'} chunks, not {cal.n_chunks}.")
    entries = _entries(partial)
    partial.replace(dst)
    sha = sha256_file(dst)
    write_atomic(meta, json.dumps({"sha256": sha, "seconds": seconds, "entries": entries, "calibration": asdict(cal)}))
    return Imatrix(dst, sha, model.sha256, cal, seconds, entries)


def _entries(path: Path) -> int:
    """Weight matrices covered by an imatrix GGUF file (one ``.in_sum2`` tensor each)."""
    return sum(1 for t in gguf_file.read(path).tensors if t.name.endswith(".in_sum2"))
