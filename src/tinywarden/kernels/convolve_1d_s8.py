"""1-D convolution (optional nearest x2 upsampling first), per-channel int8 weights."""

from __future__ import annotations

import numpy as np

from tinywarden.arith import requantize
from tinywarden.kernels.base import (
    KernelSpec,
    Op,
    register_kernel,
)
from tinywarden.kernels.fully_connected_s8 import LAYER_CONSTS


def _convolve_1d_s8(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    x = srcs[0].astype(np.int64) + int(op.attrs["input_offset"])  # (N, L, Cin)
    c, a = op.consts, op.attrs
    w = c["weights"].astype(np.int64)  # (Cout, Cin, K)
    cout, cin, k = w.shape
    if a["upsample"] > 1:
        x = np.repeat(x, a["upsample"], axis=1)
    pad = a["pad"]
    # zero padding in the offset domain is real zero, as TFLite's padding with the input zero point
    xp = np.pad(x, ((0, 0), (pad, pad), (0, 0)))
    l_out = (x.shape[1] + 2 * pad - k) // a["stride"] + 1
    idx = np.arange(l_out)[:, None] * a["stride"] + np.arange(k)[None, :]  # (L_out, K)
    cols = xp[:, idx, :]  # (N, L_out, K, Cin)
    acc = np.einsum("nlkc,ock->nlo", cols, w) + c["bias"].astype(np.int64)
    q = requantize(acc, c["multiplier"], c["shift"]) + int(a["output_offset"])
    return np.clip(q, a["act_min"], a["act_max"])


C_TEMPLATE = r"""
//@call: tw_convolve_1d_s8(s->t_${src0}, ${src0_shape0}, ${src0_shape1}, s->t_${dst}, ${dst_shape0},
//@+ ${dst_shape1}, ${weights_shape2}, ${stride}, ${pad}, ${upsample}, ${c_weights}, ${c_bias},
//@+ ${c_multiplier}, ${c_shift}, ${input_offset}, ${output_offset}, ${act_min}, ${act_max});
//@requires: arith
/* 1-D convolution over time, tensors time-major (length x channels), weights c_out x c_in x k.
 * The input is first repeated `upsample` times along time (nearest-neighbour), then zero-padded by
 * `pad` rows of real zero (positions outside contribute nothing, as TFLite's input-offset padding):
 * out[l][o] = clamp(requantize(bias[o] + sum_{j,c} w[o][c][j] * (x[l*stride + j - pad][c] +
 * input_offset), multiplier[o], shift[o]) + output_offset, act_min, act_max).
 * Range: as tw_fully_connected_s8 with n_in = c_in * k. */
static void tw_convolve_1d_s8(const int8_t *in, int32_t l_in, int32_t c_in, int8_t *out, int32_t l_out, int32_t c_out,
                              int32_t k, int32_t stride, int32_t pad, int32_t upsample, const int8_t *weights,
                              const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                              int32_t input_offset, int32_t output_offset, int32_t act_min, int32_t act_max)
{
    int32_t l;
    int32_t o;
    int32_t j;
    int32_t c;
    for (l = 0; l < l_out; l++) {
        for (o = 0; o < c_out; o++) {
            int32_t acc = bias[o];
            int64_t q;
            for (j = 0; j < k; j++) {
                int32_t p = l * stride + j - pad;
                const int8_t *x;
                if (p < 0 || p >= l_in * upsample) {
                    continue;
                }
                x = in + (p / upsample) * c_in;
                for (c = 0; c < c_in; c++) {
                    acc += (int32_t)weights[(o * c_in + c) * k + j] * ((int32_t)x[c] + input_offset);
                }
            }
            q = (int64_t)tw_requantize(acc, multiplier[o], shift[o]) + output_offset;
            out[l * c_out + o] = (int8_t)tw_clamp64(q, act_min, act_max);
        }
    }
}
"""

register_kernel(KernelSpec("convolve_1d_s8", _convolve_1d_s8, ("int8",), "int8", LAYER_CONSTS,
                           "1-D convolution (optional nearest x2 upsampling first), per-channel", C_TEMPLATE))
