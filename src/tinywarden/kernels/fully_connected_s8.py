"""CMSIS-NN fully connected layer, per-channel int8 weights."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tinywarden.arith import INT32_MAX, requantize
from tinywarden.errors import ConfigError
from tinywarden.kernels.base import (
    KernelSpec,
    Op,
    ProgramView,
    activation,
    const_shape,
    int_attr,
    per_output,
    register_kernel,
    require,
)

#: constants of a per-channel int8 layer (fully connected or convolution)
LAYER_CONSTS = {"weights": "int8", "bias": "int32", "multiplier": "int32", "shift": "int8"}


#: In the C module a fully connected layer's per-channel multiplier and shift share one uint32 when every multiplier
#: of the module's layers lies in [2^MULT_BITS, 2^31) (quantize_multiplier's, the top bit MULT_BITS implied) and each
#: layer's shifts span at most 2^(32 - MULT_BITS) values: the multiplier's low MULT_BITS bits, and above them the shift
#: less the layer's smallest (``tw_fc_layer_t.requant``, ``shift_base``; ``TW_FC_PACKED``). One byte a channel less
#: than an int32 multiplier and an int8 shift.
MULT_BITS = 30


def packs_requant(op: Op) -> bool:
    """Whether ``op``'s multipliers and shifts fit one uint32 a channel (:data:`MULT_BITS`)."""
    m = np.asarray(op.consts["multiplier"], dtype=np.int64)
    sh = np.asarray(op.consts["shift"], dtype=np.int64)
    return bool(m.size == 0 or (int(m.min()) >= 1 << MULT_BITS and int(m.max()) < 1 << 31
                                and int(sh.max()) - int(sh.min()) < 1 << (32 - MULT_BITS)))


def packed_requant(op: Op) -> tuple[np.ndarray, int]:
    """``op``'s multipliers and shifts as one uint32 a channel, ``(multiplier - 2^MULT_BITS) | ((shift - base) <<
    MULT_BITS)``, and ``base`` (the smallest shift); :func:`packs_requant` must hold."""
    if not packs_requant(op):
        raise ConfigError(f"fully_connected_s8 {op.dst}: its multipliers and shifts do not share a word")
    m = np.asarray(op.consts["multiplier"], dtype=np.int64)
    sh = np.asarray(op.consts["shift"], dtype=np.int64)
    base = int(sh.min()) if sh.size else 0
    return ((m - (1 << MULT_BITS)) | ((sh - base) << MULT_BITS)).astype(np.uint32), base


def _fully_connected_s8(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    x = srcs[0].astype(np.int64) + int(op.attrs["input_offset"])
    c = op.consts
    acc = x @ c["weights"].astype(np.int64).T + c["bias"].astype(np.int64)
    q = requantize(acc, c["multiplier"], c["shift"]) + int(op.attrs["output_offset"])
    return np.clip(q, op.attrs["act_min"], op.attrs["act_max"])


def check_layer(op: Op, weights: tuple[int, ...]) -> None:
    """A per-channel int8 layer writing ``weights[0]`` outputs: its weights have shape ``weights``, bias,
    multiplier and shift one value per output, offsets and activation bounds inside int8 (CMSIS-NN's ranges)."""
    require(const_shape(op, "weights") == weights, f"weights must be {weights}, got {const_shape(op, 'weights')}")
    per_output(op, weights[0], ("bias", "multiplier", "shift"))
    int_attr(op, "input_offset", -255, 255)
    activation(op, "int8", "output_offset")


def _check_fc(op: Op, p: ProgramView) -> None:
    check_layer(op, (p.tensor(op.dst).size, p.tensor(op.src[0]).size))
    require(_kernel_sums_fit(op), "a kernel sum plus its inputs' products may overflow the int32 accumulator")


def _kernel_sums(op: Op) -> np.ndarray:
    """``bias[o] + input_offset * sum_i w[o][i]`` per output (int64)."""
    w = np.asarray(op.consts["weights"], dtype=np.int64)
    return np.asarray(op.consts["bias"], dtype=np.int64) + int(op.attrs["input_offset"]) * w.sum(axis=1)


def _kernel_sums_fit(op: Op) -> bool:
    """Whether every partial sum ``kernel_sum[o] + sum_{i<k} w[o][i] * in[i]`` (``|in| <= 128``) fits the C's int32
    accumulator: the layer's check, so that every program the validation accepts is one the generator emits."""
    w = np.asarray(op.consts["weights"], dtype=np.int64)
    return bool((np.abs(_kernel_sums(op)) + 128 * np.abs(w).sum(axis=1)).max(initial=0) <= INT32_MAX)


def kernel_sum(op: Op) -> Mapping[str, np.ndarray]:
    """CMSIS-NN's kernel sum, folded at generation: ``bias[o] + input_offset * sum_i w[o][i]`` (int32), so the
    C inner loop multiplies the raw int8 inputs, ``acc = kernel_sum[o] + sum_i w[o][i] * in[i]``, the same
    integer as ``bias[o] + sum_i w[o][i] * (in[i] + input_offset)``. Raises :class:`ConfigError` for a layer its
    check refuses (a program that was not validated)."""
    if not _kernel_sums_fit(op):
        raise ConfigError(f"fully_connected_s8 {op.dst}: a kernel sum plus its inputs' products may overflow int32")
    return {"kernel_sum": _kernel_sums(op).astype(np.int32)}


C_TEMPLATE = r"""
//@params: static const tw_fc_layer_t tw_${dst}_layer = {{${input_offset}, ${output_offset}, {${act_min}, ${act_max}}},
//@params: ${fc_quant}, {${weights_shape1}, 1, 1, ${weights_shape0}}, ${c_weights}, ${c_kernel_sum}};
//@call: tw_fully_connected_s8(&tw_${dst}_layer, s->t_${src0}, s->t_${dst}, NULL, NULL);
//@requires: params requant32
/* CMSIS-NN style fully connected layer with per-output-channel weights (layer: its tw_fc_params_t, per-channel
 * quantization, filter_dims (n = n_in inputs, c = n_out outputs), weights (n_out x n_in, row-major) and kernel
 * sums): out[o] = clamp(requantize(bias[o] + sum_i w[o][i] * (in[i] + input_offset), multiplier[o], shift[o])
 * + output_offset, activation); activation.min = output_offset is ReLU. kernel_sum[o] = bias[o] + input_offset *
 * sum_i w[o][i] is folded at generation (CMSIS-NN's kernel sum), so the loop multiplies the raw inputs. Range:
 * input_offset in [-255, 255], output_offset and the activation in [-128, 127]; the check holds
 * |kernel_sum[o]| + 128 * sum_i |w[o][i]| <= INT32_MAX, so the int32 accumulator cannot overflow. With ref != NULL
 * the outputs are not stored: *total += (out[o] - ref[o])^2 instead (a reconstruction layer read only by its
 * sum_sq_diff_s8 score). */
static void tw_fully_connected_s8(const tw_fc_layer_t *layer, const int8_t *input, int8_t *output, const int8_t *ref,
                                  int64_t *total)
{
    const tw_fc_params_t *fc_params = &layer->fc_params;
    const int8_t *weights = layer->weights;
    const int32_t *kernel_sum = layer->kernel_sum;
    int32_t n_in = layer->filter_dims.n;
    int32_t o;
    uint64_t sq = 0u; /* (d * d) <= 2^16 per output */
    for (o = 0; o < layer->filter_dims.c; o++) {
        const int8_t *w = weights + o * n_in;
        int32_t acc = kernel_sum[o];
        const int8_t *x = input;
        const int8_t *end = w + (n_in & ~3);
#if defined(__ARM_FEATURE_DSP) && defined(__GNUC__)
        /* four products a pass in two dual multiply-accumulates (CMSIS-NN's read_and_pad: SXTB16 takes bytes 0 and
         * 2, and 1 and 3 after a rotation by one byte); the same integer sum, as no partial sum leaves int32 */
        while (w != end) {
            uint32_t wv;
            uint32_t xv;
            __builtin_memcpy(&wv, w, sizeof wv);
            __builtin_memcpy(&xv, x, sizeof xv);
            acc = __builtin_arm_smlad(__builtin_arm_sxtb16(wv), __builtin_arm_sxtb16(xv), acc);
            acc = __builtin_arm_smlad(__builtin_arm_sxtb16((wv >> 8) | (wv << 24)),
                                      __builtin_arm_sxtb16((xv >> 8) | (xv << 24)), acc);
            w += 4;
            x += 4;
        }
#elif defined(__ARM_ARCH_ISA_THUMB) && __ARM_ARCH_ISA_THUMB == 1
        /* Thumb-1 (Cortex-M0/M0+, flash the tighter budget): every product in the one-a-pass loop below */
#else
        while (w != end) { /* four products a pass: the loop's count and branch amortized */
            acc += (int32_t)*w++ * (int32_t)*x++;
            acc += (int32_t)*w++ * (int32_t)*x++;
            acc += (int32_t)*w++ * (int32_t)*x++;
            acc += (int32_t)*w++ * (int32_t)*x++;
        }
#endif
        end += n_in & 3;
        while (w != end) {
            acc += (int32_t)*w++ * (int32_t)*x++;
        }
#if TW_FC_PACKED
        {
            uint32_t rq = layer->requant[o]; /* the multiplier's low TW_MULT_BITS bits, the shift above them */
            acc = tw_requantize32(acc, (int32_t)((rq & (((uint32_t)1 << TW_MULT_BITS) - 1u)) |
                                                 ((uint32_t)1 << TW_MULT_BITS)),
                                  layer->shift_base + (int32_t)(rq >> TW_MULT_BITS));
        }
#else
        acc = tw_requantize32(acc, layer->quant_params.multiplier[o], layer->quant_params.shift[o]);
#endif
        acc = tw_offset_clamp(acc, fc_params->output_offset, fc_params->activation.min, fc_params->activation.max);
        if (ref != NULL) {
            int32_t d = acc - (int32_t)ref[o];
            sq += (uint32_t)(d * d);
        } else {
            output[o] = (int8_t)acc;
        }
    }
    if (total != NULL) {
        *total += (int64_t)sq;
    }
}
"""

register_kernel(KernelSpec("fully_connected_s8", _fully_connected_s8, ("int8",), "int8", LAYER_CONSTS,
                           "CMSIS-NN fully connected, per-channel weights", C_TEMPLATE, check=_check_fc,
                           c_tables=kernel_sum))
