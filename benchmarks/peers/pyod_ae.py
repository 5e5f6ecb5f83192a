"""PyOD's AutoEncoder (torch), with PyOD's defaults."""

from __future__ import annotations

import numpy as np
from benchmarks.peers.base import Peer


class PyODAutoEncoder(Peer):
    """``pyod.models.auto_encoder.AutoEncoder`` defaults: hidden (64, 32), batch norm, dropout, 10 epochs.

    PyOD standardises its input itself (``preprocessing=True``), so it gets the unscaled features.
    """

    name = "pyod_autoencoder"
    note = "PyOD AutoEncoder defaults (torch; hidden 64-32, batch norm, dropout 0.2, 10 epochs)"

    def fit(self, X: np.ndarray) -> PyODAutoEncoder:  # noqa: N803
        from pyod.models.auto_encoder import AutoEncoder

        self.model_ = AutoEncoder(verbose=0, random_state=0).fit(X)
        self.n_features_ = X.shape[1]
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        return self.model_.decision_function(X)

    @property
    def n_params_(self) -> int:
        # weights, biases and batch-norm running statistics, plus the input standardisation
        net = sum(int(v.numel()) for k, v in self.model_.model.state_dict().items() if "num_batches" not in k)
        return net + 2 * self.n_features_
