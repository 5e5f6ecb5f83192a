"""Distance to a few prototypes: kNN anomaly scoring against at most 64 stored normal windows."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.cluster import kmeans_plusplus

from tinywarden.detectors.base import Detector, Learned, ScoreGraph, Shape, check_param, graph_squared_distances, sizes
from tinywarden.detectors.lowering import Lowered, LoweringContext, distance_input
from tinywarden.kernels import Op

MAX_PROTOTYPES = 64


class PrototypeKNN(Detector):
    """Mean Euclidean distance from a feature vector to its ``k`` nearest of ``n_prototypes`` prototypes.

    Full kNN keeps every training window, far too many for a microcontroller. The prototypes are
    training vectors chosen by k-means++ seeding (each next one drawn with probability proportional to
    its squared distance from those already chosen), which spreads them over the normal region and
    its sparse corners alike. Unlike :class:`~tinywarden.detectors.kmeans.KMeansDistance` they are real
    observed windows, not averages, and the score averages ``k`` neighbours, which smooths the
    boundary between prototypes. ``n_params_ = n_prototypes * F``.

    >>> rng = np.random.default_rng(0)
    >>> det = PrototypeKNN(n_prototypes=16, k=2).fit(rng.normal(size=(400, 2)))
    >>> bool(det.score_samples(np.array([[5.0, 5.0]]))[0] > det.score_samples(np.array([[0.0, 0.0]]))[0])
    True
    """

    name: ClassVar[str] = "knn"
    search_space: ClassVar[tuple[dict[str, Any], ...]] = ({"n_prototypes": 8}, {"n_prototypes": 32})
    state_arrays: ClassVar[tuple[str, ...]] = ("prototypes_",)

    def __init__(self, n_prototypes: int = 24, k: int = 3, random_state: int = 0):
        self.n_prototypes = n_prototypes
        self.k = k
        self.random_state = random_state

    def _validate(self) -> None:
        n, k = self.n_prototypes, self.k
        check_param("n_prototypes", n, isinstance(n, int) and 1 <= n <= MAX_PROTOTYPES,
                    f"an integer in [1, {MAX_PROTOTYPES}]")
        check_param("k", k, isinstance(k, int) and 1 <= k <= n, "an integer in [1, n_prototypes]")

    def state_shapes(self) -> dict[str, Shape]:
        (n,) = sizes(self.n_prototypes)
        return {"prototypes_": (Learned("prototypes", 1, n), self.input_shape_[0])}

    def fit(self, X: np.ndarray, y: None = None) -> PrototypeKNN:  # noqa: N803
        self._validate()
        x = self._check_input(X, fitting=True)
        distinct = np.unique(x, axis=0)
        n = min(self.n_prototypes, len(distinct))
        if n == len(distinct):
            protos = distinct
        else:
            protos, _ = kmeans_plusplus(x, n_clusters=n, random_state=self.random_state)
        self.input_shape_ = x.shape[1:]
        self.prototypes_ = np.asarray(protos, dtype=np.float64)
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        self._check_fitted()
        x = self._check_input(X)
        p = self.prototypes_
        d2 = (x * x).sum(1)[:, None] - 2.0 * x @ p.T + (p * p).sum(1)[None, :]
        d = np.sqrt(np.maximum(d2, 0.0))
        k = min(self.k, len(p))
        nearest = np.partition(d, k - 1, axis=1)[:, :k]
        return nearest.mean(axis=1)

    def score_graph(self, g: ScoreGraph, x: str) -> str:
        """The mean distance to the ``k`` nearest prototypes (``TopK`` of the negated squared distances)."""
        self._check_fitted()
        k = min(self.k, len(self.prototypes_))
        d2 = graph_squared_distances(g, x, self.prototypes_, "knn")
        d = g.node("Sqrt", [g.node("Max", [d2, g.const("knn/zero", np.zeros((), np.float32))], "knn/clipped")],
                   "knn/distances")
        nearest = g.node("TopK", [d, g.const("knn/k", np.array([k], np.int64))], "knn/nearest", ["knn/which"],
                         largest=0)
        return g.node("ReduceMean", [nearest], "score", axes=[1], keepdims=0)

    def lower(self, ctx: LoweringContext) -> Lowered:
        """int16 inputs and prototypes on one scale; the score sums the distances to the k nearest."""
        self._check_fitted()
        low = Lowered()
        q_x, pq = distance_input(ctx, self.prototypes_, low)
        low.ops.append(Op("knn_dist_s16", ("input",), "score", {"k": min(self.k, len(pq)), "shift": 0},
                          {"prototypes": pq}))
        low.info["input_scale"] = q_x.scale
        return low

    @classmethod
    def flash_lower_bound(cls, params: dict[str, Any], n_inputs: int, n_channels: int) -> int:
        return int({**cls().get_params(), **params}["n_prototypes"]) * n_inputs
