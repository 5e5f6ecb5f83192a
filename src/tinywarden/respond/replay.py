"""Replay a recorded score stream through the engine in simulated time (``tinywarden respond``).

A scores file is a CSV with a time column and a ``score`` column: what ``tinywarden score --out``
writes (``window_end``, ``score``, ``anomaly``, ``threshold``[, ``label``]) or any CSV with ``timestamp``
and ``score``. Times are epoch seconds or ISO 8601; numeric times of 1e11 and more are epoch
milliseconds (or micro-, nanoseconds), converted as :func:`tinywarden.telemetry.io.epoch_seconds` does.
An optional ``threshold`` column records the threshold the scores were compared with, so that a
replay with a model's threshold can tell float scores from int8 ones. Other columns are ignored. A
UTF-8 byte-order mark is allowed. An empty cell or ``nan`` in ``score`` is kept as NaN, which the
engine treats as a fault (that is the point of replaying it). Timestamps are taken as they are, even
out of order: the engine holds its own time monotonic and records the jump. A row with the time of
the row above is refused: it would count one window twice toward a tier's k-of-n.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinywarden.errors import DataError
from tinywarden.respond.engine import ActionEvent, ResponseEngine
from tinywarden.telemetry.io import epoch_seconds, is_number, parse_timestamp

#: Accepted names of the time column, in order of preference (``window_end`` is what ``score`` writes).
TIME_COLUMNS = ("timestamp", "window_end")


@dataclass(frozen=True)
class ScoreFile:
    """The rows of a scores file and what its columns say about them."""

    rows: list[tuple[float, float]]  # (epoch seconds, score) in file order
    threshold: float | None  # the ``threshold`` column's value, None without one
    time_unit: str  # "s", or "ms"/"us"/"ns" when the times were converted


def read_scores(path: str | Path) -> ScoreFile:
    """The ``(timestamp, score)`` rows of the scores CSV at ``path`` (rows are 1-based, header = row 1)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"{p}: cannot read scores ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from exc
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        raise DataError(f"{p}: empty file (expected a header with window_end or timestamp, and score)")
    names = [h.strip() for h in header]
    time_col = next((c for c in TIME_COLUMNS if c in names), None)
    if time_col is None:
        raise DataError(f"{p}: row 1: no 'timestamp' or 'window_end' column (found {', '.join(names) or 'none'})")
    if "score" not in names:
        raise DataError(f"{p}: row 1: no 'score' column (found {', '.join(names) or 'none'})")
    ti, si = names.index(time_col), names.index("score")
    thi = names.index("threshold") if "threshold" in names else None
    times: list[float] = []
    scores: list[float] = []
    threshold: float | None = None
    numeric_times = True
    for rowno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(ti, si, thi or 0):
            raise DataError(f"{p}: row {rowno}: has {len(row)} cells, header has {len(names)}")
        try:
            t = parse_timestamp(row[ti])
        except ValueError:
            raise DataError(f"{p}: row {rowno}, column {time_col!r}: {row[ti]!r} is not a time") from None
        if not math.isfinite(t):
            raise DataError(f"{p}: row {rowno}, column {time_col!r}: {row[ti]!r} is not finite")
        if times and t == times[-1]:  # one window twice would count twice toward k-of-n
            raise DataError(f"{p}: row {rowno}, column {time_col!r}: duplicate time {row[ti]!r} (the row above has "
                            "it too): one window per time; fix the file")
        numeric_times = numeric_times and is_number(row[ti])
        cell = row[si].strip()
        try:
            score = float(cell) if cell else math.nan
        except ValueError:
            raise DataError(f"{p}: row {rowno}, column 'score': {cell!r} is not a number") from None
        if thi is not None:
            threshold = _same_threshold(p, rowno, row[thi], threshold)
        times.append(t)
        scores.append(score)
    unit = "s"
    if numeric_times and times:
        converted, unit = epoch_seconds(np.asarray(times, dtype=np.float64))
        times = converted.tolist()
    return ScoreFile(list(zip(times, scores, strict=True)), threshold, unit)


def _same_threshold(path: Path, rowno: int, cell: str, seen: float | None) -> float:
    """The ``threshold`` cell of one row, which must be finite and the same on every row."""
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{path}: row {rowno}, column 'threshold': {cell!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{path}: row {rowno}, column 'threshold': {cell!r} is not finite")
    if seen is not None and value != seen:
        raise DataError(f"{path}: row {rowno}, column 'threshold': {cell!r} differs from the rows above ({seen!r})")
    return value


def replay(
    engine: ResponseEngine, rows: Iterable[tuple[float, float]], resume: bool = False
) -> list[ActionEvent]:
    """Feed ``rows`` to ``engine`` in simulated time and return every event, in order.

    With ``resume``, the first ``engine.windows`` rows are skipped: an engine restored from a state
    file has already seen them, so replaying the same file after a crash continues where it stopped.
    """
    events: list[ActionEvent] = []
    skip = engine.windows if resume else 0
    for i, (t, score) in enumerate(rows):
        if i < skip:
            continue
        events += engine.observe(score, at=t)
    return events
