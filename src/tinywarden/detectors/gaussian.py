"""A Gaussian on window features: the Mahalanobis distance under a shrunk full covariance.

The covariance is estimated with shrinkage (scikit-learn's Ledoit-Wolf or OAS, at training only), so a short
training span (a few hundred windows of a hundred features) still gives a well-conditioned estimate. Its top
``k`` eigen-axes are kept exactly and the remaining variance is one isotropic term (probabilistic PCA's
structure); with ``k = n_features - 1`` (``n_components=None`` on up to 65 features) that is the full shrunk
covariance, exactly. Where PCA scores only the energy outside its axes, this also scores a deviation *along*
them, in units of each axis' own spread, so an unusual mix of normal patterns is seen too.

On the device the distance is one whitening matrix applied to the centred input: the same integer kernel
and the same ``k x F`` int8 constants as PCA (``pca_residual_s16``), only the matrix and its correction differ.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.covariance import OAS, LedoitWolf

from tinywarden.detectors.base import Detector, Learned, Shape, check_param
from tinywarden.detectors.lowering import Lowered, LoweringContext, int8_rows
from tinywarden.detectors.pca import centred_input, residual_op
from tinywarden.kernels import TensorSpec
from tinywarden.kernels.pca_residual_s16 import PCA_MAX_AXES

#: Covariance estimators ``shrinkage`` names (fitted on the training windows only).
SHRINKAGE: dict[str, type[LedoitWolf] | type[OAS]] = {"ledoit_wolf": LedoitWolf, "oas": OAS}


class GaussianMahalanobis(Detector):
    """Mahalanobis distance of a feature vector from the training mean under a shrunk covariance.

    ``z = x - mean``; with the shrunk covariance's eigen-axes ``u_j`` (variance ``lambda_j``, largest first) the
    score is ``sum_{j<k} (u_j . z)**2 / lambda_j + (|z|**2 - sum_{j<k} (u_j . z)**2) / sigma2``, where
    ``sigma2`` is the mean of the eigenvalues not kept. ``n_components`` is ``k`` (an integer >= 1, at most
    ``n_features - 1`` are kept), or ``None`` for the full covariance (``n_features - 1`` axes, at most 64,
    the int8 kernel's limit). ``shrinkage`` is ``"ledoit_wolf"`` or ``"oas"``.

    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(400, 1))
    >>> x = np.c_[a, a + 0.1 * rng.normal(size=(400, 1)), rng.normal(size=(400, 1))]
    >>> det = GaussianMahalanobis().fit(x)
    >>> # (1, 1, 0) follows the correlation, (1, -1, 0) breaks it: same Euclidean distance, far apart here
    >>> s = det.score_samples(np.array([[1.0, 1.0, 0.0], [1.0, -1.0, 0.0]]))
    >>> bool(s[1] > 20 * s[0])
    True
    """

    name: ClassVar[str] = "gaussian"
    search_space: ClassVar[tuple[dict[str, Any], ...]] = (
        {"n_components": 4}, {"n_components": 8}, {"n_components": 16}, {"n_components": 24}, {"n_components": 32},
        {"n_components": None},
    )
    state_arrays: ClassVar[tuple[str, ...]] = ("mean_", "components_", "variances_", "noise_variance_")

    def __init__(self, n_components: int | None = None, shrinkage: str = "ledoit_wolf"):
        self.n_components = n_components
        self.shrinkage = shrinkage

    def _validate(self) -> None:
        k = self.n_components
        ok = k is None or (isinstance(k, int | np.integer) and not isinstance(k, bool) and k >= 1)
        check_param("n_components", k, ok, "an integer >= 1 or None (the full covariance)")
        check_param("shrinkage", self.shrinkage, self.shrinkage in SHRINKAGE, " or ".join(map(repr, SHRINKAGE)))

    def state_shapes(self) -> dict[str, Shape]:
        f = self.input_shape_[0]
        axes = Learned("axes", 0, max(f - 1, 0))
        return {"mean_": (f,), "components_": (axes, f), "variances_": (axes,), "noise_variance_": (1,)}

    @staticmethod
    def axes_kept(n_components: int | None, n_features: int) -> int:
        """How many eigen-axes are kept exactly for ``n_features`` inputs (the rest share one variance)."""
        full = min(n_features - 1, PCA_MAX_AXES)
        return full if n_components is None else min(int(n_components), n_features - 1)

    def fit(self, X: np.ndarray, y: None = None) -> GaussianMahalanobis:  # noqa: N803
        self._validate()
        x = self._check_input(X, fitting=True)
        cov = SHRINKAGE[self.shrinkage]().fit(x).covariance_
        evals, evecs = np.linalg.eigh(cov)
        evals, evecs = np.maximum(evals[::-1], 0.0), evecs[:, ::-1].T  # rows are axes, largest variance first
        k = self.axes_kept(self.n_components, x.shape[1])
        comps = evecs[:k]
        # Fix each axis' sign (largest |loading| positive) so the model does not depend on LAPACK's choice.
        signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
        floor = 1e-12 * max(float(evals.max()), 1.0)
        self.input_shape_ = x.shape[1:]
        self.mean_ = x.mean(axis=0)
        self.components_ = comps * signs[:, None]
        self.noise_variance_ = np.array([max(float(evals[k:].mean()), floor)])  # sigma2, as an array of one
        # A kept axis never has less variance than the rest share (eigenvalues are sorted); the floor keeps it so.
        self.variances_ = np.maximum(evals[:k], self.noise_variance_[0])
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        self._check_fitted()
        z = self._check_input(X) - self.mean_
        r = z @ self.components_.T
        outside = np.maximum((z * z).sum(axis=1) - (r * r).sum(axis=1), 0.0)
        return (r * r / self.variances_).sum(axis=1) + outside / float(self.noise_variance_[0])

    def whitening(self) -> np.ndarray:
        """``V`` (``k x F``) with ``sigma2 * score = |z|**2 - |V z|**2``: row ``j`` is ``sqrt(1 - sigma2 /
        lambda_j) u_j``, so the whole distance is the energy of ``z`` left after one matrix-vector product."""
        self._check_fitted()
        keep = 1.0 - float(self.noise_variance_[0]) / self.variances_
        return np.sqrt(np.clip(keep, 0.0, 1.0))[:, None] * self.components_

    def lower(self, ctx: LoweringContext) -> Lowered:
        """The centred int16 input (the mean folds into the feature requantization) and the int8 whitening
        rows; the score is ``sigma2`` times the distance, in input steps (``pca_residual_s16``)."""
        self._check_fitted()
        n_in = ctx.n_inputs
        q_x = centred_input(ctx, self.mean_, len(self.components_), "Gaussian", "axes")
        v = self.whitening()
        # k = 0 (one feature) keeps no axis: one all-zero row gives the same score without a zero-length C array.
        wq, w_scale = int8_rows(v if len(v) else np.zeros((1, n_in)))
        # r = W_hat q with W_hat the rounded rows; T maps r back to V q on their span, so |V q|**2 = r^T (I + D) r
        # with D = T^T T - I (small: the rounding's correction).
        t = (v if len(v) else np.zeros((1, n_in))) @ np.linalg.pinv(wq * w_scale[:, None])
        score = residual_op(wq, w_scale, t.T @ t - np.eye(len(wq)))
        return Lowered([TensorSpec("input", "int16", (n_in,))],
                       [ctx.feature_input(q_x, "requantize_s64_s16", ctx.mu + ctx.sigma * self.mean_), score],
                       {"score_unit": q_x.scale**2 / float(self.noise_variance_[0]), "input_scale": q_x.scale})

    @classmethod
    def flash_lower_bound(cls, params: dict[str, Any], n_inputs: int, n_channels: int) -> int:
        k = {**cls().get_params(), **params}["n_components"]
        return max(cls.axes_kept(k, n_inputs), 1) * n_inputs  # int8 whitening rows
