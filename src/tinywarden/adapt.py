"""Baseline adaptation that resists poisoning: the deployed pipeline keeps learning normal, slowly.

Real telemetry drifts (a firmware update, a new routine); a baseline fitted once floods its owner with
false alarms. :class:`BaselineAdapter` lets the deployed pipeline follow such changes, under three rules
that keep an attacker from steering it:

1. *Only clearly normal windows teach*: a window adapts the baseline only when its calibrated
   confidence (:mod:`tinywarden.likelihood`) is below ``below_confidence`` (0.2 by default: a tail
   probability above 1e-2). While the score is elevated nothing is learned; a window without a
   confidence (NaN score, a model without a likelihood) teaches nothing either.
2. *At a bounded rate*: each teaching window moves the scaler's per-input mean and variance by
   ``2**-rate_shift`` of the way (exponentially weighted), so no burst of windows can move it far.
3. *Against a frozen reference*: the scaler fitted at training is kept unchanged. ``drift`` is the
   largest distance of the adapted means from it, in training standard deviations, and
   ``likelihood_drift`` that of the likelihood's running mean from its fitted one (in its fitted
   standard deviation). When either passes ``max_drift`` the adapter is *flagged* (the agent audits
   ``baseline_drift`` and shows it in the status file): a slow ramp that stays under every window's
   radar (exfiltration, a miner ramped over days) still moves the baseline, and that movement is
   what gives it away, before it reaches its full rate. A legitimate change (a firmware update) is
   flagged too, once; an operator who approves it re-baselines with a new signed bundle.

Rule 1 also asks, by default (``below_threshold``), that the window's raw score be at or under the
pipeline's threshold: the likelihood learns every level, so right after an anomaly its widened
distribution would call the next moderately anomalous windows clearly normal.

4. *A steady sustained shift settles* (``settle_s``, 12 h by default): a legitimate change (a firmware update)
   is first an alarm, and rule 1 holds the baseline; windows over the threshold fill a leaky count
   (+1 over, -1 under, at most ``settle_s`` worth of windows). A *shadow* mean and spread follow every window,
   with a memory of at most a quarter of ``settle_s`` (:func:`shadow_shift`). When the count is full, the shift
   has lasted ``settle_s``; the baseline jumps to the shadow if its spread is at most :data:`SETTLE_SPREAD`
   reference variances in every input (the new level is steady: a firmware update moves the level and keeps
   the device's variability around it, a long anomaly is rarely that regular; an unsteady shift is not adopted
   and stays an alarm), then keeps learning from every window at ``2**-settle_rate_shift``, with its scale
   never under the reference one, until the count is empty again. The jump moves the baseline away from the
   reference, so the drift flag tells the operator. An attack that holds a steady level for ``settle_s`` is
   taught too: it has raised its alarm at its start, and the flag follows.

A family that judges the level itself (:attr:`~tinywarden.detectors.base.Detector.judges_level`: bounds, AR)
keeps its trained scaler: only its likelihood adapts (its confidence and likelihood drift), since a re-centred
scaler would carry its learned range or forecast level along with the data (on ASD omi-2 it lost 0.51 and 0.21
ROC AUC that way: ``benchmarks/results/adapt_quality.md``). So does a family whose score stops growing beyond
its learned range (:attr:`~tinywarden.detectors.base.Detector.saturates_out_of_range`: the isolation forest),
since rule 1 reads the score: there a window far outside the trained range can look clearly normal and teach
(on SMD machine-2-2 that lost 0.119 ROC AUC); and an ensemble with such a member.

5. *The slow-drift watch* (:mod:`tinywarden.level_watch`, ``watch_drift``): a day-long level (at
   ``2**-settle_rate_shift``) of every window under the threshold, whatever its confidence; when it is
   ``watch_drift`` reference standard deviations from the reference the drift flag rises too. A ramp too slow
   for any window and too unsure to teach is seen by it; an alarmed burst does not move it. On by default
   (``watch_drift`` 1, :data:`~tinywarden.adaptation.WATCH_DRIFT`); ``watch_drift`` 0 turns it off. For a family
   that scores a displacement (:attr:`~tinywarden.detectors.base.Detector.scores_displacement`: PCA, Gaussian)
   the flag also rises when the detector's own score of that level is ``watch_distance`` of its threshold
   (:data:`~tinywarden.adaptation.WATCH_DISTANCE`): a level that leaves the relations between inputs the model
   learned (a pressure sensor drifting off the valve position it follows) is far in that metric long before any
   one input moves by ``watch_drift``.

The detector's own state (EWMA mean, k-means centroids) is not adapted: the scaler's adaptation keeps
the detector's inputs centred on the normal it learned, and the detectors' ``partial_fit`` rates are
not bounded per window. The int8 runtime and the generated C run the same rule in integers
(:mod:`tinywarden.kernels.adapt_q`: the gate on the program's integer score and threshold, offsets only or
scales too, the settling count in windows from :func:`windows_in`, the shadow, the drift flag); that module
says where the two part (the integer step clamps outliers at 128 standard deviations). Without
``adapt_scale`` the scale never goes under the reference one (it moves only while a shift settles, and relaxes
back after), so that the device's offsets-only step needs no sharper multiplier than the trained one.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tinywarden.adaptation import (
    REARM_FRACTION,
    SCALE_FLOOR_FRACTION,
    SETTLE_SPREAD,
    Adaptation,
    AdaptStep,
    shadow_shift,
)
from tinywarden.errors import ConfigError

if TYPE_CHECKING:
    from tinywarden.likelihood import AnomalyLikelihood
    from tinywarden.pipeline import Pipeline

__all__ = ["REARM_FRACTION", "SCALE_FLOOR_FRACTION", "SETTLE_SPREAD", "AdaptStep", "Adaptation",
           "BaselineAdapter", "adapted_scores", "settle_windows", "shadow_shift", "windows_in"]

def _ewm_step(offset: np.ndarray, var: np.ndarray, rows: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    """One exponentially weighted step of a per-input mean and spread around it, at rate ``r``."""
    d = rows.mean(axis=0) - offset
    spread = ((rows - offset) ** 2).mean(axis=0)
    return offset + r * d, (1.0 - r) * var + r * spread


def settle_windows(pipeline: Pipeline, settle_s: float) -> int:
    """Windows in ``settle_s`` seconds at the pipeline's stride and training sample period (0: rule off or
    the period unknown)."""
    return windows_in(settle_s, pipeline.stride, getattr(pipeline, "train_summary_", {}).get("period_s"))


def windows_in(seconds: float, stride: int, period_s: float | None) -> int:
    """Windows of ``stride`` samples every ``period_s`` seconds in ``seconds`` (rounded up, at least 1); 0 when
    ``seconds`` is 0 or the period unknown. The one definition the float adapter and the integer step
    (:func:`tinywarden.program.adaptation_params`, the generated C's ``TW_AD_SETTLE_N``) count with.

    >>> windows_in(43200.0, 64, 10.0), windows_in(0.0, 64, 10.0), windows_in(43200.0, 64, None)
    (68, 0, 0)
    """
    if not seconds or not period_s or not math.isfinite(period_s) or period_s <= 0:
        return 0
    return max(1, math.ceil(seconds / (stride * period_s)))


def level_drifts(level: np.ndarray, reference: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Each input's distance of ``level`` from the ``reference`` offsets, in ``scale`` units (the slow-drift
    watch's measure, :mod:`tinywarden.level_watch`)."""
    return np.abs(np.asarray(level, dtype=np.float64) - reference) / scale


class BaselineAdapter:
    """Adapts ``pipeline``'s scaler in place from clearly normal windows (module docstring).

    >>> from tinywarden.detectors import EWMAZScore
    >>> from tinywarden.pipeline import Pipeline
    >>> from tinywarden.telemetry.series import Series
    >>> rng = np.random.default_rng(0)
    >>> s = Series(np.arange(3000.0), rng.normal(size=(3000, 1)), ("a",))
    >>> p = Pipeline(EWMAZScore(), window=32, stride=16).fit(s)
    >>> ad = BaselineAdapter(p, Adaptation(rate_shift=4))
    >>> x = p.split_inputs(s)[0][0] + 5.0 * p.scale_
    >>> steps = [ad.observe(x, 0.0) for _ in range(200)]
    >>> bool(steps[-1].drift > 3.0 and any(st.flagged for st in steps)), ad.observe(x, 0.9).adapted
    (True, False)
    """

    def __init__(self, pipeline: Pipeline, config: Adaptation) -> None:
        self.pipeline = pipeline
        self.config = config
        self.reference_offset = np.array(pipeline.offset_, dtype=np.float64, copy=True)
        self.reference_scale = np.array(pipeline.scale_, dtype=np.float64, copy=True)
        self._var = self.reference_scale**2
        self.rate = 2.0**-config.rate_shift
        self.settle_windows = settle_windows(pipeline, config.settle_s)
        #: the family judges the level itself or its score is blind beyond the learned range
        #: (:meth:`tinywarden.detectors.base.Detector.keeps_trained_scaler`): the likelihood alone adapts (the
        #: caller's), the scaler never moves
        self.likelihood_only = pipeline.detector.keeps_trained_scaler()
        self.elevated = 0  # leaky count of windows over the threshold (sustained-shift rule)
        self.settling = False
        # The level and spread of the last 2**shadow_shift windows or so (adopted when a steady shift settles)
        self.shadow_rate = 2.0**-shadow_shift(self.settle_windows, config.settle_rate_shift)
        self._shadow_offset = self.reference_offset.copy()
        self._shadow_var = self._var.copy()
        self.settled = 0  # windows that taught the baseline at the settling rate
        self.adapted = 0
        self.held = 0
        self.drift = 0.0
        self.likelihood_drift = 0.0
        # the slow-drift watch (tinywarden.level_watch): the day-long level of the windows under the threshold, its
        # distance from the reference, and the peak of that distance
        self._level = self.reference_offset.copy()
        self.level_drift = 0.0
        self.peak_level_drift = 0.0
        self.peak_level_input = 0
        # ... and the level's score by the detector itself, as a fraction of the threshold (0 when not measured)
        self.measures_distance = (config.watch_distance > 0 and pipeline.detector.scores_displacement
                                  and pipeline.threshold_ > 0)
        self.level_distance = 0.0
        self.flagged = False
        self.flags = 0

    def observe(self, x: np.ndarray, confidence: float | None,
                likelihood: AnomalyLikelihood | None = None, score: float | None = None) -> AdaptStep:
        """One window's unscaled model input ``x``, its confidence and raw score; adapt if clearly normal.

        Without ``score`` (a caller that does not pass it) the threshold and sustained-shift rules are skipped.
        """
        p = self.pipeline
        cfg = self.config
        if self.likelihood_only:  # the family judges the level: its scaler stays the trained one
            self.held += 1
            return AdaptStep(False, self.drift, *self._flag(likelihood))
        ok = confidence is not None and math.isfinite(confidence) and confidence < cfg.below_confidence
        over = score is not None and math.isfinite(score) and score > p.threshold_
        if cfg.below_threshold and (over or (score is not None and not math.isfinite(score))):
            ok = False
        r = self.rate
        xs = np.asarray(x, dtype=np.float64)
        usable = xs.shape[-1] == p.offset_.shape[-1] and bool(np.isfinite(xs).all())
        rows = xs.reshape(-1, xs.shape[-1]) if usable else xs  # a feature vector is one row; a raw window its rows
        floor = SCALE_FLOOR_FRACTION if cfg.adapt_scale else 1.0  # offsets only: never sharper than trained
        if self.settle_windows and score is not None:
            rs = 2.0**-cfg.settle_rate_shift
            # the shift is steady while the shadow's spread (before this window) is small in every input
            steady = bool(np.all(self._shadow_var <= SETTLE_SPREAD * self.reference_scale**2))
            if usable:
                self._shadow_offset, self._shadow_var = _ewm_step(self._shadow_offset, self._shadow_var, rows,
                                                                  self.shadow_rate)
            self.elevated = min(self.elevated + 1, self.settle_windows) if over else max(self.elevated - 1, 0)
            if self.elevated >= self.settle_windows and not self.settling and steady:
                self.settling = True  # a steady shift that has lasted settle_s: adopt the level it has kept
                p.offset_ = self._shadow_offset.copy()
                self._var = np.maximum(self._shadow_var, self.reference_scale**2)
            elif self.elevated == 0:
                self.settling = False
            if self.settling:  # follow it at the settling rate (the drift flag tells the operator)
                ok, r, floor = math.isfinite(score), rs, 1.0
        if cfg.watch_drift > 0 and usable and score is not None and math.isfinite(score) and not over:
            self._watch(rows)
        if ok and usable:
            self.settled += self.settling
            offset, var = _ewm_step(p.offset_, self._var, rows, r)
            p.offset_ = offset
            if self.settling or cfg.adapt_scale or not np.array_equal(self._var, self.reference_scale**2):
                # without adapt_scale a scale learned while settling relaxes back to the reference one
                self._var = var if (self.settling or cfg.adapt_scale) else (1.0 - r) * self._var + r * (
                    self.reference_scale**2)
                p.scale_ = np.maximum(np.sqrt(self._var), floor * self.reference_scale)
            self.adapted += 1
        else:
            ok = False
            self.held += 1
        self.drift = float(np.max(np.abs(p.offset_ - self.reference_offset) / self.reference_scale))
        return AdaptStep(ok, self.drift, *self._flag(likelihood))

    def _flag(self, likelihood: AnomalyLikelihood | None) -> tuple[float, bool]:
        """The likelihood's drift after this window and whether the drift flag has just been raised."""
        cfg = self.config
        if likelihood is not None:
            self.likelihood_drift = likelihood.drift()
        worst = max(self.drift, self.likelihood_drift)
        watch = cfg.watch_drift if cfg.watch_drift > 0 else math.inf
        distance = cfg.watch_distance if self.measures_distance else math.inf
        new_flag = False
        if not self.flagged and (worst > cfg.max_drift or self.level_drift > watch or self.level_distance > distance):
            self.flagged = new_flag = True
            self.flags += 1
        elif (self.flagged and worst < REARM_FRACTION * cfg.max_drift and self.level_drift < REARM_FRACTION * watch
              and self.level_distance < REARM_FRACTION * distance):
            self.flagged = False
        return self.likelihood_drift, new_flag

    def _watch(self, rows: np.ndarray) -> None:
        """The slow-drift watch's step (:mod:`tinywarden.level_watch`): a window under the threshold moves its level."""
        self._level = self._level + 2.0**-self.config.settle_rate_shift * (rows.mean(axis=0) - self._level)
        z = level_drifts(self._level, self.reference_offset, self.reference_scale)
        i = int(np.argmax(z))
        self.level_drift = float(z[i])
        if self.level_drift > self.peak_level_drift:
            self.peak_level_drift, self.peak_level_input = self.level_drift, i
        if self.measures_distance:
            p = self.pipeline
            moved = (self._level - self.reference_offset) / self.reference_scale
            self.level_distance = float(p.detector.score_samples(moved[None, :])[0]) / p.threshold_

    def rebind(self, pipeline: Pipeline) -> None:
        """Carry the adapted baseline over to ``pipeline`` (a hot swap to the same model file)."""
        pipeline.offset_, pipeline.scale_ = self.pipeline.offset_.copy(), self.pipeline.scale_.copy()
        self.pipeline = pipeline

    @property
    def shadow_spread(self) -> float:
        """The current shift's largest spread around its own level (the shadow's), in reference variances: a
        sustained shift is adopted only while it is at most :data:`SETTLE_SPREAD`."""
        return float(np.max(self._shadow_var / self.reference_scale**2))

    def status(self) -> dict[str, Any]:
        """The ``adaptation`` block of the agent's status file."""
        return {
            "enabled": True,
            "adapted_windows": self.adapted,
            "held_windows": self.held,
            "drift": round(self.drift, 4),
            "likelihood_drift": round(self.likelihood_drift, 4),
            "max_drift": self.config.max_drift,
            "level_drift": round(self.level_drift, 4),
            "watch_drift": self.config.watch_drift,
            "level_distance": round(self.level_distance, 4),
            "watch_distance": self.config.watch_distance if self.measures_distance else 0.0,
            "flagged": self.flagged,
            "flags": self.flags,
            "settling": self.settling,
            "settled_windows": self.settled,
            "scale_ratio_max": round(float(np.max(self.pipeline.scale_ / self.reference_scale)), 4),
        }


def adapted_scores(pipeline: Pipeline, raw: np.ndarray, adaptation: Adaptation | None,
                   rows: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Scores of unscaled model inputs ``raw`` (one window each, in time order) as a deployed copy of
    ``pipeline`` gives them: each window is scored with the baseline as the windows before it left it.

    The agent's step (:mod:`tinywarden.replay` runs the same one sample by sample): score, the likelihood's
    confidence (its value record fed ``rows[i]``, the samples window ``i`` adds:
    :func:`tinywarden.likelihood.window_new_rows`; without ``rows`` the value record sees nothing), then
    :meth:`BaselineAdapter.observe`. ``adaptation`` None or disabled, or a pipeline without a likelihood: the
    batch scores (:meth:`Pipeline.score_inputs`). ``pipeline`` is left alone.

    >>> from tinywarden.detectors import EWMAZScore
    >>> from tinywarden.pipeline import Pipeline
    >>> from tinywarden.telemetry.series import Series
    >>> rng = np.random.default_rng(0)
    >>> s = Series(np.arange(3000.0), rng.normal(size=(3000, 1)), ("a",))
    >>> p = Pipeline(EWMAZScore(), window=32, stride=16).fit(s.slice(0, 2000))
    >>> raw = p.window_inputs(s)[1]
    >>> bool(np.array_equal(adapted_scores(p, raw, None), p.score_inputs(raw)))
    True
    >>> adapted_scores(p, raw, Adaptation()).shape == (len(raw),)
    True
    """
    fitted = getattr(pipeline, "likelihood_", None)
    if adaptation is None or not adaptation.enabled or fitted is None:
        return pipeline.score_inputs(raw)
    if rows is not None and len(rows) != len(raw):
        raise ConfigError(f"adapted_scores: {len(rows)} row blocks for {len(raw)} windows")
    p = copy.deepcopy(pipeline)
    lik = fitted.fresh()
    adapter = BaselineAdapter(p, adaptation)
    out = np.empty(len(raw))
    for i, x in enumerate(raw):
        out[i] = score = float(p.detector.score_samples(p.scale_inputs(x)[None])[0])
        c = lik.update(score, None if rows is None else rows[i])
        adapter.observe(x, c if math.isfinite(c) else None, lik, score)
    return out
