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
6. a new record (``record`` not None; HTM's spatial-anomaly rule, applied to the score): a window whose raw
   score exceeds every score seen so far (training included) by more than ``record`` times their range
   reports confidence 1, whatever its level; the range then grows to include it, so a score that keeps
   climbing (a ramp) keeps reporting while a single jump reports once. ``record = 0.05`` is HTM's
   published tolerance (Ahmad et al., 2017), not a fitted value;
7. optional hold-off (``holdoff > 0``, off by default): a window whose confidence reaches :data:`HOLDOFF_LEVEL`
   silences the reported confidence (0) of the next ``holdoff`` windows, as CAD OSE's rest period does on the
   NAB benchmark; the distribution keeps learning meanwhile. It reports one detection per event (what NAB
   rewards) at the price of a blind spot after each one, which is why the product leaves it off: an attacker
   who can raise one confident window could act unreported in the next ``holdoff`` windows;
8. a value record (``value_record`` not None, and only when ``fit`` was given the training values and
   ``update`` the window's new rows, or :meth:`AnomalyLikelihood.observe` the samples as they came;
   ``Pipeline.fit`` passes the rows of its normal training windows, and every scoring path the rows each window
   adds; the integer twin is step 8 of :mod:`tinywarden.kernels.likelihood_q`): HTM's spatial anomaly on the
   values themselves, per channel and on
   both sides: a value beyond every value seen on its channel (training included) by more than
   ``value_record`` times that channel's seen range reports confidence 1; the range then grows to include
   it (:class:`ValueRecord`). It sees what a window score can hide: a value outside anything seen, in a
   window whose shape is ordinary. The range never shrinks; it grows silently only by samples within the
   tolerance, so it catches jumps and ramps faster than ``value_record`` of the range per sample, not a
   slower creep (which the score, the record rule and the adaptation's drift flag watch).

What is notified (:meth:`AnomalyLikelihood.notifications`): the confidence through :func:`alarm_onsets`, each
alarm once at its onset and every value record; the confidence itself, which the tiers and the adaptation
read, is unchanged. The agent notifies the response side the same way (one incident per tier entered).

Defaults chosen by measurement on NAB, without a hold-off and before the record rule
(``benchmarks/results/nab.md``, families ewma and kmeans):
``short = 1`` beat 4 and 8; ``gate = None`` (every level teaches at the same rate) beat gates of 3 and 5
by 2 to 20 points, because a gated distribution that misses a lasting change of level stays in alarm
for the rest of the series; ``decades`` 10, 20 and 50 gave the same NAB figures. The record rule (its
tolerance fixed a priori, not scored) raised the NAB standard score of these defaults from 29.0 to 47.0
(kmeans) and from 30.1 to 45.7 (dense_ae). HTM's own settings (``short = 10``, ``rate_shift = 13``) score
lower without a hold-off and higher with one (same file), which is why they are not the defaults.
The value record (its tolerance HTM's, fixed a priori) raised the kmeans row from 47.0 to 56.1 NAB
standard, and the product's own path (``Pipeline.confidence``, as shipped) from 46.9 to 56.0; on the
simulator it added no false alarm on the demo, changed no k-of-n figure, and added one alarm (confidence
>= 0.5) in the first 24 h of one of seven regime changes (``benchmarks/results/nab.md``, "Levers as product
defaults"; ``benchmarks/results/drift.md``).

State: ``short`` values, their sum, the mean and the variance (``short + 3`` numbers), with the record rule
the seen range (2 more), with a hold-off its counter (1 more), with the value record two per channel
(plus two compares per new sample). Per window: one
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
#: An alarm stands (:func:`alarm_onsets`) until the confidence falls below this: the adaptation's "clearly
#: normal" bar (``tinywarden.adapt.Adaptation.below_confidence``), a tail probability above 1e-2.
REARM_LEVEL = 0.2
#: HTM's spatial tolerance: a score beyond the seen range by this fraction of it is a new record.
RECORD_TOLERANCE = 0.05
MAX_RECORD = 16.0
SLOW_SHIFT = 4
"""Default ``slow_shift``: with a ``gate``, levels over it teach the scale ``2**SLOW_SHIFT`` (16) times more slowly."""


def check_gate(gate: float | None) -> float | None:
    """``gate`` (step 5) as a float, or None (no gate); a :class:`ConfigError` unless it is a positive finite z.

    >>> check_gate(3), check_gate(None)
    (3.0, None)
    """
    if gate is None:
        return None
    if isinstance(gate, bool) or not (isinstance(gate, int | float) and math.isfinite(gate) and gate > 0):
        raise ConfigError(f"likelihood gate must be a positive z or None (no gate), got {gate!r}")
    return float(gate)


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


def new_records(x: np.ndarray | Sequence[float], tolerance: float = RECORD_TOLERANCE,
                lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Where ``x`` sets a new record (step 6 of the module docstring): above everything seen before it (and
    ``[lo, hi]``, a range seen earlier) by more than ``tolerance`` times the seen range. HTM's spatial anomaly
    is this rule on a series' values, below as well as above; here it is one-sided.

    >>> new_records([1.0, 2.0, 2.02, 5.0, 5.1]).tolist()
    [False, False, False, True, False]
    """
    v = np.asarray(x, dtype=np.float64).ravel()
    out = np.zeros(len(v), dtype=bool)
    for i, value in enumerate(v):
        if not math.isfinite(value):
            continue
        if lo is not None and hi is not None and hi > lo and value > hi + tolerance * (hi - lo):
            out[i] = True
        lo = value if lo is None else min(lo, value)
        hi = value if hi is None else max(hi, value)
    return out


def hold_off(confidence: np.ndarray | Sequence[float], windows: int) -> np.ndarray:
    """Step 7 of the module docstring over a whole confidence stream: 0 for the ``windows`` windows after
    each confidence of at least :data:`HOLDOFF_LEVEL` (NaN stays NaN and does not count).

    >>> hold_off([0.1, 0.6, 0.7, 0.2, 0.2, 0.1, 0.9], 2).tolist()
    [0.1, 0.6, 0.0, 0.0, 0.0, 0.1, 0.9]
    """
    c = np.array(confidence, dtype=np.float64, copy=True).ravel()
    hold = 0
    for i in np.flatnonzero(~np.isnan(c)):
        raw = c[i]
        if hold:
            c[i] = 0.0
            hold -= 1
        if windows and raw >= HOLDOFF_LEVEL:
            hold = windows
    return c


class ValueRecord:
    """Step 8 of the module docstring: per-channel seen range of the values, and whether a sample leaves it.

    ``fit`` takes the training values ``(rows, channels)``; :meth:`push` takes the rows a window adds
    (``(rows, channels)`` or one row) in time order and says whether any of them beat the range seen before
    it (every sample is checked against the range as the samples before it left it, as the device checks
    them one by one). Non-finite values are skipped: they neither report nor widen the range.

    >>> rec = ValueRecord(0.05).fit(np.array([[0.0], [10.0]]))
    >>> [rec.push(np.array([v])) for v in (10.4, 11.0, 11.2, -1.0)]
    [False, True, False, True]
    """

    def __init__(self, tolerance: float = RECORD_TOLERANCE) -> None:
        self.tolerance = tolerance

    def fit(self, values: np.ndarray | Sequence[Sequence[float]]) -> ValueRecord:
        """Start from the per-channel range of the training ``values`` (non-finite entries left out)."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim == 1:
            v = v[:, None]
        if v.ndim != 2 or len(v) == 0 or not v.shape[1]:
            raise DataError(f"value record needs training values shaped (rows, channels), got shape {v.shape}")
        finite = np.isfinite(v)
        if not finite.any(axis=0).all():
            raise DataError("value record: a channel has no finite training value")
        self.lo_ = np.where(finite, v, np.inf).min(axis=0)
        self.hi_ = np.where(finite, v, -np.inf).max(axis=0)
        self.reset()
        return self

    @classmethod
    def from_range(cls, tolerance: float, lo: Sequence[float], hi: Sequence[float]) -> ValueRecord:
        """A record from a stored range (a model file's ``value_lo`` / ``value_hi``)."""
        rec = cls(tolerance)
        try:
            rec.lo_, rec.hi_ = np.array(lo, dtype=np.float64).ravel(), np.array(hi, dtype=np.float64).ravel()
        except (TypeError, ValueError) as exc:
            raise DataError(f"likelihood state value_lo/value_hi are malformed: {exc}") from None
        if (len(rec.lo_) == 0 or rec.lo_.shape != rec.hi_.shape or not np.isfinite(rec.lo_).all()
                or not np.isfinite(rec.hi_).all() or (rec.hi_ < rec.lo_).any()):
            raise DataError("likelihood state value_lo/value_hi must be equal-length finite ranges with lo <= hi")
        rec.reset()
        return rec

    def reset(self) -> None:
        """Back to the fitted range."""
        self._lo, self._hi = self.lo_.copy(), self.hi_.copy()

    def push(self, rows: np.ndarray | Sequence[float]) -> bool:
        """Whether any of ``rows`` (the samples a window adds, in time order) sets a value record."""
        return bool(self.push_rows(rows).any())

    def as_rows(self, rows: np.ndarray | Sequence[float]) -> np.ndarray:
        """``rows`` as a ``(rows, channels)`` float64 array; a :class:`~tinywarden.errors.DataError` when they are
        empty or not of this record's channel count."""
        v = np.asarray(rows, dtype=np.float64)
        channels = len(self._lo)
        if v.size == 0 or v.size % channels or (v.ndim > 1 and v.shape[-1] != channels):
            raise DataError(f"value record: rows of {channels} channel(s) expected, got shape {v.shape}")
        return v.reshape(-1, channels)

    def push_windows(self, rows: Sequence[Any]) -> np.ndarray:
        """Per window, whether any of the rows it adds (``rows[i]``; None: no rows) sets a value record: equal to
        :meth:`push` window after window, computed with one :meth:`push_rows` over all the windows' rows."""
        blocks = [None if r is None else self.as_rows(r) for r in rows]
        counts = np.array([0 if b is None else len(b) for b in blocks], dtype=np.int64)
        if not counts.any():
            return np.zeros(len(blocks), dtype=bool)
        hits = np.r_[0, np.cumsum(self.push_rows(np.concatenate([b for b in blocks if b is not None])))]
        ends = np.cumsum(counts)
        return hits[ends] > hits[ends - counts]

    def push_rows(self, rows: np.ndarray | Sequence[float]) -> np.ndarray:
        """Per row of ``rows`` (in time order), whether it sets a value record; the range grows past each.

        The same rule as one row at a time (each row against the range the rows before it left), computed with
        running extremes over the block.
        """
        v = self.as_rows(rows)
        ok = np.isfinite(v)
        with np.errstate(invalid="ignore"):
            hi = np.fmax.accumulate(np.vstack((self._hi, np.where(ok, v, np.nan))), axis=0)
            lo = np.fmin.accumulate(np.vstack((self._lo, np.where(ok, v, np.nan))), axis=0)
        before_hi, before_lo = hi[:-1], lo[:-1]  # the range each row meets
        margin = self.tolerance * (before_hi - before_lo)
        with np.errstate(invalid="ignore"):
            beyond = ok & (before_hi > before_lo) & ((v > before_hi + margin) | (v < before_lo - margin))
        self._lo, self._hi = lo[-1].copy(), hi[-1].copy()
        return np.asarray(beyond.any(axis=1))

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """The current (grown) range, per channel: ``(lo, hi)``."""
        return self._lo.copy(), self._hi.copy()

    def restore(self, state: tuple[np.ndarray, np.ndarray]) -> None:
        """Back to a range :meth:`state` returned."""
        self._lo, self._hi = state


def window_new_rows(values: np.ndarray, end_rows: np.ndarray | Sequence[int], first_row: int = 0) -> list[np.ndarray]:
    """The rows each window adds to a stream, for the value record: window ``i`` adds the rows after the previous
    window's last row up to its own last row, the first window every row from ``first_row`` (views of ``values``).

    >>> [r.ravel().tolist() for r in window_new_rows(np.arange(8.0)[:, None], [3, 5, 7])]
    [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]
    """
    ends = np.asarray(end_rows, dtype=np.int64)
    starts = np.r_[int(first_row), ends[:-1] + 1] if len(ends) else ends
    return [values[a : b + 1] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


def alarm_onsets(confidence: np.ndarray | Sequence[float], rearm: float = REARM_LEVEL,
                 always: np.ndarray | Sequence[bool] | None = None) -> np.ndarray:
    """What to *notify* of a confidence stream: each alarm once, at its onset (the product's notifications:
    :meth:`AnomalyLikelihood.notifications`, ``Pipeline.notifications``).

    An alarm starts at a confidence of at least :data:`HOLDOFF_LEVEL` and stands until the confidence falls
    below ``rearm``; the onset keeps its confidence, the rest of the standing alarm reports 0, and a window
    flagged in ``always`` (a value record: something never seen) reports as it is, standing alarm or not.
    Unlike the hold-off this silences nothing the device still calls normal-looking: while an alarm stands the
    confidence stays at or above ``rearm``, so the device is in alarm the whole time, and the confidence
    itself (what the tiers and the adaptation read) is unchanged: this is a view for notification only.
    NaN stays NaN and neither starts nor ends an alarm.

    >>> alarm_onsets([0.1, 0.6, 0.9, 0.3, 0.1, 0.7, 1.0], always=[0, 0, 0, 0, 0, 0, 1]).tolist()
    [0.1, 0.6, 0.0, 0.0, 0.1, 0.7, 1.0]
    """
    c = np.array(confidence, dtype=np.float64, copy=True).ravel()
    keep = np.zeros(len(c), dtype=bool) if always is None else np.asarray(always, dtype=bool).ravel()
    standing = False
    for i in np.flatnonzero(~np.isnan(c)):
        raw = c[i]
        if standing:
            standing = raw >= rearm
            if standing and not keep[i]:
                c[i] = 0.0
        elif raw >= HOLDOFF_LEVEL:
            standing = True
    return c


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
    whole array from the fitted state (it leaves this object's stream state alone). Given the training
    values at ``fit`` and each window's new rows at ``update`` / ``transform``, the value record (step 8)
    reports too; without them it is off and the confidences are the scores' alone.
    """

    def __init__(self, short: int = 1, rate_shift: int = 9, gate: float | None = None, slow_shift: int = SLOW_SHIFT,
                 decades: float = 10.0, holdoff: int = 0, record: float | None = RECORD_TOLERANCE,
                 value_record: float | None = RECORD_TOLERANCE) -> None:
        self.short = short
        self.rate_shift = rate_shift
        self.gate = gate
        self.slow_shift = slow_shift
        self.decades = decades
        self.holdoff = holdoff
        self.record = record
        self.value_record = value_record

    def _check_params(self) -> None:
        if not (isinstance(self.short, int) and 1 <= self.short <= 256):
            raise ConfigError(f"likelihood short window must be an integer in [1, 256], got {self.short!r}")
        for name in ("rate_shift", "slow_shift"):
            v = getattr(self, name)
            if not (isinstance(v, int) and 0 <= v <= 20):
                raise ConfigError(f"likelihood {name} must be an integer in [0, 20], got {v!r}")
        check_gate(self.gate)
        if not (math.isfinite(self.decades) and self.decades > 0):
            raise ConfigError(f"likelihood decades must be positive, got {self.decades!r}")
        if not (isinstance(self.holdoff, int) and 0 <= self.holdoff <= MAX_HOLDOFF):
            raise ConfigError(f"likelihood holdoff must be an integer in [0, {MAX_HOLDOFF}] windows, "
                              f"got {self.holdoff!r}")
        for name in ("record", "value_record"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= MAX_RECORD):
                raise ConfigError(f"likelihood {name} must be a tolerance in [0, {MAX_RECORD:g}] or None (off), "
                                  f"got {v!r}")

    # -- learning -------------------------------------------------------------------------------
    def fit(self, scores: np.ndarray | Sequence[float], values: np.ndarray | None = None) -> AnomalyLikelihood:
        """Learn from raw scores of normal windows, in time order, and (``values``, ``(rows, channels)``) the
        training values the value record starts from."""
        self._check_params()
        s = np.asarray(scores, dtype=np.float64).ravel()
        if len(s) < MIN_FIT_SCORES:
            raise DataError(f"likelihood needs at least {MIN_FIT_SCORES} training scores, got {len(s)}")
        if not np.isfinite(s).all():
            raise DataError("likelihood training scores hold NaN or inf")
        self.lo_ = float(s.min())
        self.hi_ = float(s.max())
        spread = float(np.median(s - self.lo_))
        self.spread_ = spread if spread > 0 else max(float(np.ptp(s)), 1e-9 * (abs(self.lo_) + 1.0), 1e-12)
        y = self._log(s)
        k = min(self.short, len(y))
        levels = np.convolve(y, np.ones(k) / k, mode="valid")
        self.mean_ = float(levels.mean())
        std = float(levels.std())
        self.std_floor_ = max(STD_FLOOR_FRACTION * std, 1e-6)
        self.var_ = max(std, self.std_floor_) ** 2
        self.values_ = (ValueRecord(self.value_record).fit(values)
                        if values is not None and self.value_record is not None else None)
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
        self._rec_lo, self._rec_hi = self.lo_, self.hi_
        self._new_record = False
        self._value_hit = False
        if getattr(self, "values_", None) is not None:
            self.values_.reset()

    def update(self, score: float, rows: np.ndarray | Sequence[float] | None = None) -> float:
        """Push one raw score (and ``rows``, the samples its window adds, for the value record); its
        confidence in [0, 1]. A NaN/inf score gives NaN and changes nothing but the value range."""
        self._check_fitted()
        value_record = self._value_step(rows)
        z = self._step(float(score))
        if math.isnan(z):
            return math.nan
        return self._report(1.0 if self._new_record or value_record else float(confidence_of_z(z, self.decades)))

    def update_many(self, scores: np.ndarray | Sequence[float], rows: Sequence[Any] | np.ndarray | None = None
                    ) -> np.ndarray:
        """:meth:`update` over a block of windows (``rows[i]``: the samples window ``i`` adds, for the value
        record), the stream carried on; equal to calling :meth:`update` window after window, in fewer numpy
        calls (the value record's rows checked in one pass, the confidences computed as one array).

        >>> lik = AnomalyLikelihood().fit(np.r_[np.zeros(50), np.ones(50)], values=np.array([[0.0], [1.0]]))
        >>> one = lik.fresh()
        >>> scores, rows = [0.5, 40.0, np.nan, 0.5], [[0.5], [0.5], [9.0], [0.5]]
        >>> loop = [one.update(s, r) for s, r in zip(scores, rows)]
        >>> np.array_equal(lik.update_many(scores, rows), loop, equal_nan=True)
        True
        """
        self._check_fitted()
        z, record, _ = self._steps(scores, rows)
        confidence = confidence_of_z(np.nan_to_num(z), self.decades)
        return np.array([math.nan if math.isnan(zi) else self._report(1.0 if hit else float(c))
                         for zi, hit, c in zip(z.tolist(), record.tolist(), confidence.tolist(), strict=True)])

    def _steps(self, scores: np.ndarray | Sequence[float], rows: Sequence[Any] | np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Steps 1-6 and 8 for a block of windows, the stream carried on: each window's ``z`` (NaN for a
        non-finite score), whether it set a record (a score record, or a value record among its rows; read only
        where ``z`` is not NaN) and whether its rows set a value record."""
        s = np.asarray(scores, dtype=np.float64).ravel()
        if rows is not None and len(rows) != len(s):
            raise DataError(f"likelihood: {len(rows)} windows of rows for {len(s)} scores")
        rec = getattr(self, "values_", None)
        value_hits = np.zeros(len(s), dtype=bool)
        if rec is not None and rows is not None:
            value_hits = rec.push_windows(rows)
        if len(s):  # what observe() folded in since the last window counts for the first of these
            value_hits[0] |= self._value_hit
            self._value_hit = False
        z, record = np.zeros(len(s)), np.zeros(len(s), dtype=bool)
        for i, si in enumerate(s.tolist()):
            z[i] = self._step(si)
            record[i] = self._new_record or value_hits[i]
        return z, record, value_hits

    def observe(self, rows: np.ndarray | Sequence[float] | None) -> None:
        """Fold samples into the value record as they arrive (one row or ``(rows, channels)``, in time order), the
        device's order: the next :meth:`update` reports whether any sample since the last window set a record.
        Nothing without a value record."""
        self._check_fitted()
        rec = getattr(self, "values_", None)
        if rec is not None and rows is not None:
            self._value_hit = rec.push(rows) or self._value_hit

    def _value_step(self, rows: np.ndarray | Sequence[float] | None) -> bool:
        """The rows :meth:`observe` folded in since the last window, and ``rows``: whether any set a record."""
        self.observe(rows)
        hit, self._value_hit = self._value_hit, False
        return hit

    def _report(self, confidence: float) -> float:
        """Step 7: the reported confidence (0 while a hold-off runs); starts a hold-off at HOLDOFF_LEVEL."""
        out = confidence if self._hold == 0 else 0.0
        self._hold = max(self._hold - 1, 0)
        if self.holdoff and confidence >= HOLDOFF_LEVEL:
            self._hold = self.holdoff
        return out

    def _step(self, score: float) -> float:
        if not math.isfinite(score):
            return math.nan
        if self.record is not None:  # step 6, against the range before this score
            lo, hi = self._rec_lo, self._rec_hi
            self._new_record = hi > lo and score > hi + self.record * (hi - lo)
            self._rec_lo, self._rec_hi = min(lo, score), max(hi, score)
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

    def transform(self, scores: np.ndarray | Sequence[float], rows: Sequence[Any] | np.ndarray | None = None
                  ) -> np.ndarray:
        """Confidences of a whole score stream from the fitted state; equal to ``update`` one by one
        (``rows[i]``: the samples window ``i`` adds, for the value record)."""
        return self._transform(scores, rows)[0]

    def notifications(self, scores: np.ndarray | Sequence[float], rows: Sequence[Any] | np.ndarray | None = None
                      ) -> np.ndarray:
        """What the product notifies of a score stream: :meth:`transform`'s confidences through
        :func:`alarm_onsets`, each alarm once at its onset and a value record (step 8) whenever one is set. The
        confidences themselves (what the tiers and the adaptation read) are :meth:`transform`'s, unchanged.

        >>> lik = AnomalyLikelihood().fit(np.r_[np.zeros(50), np.ones(50)], values=np.array([[0.0], [1.0]]))
        >>> c = lik.transform([0.5] * 3 + [40.0] * 3, [[0.5]] * 5 + [[9.0]])
        >>> lik.notifications([0.5] * 3 + [40.0] * 3, [[0.5]] * 5 + [[9.0]]).tolist() == [*c[:4], 0.0, 1.0]
        True
        """
        confidence, value_hits = self._transform(scores, rows)
        return alarm_onsets(confidence, always=value_hits)

    def _transform(self, scores: np.ndarray | Sequence[float], rows: Sequence[Any] | np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """``(confidences, whether each window's rows set a value record)`` from the fitted state."""
        self._check_fitted()
        rec = getattr(self, "values_", None)
        saved = (self._ring.copy(), self._pos, self._count, self._sum, self._mean, self._var, self._hold,
                 self._rec_lo, self._rec_hi, self._new_record, self._value_hit, None if rec is None else rec.state())
        self.reset()
        try:
            z, record, value_hits = self._steps(scores, rows)
            record &= ~np.isnan(z)
            out = confidence_of_z(np.nan_to_num(z), self.decades)
            out[record] = 1.0
            out[np.isnan(z)] = np.nan
            out = hold_off(out, self.holdoff)
        finally:
            (self._ring, self._pos, self._count, self._sum, self._mean, self._var, self._hold,
             self._rec_lo, self._rec_hi, self._new_record, self._value_hit, value_state) = saved
            if rec is not None:
                rec.restore(value_state)
        return out, value_hits & ~np.isnan(z)

    # -- model file -----------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        return {"short": self.short, "rate_shift": self.rate_shift, "gate": self.gate,
                "slow_shift": self.slow_shift, "decades": self.decades, "holdoff": self.holdoff,
                "record": self.record, "value_record": self.value_record}

    def state(self) -> dict[str, Any]:
        """The fitted numbers (the stream state starts from them); with a value record, its per-channel range."""
        self._check_fitted()
        out: dict[str, Any] = {"lo": self.lo_, "spread": self.spread_, "mean": self.mean_, "var": self.var_,
                               "std_floor": self.std_floor_, "hi": self.hi_}
        if getattr(self, "values_", None) is not None:
            out["value_lo"], out["value_hi"] = self.values_.lo_.tolist(), self.values_.hi_.tolist()
        return out

    @classmethod
    def from_state(cls, params: dict[str, Any], state: dict[str, Any]) -> AnomalyLikelihood:
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
        if "hi" in state:
            lik.hi_ = float(state["hi"]) if isinstance(state["hi"], int | float) else math.nan
            if not (math.isfinite(lik.hi_) and lik.hi_ >= lik.lo_):
                raise DataError("likelihood state 'hi' must be a finite score at least 'lo'")
        else:  # a model written before the record rule: it keeps behaving as it did
            lik.hi_, lik.record = lik.lo_, None
        lik.values_ = None
        if lik.value_record is not None and ("value_lo" in state or "value_hi" in state):
            lik.values_ = ValueRecord.from_range(lik.value_record, state.get("value_lo", ()), state.get("value_hi", ()))
        lik.reset()
        return lik
