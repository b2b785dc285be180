"""Try before you download: real model sizes on this machine, with synthetic weights.

The rest of the book measures two models of 135 M and 270 M parameters; readers choose between 1 B
and 70 B. llama.cpp's speed and memory depend on the tensors' shapes and types, not on the values
of the weights, so a GGUF with a published architecture's exact tensors and per-tensor types and
made-up weights (``localllms.synth``; the spec ``synth:NAME:TYPE``) measures a real size's speed and
memory without its download. **Synthetic weights: speed and memory only**; quality is never
computed on such a file (``models.check_not_synthetic``).

The chapter (``notebooks/model_sizes.ipynb``), module by module:

* ``plan``: the defaults and their reasons, and ``make_files`` (the synthetic files, cached);
* ``validate``: the method checked first, on both catalog models: synthetic against real files of
  the same types, speed as paired ratios within interleaved rounds, peak memory within 2 %;
* ``speed``: every size in one set of rounds with the bandwidth probe: speeds at an empty and a
  filled context, and the share of the memory roofline per size;
* memory: ``selection.fit.measure_synthetic`` (peak resident memory of llama-server against the
  "Will it fit?" estimate), measured by the model-selection chapter and read back here;
* ``reading``: the source chapter's serving layer, hardware and latency / price figures beside
  this machine's numbers;
* ``speed_only``: the sweep's study of a synthetic spec (speed rounds only; quality left empty).
"""

from ..gguf_file import SYNTHETIC_NOTE
from .plan import (
    DEPTH,
    DEPTH_SIZES,
    MEMORY_CONTEXTS,
    N_GEN,
    N_PROMPT,
    ROUNDS,
    RSS_TOLERANCE,
    SIZES,
    VALIDATE_CONTEXT,
    VALIDATE_DEPTH,
    VALIDATE_LEVEL,
    VALIDATE_MARGIN,
    VALIDATE_MODELS,
    VALIDATE_N_GEN,
    VALIDATE_N_PROMPT,
    VALIDATE_ROUNDS,
    VALIDATE_TYPES,
    SizeFile,
    canonical,
    make_files,
    written_sentence,
)
from .plan import (
    files_table as size_files_table,
)
from .reading import hardware_sentence, latency_sentence, price_sentence, serving_sentence, ttft
from .speed import (
    BANDWIDTH,
    Sizes,
    clock_sentence,
    depth_cost_sentence,
    depth_sentence,
    measure,
    plot_roofline,
    roofline_sentence,
    roofline_share,
    roofline_table,
    share_ratio,
    shares,
    speed_table,
)
from .validate import (
    AGREES,
    DIFFERS,
    NO_INTERVAL,
    POOLED,
    UNDECIDED,
    Pair,
    Validation,
    files_table,
    make_pairs,
    n_comparisons,
    round_spread,
    rss_agreement,
    same_tensors,
    speed_agreement,
    validate,
    validation_sentence,
    validation_table,
    verdict,
)

NOTE = SYNTHETIC_NOTE

__all__ = [
    "AGREES",
    "BANDWIDTH",
    "DEPTH",
    "DEPTH_SIZES",
    "DIFFERS",
    "MEMORY_CONTEXTS",
    "NOTE",
    "NO_INTERVAL",
    "POOLED",
    "N_GEN",
    "N_PROMPT",
    "ROUNDS",
    "RSS_TOLERANCE",
    "SIZES",
    "UNDECIDED",
    "VALIDATE_CONTEXT",
    "VALIDATE_DEPTH",
    "VALIDATE_LEVEL",
    "VALIDATE_MARGIN",
    "VALIDATE_MODELS",
    "VALIDATE_N_GEN",
    "VALIDATE_N_PROMPT",
    "VALIDATE_ROUNDS",
    "VALIDATE_TYPES",
    "Pair",
    "SizeFile",
    "Sizes",
    "Validation",
    "canonical",
    "clock_sentence",
    "depth_cost_sentence",
    "depth_sentence",
    "files_table",
    "hardware_sentence",
    "latency_sentence",
    "make_files",
    "make_pairs",
    "measure",
    "plot_roofline",
    "price_sentence",
    "roofline_sentence",
    "roofline_share",
    "roofline_table",
    "n_comparisons",
    "round_spread",
    "rss_agreement",
    "same_tensors",
    "serving_sentence",
    "share_ratio",
    "size_files_table",
    "shares",
    "speed_agreement",
    "speed_table",
    "ttft",
    "validate",
    "validation_sentence",
    "validation_table",
    "verdict",
    "written_sentence",
]
