"""Calibration: a threshold from held-out normal scores at a target false-positive rate, and k-of-n
persistence so one noisy window does not raise an incident."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from tinywarden.errors import ConfigError, DataError


def threshold_at_fpr(normal_scores: np.ndarray, target_fpr: float) -> float:
    """Smallest threshold that at most ``target_fpr`` of the held-out normal scores exceed.

    A window is flagged when ``score > threshold``. With ``n`` normal scores, the threshold is the
    order statistic at rank ``ceil(n * (1 - target_fpr))``, so the empirical FPR on these scores is
    at most the target. When ``n * target_fpr < 1`` the data cannot resolve the target and the
    maximum normal score is used (empirical FPR 0; the conservative choice for a device that must not
    act on false positives).

    >>> threshold_at_fpr(np.arange(100.0), 0.05)
    94.0
    """
    s = np.asarray(normal_scores, dtype=np.float64)
    if not 0.0 < target_fpr < 1.0:
        raise ConfigError(f"target FPR must be in (0, 1), got {target_fpr}")
    if s.size == 0:
        raise DataError("no held-out normal windows to calibrate the threshold on")
    if not np.isfinite(s).all():
        raise DataError("held-out normal scores contain NaN or infinity")
    ordered = np.sort(s)
    rank = math.ceil(len(ordered) * (1.0 - target_fpr))  # 1-based
    rank = min(max(rank, 1), len(ordered))
    return float(ordered[rank - 1])


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
