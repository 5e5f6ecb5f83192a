"""1-D convolution (optional nearest x2 upsampling first), per-channel int8 weights."""

from __future__ import annotations

import numpy as np

from tinywarden.arith import INT32_MAX, requantize
from tinywarden.kernels.base import (
    KernelSpec,
    Op,
    ProgramView,
    const_shape,
    int_attr,
    register_kernel,
    require,
)
from tinywarden.kernels.fully_connected_s8 import LAYER_CONSTS, check_layer


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


def _check_conv(op: Op, p: ProgramView) -> None:
    src, dst, w = p.tensor(op.src[0]).shape, p.tensor(op.dst).shape, const_shape(op, "weights")
    require(len(src) == 2 and len(dst) == 2 and len(w) == 3 and w[2] >= 1,
            "input and output must be (length, channels), weights (c_out, c_in, k)")
    check_layer(op, (dst[1], src[1], w[2]))
    upsample = int_attr(op, "upsample", 1, 8)
    stride = int_attr(op, "stride", 1, src[0] * upsample)
    pad = int_attr(op, "pad", 0, w[2] - 1)
    l_out = (src[0] * upsample + 2 * pad - w[2]) // stride + 1
    require(dst[0] == l_out, f"output length must be {l_out} for input length {src[0]}, got {dst[0]}")
    # every partial sum bias[o] + products (|x + input_offset| <= 128 + |input_offset|) fits the C's int32 accumulator
    reach = np.abs(op.consts["bias"].astype(np.int64)) + (128 + abs(int(op.attrs["input_offset"]))) * np.abs(
        op.consts["weights"].astype(np.int64)).sum(axis=(1, 2))
    require(int(reach.max(initial=0)) <= INT32_MAX, "a bias plus its inputs' products may overflow the int32 sum")


C_TEMPLATE = r"""
//@params: static const tw_conv_params_t tw_${dst}_conv_params = {${input_offset}, ${output_offset}, ${stride}, ${pad},
//@params: ${upsample}, {${act_min}, ${act_max}}};
//@params: static const tw_per_channel_quant_params_t tw_${dst}_quant_params = {${c_multiplier}, ${c_shift}};
//@params: static const tw_dims_t tw_${dst}_input_dims = {1, 1, ${src0_shape0}, ${src0_shape1}};
//@params: static const tw_dims_t tw_${dst}_filter_dims = {${weights_shape0}, 1, ${weights_shape2}, ${weights_shape1}};
//@params: static const tw_dims_t tw_${dst}_output_dims = {1, 1, ${dst_shape0}, ${dst_shape1}};
//@call: tw_convolve_1d_s8(&tw_${dst}_conv_params, &tw_${dst}_quant_params, &tw_${dst}_input_dims, s->t_${src0},
//@+ &tw_${dst}_filter_dims, ${c_weights}, ${c_bias}, &tw_${dst}_output_dims, s->t_${dst});
//@requires: params arith clamp64
/* 1-D convolution over time, tensors time-major (w = length x c = channels), weights c_out x c_in x k
 * (filter_dims: n = c_out, w = k, c = c_in). The input is first repeated `upsample` times along time
 * (nearest-neighbour), then zero-padded by `padding` rows of real zero (positions outside contribute
 * nothing, as TFLite's input-offset padding): out[l][o] = clamp(requantize(bias[o] + sum_{j,c}
 * w[o][c][j] * (x[l*stride + j - padding][c] + input_offset), multiplier[o], shift[o]) + output_offset,
 * activation). Range: |bias[o]| + (128 + |input_offset|) * sum_{c,j} |w[o][c][j]| <= INT32_MAX (the check's), so
 * the int32 sum equals the Python reference's int64 one; input_offset in [-255, 255], output_offset and the
 * activation in [-128, 127]. */
static void tw_convolve_1d_s8(const tw_conv_params_t *conv_params, const tw_per_channel_quant_params_t *quant_params,
                              const tw_dims_t *input_dims, const int8_t *in, const tw_dims_t *filter_dims,
                              const int8_t *weights, const int32_t *bias, const tw_dims_t *output_dims, int8_t *out)
{
    int32_t l_in = input_dims->w;
    int32_t c_in = input_dims->c;
    int32_t k = filter_dims->w;
    int32_t c_out = output_dims->c;
    int32_t upsample = conv_params->upsample;
    int32_t l;
    int32_t o;
    int32_t j;
    int32_t c;
    for (l = 0; l < output_dims->w; l++) {
        for (o = 0; o < c_out; o++) {
            int32_t acc = bias[o];
            int64_t q;
            for (j = 0; j < k; j++) {
                int32_t p = l * conv_params->stride + j - conv_params->padding;
                const int8_t *x;
                if (p < 0 || p >= l_in * upsample) {
                    continue;
                }
                x = in + (p / upsample) * c_in;
                for (c = 0; c < c_in; c++) {
                    acc += (int32_t)weights[(o * c_in + c) * k + j] * ((int32_t)x[c] + conv_params->input_offset);
                }
            }
            q = (int64_t)tw_requantize(acc, quant_params->multiplier[o], quant_params->shift[o]) +
                conv_params->output_offset;
            out[l * c_out + o] = (int8_t)tw_clamp64(q, conv_params->activation.min, conv_params->activation.max);
        }
    }
}
"""

register_kernel(KernelSpec("convolve_1d_s8", _convolve_1d_s8, ("int8",), "int8", LAYER_CONSTS,
                           "1-D convolution (optional nearest x2 upsampling first), per-channel", C_TEMPLATE,
                           check=_check_conv))
