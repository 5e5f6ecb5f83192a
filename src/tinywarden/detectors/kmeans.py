"""k-means distance: normal windows cluster around a few prototypes; far from all of them is anomalous."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.cluster import KMeans

from tinywarden.detectors.base import Detector, Learned, ScoreGraph, Shape, check_param, graph_squared_distances, sizes
from tinywarden.detectors.lowering import Lowered, LoweringContext, distance_input
from tinywarden.kernels import Op


class KMeansDistance(Detector):
    """Euclidean distance from a feature vector to the nearest of ``n_clusters`` learned centroids.

    ``fit`` runs scikit-learn's :class:`~sklearn.cluster.KMeans` (k-means++ init); ``partial_fit``
    moves the nearest centroid towards each new normal sample with step ``1 / count`` (online k-means),
    so the detector can keep learning on the device.

    >>> rng = np.random.default_rng(0)
    >>> det = KMeansDistance(n_clusters=2).fit(np.r_[rng.normal(size=(100, 2)), rng.normal(size=(100, 2)) + 9])
    >>> bool(det.score_samples(np.array([[4.5, 4.5]]))[0] > det.score_samples(np.array([[9.0, 9.0]]))[0])
    True
    """

    name: ClassVar[str] = "kmeans"
    online: ClassVar[bool] = True
    search_space: ClassVar[tuple[dict[str, Any], ...]] = (
        {"n_clusters": 2}, {"n_clusters": 4}, {"n_clusters": 8}, {"n_clusters": 16},
    )
    state_arrays: ClassVar[tuple[str, ...]] = ("centroids_",)

    def __init__(self, n_clusters: int = 8, n_init: int = 3, random_state: int = 0):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.random_state = random_state

    def state_shapes(self) -> dict[str, Shape]:
        (k,) = sizes(self.n_clusters)
        return {"centroids_": (Learned("clusters", 1, k), self.input_shape_[0])}

    def fit(self, X: np.ndarray, y: None = None) -> KMeansDistance:  # noqa: N803
        check_param("n_clusters", self.n_clusters, isinstance(self.n_clusters, int) and self.n_clusters >= 1,
                    "an integer >= 1")
        check_param("n_init", self.n_init, isinstance(self.n_init, int) and self.n_init >= 1, "an integer >= 1")
        x = self._check_input(X, fitting=True)
        k = min(self.n_clusters, len(np.unique(x, axis=0)))
        km = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.random_state).fit(x)
        self.input_shape_ = x.shape[1:]
        self.centroids_ = km.cluster_centers_.astype(np.float64)
        self.counts_ = np.bincount(km.labels_, minlength=k).astype(np.float64)
        return self

    def partial_fit(self, X: np.ndarray, y: None = None) -> KMeansDistance:  # noqa: N803
        if not hasattr(self, "centroids_"):
            return self.fit(X)
        x = self._check_input(X)
        if not hasattr(self, "counts_"):
            self.counts_ = np.ones(len(self.centroids_))
        for row in x:
            j = int(np.argmin(((self.centroids_ - row) ** 2).sum(axis=1)))
            self.counts_[j] += 1.0
            self.centroids_[j] += (row - self.centroids_[j]) / self.counts_[j]
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        self._check_fitted()
        x = self._check_input(X)
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, clipped at 0 against rounding
        d2 = (x * x).sum(1)[:, None] - 2.0 * x @ self.centroids_.T + (self.centroids_**2).sum(1)[None, :]
        return np.sqrt(np.maximum(d2.min(axis=1), 0.0))

    def score_graph(self, g: ScoreGraph, x: str) -> str:
        """The distance to the nearest centroid, from ``|x|^2 - 2 x.c + |c|^2`` as :meth:`score_samples`."""
        self._check_fitted()
        d2 = graph_squared_distances(g, x, self.centroids_, "kmeans")
        nearest = g.node("ReduceMin", [d2], "kmeans/nearest", axes=[1], keepdims=0)
        return g.node("Sqrt", [g.node("Max", [nearest, g.const("kmeans/zero", np.zeros((), np.float32))],
                                      "kmeans/clipped")], "score")

    def lower(self, ctx: LoweringContext) -> Lowered:
        """int16 inputs and centroids on one scale; the score is the squared distance to the nearest."""
        self._check_fitted()
        low = Lowered()
        q_x, cq = distance_input(ctx, self.centroids_, low)
        low.ops.append(Op("min_sq_dist_s16", ("input",), "score", {"shift": 0}, {"centroids": cq}))
        low.info["input_scale"] = q_x.scale
        return low

    @classmethod
    def flash_lower_bound(cls, params: dict[str, Any], n_inputs: int, n_channels: int) -> int:
        return 2 * int({**cls().get_params(), **params}["n_clusters"]) * n_inputs  # int16 centroids
