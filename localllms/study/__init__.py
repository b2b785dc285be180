"""The quantization case study (notebooks/quantization.ipynb, ``python -m localllms study``).

* ``config``: the parameters of a run (``StudyConfig``), checked before any heavy step;
* ``pipeline``: the stages, model -> reference -> variants -> quality -> throughput -> rows;
* ``crosscheck``: our evaluator against llama.cpp's ``llama-perplexity`` on the same tokens;
* ``tables``, ``figures``: what the chapter shows; ``reading``: the comparison with the
  seed chapter's quoted figures and the sentences computed from our numbers;
* ``speed_plan``: the configurations of the study's speed rounds (main table and sweeps, one set);
* part two: ``importance`` (importance-matrix quants and i-quants), ``kvcache`` (quantized KV
  caches), ``speed`` (depth and thread sweeps, kernels, the anomalies explained), ``anatomy``
  (bytes by tensor group, block formats), ``across`` (a second model side by side).

The quality metrics themselves are declared in ``localllms.metrics``; the rows are kept
in ``localllms.store``.
"""

from .config import StudyConfig, check_part_two
from .crosscheck import CrossCheck, crosscheck
from .figures import plot_imatrix_gain, plot_pareto, plot_quality, plot_roofline, plot_sweeps, plot_throughput
from .original import reading, seed_comparison, seed_table, tail_reading
from .pipeline import Study, run, variant
from .speed_plan import SpeedPlan
from .tables import (
    case_study_table,
    for_page,
    pareto_front,
    quality_table,
    roofline_exceptions,
    roofline_table,
    tail_table,
)

__all__ = [
    "CrossCheck",
    "Study",
    "StudyConfig",
    "SpeedPlan",
    "check_part_two",
    "case_study_table",
    "crosscheck",
    "for_page",
    "pareto_front",
    "plot_imatrix_gain",
    "plot_pareto",
    "plot_quality",
    "plot_roofline",
    "plot_sweeps",
    "plot_throughput",
    "quality_table",
    "reading",
    "roofline_exceptions",
    "roofline_table",
    "run",
    "seed_comparison",
    "seed_table",
    "tail_reading",
    "tail_table",
    "variant",
]
