"""PCA (linear autoencoder) on window features: the error of reconstructing a vector from its main axes.

On the shared SMD/ASD data this is the floor every other family has to clear (see ``shared/README.md``):
normal telemetry lives near a low-dimensional subspace, and most attacks and faults leave it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from tinywarden.arith import INT8_MAX, QParams, choose_qparams, quantize_multiplier, round_half_away
from tinywarden.detectors.base import Detector, Learned, ScoreGraph, Shape, check_param
from tinywarden.detectors.lowering import Z_HEADROOM, Lowered, LoweringContext, int8_rows
from tinywarden.errors import ConfigError
from tinywarden.kernels import Op, TensorSpec
from tinywarden.kernels.pca_residual_s16 import PCA_MAX_AXES, PCA_MAX_INPUTS


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
    scores_displacement: ClassVar[bool] = True
    search_space: ClassVar[tuple[dict[str, Any], ...]] = (
        {"n_components": 4}, {"n_components": 8}, {"n_components": 16}, {"n_components": 24}, {"n_components": 32},
    )
    state_arrays: ClassVar[tuple[str, ...]] = ("mean_", "components_")

    def __init__(self, n_components: int | float = 0.95):
        self.n_components = n_components

    def _validate(self) -> None:
        k = self.n_components
        ok = (isinstance(k, int | np.integer) and not isinstance(k, bool) and k >= 0) or (
            isinstance(k, float) and 0.0 < k < 1.0
        )
        check_param("n_components", k, ok, "an integer >= 0 or a variance fraction in (0, 1)")

    def state_shapes(self) -> dict[str, Shape]:
        f = self.input_shape_[0]
        return {"mean_": (f,), "components_": (Learned("components", 0, max(f - 1, 0)), f)}

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

    def score_graph(self, g: ScoreGraph, x: str) -> str:
        """The mean squared residual of the centred input outside the components' span."""
        self._check_fitted()
        centred = g.node("Sub", [x, g.const("pca/mean", self.mean_)], "pca/centred")
        residual = centred
        if len(self.components_):
            coords = g.node("MatMul", [centred, g.const("pca/components_t", self.components_.T)], "pca/coords")
            back = g.node("MatMul", [coords, g.const("pca/components", self.components_)], "pca/projected")
            residual = g.node("Sub", [centred, back], "pca/residual")
        return g.node("ReduceMean", [g.node("Mul", [residual, residual], "pca/r2")], "score", axes=[1], keepdims=0)

    def lower(self, ctx: LoweringContext) -> Lowered:
        """The centred int16 input (the PCA mean folds into the feature requantization) and int8 axes; the
        score is the energy outside their span (``pca_residual_s16``)."""
        self._check_fitted()
        n_in = ctx.n_inputs
        q_x = centred_input(ctx, self.mean_, len(self.components_), "PCA", "components")
        # k = 0 keeps no axis: one all-zero row gives the same score (the whole energy) without a
        # zero-length C array.
        wq, w_scale = int8_rows(self.components_ if len(self.components_) else np.zeros((1, n_in)))
        # The rounded axes are not exactly orthonormal: D = (W W^T)^-1 - I restores the projection onto
        # their span.
        dq = wq * w_scale[:, None]
        residual = residual_op(wq, w_scale, np.linalg.pinv(dq @ dq.T) - np.eye(len(dq)))
        return Lowered([TensorSpec("input", "int16", (n_in,))],
                       [ctx.feature_input(q_x, "requantize_s64_s16", ctx.mu + ctx.sigma * self.mean_), residual],
                       # the float score is the mean squared error
                       {"score_unit": q_x.scale**2 / n_in, "input_scale": q_x.scale})

    @classmethod
    def flash_lower_bound(cls, params: dict[str, Any], n_inputs: int, n_channels: int) -> int:
        k = {**cls().get_params(), **params}["n_components"]
        return (k if isinstance(k, int) else 1) * n_inputs  # int8 axes (a variance fraction keeps >= 1)

    @classmethod
    def max_inputs(cls, params: dict[str, Any]) -> int | None:
        return PCA_MAX_INPUTS  # pca_residual_s16's int32 accumulator


def centred_input(ctx: LoweringContext, mean: np.ndarray, n_axes: int, family: str, axes: str) -> QParams:
    """The int16 quantization of the centred input ``pca_residual_s16`` reads, after checking the kernel's
    limits on ``n_axes`` rows (named ``axes`` in the error) and the context's inputs."""
    n_in = ctx.n_inputs
    if n_in > PCA_MAX_INPUTS or n_axes > PCA_MAX_AXES:
        raise ConfigError(f"{family} with {n_axes} {axes} on {n_in} features: the int8 path takes at most "
                          f"{PCA_MAX_AXES} {axes} and {PCA_MAX_INPUTS} features (use fewer components, features "
                          "per channel or channels)")
    top = float(np.abs(ctx.fit_scaled - mean).max()) * Z_HEADROOM
    return choose_qparams(-top, top, "int16", symmetric=True)


def residual_op(wq: np.ndarray, w_scale: np.ndarray, gram: np.ndarray) -> Op:
    """The ``pca_residual_s16`` op: ``score = |q|**2 - r^T (I + D) r`` with ``r`` the centred int16 input ``q``
    projected on the int8 rows ``wq`` (real rows ``wq * w_scale``), in input steps.

    ``gram`` is ``D`` (``k x k``, symmetric), stored as an int8 upper triangle scaled by a power of two.
    """
    mult_shift = [quantize_multiplier(float(sc)) for sc in w_scale]
    upper = gram[np.triu_indices(len(wq))]
    g_top = float(np.abs(upper).max())
    gram_shift = int(np.clip(np.floor(np.log2(INT8_MAX / g_top)) if g_top > 0 else 40, 1, 40))
    return Op("pca_residual_s16", ("input",), "score", {"shift": 0, "gram_shift": gram_shift},
              {"weights": wq.astype(np.int8),
               "multiplier": np.array([m for m, _ in mult_shift], dtype=np.int32),
               "shift": np.array([sh for _, sh in mult_shift], dtype=np.int8),
               "gram": np.clip(round_half_away(upper * 2.0**gram_shift), -INT8_MAX, INT8_MAX).astype(np.int8)})
