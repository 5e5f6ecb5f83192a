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

from tinywarden.calibrate import Persistence, calibrate_threshold, check_persistence, check_target_fpr, persist
from tinywarden.detectors.base import Detector
from tinywarden.detectors.bounds import BoundsDetector, fail_safe_detector
from tinywarden.errors import ConfigError, DataError, NotFittedError
from tinywarden.features import (
    DEFAULT_FEATURES,
    FEATURE_POWER,
    StreamingFeatures,
    batch_features,
    batch_windows,
    check_crossings_block,
    check_features,
    check_window,
    window_end_rows,
)
from tinywarden.guard import GuardVerdict, judge_bounds
from tinywarden.likelihood import MIN_FIT_SCORES, AnomalyLikelihood, check_gate, window_new_rows
from tinywarden.telemetry.series import Series

Progress = Callable[[int, int], None]
MIN_FIT_WINDOWS = 8
MIN_CALIBRATION_WINDOWS = 4
#: The calibration windows are this many blocks spread over the training period (see Pipeline.split_index).
CALIBRATION_BLOCKS = 5
SCALE_FLOOR = 1e-6
#: A feature (or channel) that barely moved in training is scaled by at least this fraction of its
#: channel's spread, so a sensor that was constant while learning gives large but finite z-scores.
RELATIVE_SCALE_FLOOR = 0.05
#: The fail-safe guard's bounds are the training range widened by this fraction of its width on each side
#: (and its step limits by ``1 +`` this). Trained on 2 days of simulated camera telemetry and run over 10
#: other normal days, 0.25 flagged 5 windows on 3 of the days and 0.5 none, while 0.5 still flagged every
#: botnet-flood window and 77 % of memory-exploit windows: a fail-safe should act on gross breaches only.
GUARD_MARGIN = 0.5
#: Windows given to the detector per call. Fixed, so a series scored whole (:meth:`Pipeline.score`) or in chunks
#: (:mod:`tinywarden.chunked_score`) meets the detector in the same blocks: a float model's score of a window
#: may depend, in its last bits, on the batch it is computed in (BLAS kernels differ by matrix shape). It is
#: the torch families' own batch, so their scores are those of one call on the whole series.
SCORE_BLOCK = 8192


@dataclass(frozen=True)
class Scored:
    """Per-window results of a pipeline over a series."""

    end_rows: np.ndarray  # int64 index of each window's last row
    end_times: np.ndarray  # float64 timestamp of that row
    scores: np.ndarray  # float64, higher = more anomalous
    raw_flags: np.ndarray  # uint8, score > threshold
    alarms: np.ndarray  # uint8, after k-of-n persistence
    threshold: float


def model_inputs(detector: Detector | type[Detector], n_channels: int, features: Sequence[str]) -> int:
    """The inputs of ``detector`` on ``n_channels`` channels, as :meth:`Detector.max_inputs` and
    :meth:`Detector.flash_lower_bound` count them: window features for a feature family, channels for a raw-window
    one."""
    return n_channels * len(features) if detector.input_kind == "features" else n_channels


def too_wide(detector: Detector, n_channels: int, features: Sequence[str]) -> str | None:
    """Why ``n_channels`` channels (of ``features`` each) are more than ``detector``'s int8 program takes
    (:meth:`Detector.max_inputs`), in one phrase naming the channels, features and limit; None when they are not.

    >>> from tinywarden.detectors import PCAReconstruction
    >>> too_wide(PCAReconstruction(), 171, ("mean", "std", "max")) is None
    True
    >>> too_wide(PCAReconstruction(), 172, ("mean", "std", "max")).split(",")[0]
    '172 channels x 3 features = 516 model inputs'
    """
    limit = detector.max_inputs(detector.get_params())
    n_in = model_inputs(detector, n_channels, features)
    if limit is None or n_in <= limit:
        return None
    takes = f"the {limit} the int8 program of {detector.name} takes"
    if detector.input_kind == "window":
        return f"{n_channels} channels, more than {takes}"
    per = len(features)
    return (f"{n_channels} channels x {per} features = {n_in} model inputs, more than {takes} (at most "
            f"{limit // per} channels at {per} features each)")


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
        crossings_block: int | None = None,
        crossings_trained: bool = False,
        likelihood_gate: float | None = None,
    ) -> None:
        check_window(window, stride)
        check_persistence(k, n)
        if not 0.0 < calibration_fraction < 1.0:
            raise ConfigError(f"calibration_fraction must be in (0, 1), got {calibration_fraction}")
        check_target_fpr(target_fpr)
        self.detector = detector
        self.window = int(window)
        self.stride = int(stride)
        self.features = check_features(features, window)
        self.target_fpr = float(target_fpr)
        self.k = int(k)
        self.n = int(n)
        self.calibration_fraction = float(calibration_fraction)
        #: what the ``crossings`` feature counts the crossings of: by default the window's mean (the definition
        #: that detects best; its C keeps one int8 residual a sample, 768 B on the default pipeline, see
        #: :func:`tinywarden.kernels.features_s16.ring_residuals`); ``crossings_block``
        #: rows: each block's own mean (per-block counting lost the demo one sensor-drift incident of three and sim
        #: ewma 0.0066 ROC AUC; the C keeps one block of samples); ``crossings_trained``: each channel's trained
        #: mean (``crossings_level_``, learnt at fit), so the C counts them as the samples arrive and keeps no
        #: samples at all (issue 16: it lost up to 0.07 ROC AUC on ASD, where channels drift off their trained
        #: level, so it is an option for a RAM budget that needs it)
        self.crossings_trained = bool(crossings_trained)
        if self.crossings_trained and crossings_block is not None:
            raise ConfigError("crossings count the crossings of the trained mean or of block means, not both")
        self.crossings_block = (None if self.crossings_trained else int(window) if crossings_block is None
                                else check_crossings_block(crossings_block, window))
        #: the calibrated likelihood's ``gate`` (:class:`~tinywarden.likelihood.AnomalyLikelihood`): levels over
        #: this z teach its long-term distribution ``2**slow_shift`` times more slowly, so one attack does not
        #: widen the scale the next one is judged on. None (the default, measured best on NAB): every level
        #: teaches at the same rate
        self.likelihood_gate = check_gate(likelihood_gate)

    @property
    def crossings_level(self) -> np.ndarray | None:
        """The per-channel level ``crossings`` counts the crossings of (None: block means, ``crossings_block``)."""
        if self.crossings_block is not None:
            return None
        level = getattr(self, "crossings_level_", None)
        if level is None and "crossings" in self.features:
            raise NotFittedError("the crossings feature's trained level is learnt by fit(): fit the pipeline first")
        return level

    # -- model inputs --------------------------------------------------------------------------
    @property
    def input_kind(self) -> str:
        return self.detector.input_kind

    def _raw_inputs(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(end_rows, unscaled model inputs) for every window of ``values``."""
        if self.input_kind == "features":
            return batch_features(values, self.window, self.stride, self.features, self.crossings_block,
                                  self.crossings_level)
        ends = window_end_rows(len(values), self.window, self.stride)
        if len(ends) == 0:
            return ends, np.zeros((0, self.window, values.shape[1]))
        return ends, np.concatenate(list(batch_windows(values, self.window, self.stride)), axis=0)

    def window_inputs(self, series: Series) -> tuple[np.ndarray, np.ndarray]:
        """``(end_rows, unscaled model inputs)`` of every complete window of ``series`` (see :meth:`score_inputs`)."""
        return self._raw_inputs(self.select_channels(series))

    def score_inputs(self, raw: np.ndarray) -> np.ndarray:
        """Detector scores of unscaled model inputs, in blocks of :data:`SCORE_BLOCK` windows from the first."""
        out = np.empty(len(raw))
        for lo in range(0, len(raw), SCORE_BLOCK):
            out[lo : lo + SCORE_BLOCK] = self.detector.score_samples(self.scale_inputs(raw[lo : lo + SCORE_BLOCK]))
        return out

    def scale_inputs(self, x: np.ndarray) -> np.ndarray:
        """Model inputs (features or raw windows) standardised with the scaler fitted on normal data."""
        return (x - self.offset_) / self.scale_

    def select_channels(self, series: Series) -> np.ndarray:
        """The series' values in the channel order the pipeline was fitted on, matched by name."""
        if not hasattr(self, "channels_"):
            return series.values
        missing = [c for c in self.channels_ if c not in series.channels]
        if missing:
            raise DataError(f"{series.source}: missing channel(s) {', '.join(missing)} the model was trained on "
                            f"(model: {', '.join(self.channels_)}; file: {', '.join(series.channels)})")
        idx = [series.channels.index(c) for c in self.channels_]
        return series.values[:, idx]

    def ignored_channels(self, series: Series) -> tuple[str, ...]:
        """Channels of ``series`` the model was not trained on: scoring leaves them out (matched by name)."""
        self._check_fitted()
        return tuple(c for c in series.channels if c not in self.channels_)

    # -- fitting -------------------------------------------------------------------------------
    def check_width(self, series: Series) -> None:
        """Refuse ``series`` before anything is fitted when it has more channels than the detector's int8 program
        takes (:func:`too_wide`): the model could never run on a device, and a family's fit may grow faster than
        its input (the Gaussian's covariance with the square of the features: 2,000 channels x 11 features took
        over 8 GB and 14 minutes before ``train`` found it had no int8 program). Commands that deploy a model
        (``train``, ``tune``, ``fleet``) call it; a float-only study fits any width."""
        why = too_wide(self.detector, series.n_channels, self.features)
        if why is not None:
            features = "" if self.input_kind == "window" else ", or fewer features per channel (train --features)"
            raise ConfigError(f"{series.source}: {why}; nothing was fitted: select fewer channels{features}, or "
                              "another family (--model)")

    def fit(self, series: Series, progress: Progress | None = None) -> Pipeline:
        """Learn normal from ``series`` (windows holding a row labelled 1 are left out), then calibrate.

        The normal windows are split (:meth:`split_index`): ``calibration_fraction`` of them, in blocks
        spread over the whole period, are held out to set the threshold at ``target_fpr``; the rest
        train the detector.
        """
        self.channels_ = tuple(series.channels)
        self.crossings_level_ = self._normal_mean(series) if self.crossings_block is None else None
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
        self.detector.fit(self.scale_inputs(fit_x), **fit_kwargs)
        cal_scores = self.detector.score_samples(self.scale_inputs(cal_x))
        self.threshold_, rule = calibrate_threshold(cal_scores, self.target_fpr)
        # The confidence scale starts from the held-out scores (in time order), not the fitted ones; its value
        # record from the range of every sample of the normal windows (the samples the guard learns from).
        self.likelihood_: AnomalyLikelihood | None = (
            AnomalyLikelihood(gate=self.likelihood_gate).fit(cal_scores, values=self.normal_rows(series))
            if len(cal_scores) >= MIN_FIT_SCORES else None)
        self.guard_: BoundsDetector | None = fail_safe_detector(self._guard_windows(series), GUARD_MARGIN)
        self.guard_note_ = ""
        self.train_summary_ = {
            "source": series.source,
            "rows": len(series),
            "normal_windows": int(n_fit + n_cal),
            "fit_windows": int(n_fit),
            "calibration_windows": int(n_cal),
            "calibration_fpr": float(np.mean(cal_scores > self.threshold_)),
            "calibration_rule": rule,
            "period_s": series.period,
        }
        return self

    def _normal_mean(self, series: Series) -> np.ndarray:
        """Per-channel mean over the normal rows (the level ``crossings`` counts the crossings of)."""
        values = self.select_channels(series)
        if series.labels is not None and (series.labels == 0).any():
            values = values[series.labels == 0]
        return np.asarray(values.mean(axis=0), dtype=np.float64)

    def _channel_spread(self, series: Series) -> np.ndarray:
        """Per-channel standard deviation over the normal rows (1e-3 of the level where constant)."""
        values = self.select_channels(series)
        if series.labels is not None and (series.labels == 0).any():
            values = values[series.labels == 0]
        spread = values.std(axis=0)
        level = np.abs(values).mean(axis=0)
        return np.where(spread > 0, spread, np.maximum(1e-3 * level, SCALE_FLOOR))

    def split_inputs(self, series: Series) -> tuple[np.ndarray, np.ndarray]:
        """Unscaled model inputs of the normal windows of ``series``: ``(fit part, calibration part)``.

        The same split :meth:`fit` uses, so a later stage (e.g. int8 calibration) sees the same data.
        """
        ends, raw = self._raw_inputs(self.select_channels(series))
        raw = raw[normal_window_mask(series.labels, ends, self.window)]
        fit_idx, cal_idx = self.split_index(len(raw), series)
        return raw[fit_idx], raw[cal_idx]

    def split_index(self, n_windows: int, series: Series | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Positions, among ``n_windows`` normal windows in time order, of the fit and calibration parts.

        The calibration part is ``calibration_fraction`` of the windows in up to
        :data:`CALIBRATION_BLOCKS` equal blocks, one centred in each equal stretch of the training
        period, so the detector learns from the whole period (its most recent behaviour included)
        and the threshold is set on every part of it. Fit windows that share rows with a calibration
        window are left out of both when enough remain, so the calibration stays held out.
        """
        n_cal = int(round(n_windows * self.calibration_fraction))
        source = f"{series.source}: {len(series)} rows give " if series is not None else ""
        if n_windows - n_cal < MIN_FIT_WINDOWS or n_cal < MIN_CALIBRATION_WINDOWS:
            raise DataError(
                f"{source}{n_windows} normal windows of {self.window} rows "
                f"(stride {self.stride}); need at least {MIN_FIT_WINDOWS} to train and "
                f"{MIN_CALIBRATION_WINDOWS} to calibrate: use more data or a shorter window/stride"
            )
        blocks = min(CALIBRATION_BLOCKS, n_cal)
        sizes = np.full(blocks, n_cal // blocks) + (np.arange(blocks) < n_cal % blocks)
        segment = n_windows / blocks
        starts = [int(round(segment * (b + 0.5) - size / 2.0)) for b, size in enumerate(sizes)]
        # windows overlap their neighbours by window - stride rows: keep a gap that wide around each block
        gap = min(-(-self.window // self.stride) - 1, n_windows)  # wider than every window: the same, no overflow
        is_cal = np.zeros(n_windows, dtype=bool)
        near = np.zeros(n_windows, dtype=bool)  # a calibration window or one sharing rows with it
        for start, size in zip(starts, sizes, strict=True):
            is_cal[start : start + size] = True
            near[max(0, start - gap) : start + size + gap] = True
        fit = ~near
        if fit.sum() < MIN_FIT_WINDOWS:
            fit = ~is_cal
        return np.flatnonzero(fit), np.flatnonzero(is_cal)

    def normal_rows(self, series: Series) -> np.ndarray:
        """The samples (rows, in the model's channel order) that some normal window of ``series`` holds: what
        the pipeline learns normal from, rows labelled anomalous and the windows around them left out."""
        values = self.select_channels(series)
        ends = window_end_rows(len(values), self.window, self.stride)
        ends = ends[normal_window_mask(series.labels, ends, self.window)]
        cover = np.zeros(len(values) + 1, dtype=np.int64)
        np.add.at(cover, ends - (self.window - 1), 1)
        np.add.at(cover, ends + 1, -1)
        return values[np.cumsum(cover[:-1]) > 0]

    def _guard_windows(self, series: Series) -> np.ndarray:
        """Raw windows covering exactly the samples of the normal windows, for the fail-safe guard.

        The guard needs no calibration (its threshold is fixed), so it learns from every normal window,
        the calibration blocks included: the wider its view of normal, the rarer its false alarms.

        The guard keeps only the extremes (range and largest step) of what it sees, so a window whose
        samples and steps all lie in its neighbours adds nothing: keeping only the windows needed to
        cover every sample and every step of the normal windows gives the same guard as all of them, bit for
        bit, at a fraction of the memory when the stride is small.
        """
        values = self.select_channels(series)
        ends = window_end_rows(len(values), self.window, self.stride)
        ends = ends[normal_window_mask(series.labels, ends, self.window)]
        keep, last = [], None
        for i, end in enumerate(ends):
            nxt = ends[i + 1] if i + 1 < len(ends) else None
            # Skip a window only when the last kept one and the next one overlap: together they cover it.
            if last is None or nxt is None or nxt - last > self.window - 1:
                keep.append(end)
                last = end
        starts = np.asarray(keep, dtype=np.int64) - (self.window - 1)
        view = np.lib.stride_tricks.sliding_window_view(np.asarray(values, dtype=np.float64), self.window, axis=0)
        return np.ascontiguousarray(view[starts].transpose(0, 2, 1))

    def judge_window(self, window: np.ndarray) -> GuardVerdict:
        """The fail-safe guard's verdict on one raw ``(window, channels)`` window, in the model's channel order.

        This is what the response engine falls back on when the model path faults on that window: it
        needs no features, no scaler and no detector, only the bounds learned at :meth:`fit`.
        """
        guard = getattr(self, "guard_", None)
        if guard is None:
            note = getattr(self, "guard_note_", "") or "this pipeline has no fail-safe guard"
            return GuardVerdict(None, float("nan"), note)
        shape = tuple(int(v) for v in guard.input_shape_)
        return judge_bounds(window, self.channels_, guard.lo_, guard.hi_, guard.rate_, shape)  # type: ignore[arg-type]

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError("pipeline is not fitted: train it or load a model file")

    # -- scoring -------------------------------------------------------------------------------
    def score(self, series: Series) -> Scored:
        """Score every complete window of ``series``."""
        self._check_fitted()
        ends, raw = self.window_inputs(series)
        if len(ends) == 0:
            raise DataError(f"{series.source}: {len(series)} rows are fewer than one window of {self.window}")
        scores = self.score_inputs(raw)
        flags = (scores > self.threshold_).astype(np.uint8)
        return Scored(ends, series.timestamps[ends], scores, flags, persist(flags, self.k, self.n),
                      float(self.threshold_))

    def confidence(self, scores: np.ndarray, series: Series | None = None,
                   end_rows: np.ndarray | None = None) -> np.ndarray | None:
        """Calibrated confidences in [0, 1] of a window-score stream (:mod:`tinywarden.likelihood`), from the
        fitted state. Given the ``series`` the windows ending at ``end_rows`` were scored on (:meth:`score`'s
        ``end_rows``), the likelihood's value record sees each window's new rows (the first window: every row up
        to its end), as the streaming paths do; without it the confidences are the scores' alone.

        ``None`` for a pipeline without a likelihood (a model file written before it existed).
        """
        self._check_fitted()
        lik = getattr(self, "likelihood_", None)
        if lik is None:
            return None
        if series is None:
            return lik.transform(scores)
        return lik.transform(scores, self._new_rows(scores, series, end_rows))

    def notifications(self, scores: np.ndarray, series: Series | None = None,
                      end_rows: np.ndarray | None = None) -> np.ndarray | None:
        """What the product notifies of :meth:`confidence`'s stream: each alarm (confidence >= 0.5) once at its
        onset, a value record whenever one is set (:meth:`tinywarden.likelihood.AnomalyLikelihood.notifications`);
        :meth:`confidence`, which the tiers and the adaptation read, is unchanged. ``None`` without a likelihood."""
        self._check_fitted()
        lik = getattr(self, "likelihood_", None)
        if lik is None:
            return None
        return lik.notifications(scores, None if series is None else self._new_rows(scores, series, end_rows))

    def _new_rows(self, scores: np.ndarray, series: Series, end_rows: np.ndarray | None) -> list[np.ndarray]:
        if end_rows is None or len(end_rows) != len(scores):
            raise DataError("pipeline confidence: the series needs the end row of every scored window")
        return window_new_rows(self.select_channels(series), end_rows)

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
            "crossings_block": self.crossings_block,
            "crossings_trained": self.crossings_trained,
            "likelihood_gate": self.likelihood_gate,
        }


class StreamingScorer:
    """Push raw samples; every ``stride`` samples get ``(score, raw_flag, alarm)`` for the new window."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.features = StreamingFeatures(pipeline.window, pipeline.stride, len(pipeline.channels_),
                                          pipeline.features, pipeline.crossings_block, pipeline.crossings_level)
        self.persistence = Persistence(pipeline.k, pipeline.n)
        self.last_input: np.ndarray | None = None  # unscaled model input of the last window (for adaptation)

    def push(self, sample: np.ndarray | Sequence[float]) -> tuple[float, bool, bool] | None:
        p = self.pipeline
        push = self.features.push if p.input_kind == "features" else self.features.push_window
        x = push(sample)
        if x is None:
            return None
        self.last_input = x
        score = float(p.detector.score_samples(p.scale_inputs(x)[None])[0])
        flag = score > p.threshold_
        return score, flag, self.persistence.push(flag)

    def reset(self) -> None:
        self.features.reset()
        self.persistence.reset()
