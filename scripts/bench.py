"""How close the book runs to its limits: `make bench`.

Measures, in one run on this machine, and prints each figure as a ratio with the raw numbers
beside it and the target it is held to; writes the same rows, with the run's provenance, to
_build/results/bench.json, never to a tracked file: `make record` copies it to
data/results/bench.json, the run the issue notes report (a run of some items replaces only
their rows, starting from the committed file, and the file keeps the run each row came from). A
benchmark, not a test: a missed target is reported, not failed on. Run it on a quiet machine.

    .venv/bin/python scripts/bench.py                      # every item (over an hour: the evaluator item
                                                          # took 1,697 s on 2026-12-07, the rebuild item
                                                          # builds every notebook cold, about 2,000 s)
    .venv/bin/python scripts/bench.py --items roofline --runs 3
    items: evaluator, roofline, storage, rebuild, variant, setup, logits
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from localllms import bandwidth, corpus, defaults, evaluate, gguf_file, provenance
from localllms.build import current_build, use_build_for_binding
from localllms.models import resolve
from localllms.paths import OUTPUT_RESULTS_DIR, PROJECT_ROOT, RESULTS_DIR, cache_dir, write_atomic
from localllms.quantize import make_reference, quantize
from localllms.selection.published import load_published, tensors
from localllms.study.crosscheck import run_llama_perplexity_many

ROWS: list[dict] = []
# rows "1." ... "7.", in this order
ITEMS = ("evaluator", "roofline", "storage", "rebuild", "variant", "setup", "logits")


def ratio(name: str, num: float, den: float, what: str, target: str, **measured: object) -> float:
    r = num / den if den else float("nan")
    ROWS.append({"name": name, "ratio": round(r, 4), "what": what, "target": target, "measured": measured})
    print(f"{name}: {r:.3f}   ({what})   target {target}", flush=True)
    return r


@contextmanager
def empty_cache(*parts: str):
    """A fresh, empty cache for one stage (its results are not reused from earlier runs)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    old = os.environ.get("LOCALLLMS_CACHE")
    os.environ["LOCALLLMS_CACHE"] = str(tmp)
    try:
        yield tmp
    finally:
        if old is None:
            del os.environ["LOCALLLMS_CACHE"]
        else:
            os.environ["LOCALLLMS_CACHE"] = old
        shutil.rmtree(tmp, ignore_errors=True)


def evaluator_speed(ref, variants, prompts, threads: int, build, rounds: int = 3) -> int:
    """1. The default study's whole quality pass (reference and every variant), ours against
    llama-perplexity doing the same with its base file, and against llama-bench's prompt processing
    (``-p 512 -n 0``, the same threads) on the same files, which asks for the last position's logits
    only. Beside them, the evaluator's own decodes twice with nothing computed on the logits: asking
    for every scored position's logits (the ceiling of this evaluator), and for each stream's last
    position only (as pp512 does: what the output layer's rows cost is the difference). All run
    interleaved, in ``rounds`` rounds (the order turned each round); each ratio is the median of the
    per-round ratios, with every round's figures in the JSON. Returns the tool's base-file size."""
    from localllms.llama_bench import llama_bench

    text = "\n".join(p.replace("\n", " ") for p in prompts) + "\n"
    files = [ref, *variants]
    n_var = len(variants)
    token_lists, n_vocab = evaluate.tokenize(ref, prompts, build)
    decoded_ours = len(files) * sum(len(t) for t in token_lists)
    runs: dict[str, list] = {"ours_s": [], "tool_s": [], "pp512": [], "decode_s": [], "last_s": []}

    def ours() -> None:
        nonlocal scored_ours
        with empty_cache():
            started = time.perf_counter()
            ev = evaluate.evaluate_prompts(ref, files, prompts, threads, build, progress_bars=False)
            runs["ours_s"].append(time.perf_counter() - started)
        scored_ours = n_var * int(ev.summary(variants[0].display)["n_tokens"])

    def tool() -> None:
        nonlocal tool_result
        work = Path(tempfile.mkdtemp(prefix="bench-ppl-"))
        (work / "prompts.txt").write_text(text)
        started = time.perf_counter()
        tool_result = run_llama_perplexity_many(ref, variants, work / "prompts.txt", 512, threads, work, build)
        runs["tool_s"].append(time.perf_counter() - started)
        shutil.rmtree(work, ignore_errors=True)

    def ceiling() -> None:  # the evaluator's own decodes, in its windows, with nothing computed on the logits
        started = time.perf_counter()
        decode_only(files, token_lists, n_vocab, threads, build)
        runs["decode_s"].append(time.perf_counter() - started)

    def last_rows() -> None:  # the same decodes, each stream asking for its last position's logits only
        started = time.perf_counter()
        decode_only(files, token_lists, n_vocab, threads, build, _LastRowsOnly)
        runs["last_s"].append(time.perf_counter() - started)

    def pp512() -> None:  # tokens/s of each file; the files together as the evaluator decodes them
        tps = [llama_bench(m, threads, 3, 512, 0, build, use_cache=False).pp_tps for m in files]
        runs["pp512"].append(len(tps) / sum(1 / t for t in tps))

    scored_ours, tool_result = 0, None
    steps = [ours, tool, ceiling, last_rows, pp512]
    for k in range(rounds):
        for step in steps if k % 2 == 0 else steps[::-1]:
            step()
        print(f"   round {k + 1}: ours {runs['ours_s'][-1]:.0f} s, llama-perplexity {runs['tool_s'][-1]:.0f} s, "
              f"decodes alone {runs['decode_s'][-1]:.0f} s (last rows only {runs['last_s'][-1]:.0f} s), "
              f"llama-bench pp512 {runs['pp512'][-1]:.0f} tok/s",
              flush=True)  # fmt: skip
    ours_s, tool_s = np.array(runs["ours_s"]), np.array(runs["tool_s"])
    pp, decode_s, last_s = np.array(runs["pp512"]), np.array(runs["decode_s"]), np.array(runs["last_s"])
    chunks = tool_result[0].n_chunks
    scored_tool, decoded_tool = n_var * chunks * (512 - 1 - 256), len(files) * chunks * 512
    med = float(np.median(ours_s))
    per_round = {"ours_seconds": [round(x, 1) for x in ours_s], "tool_seconds": [round(x, 1) for x in tool_s],
                 "pp512_tps": [round(x, 1) for x in pp], "decode_only_seconds": [round(x, 1) for x in decode_s],
                 "last_rows_only_seconds": [round(x, 1) for x in last_s], "rounds": rounds}  # fmt: skip
    ratio("1. evaluator speed (scored tokens/s)", float(np.median(scored_ours / ours_s / (scored_tool / tool_s))), 1.0,
          f"median over {rounds} rounds: ours {scored_ours / med:.0f} / llama-perplexity "
          f"{scored_tool / np.median(tool_s):.0f} scored tok/s", ">= 1.2", ours_scored=scored_ours,
          tool_scored=scored_tool, variants=n_var, **per_round)  # fmt: skip
    ratio("1b. evaluator speed (decoded tokens/s)", float(np.median(decoded_ours / ours_s / (decoded_tool / tool_s))), 1.0,
          f"ours {decoded_ours / med:.0f} / llama-perplexity {decoded_tool / np.median(tool_s):.0f} decoded tok/s",
          "(printed)", ours_decoded=decoded_ours, tool_decoded=decoded_tool)  # fmt: skip
    ratio("1c. quality pass wall time (tool / ours)", float(np.median(tool_s / ours_s)), 1.0,
          f"llama-perplexity {np.median(tool_s):.0f} s / ours {med:.0f} s", "(printed)")  # fmt: skip
    ratio("1d. evaluator decoding vs llama-bench pp512 (tokens/s)", float(np.median(decoded_ours / ours_s / pp)), 1.0,
          f"ours {decoded_ours / med:.0f} decoded tok/s / llama-bench pp512 {np.median(pp):.0f} tok/s on the same "
          f"{len(files)} files, {threads} threads", ">= 0.9", pp512_tps_median=round(float(np.median(pp)), 1))  # fmt: skip
    # llama-bench's prompt test asks for the logits of the last position only; an evaluator needs them
    # at every position, so each token also runs the output layer (a vocabulary-wide matrix). The same
    # decodes with nothing computed on their logits are the ceiling of any evaluator built on them.
    ratio("1e. decoding every position's logits vs llama-bench pp512 (tokens/s)",
          float(np.median(decoded_ours / decode_s / pp)), 1.0,
          f"the evaluator's decodes alone {decoded_ours / np.median(decode_s):.0f} tok/s / llama-bench pp512 "
          f"{np.median(pp):.0f} tok/s", "(printed: the ceiling of 1d)")  # fmt: skip
    ratio("1f. evaluator vs its own decodes alone (tokens/s)", float(np.median(decode_s / ours_s)), 1.0,
          f"ours {decoded_ours / med:.0f} / decodes alone {decoded_ours / np.median(decode_s):.0f} decoded tok/s",
          ">= 0.9")  # fmt: skip
    # Where 1e's gap to pp512 goes: the same decodes asking for each stream's last row only (as pp512
    # does) leave out the output layer's rows (and the last block's feed-forward on them: llama.cpp
    # runs it on the rows asked for only); the arithmetic beside it is the output matrix's share of a
    # token's weight multiply-adds, read from the file's tensor shapes.
    ratio("1g. the same decodes, last row of each stream only, vs llama-bench pp512 (tokens/s)",
          float(np.median(decoded_ours / last_s / pp)), 1.0,
          f"last rows only {decoded_ours / np.median(last_s):.0f} tok/s / llama-bench pp512 {np.median(pp):.0f} tok/s",
          "(printed: the decodes' batches and padding against pp512's)")  # fmt: skip
    head, body = file_output_layer_share(ref.path)
    ceilings = published_ceilings()
    ratio("1h. every position's logits vs the last row only (tokens/s)", float(np.median(last_s / decode_s)), 1.0,
          f"decodes alone {decoded_ours / np.median(decode_s):.0f} / last rows only "
          f"{decoded_ours / np.median(last_s):.0f} tok/s; the output matrix is {head / (head + body):.1%} of a "
          f"token's weight multiply-adds ({head / 1e6:.1f} M of {(head + body) / 1e6:.1f} M), so by arithmetic "
          f"{arithmetic_ceiling(head, body):.3f}", "(printed: the output layer's cost)", output_matrix_weights=head,
          block_weights=body, arithmetic_ceiling=round(arithmetic_ceiling(head, body), 3),
          published_arithmetic_ceilings=ceilings)  # fmt: skip
    print("   the same arithmetic for the published architectures (data/reference/open_model_architectures.csv): "
          + ", ".join(f"{name} {c:.3f}" for name, c in ceilings.items()), flush=True)  # fmt: skip
    return tool_result[0].base_logits_bytes


class _LastRowsOnly(evaluate.LogitsModel):
    """A measurement-only model: each decode as the evaluator makes it (same tokens, streams and
    batch), asking for the logits of each stream's last position only, as llama-bench's pp512 does."""

    def _decode(self, n_tokens: int, n_rows: int, what: str) -> np.ndarray:
        seq = self._seq[:n_tokens]
        ends = np.flatnonzero(np.r_[seq[1:] != seq[:-1], True])
        self._want[:n_tokens] = 0
        self._want[ends] = 1
        return super()._decode(n_tokens, len(ends), what)


def output_layer_share(shapes: Sequence[tuple[str, tuple[int, ...]]]) -> tuple[int, int]:
    """Weights of the output matrix (the token embedding when it is tied) and of the blocks' matrices,
    from a model's tensor names and shapes: per token, a decode multiplies by each once (the
    embedding lookup is not a product). Left out: attention's own products, which grow with the
    context, and that llama.cpp runs the last block's feed-forward on the asked rows only."""
    mats = {name: math.prod(shape) for name, shape in shapes if len(shape) >= 2}
    head = mats.get("output.weight", mats["token_embd.weight"])
    return head, sum(n for name, n in mats.items() if name not in ("output.weight", "token_embd.weight"))


def arithmetic_ceiling(head: int, body: int) -> float:
    """The share of a token's weight multiply-adds left when the output layer (``head`` weights)
    runs at every position: a decode-everything evaluator's speed against pp512, by arithmetic."""
    return body / (head + body)


def file_output_layer_share(path: Path) -> tuple[int, int]:
    """:func:`output_layer_share` of a GGUF file, from its tensor table."""
    return output_layer_share([(t.name, t.shape) for t in gguf_file.read(path).tensors])


def published_ceilings() -> dict[str, float]:
    """The same arithmetic for each model of the published-architectures table (the shapes
    llama.cpp's converter writes for it): the share of a token's products left when the output
    layer runs at every position."""
    out = {}
    for hp in load_published():
        head, body = output_layer_share(tensors(hp))
        out[hp.model] = round(arithmetic_ceiling(head, body), 3)
    return out


# Row 1h's ceiling at other shapes, all synthetic Q4_K_M files (speed only: no logit is read, so random
# weights serve as well as real ones): the catalog's two models' twins, then Qwen2.5-0.5B and the sizes
# chapter's 1B and 7B.
LOGITS_SHAPES = ("synth:smollm2-135m:Q4_K_M", "synth:gemma-3-270m:Q4_K_M", "synth:qwen2.5-0.5b:Q4_K_M",
                 "synth:llama-3.2-1b:Q4_K_M", "synth:qwen2.5-7b:Q4_K_M")  # fmt: skip


class OneDecode:
    """One sequence of ``n`` tokens decoded in one micro-batch, as llama-bench's pp512 decodes it
    (a fresh context each time, the same threads and flash attention as the evaluator), asking for
    every position's logits or for the last position's only. Speed only: the token ids are a fixed
    spread over the vocabulary and no logit is read."""

    def __init__(self, model, n: int, threads: int) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self._lc, self.n = llama_cpp, n
        self._model = evaluate._load(model.path)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = n
        params.n_threads = params.n_threads_batch = threads
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self._ctx = _internals.LlamaContext(model=self._model, params=params, verbose=False)
        self._batch = _internals.LlamaBatch(n_tokens=n, embd=0, n_seq_max=1, verbose=False)
        b, n_vocab = self._batch.batch, llama_cpp.llama_vocab_n_tokens(self._model.vocab)
        for i in range(n):
            b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0] = (i * 7919 + 13) % n_vocab, i, 1, 0
        b.n_tokens = n
        self.seconds(every_row=False)  # a warm-up decode, as llama-bench makes one

    def seconds(self, every_row: bool) -> float:
        lc, ctx, b = self._lc, self._ctx.ctx, self._batch.batch
        for i in range(self.n):
            b.logits[i] = every_row or i == self.n - 1
        lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
        started = time.perf_counter()
        if lc.llama_decode(ctx, b) != 0:
            raise RuntimeError("llama_decode failed")
        lc.llama_synchronize(ctx)
        return time.perf_counter() - started

    def has_row(self, i: int) -> bool:
        """Whether the last decode computed position ``i``'s logits."""
        return bool(self._lc.llama_get_logits_ith(self._ctx.ctx, i))

    def close(self) -> None:
        self._batch.close()
        self._ctx.close()
        self._model.close()


def logits_cost(threads: int, build, rounds: int = 3) -> None:
    """7. What asking for every position's logits costs a decode, at several model shapes: one
    512-token decode asking for every row against the same asking for the last row only, and
    llama-bench's pp512 on the file, interleaved in ``rounds`` rounds; beside each ratio, the
    arithmetic of row 1h (the output matrix's share of a token's weight multiply-adds)."""
    from localllms.llama_bench import llama_bench

    files = [resolve(spec) for spec in LOGITS_SHAPES]
    runs = {m.spec: {"every_s": [], "last_s": [], "pp512": []} for m in files}
    for k in range(rounds):
        for m in files if k % 2 == 0 else files[::-1]:
            r, one = runs[m.spec], OneDecode(m, 512, threads)
            try:
                for every in (True, False) if k % 2 == 0 else (False, True):
                    r["every_s" if every else "last_s"].append(one.seconds(every))
            finally:
                one.close()
            r["pp512"].append(llama_bench(m, threads, 1, 512, 0, build, use_cache=False).pp_tps)
        print(f"   round {k + 1}: " + ", ".join(f"{m.spec.split(':')[1]} {runs[m.spec]['every_s'][-1]:.2f} / "
              f"{runs[m.spec]['last_s'][-1]:.2f} s" for m in files), flush=True)  # fmt: skip
    for m in files:
        r = runs[m.spec]
        every, last, pp = np.array(r["every_s"]), np.array(r["last_s"]), np.array(r["pp512"])
        head, body = file_output_layer_share(m.path)
        ratio(f"7. every position's logits vs the last row only, {m.spec}", float(np.median(last / every)), 1.0,
              f"512 tokens in {np.median(every):.2f} s / {np.median(last):.2f} s; by arithmetic "
              f"{arithmetic_ceiling(head, body):.3f} (output matrix {head / 1e6:.1f} M of {(head + body) / 1e6:.1f} M); "
              f"last row only at {np.median(512 / last / pp):.2f}x llama-bench pp512 ({np.median(pp):.1f} tok/s)",
              "(printed: at or above 0.9 only where the output layer is a tenth of the products or less)",
              every_row_seconds=[round(x, 3) for x in every], last_row_seconds=[round(x, 3) for x in last],
              pp512_tps=[round(x, 2) for x in pp], arithmetic_ceiling=round(arithmetic_ceiling(head, body), 3),
              output_matrix_weights=head, block_weights=body)  # fmt: skip


def decode_only(files, token_lists, n_vocab: int, threads: int, build, model_class=evaluate.LogitsModel) -> None:
    """Every decode :func:`evaluate.evaluate_prompts` makes for these files and prompts (the same
    windows, streams and rows asked for: ``evaluate.decode_layout``), with nothing computed on the logits."""
    lengths = [len(t) for t in token_lists]
    by_four = evaluate.shares_by_four({m.path for m in files}, build)
    layout = evaluate.decode_layout(lengths, range(len(lengths)), n_vocab, by_four)
    models = [model_class(m, layout.stream, threads, build, "f16", layout.n_seq, layout.n_ctx) for m in files]
    try:
        for window in layout.windows:
            for lm in models:
                for _ in lm.scored_rows(token_lists, window):
                    pass
    finally:
        for lm in models:
            lm.close()


def roofline(models: dict, threads: int, build, runs: int) -> None:
    """2. Generation's read rate (tok/s x bytes per token) over the read ceiling of the model's own
    file, measured in the seconds around each generation run; the median of the per-run ratios."""
    for run in range(1, runs + 1):
        lines = bandwidth.generation_roofline(list(models.values()), threads, build=build)
        for label, m in models.items():
            r = lines[m.display]
            lo, hi = r.ratio_spread
            ceiling, achieved = float(np.median(r.ceiling_gbs)), float(np.median(r.achieved_gbs))
            ratio(f"2. roofline {label} (run {run})", r.ratio, 1.0,
                  f"median of {len(r.ratios)} paired runs (p10 {lo:.3f}, p90 {hi:.3f}): "
                  f"{np.median(r.tg_tps):.1f} tok/s x {r.bytes_per_token / 1e6:.1f} MB = {achieved:.2f} GB/s; "
                  f"ceiling around them {ceiling:.2f} GB/s (range {min(r.ceiling_gbs):.1f}-{max(r.ceiling_gbs):.1f})",
                  "three runs within ±10 %", run=run, ratio_p10=round(lo, 4), ratio_p90=round(hi, 4),
                  tg_tps=[round(t, 2) for t in r.tg_tps], ceiling_gbs=[round(c, 2) for c in r.ceiling_gbs],
                  bytes_per_token=r.bytes_per_token, achieved_gbs=round(achieved, 3),
                  ceiling_median_gbs=round(ceiling, 3))  # fmt: skip
    for label in models:
        rows = [r for r in ROWS if r["name"].startswith(f"2. roofline {label} ")]
        if len(rows) > 1:
            vals = [r["ratio"] for r in rows]
            ratio(f"2b. roofline {label}: spread over {len(vals)} runs (max / min)", max(vals), min(vals),
                  ", ".join(f"{v:.3f}" for v in vals), "<= 1.2 (±10 %)")  # fmt: skip
            # which side moved: generation's own read rate, or the ceiling it is set against
            for part, key in (("generation's read rate", "achieved_gbs"), ("ceiling", "ceiling_median_gbs")):
                vals = [r["measured"][key] for r in rows]
                ratio(f"2c. roofline {label}: {part} over {len(vals)} runs (max / min)", max(vals), min(vals),
                      ", ".join(f"{v:.2f}" for v in vals) + " GB/s", "(printed)")  # fmt: skip


def kl_storage(ref, var, prompts, threads: int, tool_bytes: int, build) -> None:
    """3. Disk our KL path writes, over llama-perplexity's base-logits file for the same text."""
    with empty_cache() as tmp:
        evaluate.evaluate_prompts(ref, [var], prompts, threads, build, progress_bars=False)
        written = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    ratio("3. KL storage", written, tool_bytes, f"ours {written / 2**20:.2f} MiB / base-logits file "
          f"{tool_bytes / 2**20:.1f} MiB", "<= 0.02")  # fmt: skip


# Seconds each chapter may take in a cold `make book` (llama.cpp build reused) on a quiet 2-core
# machine: their sum, plus pip (~1.5 min), the compile (~5.5 min), the web UI (~1.5 min) and the
# HTML (~1 min), is the book's cold time a reader waits for. Item 4 prints each chapter's measured
# seconds beside its budget, so a change that blows one shows up as a number.
BUDGETS = {"model_selection": 150, "serving": 300, "quantization": 840, "comparing_models": 150, "model_sizes": 660}


def chapter_budgets(tree: Path) -> None:
    """4d. Each chapter's seconds in the cold run just made in ``tree``, against its budget."""
    for name, budget in BUDGETS.items():
        try:
            meta = json.loads((tree / "_build" / "executed" / f"{name}.ipynb").read_text())["metadata"]["localllms"]
        except (OSError, ValueError, KeyError):
            print(f"   {name}: not executed in the cold run", flush=True)
            continue
        seconds = float(meta["seconds"])
        ratio(f"4d. {name}, cold", seconds, budget, f"{seconds:.0f} s / budget {budget} s", "<= 1.0")
        # where the chapter's time went: each progress stage (its bar), in order. Bars can nest (a
        # sweep's speed rounds inside the sweep, a file written inside "will it fit"), so they are
        # not summed; the cells' own seconds are in the executed notebook (papermill's metadata).
        for st in meta.get("stages", []):
            print(f"      {st['stage']}: {st['seconds']:.0f} s", flush=True)


def incremental_rebuild() -> None:
    """4. `make book` after nothing changed, after a prose change and after a code change in one
    notebook, against a cold one (a copy of this tree, an empty cache but for the llama.cpp build)."""
    info = current_build()
    tree = Path(tempfile.mkdtemp(prefix="bench-tree-"))
    ignore = shutil.ignore_patterns(".venv", "_build", ".git", "__pycache__", "*.egg-info", ".pytest_cache",
                                    "*.duckdb", "*.duckdb.wal")  # the store too: a cold run starts without rows  # fmt: skip
    shutil.copytree(PROJECT_ROOT, tree, ignore=ignore, dirs_exist_ok=True)
    env = {**os.environ, "LOCALLLMS_CACHE": tempfile.mkdtemp(prefix="bench-cache-"), "PYTHONPATH": str(tree),
           "LOCALLLMS_BUILD_INFO": str(cache_dir("llama.cpp") / info.key / "build-info.json")}  # fmt: skip
    env.pop("LOCALLLMS_PROGRESS", None)
    # `make book` minus the venv and the compile: the web UI build of its setup (cached after the
    # cold run), then the two commands it runs after setup
    cmds = [[sys.executable, "-m", "localllms", cmd] for cmd in ("build-ui", "run-notebooks", "build-html")]

    def timed(label: str) -> float:
        started = time.perf_counter()
        for cmd in cmds:
            proc = subprocess.run(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{label}: {' '.join(cmd[1:])} failed:\n{proc.stderr[-3000:]}")
        seconds = time.perf_counter() - started
        print(f"   {label}: {seconds:.0f} s", flush=True)
        return seconds

    cold = timed("cold")
    chapter_budgets(tree)
    warm = timed("nothing changed")
    nb = tree / "notebooks" / "serving.ipynb"
    doc = json.loads(nb.read_text())
    prose = next(c for c in doc["cells"] if c["cell_type"] == "markdown")
    prose["source"] = ["".join(prose["source"]) + "\n\nA sentence added by make bench.\n"]
    nb.write_text(json.dumps(doc, indent=1))
    text = timed("one notebook's prose changed")
    code = next(
        c for c in doc["cells"] if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", [])
    )
    code["source"] = ["# a comment added by make bench\n", *code["source"]]
    nb.write_text(json.dumps(doc, indent=1))
    one = timed("one notebook's code changed")
    ratio("4. no-change make book", warm, cold, f"unchanged {warm:.0f} s / cold {cold:.0f} s", "<= 0.05")
    ratio("4b. prose change in one notebook", text, cold, f"{text:.0f} s / cold {cold:.0f} s", "(printed)")
    ratio("4c. code change in one notebook (serving)", one, cold, f"{one:.0f} s / cold {cold:.0f} s",
          "only that notebook executes")  # fmt: skip
    shutil.rmtree(tree, ignore_errors=True)
    shutil.rmtree(env["LOCALLLMS_CACHE"], ignore_errors=True)


def one_more_variant(ref, prompts, threads: int, build) -> None:
    """5. Adding one quant type recomputes that variant only."""
    with empty_cache():
        variants = [quantize(ref, q, build) for q in ("Q4_K_M", "Q8_0")]
        evaluate.evaluate_prompts(ref, variants, prompts, threads, build, progress_bars=False)
        extra = quantize(ref, "Q5_K_S", build)
        run = evaluate.evaluate_prompts(ref, [*variants, extra], prompts, threads, build, progress_bars=False)
    others = {k: v for k, v in run.computed.items() if v and k != "Q5_K_S"}
    print(f"5. adding Q5_K_S recomputed {run.computed['Q5_K_S']} passes; other variants: {others or 0}")
    ROWS.append({"name": "5. one more variant", "ratio": float(len(others)), "what": "variants recomputed besides the new one",
                 "target": "0", "measured": {"new_variant_passes": run.computed["Q5_K_S"]}})  # fmt: skip


def setup_cost(build) -> None:
    """6. Whether one compile serves both the tools and the binding, and what it cost."""
    import llama_cpp

    binding_lib = Path(llama_cpp.llama_cpp._lib._name).resolve()
    own_lib = list((Path(llama_cpp.__file__).parent / "lib").glob("libllama*"))
    once = binding_lib.parent == Path(build.bin_dir).resolve() and not own_lib
    print(f"6. compile once for tools and binding: {once}; compile measured when this build was made: "
          f"{build.build_seconds:.0f} s ({build.built_at})")  # fmt: skip
    ROWS.append({"name": "6. compile once", "ratio": float(once), "what": "binding uses the tools' libllama",
                 "target": "1", "measured": {"build_seconds": build.build_seconds}})  # fmt: skip


def item_of(row: dict) -> str:
    return ITEMS[int(row["name"][0]) - 1]


def merged(path: Path, run: dict, rows: list[dict]) -> dict:
    """This run's rows, and the rows of the items it did not run kept from the file with the run
    that measured them: running one item (``--items roofline``) replaces only that item's rows."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    old_runs = old.get("runs") or ([{k: v for k, v in old.items() if k != "rows"}] if old else [])
    kept = [r for r in old.get("rows", []) if item_of(r) not in run["items"]]
    for r in kept:  # a file written before rows named their run: they belong to its one run
        r.setdefault("run_finished", old.get("finished"))
    for r in rows:
        r["run_finished"] = run["finished"]
    still_cited = {r["run_finished"] for r in kept}
    runs = [r for r in old_runs if r.get("finished") in still_cited] + [run]
    return {**run, "runs": runs, "rows": sorted(kept + rows, key=lambda r: ITEMS.index(item_of(r)))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=defaults.DEFAULT_MODEL)
    parser.add_argument("--threads", type=int, default=None, help="default: every core")
    parser.add_argument("--items", default=",".join(ITEMS), help="comma-separated items to run")
    parser.add_argument("--runs", type=int, default=3, help="repetitions of the roofline item")
    parser.add_argument("--json", type=Path, default=OUTPUT_RESULTS_DIR / "bench.json", help="where to write the rows")
    args = parser.parse_args()
    items = [i.strip() for i in args.items.split(",") if i.strip()]
    unknown = sorted(set(items) - set(ITEMS))
    if unknown:
        parser.error(f"unknown items {', '.join(unknown)}; choose from {', '.join(ITEMS)}")
    threads = defaults.threads(args.threads)

    build = use_build_for_binding(current_build())
    model = resolve(args.model)
    ref = make_reference(model, build)
    variants = [quantize(ref, q, build) for q in defaults.QUANT_TYPES]
    by_type = {v.display: v for v in variants}
    prompts = corpus.build_prompts(defaults.NUM_PROMPTS, defaults.MIN_PROMPT_LENGTH, defaults.MAX_PROMPT_LENGTH).texts
    print(f"model {model.spec} ({model.sha256[:12]}), reference {ref.label}, threads {threads}, "
          f"llama.cpp {build.llama_cpp_commit}; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    started, load_at_start = time.perf_counter(), os.getloadavg()[0]
    tool_bytes = None
    if "evaluator" in items:
        tool_bytes = evaluator_speed(ref, variants, prompts, threads, build)
    if "roofline" in items:
        roofline({"F16": ref, "Q8_0": by_type["Q8_0"], "Q4_K_M": by_type["Q4_K_M"]}, threads, build, args.runs)
    if "storage" in items:
        if tool_bytes is None:  # the size of the tool's base-logits file for this text, measured
            work = Path(tempfile.mkdtemp(prefix="bench-ppl-"))
            (work / "prompts.txt").write_text("\n".join(p.replace("\n", " ") for p in prompts) + "\n")
            tool_bytes = run_llama_perplexity_many(ref, [by_type["Q8_0"]], work / "prompts.txt", 512, threads, work,
                                                   build)[0].base_logits_bytes  # fmt: skip
            shutil.rmtree(work, ignore_errors=True)
        kl_storage(ref, by_type["Q4_K_M"], prompts, threads, tool_bytes, build)
    if "rebuild" in items:
        incremental_rebuild()
    if "variant" in items:
        one_more_variant(ref, prompts[:20], threads, build)
    if "setup" in items:
        setup_cost(build)
    if "logits" in items:
        logits_cost(threads, build)
    run = {
        "provenance": provenance.record(build, model, threads),
        "load_average_at_start": load_at_start,
        "seconds": round(time.perf_counter() - started),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "items": items,
    }
    committed = RESULTS_DIR / "bench.json"
    if not args.json.exists() and committed.exists():  # the items not run keep the committed run's rows
        args.json.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(committed, args.json)
    write_atomic(args.json, json.dumps(merged(args.json, run, ROWS), indent=1) + "\n")
    print(f"bench: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
