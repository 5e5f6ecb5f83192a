"""Per-channel autoregressive forecast residuals, scored as a robust z-score."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from tinywarden.detectors.base import Detector, check_param
from tinywarden.errors import DataError

#: MAD of a normal distribution times this is its standard deviation.
MAD_TO_STD = 1.4826


def _lag(x: np.ndarray, order: int, i: int) -> np.ndarray:
    """Lag ``i + 1`` of every forecast target ``x[:, order:]`` of windows ``x`` (n, window, ...)."""
    return x[:, order - i - 1 : x.shape[1] - i - 1]


class ARResidual(Detector):
    """Each channel is forecast one step ahead from its last ``order`` samples; big misses are anomalous.

    ``fit`` solves, per channel, the least-squares AR(p) model ``x[t] = c + a_1 x[t-1] + ... + a_p x[t-p]``
    over every time step of every training window (the "ARIMA variants" of the seed list, with the
    differencing left to the model: a fitted ``a_1`` near 1 is a random walk). The residuals of the
    training data give a per-channel median and MAD; a window's residuals become robust z-scores
    ``|r - median| / (1.4826 MAD)``. The score averages them over the last ``horizon`` steps of the
    window (all steps after the first ``order`` when ``horizon=None``) and then takes the maximum
    (``aggregate="max"``) or root mean square (``"rms"``) over channels. ``n_params_ = C (p + 3)``.

    >>> rng = np.random.default_rng(0)
    >>> walk = np.cumsum(rng.normal(size=(200, 16, 2)), axis=1)
    >>> det = ARResidual(order=2).fit(walk)
    >>> jump = walk[:1].copy(); jump[0, -1, 0] += 12.0
    >>> bool(det.score_samples(jump)[0] > det.score_samples(walk[:1])[0])
    True
    """

    name: ClassVar[str] = "ar"
    input_kind: ClassVar[str] = "window"  # type: ignore[assignment]
    state_arrays: ClassVar[tuple[str, ...]] = ("coef_", "intercept_", "median_", "mad_")

    def __init__(self, order: int = 3, horizon: int | None = None, aggregate: Literal["max", "rms"] = "max",
                 min_mad: float = 1e-3):
        self.order = order
        self.horizon = horizon
        self.aggregate = aggregate
        self.min_mad = min_mad

    def _validate(self) -> None:
        p = self.order
        check_param("order", p, isinstance(p, int) and p >= 1, "an integer >= 1")
        h = self.horizon
        check_param("horizon", h, h is None or (isinstance(h, int) and h >= 1), "None or an integer >= 1")
        check_param("aggregate", self.aggregate, self.aggregate in ("max", "rms"), "'max' or 'rms'")
        check_param("min_mad", self.min_mad, self.min_mad > 0, "a positive float")

    def _residuals(self, x: np.ndarray) -> np.ndarray:
        order = self.coef_.shape[1]
        pred = np.broadcast_to(self.intercept_, x[:, order:].shape).copy()
        for i in range(order):
            pred += _lag(x, order, i) * self.coef_[:, i]
        return x[:, order:] - pred

    def fit(self, X: np.ndarray, y: None = None) -> ARResidual:  # noqa: N803
        self._validate()
        x = self._check_input(X, fitting=True)
        _, w, c = x.shape
        if w <= self.order:
            raise DataError(f"ARResidual(order={self.order}) needs windows longer than {self.order}, got {w}")
        if self.horizon is not None and self.horizon > w - self.order:
            raise DataError(f"ARResidual: horizon={self.horizon} exceeds the {w - self.order} forecast steps "
                            f"of a {w}-row window with order {self.order}")
        # Overlapping windows repeat rows; each window still adds its own forecasts, which is harmless for LS.
        coef = np.zeros((c, self.order))
        intercept = np.zeros(c)
        for ch in range(c):
            xc = x[:, :, ch]
            a = np.stack([_lag(xc, self.order, i).reshape(-1) for i in range(self.order)], axis=1)
            b = xc[:, self.order :].reshape(-1)
            design = np.c_[np.ones(len(a)), a]
            # small ridge term keeps a constant channel solvable
            gram = design.T @ design + 1e-6 * len(a) * np.eye(self.order + 1)
            sol = np.linalg.solve(gram, design.T @ b)
            intercept[ch], coef[ch] = sol[0], sol[1:]
        self.input_shape_ = x.shape[1:]
        self.coef_ = coef
        self.intercept_ = intercept
        r = self._residuals(x).reshape(-1, c)
        self.median_ = np.median(r, axis=0)
        self.mad_ = np.maximum(np.median(np.abs(r - self.median_), axis=0), self.min_mad)
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        self._check_fitted()
        r = self._residuals(self._check_input(X))
        if self.horizon is not None:
            r = r[:, -self.horizon :]
        z = np.abs(r - self.median_) / (MAD_TO_STD * self.mad_)
        per_channel = z.mean(axis=1)
        if self.aggregate == "max":
            return per_channel.max(axis=1)
        return np.sqrt((per_channel * per_channel).mean(axis=1))
