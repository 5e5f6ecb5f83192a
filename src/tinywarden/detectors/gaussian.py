"""A Gaussian on window features: the Mahalanobis distance under a low-rank-plus-diagonal covariance.

Two structures of the covariance, both ``k`` axes over a noise floor:

* ``structure="factor"`` (default): factor analysis (scikit-learn's :class:`~sklearn.decomposition.FactorAnalysis`),
  ``C = L^T L + Psi`` with ``k`` factors and a *per-feature* noise variance ``Psi``. A feature that the factors
  explain well gets a small noise variance, so a deviation from its usual relation to the others weighs more.
* ``structure="eigen"``: the covariance estimated with shrinkage (scikit-learn's Ledoit-Wolf or OAS), its top
  ``k`` eigen-axes kept exactly and the remaining variance one isotropic term (probabilistic PCA's
  structure); with ``k = n_features - 1`` (``n_components=None`` on up to 65 features) that is the full shrunk
  covariance, exactly.

Where PCA scores only the energy outside its axes, this also scores a deviation *along* them, in units of each
axis' own spread, so an unusual mix of normal patterns is seen too.

On the device the distance is one whitening matrix applied to the centred input: the same integer kernel
and the same ``k x F`` int8 constants as PCA (``pca_residual_s16``), only the matrix and its correction differ;
the per-feature noise scale folds into the feature requantization (no constant more). Its flash is that of
``k`` rows: at the default ``k = 16`` on the demo's 66 features, 1.3 KB of constants where the full covariance
(``k = 64``) took 6.6 KB.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import numpy as np
from sklearn.covariance import OAS, LedoitWolf
from sklearn.decomposition import FactorAnalysis

from tinywarden.detectors.base import Detector, Learned, ScoreGraph, Shape, check_param
from tinywarden.detectors.lowering import Lowered, LoweringContext, int8_rows
from tinywarden.detectors.pca import centred_input, residual_op
from tinywarden.kernels import TensorSpec
from tinywarden.kernels.pca_residual_s16 import PCA_MAX_AXES, PCA_MAX_INPUTS

#: Covariance estimators ``shrinkage`` names (fitted on the training windows only).
SHRINKAGE: dict[str, type[LedoitWolf] | type[OAS]] = {"ledoit_wolf": LedoitWolf, "oas": OAS}
#: Covariance structures ``structure`` names (see the module docstring).
STRUCTURES = ("factor", "eigen")
#: Factor analysis' noise variance of a feature is at least this fraction of the feature's variance (and of the
#: mean variance): the whitened input ``z / sqrt(noise)`` then stays within 10x a feature's spread, so one int16
#: scale serves every feature on the device.
NOISE_FLOOR = 0.01


class GaussianMahalanobis(Detector):
    """Mahalanobis distance of a feature vector from the training mean under a low-rank-plus-noise covariance.

    With ``z = x - mean``, the noise variances ``psi`` (per feature, ``noise_variance_``) and ``y = z / sqrt(psi)``,
    the covariance of ``y`` is ``I + sum_j (lambda_j - 1) u_j u_j^T`` over ``k`` orthonormal axes ``u_j``
    (``components_``) with variances ``lambda_j >= 1`` (``variances_``, in noise units), and the score is
    ``|y|**2 - sum_j (1 - 1 / lambda_j) (u_j . y)**2``: the squared Mahalanobis distance.

    ``structure="factor"`` (default) fits ``k`` factors by factor analysis (per-feature noise);
    ``structure="eigen"`` keeps the top ``k`` eigen-axes of a shrunk covariance (``shrinkage``:
    ``"ledoit_wolf"`` or ``"oas"``) over one isotropic noise variance, the mean of the eigenvalues not kept.
    ``n_components`` is ``k`` (an integer >= 1; at most ``n_features - 1`` are kept), or ``None`` for
    ``n_features - 1`` (at most 64, the int8 kernel's limit): with ``"eigen"`` that is the full shrunk covariance.

    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(400, 1))
    >>> x = np.c_[a, a + 0.1 * rng.normal(size=(400, 1)), rng.normal(size=(400, 1))]
    >>> det = GaussianMahalanobis(n_components=1).fit(x)
    >>> # (1, 1, 0) follows the correlation, (1, -1, 0) breaks it: same Euclidean distance, far apart here
    >>> s = det.score_samples(np.array([[1.0, 1.0, 0.0], [1.0, -1.0, 0.0]]))
    >>> bool(s[1] > 20 * s[0])
    True
    """

    name: ClassVar[str] = "gaussian"
    scores_displacement: ClassVar[bool] = True
    search_space: ClassVar[tuple[dict[str, Any], ...]] = (
        {"n_components": 4}, {"n_components": 8}, {"n_components": 16}, {"n_components": 24}, {"n_components": 32},
        {"n_components": None},
    )
    state_arrays: ClassVar[tuple[str, ...]] = ("mean_", "components_", "variances_", "noise_variance_")

    def __init__(self, n_components: int | None = 16, structure: Literal["factor", "eigen"] = "factor",
                 shrinkage: str = "ledoit_wolf"):
        self.n_components = n_components
        self.structure = structure
        self.shrinkage = shrinkage

    def _validate(self) -> None:
        k = self.n_components
        ok = k is None or (isinstance(k, int | np.integer) and not isinstance(k, bool) and k >= 1)
        check_param("n_components", k, ok, "an integer >= 1 or None (the full covariance)")
        check_param("structure", self.structure, self.structure in STRUCTURES, " or ".join(map(repr, STRUCTURES)))
        check_param("shrinkage", self.shrinkage, self.shrinkage in SHRINKAGE, " or ".join(map(repr, SHRINKAGE)))

    def state_shapes(self) -> dict[str, Shape]:
        f = self.input_shape_[0]
        axes = Learned("axes", 0, max(f - 1, 0))
        return {"mean_": (f,), "components_": (axes, f), "variances_": (axes,), "noise_variance_": (f,)}

    @staticmethod
    def axes_kept(n_components: int | None, n_features: int) -> int:
        """How many axes are kept exactly for ``n_features`` inputs (the rest is noise)."""
        full = min(n_features - 1, PCA_MAX_AXES)
        return full if n_components is None else min(int(n_components), n_features - 1)

    def fit(self, X: np.ndarray, y: None = None) -> GaussianMahalanobis:  # noqa: N803
        self._validate()
        x = self._check_input(X, fitting=True)
        k = self.axes_kept(self.n_components, x.shape[1])
        self.input_shape_ = x.shape[1:]
        self.mean_ = x.mean(axis=0)
        if self.structure == "factor" and k >= 1:
            noise, comps, variances = _factor_axes(x, k)
        else:
            noise, comps, variances = _eigen_axes(SHRINKAGE[self.shrinkage]().fit(x).covariance_, k)
        # Fix each axis' sign (largest |loading| positive) so the model does not depend on LAPACK's choice.
        signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)]) if len(comps) else comps[:, 0]
        self.components_ = comps * signs[:, None]
        self.variances_ = variances
        self.noise_variance_ = noise
        return self

    def _whitened(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        return (self._check_input(X) - self.mean_) / np.sqrt(self.noise_variance_)

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        self._check_fitted()
        y = self._whitened(X)
        v = self.whitening()
        return np.maximum((y * y).sum(axis=1) - ((y @ v.T) ** 2).sum(axis=1), 0.0)

    def score_graph(self, g: ScoreGraph, x: str) -> str:
        """``max(|y|**2 - |V y|**2, 0)`` with ``y`` the input centred and divided by the noise spread."""
        self._check_fitted()
        y = g.node("Div", [g.node("Sub", [x, g.const("gaussian/mean", self.mean_)], "gaussian/centred"),
                           g.const("gaussian/spread", np.sqrt(self.noise_variance_))], "gaussian/whitened")
        axes = g.const("gaussian/axes", np.array([1], np.int64))
        energy = g.node("ReduceSum", [g.node("Mul", [y, y], "gaussian/y2"), axes], "gaussian/energy", keepdims=0)
        v = self.whitening()
        if len(v):
            proj = g.node("MatMul", [y, g.const("gaussian/whitening_t", v.T)], "gaussian/projected")
            kept = g.node("ReduceSum", [g.node("Mul", [proj, proj], "gaussian/p2"), axes], "gaussian/kept",
                          keepdims=0)
            energy = g.node("Sub", [energy, kept], "gaussian/distance")
        return g.node("Max", [energy, g.const("gaussian/zero", np.zeros((), np.float32))], "score")

    def whitening(self) -> np.ndarray:
        """``V`` (``k x F``) with ``score = |y|**2 - |V y|**2`` (``y`` the input centred and divided by the noise
        spread): row ``j`` is ``sqrt(1 - 1 / lambda_j) u_j``, so the whole distance is the energy of ``y`` left
        after one matrix-vector product."""
        self._check_fitted()
        keep = 1.0 - 1.0 / self.variances_
        return np.sqrt(np.clip(keep, 0.0, 1.0))[:, None] * self.components_

    def lower(self, ctx: LoweringContext) -> Lowered:
        """The centred input divided by the noise spread, as int16 (the mean and the noise fold into the feature
        requantization), and the int8 whitening rows; the score is the distance in input steps squared
        (``pca_residual_s16``)."""
        self._check_fitted()
        n_in = ctx.n_inputs
        spread = np.sqrt(self.noise_variance_)
        whitened = dataclasses.replace(ctx, fit_scaled=(ctx.fit_scaled - self.mean_) / spread)
        q_x = centred_input(whitened, np.zeros(n_in), len(self.components_), "Gaussian", "axes")
        v = self.whitening()
        # k = 0 (one feature) keeps no axis: one all-zero row gives the same score without a zero-length C array.
        wq, w_scale = int8_rows(v if len(v) else np.zeros((1, n_in)))
        # r = W_hat q with W_hat the rounded rows; T maps r back to V q on their span, so |V q|**2 = r^T (I + D) r
        # with D = T^T T - I (small: the rounding's correction).
        t = (v if len(v) else np.zeros((1, n_in))) @ np.linalg.pinv(wq * w_scale[:, None])
        score = residual_op(wq, w_scale, t.T @ t - np.eye(len(wq)))
        feat = ctx.feature_input(q_x, "requantize_s64_s16", ctx.mu + ctx.sigma * self.mean_, ctx.sigma * spread)
        return Lowered([TensorSpec("input", "int16", (n_in,))], [feat, score],
                       {"score_unit": q_x.scale**2, "input_scale": q_x.scale})

    @classmethod
    def flash_lower_bound(cls, params: dict[str, Any], n_inputs: int, n_channels: int) -> int:
        k = {**cls().get_params(), **params}["n_components"]
        return max(cls.axes_kept(k, n_inputs), 1) * n_inputs  # int8 whitening rows

    @classmethod
    def max_inputs(cls, params: dict[str, Any]) -> int | None:
        return PCA_MAX_INPUTS  # pca_residual_s16's int32 accumulator


def _eigen_axes(cov: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(noise, axes, variances)`` of the top ``k`` eigen-axes of ``cov`` over one isotropic noise variance (the
    mean of the eigenvalues not kept), variances in noise units (at least 1)."""
    evals, evecs = np.linalg.eigh(cov)
    evals, evecs = np.maximum(evals[::-1], 0.0), evecs[:, ::-1].T  # rows are axes, largest variance first
    floor = 1e-12 * max(float(evals.max()), 1.0)
    sigma2 = max(float(evals[k:].mean()), floor)
    # A kept axis never has less variance than the rest share (eigenvalues are sorted); the floor keeps it so.
    return np.full(len(cov), sigma2), evecs[:k], np.maximum(evals[:k] / sigma2, 1.0)


def _factor_axes(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(noise, axes, variances)`` of a ``k``-factor analysis of ``x``: ``C = L^T L + Psi``. In ``y = z /
    sqrt(Psi)`` the covariance is ``I + W^T W`` with ``W = L Psi^(-1/2)``, whose axes are ``W``'s right singular
    vectors with variances ``1 + s**2``. The noise is floored at :data:`NOISE_FLOOR` of each feature's variance
    and of the mean variance, and the factors refitted to it."""
    var = x.var(axis=0)
    floor = NOISE_FLOOR * np.maximum(var, max(float(var.mean()), 1e-12))
    fa = FactorAnalysis(n_components=k, random_state=0).fit(x)
    noise = np.maximum(fa.noise_variance_, floor)
    # the loadings for the floored noise: the top k eigen-pairs of the noise-whitened covariance above 1
    spread = np.sqrt(noise)
    cov_y = np.cov(x, rowvar=False, bias=True) / spread[:, None] / spread[None, :]
    evals, evecs = np.linalg.eigh(np.atleast_2d(cov_y))
    evals, evecs = evals[::-1][:k], evecs[:, ::-1].T[:k]
    return noise, evecs, np.maximum(evals, 1.0)
