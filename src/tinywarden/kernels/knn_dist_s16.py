"""Score: sum of the distances to the k nearest int16 prototypes."""

from __future__ import annotations

import numpy as np

from tinywarden.arith import INT32_MAX, ISQRT_LIMIT, isqrt_u64
from tinywarden.kernels.base import (
    Op,
    ProgramView,
    const_shape,
    int_attr,
    require,
    score_kernel,
)

#: Largest ``k`` of ``knn_dist_s16`` (the C kernel keeps the k nearest in a fixed stack array).
KNN_MAX_K = 64


def _clamped_k(op: Op) -> int:
    """The op's k as both kernels clamp it: [1, min(n_prototypes, KNN_MAX_K)]."""
    return max(1, min(int(op.attrs["k"]), len(op.consts["prototypes"]), KNN_MAX_K))


def _own_k(op: Op) -> dict[str, int]:
    """The C kernel's stack of nearest distances: the op's own clamped k (TW_KNN_K)."""
    return {"TW_KNN_K": _clamped_k(op)}


def _knn_dist(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    """Sum of ``isqrt`` of the ``k`` smallest squared distances to the prototypes (k clamped to
    [1, min(n_prototypes, KNN_MAX_K)], as the C kernel does)."""
    x = srcs[0].astype(np.int64)  # (N, D)
    protos = op.consts["prototypes"].astype(np.int64)  # (P, D)
    k = _clamped_k(op)
    d2 = np.stack([((x - p) ** 2).sum(axis=1) for p in protos], axis=1)  # (N, P), one prototype at a time
    return isqrt_u64(np.sort(d2, axis=1)[:, :k]).sum(axis=1)


def _check_knn(op: Op, p: ProgramView) -> None:
    int_attr(op, "shift", 0, 62)
    int_attr(op, "k", 1, INT32_MAX)  # clamped to the prototypes and KNN_MAX_K by both kernels
    n = p.tensor(op.src[0]).size
    require(len(const_shape(op, "prototypes")) == 2 and const_shape(op, "prototypes")[0] >= 1
             and const_shape(op, "prototypes")[1] == n, f"prototypes must be (n_prototypes, {n})")
    # a squared distance is at most n * 2^32: within tw_isqrt_u64's range
    require(n << 32 < ISQRT_LIMIT, f"knn_dist_s16 takes at most {ISQRT_LIMIT >> 32} inputs, not {n}")


C_TEMPLATE = r"""
//@call: tw_knn_dist_s16(s->t_${src0}, ${src0_size}, ${c_prototypes}, ${prototypes_shape0}, ${k}, ${shift},
//@+ s->t_${dst});
//@requires: isqrt score
/* Sum of the Euclidean distances (each floor(sqrt(squared distance))) to the k nearest prototypes
 * (prototypes: n_prototypes x n, row-major): score = sat32((sum_j isqrt(d2_j)) >> shift). The float
 * detector reports this sum over k; a constant factor changes no ranking. k is clamped to
 * [1, min(n_prototypes, TW_KNN_MAX_K)], as the Python kernel does; TW_KNN_K (<= TW_KNN_MAX_K), the
 * module's own largest clamped k, sizes the stack, so clamping to it changes no k. Range: n * 2^32 < 2^60. */
static void tw_knn_dist_s16(const int16_t *x, int32_t n, const int16_t *prototypes, int32_t n_prototypes,
                            int32_t k, int32_t shift, int32_t *score)
{
    int64_t nearest[TW_KNN_K]; /* the m smallest squared distances so far, ascending */
    int32_t m = 0;
    int64_t total = 0;
    int32_t j;
    int32_t i;
    k = (k > n_prototypes) ? n_prototypes : k;
    k = (k > TW_KNN_K) ? TW_KNN_K : ((k < 1) ? 1 : k);
    for (j = 0; j < n_prototypes; j++) {
        const int16_t *p = prototypes + j * n;
        int64_t d2 = 0;
        int32_t pos;
        for (i = 0; i < n; i++) {
            int64_t d = (int64_t)x[i] - p[i];
            d2 += d * d;
        }
        if (m < k) {
            pos = m++;
        } else if (d2 < nearest[k - 1]) {
            pos = k - 1;
        } else {
            continue;
        }
        while (pos > 0 && nearest[pos - 1] > d2) {
            nearest[pos] = nearest[pos - 1];
            pos--;
        }
        nearest[pos] = d2;
    }
    for (i = 0; i < m; i++) {
        total += (int64_t)tw_isqrt_u64((uint64_t)nearest[i]);
    }
    score[0] = tw_score_from_total(total, shift);
}
"""

score_kernel("knn_dist_s16", _knn_dist, ("int16",), {"prototypes": "int16"},
             "score = sat32(sum over the k nearest p_j of isqrt(sum (q - p_j)**2) >> shift)", C_TEMPLATE,
             limits={"TW_KNN_MAX_K": KNN_MAX_K, "TW_KNN_K": KNN_MAX_K}, op_limits=_own_k, check=_check_knn)
