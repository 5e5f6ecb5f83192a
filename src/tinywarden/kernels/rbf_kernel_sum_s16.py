"""Score: one-class SVM with an RBF kernel read from a Q15 table of 2**-u."""

from __future__ import annotations

import numpy as np

from tinywarden.arith import INT32_MAX, requantize
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

#: Support vectors are int8 steps of ``2**sv_shift`` int16 input steps: ``127 << 8`` spans the int16 range.
RBF_MAX_SV_SHIFT = 8


def _rbf_kernel_sum(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    """``(sum_j alpha_j (T[0] - k_j)) >> 15 + max(0, min_j u_j - tail_from)``: the RBF kernel
    ``k_j = 2**-u_j`` is read from the Q15 table ``T`` of ``2**(-f / 2**frac_bits)``, ``u_j`` is the
    requantized squared distance to support vector ``j`` (stored as int8 steps of ``2**sv_shift`` input steps:
    half the flash of int16 vectors). From ``u = tail_from`` on every ``k`` is 0 and the first term is at its
    top, so the second one keeps ranking windows by their nearest support vector (as the float score still
    does, with kernel values far below Q15)."""
    x = srcs[0].astype(np.int64)  # (N, D)
    c = op.consts
    table = c["exp2"].astype(np.int64)
    bits = int(op.attrs["frac_bits"])
    total = np.zeros(len(x), dtype=np.int64)
    nearest = np.full(len(x), INT32_MAX, dtype=np.int64)
    svs = c["support_vectors"].astype(np.int64) << int(op.attrs["sv_shift"])
    for v, a in zip(svs, c["alpha"].astype(np.int64), strict=True):
        d2 = ((x - v) ** 2).sum(axis=1)
        u = requantize(d2 >> int(c["pre_shift"][0]), c["multiplier"][0], c["shift"][0])  # >= 0
        whole = u >> bits
        k = np.where(whole < 32, table[u & ((1 << bits) - 1)] >> np.minimum(whole, 31), 0)
        total += a * (table[0] - k)
        nearest = np.minimum(nearest, u)
    return (total >> 15) + np.maximum(0, nearest - int(op.attrs["tail_from"]))


def _check_rbf(op: Op, p: ProgramView) -> None:
    int_attr(op, "shift", 0, 62)
    bits = int_attr(op, "frac_bits", 1, 12)
    int_attr(op, "tail_from", 0, INT32_MAX)
    int_attr(op, "sv_shift", 0, RBF_MAX_SV_SHIFT)
    n = p.tensor(op.src[0]).size
    sv = const_shape(op, "support_vectors")
    require(len(sv) == 2 and sv[0] >= 1 and sv[1] == n, f"support_vectors must be (n_sv, {n})")
    require(const_shape(op, "alpha") == (sv[0],) and bool(np.all(np.asarray(op.consts["alpha"]) >= 0)),
             "alpha must hold one non-negative weight per support vector")
    table = np.asarray(op.consts["exp2"])
    require(const_shape(op, "exp2") == (2**bits,) and bool(np.all(table >= 0)) and int(table[0]) == int(table.max()),
             f"exp2 must hold 2**frac_bits = {2**bits} non-negative entries, the first the largest (2**0)")
    require(all(const_shape(op, k) == (1,) for k in ("pre_shift", "multiplier", "shift"))
             and 0 <= int(op.consts["pre_shift"][0]) <= 62, "pre_shift, multiplier, shift must be one value each")
    requant_shifts(op, "shift")
    requant_multipliers(op, "multiplier")  # u >= 0: the table's shift u >> frac_bits is never negative


C_TEMPLATE = r"""
//@call: tw_rbf_kernel_sum_s16(s->t_${src0}, ${src0_size}, ${c_support_vectors}, ${support_vectors_shape0}, ${sv_shift},
//@+ ${c_alpha}, ${c_exp2}, ${frac_bits}, ${tail_from}, ${c_pre_shift}, ${c_multiplier}, ${c_shift}, ${shift},
//@+ s->t_${dst});
//@requires: arith score
/* One-class SVM with an RBF kernel (support vectors: n_sv x n, row-major, int8 in steps of 2^sv_shift input
 * steps). Per support vector j:
 *   u = requantize(sum_i (x[i] - (sv[j][i] << sv_shift))^2 >> pre_shift, multiplier, shift_c)
 *                                                                     (gamma log2(e) d2, Q frac_bits)
 *   k = pow2[u & (2^frac_bits - 1)] >> (u >> frac_bits), or 0 from 2^-32 on      (2^-u in Q15)
 * score = sat32(((sum_j alpha[j] * (pow2[0] - k)) >> 15 + max(0, min_j u - tail_from)) >> shift): far
 * from every support vector, high score; beyond tail_from every k is 0, and the nearest support vector
 * still ranks the windows there. Range: multiplier in [0, INT32_MAX] (so u >= 0), alpha >= 0, the pow2 table
 * has 2^frac_bits entries (Q15), pow2[0] the largest (so every pow2[0] - k >= 0 and the score is >= 0),
 * sv_shift <= TW_RBF_MAX_SV_SHIFT (|sv * 2^sv_shift| <= 2^15, so |d| <= 2^16), n * 2^32 < 2^63. */
static void tw_rbf_kernel_sum_s16(const int16_t *x, int32_t n, const int8_t *sv, int32_t n_sv, int32_t sv_shift,
                                  const int16_t *alpha, const int16_t *pow2, int32_t frac_bits, int32_t tail_from,
                                  const int32_t *pre_shift, const int32_t *multiplier, const int8_t *shift_c,
                                  int32_t shift, int32_t *score)
{
    int64_t total = 0;
    int64_t nearest = INT32_MAX;
    int32_t step = (int32_t)1 << sv_shift;
    int32_t j;
    for (j = 0; j < n_sv; j++) {
        const int8_t *v = sv + j * n;
        int64_t d2 = 0;
        int32_t u;
        int32_t whole;
        int64_t k;
        int32_t i;
        for (i = 0; i < n; i++) {
            int32_t d = (int32_t)x[i] - (int32_t)v[i] * step;
            d2 += (int64_t)d * d;
        }
        u = tw_requantize(d2 >> pre_shift[0], multiplier[0], shift_c[0]);
        whole = u >> frac_bits;
        k = (whole < 32) ? (int64_t)(pow2[u & (((int32_t)1 << frac_bits) - 1)] >> whole) : 0;
        total += (int64_t)alpha[j] * ((int64_t)pow2[0] - k);
        nearest = (u < nearest) ? u : nearest;
    }
    total = (total >> 15) + ((nearest > tail_from) ? nearest - tail_from : 0);
    score[0] = tw_score_from_total(total, shift);
}
"""

score_kernel(
    "rbf_kernel_sum_s16", _rbf_kernel_sum, ("int16",),
    {"support_vectors": "int8", "alpha": "int16", "exp2": "int16", "pre_shift": "int32",
     "multiplier": "int32", "shift": "int8"},
    "one-class SVM: score = sat32(((sum_j alpha_j (T[0] - 2**-u_j from table T)) >> 15 "
    "+ max(0, min_j u_j - tail_from)) >> shift), u_j = requantize(|q - (sv_j << sv_shift)|**2 >> pre_shift)",
    C_TEMPLATE, limits={"TW_RBF_MAX_SV_SHIFT": RBF_MAX_SV_SHIFT}, check=_check_rbf)
