"""A raw-window detector on 2-D input, for scikit-learn tools that only pass ``(n_samples, n_features)`` arrays.

The raw-window families (``conv_ae``, ``gru_ae``, ``ar``, ``bounds``) take ``(n, window, channels)`` and
say so in their estimator tags. :class:`FlatWindows` wraps one so that each row of a 2-D array is a whole
window flattened time-major (``x[t, c]`` at column ``t * channels + c``, what ``windows.reshape(n, -1)``
gives), which is what a scikit-learn ``Pipeline``, ``GridSearchCV`` or ``check_estimator`` can feed it.
Scores stay "higher = more anomalous".
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone

from tinywarden.detectors.base import Detector, check_param, validate_input
from tinywarden.errors import ConfigError, DataError, NotFittedError


class FlatWindows(BaseEstimator):
    """``detector`` (a raw-window family) on rows that are flattened windows of ``channels`` channels.

    ``fit`` takes the window length from the number of columns (``n_features / channels``) and fits a clone
    of ``detector`` (``detector_``) on the reshaped windows; ``score_samples`` reshapes the same way.

    >>> from tinywarden.detectors import BoundsDetector
    >>> rng = np.random.default_rng(0)
    >>> flat = FlatWindows(BoundsDetector(), channels=2).fit(rng.normal(size=(200, 16)))
    >>> flat.window_, flat.n_features_in_
    (8, 16)
    >>> spike = np.zeros((1, 16)); spike[0, 9] = 9.0
    >>> bool(flat.score_samples(spike)[0] > flat.score_samples(np.zeros((1, 16)))[0])
    True
    """

    def __init__(self, detector: Detector, channels: int = 1) -> None:
        self.detector = detector
        self.channels = channels

    def _windows(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), self.window_, self.channels)

    def fit(self, X: Any, y: None = None) -> FlatWindows:  # noqa: N803 (sklearn naming)
        c = self.channels
        check_param("channels", c, isinstance(c, int) and c >= 1, "an integer >= 1")
        if getattr(self.detector, "input_kind", None) != "window":
            raise ConfigError(f"FlatWindows wraps a raw-window detector, got {type(self.detector).__name__}")
        x = validate_input(self, X, "features", fitting=True)
        if x.shape[1] % c:
            raise DataError(f"FlatWindows: {x.shape[1]} feature(s) are not whole windows of {c} channel(s)")
        self.window_ = x.shape[1] // c
        detector = clone(self.detector)
        try:
            detector.fit(self._windows(x))
        except DataError as exc:
            raise DataError(f"{exc} ({x.shape[1]} feature(s) as windows of {self.window_} x {c})") from None
        self.detector_ = detector
        return self

    def score_samples(self, X: Any) -> np.ndarray:  # noqa: N803
        """Scores of the flattened windows in ``X``: higher = more anomalous."""
        if not hasattr(self, "detector_"):
            raise NotFittedError("FlatWindows is not fitted yet; call fit() first")
        return self.detector_.score_samples(self._windows(validate_input(self, X, "features", fitting=False)))
