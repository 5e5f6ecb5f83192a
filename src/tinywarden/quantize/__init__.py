"""int8 on-device path: the TFLite / CMSIS-NN integer scheme, post-training quantization, pruning."""

from tinywarden.quantize.scheme import (
    QParams,
    choose_qparams,
    quantize_multiplier,
    requantize,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)

__all__ = [
    "QParams",
    "choose_qparams",
    "quantize_multiplier",
    "requantize",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
]
