"""PCA (linear autoencoder) on window features: the error of reconstructing a vector from its main axes.

On the shared SMD/ASD data this is the floor every other family has to clear (see ``shared/README.md``):
normal telemetry lives near a low-dimensional subspace, and most attacks and faults leave it.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from tinywarden.detectors.base import Detector, check_param


class PCAReconstruction(Detector):
    """Mean squared error of projecting a feature vector onto the top principal components and back.

    ``n_components`` is either a count (``int >= 0``) or the fraction of training variance to keep
    (``float`` in ``(0, 1)``, scikit-learn's rule). At most ``n_features - 1`` components are kept, so the
    residual space is never empty (with every component kept the error would be zero for any input).
    It is a linear autoencoder with tied weights: encode ``z = W (x - mean)``, decode ``mean + W^T z``.
    On the device that is two small matrix-vector products; ``n_params_ = F + k F``.

    >>> rng = np.random.default_rng(0)
    >>> latent = rng.normal(size=(300, 2))
    >>> det = PCAReconstruction(n_components=2).fit(np.c_[latent, latent.sum(1)])
    >>> bool(det.score_samples(np.array([[1.0, 1.0, -2.0]]))[0] > det.score_samples(np.array([[1.0, 1.0, 2.0]]))[0])
    True
    """

    name: ClassVar[str] = "pca"
    state_arrays: ClassVar[tuple[str, ...]] = ("mean_", "components_")

    def __init__(self, n_components: int | float = 0.95):
        self.n_components = n_components

    def _validate(self) -> None:
        k = self.n_components
        ok = (isinstance(k, int | np.integer) and not isinstance(k, bool) and k >= 0) or (
            isinstance(k, float) and 0.0 < k < 1.0
        )
        check_param("n_components", k, ok, "an integer >= 0 or a variance fraction in (0, 1)")

    def fit(self, X: np.ndarray, y: None = None) -> PCAReconstruction:  # noqa: N803
        self._validate()
        x = self._check_input(X, fitting=True)
        mean = x.mean(axis=0)
        # SVD of the centred data; rows of vt are the principal axes, largest variance first.
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        var = s**2
        if isinstance(self.n_components, float):
            total = var.sum()
            ratio = np.cumsum(var) / total if total > 0 else np.ones_like(var)
            k = int(np.searchsorted(ratio, self.n_components) + 1)
        else:
            k = int(self.n_components)
        k = min(k, x.shape[1] - 1, len(vt))
        # Fix each axis' sign (largest |loading| positive) so the model does not depend on LAPACK's choice.
        comps = vt[:k]
        signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
        self.input_shape_ = x.shape[1:]
        self.mean_ = mean
        self.components_ = comps * signs[:, None]
        self.explained_variance_ratio_ = var[:k] / var.sum() if var.sum() > 0 else np.zeros(k)
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        self._check_fitted()
        x = self._check_input(X) - self.mean_
        residual = x - (x @ self.components_.T) @ self.components_
        return (residual * residual).mean(axis=1)
