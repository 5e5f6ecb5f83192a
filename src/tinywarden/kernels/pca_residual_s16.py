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
/* The input's part of the PCA score: acc[j] += sum_{i < n} w[j * stride + i] in[i] for each of the k axes j
 * (in: n consecutive inputs, w their columns of the int8 axes, stride the axes' full width); returns
 * sum in[i]^2. Called once on the whole input, or, when the feature stream computes the input
 * (TW_PCA_IN_STREAM), once per channel's features as they are requantized: the input is never stored. Two
 * axes a pass (each input read once for both; one on a Thumb-1 core, flash first). Range: the full width
 * <= 515 keeps every acc[j] within int32. */
static int64_t tw_pca_project_s16(const int16_t *in, int32_t n, const int8_t *w, int32_t stride, int32_t k,
                                  int32_t *acc)
{
    int64_t energy = 0;
    int32_t i;
    int32_t j = 0;
    for (i = 0; i < n; i++) {
        energy += (int64_t)in[i] * in[i];
    }
#if !(defined(__ARM_ARCH_ISA_THUMB) && __ARM_ARCH_ISA_THUMB == 1)
    for (; j + 1 < k; j += 2) {
        const int8_t *w0 = w + j * stride;
        const int8_t *w1 = w0 + stride;
        int32_t a0 = acc[j];
        int32_t a1 = acc[j + 1];
        for (i = 0; i < n; i++) {
            int32_t x = in[i];
            a0 += (int32_t)w0[i] * x;
            a1 += (int32_t)w1[i] * x;
        }
        acc[j] = a0;
        acc[j + 1] = a1;
    }
#endif
    for (; j < k; j++) {
        const int8_t *wj = w + j * stride;
        int32_t a = acc[j];
        for (i = 0; i < n; i++) {
            a += (int32_t)wj[i] * (int32_t)in[i];
        }
        acc[j] = a;
    }
    return energy;
}

/* PCA reconstruction error without a decoder, from the projections acc[j] = sum_i w[j][i] q[i] and
 * total = sum q^2 (tw_pca_project_s16). r_j = clamp(requantize(acc[j], multiplier[j], shift[j]), +-TW_PCA_R_LIMIT)
 * (in acc's place) is the centred input's coordinate along int8 axis j, in input steps; the int8 axes are only nearly
 * orthonormal, so the energy inside their span is r^T (I + D) r, D = (W W^T)^-1 - I, kept as its upper
 * triangle (row-major, diagonal first in each row) scaled by 2^gram_shift. Then
 * score = sat32(max(0, sum q^2 - sum r_j^2 - round(sum_j r_j t_j / 2^gram_shift)) >> shift) with
 * t_j = D_jj r_j + 2 sum_{l>j} D_jl r_l. Range: n_out <= TW_PCA_MAX_AXES and |r_j| <= 2^20 (the clamp: near-unit
 * axes never reach it, large shifts in a hand-made program would) keep every int64 sum below 2^62. */
static void tw_pca_score_s16(int32_t *acc, int64_t total, int32_t n_out, const int32_t *multiplier,
                             const int8_t *shift, const int8_t *gram, int32_t gram_shift, int32_t score_shift,
                             int32_t *score)
{
    int64_t cross = 0;
    int32_t j;
    int32_t l;
    for (j = 0; j < n_out; j++) {
        int32_t r = tw_requantize(acc[j], multiplier[j], shift[j]);
        acc[j] = (r > TW_PCA_R_LIMIT) ? TW_PCA_R_LIMIT : ((r < -TW_PCA_R_LIMIT) ? -TW_PCA_R_LIMIT : r);
        total -= (int64_t)acc[j] * acc[j];
    }
    for (j = 0; j < n_out; j++) {
        int64_t t = (int64_t)gram[0] * acc[j];
        for (l = j + 1; l < n_out; l++) {
            t += 2 * (int64_t)gram[l - j] * acc[l];
        }
        gram += n_out - j;
        cross += t * acc[j];
    }
    total -= tw_round_shift64(cross, gram_shift);
    score[0] = tw_score_from_total(total > 0 ? total : 0, score_shift);
}
#if !TW_PCA_IN_STREAM

/* The PCA score of a stored int16 input (tw_pca_project_s16 over all of it, then tw_pca_score_s16); TW_PCA_AXES
 * (<= TW_PCA_MAX_AXES) is the most axes of the module's PCA ops, the projections' stack. */
static void tw_pca_residual_s16(const int16_t *in, int32_t n_in, int32_t n_out, const int8_t *weights,
                                const int32_t *multiplier, const int8_t *shift, const int8_t *gram,
                                int32_t gram_shift, int32_t score_shift, int32_t *score)
{
    int32_t acc[TW_PCA_AXES];
    int32_t j;
    int64_t total;
    for (j = 0; j < n_out; j++) {
        acc[j] = 0;
    }
    total = tw_pca_project_s16(in, n_in, weights, n_in, n_out, acc);
    tw_pca_score_s16(acc, total, n_out, multiplier, shift, gram, gram_shift, score_shift, score);
}
#endif
"""


#: The parameters through which the feature stream's finish hands its projections on (:func:`in_stream_call`).
IN_STREAM_PARAMS = "int32_t *acc, int64_t *total"


def in_stream_call(weights: str, n_in: int, k: int, f: int) -> str:
    """The C statement that adds one channel's ``f`` requantized features ``v`` (channel ``c``) to the
    projections ``acc`` and their energy to ``*total`` (:data:`IN_STREAM_PARAMS`), for a ``pca_residual_s16``
    op whose input the feature stream computes (``weights``: its int8 axes' table, ``k x n_in``)."""
    return f"*total += tw_pca_project_s16(v, {f}, {weights} + c * {f}, {n_in}, {k}, acc);"


def in_stream_block(op_fields: dict[str, object], finish: str) -> str:
    """The window's C for a ``pca_residual_s16`` op (call fields ``op_fields``) whose input the feature stream
    computes: zeroed projections, ``finish`` (the stream's finish, called with ``acc, &total``) and the score."""
    f = op_fields
    k = f["weights_shape0"]
    return "\n".join([
        "    {", f"        int32_t acc[{k}];", "        int64_t total = 0;", "        int32_t j;",
        f"        for (j = 0; j < {k}; j++) {{", "            acc[j] = 0;", "        }",
        f"        {finish}(s, acc, &total);",
        f"        tw_pca_score_s16(acc, total, {k}, {f['c_multiplier']}, {f['c_shift']}, {f['c_gram']}, "
        f"{f['gram_shift']}, {f['shift']}, s->t_{f['dst']});", "    }"])


score_kernel(
    "pca_residual_s16", _pca_residual, ("int16",),
    {"weights": "int8", "multiplier": "int32", "shift": "int8", "gram": "int8"},
    "PCA: r_j = clamp(requantize(sum_i w_ji q_i), +-2^20); score = sat32(max(0, sum q^2 - sum r_j^2 "
    "- round(r^T D r / 2^gram_shift)) >> shift), D the int8 upper triangle 'gram'",
    C_TEMPLATE, limits={"TW_PCA_MAX_AXES": PCA_MAX_AXES, "TW_PCA_AXES": PCA_MAX_AXES, "TW_PCA_IN_STREAM": 0,
                         "TW_PCA_R_LIMIT": PCA_R_LIMIT},
    op_limits=lambda op: {"TW_PCA_AXES": int(op.consts["weights"].shape[0])}, check=_check_pca)
