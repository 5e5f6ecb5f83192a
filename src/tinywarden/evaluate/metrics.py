"""Per-window and per-incident metrics of a scored, thresholded series against its labels.

What the numbers mean (every report, JSON file and README table uses these definitions):

Windows
    A window ending at row ``e`` covers rows ``max(0, e - window + 1) .. e``; its *label* is 1 when any
    of those rows is labelled 1. Windows ending before ``skip_rows`` (training part, NAB probationary
    period) are ignored everywhere.
``roc_auc`` / ``pr_auc``
    :func:`sklearn.metrics.roc_auc_score` and :func:`sklearn.metrics.average_precision_score` of the
    per-window scores against the window labels; ``nan`` (JSON ``null``) when only one class is present.
    Computed by :func:`ranking_metrics` from one sort of the scores (equal to sklearn's to the last bit, in
    a fraction of its memory: a long recording has hundreds of thousands of windows).
``precision`` / ``recall`` / ``f1``
    Of the window ``alarms`` (after k-of-n persistence, what the device acts on) against the window
    labels. ``precision`` is ``nan`` when nothing alarmed, ``recall`` when no window is anomalous, ``f1``
    (``2 tp / (2 tp + fp + fn)``) when neither alarms nor anomalous windows exist.
``best_f1``
    The highest F1 any threshold on the scores reaches (from the precision-recall curve of
    :func:`sklearn.metrics.precision_recall_curve`), ignoring persistence: an upper bound for ``f1``
    at this score function.
``fpr`` / ``raw_fpr``
    Fraction of label-0 windows that carry an alarm / a raw flag (score above threshold, before
    persistence); ``nan`` when there is no label-0 window.
Incidents
    Maximal runs of consecutive rows labelled 1, split further where the ``attacks`` name changes. The
    attack type is that name, or ``"anomaly"`` when the series has no attack column or the cell is empty.
    Incidents whose onset row is before ``skip_rows`` are ignored. An incident is *detected* when an
    alarm is raised on a window whose end row lies in ``[onset_row, end_row + window - 1]``, i.e. on a
    window that still contains incident rows. Its *latency* is the timestamp of the first such window's
    end row minus the onset timestamp (seconds, >= 0).
``detection_rate``
    Detected incidents / incidents, overall and per attack type (``nan`` without incidents).
    ``mean_detection_latency_s`` averages over detected incidents (``nan`` when none was detected).
``false_alarms_per_day``
    False alarm *events* are rising edges of ``alarms`` (0 -> 1, with the edge taken over the whole
    window sequence, so an alarm already on before ``skip_rows`` is not a new event) on label-0
    windows. Normal time is ``n label-0 windows * median step between consecutive window end
    timestamps`` (the series' sampling period when there is a single window); using the median keeps an
    offline stretch of the device from counting as alarm-free normal time.

>>> import numpy as np
>>> from tinywarden.telemetry import Series
>>> s = Series(np.arange(10.0), np.zeros((10, 1)), ("x",), labels=np.array([0] * 5 + [1] * 3 + [0] * 2))
>>> ws = WindowScores(end_rows=np.arange(10), window=1, scores=np.linspace(0, 1, 10),
...                   raw_flags=np.zeros(10, np.uint8), alarms=np.array([0] * 6 + [1] * 4, np.uint8),
...                   threshold=0.5)
>>> ev = evaluate(s, ws, params=3, model_bytes=12)
>>> ev.detection_rate, ev.mean_detection_latency_s, ev.fpr
(1.0, 1.0, 0.2857142857142857)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from tinywarden.errors import ConfigError, DataError
from tinywarden.telemetry.series import Series

__all__ = ["AttackStats", "Evaluation", "Incident", "IncidentScan", "IncidentSpan", "WindowScores", "evaluate",
           "evaluate_windows", "find_incidents", "ranking_metrics", "window_labels"]

NO_ATTACK_NAME = "anomaly"


@dataclass(frozen=True)
class WindowScores:
    """What a detector and its calibration produced for a series, one entry per window.

    ``end_rows`` (int64, strictly increasing) indexes the series row each window ends on; a window covers
    rows ``end_row - window + 1 .. end_row``. ``scores`` are float64, higher = more anomalous.
    ``raw_flags`` is ``score > threshold`` and ``alarms`` the same after k-of-n persistence, both uint8.
    """

    end_rows: np.ndarray
    window: int
    scores: np.ndarray
    raw_flags: np.ndarray
    alarms: np.ndarray
    threshold: float


@dataclass(frozen=True)
class Incident:
    """One labelled attack span and whether / how fast the alarms caught it."""

    attack: str
    onset_row: int
    end_row: int
    onset: float
    end: float
    detected: bool
    latency_s: float


@dataclass(frozen=True)
class AttackStats:
    """Detection figures for the incidents of one attack type."""

    attack: str
    incidents: int
    detected: int
    detection_rate: float
    mean_latency_s: float
    median_latency_s: float


@dataclass(frozen=True)
class Evaluation:
    """Every metric of one evaluation run; see the module docstring for the definitions."""

    detector: str
    params: int
    model_bytes: int
    threshold: float
    window: int
    skip_rows: int
    n_windows: int
    n_anomalous_windows: int
    n_normal_windows: int
    roc_auc: float
    pr_auc: float
    precision: float
    recall: float
    f1: float
    best_f1: float
    fpr: float
    raw_fpr: float
    n_incidents: int
    n_detected: int
    detection_rate: float
    mean_detection_latency_s: float
    median_detection_latency_s: float
    false_alarm_events: int
    normal_days: float
    false_alarms_per_day: float
    per_attack: tuple[AttackStats, ...]
    incidents: tuple[Incident, ...]

    def to_dict(self) -> dict[str, object]:
        """A JSON-safe dict: plain Python numbers, ``nan`` as ``None``, nested lists for the breakdowns."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("per_attack", "incidents"):
                out[f.name] = [
                    {g.name: _json_safe(getattr(item, g.name)) for g in fields(item)} for item in value
                ]
            else:
                out[f.name] = _json_safe(value)
        return out


def _json_safe(value: object) -> object:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    return value


def _attack_name(cell: object) -> str:
    return cell if isinstance(cell, str) and cell else NO_ATTACK_NAME


def find_incidents(series: Series) -> list[tuple[int, int, str]]:
    """The labelled incidents of ``series`` as ``(onset_row, end_row, attack)``, end row inclusive.

    >>> s = Series(np.arange(6.0), np.zeros((6, 1)), ("x",), labels=np.array([0, 1, 1, 1, 0, 1]),
    ...            attacks=np.array(["", "scan", "scan", "flood", "", "flood"], dtype=object))
    >>> find_incidents(s)
    [(1, 2, 'scan'), (3, 3, 'flood'), (5, 5, 'flood')]
    """
    if series.labels is None:
        raise DataError(
            f"{series.source}: evaluation needs a label column (0 = normal, 1 = anomalous per row)"
        )
    lab = series.labels.astype(bool)
    if series.attacks is None:
        names = np.full(len(lab), NO_ATTACK_NAME, dtype=object)
    else:
        names = np.array([_attack_name(a) for a in series.attacks], dtype=object)
    prev_differs = np.ones(len(lab), dtype=bool)
    prev_differs[1:] = ~lab[:-1] | (names[1:] != names[:-1])
    next_differs = np.ones(len(lab), dtype=bool)
    next_differs[:-1] = ~lab[1:] | (names[1:] != names[:-1])
    starts = np.nonzero(lab & prev_differs)[0]
    ends = np.nonzero(lab & next_differs)[0]
    return [(int(a), int(b), str(names[a])) for a, b in zip(starts, ends, strict=True)]


def _check(series: Series, ws: WindowScores, params: int, model_bytes: int, skip_rows: int) -> None:
    src = series.source
    if series.labels is None:
        raise DataError(f"{src}: evaluation needs a label column (0 = normal, 1 = anomalous)")
    if int(ws.window) < 1:
        raise ConfigError(f"window must be at least 1 row, got {ws.window}")
    if skip_rows < 0:
        raise ConfigError(f"skip_rows must be >= 0, got {skip_rows}")
    if params < 0 or model_bytes < 0:
        raise ConfigError(f"params and model_bytes must be >= 0, got {params} and {model_bytes}")
    n = len(ws.end_rows)
    for name in ("scores", "raw_flags", "alarms"):
        arr = np.asarray(getattr(ws, name))
        if arr.shape != (n,):
            raise DataError(f"{src}: window {name} has shape {arr.shape}, expected ({n},) like end_rows")
    if n == 0:
        raise DataError(f"{src}: no scored windows to evaluate")
    ends = np.asarray(ws.end_rows)
    if not np.issubdtype(ends.dtype, np.integer):
        raise DataError(f"{src}: window end_rows must be integers, got dtype {ends.dtype}")
    bad = (ends < 0) | (ends >= len(series))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{src}: window {i} ends on row {int(ends[i])}, outside the {len(series)} series rows"
        )
    steps = np.diff(ends)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0)) + 1
        raise DataError(
            f"{src}: window {i} ends on row {int(ends[i])}, not after window {i - 1} ({int(ends[i - 1])})"
        )
    scores = np.asarray(ws.scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        i = int(np.argmax(~np.isfinite(scores)))
        raise DataError(f"{src}: window {i} (row {int(ends[i])}) has non-finite score {float(scores[i])!r}")
    for name in ("raw_flags", "alarms"):
        arr = np.asarray(getattr(ws, name))
        if not np.isin(arr, (0, 1)).all():
            i = int(np.argmax(~np.isin(arr, (0, 1))))
            raise DataError(f"{src}: window {i}: {name} value {arr[i].item()!r} is not 0 or 1")
    if not (ends >= skip_rows).any():
        raise DataError(
            f"{src}: no windows left to evaluate: all {n} windows end before skip_rows={skip_rows} "
            f"(last window ends on row {int(ends[-1])})"
        )


def window_labels(labels: np.ndarray, end_rows: np.ndarray, window: int) -> np.ndarray:
    """1 for each window that contains at least one row labelled 1, else 0 (uint8)."""
    cum = np.concatenate(([0], np.cumsum(labels, dtype=np.int64)))
    starts = np.maximum(end_rows - window + 1, 0)
    return ((cum[end_rows + 1] - cum[starts]) > 0).astype(np.uint8)


def ranking_metrics(y: np.ndarray, scores: np.ndarray) -> tuple[float, float, float]:
    """``(roc_auc, pr_auc, best_f1)`` of finite ``scores`` against boolean labels ``y`` holding both classes:
    :func:`sklearn.metrics.roc_auc_score`, :func:`sklearn.metrics.average_precision_score` and the highest
    F1 on :func:`sklearn.metrics.precision_recall_curve`, computed as sklearn computes them (the same
    counts at the same thresholds, the same arithmetic, so equal to the last bit) from one sort of the scores
    instead of three, without sklearn's validation copies: about a third of its peak memory.

    >>> ranking_metrics(np.array([False, False, True, True]), np.array([0.1, 0.4, 0.35, 0.8]))
    (0.75, 0.8333333333333333, 0.8)
    """
    n = len(scores)
    order = np.argsort(scores, kind="stable")[::-1]  # descending; the order inside a tie is never read
    ranked = scores[order]
    hits = y[order]
    del order
    # the last window of each group of equal scores: the curve's thresholds, highest first
    last = np.empty(n, dtype=bool)
    np.not_equal(ranked[1:], ranked[:-1], out=last[:-1])
    last[-1] = True
    del ranked
    idx = np.flatnonzero(last)
    del last
    # true positives down to each threshold: exact integers (int32 while they fit), as sklearn's float cumsum
    tps = np.cumsum(hits, dtype=np.int32 if n < 2**31 else np.int64)[idx].astype(np.float64)
    del hits
    fps = 1 + idx.astype(np.float64) - tps
    del idx
    # ROC (sklearn.metrics.roc_curve, drop_intermediate=True) from (0, 0), its area by the trapezoidal rule
    # (scipy.integrate.trapezoid: sum of diff(fpr) * (tpr[1:] + tpr[:-1]) / 2), each array filled in place
    if len(fps) > 2:
        keep = np.ones(len(fps), dtype=bool)
        keep[1:-1] = (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0)
        corners = np.flatnonzero(keep)
        del keep
    else:
        corners = np.arange(len(fps))
    fpr, tpr = np.zeros(len(corners) + 1), np.zeros(len(corners) + 1)
    np.take(fps, corners, out=fpr[1:])
    np.take(tps, corners, out=tpr[1:])
    del corners
    fpr /= fpr[-1]
    tpr /= tpr[-1]
    area = tpr[1:] + tpr[:-1]
    del tpr
    area *= np.diff(fpr)
    del fpr
    area /= 2.0
    roc_auc = float(np.add.reduce(area))
    del area
    # precision-recall curve (sklearn.metrics.precision_recall_curve), lowest threshold first, then (1, 0);
    # tps + fps is the number of windows down to a threshold, never 0
    k = len(tps)
    precision, recall = np.ones(k + 1), np.zeros(k + 1)
    ps = tps + fps
    del fps
    np.divide(tps, ps, out=precision[k - 1::-1] if k > 1 else precision[:1])
    del ps
    np.divide(tps, tps[-1], out=recall[k - 1::-1] if k > 1 else recall[:1])
    del tps
    pr_auc = float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))
    with np.errstate(invalid="ignore", divide="ignore"):
        f1s = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return roc_auc, pr_auc, float(f1s.max())


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def evaluate(
    series: Series,
    ws: WindowScores,
    *,
    params: int,
    model_bytes: int,
    detector: str = "",
    skip_rows: int = 0,
) -> Evaluation:
    """Score ``ws`` against the labels of ``series``; see the module docstring for the definitions.

    ``params`` and ``model_bytes`` describe the deployed model and are carried into the report.
    ``skip_rows`` rows at the start were not meant to be scored: windows ending before it and incidents
    starting before it are left out. Raises :class:`~tinywarden.errors.DataError` for a series without
    labels, windows that do not fit the series, or nothing left to evaluate.
    """
    _check(series, ws, params, model_bytes, skip_rows)
    assert series.labels is not None  # checked above; narrows the type
    ends = np.asarray(ws.end_rows, dtype=np.int64)
    ts = series.timestamps
    incidents = [(a, b, name, float(ts[a]), float(ts[b])) for a, b, name in find_incidents(series)]
    return evaluate_windows(ws, window_labels(series.labels, ends, int(ws.window)), ts[ends], incidents,
                            period=series.period, params=params, model_bytes=model_bytes, detector=detector,
                            skip_rows=skip_rows)


#: A labelled incident with its times: ``(onset_row, end_row, attack, onset time, end time)``, end row inclusive.
IncidentSpan = tuple[int, int, str, float, float]


class IncidentScan:
    """:func:`find_incidents` over a series that arrives in chunks: :meth:`push` each chunk in order, then
    :attr:`incidents` (after :meth:`finish`) holds what ``find_incidents`` of the whole series finds, with times.

    An incident that runs into the next chunk is held open until a row ends it.

    >>> s = Series(np.arange(6.0), np.zeros((6, 1)), ("x",), labels=np.array([0, 1, 1, 1, 0, 1]))
    >>> scan = IncidentScan()
    >>> for lo in (0, 2, 4):
    ...     scan.push(s.slice(lo, lo + 2))
    >>> [(a, b) for a, b, *_ in scan.finish()] == [(a, b) for a, b, _ in find_incidents(s)]
    True
    """

    def __init__(self) -> None:
        self.incidents: list[IncidentSpan] = []
        self.rows = 0
        self._open: IncidentSpan | None = None  # the incident running up to the last row pushed

    def push(self, chunk: Series) -> None:
        """Scan the rows of ``chunk``, which follow those pushed before."""
        ts = chunk.timestamps
        for a, b, name in find_incidents(chunk):
            held = self._open
            self._open = None
            if held is not None:
                if a == 0 and held[2] == name:  # the held incident goes on into this chunk
                    a_row, a_t = held[0], held[3]
                else:
                    self.incidents.append(held)
                    a_row, a_t = self.rows + a, float(ts[a])
            else:
                a_row, a_t = self.rows + a, float(ts[a])
            span = (a_row, self.rows + b, name, a_t, float(ts[b]))
            if b == len(chunk) - 1:
                self._open = span
            else:
                self.incidents.append(span)
        if self._open is not None and self._open[1] < self.rows + len(chunk) - 1:
            self.incidents.append(self._open)  # a chunk with no incident at its start ended it
            self._open = None
        self.rows += len(chunk)

    def finish(self) -> list[IncidentSpan]:
        """Close an incident that runs to the last row; returns :attr:`incidents`."""
        if self._open is not None:
            self.incidents.append(self._open)
            self._open = None
        return self.incidents


def evaluate_windows(
    ws: WindowScores,
    window_y: np.ndarray,
    end_times: np.ndarray,
    incidents: list[IncidentSpan],
    *,
    period: float,
    params: int,
    model_bytes: int,
    detector: str = "",
    skip_rows: int = 0,
) -> Evaluation:
    """:func:`evaluate` from what it needs of the series, so a series read in chunks need not be held whole:
    ``window_y`` is each window's label (:func:`window_labels`), ``end_times`` the timestamp of each window's end
    row, ``incidents`` the labelled spans (:class:`IncidentScan`) and ``period`` the series' sampling period
    (used only when there is a single window). ``ws`` is taken as checked (:func:`evaluate` checks it).
    """
    if skip_rows < 0:
        raise ConfigError(f"skip_rows must be >= 0, got {skip_rows}")
    window = int(ws.window)
    all_ends = np.asarray(ws.end_rows, dtype=np.int64)
    all_alarms = np.asarray(ws.alarms).astype(np.uint8)
    # Edges over the whole sequence: an alarm already on when evaluation starts is not a new event.
    rising = all_alarms.astype(bool) & ~np.concatenate(([False], all_alarms[:-1].astype(bool)))

    # the windows ending from skip_rows on: a slice, as end rows increase (views, not copies of every array)
    keep = slice(int(np.searchsorted(all_ends, skip_rows, side="left")), None)
    if keep.start == len(all_ends):
        raise DataError(f"no windows left to evaluate: all {len(all_ends)} windows end before skip_rows={skip_rows}")
    ends = all_ends[keep]
    scores = np.asarray(ws.scores, dtype=np.float64)[keep]
    raw = np.asarray(ws.raw_flags)[keep].astype(bool)
    alarms = all_alarms[keep].astype(bool)
    rising = rising[keep]
    y = np.asarray(window_y)[keep].astype(bool)
    n_pos = int(y.sum())
    n_neg = int(len(y) - n_pos)

    roc_auc, pr_auc, best_f1 = ranking_metrics(y, scores) if n_pos > 0 and n_neg > 0 else (math.nan,) * 3

    tp = int((alarms & y).sum())
    fp = int((alarms & ~y).sum())
    fn = int((~alarms & y).sum())

    alarm_ends = ends[alarms]
    alarm_times = np.asarray(end_times)[keep][alarms]
    found: list[Incident] = []
    for onset_row, end_row, attack, onset_t, end_t in incidents:
        if onset_row < skip_rows:
            continue
        i = int(np.searchsorted(alarm_ends, onset_row, side="left"))
        detected = i < len(alarm_ends) and alarm_ends[i] <= end_row + window - 1
        latency = float(alarm_times[i] - onset_t) if detected else math.nan
        found.append(Incident(attack, onset_row, end_row, onset_t, end_t, bool(detected), latency))

    per_attack = []
    for attack in sorted({inc.attack for inc in found}):
        group = [inc for inc in found if inc.attack == attack]
        lat = [inc.latency_s for inc in group if inc.detected]
        per_attack.append(
            AttackStats(attack, len(group), len(lat), _ratio(len(lat), len(group)), _mean(lat), _median(lat))
        )
    latencies = [inc.latency_s for inc in found if inc.detected]

    times = np.asarray(end_times, dtype=np.float64)
    step = float(np.median(np.diff(times))) if len(times) > 1 else float(period)
    normal_days = n_neg * step / 86400.0
    false_alarm_events = int((rising & ~y).sum())

    return Evaluation(
        detector=detector,
        params=int(params),
        model_bytes=int(model_bytes),
        threshold=float(ws.threshold),
        window=window,
        skip_rows=int(skip_rows),
        n_windows=len(y),
        n_anomalous_windows=n_pos,
        n_normal_windows=n_neg,
        roc_auc=roc_auc,
        pr_auc=pr_auc,
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        best_f1=best_f1,
        fpr=_ratio(float((alarms & ~y).sum()), n_neg),
        raw_fpr=_ratio(float((raw & ~y).sum()), n_neg),
        n_incidents=len(found),
        n_detected=len(latencies),
        detection_rate=_ratio(len(latencies), len(found)),
        mean_detection_latency_s=_mean(latencies),
        median_detection_latency_s=_median(latencies),
        false_alarm_events=false_alarm_events,
        normal_days=normal_days,
        false_alarms_per_day=_ratio(false_alarm_events, normal_days),
        per_attack=tuple(per_attack),
        incidents=tuple(found),
    )
