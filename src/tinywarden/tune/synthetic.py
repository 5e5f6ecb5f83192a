"""Synthetic anomalies injected into held-out *normal* telemetry, so a search can be scored without labels.

Every injector changes a copy of a normal series in segments spread through it and returns which rows it
touched. A candidate pipeline is then judged by how well its scores separate windows that contain
injected rows from the clean windows of the same stretch (ROC AUC per anomaly type).

Magnitudes are in units of each channel's normal standard deviation (``spread``), drawn from a range
wide enough that weak and strong candidates differ. Anomalies go into channels that vary in normal
data: a channel that never moved has no scale to measure a deviation in.

=================  =========================================================================================
type               what it does to 1-3 channels over one segment
=================  =========================================================================================
``spike``          a few rows jump by 4-10 standard deviations (glitch, single burst of packets)
``level_shift``    the level moves by 1.5-5 standard deviations and stays there for the segment
``plateau``        the reading freezes at one value (stuck sensor, replayed constant)
``cadence_burst``  fast on/off alternation of 2-5 standard deviations (pulse-wave flood, polling storm)
``slow_drift``     a ramp from 0 to 2-6 standard deviations over the segment (tampered sensor, leak)
``correlated``     the simulator's attack shape: several channels rise together with extra noise (a miner
                   taking CPU, memory and power at once), then a short freeze (memory-exploit hang)
=================  =========================================================================================

>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(2000, 3))
>>> inj = inject(x, "level_shift", segment=64, spread=np.ones(3), seed=1)
>>> inj.values.shape, bool(inj.rows.any()), bool(np.all(inj.values[~inj.rows] == x[~inj.rows]))
((2000, 3), True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tinywarden.errors import ConfigError

Injector = Callable[[np.ndarray, slice, np.ndarray, np.ndarray, np.random.Generator], None]


def _spike(v: np.ndarray, sl: slice, ch: np.ndarray, sd: np.ndarray, rng: np.random.Generator) -> None:
    # A spike is short: only the first rows of the segment change, the rest stays normal.
    k = min(sl.stop - sl.start, int(rng.integers(1, 4)))
    sign = rng.choice([-1.0, 1.0], size=len(ch))
    v[sl.start : sl.start + k, ch] += sign * rng.uniform(4.0, 10.0, len(ch)) * sd[ch]


def _level_shift(v: np.ndarray, sl: slice, ch: np.ndarray, sd: np.ndarray, rng: np.random.Generator) -> None:
    v[sl, ch] += rng.choice([-1.0, 1.0], size=len(ch)) * rng.uniform(1.5, 5.0, len(ch)) * sd[ch]


def _plateau(v: np.ndarray, sl: slice, ch: np.ndarray, sd: np.ndarray, rng: np.random.Generator) -> None:
    # Freeze at the segment's first value or at a normal extreme (both happen with stuck sensors).
    for c in ch:
        seg = v[sl, c]
        value = seg[0] if rng.random() < 0.5 else (seg.max() + sd[c] if rng.random() < 0.5 else seg.min() - sd[c])
        v[sl, c] = value


def _cadence_burst(v: np.ndarray, sl: slice, ch: np.ndarray, sd: np.ndarray, rng: np.random.Generator) -> None:
    k = sl.stop - sl.start
    period = int(rng.integers(2, 5))
    on = (np.arange(k) % period) < max(1, period // 2)
    amp = rng.uniform(2.0, 5.0, len(ch)) * sd[ch]
    v[sl, ch] += on[:, None] * amp[None, :]


def _slow_drift(v: np.ndarray, sl: slice, ch: np.ndarray, sd: np.ndarray, rng: np.random.Generator) -> None:
    k = sl.stop - sl.start
    ramp = ((np.arange(k) + 1.0) / k) ** rng.uniform(1.0, 2.0)
    mag = rng.choice([-1.0, 1.0], size=len(ch)) * rng.uniform(2.0, 6.0, len(ch)) * sd[ch]
    v[sl, ch] += ramp[:, None] * mag[None, :]


def _correlated(v: np.ndarray, sl: slice, ch: np.ndarray, sd: np.ndarray, rng: np.random.Generator) -> None:
    k = sl.stop - sl.start
    rise = min(k, 1 + k // 8)
    env = np.minimum(1.0, (np.arange(k) + 1.0) / rise)  # a quick onset, like the simulator's attacks
    mag = rng.uniform(1.0, 3.0, len(ch)) * sd[ch]
    v[sl, ch] += env[:, None] * mag[None, :] + rng.normal(0.0, 0.5, (k, len(ch))) * sd[ch][None, :]
    hang = k // 6
    if hang:
        v[sl.stop - hang : sl.stop, ch] = v[sl.stop - hang - 1, ch]


INJECTORS: dict[str, Injector] = {
    "spike": _spike,
    "level_shift": _level_shift,
    "plateau": _plateau,
    "cadence_burst": _cadence_burst,
    "slow_drift": _slow_drift,
    "correlated": _correlated,
}
ANOMALY_TYPES: tuple[str, ...] = tuple(INJECTORS)


@dataclass(frozen=True)
class Injected:
    """A series with anomalies: its values, the rows changed, and each segment's ``(start, stop)``."""

    values: np.ndarray  # float64 (rows, channels)
    rows: np.ndarray  # bool (rows,), True where an injector wrote
    segments: tuple[tuple[int, int], ...]


def inject(values: np.ndarray, kind: str, segment: int, spread: np.ndarray, seed: int = 0,
           gap: int | None = None) -> Injected:
    """Copy ``values`` (rows x channels) with ``kind`` anomalies in segments of ``segment`` rows.

    Segments start every ``segment + gap`` rows (``gap`` defaults to ``2 * segment``, so clean windows
    remain between them); each touches 1-3 channels whose ``spread`` (normal standard deviation) is
    positive. Raises :class:`~tinywarden.errors.ConfigError` for an unknown kind or when no channel varies.
    """
    if kind not in INJECTORS:
        raise ConfigError(f"unknown synthetic anomaly {kind!r}; known: {', '.join(ANOMALY_TYPES)}")
    x = np.array(values, dtype=np.float64)
    if x.ndim != 2:
        raise ConfigError(f"values must be (rows, channels), got shape {x.shape}")
    sd = np.asarray(spread, dtype=np.float64)
    live = np.flatnonzero(sd > 0)
    if len(live) == 0:
        raise ConfigError("no channel varies in the normal data: there is no scale to inject anomalies at")
    if segment < 1:
        raise ConfigError(f"segment must be >= 1 row, got {segment}")
    step = segment + (2 * segment if gap is None else gap)
    rng = np.random.default_rng([seed, ANOMALY_TYPES.index(kind)])
    rows = np.zeros(len(x), dtype=bool)
    segments = []
    # The first segment starts one step in, so the windows before it are clean.
    for start in range(step, len(x) - segment, step):
        sl = slice(start, start + segment)
        ch = rng.choice(live, size=min(len(live), int(rng.integers(1, 4))), replace=False)
        before = x[sl].copy()
        INJECTORS[kind](x, sl, ch, sd, rng)
        changed = np.any(x[sl] != before, axis=1)
        rows[sl] |= changed
        if changed.any():
            segments.append((start, start + segment))
    return Injected(x, rows, tuple(segments))
