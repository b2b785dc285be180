"""How close the study runs to its limits: `make bench`.

Measures, in one run on this machine, and prints each figure as a ratio with the two raw numbers
beside it and the target it is held to. A benchmark, not a test: a missed target is reported, not
failed on. Run it on a quiet machine; other load distorts every ratio.

    .venv/bin/python scripts/bench.py            # items 1-3 and 5 (a few minutes)
    .venv/bin/python scripts/bench.py --rebuild  # also item 4: cold and unchanged `make book` (long)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from localllms import bench, corpus, defaults, evaluate
from localllms.build import current_build, use_build_for_binding
from localllms.models import DEFAULT_MODEL, resolve
from localllms.paths import PROJECT_ROOT, cache_dir
from localllms.quantize import make_reference, quantize
from localllms.study.crosscheck import run_llama_perplexity

ROWS: list[tuple[str, float, str, str, str]] = []


def ratio(name: str, num: float, den: float, num_label: str, den_label: str, target: str) -> float:
    r = num / den if den else float("nan")
    ROWS.append((name, r, f"{num_label} / {den_label}", target, ""))
    print(f"{name}: {r:.3f}   ({num_label} / {den_label})   target {target}", flush=True)
    return r


def evaluator_speed(ref, var, text: str, threads: int, n_ctx: int, build) -> None:
    """1. Our evaluator's tokens/s over llama-perplexity's, same tokens, model, threads."""
    work = Path(tempfile.mkdtemp())
    text_file = work / "prompts.txt"
    text_file.write_text(text)
    tool = run_llama_perplexity(ref, var, text_file, n_ctx, threads, work, build)
    started = time.perf_counter()
    evaluate.evaluate_windows(ref, var, text, n_ctx, threads, build)
    ours_s = time.perf_counter() - started
    tokens = 2 * tool.n_chunks * n_ctx  # both tools evaluate every chunk under both models
    tool_s = tool.seconds_base + tool.seconds_variant
    ratio("1. evaluator speed", tokens / ours_s, tokens / tool_s,
          f"ours {tokens / ours_s:.0f} tok/s ({ours_s:.1f} s)", f"llama-perplexity {tokens / tool_s:.0f} tok/s ({tool_s:.1f} s)", ">= 0.9")  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    return tool


def roofline(models: dict, threads: int, build) -> None:
    """2. llama-bench generation tokens/s x bytes per token over measured read bandwidth."""
    bw = bench.memory_bandwidth(threads)
    print(f"   memory read bandwidth {bw.best_gbs:.2f} GB/s (best of {len(bw.samples_gbs)}, {threads} threads)")
    for label, m in models.items():
        t = bench.llama_bench(m, threads, repetitions=5, n_prompt=0, n_gen=128, build=build, use_cache=False)
        bpt = bench.bytes_per_token(m.path)
        achieved = t.tg_tps * bpt / 1e9
        target = ">= 0.85" if label == "F16" else "(printed)"
        ratio(f"2. roofline {label}", achieved, bw.best_gbs,
              f"{t.tg_tps:.1f} tok/s x {bpt / 1e6:.1f} MB = {achieved:.2f} GB/s", f"{bw.best_gbs:.2f} GB/s", target)  # fmt: skip


def kl_storage(ref, var, prompts: list[str], threads: int, tool_bytes: int, build) -> None:
    """3. Extra disk our KL path writes over llama-perplexity's base-logits file, same run."""
    tmp = Path(tempfile.mkdtemp())
    old = os.environ.get("LOCALLLMS_CACHE")
    os.environ["LOCALLLMS_CACHE"] = str(tmp)
    try:
        evaluate.evaluate_prompts(ref, [var], prompts, threads, build, progress_bars=False)
        written = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    finally:
        if old is None:
            del os.environ["LOCALLLMS_CACHE"]
        else:
            os.environ["LOCALLLMS_CACHE"] = old
        shutil.rmtree(tmp, ignore_errors=True)
    ratio(
        "3. KL storage",
        written,
        tool_bytes,
        f"ours {written / 2**20:.2f} MiB",
        f"base-logits file {tool_bytes / 2**20:.1f} MiB",
        "<= 0.02",
    )


def incremental_rebuild() -> None:
    """4. `make book` with nothing changed over a cold one (build reused, every other cache empty)."""
    info = current_build()
    info_file = cache_dir("llama.cpp") / info.key / "build-info.json"
    env = {**os.environ, "LOCALLLMS_CACHE": tempfile.mkdtemp(), "LOCALLLMS_BUILD_INFO": str(info_file)}
    # `make book` minus its setup step (venv, compile): the two commands it runs after setup.
    cmds = [
        [sys.executable, "-m", "localllms", "run-notebooks"],
        [sys.executable, "-m", "localllms", "build-html"],
    ]

    def timed() -> float:
        started = time.perf_counter()
        for cmd in cmds:
            subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started

    cold = timed()
    warm = timed()
    ratio("4. incremental rebuild", warm, cold, f"unchanged {warm:.0f} s", f"cold {cold:.0f} s", "<= 0.1")
    shutil.rmtree(env["LOCALLLMS_CACHE"], ignore_errors=True)


def one_more_variant(ref, prompts: list[str], threads: int, build) -> None:
    """4b. Adding one quant type recomputes that variant only."""
    variants = [quantize(ref, q, build) for q in ("Q4_K_M", "Q8_0")]
    evaluate.evaluate_prompts(ref, variants, prompts, threads, build, progress_bars=False)
    extra = quantize(ref, "Q5_K_S", build)
    run = evaluate.evaluate_prompts(ref, [*variants, extra], prompts, threads, build, progress_bars=False)
    recomputed = {k: v for k, v in run.computed.items() if v}
    print(f"4b. adding Q5_K_S recomputed: {recomputed or 'nothing (already cached)'}; other variants: 0 passes")
    ROWS.append(
        (
            "4b. one more variant",
            float(len([k for k in recomputed if k != "Q5_K_S"])),
            "variants recomputed besides the new one",
            "0",
            "",
        )
    )


def setup_cost(build) -> None:
    """5. Cold setup time, and whether one compile serves both the tools and the binding."""
    import llama_cpp

    binding_lib = Path(llama_cpp.llama_cpp._lib._name).resolve()
    own_lib = list((Path(llama_cpp.__file__).parent / "lib").glob("libllama*"))
    once = binding_lib.parent == Path(build.bin_dir).resolve() and not own_lib
    print(
        f"5. compile once for tools and binding: {once} (binding loads {binding_lib}; copies inside the wheel: {len(own_lib)})"
    )
    print(f"   llama.cpp compile, measured when this build was made: {build.build_seconds:.0f} s ({build.built_at})")
    ROWS.append(("5. compile once", float(once), "binding uses the tools' libllama", "1", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--threads", type=int, default=defaults.threads())
    parser.add_argument("--rebuild", action="store_true", help="also time a cold and an unchanged `make book`")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args()

    build = use_build_for_binding(current_build())
    model = resolve(args.model)
    ref = make_reference(model, build)
    q8, q4 = quantize(ref, "Q8_0", build), quantize(ref, "Q4_K_M", build)
    prompts = corpus.build_prompts(source="auto").texts
    text = "\n".join(p.replace("\n", " ") for p in prompts) + "\n"
    print(
        f"model {model.spec} ({model.sha256[:12]}), reference {ref.label}, threads {args.threads}, llama.cpp {build.llama_cpp_commit}"
    )

    tool = evaluator_speed(ref, q4, text, args.threads, 512, build)
    roofline({"F16": ref, "Q8_0": q8, "Q4_K_M": q4}, args.threads, build)
    kl_storage(ref, q4, prompts, args.threads, tool.base_logits_bytes, build)
    if args.rebuild:
        incremental_rebuild()
    one_more_variant(ref, prompts[:20], args.threads, build)
    setup_cost(build)
    if args.json:
        args.json.write_text(
            json.dumps([dict(zip(("name", "ratio", "what", "target", "note"), r, strict=True)) for r in ROWS], indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
