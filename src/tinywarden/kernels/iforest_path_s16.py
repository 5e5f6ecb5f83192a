"""Score: isolation-forest path lengths over packed int16 trees.

Two kinds share one kernel, told apart by the type of the feature indices: ``iforest_path_s16`` (uint8, at most
256 model inputs: the forest of a few channels, 4 bytes a node) and ``iforest_path_wide_s16`` (uint16, up to
65536 inputs: a wide device such as SMD's 38 channels x 11 features, 5 bytes a node).
:func:`path_kind` chooses between them; the walk and its integers are the same."""

from __future__ import annotations

import numpy as np

from tinywarden.errors import ConfigError
from tinywarden.kernels.base import (
    Op,
    ProgramView,
    const_shape,
    int_attr,
    require,
    score_kernel,
)


def _iforest_path(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    """Sum over the packed trees of ``32767 - leaf value`` (see :mod:`tinywarden.detectors.iforest`):
    a short path, i.e. an easily isolated input, gives a large total."""
    x = srcs[0].astype(np.int64)  # (N, D), Q7.8 scaled features
    c = op.consts
    feature, left = c["feature"].astype(np.intp), c["left"].astype(np.intp)
    threshold = c["threshold"].astype(np.int64)
    rows = np.arange(len(x))
    total = np.zeros(len(x), dtype=np.int64)
    for start in c["tree_start"].astype(np.intp):
        node = np.full(len(x), start, dtype=np.intp)
        while True:  # children follow their parent (breadth-first), so every row reaches a leaf
            inner = left[node] != 0
            if not inner.any():
                break
            idx = node[inner]
            node[inner] = start + left[idx] + (x[rows[inner], feature[idx]] > threshold[idx])
        total += 32767 - threshold[node]
    return total


def _check_iforest(op: Op, p: ProgramView) -> None:
    int_attr(op, "shift", 0, 62)
    c = op.consts
    n_nodes, n_in = len(c["left"]), p.tensor(op.src[0]).size
    require(const_shape(op, "feature") == const_shape(op, "threshold") == const_shape(op, "left") == (n_nodes,),
             "feature, threshold and left must be 1-D of one length")
    starts = np.asarray(c["tree_start"]).astype(np.int64)
    require(starts.ndim == 1 and 1 <= len(starts) <= 256 and starts[0] == 0 and bool(np.all(np.diff(starts) > 0))
             and int(starts[-1]) < n_nodes, "tree_start must rise from 0 and stay inside the nodes (<= 256 trees)")
    ends = np.append(starts[1:], n_nodes)
    for t, (lo, hi) in enumerate(zip(starts, ends, strict=True)):
        left = np.asarray(c["left"][lo:hi]).astype(np.int64)
        inner = np.flatnonzero(left)
        # the C walk has no checks: every child must follow its parent inside the tree, every feature exist
        require(not len(inner) or not ((left[inner] <= inner).any() or (left[inner] + 1 >= hi - lo).any()
                                        or (np.asarray(c["feature"][lo:hi])[inner] >= n_in).any()),
                 f"isolation forest tree {t} is malformed (a child before its parent, outside the tree, or a "
                 f"feature index >= {n_in}); fit the detector again")


C_TEMPLATE = r"""
//@call: tw_${kind}(s->t_${src0}, ${c_feature}, ${c_threshold}, ${c_left}, ${c_tree_start},
//@+ ${tree_start_size}, ${shift}, s->t_${dst});
//@requires: score
/* Packed isolation trees over Q7.8 features x: in tree t, from node tree_start[t], an internal node
 * (left != 0) goes to tree_start[t] + left + (x[feature] > threshold); a leaf's threshold is its Q8.8
 * path length. score = sat32((sum_t (32767 - leaf_t)) >> shift): shorter paths, higher score.
 * Range: children follow their parent within the tree and feature < len(x) (checked when the program
 * is built), so every walk ends at a leaf inside the arrays; n_trees <= 256; feature indices ${feature_t}. */
static void tw_${kind}(const int16_t *x, const ${feature_t} *feature, const int16_t *threshold,
                                const uint8_t *left, const uint16_t *tree_start, int32_t n_trees, int32_t shift,
                                int32_t *score)
{
    int64_t total = 0;
    int32_t t;
    for (t = 0; t < n_trees; t++) {
        int32_t start = tree_start[t];
        int32_t node = start;
        while (left[node] != 0u) {
            node = start + left[node] + ((x[feature[node]] > threshold[node]) ? 1 : 0);
        }
        total += 32767 - (int32_t)threshold[node];
    }
    score[0] = tw_score_from_total(total, shift);
}
"""

#: Feature index dtype of each kind, narrowest first.
FEATURE_DTYPES = {"iforest_path_s16": "uint8", "iforest_path_wide_s16": "uint16"}


def path_kind(n_inputs: int) -> tuple[str, str]:
    """``(kind, feature dtype)`` of the narrowest kernel whose feature indices address ``n_inputs`` model inputs.

    >>> path_kind(256), path_kind(257)
    (('iforest_path_s16', 'uint8'), ('iforest_path_wide_s16', 'uint16'))
    """
    for kind, dtype in FEATURE_DTYPES.items():
        if n_inputs <= int(np.iinfo(dtype).max) + 1:
            return kind, dtype
    raise ConfigError(f"an isolation forest indexes at most {int(np.iinfo('uint16').max) + 1} features, "
                      f"got {n_inputs}")


for _kind, _dtype in FEATURE_DTYPES.items():
    score_kernel(
        _kind, _iforest_path, ("int16",),
        {"feature": _dtype, "threshold": "int16", "left": "uint8", "tree_start": "uint16"},
        "score = sat32(sum over trees of (32767 - Q8.8 leaf path length) >> shift), packed isolation trees"
        + ("" if _dtype == "uint8" else f" ({_dtype} feature indices)"),
        C_TEMPLATE, c_subs={"kind": _kind, "feature_t": f"{_dtype}_t"}, check=_check_iforest)
