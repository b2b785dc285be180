"""The chapter's defaults, each with its reason, and the synthetic files it measures.

Every size is a ``synth:NAME:TYPE`` spec (``models.parse_spec``): a row of the published
architectures (``data/reference/open_model_architectures.csv``) at a llama-quantize type, written
once into the cache by ``localllms.synth`` and resolved like any other model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from .. import rounds
from ..build import BuildInfo
from ..errors import UserError
from ..models import ResolvedModel
from ..selection.fit import MEASURED_CONTEXTS, MEASURED_SYNTHETIC

# --------------------------------------------------------------------------- the check of the method

# Both catalog models, each as the real file the case study makes and as its synthetic twin.
VALIDATE_MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
# The common 4-bit type (a mix of Q4_K, Q6_K and, on SmolLM2's 576-wide rows, Q5_0/Q8_0) and 8-bit.
VALIDATE_TYPES = ("Q4_K_M", "Q8_0")
# llama-bench sizes of the check: a run of a 135M model takes a second or two, so eight files x eight
# rounds stay within a few minutes. Generation is the case study's 128 tokens: the effect checked
# for is a few per cent (values move the Q8_0 kernel's speed, synth/writer.py), and 32 tokens
# (a quarter of a second on the 135M) gave ×1.086 for SmolLM2's Q8_0 pair where 12 alternations of
# 128 tokens gave ×0.983 (0.930–1.002) for the same two files (2026-12-07).
# Prompt processing of 128 tokens (a fifth of a second on the 135M) moved the paired ratio by 8 to
# 22 % from round to round in the recorded run of 2026-12-07; the case study's 512 tokens take about a
# second and give the pair time to settle.
VALIDATE_N_PROMPT = 512
VALIDATE_N_GEN = 128
VALIDATE_CONTEXT = 4096  # llama-server's context for the memory check: a typical chat
# A pair agrees when its speed ratio's interval lies inside 1 ± 10 %, and differs when it lies wholly
# outside. The margin is set before the run, from what the chapter reads off the synthetic files:
# sizes a factor of ~2 apart in speed, roofline shares of 34 to 86 %, and a fit in memory decided by
# the memory check (2 %), not by speed. A method error under 10 % changes none of those readings.
VALIDATE_MARGIN = 0.10
# All of the check's speed intervals hold together with at least this coverage (each interval is
# widened for the number of comparisons, intervals.familywise). With one interval per comparison
# at 90 %, ten comparisons of equal files would report one "differs" in about half the runs.
VALIDATE_LEVEL = 0.90
# None: the fewest rounds that give every comparison its family-wise interval (8 for the book's twelve:
# two models x two types + the filled context, prompt and generation each, and all of them pooled).
# More rounds decide single pairs slowly here: 20 rounds of the default check (2026-12-07, about 46 s
# a round) left every pair's prompt interval across ±10 % (together ×0.79-×1.17; the per-round prompt
# ratio's standard deviation 12-18 % per pair, generation's 5-11 %), while the pooled ratios were
# inside it at 8, 12, 16 and 20 rounds: prompt ×0.990 (0.964-1.035), generation ×1.029 (1.002-1.049) at 20.
VALIDATE_ROUNDS = None
# The first pair (the book's model at the first type) is also run with this many tokens already in
# the context: attention is the one kernel whose work (not only its speed) depends on values (llama.cpp's online softmax
# rescales its sum whenever a key scores above every earlier one), and with a full context it is a
# large share of the work. SmolLM2 attends over every layer's whole context, so it is the strongest test.
VALIDATE_DEPTH = 2048
# Peak resident memory of the synthetic file within 2 % of the real one's: the tokenizer tables are
# the only part that differs by construction (generated pieces and merges); a 135M model's are a
# few MiB of ~250 MiB.
RSS_TOLERANCE = 0.02

# --------------------------------------------------------------------------- the sizes

# The book's model as a synthetic file (the anchor: the size the case study measured), then the rows
# of "Will it fit?" measured here (selection.fit.MEASURED_SYNTHETIC): a 1B at Q4_K_M and Q8_0 and a 7B
# at Q4_K_M, the largest class whose runs fit the chapter's budget on this 24 GiB, 2-core machine.
SIZES = ("synth:smollm2-135m:Q4_K_M", *MEASURED_SYNTHETIC)
# llama-bench sizes for every class: a 7B at Q4_K_M reads over 4 GB of weights per generated token,
# so the test is kept short (the book's 512/128 would take minutes per run and round).
N_PROMPT = 64
N_GEN = 16
# Tokens already in the context for the second measurement: a long chat. Each such run first fills
# the context (one 2,048-token prefill per llama-bench call, at the file's prompt speed): on the 1B
# here about half a minute per run, on the 7B minutes. Within the chapter's budget that is the 1B at
# the common type only (the check of the method runs the 135M at this depth, real and synthetic).
DEPTH = 2048
DEPTH_SIZES = ("synth:llama-3.2-1b:Q4_K_M",)
MEMORY_CONTEXTS = MEASURED_CONTEXTS  # 4,096 and 8,192 tokens
ROUNDS = rounds.ROUNDS  # the fewest whose [min, max] covers the median with at least 90 %


@dataclass(frozen=True)
class SizeFile:
    """One synthetic file of the chapter: its spec, its row and type, and the resolved file."""

    spec: str
    name: str  # the row's short name (synth.short_name)
    model: str  # the row's model name, as the published table gives it
    quant: str
    resolved: ResolvedModel
    parameters: int  # elements of every tensor
    file_bytes: int
    bytes_per_token: int  # weights read per generated token (bench.bytes_per_token)
    written: bool  # False when the cached file was reused
    write_seconds: float

    @property
    def label(self) -> str:
        return f"{self.name} {self.quant}"


def make_files(specs: Sequence[str], build: BuildInfo, progress_bars: bool = True) -> list[SizeFile]:
    """The synthetic file of every spec (written if missing, else the cached one), in the given order."""
    from .. import synth
    from ..llama_bench import bytes_per_token
    from ..models import parse_spec, resolve

    if not specs:
        raise UserError("SIZES is empty; name at least one synthetic file, e.g. synth:llama-3.2-1b:Q4_K_M.")
    out = []
    for spec in dict.fromkeys(specs):
        parsed = parse_spec(spec)
        if parsed.kind != "synth" or not parsed.quant:
            raise UserError(f"{spec!r} is not a synthetic file; write synth:NAME:TYPE, e.g. synth:qwen2.5-7b:Q4_K_M.")
        made = synth.make(parsed.arch, parsed.quant, build=build, progress_bars=progress_bars)
        resolved = resolve(parsed.text)
        out.append(
            SizeFile(
                spec=parsed.text,
                name=made.name,
                model=made.model,
                quant=made.ftype,
                resolved=resolved,
                parameters=resolved.info.parameters,
                file_bytes=made.file_bytes,
                bytes_per_token=bytes_per_token(made.path),
                written=made.written,
                write_seconds=made.write_seconds,
            )
        )
    return out


def canonical(specs: Sequence[str]) -> list[str]:
    """The specs as ``parse_spec`` spells them (so a list given in other case still matches)."""
    from ..models import parse_spec

    return [parse_spec(s).text for s in specs]


def files_table(files: Sequence[SizeFile]) -> pd.DataFrame:
    """What each synthetic file is: its row, type, parameters, size and the bytes a token reads."""
    rows = [
        {
            "model": f.model,
            "type": f.quant,
            "spec": f.spec,
            "parameters (B)": round(f.parameters / 1e9, 2),
            "file (GB)": round(f.file_bytes / 1e9, 2),
            "read per generated token (GB)": round(f.bytes_per_token / 1e9, 3),
        }
        for f in files
    ]
    return pd.DataFrame(rows).set_index(["model", "type"])


def written_sentence(files: Sequence[SizeFile]) -> str:
    """Which files this run wrote, and how long that took (the rest came from the cache)."""
    new = [f for f in files if f.written]
    if not new:
        return f"All {len(files)} synthetic files came from the cache (written by an earlier run)."
    total = sum(f.file_bytes for f in new) / 1e9
    secs = sum(f.write_seconds for f in new)
    return (
        f"This run wrote {len(new)} of the {len(files)} synthetic files ({total:.1f} GB) in {secs:.1f} s; "
        f"{len(files) - len(new)} came from the cache."
    )
