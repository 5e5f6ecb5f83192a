"""Replay a recorded score stream through the engine in simulated time (``tinywarden respond``).

A scores file is a CSV with a ``timestamp`` column (epoch seconds or ISO 8601) and a ``score``
column; other columns are ignored. An empty cell or ``nan`` in ``score`` is kept as NaN, which the
engine treats as a fault (that is the point of replaying it). Timestamps are taken as they are, even
out of order: the engine holds its own time monotonic and records the jump.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path

from tinywarden.errors import DataError
from tinywarden.respond.engine import ActionEvent, ResponseEngine
from tinywarden.telemetry.io import parse_timestamp


def read_scores(path: str | Path) -> list[tuple[float, float]]:
    """``(timestamp, score)`` rows of the scores CSV at ``path`` (rows are 1-based, header = row 1)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{p}: cannot read scores ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from exc
    rows: list[tuple[float, float]] = []
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        raise DataError(f"{p}: empty file (expected a header with timestamp and score)")
    names = [h.strip() for h in header]
    for col in ("timestamp", "score"):
        if col not in names:
            raise DataError(f"{p}: row 1: no {col!r} column (found {', '.join(names) or 'none'})")
    ti, si = names.index("timestamp"), names.index("score")
    for rowno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(ti, si):
            raise DataError(f"{p}: row {rowno}: has {len(row)} cells, header has {len(names)}")
        try:
            t = parse_timestamp(row[ti])
        except ValueError:
            raise DataError(f"{p}: row {rowno}, column 'timestamp': {row[ti]!r} is not a time") from None
        if not math.isfinite(t):
            raise DataError(f"{p}: row {rowno}, column 'timestamp': {row[ti]!r} is not finite")
        cell = row[si].strip()
        try:
            score = float(cell) if cell else math.nan
        except ValueError:
            raise DataError(f"{p}: row {rowno}, column 'score': {cell!r} is not a number") from None
        rows.append((t, score))
    return rows


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
