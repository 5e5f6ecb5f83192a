"""Vectorised random processes the simulator builds telemetry from.

Every helper draws a fixed number of values from the generator it is given, so the same seed always
yields the same arrays, and no helper loops in Python over samples.
"""

from __future__ import annotations

import numpy as np


def ar1(rng: np.random.Generator, n: int, period_s: float, tau_s: float) -> np.ndarray:
    """Stationary AR(1) noise with unit variance and correlation time ``tau_s``.

    Correlated noise is what makes a channel wander like a real one instead of flickering around its
    mean; the start value is drawn from the stationary distribution so there is no warm-up transient.

    >>> x = ar1(np.random.default_rng(0), 50_000, 10.0, 600.0)
    >>> bool(0.8 < x.std() < 1.2)
    True
    """
    phi = float(np.exp(-period_s / tau_s))
    eps = rng.standard_normal(n)
    start = rng.standard_normal()
    from scipy.signal import lfilter  # imported here: scipy.signal costs 0.7 s at CLI start-up

    return lfilter([np.sqrt(1.0 - phi * phi)], [1.0, -phi], eps, zi=[phi * start])[0]


def lag(x: np.ndarray, period_s: float, tau_s: float) -> np.ndarray:
    """First-order lag of ``x`` (a physical quantity following its set point), starting settled at x[0].

    >>> lag(np.array([0.0, 10.0, 10.0, 10.0]), 1.0, 1.0).round(2).tolist()
    [0.0, 6.32, 8.65, 9.5]
    """
    phi = float(np.exp(-period_s / tau_s))
    from scipy.signal import lfilter

    return lfilter([1.0 - phi], [1.0, -phi], x, zi=[phi * float(x[0])])[0]


def pulses(
    rng: np.random.Generator,
    rate_per_row: np.ndarray | float,
    n: int,
    rows: tuple[int, int],
    amplitude: tuple[float, float],
) -> np.ndarray:
    """Sum of rectangular pulses starting at random rows (a Poisson process with ``rate_per_row``).

    Each pulse lasts ``rows[0]..rows[1]`` rows and has a uniform amplitude; overlapping pulses add.
    Used for motion events, app sessions, cron jobs and other short normal bursts.

    >>> p = pulses(np.random.default_rng(1), 0.01, 10_000, (5, 5), (1.0, 1.0))
    >>> bool(p.max() >= 1.0), bool(p.min() == 0.0)
    (True, True)
    """
    starts = np.nonzero(rng.random(n) < rate_per_row)[0]
    lengths = rng.integers(rows[0], rows[1] + 1, size=len(starts))
    amps = rng.uniform(amplitude[0], amplitude[1], size=len(starts))
    edges = np.zeros(n + 1)
    np.add.at(edges, starts, amps)
    np.add.at(edges, np.minimum(starts + lengths, n), -amps)
    return np.cumsum(edges)[:n]


def onset(k: int, rise_rows: float) -> np.ndarray:
    """Envelope rising linearly from near 0 to 1 over ``rise_rows`` rows, then flat (length ``k``).

    >>> onset(4, 2).tolist()
    [0.5, 1.0, 1.0, 1.0]
    """
    return np.minimum(1.0, (np.arange(k) + 1.0) / max(rise_rows, 1.0))


def rows_for(seconds: float, period_s: float, minimum: int = 1) -> int:
    """Whole number of sampling periods covering ``seconds`` (at least ``minimum``).

    >>> rows_for(95.0, 10.0), rows_for(1.0, 10.0)
    (10, 1)
    """
    return max(minimum, int(round(seconds / period_s)))
