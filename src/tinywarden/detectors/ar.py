"""Per-channel autoregressive forecast residuals, scored as a robust z-score."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np

from tinywarden.arith import INT32_MAX, quantize_multiplier, round_half_away
from tinywarden.detectors.base import Detector, Shape, check_param, sizes
from tinywarden.detectors.lowering import Lowered, LoweringContext
from tinywarden.errors import ConfigError, DataError
from tinywarden.kernels import Op
from tinywarden.kernels.ar_residual_s16 import AR_MAX_CHANNELS

#: MAD of a normal distribution times this is its standard deviation.
MAD_TO_STD = 1.4826


def _lag(x: np.ndarray, order: int, i: int) -> np.ndarray:
    """Lag ``i + 1`` of every forecast target ``x[:, order:]`` of windows ``x`` (n, window, ...)."""
    return x[:, order - i - 1 : x.shape[1] - i - 1]


#: Fractional bits of the int8 path's AR coefficients (|coefficient| < 2**11 in int32) and z-scores.
AR_FRAC_BITS = 20
AR_Z_BITS = 12


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
    search_space: ClassVar[tuple[dict[str, Any], ...]] = ({"order": 2}, {"order": 4})
    input_kind: ClassVar[str] = "window"  # type: ignore[assignment]
    #: the residual is measured against the trained intercept: a re-centred scaler moves the level it forecasts
    judges_level: ClassVar[bool] = True
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

    def state_shapes(self) -> dict[str, Shape]:
        c, (p,) = self.input_shape_[1], sizes(self.order)
        return {"coef_": (c, p), "intercept_": (c,), "median_": (c,), "mad_": (c,)}

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

    def lower(self, ctx: LoweringContext) -> Lowered:
        """The forecast runs on the int16 samples: the pipeline's scaling, the intercept and the residual
        median fold into one bias per channel, MAD and horizon into one requantization."""
        self._check_fitted()
        s_c, z_c = ctx.window()
        w, order = ctx.fit_scaled.shape[1], self.coef_.shape[1]
        horizon = self.horizon if self.horizon is not None else w - order
        if order > 16 or np.abs(self.coef_).max() * 2**AR_FRAC_BITS >= INT32_MAX:
            raise ConfigError(f"AR order {order} or a coefficient ({np.abs(self.coef_).max():.4g}) is beyond the "
                              f"int8 path (order <= 16, |coefficient| < {INT32_MAX / 2**AR_FRAC_BITS:.0f})")
        per_q = ctx.sigma / s_c
        level = ctx.mu / s_c - z_c  # the pipeline's offset in int16 steps
        bias = level * (1.0 - self.coef_.sum(axis=1)) + (self.intercept_ + self.median_) * per_q
        real = 2.0**AR_Z_BITS / (2.0**AR_FRAC_BITS * per_q * MAD_TO_STD * self.mad_ * horizon)
        pre = np.minimum(np.maximum(0, np.floor(np.log2(0.25 / real))), 62).astype(np.int64)
        ms = [quantize_multiplier(float(r * 2.0**p)) for r, p in zip(real, pre, strict=True)]
        op = Op("ar_residual_s16", ("window",), "score",
                {"order": order, "horizon": horizon, "frac_bits": AR_FRAC_BITS,
                 "aggregate": 0 if self.aggregate == "max" else 1, "shift": 0},
                {"coef": round_half_away(self.coef_ * 2**AR_FRAC_BITS).astype(np.int32).ravel(),
                 "bias": round_half_away(bias * 2**AR_FRAC_BITS).astype(np.int64),
                 "pre_shift": pre.astype(np.int32),
                 "multiplier": np.array([m for m, _ in ms], dtype=np.int32),
                 "shift": np.array([sh for _, sh in ms], dtype=np.int8)})
        return Lowered([], [op], {"z_scale": 2.0**-AR_Z_BITS})  # one unit of a channel's integer z-score

    @classmethod
    def flash_lower_bound(cls, params: dict[str, Any], n_inputs: int, n_channels: int) -> int:
        return int({**cls().get_params(), **params}["order"]) * n_channels

    @classmethod
    def max_inputs(cls, params: dict[str, Any]) -> int | None:
        return AR_MAX_CHANNELS  # ar_residual_s16's int64 sum of squared z-scores over the channels
