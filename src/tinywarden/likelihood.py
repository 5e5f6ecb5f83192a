"""A calibrated anomaly likelihood: one confidence scale in [0, 1] for every family and every series.

A detector's raw score means nothing outside its own series (a k-means distance, a reconstruction
error, a z-score). :class:`AnomalyLikelihood` turns a stream of raw window scores into a
*confidence* that means the same everywhere, in the spirit of Numenta's anomaly likelihood
(Ahmad et al., 2017):

1. each raw score ``s`` becomes ``y = log(max(s, lo) - lo + spread)``, with ``lo`` and ``spread``
   learned from training scores (detector scores are skewed, one-sided; their log is much closer to
   Gaussian, which is what step 3 assumes);
2. the *short-term level* is the mean of the last ``short`` values of ``y`` (a ring buffer);
3. the *long-term distribution* is a running Gaussian (mean, variance) of short-term levels,
   exponentially weighted with rate ``2**-rate_shift``; it starts from the training scores;
4. ``z = (level - mean) / sqrt(variance)`` and the tail probability ``p = Q(z)`` (Gaussian upper
   tail); the confidence is ``c = clip(-log10(p) / decades, 0, 1)``: ``c = 0.5`` means a level the
   normal distribution reaches once in ``10**(decades / 2)`` windows, on every series;
5. the long-term distribution learns from levels judged normal (``z <= gate``; every level when
   ``gate`` is None) at the full rate and from elevated levels ``2**slow_shift`` times more slowly,
   so an anomaly does not teach itself as normal at once but a lasting change of regime is learned in a bounded time;
6. optional hold-off (``holdoff > 0``, off by default): a window whose confidence reaches :data:`HOLDOFF_LEVEL`
   silences the reported confidence (0) of the next ``holdoff`` windows, as CAD OSE's rest period does on the
   NAB benchmark; the distribution keeps learning meanwhile. It reports one detection per event (what NAB
   rewards) at the price of a blind spot after each one, which is why the product leaves it off: an attacker
   who can raise one confident window could act unreported in the next ``holdoff`` windows.

Defaults chosen by measurement on NAB, without a hold-off (``benchmarks/results/nab.md``, families ewma and kmeans):
``short = 1`` beat 4 and 8; ``gate = None`` (every level teaches at the same rate) beat gates of 3 and 5
by 2 to 20 points, because a gated distribution that misses a lasting change of level stays in alarm
for the rest of the series; ``decades`` 10, 20 and 50 gave the same NAB figures.

State: ``short`` values, their sum, the mean and the variance (``short + 3`` numbers). Per window: one
log, one ring-buffer step, one multiply-add for the mean and two for the variance, one division,
and ``-log10 Q(z)``, which is a table over ``z`` in ``[0, z_max]`` (``c`` is clipped at 1 beyond
``z_max``, 6.36 for ``decades = 10``); every step has a fixed-point form.

>>> rng = np.random.default_rng(0)
>>> lik = AnomalyLikelihood().fit(rng.gamma(2.0, size=500))
>>> c = lik.transform(np.r_[rng.gamma(2.0, size=300), np.full(10, 40.0)])
>>> bool(c[:300].max() < 0.5 < c[-1])
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tinywarden.errors import ConfigError, DataError, NotFittedError

LN10 = math.log(10.0)
#: The long-term standard deviation never falls below this fraction of the training one, so a
#: stretch of constant scores does not make the next small wiggle look infinitely unlikely.
STD_FLOOR_FRACTION = 0.5
MIN_FIT_SCORES = 4
#: The confidence that starts a hold-off: a tail probability of 1e-5 at ``decades = 10``, the level HTM's
#: likelihood filter calls red (Ahmad et al., 2017).
HOLDOFF_LEVEL = 0.5
MAX_HOLDOFF = 65535


def confidence_of_z(z: np.ndarray | float, decades: float) -> np.ndarray:
    """``clip(-log10 Q(z) / decades, 0, 1)``: the tail probability of ``z`` on a log scale."""
    z = np.asarray(z, dtype=np.float64)
    return np.clip(-log_tail(z) / LN10 / decades, 0.0, 1.0)


_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_ERFC = np.frompyfunc(math.erfc, 1, 1)


def log_tail(z: np.ndarray | float) -> np.ndarray:
    """``log Q(z)``, the log of the standard normal upper tail (scipy's ``log_ndtr(-z)``), from the standard
    library's ``erfc`` where it does not underflow and its asymptotic series beyond (z > 37), so the agent's
    runtime does not load scipy (about 25 MB resident) for this one function.

    >>> [round(float(v), 6) for v in log_tail(np.array([0.0, 3.0, 40.0]))]
    [-0.693147, -6.607726, -804.608442]
    """
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.array(np.log(0.5 * np.asarray(_ERFC(z / math.sqrt(2.0)), dtype=np.float64)), dtype=np.float64)
        far = z > 37.0
        if far.any():
            zf = z[far]
            r = 1.0 / (zf * zf)
            out[far] = -0.5 * zf * zf - np.log(zf) - _LOG_SQRT_2PI + np.log1p(-r * (1.0 - 3.0 * r * (1.0 - 5.0 * r)))
    return out


def z_for_confidence(confidence: float, decades: float) -> float:
    """The ``z`` at which :func:`confidence_of_z` reaches ``confidence`` (for tables and docs)."""
    lo, hi = 0.0, 40.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if confidence_of_z(mid, decades) < confidence else (lo, mid)
    return hi


class AnomalyLikelihood:
    """Streaming calibrated confidence of a raw anomaly-score stream (higher score = more anomalous).

    ``fit`` learns the log transform and the starting distribution from training scores (normal
    data); ``update`` takes one score and returns its confidence; ``transform`` is ``update`` over a
    whole array from the fitted state (it leaves this object's stream state alone).
    """

    def __init__(self, short: int = 1, rate_shift: int = 9, gate: float | None = None, slow_shift: int = 4,
                 decades: float = 10.0, holdoff: int = 0) -> None:
        self.short = short
        self.rate_shift = rate_shift
        self.gate = gate
        self.slow_shift = slow_shift
        self.decades = decades
        self.holdoff = holdoff

    def _check_params(self) -> None:
        if not (isinstance(self.short, int) and 1 <= self.short <= 256):
            raise ConfigError(f"likelihood short window must be an integer in [1, 256], got {self.short!r}")
        for name in ("rate_shift", "slow_shift"):
            v = getattr(self, name)
            if not (isinstance(v, int) and 0 <= v <= 20):
                raise ConfigError(f"likelihood {name} must be an integer in [0, 20], got {v!r}")
        if self.gate is not None and not (isinstance(self.gate, int | float) and math.isfinite(self.gate)
                                          and self.gate > 0):
            raise ConfigError(f"likelihood gate must be a positive z or None (no gate), got {self.gate!r}")
        if not (math.isfinite(self.decades) and self.decades > 0):
            raise ConfigError(f"likelihood decades must be positive, got {self.decades!r}")
        if not (isinstance(self.holdoff, int) and 0 <= self.holdoff <= MAX_HOLDOFF):
            raise ConfigError(f"likelihood holdoff must be an integer in [0, {MAX_HOLDOFF}] windows, "
                              f"got {self.holdoff!r}")

    # -- learning -------------------------------------------------------------------------------
    def fit(self, scores: np.ndarray | Sequence[float]) -> AnomalyLikelihood:
        """Learn from raw scores of normal windows, in time order."""
        self._check_params()
        s = np.asarray(scores, dtype=np.float64).ravel()
        if len(s) < MIN_FIT_SCORES:
            raise DataError(f"likelihood needs at least {MIN_FIT_SCORES} training scores, got {len(s)}")
        if not np.isfinite(s).all():
            raise DataError("likelihood training scores hold NaN or inf")
        self.lo_ = float(s.min())
        spread = float(np.median(s - self.lo_))
        self.spread_ = spread if spread > 0 else max(float(np.ptp(s)), 1e-9 * (abs(self.lo_) + 1.0), 1e-12)
        y = self._log(s)
        k = min(self.short, len(y))
        levels = np.convolve(y, np.ones(k) / k, mode="valid")
        self.mean_ = float(levels.mean())
        std = float(levels.std())
        self.std_floor_ = max(STD_FLOOR_FRACTION * std, 1e-6)
        self.var_ = max(std, self.std_floor_) ** 2
        self.reset()
        return self

    def _log(self, s: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(s, self.lo_) - self.lo_ + self.spread_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "mean_"):
            raise NotFittedError("the anomaly likelihood is not fitted: fit it on training scores first")

    # -- streaming ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the fitted distribution, with an empty short-term window."""
        self._check_fitted()
        self._ring = np.zeros(self.short)
        self._pos = 0
        self._count = 0
        self._sum = 0.0
        self._mean = self.mean_
        self._var = self.var_
        self._hold = 0

    def update(self, score: float) -> float:
        """Push one raw score; its confidence in [0, 1]. A NaN/inf score gives NaN and changes nothing."""
        self._check_fitted()
        z = self._step(float(score))
        return math.nan if math.isnan(z) else self._report(float(confidence_of_z(z, self.decades)))

    def _report(self, confidence: float) -> float:
        """Step 6: the reported confidence (0 while a hold-off runs); starts a hold-off at HOLDOFF_LEVEL."""
        out = confidence if self._hold == 0 else 0.0
        self._hold = max(self._hold - 1, 0)
        if self.holdoff and confidence >= HOLDOFF_LEVEL:
            self._hold = self.holdoff
        return out

    def _step(self, score: float) -> float:
        if not math.isfinite(score):
            return math.nan
        y = math.log(max(score, self.lo_) - self.lo_ + self.spread_)
        self._sum += y - self._ring[self._pos]
        self._ring[self._pos] = y
        self._pos = (self._pos + 1) % self.short
        self._count = min(self._count + 1, self.short)
        level = self._sum / self._count
        z = (level - self._mean) / math.sqrt(self._var)
        # Exponentially weighted mean and variance; elevated levels teach 2**slow_shift times slower.
        rate = 2.0 ** -(self.rate_shift + (self.slow_shift if self.gate is not None and z > self.gate else 0))
        d = level - self._mean
        self._mean += rate * d
        self._var = max((1.0 - rate) * (self._var + rate * d * d), self.std_floor_ ** 2)
        return z

    def drift(self) -> float:
        """How far the running mean has moved from the fitted one, in fitted standard deviations."""
        self._check_fitted()
        return abs(self._mean - self.mean_) / math.sqrt(self.var_)

    def fresh(self) -> AnomalyLikelihood:
        """A new stream from the same fitted state (this one's stream state is left alone)."""
        self._check_fitted()
        return AnomalyLikelihood.from_state(self.get_params(), self.state())

    def transform(self, scores: np.ndarray | Sequence[float]) -> np.ndarray:
        """Confidences of a whole score stream from the fitted state; equal to ``update`` one by one."""
        self._check_fitted()
        saved = (self._ring.copy(), self._pos, self._count, self._sum, self._mean, self._var, self._hold)
        self.reset()
        try:
            z = np.array([self._step(float(s)) for s in np.asarray(scores, dtype=np.float64).ravel()])
            out = confidence_of_z(np.nan_to_num(z), self.decades)
            out[np.isnan(z)] = np.nan
            if self.holdoff:
                for i in np.flatnonzero(~np.isnan(z)):
                    out[i] = self._report(float(out[i]))
        finally:
            self._ring, self._pos, self._count, self._sum, self._mean, self._var, self._hold = saved
        return out

    # -- model file -----------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        return {"short": self.short, "rate_shift": self.rate_shift, "gate": self.gate,
                "slow_shift": self.slow_shift, "decades": self.decades, "holdoff": self.holdoff}

    def state(self) -> dict[str, float]:
        """The fitted numbers (the stream state starts from them)."""
        self._check_fitted()
        return {"lo": self.lo_, "spread": self.spread_, "mean": self.mean_, "var": self.var_,
                "std_floor": self.std_floor_}

    @classmethod
    def from_state(cls, params: dict[str, Any], state: dict[str, float]) -> AnomalyLikelihood:
        lik = cls(**params)
        lik._check_params()
        try:
            lik.lo_, lik.spread_, lik.mean_, lik.var_, lik.std_floor_ = (
                float(state[k]) for k in ("lo", "spread", "mean", "var", "std_floor"))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"likelihood state is missing or malformed: {exc}") from exc
        if not all(math.isfinite(v) for v in (lik.lo_, lik.spread_, lik.mean_, lik.var_, lik.std_floor_)) or \
                lik.spread_ <= 0 or lik.var_ <= 0 or lik.std_floor_ <= 0:
            raise DataError("likelihood state holds a non-finite or non-positive value")
        lik.reset()
        return lik
