"""CMSIS-NN fully connected layer, per-channel int8 weights."""

from __future__ import annotations

import numpy as np

from tinywarden.arith import requantize
from tinywarden.kernels.base import (
    KernelSpec,
    Op,
    register_kernel,
)

#: constants of a per-channel int8 layer (fully connected or convolution)
LAYER_CONSTS = {"weights": "int8", "bias": "int32", "multiplier": "int32", "shift": "int8"}


def _fully_connected_s8(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    x = srcs[0].astype(np.int64) + int(op.attrs["input_offset"])
    c = op.consts
    acc = x @ c["weights"].astype(np.int64).T + c["bias"].astype(np.int64)
    q = requantize(acc, c["multiplier"], c["shift"]) + int(op.attrs["output_offset"])
    return np.clip(q, op.attrs["act_min"], op.attrs["act_max"])


C_TEMPLATE = r"""
//@call: tw_fully_connected_s8(s->t_${src0}, s->t_${dst}, ${weights_shape1}, ${weights_shape0}, ${c_weights},
//@+ ${c_bias}, ${c_multiplier}, ${c_shift}, ${input_offset}, ${output_offset}, ${act_min}, ${act_max});
//@requires: arith
/* CMSIS-NN style fully connected layer with per-output-channel weights (weights: n_out x n_in,
 * row-major): out[o] = clamp(requantize(bias[o] + sum_i w[o][i] * (in[i] + input_offset),
 * multiplier[o], shift[o]) + output_offset, act_min, act_max); act_min = output_offset is ReLU.
 * Range: input_offset in [-127, 128], output_offset and act_* in [-128, 127]; the generator keeps
 * |bias| <= 2^30 and n_in * 255 * 127 < 2^30, so the int32 accumulator cannot overflow. */
static void tw_fully_connected_s8(const int8_t *in, int8_t *out, int32_t n_in, int32_t n_out, const int8_t *weights,
                                  const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                                  int32_t input_offset, int32_t output_offset, int32_t act_min, int32_t act_max)
{
    int32_t o;
    int32_t i;
    for (o = 0; o < n_out; o++) {
        const int8_t *w = weights + o * n_in;
        int32_t acc = bias[o];
        int64_t q;
        for (i = 0; i < n_in; i++) {
            acc += (int32_t)w[i] * ((int32_t)in[i] + input_offset);
        }
        q = (int64_t)tw_requantize(acc, multiplier[o], shift[o]) + output_offset;
        out[o] = (int8_t)tw_clamp64(q, act_min, act_max);
    }
}
"""

register_kernel(KernelSpec("fully_connected_s8", _fully_connected_s8, ("int8",), "int8", LAYER_CONSTS,
                           "CMSIS-NN fully connected, per-channel weights", C_TEMPLATE))
