"""Score: the largest rescaled violation of learned value and step bounds."""

from __future__ import annotations

import numpy as np

from tinywarden.arith import requantize
from tinywarden.kernels.base import (
    Op,
    ProgramView,
    const_shape,
    int_attr,
    requant_shifts,
    require,
    score_kernel,
)


def _bounds_violation(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    """Largest per-channel violation of the window (N, W, C): value range and step limit, each rescaled."""
    x = srcs[0].astype(np.int64)
    c = op.consts
    over = np.maximum(x.max(axis=1) - c["hi"], c["lo"] - x.min(axis=1))
    fast = np.abs(np.diff(x, axis=1)).max(axis=1) - c["rate"]
    value = requantize(over, c["value_multiplier"], c["value_shift"])
    step = requantize(fast, c["rate_multiplier"], c["rate_shift"])
    return np.maximum(value, step).max(axis=1)


def _check_bounds(op: Op, p: ProgramView) -> None:
    int_attr(op, "shift", 0, 62)
    require(op.src == ("window",), "it reads the window")
    bad = [c for c in op.consts if const_shape(op, c) != (p.n_channels,)]
    require(not bad, f"constant(s) {', '.join(bad)} must have one entry per channel ({p.n_channels})")
    requant_shifts(op, "value_shift", "rate_shift")


C_TEMPLATE = r"""
//@call: tw_bounds_violation_s16(&s->ring[0][0], (int32_t)s->head, ${window}, ${n_channels}, ${c_lo}, ${c_hi},
//@+ ${c_rate}, ${c_value_multiplier}, ${c_value_shift}, ${c_rate_multiplier}, ${c_rate_shift}, ${shift},
//@+ s->t_${dst});
//@requires: arith clamp64
/* Largest rule violation of the window, oldest row first: per channel c,
 *   value = requantize(max(max_t q - hi[c], lo[c] - min_t q), value_multiplier[c], value_shift[c])
 *   step  = requantize(max_t |q[t] - q[t-1]| - rate[c], rate_multiplier[c], rate_shift[c])
 * score = floor(max_c max(value, step) / 2^shift): negative inside every bound, positive when one is broken.
 * Range: w >= 2, shift in [0, 62]; the requantized values are int32, so no sum overflows. */
static void tw_bounds_violation_s16(const int16_t *ring, int32_t head, int32_t w, int32_t n_ch, const int32_t *lo,
                                    const int32_t *hi, const int32_t *rate, const int32_t *value_multiplier,
                                    const int8_t *value_shift, const int32_t *rate_multiplier,
                                    const int8_t *rate_shift, int32_t shift, int32_t *score)
{
    int64_t top = INT64_MIN;
    int32_t c;
    for (c = 0; c < n_ch; c++) {
        int32_t r = head;
        int32_t prev = ring[r * n_ch + c];
        int32_t q_min = prev;
        int32_t q_max = prev;
        int32_t step_max = 0;
        int32_t t;
        int64_t over;
        int64_t value;
        int64_t step;
        for (t = 1; t < w; t++) {
            int32_t q;
            int32_t d;
            r = (r + 1 == w) ? 0 : r + 1;
            q = ring[r * n_ch + c];
            d = (q > prev) ? q - prev : prev - q;
            q_min = (q < q_min) ? q : q_min;
            q_max = (q > q_max) ? q : q_max;
            step_max = (d > step_max) ? d : step_max;
            prev = q;
        }
        over = (int64_t)q_max - hi[c];
        over = ((int64_t)lo[c] - q_min > over) ? (int64_t)lo[c] - q_min : over;
        value = tw_requantize(over, value_multiplier[c], value_shift[c]);
        step = tw_requantize((int64_t)step_max - rate[c], rate_multiplier[c], rate_shift[c]);
        value = (step > value) ? step : value;
        top = (value > top) ? value : top;
    }
    /* floor division by 2^shift, without right-shifting a negative number */
    top = (top >= 0) ? (top >> shift) : -((-top - 1) >> shift) - 1;
    score[0] = (int32_t)tw_clamp64(top, INT32_MIN, INT32_MAX);
}
"""

score_kernel(
    "bounds_violation_s16", _bounds_violation, ("int16",),
    {"lo": "int32", "hi": "int32", "rate": "int32", "value_multiplier": "int32", "value_shift": "int8",
     "rate_multiplier": "int32", "rate_shift": "int8"},
    "score = max over channels of requantize(max(max q - hi, lo - min q)) and "
    "requantize(max |q[t] - q[t-1]| - rate), floor-shifted right by shift (it may be negative)",
    C_TEMPLATE, check=_check_bounds)
