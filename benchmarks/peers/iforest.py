"""PyOD's IsolationForest (a wrapper of scikit-learn's), on the unscaled features (trees do not care)."""

from __future__ import annotations

import numpy as np
from benchmarks.peers.base import Peer
from pyod.models.iforest import IForest

#: Learned numbers per tree node in a flat C-like layout: feature, threshold, left, right, and the
#: node's sample count (needed for the path-length correction at leaves).
VALUES_PER_NODE = 5


class PyODIForest(Peer):
    """``pyod.models.iforest.IForest`` with its defaults (100 trees, 256 samples each)."""

    name = "pyod_iforest"
    note = "PyOD IForest defaults (100 trees x 256 samples); size = 5 x 4 B per tree node"

    def fit(self, X: np.ndarray) -> PyODIForest:  # noqa: N803
        self.model_ = IForest(random_state=0, n_jobs=1).fit(X)
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        return self.model_.decision_function(X)  # PyOD: higher = more anomalous

    @property
    def n_params_(self) -> int:
        return VALUES_PER_NODE * sum(int(t.tree_.node_count) for t in self.model_.detector_.estimators_)
