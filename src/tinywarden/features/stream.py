"""The two ways to turn samples into feature vectors: one sample at a time, or a whole series at once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinywarden.features.extract import DEFAULT_FEATURES, check_features, extract
from tinywarden.features.window import RingBuffer, batch_windows, window_end_rows


def batch_features(
    values: np.ndarray, window: int, stride: int, features: Sequence[str] = DEFAULT_FEATURES,
    block: int | None = None, level: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(end_rows, feature_matrix)`` for every complete window of ``values`` (rows x channels); ``level``,
    ``block``: what ``crossings`` counts the crossings of (see :func:`~tinywarden.features.extract`)."""
    feats = check_features(features, window)
    block = window if block is None else block
    vals = np.asarray(values, dtype=np.float64)
    ends = window_end_rows(len(vals), window, stride)
    n_cols = vals.shape[1] * len(feats)
    if len(ends) == 0:
        return ends, np.zeros((0, n_cols))
    out = np.concatenate([extract(w, feats, block, level) for w in batch_windows(vals, window, stride)], axis=0)
    return ends, out


class StreamingFeatures:
    """Firmware-style feature extraction: push samples, get a feature vector every ``stride`` samples.

    >>> sf = StreamingFeatures(window=4, stride=4, n_channels=1, features=("mean",))
    >>> [sf.push([v]) for v in (1.0, 2.0, 3.0, 6.0)][-1].tolist()
    [3.0]
    """

    def __init__(
        self, window: int, stride: int, n_channels: int, features: Sequence[str] = DEFAULT_FEATURES,
        block: int | None = None, level: np.ndarray | None = None,
    ) -> None:
        self.features = check_features(features, window)
        self.block = window if block is None else block
        self.level = level
        self.ring = RingBuffer(window, stride, n_channels)

    def push(self, sample: np.ndarray | Sequence[float]) -> np.ndarray | None:
        """Add one sample; return the window's feature vector when a window completes, else None."""
        win = self.ring.push(np.asarray(sample, dtype=np.float64))
        if win is None:
            return None
        return extract(win[None], self.features, self.block, self.level)[0]

    def push_window(self, sample: np.ndarray | Sequence[float]) -> np.ndarray | None:
        """Add one sample; return the raw completed window ``(window, channels)`` when one is due."""
        return self.ring.push(np.asarray(sample, dtype=np.float64))

    def reset(self) -> None:
        self.ring.reset()
