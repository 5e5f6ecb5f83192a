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
``crossings``      number of crossings of the window mean, divided by (W - 1)
``diff_abs_mean``  mean |x[t] - x[t-1]|
``diff_abs_max``   max |x[t] - x[t-1]|
=================  ==============================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def _crossings(x: np.ndarray) -> np.ndarray:
    above = x > _mean(x)[:, None, :]
    return (above[:, 1:] != above[:, :-1]).sum(axis=1) / (x.shape[1] - 1)


def _diff_abs_mean(x: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(x, axis=1)).sum(axis=1) / (x.shape[1] - 1)


def _diff_abs_max(x: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(x, axis=1)).max(axis=1)


MAX_BANDS = 6

FEATURES: dict[str, FeatureFn] = {
    "mean": _mean,
    "std": _std,
    "min": lambda x: x.min(axis=1),
    "max": lambda x: x.max(axis=1),
    "last": lambda x: x[:, -1].copy(),
    "rms": _rms,
    **{f"band{i}": _band(i) for i in range(1, MAX_BANDS + 1)},
    "crossings": _crossings,
    "diff_abs_mean": _diff_abs_mean,
    "diff_abs_max": _diff_abs_max,
}

#: The power of the channel's unit each feature is measured in (band energies are squared values,
#: crossings are a pure ratio); used to give features a sensible minimum scale.
FEATURE_POWER: dict[str, int] = {name: 2 if name.startswith("band") else 0 if name == "crossings" else 1
                                 for name in FEATURES}

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


def extract(windows: np.ndarray, features: Sequence[str] = DEFAULT_FEATURES) -> np.ndarray:
    """Feature matrix ``(n, channels * len(features))`` from windows ``(n, window, channels)``.

    >>> w = np.arange(8.0).reshape(1, 8, 1)
    >>> extract(w, ("mean", "max", "diff_abs_max")).tolist()
    [[3.5, 7.0, 1.0]]
    """
    x = np.asarray(windows, dtype=np.float64)
    if x.ndim != 3:
        raise ConfigError(f"windows must have shape (n, window, channels), got {x.shape}")
    cols = np.stack([FEATURES[f](x) for f in features], axis=2)  # (n, C, F)
    return cols.reshape(x.shape[0], -1)


def feature_names(channels: Sequence[str], features: Sequence[str] = DEFAULT_FEATURES) -> list[str]:
    """Column names of :func:`extract`'s output, ``"<channel>:<feature>"``."""
    return [f"{c}:{f}" for c in channels for f in features]
