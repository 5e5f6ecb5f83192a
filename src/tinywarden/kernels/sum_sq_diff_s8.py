"""Reconstruction score: sum of squared int8 differences."""

from __future__ import annotations

import numpy as np

from tinywarden.kernels.base import (
    Op,
    ProgramView,
    int_attr,
    require,
    score_kernel,
)


def _sum_sq_diff(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    n = len(srcs[0])
    d = srcs[0].reshape(n, -1).astype(np.int64) - srcs[1].reshape(n, -1).astype(np.int64)
    return (d * d).sum(axis=1)


def _check(op: Op, p: ProgramView) -> None:
    int_attr(op, "shift", 0, 62)
    require(len(op.src) == 2 and p.tensor(op.src[0]).size == p.tensor(op.src[1]).size,
            "both inputs must hold the same number of values")


C_TEMPLATE = r"""
//@call: tw_sum_sq_diff_s8(s->t_${src0}, s->t_${src1}, ${src0_size}, ${shift}, s->t_${dst});
//@requires: score
/* Reconstruction error: score = sat32((sum_i (a[i] - b[i])^2) >> shift). */
static void tw_sum_sq_diff_s8(const int8_t *a, const int8_t *b, int32_t n, int32_t shift, int32_t *score)
{
    int64_t total = 0;
    int32_t i;
    for (i = 0; i < n; i++) {
        int32_t d = (int32_t)a[i] - (int32_t)b[i];
        total += (int64_t)(d * d);
    }
    score[0] = tw_score_from_total(total, shift);
}
"""

score_kernel("sum_sq_diff_s8", _sum_sq_diff, ("int8", "int8"), {}, "score = sat32(sum (a - b)**2 >> shift)",
             C_TEMPLATE, check=_check)
