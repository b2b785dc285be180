"""Choosing a model for this machine: the five questions of the model-selection chapter.

Each function takes the candidates (catalog names or GGUF paths); each module answers one
question:

1. What is it? ``cards``: what each GGUF file says about itself (``load_candidates``,
   ``model_cards``; a candidate that cannot be read becomes a row with its one-sentence
   error, and the others go on), and this machine (``hardware``).
2. Does it fit? ``memory``: the RAM llama.cpp needs at a context length, predicted from the
   GGUF metadata with llama.cpp's own allocation rules (``estimate_memory``, ``fit_table``);
   ``measure``: the same, measured as the peak resident memory of a real ``llama-server``
   (``measure_memory``, ``compare_memory``, ``runtime_footprint``); ``published``: the same
   estimate for models not on this machine, from their published hyperparameters
   (``load_published``, ``published_architecture``); ``fit``: those models at common quant
   types, contexts and machine sizes (``fit_rows``, ``will_it_fit``) and the check that both
   routes agree (``route_check``); ``fit_params``: what llama.cpp's ``llama-fit-params``
   projects for the same files.
3. How good is it? ``quality``: bits per byte, comparable across tokenizers.
4. How fast is it? ``timing``: time to first token and per output token, from interleaved speed rounds.
5. What does it cost? ``cost``: cost per input and output token, total cost of ownership and
   the break-even volume against cloud prices; ``licenses``: what the license allows.

``ranking.recommend`` ranks the candidates for this machine with a reason for each, and
``figures`` draws the chapter's plots. The public names of every module are re-exported
here, so a notebook writes ``from localllms import selection`` and ``selection.model_cards(...)``.
"""

from .cards import Candidate, Hardware, hardware, hardware_table, load_candidates, model_card, model_cards, usable
from .cost import (
    CLOUD_PRICES,
    INPUT_PER_OUTPUT,
    CloudPrice,
    CostAssumptions,
    blended,
    break_even_tokens,
    cloud_table,
    cost_per_million,
    cost_table,
    energy_per_million,
    local_cost,
    tco,
)
from .figures import plot_break_even, plot_memory, plot_quality_speed
from .fit import (
    fit_reading,
    fit_rows,
    fixed_parts_sentence,
    measured_error_sentence,
    route_check,
    route_sentence,
    route_vs_measured,
    will_it_fit,
)
from .fit_params import (
    FitParams,
    fit_params_sentence,
    fit_params_table,
    fit_params_vs_measured,
    llama_fit_params,
    shown_command,
)
from .licenses import OPEN_MODEL_LICENSES, candidate_license, licenses_table
from .measure import MemoryMeasurement, compare_memory, measure_memory, runtime_footprint, write_toy_model
from .memory import (
    CACHE_BYTES,
    CTX_PAD,
    FIT_SHARE,
    GIB,
    MEMORY_TOLERANCE,
    MERGE_BYTES,
    MIB,
    N_UBATCH,
    RUNTIME_BYTES,
    SWA_PATTERNS,
    TOKEN_BYTES,
    Architecture,
    MemoryEstimate,
    architecture,
    compute_bytes,
    estimate_architecture,
    estimate_memory,
    fit_table,
    kv_bytes,
    kv_cells,
    max_context,
    memory_table,
    verdict,
)
from .published import (
    FILE_TYPES,
    PUBLISHED_CSV,
    Hyperparameters,
    counted_parameters,
    load_published,
    parameter_check,
    published_architecture,
    published_table,
    tensor_type,
    tensors,
    weight_bytes,
)
from .quality import BitsPerByte, bits_per_byte, quality_table
from .ranking import recommend
from .timing import speed_table, speeds
from .validation import estimate_vs_measured, kv_growth, mmap_table

__all__ = [
    "CACHE_BYTES",
    "CLOUD_PRICES",
    "CTX_PAD",
    "FILE_TYPES",
    "FIT_SHARE",
    "GIB",
    "INPUT_PER_OUTPUT",
    "MEMORY_TOLERANCE",
    "MERGE_BYTES",
    "MIB",
    "N_UBATCH",
    "OPEN_MODEL_LICENSES",
    "PUBLISHED_CSV",
    "RUNTIME_BYTES",
    "SWA_PATTERNS",
    "TOKEN_BYTES",
    "Architecture",
    "BitsPerByte",
    "Candidate",
    "CloudPrice",
    "CostAssumptions",
    "FitParams",
    "Hardware",
    "Hyperparameters",
    "MemoryEstimate",
    "MemoryMeasurement",
    "architecture",
    "bits_per_byte",
    "blended",
    "break_even_tokens",
    "candidate_license",
    "cloud_table",
    "compare_memory",
    "compute_bytes",
    "cost_per_million",
    "cost_table",
    "counted_parameters",
    "energy_per_million",
    "estimate_architecture",
    "estimate_memory",
    "fit_params_sentence",
    "fit_params_table",
    "fit_params_vs_measured",
    "fit_reading",
    "fit_rows",
    "fit_table",
    "fixed_parts_sentence",
    "hardware",
    "hardware_table",
    "kv_bytes",
    "kv_cells",
    "licenses_table",
    "llama_fit_params",
    "load_candidates",
    "load_published",
    "local_cost",
    "max_context",
    "measure_memory",
    "measured_error_sentence",
    "memory_table",
    "model_card",
    "model_cards",
    "parameter_check",
    "plot_break_even",
    "plot_memory",
    "plot_quality_speed",
    "published_architecture",
    "published_table",
    "quality_table",
    "recommend",
    "route_check",
    "route_sentence",
    "route_vs_measured",
    "runtime_footprint",
    "shown_command",
    "speeds",
    "estimate_vs_measured",
    "kv_growth",
    "mmap_table",
    "speed_table",
    "tco",
    "tensor_type",
    "tensors",
    "usable",
    "verdict",
    "weight_bytes",
    "will_it_fit",
    "write_toy_model",
]
