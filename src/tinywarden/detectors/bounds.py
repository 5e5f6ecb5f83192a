"""Rule-based bounds learned from normal data: per-channel value range and rate-of-change limits.

The simplest detector there is, and the one that still works when everything else has failed: it
needs no features, no model arithmetic beyond compares and subtractions, and ``4 C`` numbers. That
makes it the response engine's fail-safe detector (see :func:`fail_safe_detector`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from tinywarden.arith import quantize_multiplier, round_half_away
from tinywarden.detectors.base import Detector, Shape, check_param
from tinywarden.detectors.lowering import Lowered, LoweringContext
from tinywarden.guard import bounds_scores
from tinywarden.kernels import Op

#: A window scores above this exactly when some sample or step breaks a learned bound.
VIOLATION_THRESHOLD = 0.0


#: Fractional bits of the integer violation (1.0 = one width of the learned range).
BOUNDS_FRAC_BITS = 12


class BoundsDetector(Detector):
    """Largest normalized violation of per-channel value bounds and rate-of-change limits in a window.

    Input is a raw window ``(n, window, channels)``. ``fit`` learns, per channel, the ``1 - quantile``
    and ``quantile`` percentiles of the values, widened by ``margin`` times their distance on each
    side (``[lo_, hi_]``), and the ``quantile`` percentile of the step ``|x[t] - x[t-1]|`` times
    ``1 + margin`` (``rate_``). The score of a window is the maximum over its samples and channels of

    - ``(x - hi_) / (hi_ - lo_)`` and ``(lo_ - x) / (hi_ - lo_)`` (value outside its range), and
    - ``(|x[t] - x[t-1]| - rate_) / rate_`` (a step too fast),

    so it is negative inside every bound, ``0`` on a bound and positive exactly when a rule is broken
    (:data:`VIOLATION_THRESHOLD`); :meth:`violates` applies that fixed threshold without calibration.

    >>> rng = np.random.default_rng(0)
    >>> det = BoundsDetector().fit(rng.normal(size=(200, 8, 2)))
    >>> spike = np.zeros((1, 8, 2)); spike[0, 4, 1] = 9.0
    >>> det.violates(np.zeros((1, 8, 2))).tolist(), det.violates(spike).tolist()
    ([False], [True])
    """

    name: ClassVar[str] = "bounds"
    search_space: ClassVar[tuple[dict[str, Any], ...]] = ({},)
    input_kind: ClassVar[str] = "window"  # type: ignore[assignment]
    #: the score is the learned range itself: a re-centred scaler would carry the range along with the data
    judges_level: ClassVar[bool] = True
    state_arrays: ClassVar[tuple[str, ...]] = ("lo_", "hi_", "rate_")

    def __init__(self, quantile: float = 0.999, margin: float = 0.1, min_width: float = 1e-3):
        self.quantile = quantile
        self.margin = margin
        self.min_width = min_width

    def _validate(self) -> None:
        q = self.quantile
        check_param("quantile", q, isinstance(q, float) and 0.5 < q <= 1.0, "a float in (0.5, 1]")
        check_param("margin", self.margin, isinstance(self.margin, int | float) and self.margin >= 0,
                    "a float >= 0")
        check_param("min_width", self.min_width, self.min_width > 0, "a positive float")

    def state_shapes(self) -> dict[str, Shape]:
        c = self.input_shape_[1]
        return {"lo_": (c,), "hi_": (c,), "rate_": (c,)}

    def fit(self, X: np.ndarray, y: None = None) -> BoundsDetector:  # noqa: N803
        self._validate()
        x = self._check_input(X, fitting=True)
        c = x.shape[2]
        flat = x.reshape(-1, c)
        lo = np.quantile(flat, 1.0 - self.quantile, axis=0)
        hi = np.quantile(flat, self.quantile, axis=0)
        pad = self.margin * (hi - lo)
        self.input_shape_ = x.shape[1:]
        self.lo_ = lo - pad
        self.hi_ = np.maximum(hi + pad, self.lo_ + self.min_width)
        steps = np.abs(np.diff(x, axis=1)).reshape(-1, c)
        rate = np.quantile(steps, self.quantile, axis=0) if len(steps) else np.zeros(c)
        self.rate_ = np.maximum(rate * (1.0 + self.margin), self.min_width)
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        self._check_fitted()
        return bounds_scores(self._check_input(X), self.lo_, self.hi_, self.rate_)

    def violates(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """True for each window that breaks at least one learned bound (score above 0)."""
        return self.score_samples(X) > VIOLATION_THRESHOLD

    def lower(self, ctx: LoweringContext) -> Lowered:
        """The rules apply to the int16 samples themselves: the learned bounds mapped into that domain, the
        violation in units of the learned range (``BOUNDS_FRAC_BITS`` fractional bits)."""
        self._check_fitted()
        s_c, z_c = ctx.window()
        per_q = ctx.sigma / s_c  # int16 steps per scaled unit, per channel

        def to_q(v: np.ndarray) -> np.ndarray:
            q = round_half_away((v * ctx.sigma + ctx.mu) / s_c - z_c)
            return np.clip(q, -(2**30), 2**30).astype(np.int32)

        # below one int16 step the samples cannot resolve a bound anyway; the floor keeps multipliers < 2**30
        width = np.maximum((self.hi_ - self.lo_) * per_q, 1.0)
        rate = self.rate_ * per_q
        unit = float(2**BOUNDS_FRAC_BITS)
        vm = [quantize_multiplier(unit / w) for w in width]
        rm = [quantize_multiplier(unit / r) for r in np.maximum(rate, 1.0)]
        op = Op("bounds_violation_s16", ("window",), "score", {"shift": 0}, {
            "lo": to_q(self.lo_), "hi": to_q(self.hi_),
            "rate": np.clip(round_half_away(rate), 0, 2**30).astype(np.int32),
            "value_multiplier": np.array([m for m, _ in vm], dtype=np.int32),
            "value_shift": np.array([sh for _, sh in vm], dtype=np.int8),
            "rate_multiplier": np.array([m for m, _ in rm], dtype=np.int32),
            "rate_shift": np.array([sh for _, sh in rm], dtype=np.int8)})
        return Lowered([], [op], {"score_unit": 1.0 / unit})

    @classmethod
    def flash_lower_bound(cls, params: dict[str, Any], n_inputs: int, n_channels: int) -> int:
        return 12 * n_channels  # int32 lo, hi and rate per channel


def fail_safe_detector(normal_windows: np.ndarray, margin: float = 0.25) -> BoundsDetector:
    """Bounds for the response engine to fall back on when the model path faults.

    Fit on *unscaled* normal windows ``(n, window, channels)`` (for example the fit part of
    ``Pipeline.split_inputs`` of a window-input pipeline, or ``batch_windows`` of the training series),
    so it needs neither the feature extractor nor the scaler, only the raw samples. It uses the full
    training range (``quantile=1.0``) widened by ``margin`` on each side, which keeps false alarms rare:
    use :meth:`BoundsDetector.violates` as its verdict (fixed threshold 0, no calibration needed).

    >>> rng = np.random.default_rng(0)
    >>> guard = fail_safe_detector(20.0 + rng.normal(size=(100, 8, 3)))
    >>> guard.violates(np.full((1, 8, 3), 20.0)).tolist(), guard.violates(np.full((1, 8, 3), 60.0)).tolist()
    ([False], [True])
    """
    return BoundsDetector(quantile=1.0, margin=margin).fit(normal_windows)
