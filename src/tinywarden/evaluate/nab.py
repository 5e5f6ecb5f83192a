"""The Numenta Anomaly Benchmark's scoring, as published (Lavin and Ahmad, ICMLA 2015; numenta/NAB v1.1).

The definitions follow NAB's own scorer (``nab/sweeper.py``, ``nab/optimizer.py``, ``nab/runner.py``,
``config/profiles.json``); this is the project's own code, checked against hand-computed cases in
``tests/test_nab_scorer.py``:

Probationary period
    The first ``min(floor(0.15 * rows), 0.15 * 5000)`` rows of each file (at most 750). They are never
    scored: neither a detection nor a window row there counts.
Per-row weight
    A row inside a labelled window ``[left, right]`` (``width = right - left + 1`` rows) is worth
    ``tp_weight * S(-(right - i + 1) / width) / S(-1)`` if detected, where ``S(x) = 2 / (1 + e^(5x)) - 1``
    is the scaled sigmoid (``S(x) = -1`` for ``x > 3``): the window's first row earns the full
    ``tp_weight``, its last row almost nothing. A row outside every window costs
    ``fp_weight * S(|i - prev_right| / (prev_width - 1))`` after a window (a detection just after the
    window costs little, one three widths later the full ``fp_weight``) and ``-fp_weight`` before any
    window.
Per-window score
    Only the best (that is, the earliest) detected row of a window counts; a window with no detected
    row costs ``-fn_weight``. Every detected row outside a window adds its (negative) weight.
Detection and threshold
    A row is detected when its anomaly score is ``>= threshold``. One threshold per profile is chosen
    for the whole corpus: the one maximising the corpus score over every distinct score value (NAB's
    sweep optimiser; ties go to the highest threshold, as NAB's stable sort does).
Normalisation
    ``100 * (raw - null) / (perfect - null)`` with ``perfect = tp_weight * (number of labelled windows)``
    and ``null`` the optimised raw score of NAB's null detector (a constant score for every row, which
    is the "detect nothing" score ``-fn_weight * windows`` on NAB's corpus).

A window bound must fall on exactly one row (NAB's labeler refuses a bound that no row or several rows carry;
a few NAB files repeat an hour at a daylight-saving change, away from every window).

>>> ts = np.arange(20).astype("datetime64[m]")
>>> f = NabFile("toy", ts, [(ts[10], ts[13])])
>>> scores = np.zeros(20); scores[10] = 1.0      # the first row of the only window
>>> result = score_corpus([f], [scores], PROFILES["standard"])
>>> round(result.raw_score, 6), result.threshold
(1.0, 1.0)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinywarden.errors import DataError

#: NAB's probationary fraction and the row count it is capped at (``0.15 * 5000``).
PROBATIONARY_FRACTION = 0.15
PROBATIONARY_CAP_ROWS = 5000


@dataclass(frozen=True)
class Profile:
    """One of NAB's application profiles (``config/profiles.json``'s cost matrix)."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


#: The three published profiles, in NAB's order.
PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", 1.0, 0.11, 1.0),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
}


def scaled_sigmoid(position: float | np.ndarray) -> np.ndarray:
    """NAB's ``2 * sigmoid(-5 x) - 1``, and ``-1`` beyond three window widths (``x > 3``)."""
    x = np.asarray(position, dtype=np.float64)
    return np.where(x > 3.0, -1.0, 2.0 / (1.0 + np.exp(np.minimum(5.0 * x, 700.0))) - 1.0)


def probationary_length(rows: int) -> float:
    """NAB's probationary period of a ``rows``-row file: ``min(floor(0.15 rows), 750)`` rows."""
    return min(math.floor(PROBATIONARY_FRACTION * rows), PROBATIONARY_FRACTION * PROBATIONARY_CAP_ROWS)


@dataclass(frozen=True)
class NabFile:
    """One NAB data file's timestamps and its labelled windows (``(start, end)`` timestamps)."""

    name: str
    timestamps: np.ndarray  # datetime64, in file order
    windows: Sequence[tuple[np.datetime64, np.datetime64]]

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def probation(self) -> int:
        """Index of the first scored row."""
        return int(math.ceil(probationary_length(len(self))))


def _seconds(times: Sequence[np.datetime64] | np.ndarray) -> np.ndarray:
    """Timestamps as int64 seconds, so rows and window bounds compare exactly."""
    return np.asarray(times).astype("datetime64[s]").astype(np.int64)


@dataclass(frozen=True)
class _Rows:
    """Per-row facts of one file that do not depend on the profile: NAB's sweep before weighting."""

    window: np.ndarray  # int64 corpus-wide window id of the row, -1 outside windows
    tp_part: np.ndarray  # S(position) / S(-1) for window rows (0 elsewhere)
    fp_part: np.ndarray  # S(distance past the previous window) or -1 (0 for window rows)
    scored: np.ndarray  # bool, False in the probationary period


def _sweep_rows(f: NabFile, first_window_id: int) -> _Rows:
    """Walk ``f``'s rows like NAB's ``Sweeper.calcSweepScore`` (window entry and exit by timestamp)."""
    ts = _seconds(f.timestamps).tolist()
    n = len(ts)
    first_index: dict[int, int] = {}
    repeated: set[int] = set()
    for i, t in enumerate(ts):
        if first_index.setdefault(t, i) != i:
            repeated.add(t)
    window = np.full(n, -1, dtype=np.int64)
    position = np.zeros(n)  # window rows: relative position in [-1, 0); others: distance past window
    past = np.full(n, np.inf)
    pending = [(int(_seconds([a])[0]), int(_seconds([b])[0])) for a, b in f.windows]
    for (a, b), limits in zip(pending, f.windows, strict=True):
        if a not in first_index or b not in first_index:
            raise DataError(f"{f.name}: window {limits[0]} .. {limits[1]} does not start and end on rows of the file")
        if a in repeated or b in repeated:  # NAB's labeler requires each bound on exactly one row
            raise DataError(f"{f.name}: window {limits[0]} .. {limits[1]} starts or ends on a time that more than "
                            "one row carries (NAB's labeler refuses such a window)")
    wid = first_window_id - 1
    cur: tuple[int, float] | None = None  # (right index, width)
    prev: tuple[int, float] | None = None
    end_time = None
    for i, t in enumerate(ts):
        if pending and t == pending[0][0]:
            a, b = pending.pop(0)
            right = first_index[b]
            cur = (right, float(right - first_index[a] + 1))
            wid += 1
            end_time = b
        if cur is not None:
            window[i] = wid
            position[i] = -(cur[0] - i + 1) / cur[1]
            if t == end_time:
                prev, cur = cur, None
        elif prev is not None:
            past[i] = abs(prev[0] - i) / (prev[1] - 1.0) if prev[1] > 1 else math.inf
    inside = window >= 0
    max_tp = float(scaled_sigmoid(-1.0))
    tp_part = np.where(inside, scaled_sigmoid(position) / max_tp, 0.0)
    fp_part = np.where(inside, 0.0, np.where(np.isfinite(past), scaled_sigmoid(np.where(np.isfinite(past), past, 0)),
                                             -1.0))
    scored = np.arange(n) >= probationary_length(n)
    return _Rows(window, tp_part, fp_part, scored)


@dataclass(frozen=True)
class CorpusScore:
    """The optimised NAB result of one detector under one profile."""

    profile: str
    threshold: float
    raw_score: float
    null_score: float
    perfect_score: float
    normalized: float  # 0 = null detector, 100 = perfect detector
    tp: int  # detected windows
    fn: int  # missed windows (scored ones)
    fp: int  # detected rows outside windows
    per_file: dict[str, float]


#: _sweep_rows results by file content: a benchmark scores one corpus for many detectors, and the sweep walks
#: every row in Python. Bounded; keyed by name, window ids, the windows and a digest of the timestamps.
_ROWS_CACHE: dict[tuple[object, ...], _Rows] = {}
_ROWS_CACHE_SIZE = 512


def _cached_sweep_rows(f: NabFile, first_window_id: int) -> _Rows:
    key = (f.name, first_window_id, len(f), hashlib.sha1(_seconds(f.timestamps).tobytes()).hexdigest(),
           tuple((str(a), str(b)) for a, b in f.windows))
    rows = _ROWS_CACHE.get(key)
    if rows is None:
        rows = _sweep_rows(f, first_window_id)
        if len(_ROWS_CACHE) >= _ROWS_CACHE_SIZE:
            _ROWS_CACHE.clear()
        _ROWS_CACHE[key] = rows
    return rows


def _corpus_rows(files: Sequence[NabFile]) -> list[_Rows]:
    out, next_id = [], 0
    for f in files:
        rows = _cached_sweep_rows(f, next_id)
        out.append(rows)
        next_id += len(f.windows)
    return out


def _optimise(rows: Sequence[_Rows], scores: Sequence[np.ndarray], profile: Profile) -> tuple[float, float]:
    """(threshold, raw corpus score) maximising the score over every distinct anomaly score value."""
    win = np.concatenate([r.window[r.scored] for r in rows])
    s = np.concatenate([np.asarray(x, dtype=np.float64)[r.scored] for r, x in zip(rows, scores, strict=True)])
    weight = np.concatenate([np.where(r.window[r.scored] >= 0, profile.tp_weight * r.tp_part[r.scored],
                                      profile.fp_weight * r.fp_part[r.scored]) for r in rows])
    n_windows = len(np.unique(win[win >= 0]))
    base = -profile.fn_weight * n_windows  # nothing detected: every scored window is missed
    if len(s) == 0:
        return math.inf, base
    order = np.argsort(-s, kind="stable")
    s, win, weight = s[order], win[order], weight[order]
    # Gain of each row when the threshold falls to its score. Outside windows: its weight. Inside a window:
    # how much it raises that window's best detected weight so far (from -fn_weight).
    gain = np.where(win < 0, weight, 0.0)
    inside = np.flatnonzero(win >= 0)
    if len(inside):
        by_window = inside[np.argsort(win[inside], kind="stable")]  # window rows, each window in sweep order
        w_ids = win[by_window]
        # Running max within each window: offset each window into its own band so one accumulate serves all.
        band = 4.0 * (w_ids - w_ids.min()) * max(1.0, profile.tp_weight + profile.fn_weight)
        running = np.maximum.accumulate(np.maximum(weight[by_window], -profile.fn_weight) + band) - band
        starts = np.r_[True, w_ids[1:] != w_ids[:-1]]
        before = np.where(starts, -profile.fn_weight, np.r_[-profile.fn_weight, running[:-1]])
        gain[by_window] = running - before
    total = base + np.cumsum(gain)
    last_of_value = np.r_[s[1:] != s[:-1], True]  # a threshold detects every row scoring >= it
    candidates = np.r_[base, total[last_of_value]]
    thresholds = np.r_[math.inf, s[last_of_value]]
    best = int(np.argmax(candidates))  # first maximum = highest threshold among ties, as NAB
    return float(thresholds[best]), float(candidates[best])


def _score_at(rows: _Rows, scores: np.ndarray, threshold: float, profile: Profile) -> tuple[float, int, int, int]:
    """(raw score, tp windows, fn windows, fp rows) of one file at ``threshold``."""
    keep = rows.scored
    detected = (np.asarray(scores, dtype=np.float64) >= threshold) & keep
    out = float(np.sum(profile.fp_weight * rows.fp_part[detected & (rows.window < 0)]))
    fp = int(np.sum(detected & (rows.window < 0)))
    tp = fn = 0
    for w in np.unique(rows.window[keep & (rows.window >= 0)]):
        hit = detected & (rows.window == w)
        if hit.any():
            out += profile.tp_weight * float(rows.tp_part[hit].max())
            tp += 1
        else:
            out -= profile.fn_weight
            fn += 1
    return out, tp, fn, fp


def score_corpus(files: Sequence[NabFile], scores: Sequence[np.ndarray], profile: Profile,
                 threshold: float | None = None) -> CorpusScore:
    """Optimise one threshold over all ``files`` (unless given) and score them under ``profile``.

    ``scores[i]`` holds one anomaly score per row of ``files[i]`` (higher = more anomalous; only their
    order matters, NAB's [0, 1] range is not required). Probationary rows may hold anything finite.
    """
    if len(files) != len(scores):
        raise DataError(f"{len(files)} files but {len(scores)} score arrays")
    for f, x in zip(files, scores, strict=True):
        if np.shape(x) != (len(f),):
            raise DataError(f"{f.name}: {np.shape(x)} scores for {len(f)} rows")
        if not np.isfinite(np.asarray(x, dtype=np.float64)).all():
            raise DataError(f"{f.name}: anomaly scores hold NaN or inf")
    rows = _corpus_rows(files)
    t, raw = _optimise(rows, scores, profile) if threshold is None else (threshold, math.nan)
    per_file, tp, fn, fp, total = {}, 0, 0, 0, 0.0
    for f, r, x in zip(files, rows, scores, strict=True):
        s, a, b, c = _score_at(r, x, t, profile)
        per_file[f.name] = s
        total, tp, fn, fp = total + s, tp + a, fn + b, fp + c
    null = _optimise(rows, [np.full(len(f), 0.5) for f in files], profile)[1]
    perfect = profile.tp_weight * sum(len(f.windows) for f in files)
    norm = 100.0 * (total - null) / (perfect - null) if perfect != null else math.nan
    return CorpusScore(profile.name, t, total, null, perfect, norm, tp, fn, fp, per_file)


def perfect_scores(f: NabFile) -> np.ndarray:
    """NAB's perfect detector on ``f``: 1 on the first row of every window, 0 elsewhere."""
    out = np.zeros(len(f))
    for a, _ in f.windows:
        out[int(np.flatnonzero(_seconds(f.timestamps) == _seconds([a])[0])[0])] = 1.0
    return out


def load_windows(labels_file: Path) -> dict[str, list[tuple[np.datetime64, np.datetime64]]]:
    """``combined_windows.json``: ``{"<dir>/<file>.csv": [(start, end), ...]}`` as datetime64 pairs."""
    try:
        raw = json.loads(Path(labels_file).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{labels_file}: cannot read NAB windows: {exc}") from exc
    return {k: [(np.datetime64(a.replace(" ", "T")), np.datetime64(b.replace(" ", "T"))) for a, b in v]
            for k, v in raw.items()}
