"""Calibration: a threshold from held-out normal scores at a target false-positive rate, and k-of-n
persistence so one noisy window does not raise an incident.

A target the held-out scores can resolve (at least one of them expected over the threshold) takes the empirical
quantile. A smaller one (a device that must not act once in a long period) is extrapolated with a peaks-over-
threshold fit: the scores over their :data:`TAIL_QUANTILE` quantile follow a generalised Pareto distribution
(Pickands-Balkema-de Haan), whose quantile at the target is the threshold (as SPOT does, Siffer et al., KDD 2017),
never below the highest held-out score.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from tinywarden.errors import ConfigError, DataError

#: The peaks-over-threshold fit models the scores over this quantile of the held-out normal scores.
TAIL_QUANTILE = 0.98
#: Fewest scores over :data:`TAIL_QUANTILE` the tail fit needs (so at least 1,000 held-out scores); with fewer,
#: a target the data cannot resolve takes the highest normal score, as before the fit existed.
MIN_TAIL_PEAKS = 20
#: Largest tail shape the fit keeps. A shape over 1 (a tail without a mean), from a few dozen peaks, says the
#: held-out part holds a few far outliers rather than a tail: the scale is then refitted at this shape, so one
#: outlier cannot put the threshold at millions of times every other score.
MAX_TAIL_SHAPE = 1.0


def threshold_at_fpr(normal_scores: np.ndarray, target_fpr: float) -> float:
    """Smallest threshold that at most ``target_fpr`` of the held-out normal scores exceed.

    A window is flagged when ``score > threshold``. With ``n`` normal scores, the threshold is the
    order statistic at rank ``ceil(n * (1 - target_fpr))``, so the empirical FPR on these scores is
    at most the target. When ``n * target_fpr < 1`` the data cannot resolve the target: the threshold is
    then the tail fit's quantile at the target (:func:`tail_threshold`), or the maximum normal score when
    there are too few scores to fit a tail (empirical FPR 0 either way; the conservative choice for a device
    that must not act on false positives). :func:`calibrate_threshold` also says which rule set it.

    >>> threshold_at_fpr(np.arange(100.0), 0.05)
    94.0
    """
    return calibrate_threshold(normal_scores, target_fpr)[0]


#: How :func:`calibrate_threshold` set a threshold.
RULE_QUANTILE, RULE_TAIL, RULE_HIGHEST = "quantile", "tail fit", "highest score"


def check_target_fpr(target_fpr: float) -> None:
    """The one range check of a target false-positive rate: in (0, 1), so NaN too is refused."""
    if not 0.0 < target_fpr < 1.0:
        raise ConfigError(f"target FPR must be in (0, 1), got {target_fpr}")


def calibrate_threshold(normal_scores: np.ndarray, target_fpr: float) -> tuple[float, str]:
    """:func:`threshold_at_fpr`'s threshold and the rule that set it: :data:`RULE_QUANTILE` (the target resolved
    by the scores), :data:`RULE_TAIL` (extrapolated by the tail fit) or :data:`RULE_HIGHEST` (the highest score:
    too few scores to fit a tail).

    >>> calibrate_threshold(np.arange(100.0), 0.001)
    (99.0, 'highest score')
    """
    s = np.asarray(normal_scores, dtype=np.float64)
    check_target_fpr(target_fpr)
    if s.size == 0:
        raise DataError("no held-out normal windows to calibrate the threshold on")
    if not np.isfinite(s).all():
        raise DataError("held-out normal scores contain NaN or infinity")
    ordered = np.sort(s)
    if len(ordered) * target_fpr < 1.0:
        tail = _tail_quantile(ordered, target_fpr)
        return (float(ordered[-1]), RULE_HIGHEST) if tail is None else (tail, RULE_TAIL)
    rank = math.ceil(len(ordered) * (1.0 - target_fpr))  # 1-based
    rank = min(max(rank, 1), len(ordered))
    return float(ordered[rank - 1]), RULE_QUANTILE


def tail_threshold(normal_scores: np.ndarray, target_fpr: float) -> float | None:
    """The threshold a fraction ``target_fpr`` of normal scores would exceed, from a generalised Pareto fit of
    the scores over their :data:`TAIL_QUANTILE` quantile (``None`` with fewer than :data:`MIN_TAIL_PEAKS` of
    them, or when the fit fails). Never below the highest of ``normal_scores``: a target smaller than one in
    ``n`` cannot sit under a score that ``n`` normal windows reached.

    With ``u`` the tail's start, ``N_u`` of the ``n`` scores over it and ``(sigma, xi)`` the fitted scale and
    shape (at most :data:`MAX_TAIL_SHAPE`), the quantile is ``u + sigma / xi * ((target * n / N_u) ** -xi - 1)``
    (``u - sigma * log(target * n / N_u)`` when ``xi`` is 0).

    >>> s = np.random.default_rng(0).exponential(1.0, 20000)
    >>> round(tail_threshold(s, 1e-5), 1)  # 20,000 scores, against the exponential's own -log(1e-5) = 11.51
    11.6
    """
    s = np.sort(np.asarray(normal_scores, dtype=np.float64))
    if not 0.0 < target_fpr < 1.0 or s.size == 0 or not np.isfinite(s).all():
        raise DataError("the tail fit needs finite normal scores and a target FPR in (0, 1)")
    return _tail_quantile(s, target_fpr)


def _tail_quantile(s: np.ndarray, target_fpr: float) -> float | None:
    """:func:`tail_threshold` of scores ``s`` already sorted and checked (finite, not empty)."""
    u = float(np.quantile(s, TAIL_QUANTILE))
    excess = s[s > u] - u
    if len(excess) < MIN_TAIL_PEAKS:
        return None
    from scipy.stats import genpareto  # training only: the gateway and the device read the stored threshold

    with np.errstate(all="ignore"):
        try:
            xi, _, sigma = genpareto.fit(excess, floc=0.0)
            if xi > MAX_TAIL_SHAPE:
                xi, _, sigma = genpareto.fit(excess, f0=MAX_TAIL_SHAPE, floc=0.0)
        except (ValueError, RuntimeError, FloatingPointError):
            return None
    ratio = target_fpr * len(s) / len(excess)
    if not (math.isfinite(xi) and math.isfinite(sigma) and sigma > 0.0):
        return None
    q = u - sigma * math.log(ratio) if abs(xi) < 1e-9 else u + sigma / xi * (ratio ** -xi - 1.0)
    if not math.isfinite(q):
        return None
    return float(max(q, s[-1]))


#: Longest k-of-n persistence: the device keeps the last n flags in one uint64.
MAX_PERSIST_N = 64


def check_persistence(k: int, n: int) -> None:
    if not (isinstance(k, int) and isinstance(n, int) and 1 <= k <= n <= MAX_PERSIST_N):
        raise ConfigError(f"k-of-n persistence needs integers 1 <= k <= n <= {MAX_PERSIST_N}, got k={k}, n={n}")


def persist(flags: np.ndarray, k: int, n: int) -> np.ndarray:
    """Alarm at window ``i`` when at least ``k`` of the windows ``i-n+1 .. i`` are flagged.

    >>> persist(np.array([1, 0, 1, 1, 0, 0]), k=2, n=3).tolist()
    [0, 0, 1, 1, 1, 0]
    """
    check_persistence(k, n)
    f = np.asarray(flags, dtype=np.int64)
    c = np.concatenate(([0], np.cumsum(f)))
    i = np.arange(1, len(f) + 1)
    counts = c[i] - c[np.maximum(i - n, 0)]
    return (counts >= k).astype(np.uint8)


class Persistence:
    """Streaming k-of-n persistence: the same decisions as :func:`persist`, one window at a time.

    Invariant: ``history`` holds the last ``min(pushed, n)`` raw flags, newest last.
    """

    def __init__(self, k: int, n: int) -> None:
        check_persistence(k, n)
        self.k, self.n = k, n
        self.history: deque[int] = deque(maxlen=n)

    def push(self, flag: bool | int) -> bool:
        self.history.append(1 if flag else 0)
        return sum(self.history) >= self.k

    def reset(self) -> None:
        self.history.clear()
