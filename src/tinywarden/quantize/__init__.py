"""int8 on-device path: the TFLite / CMSIS-NN integer scheme, post-training quantization, pruning.

:mod:`~tinywarden.quantize.scheme` (the arithmetic) is what :mod:`tinywarden.program` builds on, and
:mod:`~tinywarden.quantize.ptq` produces programs; so the ptq names below are imported on first use
(PEP 562), which keeps ``import tinywarden.program`` free of an import cycle.
"""

from typing import Any

from tinywarden.quantize.scheme import (
    QParams,
    choose_qparams,
    quantize_multiplier,
    requantize,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)

_LAZY = {
    "int8_sections": "tinywarden.quantize.ptq",
    "load_program": "tinywarden.quantize.ptq",
    "quantize_pipeline": "tinywarden.quantize.ptq",
    "score_int8": "tinywarden.quantize.ptq",
    "compare_int8": "tinywarden.quantize.report",
    "prune_pipeline": "tinywarden.quantize.prune",
}

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tinywarden.quantize' has no attribute {name!r}")
