"""Score: AR forecast residuals of the int16 window, as per-channel z-scores."""

from __future__ import annotations

import numpy as np

from tinywarden.arith import requantize
from tinywarden.kernels.base import (
    Op,
    ProgramView,
    const_shape,
    int_attr,
    requant_multipliers,
    requant_shifts,
    require,
    score_kernel,
)

#: Largest per-channel mean robust z-score of ``ar_residual_s16`` (its square, summed over up to
#: :data:`AR_MAX_CHANNELS` channels, stays within int64).
AR_Z_MAX = 2**24
#: The most channels ``ar_residual_s16`` sums the squared z-scores of (2^14 x 2^48 = 2^62 < 2^63).
AR_MAX_CHANNELS = 2**14
#: Largest |bias| of ``ar_residual_s16``: a forecast miss |e| is then at most 2^35 (q 2^20) + 16 * 2^46 (the lags)
#: + 2^50 = 2^51 + 2^35, and its sum over a horizon of fewer than MAX_WINDOW = 2^12 steps stays within int64.
AR_BIAS_MAX = 2**50


def _ar_residual(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    """Per channel, the mean absolute AR forecast miss over the last ``horizon`` steps of the window
    (N, W, C), requantized to a z-score; then the max (``aggregate`` 0) or sum of squares (1) over channels."""
    x = srcs[0].astype(np.int64)
    a, c = op.attrs, op.consts
    order, horizon, n_ch = int(a["order"]), int(a["horizon"]), x.shape[2]
    coef = c["coef"].astype(np.int64).reshape(n_ch, order)
    t0 = x.shape[1] - horizon
    acc = x[:, t0:, :] * (1 << int(a["frac_bits"])) - c["bias"].astype(np.int64)
    for i in range(order):
        acc -= x[:, t0 - i - 1 : x.shape[1] - i - 1, :] * coef[:, i]
    total = np.abs(acc).sum(axis=1)  # (N, C)
    z = np.minimum(requantize(total >> c["pre_shift"].astype(np.int64), c["multiplier"], c["shift"]), AR_Z_MAX)
    return z.max(axis=1) if int(a["aggregate"]) == 0 else (z * z).sum(axis=1)


def _check_ar(op: Op, p: ProgramView) -> None:
    int_attr(op, "shift", 0, 62)
    require(op.src == ("window",), "it reads the window")
    order = int_attr(op, "order", 1, 16)
    int_attr(op, "horizon", 1, p.window - order)
    int_attr(op, "frac_bits", 0, 20)
    int_attr(op, "aggregate", 0, 1)
    ch = p.n_channels
    require(ch <= AR_MAX_CHANNELS, f"it reads at most {AR_MAX_CHANNELS} channels (its int64 sum of squared "
            f"z-scores), not {ch}")
    require(const_shape(op, "coef") == (ch * order,), f"coef must hold {ch} x {order} coefficients")
    bad = [n for n in ("bias", "pre_shift", "multiplier", "shift") if const_shape(op, n) != (ch,)]
    require(not bad, f"constant(s) {', '.join(bad)} must have one entry per channel ({ch})")
    requant_shifts(op, "shift")
    requant_multipliers(op, "multiplier")  # z >= 0: the C's clamp of z to [0, AR_Z_MAX] is the Python's min
    bias = np.asarray(op.consts["bias"])
    require(not bias.size or (int(bias.min()) >= -AR_BIAS_MAX and int(bias.max()) <= AR_BIAS_MAX),
            f"bias must lie in [-{AR_BIAS_MAX}, {AR_BIAS_MAX}] (the int64 sums of the forecast misses)")
    pre = np.asarray(op.consts["pre_shift"])
    require(bool(np.all((pre >= 0) & (pre <= 62))), "pre_shift must be in [0, 62]")


C_TEMPLATE = r"""
//@call: tw_ar_residual_s16(&s->ring[0][0], (int32_t)s->head, ${window}, ${n_channels}, ${order}, ${horizon},
//@+ ${frac_bits}, ${c_coef}, ${c_bias}, ${c_pre_shift}, ${c_multiplier}, ${c_shift}, ${aggregate}, ${shift},
//@+ s->t_${dst});
//@requires: arith clamp64 score
/* AR forecast misses over the window, oldest row first. Per channel c, over the last `horizon` steps t:
 *   e[t] = q[t] * 2^frac_bits - sum_{i<order} coef[c][i] * q[t-1-i] - bias[c]     (Q frac_bits)
 *   z[c] = min(requantize(sum_t |e[t]| >> pre_shift[c], multiplier[c], shift_c[c]), TW_AR_Z_MAX)
 * score = sat32(T >> shift) with T = max_c z[c] (aggregate 0) or sum_c z[c]^2 (aggregate 1).
 * Range: horizon <= w - order, frac_bits <= 20, coef any int32, |bias| <= 2^50 (so sum_t |e[t]| < 2^12 (2^51 +
 * 2^35) fits int64), order <= 16, n_ch <= 2^14, multiplier in [0, INT32_MAX] (so z >= 0). */
static void tw_ar_residual_s16(const int16_t *ring, int32_t head, int32_t w, int32_t n_ch, int32_t order,
                               int32_t horizon, int32_t frac_bits, const int32_t *coef, const int64_t *bias,
                               const int32_t *pre_shift, const int32_t *multiplier, const int8_t *shift_c,
                               int32_t aggregate, int32_t shift, int32_t *score)
{
    int64_t total = 0;
    int32_t c;
    for (c = 0; c < n_ch; c++) {
        int64_t sum = 0;
        int64_t z;
        int32_t t;
        for (t = w - horizon; t < w; t++) {
            int32_t r = (head + t < w) ? head + t : head + t - w;
            int64_t e = (int64_t)ring[r * n_ch + c] * ((int64_t)1 << frac_bits) - bias[c];
            int32_t i;
            for (i = 0; i < order; i++) {
                int32_t lag = head + t - 1 - i; /* t - 1 - i >= 0, so lag >= head >= 0 */
                lag = (lag < w) ? lag : lag - w;
                e -= (int64_t)ring[lag * n_ch + c] * coef[c * order + i];
            }
            sum += (e < 0) ? -e : e;
        }
        z = tw_clamp64(tw_requantize(sum >> pre_shift[c], multiplier[c], shift_c[c]), 0, (int64_t)TW_AR_Z_MAX);
        if (aggregate == 0) {
            total = (z > total) ? z : total;
        } else {
            total += z * z;
        }
    }
    score[0] = tw_score_from_total(total, shift);
}
"""

score_kernel(
    "ar_residual_s16", _ar_residual, ("int16",),
    {"coef": "int32", "bias": "int64", "pre_shift": "int32", "multiplier": "int32", "shift": "int8"},
    "per channel z = min(requantize(sum_t |q[t] 2^F - sum_i coef_i q[t-i] - bias| >> pre_shift), 2^24); "
    "score = sat32((max_c z or sum_c z^2) >> shift)", C_TEMPLATE,
    limits={"TW_AR_Z_MAX": AR_Z_MAX}, check=_check_ar)
