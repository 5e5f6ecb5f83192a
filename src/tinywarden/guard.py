"""The fail-safe guard's rule: learned bounds judged on one raw window, with numpy alone.

The guard (:class:`~tinywarden.detectors.bounds.BoundsDetector`, fitted with every pipeline) learns per
channel a range ``[lo, hi]`` and a step limit ``rate``. Its arithmetic lives here, once, so that the
detector and the light runtime (:mod:`tinywarden.runtime`, which never imports the detector families)
judge a window with the same numbers: the score of a window is the maximum over its samples and
channels of the distance outside the range (in range widths) and of the step beyond ``rate`` (in
``rate``\\ s); above 0 is a violation.

>>> lo, hi, rate = np.zeros(2), np.ones(2), np.full(2, 0.5)
>>> win = np.array([[0.2, 0.5], [0.3, 0.5], [0.4, 3.0]])
>>> v = judge_bounds(win, ("cpu", "net"), lo, hi, rate)
>>> v.violation, v.reason
(True, 'net outside its learned range; net changing faster than learned (bounds score 4)')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["GuardVerdict", "bounds_scores", "judge_bounds"]


@dataclass(frozen=True)
class GuardVerdict:
    """The fail-safe bounds guard's judgement of one raw window, for the response engine.

    ``violation`` is ``None`` when the guard cannot judge (no guard in the model file, NaN/inf samples,
    a window of the wrong shape); ``reason`` then says why, and otherwise names what broke a bound.
    ``score`` is the guard's own score (above 0 exactly on a violation; NaN when it cannot judge).
    """

    violation: bool | None
    score: float
    reason: str


def bounds_scores(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """The bounds score of each window of ``x`` (``n x window x channels``); above 0 breaks a bound."""
    width = hi - lo
    value = np.maximum(x.max(axis=1) - hi, lo - x.min(axis=1)) / width
    if x.shape[1] > 1:
        value = np.maximum(value, (np.abs(np.diff(x, axis=1)).max(axis=1) - rate) / rate)
    return value.max(axis=1)


def judge_bounds(window: np.ndarray, channels: Sequence[str], lo: np.ndarray, hi: np.ndarray,
                 rate: np.ndarray, shape: tuple[int, int] | None = None) -> GuardVerdict:
    """The verdict on one raw ``(window, channels)`` window, naming the channels that broke a bound.

    ``shape`` is the window shape the bounds were learned for; another shape cannot be judged.
    """
    x = np.asarray(window, dtype=np.float64)
    want = tuple(shape) if shape is not None else (x.shape[0], len(channels))
    if x.shape != want:
        return GuardVerdict(None, float("nan"), f"raw window has shape {x.shape}, the guard needs {want}")
    finite = np.isfinite(x).all(axis=0)
    if not finite.all():
        bad = ", ".join(c for c, ok in zip(channels, finite, strict=True) if not ok)
        return GuardVerdict(None, float("nan"), f"raw window holds NaN/inf in {bad}")
    score = float(bounds_scores(x[None], lo, hi, rate)[0])
    if score <= 0:
        return GuardVerdict(False, score, "every channel within the bounds learned from normal data")
    out_of_range = (x.min(axis=0) < lo) | (x.max(axis=0) > hi)
    too_fast = np.abs(np.diff(x, axis=0)).max(axis=0) > rate if len(x) > 1 else np.zeros(len(channels), bool)
    parts = [f"{c} outside its learned range" for c, o in zip(channels, out_of_range, strict=True) if o]
    parts += [f"{c} changing faster than learned" for c, f in zip(channels, too_fast, strict=True) if f]
    return GuardVerdict(True, score, f"{'; '.join(parts) or 'a bound broken'} (bounds score {score:.3g})")
