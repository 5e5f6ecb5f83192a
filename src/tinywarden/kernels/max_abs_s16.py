"""Score: largest absolute int16 input."""

from __future__ import annotations

import numpy as np

from tinywarden.kernels.base import (
    Op,
    ProgramView,
    int_attr,
    score_kernel,
)


def _max_abs(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    return np.abs(srcs[0].astype(np.int64)).max(axis=1)


def _check(op: Op, p: ProgramView) -> None:
    int_attr(op, "shift", 0, 62)


C_TEMPLATE = r"""
//@call: tw_max_abs_s16(s->t_${src0}, ${src0_size}, ${shift}, s->t_${dst});
//@requires: score
/* Largest absolute z-score: score = sat32(max_i |z[i]| >> shift). */
static void tw_max_abs_s16(const int16_t *z, int32_t n, int32_t shift, int32_t *score)
{
    int64_t top = 0;
    int32_t i;
    for (i = 0; i < n; i++) {
        int64_t a = (z[i] < 0) ? -(int64_t)z[i] : (int64_t)z[i];
        top = (a > top) ? a : top;
    }
    score[0] = tw_score_from_total(top, shift);
}
"""

score_kernel("max_abs_s16", _max_abs, ("int16",), {}, "score = sat32(max |q| >> shift)", C_TEMPLATE, check=_check)
