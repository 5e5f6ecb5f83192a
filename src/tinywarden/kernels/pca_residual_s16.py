"""Score: PCA reconstruction error without a decoder."""

from __future__ import annotations

import numpy as np

from tinywarden.arith import requantize, round_shift
from tinywarden.kernels.base import (
    Op,
    ProgramView,
    const_shape,
    int_attr,
    requant_shifts,
    require,
    score_kernel,
)

#: ``pca_residual_s16``: inputs * 127 * 32768 < 2**31 keeps the int32 accumulator exact; at most 64 axes.
PCA_MAX_INPUTS = 515


PCA_MAX_AXES = 64


#: |r_j| <= 1.05 * sqrt(515) * 32768 < 2**20 for near-unit axes; the clamp makes the int64 bounds hold always.
PCA_R_LIMIT = 2**20


def _pca_residual(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    """Energy of the centred int16 input outside the span of the int8 principal axes, floored at 0.

    ``r_j = requantize(sum_i w_ji q_i)`` is the input's coordinate along axis ``j`` in input steps. For
    orthonormal axes the error of projecting onto them is ``|q|**2 - |r|**2`` (no decoder, no second copy
    of the weights); the int8 axes are only nearly orthonormal, so the energy inside their span is
    ``r^T (I + D) r`` with ``D = (W W^T)^-1 - I`` stored as an int8 upper triangle scaled by
    ``2**gram_shift`` (without it, large ``k`` loses ranking quality to the weights' rounding).
    """
    q = srcs[0].astype(np.int64)
    c = op.consts
    r = np.clip(requantize(q @ c["weights"].astype(np.int64).T, c["multiplier"], c["shift"]),
                -PCA_R_LIMIT, PCA_R_LIMIT)
    k = r.shape[1]
    gram = np.zeros((k, k), dtype=np.int64)
    gram[np.triu_indices(k)] = c["gram"]
    t = gram.diagonal() * r + 2 * (r @ np.triu(gram, 1).T)
    cross = round_shift((t * r).sum(axis=1), int(op.attrs["gram_shift"]))
    return np.maximum((q * q).sum(axis=1) - (r * r).sum(axis=1) - cross, 0)


def _check_pca(op: Op, p: ProgramView) -> None:
    n_in = int(np.prod(p.tensor(op.src[0]).shape))
    k = const_shape(op, "weights")[0]
    require(const_shape(op, "weights") == (k, n_in) and 1 <= k <= PCA_MAX_AXES,
             f"weights must be (k <= {PCA_MAX_AXES}, {n_in})")
    require(const_shape(op, "multiplier") == (k,) and const_shape(op, "shift") == (k,),
            "one multiplier and shift per axis")
    requant_shifts(op, "shift")
    require(const_shape(op, "gram") == (k * (k + 1) // 2,), "gram must be the k x k upper triangle")
    require(n_in <= PCA_MAX_INPUTS, f"{n_in} inputs: at most {PCA_MAX_INPUTS} keep the int32 accumulator exact")
    int_attr(op, "gram_shift", 1, 40)


C_TEMPLATE = r"""
//@call: tw_pca_residual_s16(s->t_${src0}, ${weights_shape1}, ${weights_shape0}, ${c_weights}, ${c_multiplier},
//@+ ${c_shift}, ${c_gram}, ${gram_shift}, ${shift}, s->t_${dst});
//@requires: arith score round64
/* PCA reconstruction error without a decoder. r_j = requantize(sum_i w[j][i] q[i], multiplier[j],
 * shift[j]) is the centred input's coordinate along int8 axis j, in input steps; the int8 axes are
 * only nearly orthonormal, so the energy inside their span is r^T (I + D) r, D = (W W^T)^-1 - I, kept
 * as its upper triangle (row-major, diagonal first in each row) scaled by 2^gram_shift. Then
 * score = sat32(max(0, sum q^2 - sum r_j^2 - round(sum_j r_j t_j / 2^gram_shift)) >> shift) with
 * t_j = D_jj r_j + 2 sum_{l>j} D_jl r_l. Range: n_in <= 515 keeps |acc| < 2^31; n_out <= TW_PCA_MAX_AXES and
 * |r_j| < 2^23 keep every int64 sum below 2^62. */
static void tw_pca_residual_s16(const int16_t *in, int32_t n_in, int32_t n_out, const int8_t *weights,
                                const int32_t *multiplier, const int8_t *shift, const int8_t *gram,
                                int32_t gram_shift, int32_t score_shift, int32_t *score)
{
    int32_t r[TW_PCA_MAX_AXES];
    int64_t total = 0;
    int64_t cross = 0;
    int32_t i;
    int32_t j;
    int32_t l;
    for (i = 0; i < n_in; i++) {
        total += (int64_t)in[i] * in[i];
    }
    for (j = 0; j < n_out; j++) {
        const int8_t *w = weights + j * n_in;
        int32_t acc = 0;
        for (i = 0; i < n_in; i++) {
            acc += (int32_t)w[i] * (int32_t)in[i];
        }
        r[j] = tw_requantize(acc, multiplier[j], shift[j]);
        total -= (int64_t)r[j] * r[j];
    }
    for (j = 0; j < n_out; j++) {
        int64_t t = (int64_t)gram[0] * r[j];
        for (l = j + 1; l < n_out; l++) {
            t += 2 * (int64_t)gram[l - j] * r[l];
        }
        gram += n_out - j;
        cross += t * r[j];
    }
    total -= tw_round_shift64(cross, gram_shift);
    score[0] = tw_score_from_total(total > 0 ? total : 0, score_shift);
}
"""

score_kernel(
    "pca_residual_s16", _pca_residual, ("int16",),
    {"weights": "int8", "multiplier": "int32", "shift": "int8", "gram": "int8"},
    "PCA: r_j = clamp(requantize(sum_i w_ji q_i), +-2^20); score = sat32(max(0, sum q^2 - sum r_j^2 "
    "- round(r^T D r / 2^gram_shift)) >> shift), D the int8 upper triangle 'gram'",
    C_TEMPLATE, limits={"TW_PCA_MAX_AXES": PCA_MAX_AXES}, check=_check_pca)
