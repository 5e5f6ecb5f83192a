"""Score: squared distance to the nearest int16 centroid."""

from __future__ import annotations

import numpy as np

from tinywarden.kernels.base import (
    Op,
    ProgramView,
    const_shape,
    int_attr,
    require,
    score_kernel,
)


def _min_sq_dist(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    x = srcs[0].astype(np.int64)  # (N, D)
    cen = op.consts["centroids"].astype(np.int64)  # (K, D)
    best = np.full(len(x), np.iinfo(np.int64).max)
    for c in cen:  # one centroid at a time keeps memory at (N, D)
        best = np.minimum(best, ((x - c) ** 2).sum(axis=1))
    return best


def _check(op: Op, p: ProgramView) -> None:
    int_attr(op, "shift", 0, 62)
    n, c = p.tensor(op.src[0]).size, const_shape(op, "centroids")
    require(len(c) == 2 and c[0] >= 1 and c[1] == n, f"centroids must be (n_centroids, {n}), got {c}")


C_TEMPLATE = r"""
//@call: tw_min_sq_dist_s16(s->t_${src0}, ${src0_size}, ${c_centroids}, ${centroids_shape0}, ${shift}, s->t_${dst});
//@requires: score
/* Squared distance to the nearest centroid (centroids: n_centroids x n, row-major):
 * score = sat32(min_j sum_i (x[i] - c[j][i])^2 >> shift). Range: n * 2^32 < 2^63. */
static void tw_min_sq_dist_s16(const int16_t *x, int32_t n, const int16_t *centroids, int32_t n_centroids,
                               int32_t shift, int32_t *score)
{
    int64_t best = INT64_MAX;
    int32_t j;
    int32_t i;
    for (j = 0; j < n_centroids; j++) {
        const int16_t *c = centroids + j * n;
        int64_t d2 = 0;
        for (i = 0; i < n; i++) {
            int64_t d = (int64_t)x[i] - c[i];
            d2 += d * d;
        }
        best = (d2 < best) ? d2 : best;
    }
    score[0] = tw_score_from_total(best, shift);
}
"""

score_kernel("min_sq_dist_s16", _min_sq_dist, ("int16",), {"centroids": "int16"},
             "score = sat32(min_j sum (q - c_j)**2 >> shift)", C_TEMPLATE, check=_check)
