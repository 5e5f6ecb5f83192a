"""The fitted on-device loop in Python: window -> features -> scaling -> detector -> threshold -> k-of-n.

:class:`Pipeline` is what ``tinywarden train`` saves, ``score``/``evaluate`` load, and the embedded and
agent paths read. It never re-implements a stage: it strings together :mod:`tinywarden.features`,
:mod:`tinywarden.detectors` and :mod:`tinywarden.calibrate`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.preprocessing import StandardScaler

from tinywarden.calibrate import Persistence, check_persistence, persist, threshold_at_fpr
from tinywarden.detectors.base import Detector
from tinywarden.errors import ConfigError, DataError, NotFittedError
from tinywarden.features import (
    DEFAULT_FEATURES,
    FEATURE_POWER,
    StreamingFeatures,
    batch_features,
    batch_windows,
    check_features,
    check_window,
    window_end_rows,
)
from tinywarden.telemetry.series import Series

Progress = Callable[[int, int], None]
MIN_FIT_WINDOWS = 8
MIN_CALIBRATION_WINDOWS = 4
SCALE_FLOOR = 1e-6
#: A feature (or channel) that barely moved in training is scaled by at least this fraction of its
#: channel's spread, so a sensor that was constant while learning gives large but finite z-scores.
RELATIVE_SCALE_FLOOR = 0.05


@dataclass(frozen=True)
class Scored:
    """Per-window results of a pipeline over a series."""

    end_rows: np.ndarray  # int64 index of each window's last row
    end_times: np.ndarray  # float64 timestamp of that row
    scores: np.ndarray  # float64, higher = more anomalous
    raw_flags: np.ndarray  # uint8, score > threshold
    alarms: np.ndarray  # uint8, after k-of-n persistence
    threshold: float


def normal_window_mask(labels: np.ndarray | None, end_rows: np.ndarray, window: int) -> np.ndarray:
    """True for windows that contain no row labelled anomalous (all True without labels)."""
    if labels is None:
        return np.ones(len(end_rows), dtype=bool)
    c = np.concatenate(([0], np.cumsum(labels.astype(np.int64))))
    return (c[end_rows + 1] - c[end_rows + 1 - window]) == 0


class Pipeline:
    """A detector with its windowing, feature set, scaling, calibrated threshold and persistence.

    >>> from tinywarden.detectors import EWMAZScore
    >>> rng = np.random.default_rng(0)
    >>> s = Series(np.arange(4000.0), rng.normal(size=(4000, 2)), ("a", "b"))
    >>> p = Pipeline(EWMAZScore(), window=32, stride=16).fit(s)
    >>> p.score(s).scores.shape
    (249,)
    """

    def __init__(
        self,
        detector: Detector,
        window: int = 128,
        stride: int = 64,
        features: Sequence[str] = DEFAULT_FEATURES,
        target_fpr: float = 0.01,
        k: int = 2,
        n: int = 3,
        calibration_fraction: float = 0.25,
    ) -> None:
        check_window(window, stride)
        check_persistence(k, n)
        if not 0.0 < calibration_fraction < 1.0:
            raise ConfigError(f"calibration_fraction must be in (0, 1), got {calibration_fraction}")
        if not 0.0 < target_fpr < 1.0:
            raise ConfigError(f"target FPR must be in (0, 1), got {target_fpr}")
        self.detector = detector
        self.window = int(window)
        self.stride = int(stride)
        self.features = check_features(features, window)
        self.target_fpr = float(target_fpr)
        self.k = int(k)
        self.n = int(n)
        self.calibration_fraction = float(calibration_fraction)

    # -- model inputs --------------------------------------------------------------------------
    @property
    def input_kind(self) -> str:
        return self.detector.input_kind

    def _raw_inputs(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(end_rows, unscaled model inputs) for every window of ``values``."""
        if self.input_kind == "features":
            return batch_features(values, self.window, self.stride, self.features)
        ends = window_end_rows(len(values), self.window, self.stride)
        if len(ends) == 0:
            return ends, np.zeros((0, self.window, values.shape[1]))
        return ends, np.concatenate(list(batch_windows(values, self.window, self.stride)), axis=0)

    def _scale(self, x: np.ndarray) -> np.ndarray:
        return (x - self.offset_) / self.scale_

    def _select(self, series: Series) -> np.ndarray:
        """The series' values in the channel order the pipeline was fitted on."""
        if not hasattr(self, "channels_"):
            return series.values
        missing = [c for c in self.channels_ if c not in series.channels]
        if missing:
            raise DataError(f"{series.source}: missing channel(s) {', '.join(missing)} the model was trained on")
        idx = [series.channels.index(c) for c in self.channels_]
        return series.values[:, idx]

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, series: Series, progress: Progress | None = None) -> Pipeline:
        """Learn normal from ``series`` (windows holding a row labelled 1 are left out), then calibrate.

        The normal windows are split in time: the first ``1 - calibration_fraction`` train the
        detector, the rest are held out to set the threshold at ``target_fpr``.
        """
        self.channels_ = tuple(series.channels)
        fit_x, cal_x = self.split_inputs(series)
        n_fit, n_cal = len(fit_x), len(cal_x)
        spread = self._channel_spread(series)
        if self.input_kind == "features":
            sc = StandardScaler().fit(fit_x)
            power = np.array([FEATURE_POWER[f] for f in self.features], dtype=np.float64)
            floor = RELATIVE_SCALE_FLOOR * spread[:, None] ** power[None, :]
            self.offset_ = sc.mean_.astype(np.float64)
            self.scale_ = np.maximum(sc.scale_, np.maximum(floor.ravel(), SCALE_FLOOR))
        else:
            flat = fit_x.reshape(-1, fit_x.shape[2])
            self.offset_ = flat.mean(axis=0)
            self.scale_ = np.maximum(flat.std(axis=0), np.maximum(RELATIVE_SCALE_FLOOR * spread, SCALE_FLOOR))
        takes_progress = "progress" in inspect.signature(self.detector.fit).parameters
        fit_kwargs: dict[str, Any] = {"progress": progress} if progress is not None and takes_progress else {}
        self.detector.fit(self._scale(fit_x), **fit_kwargs)
        cal_scores = self.detector.score_samples(self._scale(cal_x))
        self.threshold_ = threshold_at_fpr(cal_scores, self.target_fpr)
        self.train_summary_ = {
            "source": series.source,
            "rows": len(series),
            "normal_windows": int(n_fit + n_cal),
            "fit_windows": int(n_fit),
            "calibration_windows": int(n_cal),
            "calibration_fpr": float(np.mean(cal_scores > self.threshold_)),
            "period_s": series.period,
        }
        return self

    def _channel_spread(self, series: Series) -> np.ndarray:
        """Per-channel standard deviation over the normal rows (1e-3 of the level where constant)."""
        values = self._select(series)
        if series.labels is not None and (series.labels == 0).any():
            values = values[series.labels == 0]
        spread = values.std(axis=0)
        level = np.abs(values).mean(axis=0)
        return np.where(spread > 0, spread, np.maximum(1e-3 * level, SCALE_FLOOR))

    def split_inputs(self, series: Series) -> tuple[np.ndarray, np.ndarray]:
        """Unscaled model inputs of the normal windows of ``series``: ``(fit part, calibration part)``.

        The same split :meth:`fit` uses, so a later stage (e.g. int8 calibration) sees the same data.
        """
        ends, raw = self._raw_inputs(self._select(series))
        raw = raw[normal_window_mask(series.labels, ends, self.window)]
        n_cal = int(round(len(raw) * self.calibration_fraction))
        n_fit = len(raw) - n_cal
        if n_fit < MIN_FIT_WINDOWS or n_cal < MIN_CALIBRATION_WINDOWS:
            raise DataError(
                f"{series.source}: {len(series)} rows give {len(raw)} normal windows of {self.window} rows "
                f"(stride {self.stride}); need at least {MIN_FIT_WINDOWS} to train and "
                f"{MIN_CALIBRATION_WINDOWS} to calibrate: use more data or a shorter window/stride"
            )
        return raw[:n_fit], raw[n_fit:]

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError("pipeline is not fitted: train it or load a model file")

    # -- scoring -------------------------------------------------------------------------------
    def score(self, series: Series) -> Scored:
        """Score every complete window of ``series``."""
        self._check_fitted()
        values = self._select(series)
        ends, raw = self._raw_inputs(values)
        if len(ends) == 0:
            raise DataError(f"{series.source}: {len(series)} rows are fewer than one window of {self.window}")
        scores = self.detector.score_samples(self._scale(raw))
        flags = (scores > self.threshold_).astype(np.uint8)
        return Scored(ends, series.timestamps[ends], scores, flags, persist(flags, self.k, self.n),
                      float(self.threshold_))

    def stream(self) -> StreamingScorer:
        """A one-sample-at-a-time scorer giving the same numbers as :meth:`score`."""
        self._check_fitted()
        return StreamingScorer(self)

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def n_params_(self) -> int:
        """Detector parameters plus the scaler's offsets and scales."""
        self._check_fitted()
        return self.detector.n_params_ + self.offset_.size + self.scale_.size

    @property
    def model_bytes_(self) -> int:
        return 4 * self.n_params_

    def config(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "stride": self.stride,
            "features": list(self.features),
            "target_fpr": self.target_fpr,
            "k": self.k,
            "n": self.n,
            "calibration_fraction": self.calibration_fraction,
        }


class StreamingScorer:
    """Push raw samples; every ``stride`` samples get ``(score, raw_flag, alarm)`` for the new window."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.features = StreamingFeatures(pipeline.window, pipeline.stride, len(pipeline.channels_),
                                          pipeline.features)
        self.persistence = Persistence(pipeline.k, pipeline.n)

    def push(self, sample: np.ndarray | Sequence[float]) -> tuple[float, bool, bool] | None:
        p = self.pipeline
        push = self.features.push if p.input_kind == "features" else self.features.push_window
        x = push(sample)
        if x is None:
            return None
        score = float(p.detector.score_samples(p._scale(x)[None])[0])
        flag = score > p.threshold_
        return score, flag, self.persistence.push(flag)

    def reset(self) -> None:
        self.features.reset()
        self.persistence.reset()


def load_pipeline(path: str) -> Pipeline:
    """Load a fitted pipeline from a ``.twb`` model file (see :mod:`tinywarden.modelfile`)."""
    from tinywarden.modelfile import load_pipeline as _load

    return _load(path)
