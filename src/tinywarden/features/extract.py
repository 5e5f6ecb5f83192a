"""Compact per-channel window features, defined once for both the streaming and the batch path.

Every feature is a function of one window ``x`` of shape ``(n, window, channels)`` returning
``(n, channels)``; the feature vector is channel-major (all features of channel 0, then channel 1 ...).

=================  ==============================================================================
name               definition over one channel's window ``x[0..W-1]``
=================  ==============================================================================
``mean``           sum(x) / W
``std``            sqrt(mean((x - mean)^2))   (population)
``min`` ``max``    extremes
``last``           the newest sample x[W-1] (not in the default set)
``rms``            sqrt(mean(x^2))
``band1..bandB``   spectral energy in octave bands from a Haar wavelet decomposition of x: ``band1``
                   is the energy of the finest detail (upper half of the spectrum, fs/4..fs/2),
                   ``band2`` the next octave (fs/8..fs/4), ...; each divided by W. Haar needs only
                   adds and subtracts, which keeps the integer on-device path exact.
``crossings``      number of crossings of a level, divided by (W - 1): by default of the window's mean
                   (``block = W``). With ``block`` rows the window is cut into blocks and each block's
                   samples are compared with the block's own mean; with ``level`` (a pipeline's
                   ``crossings_trained``: each channel's trained mean, learnt at fit) every pair of
                   adjacent samples is compared with a constant, so a device counts them as the samples
                   arrive and keeps no sample
``diff_abs_mean``  mean |x[t] - x[t-1]|
``diff_abs_max``   max |x[t] - x[t-1]|
=================  ==============================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tinywarden.errors import ConfigError

FeatureFn = Callable[[np.ndarray], np.ndarray]


def _mean(x: np.ndarray) -> np.ndarray:
    return x.sum(axis=1) / x.shape[1]


def _std(x: np.ndarray) -> np.ndarray:
    d = x - _mean(x)[:, None, :]
    return np.sqrt((d * d).sum(axis=1) / x.shape[1])


def _rms(x: np.ndarray) -> np.ndarray:
    return np.sqrt((x * x).sum(axis=1) / x.shape[1])


def _band(level: int) -> FeatureFn:
    def band(x: np.ndarray) -> np.ndarray:
        w = x.shape[1]
        a = x
        for _ in range(level - 1):
            a = (a[:, 0::2] + a[:, 1::2]) * 0.5
        d = (a[:, 0::2] - a[:, 1::2]) * 0.5
        # Scale so a band's energy is comparable across levels: each level halves the length and the
        # 0.5 factor divides amplitude by 2, so multiply back by 2**level (the orthonormal Haar norm).
        return (d * d).sum(axis=1) * (2.0**level) / w

    band.__name__ = f"band{level}"
    return band


def crossings(x: np.ndarray, block: int) -> np.ndarray:
    """Crossings of each ``block``-row block's own mean inside the block, summed over the window's blocks and
    divided by ``W - 1``; ``x`` (n, W, C) with ``W`` a multiple of ``block``."""
    n, w, c = x.shape
    b = x.reshape(n, w // block, block, c)
    above = b > _mean(b.reshape(-1, block, c)).reshape(n, w // block, 1, c)
    return (above[:, :, 1:] != above[:, :, :-1]).sum(axis=(1, 2)) / (w - 1)


def crossings_of_level(x: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Crossings of the per-channel ``level`` (C,) by adjacent samples of the windows ``x`` (n, W, C), divided by
    ``W - 1``: #t with (x[t] > level) != (x[t-1] > level).

    >>> crossings_of_level(np.array([[[0.0], [2.0], [0.0], [0.5]]]), np.array([1.0])).tolist()
    [[0.6666666666666666]]
    """
    above = x > np.asarray(level, dtype=np.float64)[None, None, :]
    return (above[:, 1:] != above[:, :-1]).sum(axis=1) / (x.shape[1] - 1)


def _crossings(x: np.ndarray) -> np.ndarray:
    return crossings(x, x.shape[1])


def _diff_abs_mean(x: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(x, axis=1)).sum(axis=1) / (x.shape[1] - 1)


def _diff_abs_max(x: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(x, axis=1)).max(axis=1)


MAX_BANDS = 6

#: ``(s, offset, W) -> (a, b)``: with ``s`` the real value of one int16 sample step of the channel and
#: ``offset`` the real value of sample 0, the float feature is ``~ a * f + b`` of the integer feature ``f``.
ScalingRule = Callable[[float, float, int], tuple[float, float]]


@dataclass(frozen=True)
class Feature:
    """One window feature: its float definition, the integer code the on-device ``features_s16`` kernel
    computes it under (``TW_FEATURE_<NAME>`` in C), and the rule relating the two."""

    name: str
    fn: FeatureFn
    code: int
    #: the power of the channel's unit the feature is measured in (band energies are squared values,
    #: crossings a pure ratio); gives features a sensible minimum scale
    power: int
    scaling: ScalingRule


def _band_scaling(level: int) -> ScalingRule:
    return lambda s, off, w: (s * s / (2**level * w), 0.0)


#: The one feature table: extraction, quantization and the C code generator all read it.
FEATURE_TABLE: dict[str, Feature] = {f.name: f for f in (
    Feature("mean", _mean, 0, 1, lambda s, off, w: (s / w, off)),
    Feature("std", _std, 1, 1, lambda s, off, w: (s / w, 0.0)),
    Feature("min", lambda x: x.min(axis=1), 2, 1, lambda s, off, w: (s, off)),
    Feature("max", lambda x: x.max(axis=1), 3, 1, lambda s, off, w: (s, off)),
    Feature("last", lambda x: x[:, -1].copy(), 14, 1, lambda s, off, w: (s, off)),
    Feature("rms", _rms, 4, 1, lambda s, off, w: (s / w, 0.0)),
    *(Feature(f"band{i}", _band(i), 4 + i, 2, _band_scaling(i)) for i in range(1, MAX_BANDS + 1)),
    Feature("crossings", _crossings, 11, 0, lambda s, off, w: (1.0 / (w - 1), 0.0)),
    Feature("diff_abs_mean", _diff_abs_mean, 12, 1, lambda s, off, w: (s / (w - 1), 0.0)),
    Feature("diff_abs_max", _diff_abs_max, 13, 1, lambda s, off, w: (s, 0.0)),
)}

FEATURES: dict[str, FeatureFn] = {name: f.fn for name, f in FEATURE_TABLE.items()}
FEATURE_POWER: dict[str, int] = {name: f.power for name, f in FEATURE_TABLE.items()}

DEFAULT_FEATURES: tuple[str, ...] = (
    "mean", "std", "min", "max", "rms", "band1", "band2", "band3", "crossings", "diff_abs_mean", "diff_abs_max",
)


def check_features(features: Sequence[str], window: int) -> tuple[str, ...]:
    """Validate a feature list for a window length; return it as a tuple."""
    feats = tuple(features)
    if not feats:
        raise ConfigError("the feature list is empty")
    unknown = [f for f in feats if f not in FEATURES]
    if unknown:
        raise ConfigError(f"unknown feature(s) {', '.join(map(repr, unknown))}; known: {', '.join(FEATURES)}")
    if len(set(feats)) != len(feats):
        raise ConfigError(f"duplicate features in {feats}")
    for f in feats:
        if f.startswith("band") and window % (2 ** int(f[4:])):
            raise ConfigError(f"feature {f} needs a window divisible by {2 ** int(f[4:])}, got {window}")
    return feats


def check_crossings_block(block: int | None, window: int) -> int:
    """``block`` (rows per crossings block, ``None``: the whole window) validated against ``window``."""
    if block is None:
        return window
    if not isinstance(block, int | np.integer) or not 1 <= block <= window or window % block:
        raise ConfigError(f"the crossings block must divide the window ({window}), got {block!r}")
    return int(block)


def extract(windows: np.ndarray, features: Sequence[str] = DEFAULT_FEATURES, block: int | None = None,
            level: np.ndarray | None = None) -> np.ndarray:
    """Feature matrix ``(n, channels * len(features))`` from windows ``(n, window, channels)``; ``level``: the
    per-channel level ``crossings`` counts the crossings of (a pipeline's trained mean, ``crossings_level_``);
    without it ``block``: rows per block ``crossings`` counts the crossings of the block's own mean in (default:
    the whole window).

    >>> w = np.arange(8.0).reshape(1, 8, 1)
    >>> extract(w, ("mean", "max", "diff_abs_max")).tolist()
    [[3.5, 7.0, 1.0]]
    """
    x = np.asarray(windows, dtype=np.float64)
    if x.ndim != 3:
        raise ConfigError(f"windows must have shape (n, window, channels), got {x.shape}")
    cb = check_crossings_block(block, x.shape[1])
    if level is not None and np.shape(level) != (x.shape[2],):
        raise ConfigError(f"the crossings level must have one value per channel ({x.shape[2]}), got {np.shape(level)}")

    def column(f: str) -> np.ndarray:
        if f != "crossings":
            return FEATURES[f](x)
        return crossings(x, cb) if level is None else crossings_of_level(x, level)

    cols = np.stack([column(f) for f in features], axis=2)  # (n, C, F)
    return cols.reshape(x.shape[0], -1)


def feature_names(channels: Sequence[str], features: Sequence[str] = DEFAULT_FEATURES) -> list[str]:
    """Column names of :func:`extract`'s output, ``"<channel>:<feature>"``."""
    return [f"{c}:{f}" for c in channels for f in features]
