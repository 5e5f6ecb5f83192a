"""Score: sum of squared int16 inputs."""

from __future__ import annotations

import numpy as np

from tinywarden.kernels.base import (
    Op,
    ProgramView,
    int_attr,
    score_kernel,
)


def _sum_sq(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    x = srcs[0].astype(np.int64)
    return (x * x).sum(axis=1)


def _check(op: Op, p: ProgramView) -> None:
    int_attr(op, "shift", 0, 62)


C_TEMPLATE = r"""
//@call: tw_sum_sq_s16(s->t_${src0}, ${src0_size}, ${shift}, s->t_${dst});
//@requires: score
/* Sum of squared z-scores: score = sat32((sum_i z[i]^2) >> shift). */
static void tw_sum_sq_s16(const int16_t *z, int32_t n, int32_t shift, int32_t *score)
{
    int64_t total = 0;
    int32_t i;
    for (i = 0; i < n; i++) {
        total += (int64_t)z[i] * z[i];
    }
    score[0] = tw_score_from_total(total, shift);
}
"""

score_kernel("sum_sq_s16", _sum_sq, ("int16",), {}, "score = sat32(sum q**2 >> shift)", C_TEMPLATE, check=_check)
