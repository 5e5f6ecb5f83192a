"""The resonance view (``benchmarks/nab.py --art``; research, not in the product): an online adaptive-resonance
detector with a longer context than the row view, in the spirit of ARTime (Hampton; NAB's scoreboard leader),
written here from its published description, not from its code.

What it does, on one file's values in file order (:func:`art_view`):

1. *Compress*: consecutive blocks of ``step`` rows become one point, ``step`` chosen so that the probationary
   period holds :data:`WINDOWS_PER_PROBATION` windows of :data:`POINTS` points (ARTime's defaults: 13 windows
   of 8 points; 750 probationary rows give a step of 7, a window of 56 rows). A point is the block's mean, or
   the block's extreme (its max or min, whichever is further from a running average of the points) when that
   extreme is more than :data:`SPIKE_FRACTION` of the file's value range from the mean, so a short spike
   survives the averaging.
2. *Normalise*: by the file's value range (the one thing beyond its own past values NAB's runner hands every
   detector), quantised to :data:`LEVELS` levels; a level within :data:`SNAP` of the running median level is
   set to it (noise around the usual level becomes a flat line).
3. *Features* of the last :data:`POINTS` points: the levels themselves (where the series is) and the shape of
   the window (its levels min-max scaled to [0, 1], their Haar wavelet coefficients, min-max scaled to [0, 1];
   a flat window has an all-zero shape): ``2 * POINTS`` numbers in [0, 1].
4. *Categories* (fuzzy ART, Carpenter, Grossberg and Rosen 1991, complement coding, fast learning): each
   category is a box in feature space; a window's match with a category is ``|I ^ w| / |I|`` (1 inside a small
   box, lower for a large box or a window outside it); the categories are tried in order of the choice
   function ``|I ^ w| / (ALPHA + |w|)`` and the first whose match reaches the vigilance ``rho`` learns the
   window (its box grows to hold it). A window no category resonates with becomes a new category.
5. *Vigilance* from the probationary period, never from labels: a fuzzy ART at :data:`INITIAL_RHO` (ARTime's
   initial vigilance) learns the probationary windows in order, and ``rho`` is the mean best match of the
   second half of them (ARTime's rule: how well normal windows resonate once the first half is learnt).
6. *Anomaly*: after the probationary period, a new category is reported once, with the confidence
   ``0.5 + 0.5 * min(1, (rho - match) / (1 - rho))`` (how far below the vigilance, in units of the vigilance's
   tolerance); it is not reported while the detector is masked: after any new category until
   :data:`MASK_POINTS` points in a row have created none (a burst of novelty is one event), unless it matches
   worse than the last reported one (something newer still). Every other row reports 0. It learns only what it
   has seen: a repeated pattern finds its category and stays quiet.

That is the first setting (``art_view``'s defaults), every parameter ARTime's published default or a stated
simplification of it, fixed before the first score. Three options, each added after reading the NAB scores of the
settings before it (so the rows that use them are tuned on NAB; ``benchmarks/nab.py``'s ``ART_ROWS`` lists the
settings in the order they were scored and ``ART_SETTINGS`` counts them):

- ``adaptive``: dual vigilance that follows the file's own matches (:class:`_Vigilance`, ARTime's adaptation): a
  window below the upper vigilance makes a new category, only one below the lower vigilance is novel;
- ``weighted``: ARTime's match, the share of a category's weight the window covers, cubed, times that share on
  the newest level, squared (:class:`FuzzyArt`), in place of the textbook ``|I ^ w| / |I|``;
- ``strict``: ARTime's masking and confidence: while masked, only a match below 0.9 (0.7 once the last report is
  :data:`MASK_POINTS` points old) of the last report's is reported; the confidence adds the shortfalls below both
  vigilances and the newest level's mismatch; the vigilances are also updated :data:`MASK_POINTS` points after a
  report;
- ``faithful``: closer to ARTime's description in four details: the step rounded down from the even part of the
  probationary period, a block's extreme kept when it is 10% of the block's mean (not of the range) from it, the
  vigilance fitted on the probationary windows presented least typical first (:func:`typical_last`), and the lower
  vigilance dropping by its minimum only until two probationary periods of points have passed;
- ``closer``: three more: every category that resonates learns the window (not only the chosen one), the first
  vigilance update at the first scored point, and a report's match in the vigilance's floor replaced by the
  lowest match of the points masked after it.

Labels are never read: the view takes the values, the probationary length and the file's value range.
"""

from __future__ import annotations

import math

import numpy as np

#: Points per feature window and windows the probationary period holds (ARTime's defaults).
POINTS = 8
WINDOWS_PER_PROBATION = 13
#: A block's extreme replaces its mean when it is this far from the mean, in units of the file's value range
#: (ARTime's 10%, taken of the range rather than of the mean, so it does not depend on the series' offset).
SPIKE_FRACTION = 0.1
#: Quantisation levels of the normalised points and the snap to the running median level (ARTime's 80, 0.075).
LEVELS = 80
SNAP = 0.075
#: Fuzzy ART: the choice function's tie-breaker (the textbook small alpha) and the vigilance the probationary
#: fit starts from (ARTime's initial rho).
ALPHA = 1e-3
INITIAL_RHO = 0.8
#: Points without a new category that end a masking period (ARTime's 1.5 windows).
MASK_POINTS = 12


def compress(values: np.ndarray, step: int, span: float, relative: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(points, last row of each point)``: each complete block of ``step`` rows as its mean, or as its extreme
    when that is more than :data:`SPIKE_FRACTION` of ``span`` from the mean (the extreme further from a running
    average of the points, each point averaged in with weight 1/2); ``relative``: of the block's mean instead
    (ARTime's rule).

    >>> compress(np.array([1.0, 1.0, 1.0, 9.0, 2.0, 2.0]), 2, 10.0)[0].tolist()
    [1.0, 9.0, 2.0]
    """
    v = np.asarray(values, dtype=np.float64)
    nb = len(v) // step
    blocks = v[: nb * step].reshape(nb, step)
    mean, hi, lo = blocks.mean(axis=1), blocks.max(axis=1), blocks.min(axis=1)
    out = mean.copy()
    avg = float(mean[0]) if nb else 0.0
    for b in range(nb):
        avg = (avg + mean[b]) / 2.0
        extreme = lo[b] if abs(lo[b] - avg) > abs(hi[b] - avg) else hi[b]
        if abs(extreme - mean[b]) > SPIKE_FRACTION * (abs(mean[b]) if relative else span):
            out[b] = extreme
    return out, (np.arange(nb) + 1) * step - 1


def snapped_levels(points: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """The points scaled by the file's range, quantised to :data:`LEVELS` levels and, within :data:`SNAP` of the
    running median level (over every point so far, this one included), set to it; in [0, 1].

    >>> snapped_levels(np.array([0.0, 0.5, 0.52, 0.5, 1.0]), 0.0, 1.0).tolist()
    [0.0, 0.5, 0.5, 0.5, 1.0]
    """
    span = vmax - vmin
    x = (np.asarray(points, dtype=np.float64) - vmin) / span if span > 0 else np.zeros(len(points))
    q = np.clip(np.rint(x * LEVELS), 0, LEVELS).astype(np.int64)
    counts = np.zeros(LEVELS + 1, dtype=np.int64)
    out = np.empty(len(q))
    for i, level in enumerate(q):
        counts[level] += 1
        median = int(np.searchsorted(np.cumsum(counts), (i + 2) // 2))  # the lower median level so far
        out[i] = median if abs(level - median) < SNAP * LEVELS else level
    return out / LEVELS


def haar(x: np.ndarray) -> np.ndarray:
    """The full Haar wavelet transform of a power-of-two-long vector (orthonormal: averages and details of pairs,
    then of the averages, coarsest first).

    >>> haar(np.array([1.0, 1.0, 1.0, 1.0])).round(6).tolist()
    [2.0, 0.0, 0.0, 0.0]
    """
    a = np.asarray(x, dtype=np.float64)
    details: list[np.ndarray] = []
    while len(a) > 1:
        details.insert(0, (a[0::2] - a[1::2]) / math.sqrt(2.0))
        a = (a[0::2] + a[1::2]) / math.sqrt(2.0)
    return np.concatenate([a, *details])


def _unit(x: np.ndarray) -> np.ndarray:
    """``x`` min-max scaled to [0, 1]; all zeros when it is constant."""
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros(len(x))


def features(levels: np.ndarray) -> np.ndarray:
    """``(windows, 2 * POINTS)``: for each run of :data:`POINTS` levels ending at a point (from the
    ``POINTS``-th on), the shape (the Haar coefficients of the min-max scaled window, min-max scaled; zero for
    a flat window) and the levels."""
    n = len(levels) - POINTS + 1
    out = np.zeros((max(n, 0), 2 * POINTS))
    for i in range(max(n, 0)):
        w = levels[i : i + POINTS]
        shape = _unit(w)
        out[i] = np.concatenate([_unit(haar(shape)) if shape.any() else shape, w])
    return out


class FuzzyArt:
    """Unsupervised fuzzy ART with complement coding and fast learning (weights only shrink towards the
    inputs: each category is the smallest box holding every window it has learnt)."""

    def __init__(self, dim: int, rho: float, weighted: bool = False, learn_all: bool = False) -> None:
        self.rho = rho
        self.learn_all = learn_all  # every resonating category learns x (ARTime's), not only the chosen one
        self.dim = dim
        self.weighted = weighted
        self.w = np.zeros((0, 2 * dim))
        self.energy = 0.0  # the newest level's share of the best-matching category (weighted match only)

    def present(self, x: np.ndarray, learn: bool = True) -> tuple[float, bool]:
        """``(best match, whether x made a new category)``: the categories in order of choice, the first whose
        match reaches the vigilance learns ``x``; none does: a new category (``learn`` False: nothing changes)."""
        i = np.concatenate([x, 1.0 - x])
        if len(self.w) == 0:
            if learn:
                self.w = i[None, :].copy()
            return 0.0, True
        both = np.minimum(self.w, i)
        inter = both.sum(axis=1)
        if self.weighted:  # ARTime's: the share of the box's weight covered, cubed, times that of the newest level
            last = (both[:, self.dim - 1] + both[:, -1]) / np.maximum(self.w[:, self.dim - 1] + self.w[:, -1], 1e-3)
            match = (inter / np.maximum(self.w.sum(axis=1), 1e-3)) ** 3 * last**2
            self.energy = float(last[int(np.argmax(match))])
        else:
            match = inter / i.sum()
        best = float(match.max())
        ok = match >= self.rho
        if ok.any():  # the first category in order of choice that resonates learns x
            j = int(np.argmax(np.where(ok, inter / (ALPHA + self.w.sum(axis=1)), -np.inf)))
            if learn and self.learn_all:
                self.w[ok] = both[ok]
            elif learn:
                self.w[j] = both[j]
            return best, False
        if learn:
            self.w = np.vstack([self.w, i])
        return best, True


def step_for(probation: int, floor: bool = False) -> int:
    """Rows per point: the probationary period holds :data:`WINDOWS_PER_PROBATION` windows of :data:`POINTS`
    (rounded; ``floor``: ARTime's, the even part of the probationary period divided down)."""
    if floor:
        return max(1, (probation - probation % 2) // (POINTS * WINDOWS_PER_PROBATION))
    return max(1, round(probation / (POINTS * WINDOWS_PER_PROBATION)))


def typical_last(feats: np.ndarray) -> np.ndarray:
    """The order of ``feats`` by their summed cosine similarity to all the others, least typical first (ARTime's
    order for fitting the vigilance: the most typical windows are the second half)."""
    norm = np.linalg.norm(feats, axis=1)
    unit = feats / np.where(norm > 0, norm, 1.0)[:, None]
    sim = unit @ unit.T
    zero = norm == 0  # ARTime's convention for an all-zero window: 1 - the other's norm
    sim[zero, :] = 1.0 - norm[None, :]
    sim[:, zero] = 1.0 - norm[:, None]
    np.fill_diagonal(sim, 1.0)
    return np.argsort(sim.sum(axis=0), kind="stable")


def art_view(values: np.ndarray, probation: int, vmin: float | None = None, vmax: float | None = None,
             adaptive: bool = False, weighted: bool = False, strict: bool = False, faithful: bool = False,
             closer: bool = False) -> np.ndarray:
    """Per-row confidences of the resonance view: a new category after the probationary period, reported once
    (see the module's docstring) at the last row of its point, 0 on every other row. ``vmin``/``vmax``: the file's
    value range as NAB's runner gives it (default: the values' own, which is what the runner computes).
    ``adaptive``: dual vigilance (:func:`_adapt`): a window below the upper vigilance makes a new category, only one
    below the lower vigilance is novel, and both vigilances follow the file's own matches."""
    return _run(values, probation, vmin, vmax, adaptive, weighted, strict, faithful, closer)[0]


def _run(values: np.ndarray, probation: int, vmin: float | None, vmax: float | None, adaptive: bool,
         weighted: bool = False, strict: bool = False, faithful: bool = False, closer: bool = False
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(art_view's rows, the row each window completes at, each window's mismatch 1 - best match before it is
    learnt, the number of windows complete before the first scored row)``."""
    v = np.asarray(values, dtype=np.float64)
    lo = float(v.min()) if vmin is None else vmin
    hi = float(v.max()) if vmax is None else vmax
    out = np.zeros(len(v))
    step = step_for(probation, floor=faithful)
    points, last_row = compress(v, step, hi - lo, relative=faithful)
    feats = features(snapped_levels(points, lo, hi))
    ends = last_row[POINTS - 1 :]  # the row at which each feature window is complete
    train = int(np.searchsorted(ends, probation))  # windows complete before the first scored row
    if train < 4 or len(feats) == 0:
        return out, ends, np.zeros(len(ends)), train
    # Vigilance: ARTime's rule (learn the probationary windows at INITIAL_RHO, rho = mean best match of the second
    # half of them), then the detector relearns them from scratch at that rho.
    probe = FuzzyArt(POINTS * 2, INITIAL_RHO, weighted)
    order = typical_last(feats[:train]) if faithful else np.arange(train)
    best = np.array([probe.present(f)[0] for f in feats[:train][order]])
    rho = float(np.clip(best[train // 2 :].mean(), 0.0, 0.999))
    art = FuzzyArt(POINTS * 2, rho, weighted, learn_all=closer)
    matches = [art.present(f)[0] for f in feats[:train]]
    mismatch = np.zeros(len(feats))
    mismatch[:train] = 1.0 - np.asarray(matches)
    state = _Vigilance(rho, rho, matches, train)
    state.late_drop = faithful
    if closer:  # ARTime's first vigilance update comes at the first scored point
        state.last_update = train - state.period // 2
    quiet, last_reported = 0, -math.inf  # points since the last new category; the last report's match
    last_at = -(10**9)  # the point of the last report
    masked = True  # the probationary period ends masked, as a burst would
    for k in range(train, len(feats)):
        match, new = art.present(feats[k])
        mismatch[k] = 1.0 - match
        novel = new and match < state.lower
        if closer and state.reported and 0 < k - last_at < MASK_POINTS:  # the report's event: its lowest match
            state.reported[-1] = min(state.reported[-1], match)
        if novel:
            if strict:  # ARTime's: while masked, only a match well below the last report's (x0.9 soon after it)
                worse = match < last_reported * (0.9 if k - last_at <= MASK_POINTS else 0.7)
            else:
                worse = match < last_reported
            if not masked or worse:
                if strict:  # ARTime's confidence: below both vigilances, and the newest level's mismatch
                    a = min(match, 0.999)
                    c = (0.35 * (state.upper - a) + 0.65 * (state.lower - a)) / (1.0 - a) + 1.5 * (1.0 - art.energy)
                    out[ends[k]] = 0.5 + 0.5 * min(1.0, c)
                else:
                    out[ends[k]] = 0.5 + 0.5 * min(1.0, (state.lower - match) / max(1.0 - state.lower, 1e-9))
                last_reported, last_at = match, k
                state.reported.append(match)
            masked, quiet = True, 0
        else:
            quiet += 1
            if quiet >= MASK_POINTS:
                masked = False
                if not strict:
                    last_reported = -math.inf
        if adaptive and strict and k - last_at == MASK_POINTS:  # ARTime's update after a report's mask
            state.matches.append(match)
            state.update(k)
            art.rho = state.upper
            masked, quiet = True, 0
        elif adaptive and state.observe(match, k):
            art.rho = state.upper
            masked, quiet = True, 0  # ARTime masks after each change of vigilance
    return out, ends, mismatch, train


def art_likelihood(values: np.ndarray, probation: int, short: int = 10, rate_shift: int = 13) -> np.ndarray:
    """Per-row confidences of the resonance view's mismatch (1 - the best match of each window before it is learnt,
    the fixed-vigilance ART) through the likelihood with HTM's settings (fitted on the second half of the
    probationary windows' mismatches, no value record), at the row each window completes, NaN elsewhere."""
    from tinywarden.likelihood import AnomalyLikelihood

    out = np.full(len(values), np.nan)
    _, ends, mismatch, train = _run(values, probation, None, None, False)
    if train < 4:
        return out
    lik = AnomalyLikelihood(short=short, rate_shift=rate_shift, value_record=None)
    out[ends[train:]] = lik.fit(mismatch[train // 2 : train]).transform(mismatch[train:])
    return out


class _Vigilance:
    """Dual vigilance that follows the file's own matches (ARTime's adaptation, as described, simplified): every
    half probationary period of points, the upper vigilance (learn into a category at or above it) becomes the
    mean of every best match so far (at most :data:`UPPER_CAP`); the lower one (below it a window is novel) moves
    :data:`RAISE` of the way up to the lowest match of that half period when every match reached it, and otherwise
    down by half the mean shortfall (each capped at :data:`SHORTFALL_CAP`, only those beyond
    :data:`SHORTFALL_MIN`, at least :data:`MIN_DROP`) of the matches of the last probationary period of points
    below the upper vigilance, never below the mean match of the windows reported so far, never above the upper."""

    def __init__(self, lower: float, upper: float, matches: list[float], period: int) -> None:
        self.lower, self.upper = lower, upper
        self.matches = list(matches)
        self.period = max(2, period)
        self.last_update = period
        self.reported: list[float] = []
        self.late_drop = False  # ARTime's: the lower vigilance drops by its minimum until two periods have passed

    def observe(self, match: float, k: int) -> bool:
        """Record the best match of point ``k``; True when the vigilances were updated."""
        self.matches.append(match)
        if k - self.last_update < self.period // 2:
            return False
        return self.update(k)

    def update(self, k: int) -> bool:
        """Update both vigilances from the matches so far (at point ``k``); True."""
        self.last_update = k
        m = np.asarray(self.matches)
        self.upper = min(UPPER_CAP, float(m.mean()))
        recent = m[-(self.period // 2) :]
        if float(recent.min()) >= self.lower:
            lower = self.lower + RAISE * (float(recent.min()) - self.lower)
        else:
            short = self.upper - m[-self.period :]
            short = np.minimum(short[short > SHORTFALL_MIN], SHORTFALL_CAP)
            if self.late_drop and k <= 2 * self.period:
                short = short[:0]
            lower = self.lower - max(MIN_DROP, float(short.mean()) if len(short) else 0.0) / 2.0
            if self.reported:
                lower = max(lower, float(np.mean(self.reported)))
        self.lower = min(self.upper, lower)
        return True


#: The adaptive vigilance's constants (ARTime's published defaults: 0.97, 0.19, 0.37, 0.05, 0.01).
UPPER_CAP = 0.97
RAISE = 0.19
SHORTFALL_CAP = 0.37
SHORTFALL_MIN = 0.05
MIN_DROP = 0.01
