"""Trimmed isolation forest: a few shallow random trees packed into small integer arrays.

Anomalies are isolated by fewer random axis-aligned splits than normal points. A full scikit-learn
``IsolationForest`` (100 trees of up to 255 leaves with float64 thresholds) does not fit a
microcontroller; this one bounds the depth and the node count and stores every node in 4 bytes (5 beyond 256 inputs):

=================  ========  ==================================================================
array              dtype     meaning for node ``i`` of tree ``t`` (nodes of a tree are contiguous)
=================  ========  ==================================================================
``feature_``       uint8     feature tested at an internal node (unused at a leaf); uint16 when the
                             model has more than 256 inputs (a wide device: 5 bytes a node then)
``threshold_``     int16     internal node: go left when ``q(x[feature]) <= threshold``;
                             leaf: path length ``depth + c(leaf size)`` in Q8.8
``left_``          uint8     index (within the tree) of the left child, right child is ``left + 1``;
                             0 marks a leaf (the root is never a child)
``tree_start_``    uint16    offset of each tree's first node in the flat arrays
=================  ========  ==================================================================

Fixed-point feature scale: ``q(v) = clip(round(v * 2**FRAC_BITS), -32768, 32767)`` with
``FRAC_BITS = 8`` (Q7.8), i.e. scaled features in [-128, 128) at a resolution of 1/256 of a standard
deviation. Split thresholds are drawn between the quantized training extremes, so clipping an input
never changes a comparison. :meth:`TrimmedIsolationForest.score_samples` walks the trees with these
integers, so the float model *is* the integer model and C can reproduce it bit for bit.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from tinywarden.arith import QParams
from tinywarden.detectors.base import Detector, Learned, Shape, check_param, sizes
from tinywarden.detectors.lowering import Lowered, LoweringContext
from tinywarden.errors import DataError
from tinywarden.kernels import Op, TensorSpec
from tinywarden.kernels.iforest_path_s16 import path_kind

#: Fractional bits of the fixed-point feature scale (Q7.8) shared by thresholds and inputs.
FRAC_BITS = 8
#: Fractional bits of the leaf path lengths (Q8.8).
PATH_FRAC_BITS = 8
#: uint8 child indices address at most 256 nodes per tree.
MAX_TREE_NODES = 255
#: Feature indices are uint8 up to this many inputs, uint16 beyond (:func:`feature_dtype`, from the kernel's
#: :func:`~tinywarden.kernels.iforest_path_s16.path_kind`).
MAX_FEATURES_UINT8 = int(np.iinfo(np.uint8).max) + 1
#: uint16 feature indices address at most this many inputs.
MAX_FEATURES = 65536
_EULER_GAMMA = 0.5772156649015329
#: Packed bytes the default forest may take (``4 * nodes + 2 * trees``), checked by the tests.
DEFAULT_BUDGET_BYTES = 1024


def average_path_length(n: np.ndarray | int) -> np.ndarray:
    """``c(n)``: mean unsuccessful-search path length in a binary search tree of ``n`` points.

    >>> [round(float(v), 3) for v in average_path_length(np.array([1, 2, 256]))]
    [0.0, 1.0, 10.245]
    """
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    big = n > 2
    out[n == 2] = 1.0
    out[big] = 2.0 * (np.log(n[big] - 1.0) + _EULER_GAMMA) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def feature_dtype(n_features: int) -> type[np.unsignedinteger[Any]]:
    """The narrowest unsigned type that indexes ``n_features`` inputs (uint8 up to 256, else uint16).

    >>> feature_dtype(256).__name__, feature_dtype(257).__name__
    ('uint8', 'uint16')
    """
    return np.dtype(path_kind(n_features)[1]).type  # the kernel's choice, so model and program agree


def quantize_features(x: np.ndarray) -> np.ndarray:
    """Scaled features to the trees' int16 fixed-point scale (Q7.8, saturating).

    >>> quantize_features(np.array([0.5, -1.0, 1000.0])).tolist()
    [128, -256, 32767]
    """
    return np.clip(np.round(np.asarray(x) * (1 << FRAC_BITS)), -32768, 32767).astype(np.int16)


def _grow(xq: np.ndarray, rng: np.random.Generator, max_depth: int) -> tuple[list[int], list[int], list[int]]:
    """One isolation tree over quantized rows ``xq``: breadth-first node lists (feature, threshold, left)."""
    feature: list[int] = []
    threshold: list[int] = []
    left: list[int] = []
    queue: list[tuple[np.ndarray, int]] = [(np.arange(len(xq)), 0)]
    head = 0
    while head < len(queue):
        rows, depth = queue[head]
        head += 1
        sub = xq[rows]
        lo, hi = sub.min(axis=0), sub.max(axis=0)
        splittable = np.flatnonzero(hi > lo)
        if depth >= max_depth or len(rows) <= 1 or len(splittable) == 0:
            path = depth + float(average_path_length(len(rows)))
            feature.append(0)
            threshold.append(int(min(round(path * (1 << PATH_FRAC_BITS)), 32767)))
            left.append(0)
            continue
        f = int(rng.choice(splittable))
        # threshold in [lo, hi): rows <= t go left, so both sides are non-empty
        t = int(rng.integers(int(lo[f]), int(hi[f])))
        go_left = sub[:, f] <= t
        feature.append(f)
        threshold.append(t)
        left.append(len(queue))  # children are appended next, left then right
        queue.append((rows[go_left], depth + 1))
        queue.append((rows[~go_left], depth + 1))
    return feature, threshold, left


class TrimmedIsolationForest(Detector):
    """Isolation forest with bounded depth and packed integer nodes; score = ``2 ** (-E[h] / c(n))``.

    ``n_estimators`` trees, each grown on ``max_samples`` rows drawn without replacement and cut at
    ``max_depth`` (a tree has at most ``2 ** (max_depth + 1) - 1`` nodes, which must be <= 255). The
    packed model takes ``4 * n_nodes + 2 * n_estimators`` bytes (``5 * n_nodes + ...`` beyond 256 inputs,
    whose feature indices need uint16); :attr:`packed_bytes_` reports it.
    The score is scikit-learn's anomaly score (``-score_samples`` of ``IsolationForest``), so higher is
    more anomalous; on the device the sum of the int16 leaf values is enough (the score decreases with it).

    The defaults keep the packed trees within :data:`DEFAULT_BUDGET_BYTES` (32 trees of at most 7 nodes:
    960 bytes), so the whole generated C module stays near 4 KB of Cortex-M4 flash for a 6-channel device.
    Within that budget many shallow trees beat a few deep ones: on SMD/ASD (window 16, last/mean/std/max/min,
    mean per-row ROC AUC over 3 seeds, measured at commit ff39005) 32 trees x depth 2 gave 0.810/0.663,
    16 x 3 0.791/0.664, 8 x 4 0.786/0.664, and the former 16 x 6 (4.4 KB of trees) 0.786/0.666, against
    scikit-learn's full forest at 0.825/0.709; ``benchmarks/results/families.md`` has the current
    comparison. A larger ``max_samples`` costs nothing on the device:
    the depth cut leaves ``c(leaf size)`` in the leaf value, and bigger samples estimate it better.

    >>> rng = np.random.default_rng(0)
    >>> det = TrimmedIsolationForest(n_estimators=20).fit(rng.normal(size=(500, 3)))
    >>> s = det.score_samples(np.array([[0.0, 0.0, 0.0], [6.0, -6.0, 6.0]]))
    >>> bool(s[1] > s[0]), det.packed_bytes_ <= 20 * (4 * 127 + 2)
    (True, True)
    """

    name: ClassVar[str] = "iforest"
    #: a value beyond every split follows the outermost branch, so its path is the extreme training value's
    #: (on SMD machine-2-2, 970 of the 1,548 test windows with an input over 20 reference sd scored under the
    #: threshold and would have taught an adapting scaler: -0.119 ROC AUC): the baseline adapts the likelihood only
    saturates_out_of_range: ClassVar[bool] = True
    search_space: ClassVar[tuple[dict[str, Any], ...]] = ({"n_estimators": 16}, {"n_estimators": 32})
    state_arrays: ClassVar[tuple[str, ...]] = ("feature_", "threshold_", "left_", "tree_start_", "n_samples_")

    def __init__(self, n_estimators: int = 32, max_samples: int = 512, max_depth: int = 2, random_state: int = 0):
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_depth = max_depth
        self.random_state = random_state

    def _validate(self) -> None:
        def is_int(v: object) -> bool:
            return isinstance(v, int | np.integer) and not isinstance(v, bool)

        check_param("n_estimators", self.n_estimators, is_int(self.n_estimators) and 1 <= self.n_estimators <= 256,
                    "an integer in [1, 256]")
        check_param("max_samples", self.max_samples, is_int(self.max_samples) and self.max_samples >= 2,
                    "an integer >= 2")
        check_param("max_depth", self.max_depth, is_int(self.max_depth) and 1 <= self.max_depth <= 7,
                    "an integer in [1, 7] (a tree's nodes are addressed by uint8)")

    def state_shapes(self) -> dict[str, Shape]:
        trees, depth = sizes(self.n_estimators, self.max_depth)
        nodes = Learned("nodes", trees, trees * (2 ** (depth + 1) - 1))
        return {"feature_": (nodes,), "threshold_": (nodes,), "left_": (nodes,), "tree_start_": (trees,),
                "n_samples_": (1,)}

    @classmethod
    def flash_lower_bound(cls, params: dict[str, Any], n_inputs: int, n_channels: int) -> int:
        # every tree keeps at least its root (a leaf: feature index, int16 value, uint8 child) and its uint16 start
        node = 3 + np.dtype(feature_dtype(n_inputs)).itemsize
        return int({**cls().get_params(), **params}["n_estimators"]) * (node + 2)

    @classmethod
    def max_inputs(cls, params: dict[str, Any]) -> int | None:
        return MAX_FEATURES  # what uint16 feature indices address

    def fit(self, X: np.ndarray, y: None = None) -> TrimmedIsolationForest:  # noqa: N803
        self._validate()
        x = self._check_input(X, fitting=True)
        if x.shape[1] > MAX_FEATURES:
            raise DataError(
                f"TrimmedIsolationForest stores feature indices as uint16: at most {MAX_FEATURES} features, "
                f"got {x.shape[1]}; use fewer features per channel"
            )
        xq = quantize_features(x)
        rng = np.random.default_rng(self.random_state)
        n_sub = min(self.max_samples, len(x))
        feats: list[int] = []
        thrs: list[int] = []
        lefts: list[int] = []
        starts: list[int] = []
        for _ in range(self.n_estimators):
            rows = rng.choice(len(x), size=n_sub, replace=False)
            f, t, lft = _grow(xq[rows], rng, self.max_depth)
            starts.append(len(feats))
            feats += f
            thrs += t
            lefts += lft
        self.input_shape_ = x.shape[1:]
        self.feature_ = np.asarray(feats, dtype=feature_dtype(x.shape[1]))
        self.threshold_ = np.asarray(thrs, dtype=np.int16)
        self.left_ = np.asarray(lefts, dtype=np.uint8)
        self.tree_start_ = np.asarray(starts, dtype=np.uint16)
        self.n_samples_ = np.asarray([n_sub], dtype=np.int64)
        return self

    @property
    def packed_bytes_(self) -> int:
        """Flash taken by the packed trees: 4 bytes a node (5 with uint16 feature indices) plus a uint16 start
        offset a tree."""
        self._check_fitted()
        return (3 + self.feature_.itemsize) * len(self.feature_) + 2 * len(self.tree_start_)

    def path_length_sum(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Sum over trees of the Q8.8 leaf values reached (int64): the integer the device computes."""
        self._check_fitted()
        xq = quantize_features(self._check_input(X)).astype(np.int32)
        rows = np.arange(len(xq))
        total = np.zeros(len(xq), dtype=np.int64)
        feature = self.feature_.astype(np.intp)
        threshold = self.threshold_.astype(np.int32)
        left = self.left_.astype(np.intp)
        for start in self.tree_start_.astype(np.intp):
            node = np.full(len(xq), start, dtype=np.intp)
            # every row descends one level per pass; at most max_depth + 1 passes
            while True:
                inner = left[node] != 0
                if not inner.any():
                    break
                idx = node[inner]
                go_right = xq[rows[inner], feature[idx]] > threshold[idx]
                node[inner] = start + left[idx] + go_right
            total += threshold[node]
        return total

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        mean_path = self.path_length_sum(X) / (len(self.tree_start_) * float(1 << PATH_FRAC_BITS))
        c = float(average_path_length(int(self.n_samples_[0])))
        return np.power(2.0, -mean_path / max(c, 1e-12))

    def lower(self, ctx: LoweringContext) -> Lowered:
        """The trees already compare int16 Q7.8 scaled features: requantize straight into that scale, so the
        device walks the very trees the float model walks."""
        self._check_fitted()
        q_f = QParams(1.0 / (1 << FRAC_BITS), 0, "int16")
        kind, dtype = path_kind(ctx.n_inputs)  # uint8 feature indices up to 256 inputs, uint16 beyond
        return Lowered([TensorSpec("input", "int16", (ctx.n_inputs,))],
                       [ctx.feature_input(q_f, "requantize_s64_s16"),
                        Op(kind, ("input",), "score", {"shift": 0},
                           {"feature": self.feature_.astype(dtype), "threshold": self.threshold_.astype(np.int16),
                            "left": self.left_.astype(np.uint8), "tree_start": self.tree_start_.astype(np.uint16)})],
                       {"input_scale": q_f.scale})
