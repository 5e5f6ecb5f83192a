"""The policy's ``[adaptation]`` settings and what one window did to the baseline, as plain values.

Apart from :mod:`tinywarden.adapt` (the float adapter, which needs numpy) so that the response policy
and the lean agent (:mod:`tinywarden.native`) read them without importing numpy; :mod:`tinywarden.adapt`
re-exports every name here.

>>> Adaptation().rate_shift, Adaptation().watch_drift, AdaptStep(True, 0.1, 0.0, False).flagged
(8, 1.0, False)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REARM_FRACTION", "SCALE_FLOOR_FRACTION", "SETTLE_SPREAD", "WATCH_DISTANCE", "WATCH_DRIFT", "AdaptStep",
           "Adaptation", "shadow_shift"]

#: The adapted scale never falls below this fraction of the reference one (a quiet stretch must not make
#: the next small wiggle look huge).
SCALE_FLOOR_FRACTION = 0.5
#: A flag is raised again only after the drift has come back below this fraction of ``max_drift``.
REARM_FRACTION = 0.5
#: The slow-drift watch's limit, stated a priori (:mod:`tinywarden.level_watch`): the policy's default
#: (``Adaptation().watch_drift``); ``watch_drift = 0`` turns the watch off.
WATCH_DRIFT = 1.0
#: The slow-drift watch's second limit: the same day-long level scored by the detector itself (PCA and Gaussian,
#: whose score of the reference is 0), as a fraction of its threshold. A level that moves off the relations between
#: inputs the model learned (a sensor drifting away from the valve position it follows) passes it long before any one
#: input moves by WATCH_DRIFT. 0.2: about twice the largest level of the unchanged runs of the simulator's
#: development seeds (benchmarks/results/level_distance.md), fixed before the test seed was run.
WATCH_DISTANCE = 0.2
#: A sustained shift is adopted only while the shadow's spread around it is at most this many reference variances
#: in every input (twice the trained standard deviation): a legitimate change (a firmware update) moves the level and
#: keeps the device's trained variability around it, a long anomaly is rarely that steady. Stated a priori, not
#: fitted (``benchmarks/adapt_quality.py`` measures what it does on SMD and ASD).
SETTLE_SPREAD = 4.0


@dataclass(frozen=True)
class Adaptation:
    """How the deployed baseline keeps learning normal: the policy's ``[adaptation]`` table."""

    enabled: bool = True
    rate_shift: int = 8
    below_confidence: float = 0.2
    max_drift: float = 3.0
    #: Rule 1 also asks the raw score to be at or under the pipeline's threshold (when the caller gives the
    #: score): the likelihood learns every level, so after an anomaly its widened distribution would call
    #: the next moderately anomalous windows "clearly normal". False: confidence alone (the first version).
    below_threshold: bool = True
    #: Seconds of a sustained shift (windows over the threshold, a leaky count) after which the baseline
    #: re-centres on the new level (when it is steady: :data:`SETTLE_SPREAD`) and follows every window at
    #: ``2**-settle_rate_shift``, flagged; 0: never.
    settle_s: float = 43200.0
    settle_rate_shift: int = 7
    #: The slow path also learns the scale (spread) of its windows. False: it moves the offsets only and the
    #: scale stays the reference one, except while a sustained shift settles. On SMD a learned scale lost
    #: 0.21 ROC AUC (results/adapt_quality.md); True is the first version.
    adapt_scale: bool = False
    #: The slow-drift watch (:mod:`tinywarden.level_watch`): the drift flag also rises when the day-long level of
    #: the windows under the threshold is this many reference standard deviations from the reference. 0: off (and
    #: compiled out of the C module).
    watch_drift: float = WATCH_DRIFT
    #: ... and when that level, scored by the detector itself, is this fraction of the threshold (the families that
    #: score a displacement: PCA and Gaussian; :data:`WATCH_DISTANCE`). 0: off. Needs the watch (``watch_drift`` > 0).
    watch_distance: float = WATCH_DISTANCE


@dataclass(frozen=True)
class AdaptStep:
    """What one window did to the baseline: whether it taught it, the drifts after it, a new flag."""

    adapted: bool
    drift: float
    likelihood_drift: float
    flagged: bool  # the drift has just passed max_drift (once per excursion)


def shadow_shift(settle_windows: int, settle_rate_shift: int) -> int:
    """The sustained-shift rule's *shadow* learns from every window at ``2**-k``: ``k = floor(log2(settle_windows))
    - 2``, within ``[1, settle_rate_shift]``. Its memory (``2**k`` windows) is at most a quarter of ``settle_s``, so
    once a shift has lasted ``settle_s`` the level before it weighs under ``e**-4`` (2 %) in the shadow: the level
    and spread it offers are the shift's own, not a blend with what came before. The one definition the float
    adapter and the integer step (:mod:`tinywarden.kernels.adapt_q`, the C's ``TW_AD_SHADOW_SHIFT``) use.

    >>> shadow_shift(68, 7), shadow_shift(720, 7), shadow_shift(6, 7), shadow_shift(1, 7)
    (4, 7, 1, 1)
    """
    return max(1, min(int(settle_rate_shift), int(settle_windows).bit_length() - 3))
