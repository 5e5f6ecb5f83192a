"""Replay a recorded series through a deployed pipeline one sample at a time, the way the agent runs it.

Each sample goes through the pipeline's :class:`~tinywarden.pipeline.StreamingScorer`; each window's
score, and the rows it adds (for the value record), through a fresh stream of the fitted
:class:`~tinywarden.likelihood.AnomalyLikelihood`; and, when
``adaptation`` is enabled, the window's input and confidence through a
:class:`~tinywarden.adapt.BaselineAdapter`, which moves the scaler the next windows are scored with
(the agent's ``_confidence`` step, without the response engine). The pipeline passed in is left alone:
the replay adapts a copy. What comes back is the per-window record :func:`~tinywarden.evaluate.evaluate`
takes, plus the confidences and the rows where the adapter raised a ``baseline_drift`` flag.

>>> from tinywarden.detectors import EWMAZScore
>>> from tinywarden.pipeline import Pipeline
>>> from tinywarden.respond.policy import Adaptation
>>> from tinywarden.telemetry.series import Series
>>> rng = np.random.default_rng(0)
>>> s = Series(np.arange(3000.0), rng.normal(size=(3000, 2)), ("a", "b"))
>>> p = Pipeline(EWMAZScore(), window=32, stride=16).fit(s.slice(0, 2000))
>>> r = replay(p, s, start_row=2000, adaptation=Adaptation())
>>> len(r.windows.scores), int(r.windows.end_rows[0]), r.adapted > 0
(61, 2031, True)
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from tinywarden.adapt import BaselineAdapter
from tinywarden.errors import ConfigError
from tinywarden.evaluate import WindowScores
from tinywarden.pipeline import Pipeline
from tinywarden.respond.policy import Adaptation
from tinywarden.telemetry.series import Series

__all__ = ["Replay", "aligned_start", "replay"]


def aligned_start(pipeline: Pipeline, first_end: int) -> int:
    """The row to start a replay at so that its windows end where :meth:`Pipeline.score`'s do, the first of
    them at or after row ``first_end``.

    >>> from tinywarden.detectors import EWMAZScore
    >>> aligned_start(Pipeline(EWMAZScore(), window=128, stride=64), 1000)
    896
    """
    k = max(0, -(-(first_end - pipeline.window + 1) // pipeline.stride))
    return int(k * pipeline.stride)


@dataclass(frozen=True)
class Replay:
    """What a replay produced: per-window scores, flags and alarms, confidences, and the adapter's record."""

    windows: WindowScores
    confidences: np.ndarray  # NaN for a model without a likelihood
    drift_flag_rows: np.ndarray  # end rows of the windows on which a baseline_drift flag was raised
    adapted: int  # windows that taught the baseline
    held: int  # windows that did not

    def _inside(self, lo: int, hi: int) -> np.ndarray:
        ends = self.windows.end_rows
        return (ends >= lo) & (ends < hi)

    def alarm_onsets(self, lo: int, hi: int) -> int:
        """Alarms raised (rising edges) on windows ending in rows ``lo:hi``; a standing alarm counts once."""
        a = self.windows.alarms.astype(bool)
        rising = a & ~np.concatenate(([False], a[:-1]))
        return int(rising[self._inside(lo, hi)].sum())

    def alarm_share(self, lo: int, hi: int) -> float:
        """Share of the windows ending in rows ``lo:hi`` that are in alarm (0 when there are none)."""
        inside = self._inside(lo, hi)
        return float(self.windows.alarms[inside].mean()) if inside.any() else 0.0

    def alarm_standing(self, row: int) -> bool:
        """Whether the last window ending before ``row`` is in alarm."""
        i = int(np.searchsorted(self.windows.end_rows, row)) - 1
        return bool(i >= 0 and self.windows.alarms[i])


def replay(pipeline: Pipeline, series: Series, start_row: int = 0,
           adaptation: Adaptation | None = None) -> Replay:
    """Stream rows ``start_row:`` of ``series`` through a copy of ``pipeline`` (module docstring).

    ``adaptation`` None or disabled: the scaler stays as trained. Raises
    :class:`~tinywarden.errors.ConfigError` for a ``start_row`` outside the series.
    """
    if not 0 <= int(start_row) < len(series):
        raise ConfigError(f"start_row: {start_row} is outside the series of {len(series)} rows")
    p = copy.deepcopy(pipeline)
    values = p.select_channels(series)
    scorer = p.stream()
    fitted = getattr(p, "likelihood_", None)
    lik = fitted.fresh() if fitted is not None else None
    adapter = (BaselineAdapter(p, adaptation)
               if adaptation is not None and adaptation.enabled and lik is not None else None)
    ends: list[int] = []
    scores: list[float] = []
    flags: list[bool] = []
    alarms: list[bool] = []
    confidences: list[float] = []
    drift_rows: list[int] = []
    last_end = int(start_row) - 1
    for row in range(int(start_row), len(series)):
        out = scorer.push(values[row])
        if out is None:
            continue
        score, flag, alarm = out
        c = lik.update(score, values[last_end + 1 : row + 1]) if lik is not None else math.nan
        last_end = row
        if adapter is not None and scorer.last_input is not None:
            step = adapter.observe(scorer.last_input, c if math.isfinite(c) else None, lik, score)
            if step.flagged:
                drift_rows.append(row)
        ends.append(row)
        scores.append(score)
        flags.append(flag)
        alarms.append(alarm)
        confidences.append(c)
    windows = WindowScores(np.array(ends, dtype=np.int64), p.window, np.array(scores, dtype=np.float64),
                           np.array(flags, dtype=np.uint8), np.array(alarms, dtype=np.uint8),
                           float(p.threshold_))
    return Replay(windows, np.array(confidences, dtype=np.float64), np.array(drift_rows, dtype=np.int64),
                  adapter.adapted if adapter is not None else 0,
                  adapter.held if adapter is not None else len(ends))
