"""The slow-drift watch: a day-long level of every window, compared with the frozen training reference.

Why it exists (``benchmarks/results/drift.md``, issue 14): a poisoning ramp that takes three days to reach its
full rate can stay under every window's radar. Its windows score under the threshold, or just over it now and
then, so the k-of-n alarm never fires; their confidence is too high for them to teach the adapted baseline
(:mod:`tinywarden.adapt`, rule 1) yet too rarely over the threshold for the settling count to fill, so the
adapted means stay at the reference and their ``max_drift`` flag stays down. Nothing compared the device's slow
level with what training saw. The watch does.

*The statistic.* A level per model input that every window *under the threshold* moves, whatever its
confidence, by ``2**-settle_rate_shift`` of the way (7: a horizon of about a day at stride 64 and 10 s
sampling; the settling rule's rate, so the device needs no second one): the day-long level of what the model
calls normal, that neither the confidence gate nor the settling count holds back. A window over the threshold
is an alarm already and does not move it, so a blatant burst (an attack of a few hours) is not mistaken for
drift. The watch reads the level's largest distance from the frozen reference offsets, in reference standard
deviations (:func:`level_drift`), and raises the adapter's ``baseline_drift`` flag (the same flag, audit record
and status field as ``max_drift``'s) when it passes ``watch_drift``. The flag falls again once every drift is
back under half of its limit (:data:`tinywarden.adaptation.REARM_FRACTION`), so one excursion is one flag.

*Its distance in the model's own metric.* One input at a time, a level that leaves a relation the model learned is
invisible while each input stays within its own spread: the valve's pressure, whose reference spread holds the
valve's whole travel, drifting 40 kPa off the position it follows is one reference sd. For a family whose score is
a distance from the training mean (PCA, Gaussian:
:attr:`~tinywarden.detectors.base.Detector.scores_displacement`) the watch also scores the level itself and raises
the same flag when that score passes ``watch_distance`` of the threshold
(:data:`~tinywarden.adaptation.WATCH_DISTANCE` 0.2, fixed on development seeds of the simulator; re-armed under
half of it). On the device the level is requantized to the model input in its place (the window's score has read
it) and scored by the same kernel, once a window.

*The threshold*, :data:`~tinywarden.adaptation.WATCH_DRIFT` 1.0, was fixed before it was measured on anything: a
day-long level that has moved by a full reference standard deviation (the reference spread of a window feature
already holds the whole daily rhythm) means the device's typical day is no longer the trained one. For
independent windows the day-long level's own spread is ``sqrt(r / (2 - r))`` = 0.089 sd at ``r = 2**-7``, so 1.0
is 11 of them; the rhythm, weekdays and slow benign trends (a memory leak between boots) eat into that margin,
which is why the benchmark states the watch's false flags on the training days themselves (:func:`watch_record`)
and on the held-out attack-free days.

*Legitimate changes.* A firmware update is a step: its windows are over the threshold, so the watch's level
does not move until the settling rule has taught the new level (``settle_s``) and the windows fall under it;
the adapter's ``max_drift`` flag has risen at that jump already, and stays up with the watch's (the level
stays far from the reference), which is what it is for: the operator approves the change by re-baselining
with a signed bundle fitted on the new normal, whose reference is the new one (a re-baseline resets the level
and the flag; with a bundle of the old model the watch flags the same change again once its level has moved,
about a day later). A seasonal warming is a ramp like a tampered thermometer: the watch flags it once, and
cannot tell the two apart by the level alone.

*On the device* the integer step keeps the level as ``wmu`` (:mod:`tinywarden.kernels.adapt_q`,
``TW_AD_WATCH``): one int32 per input, one step and one requantization per input per window, bit for bit.
It is on by default (``watch_drift`` :data:`~tinywarden.adaptation.WATCH_DRIFT`); ``watch_drift = 0`` turns it
off and compiles it out. On the adapting default camera module it adds 92 B of flash on Cortex-M4 and M4F and 98 B
on M0+ (7,310 / 7,328 / 8,032 B with it, module alone, when it was turned on; 7,308 / 7,332 / 7,934 B since the
crossings' block floating point and the leaner square root), 264 B of RAM (3,376 B) and 2,942 instructions a window
on M4 (``benchmarks/results/mcu_adaptation.md``). It was off by default while that module had only 12 B of its 8 KB
left on Cortex-M4.

>>> import numpy as np
>>> round(level_drift(np.array([1.0, 12.0]), np.array([0.0, 10.0]), np.array([2.0, 1.0])), 2)
2.0
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tinywarden.adapt import BaselineAdapter, level_drifts
from tinywarden.adaptation import Adaptation

if TYPE_CHECKING:
    from tinywarden.pipeline import Pipeline
    from tinywarden.telemetry.series import Series

__all__ = ["WatchRecord", "level_drift", "watch_record"]


def level_drift(level: np.ndarray, reference: np.ndarray, scale: np.ndarray) -> float:
    """The largest distance of a per-input ``level`` from the ``reference`` offsets, in ``scale`` units."""
    return float(np.max(level_drifts(level, reference, scale)))


@dataclass(frozen=True)
class WatchRecord:
    """The watch run over a series' windows on its own: where it would flag, and how far the level went."""

    flag_rows: np.ndarray  # end rows of the windows on which the watch raised its flag
    peak: float  # the largest level drift seen (reference standard deviations)
    peak_input: int  # the input it was seen on
    days: float  # the span of the windows, in days (for a rate)

    @property
    def flags_per_day(self) -> float:
        return len(self.flag_rows) / self.days if self.days > 0 else math.nan


def watch_record(pipeline: Pipeline, series: Series, adaptation: Adaptation | None = None) -> WatchRecord:
    """The watch of ``adaptation`` (default: the default policy, its watch at
    :data:`~tinywarden.adaptation.WATCH_DRIFT`) alone over every window of ``series``, from the reference: the
    baseline learns nothing, every window counts as under the threshold (the watch's worst case), no likelihood
    drift, so every flag is the watch's. On the training series this is the watch's false-flag rate on the data the
    reference was fitted on (the benchmark states it).

    >>> from tinywarden.detectors import EWMAZScore
    >>> from tinywarden.pipeline import Pipeline
    >>> from tinywarden.telemetry.series import Series
    >>> rng = np.random.default_rng(0)
    >>> s = Series(np.arange(6000.0) * 10, rng.normal(size=(6000, 1)), ("a",))
    >>> p = Pipeline(EWMAZScore(), window=32, stride=16).fit(s)
    >>> len(watch_record(p, s).flag_rows)
    0
    >>> moved = Series(s.timestamps, s.values + np.linspace(0.0, 3.0, 6000)[:, None], ("a",))
    >>> len(watch_record(p, moved).flag_rows)
    1
    """
    cfg = adaptation if adaptation is not None else Adaptation()
    p = copy.deepcopy(pipeline)
    adapter = BaselineAdapter(p, cfg)
    ends, raw = p.window_inputs(series)
    flags: list[int] = []
    for end, x in zip(ends, raw, strict=True):
        if adapter.observe(x, None, None, float(p.threshold_)).flagged:
            flags.append(int(end))
    span = (float(series.timestamps[ends[-1]] - series.timestamps[ends[0]]) / 86400.0) if len(ends) > 1 else 0.0
    return WatchRecord(np.array(flags, dtype=np.int64), adapter.peak_level_drift, adapter.peak_level_input, span)
