"""river's streaming HalfSpaceTrees, fed window features scaled to [0, 1] as river requires."""

from __future__ import annotations

import numpy as np
from benchmarks.peers.base import Peer
from river.anomaly import HalfSpaceTrees


class RiverHST(Peer):
    """``river.anomaly.HalfSpaceTrees`` defaults (10 trees, height 8, window 250), one sample at a time.

    Features are min-max scaled with the training range (river's trees split the [0, 1] box). It
    learns on the training windows in order and then only scores, like every other detector here.
    """

    name = "river_hst"
    note = "river HalfSpaceTrees defaults (10 trees, height 8, window 250), train min-max to [0, 1]"

    def fit(self, X: np.ndarray) -> RiverHST:  # noqa: N803
        self.lo_ = X.min(axis=0)
        span = X.max(axis=0) - self.lo_
        self.span_ = np.where(span > 0, span, 1.0)
        self.model_ = HalfSpaceTrees(seed=0)
        for row in self._scaled(X):
            self.model_.learn_one(dict(enumerate(row.tolist())))
        self.n_features_ = X.shape[1]
        return self

    def _scaled(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        return (X - self.lo_) / self.span_

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        score = self.model_.score_one
        return np.array([score(dict(enumerate(row.tolist()))) for row in self._scaled(X)])

    @property
    def n_params_(self) -> int:
        m = self.model_
        internal, leaves = 2**m.height - 1, 2**m.height
        # internal node: feature, threshold, reference mass, latest mass; leaf: the two masses
        return m.n_trees * (4 * internal + 2 * leaves) + 2 * self.n_features_
