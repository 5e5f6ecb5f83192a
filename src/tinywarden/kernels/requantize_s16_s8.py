"""Per-channel rescaling of the int16 window into an int8 model input."""

from __future__ import annotations

import numpy as np

from tinywarden.arith import requantize
from tinywarden.kernels.base import (
    KernelSpec,
    Op,
    ProgramView,
    activation,
    per_output,
    register_kernel,
    require,
)


def _requantize_s16_s8(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    x = srcs[0].astype(np.int64)  # (N, W, C)
    c = op.consts
    v = x - c["offset"].astype(np.int64)
    q = requantize(v, c["multiplier"], c["shift"]) + int(op.attrs["zero_point"])
    return np.clip(q, op.attrs["act_min"], op.attrs["act_max"])


def _check(op: Op, p: ProgramView) -> None:
    require(op.src == ("window",), "it reads the window")
    shape = (p.window, p.n_channels)
    require(p.tensor(op.dst).shape == shape, f"output must be {shape}")
    per_output(op, p.n_channels, ("offset", "multiplier", "shift"))
    activation(op, "int8", "zero_point")


C_TEMPLATE = r"""
//@call: tw_requantize_s16_s8(&s->ring[0][0], (int32_t)s->head, ${window}, ${n_channels}, ${c_offset},
//@+ ${c_multiplier}, ${c_shift}, ${zero_point}, ${act_min}, ${act_max}, s->t_${dst});
//@requires: arith clamp64
/* The window, oldest row first, rescaled per channel to int8: out[t][c] = clamp(zp +
 * requantize(q[t][c] - offset[c], multiplier[c], shift[c]), act_min, act_max). */
static void tw_requantize_s16_s8(const int16_t *ring, int32_t head, int32_t w, int32_t n_ch, const int32_t *offset,
                                 const int32_t *multiplier, const int8_t *shift, int32_t zp, int32_t act_min,
                                 int32_t act_max, int8_t *out)
{
    int32_t t;
    int32_t c;
    int32_t r = head;
    for (t = 0; t < w; t++) {
        for (c = 0; c < n_ch; c++) {
            int64_t v = (int64_t)ring[r * n_ch + c] - offset[c];
            int64_t q = (int64_t)tw_requantize(v, multiplier[c], shift[c]) + zp;
            out[t * n_ch + c] = (int8_t)tw_clamp64(q, act_min, act_max);
        }
        r = (r + 1 == w) ? 0 : r + 1;
    }
}
"""

register_kernel(KernelSpec(
    "requantize_s16_s8", _requantize_s16_s8, ("int16",), "int8",
    {"offset": "int32", "multiplier": "int32", "shift": "int8"},
    "per-channel window rescaling: clamp(zp + requantize(q - offset[c]))", C_TEMPLATE, check=_check))
