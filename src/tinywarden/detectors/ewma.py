"""EWMA / z-score baseline: how many standard deviations each feature sits from its learned normal."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np

from tinywarden.arith import choose_qparams
from tinywarden.detectors.base import Detector, ScoreGraph, Shape, check_param
from tinywarden.detectors.lowering import Z_HEADROOM, Lowered, LoweringContext
from tinywarden.kernels import Op, TensorSpec


class EWMAZScore(Detector):
    """Per-feature mean and variance, learned as exponentially weighted averages; score = z-score summary.

    ``fit`` starts from the batch mean and variance of the normal data; ``partial_fit`` keeps adapting
    them with weight ``alpha`` per sample (so a device's slowly changing normal is followed, at the
    price that a very slow attack can be learned too: keep ``alpha`` small). The score is the root mean
    square (``aggregate="rms"``) or the maximum (``"max"``) of the absolute z-scores.

    >>> det = EWMAZScore().fit(np.random.default_rng(0).normal(size=(500, 3)))
    >>> bool(det.score_samples(np.array([[8.0, 0.0, 0.0]]))[0] > det.score_samples(np.zeros((1, 3)))[0])
    True
    """

    name: ClassVar[str] = "ewma"
    online: ClassVar[bool] = True
    search_space: ClassVar[tuple[dict[str, Any], ...]] = ({"aggregate": "rms"}, {"aggregate": "max"})
    state_arrays: ClassVar[tuple[str, ...]] = ("mean_", "var_")

    def __init__(self, alpha: float = 0.01, aggregate: Literal["rms", "max"] = "rms", min_std: float = 1e-3):
        self.alpha = alpha
        self.aggregate = aggregate
        self.min_std = min_std

    def _validate(self) -> None:
        check_param("alpha", self.alpha, 0.0 < self.alpha <= 1.0, "a float in (0, 1]")
        check_param("aggregate", self.aggregate, self.aggregate in ("rms", "max"), "'rms' or 'max'")
        check_param("min_std", self.min_std, self.min_std > 0, "a positive float")

    def state_shapes(self) -> dict[str, Shape]:
        f = self.input_shape_[0]
        return {"mean_": (f,), "var_": (f,)}

    def fit(self, X: np.ndarray, y: None = None) -> EWMAZScore:  # noqa: N803
        self._validate()
        x = self._check_input(X, fitting=True)
        self.input_shape_ = x.shape[1:]
        self.mean_ = x.mean(axis=0)
        self.var_ = x.var(axis=0)
        return self

    def partial_fit(self, X: np.ndarray, y: None = None) -> EWMAZScore:  # noqa: N803
        """Update the running mean/variance one row at a time (fits from scratch when unfitted)."""
        if not hasattr(self, "mean_"):
            return self.fit(X)
        x = self._check_input(X)
        a = self.alpha
        mean, var = self.mean_.copy(), self.var_.copy()
        for row in x:
            d = row - mean
            mean += a * d
            var = (1.0 - a) * (var + a * d * d)
        self.mean_, self.var_ = mean, var
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        self._check_fitted()
        x = self._check_input(X)
        z = np.abs(x - self.mean_) / np.maximum(np.sqrt(self.var_), self.min_std)
        if self.aggregate == "max":
            return z.max(axis=1)
        return np.sqrt((z * z).mean(axis=1))

    def score_graph(self, g: ScoreGraph, x: str) -> str:
        """Each input's |z| against the learned mean and deviation, then their largest or root mean square."""
        self._check_fitted()
        sd = np.maximum(np.sqrt(self.var_), self.min_std)
        z = g.node("Abs", [g.node("Sub", [x, g.const("ewma/mean", self.mean_)], "ewma/deviation")], "ewma/abs")
        z = g.node("Div", [z, g.const("ewma/sd", sd)], "ewma/z")
        if self.aggregate == "max":
            return g.node("ReduceMax", [z], "score", axes=[1], keepdims=0)
        return g.node("Sqrt", [g.node("ReduceMean", [g.node("Mul", [z, z], "ewma/z2")], "ewma/mean_z2", axes=[1],
                                      keepdims=0)], "score")

    def lower(self, ctx: LoweringContext) -> Lowered:
        """int16 z-scores (EWMA mean and deviation folded into the feature requantization), then their sum
        of squares or largest magnitude."""
        self._check_fitted()
        sd = np.maximum(np.sqrt(self.var_), self.min_std)
        top = float(np.abs((ctx.fit_scaled - self.mean_) / sd).max())
        q_z = choose_qparams(-top * Z_HEADROOM, top * Z_HEADROOM, "int16", symmetric=True)
        kind = "max_abs_s16" if self.aggregate == "max" else "sum_sq_s16"
        return Lowered([TensorSpec("input", "int16", (ctx.n_inputs,))],
                       [ctx.feature_input(q_z, "requantize_s64_s16", ctx.mu + ctx.sigma * self.mean_, ctx.sigma * sd),
                        Op(kind, ("input",), "score", {"shift": 0})],
                       {"input_scale": q_z.scale})
