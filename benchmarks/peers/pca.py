"""The README's strong, tiny baseline: PCA (95% of variance) reconstruction error on window features."""

from __future__ import annotations

import numpy as np
from benchmarks.peers.base import Peer, fit_standard_scaler
from sklearn.decomposition import PCA


class PCABaseline(Peer):
    """scikit-learn PCA keeping 95% of the variance of z-scaled features; score = squared residual."""

    name = "pca_baseline"
    note = "scikit-learn PCA(n_components=0.95) on z-scaled features (../shared/README.md baseline)"

    def fit(self, X: np.ndarray) -> PCABaseline:  # noqa: N803
        self.scaler_ = fit_standard_scaler(X)
        self.pca_ = PCA(n_components=0.95, svd_solver="full").fit(self.scaler_.transform(X))
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        z = self.scaler_.transform(X)
        rec = self.pca_.inverse_transform(self.pca_.transform(z))
        return ((z - rec) ** 2).sum(axis=1)

    @property
    def n_params_(self) -> int:
        d = self.pca_.n_features_in_
        return self.pca_.components_.size + d + 2 * d  # components, PCA mean, scaler mean and scale
