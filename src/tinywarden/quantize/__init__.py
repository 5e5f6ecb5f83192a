"""int8 on-device path: post-training quantization, its report, and pruning.

The integer arithmetic they build on is :mod:`tinywarden.arith` (a bottom layer, which
:mod:`tinywarden.program` and the kernels import without going through this package).
"""

from tinywarden.arith import (
    QParams,
    choose_qparams,
    quantize_multiplier,
    requantize,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from tinywarden.quantize.prune import prune_pipeline
from tinywarden.quantize.ptq import int8_sections, load_program, quantize_pipeline, score_int8
from tinywarden.quantize.report import compare_int8

__all__ = [
    "QParams",
    "choose_qparams",
    "compare_int8",
    "int8_sections",
    "load_program",
    "prune_pipeline",
    "quantize_multiplier",
    "quantize_pipeline",
    "requantize",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
    "score_int8",
]
