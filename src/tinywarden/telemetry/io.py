"""Readers and writers for telemetry files: CSV, Parquet, and the public datasets in ``../shared/data``.

The CSV/Parquet format: a ``timestamp`` column (epoch seconds or ISO 8601), numeric channel columns, an
optional ``label`` column (0 normal / 1 anomalous) and an optional ``attack`` column (the injected
attack's name, empty when normal; written by the simulator). Every column has a name, read without
surrounding spaces in CSV and Parquet alike (``"cpu "`` and ``"cpu"`` are one name twice, refused). A CSV may
start with a UTF-8 byte-order mark. Numeric timestamps whose smallest value is at least 1e11 cannot be seconds
(that is the year 5138): they are read as epoch milliseconds (from 1e14 microseconds, from 1e17 nanoseconds),
converted to seconds, and the unit is recorded in ``series.meta["time_unit"]`` so the commands can say so.
Channel values must be finite with magnitude at most
:data:`~tinywarden.telemetry.series.MAX_ABS_VALUE`. A Parquet file is checked from its footer before any data is
read: its row groups' row counts must add up to the file's, and the decoded table (8 bytes a cell, or the row
groups' stated uncompressed size if larger) must fit
:data:`MAX_DECODED_BYTES` (environment variable ``TINYWARDEN_MAX_DECODED_BYTES`` to change it); a crafted
footer could otherwise make Arrow allocate terabytes for a 3 KB file. Any other problem is a
:class:`~tinywarden.errors.DataError` naming the file, the row (1-based, counting the header as row 1
as a spreadsheet does) and the column.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import math
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tinywarden.errors import DataError
from tinywarden.fileio import atomic_open
from tinywarden.telemetry.series import MAX_ABS_VALUE, Series

RESERVED = ("timestamp", "label", "attack")
log = logging.getLogger(__name__)

# Sampling periods of the shared public datasets, which carry no timestamp column.
NPZ_PERIOD_S = {"machine": 60.0, "omi": 300.0}
NPZ_SPLITS = ("train", "test")

#: Largest decoded Parquet table read, in bytes (see the module docstring); ``TINYWARDEN_MAX_DECODED_BYTES``
#: overrides it. 4 GiB is 128 million float64 cells, e.g. a year of 1 Hz samples of 16 channels.
MAX_DECODED_BYTES = 4 << 30
MAX_DECODED_BYTES_ENV = "TINYWARDEN_MAX_DECODED_BYTES"

#: Numeric epoch timestamps by magnitude: (unit, units per second, smallest value read in that unit).
EPOCH_UNITS = (("ns", 1e9, 1e17), ("us", 1e6, 1e14), ("ms", 1e3, 1e11))
#: Epoch seconds of 0001-01-01 and of 10000-01-01 (UTC): the calendar a timestamp can be written in.
CALENDAR_START, CALENDAR_END = -62135596800.0, 253402300800.0


def parse_timestamp(text: str) -> float:
    """Epoch seconds from a number or an ISO 8601 string (naive times are taken as UTC).

    >>> parse_timestamp("1970-01-01T00:01:00Z"), parse_timestamp("60")
    (60.0, 60.0)
    """
    t = text.strip()
    try:
        return float(t)
    except ValueError:
        pass
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    dt = datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def epoch_seconds(ts: np.ndarray) -> tuple[np.ndarray, str]:
    """Numeric epoch timestamps in seconds, and the unit they were found in (see :data:`EPOCH_UNITS`).

    Seconds until 1e11 (the year 5138) are taken as they are; a column whose smallest value is larger
    can only be milliseconds, microseconds or nanoseconds since 1970.

    >>> ts, unit = epoch_seconds(np.array([1.7e12, 1.7e12 + 10_000]))
    >>> ts.tolist(), unit
    ([1700000000.0, 1700000010.0], 'ms')
    >>> epoch_seconds(np.array([0.0, 10.0]))[1]
    's'
    """
    if len(ts) == 0 or not np.isfinite(ts).all():
        return ts, "s"
    low = float(ts.min())
    for unit, per_second, start in EPOCH_UNITS:
        if low >= start:
            return ts / per_second, unit  # divided, not multiplied by the inexact 1e-3: whole seconds stay whole
    return ts, "s"


def read_series(path: str | Path, split: str | None = None, drop_unordered: bool = False) -> Series:
    """Read telemetry from ``path``: ``.csv``, ``.parquet``/``.pq``, a shared-data ``.npz``, or a folder of
    CSV/Parquet files read as one series (:func:`read_folder`, e.g. what ``tinywarden record`` writes).

    ``path`` may end in ``:train`` or ``:test`` to choose the split of an ``.npz`` entity; ``split``
    gives the default when it does not.

    Duplicate or decreasing timestamps are an error unless ``drop_unordered`` is set: then every row
    whose timestamp is not later than all rows before it is dropped, and the count is recorded in
    ``series.meta["dropped_rows"]``. NAB CSVs found under a ``nab/data`` tree get their row labels from
    ``nab/labels/combined_windows.json`` and are always read with ``drop_unordered`` (four NAB series
    repeat a clock hour or a sample, a known quirk of that dataset).
    """
    text = str(path)
    for name in NPZ_SPLITS:
        if text.endswith(f".npz:{name}"):
            text, split = text[: -len(name) - 1], name
    p = Path(text)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    if p.is_dir():
        return read_folder(p, drop_unordered)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        series = _read_csv(p, drop_unordered or _nab_windows_file(p) is not None)
        return _attach_nab_labels(series, p)
    if suffix in (".parquet", ".pq"):
        import pyarrow as pa

        try:
            return _read_parquet(p, drop_unordered)
        except UnicodeDecodeError as exc:
            raise DataError(f"{p}: a column name or text cell is not UTF-8 ({exc.reason})") from None
        except pa.ArrowException as exc:  # e.g. a column type Arrow cannot convert (integers wider than 64 bits)
            raise DataError(f"{p}: not a readable Parquet file ({' '.join(str(exc).split())})") from None
    if suffix == ".npz":
        return read_npz(p, split or "test")
    raise DataError(f"{p}: unknown file type {suffix!r} (expected .csv, .parquet or .npz)")


#: Rows per chunk when telemetry is streamed (:func:`iter_series`): a CSV chunk is parsed as Python strings first
#: (about 1 KB a row at 8 channels), so a chunk costs some 16 MB whatever the file length.
CHUNK_ROWS = 16_384


def iter_series(path: str | Path, chunk_rows: int = CHUNK_ROWS, drop_unordered: bool = False) -> Iterator[Series]:
    """:func:`read_series` in pieces of at most ``chunk_rows`` rows, so a long recording is never held whole.

    A CSV is parsed ``chunk_rows`` lines at a time and a Parquet file read batch by batch; a folder streams
    its files in time order (each checked as :func:`read_folder` does: same channels, no overlap; a file
    whose first chunk cannot be read is skipped with a warning). The chunks, concatenated, equal
    ``read_series(path)`` with one difference for numeric timestamps: their unit (seconds, ms, us, ns;
    :func:`epoch_seconds`) is decided on the first chunk rather than on the whole file. An error after
    the first chunk is raised when that chunk is reached. A ``.npz`` entity and a NAB file (whose labels
    need the whole series) come as one chunk.
    """
    if chunk_rows < 1:
        raise DataError(f"chunk_rows must be >= 1, got {chunk_rows}")
    p = Path(str(path))
    suffix = p.suffix.lower()
    if p.is_dir():
        yield from _folder_chunks(p, chunk_rows, drop_unordered)
    elif suffix == ".csv" and p.exists() and _nab_windows_file(p) is None:
        yield from _csv_chunks(p, drop_unordered, chunk_rows)
    elif suffix in (".parquet", ".pq") and p.exists():
        yield from _parquet_chunks(p, drop_unordered, chunk_rows)
    else:
        yield read_series(path, drop_unordered=drop_unordered)


def _folder_chunks(folder: Path, chunk_rows: int, drop_unordered: bool) -> Iterator[Series]:
    files = folder_files(folder)
    heads: list[tuple[float, Path, Series]] = []
    for f in files:
        try:
            first = next(iter_series(f, chunk_rows, drop_unordered))
        except DataError as exc:
            log.warning("skipping %s", exc)
            continue
        heads.append((float(first.timestamps[0]), f, first))
    if not heads:
        raise DataError(f"{folder}: no readable telemetry file ({', '.join(FOLDER_SUFFIXES)})")
    heads.sort(key=lambda h: h[0])
    channels = heads[0][2].channels
    last: tuple[float, Path] | None = None
    for _, f, first in heads:
        if first.channels != channels:
            raise DataError(f"{folder}: {f} has channels {', '.join(first.channels)}, but {heads[0][1]} "
                            f"has {', '.join(channels)}; a folder must hold one kind of recording")
        for chunk in iter_series(f, chunk_rows, drop_unordered):
            if last is not None and chunk.timestamps[0] <= last[0]:
                raise DataError(f"{folder}: {f} starts at {float(chunk.timestamps[0])!r}, before {last[1]} ends "
                                f"({last[0]!r}); the files overlap in time")
            last = (float(chunk.timestamps[-1]), f)
            yield chunk


#: File types a recording folder may hold; anything else in it (notes, temporary files) is ignored.
FOLDER_SUFFIXES = (".csv", ".parquet", ".pq")


def folder_files(folder: Path) -> list[Path]:
    """The telemetry files of a recording folder, by name: regular files directly in it with a
    :data:`FOLDER_SUFFIXES` suffix in any case, hidden ones (``.name``: a temporary file of an interrupted write, the
    recorder's lock) left out. The one listing every reader of a folder and the recorder use."""
    return sorted(f for f in folder.iterdir()
                  if f.is_file() and f.suffix.lower() in FOLDER_SUFFIXES and not f.name.startswith("."))


def read_folder(path: str | Path, drop_unordered: bool = False) -> Series:
    """The CSV/Parquet files directly in folder ``path`` as one series, in time order.

    Every file must have the same channels (and the same ``label``/``attack`` columns) and the files
    must not overlap in time; either is a one-line :class:`DataError` naming both files. A file that
    cannot be read (corrupt, truncated, not telemetry) is skipped and named in
    ``series.meta["skipped_files"]`` with its error, so one damaged file does not cost the recording;
    when no file can be read, the first file's error is raised. Hidden files (``.name``, e.g. a
    temporary file of an interrupted write) are ignored.
    """
    folder = Path(path)
    files = folder_files(folder)
    if not files:
        raise DataError(f"{folder}: folder holds no telemetry files ({', '.join(FOLDER_SUFFIXES)})")
    parts: list[Series] = []
    skipped: list[str] = []
    for f in files:
        try:
            parts.append(read_series(f, drop_unordered=drop_unordered))
        except DataError as exc:
            skipped.append(str(exc))
    if not parts:
        raise DataError(f"{folder}: no readable telemetry file; first error: {skipped[0]}")
    parts.sort(key=lambda s: float(s.timestamps[0]))
    first = parts[0]
    for prev, cur in zip(parts, parts[1:], strict=False):
        if cur.channels != first.channels:
            raise DataError(f"{folder}: {cur.source} has channels {', '.join(cur.channels)}, but {first.source} "
                            f"has {', '.join(first.channels)}; a folder must hold one kind of recording")
        for what, column in (("labels", "label"), ("attacks", "attack")):
            if (getattr(cur, what) is None) != (getattr(first, what) is None):
                raise DataError(f"{folder}: {cur.source} and {first.source} differ in having a {column!r} column")
        if cur.timestamps[0] <= prev.timestamps[-1]:
            raise DataError(f"{folder}: {cur.source} starts at {float(cur.timestamps[0])!r}, before "
                            f"{prev.source} ends ({float(prev.timestamps[-1])!r}); the files overlap in time")
    meta = {"files": str(len(parts))}
    if skipped:
        meta["skipped_files"] = "; ".join(skipped)
    dropped = sum(int(s.meta.get("dropped_rows", 0)) for s in parts)
    if dropped:
        meta["dropped_rows"] = str(dropped)
    units = {s.meta["time_unit"] for s in parts if "time_unit" in s.meta}
    if units:
        meta["time_unit"] = ",".join(sorted(units))

    return _concat(parts, str(folder), meta)


def _concat(parts: list[Series], source: str, meta: dict[str, str]) -> Series:
    """Consecutive pieces of one recording (same channels and columns, in time order) as one series."""

    def cat(what: str) -> np.ndarray | None:
        arrays = [getattr(s, what) for s in parts]
        return None if arrays[0] is None else np.concatenate(arrays)

    return Series(np.concatenate([s.timestamps for s in parts]), np.concatenate([s.values for s in parts]),
                  parts[0].channels, cat("labels"), cat("attacks"), source, meta)


def read_head(path: str | Path, max_rows: int, split: str | None = None,
              drop_unordered: bool = False) -> tuple[Series, bool]:
    """The first ``max_rows`` rows of ``path``, and whether it had more, reading no further than that.

    For a command that needs its data in memory (``tune`` fits every candidate on it): memory is bounded by
    ``max_rows`` whatever the file's length. A file of at most ``max_rows`` rows comes back exactly as
    :func:`read_series` reads it; a longer one as its first ``max_rows`` rows (read in chunks,
    :func:`iter_series`), with ``meta["read_rows"]`` saying so.
    """
    if max_rows < 1:
        raise DataError(f"max_rows must be >= 1, got {max_rows}")
    p = Path(str(path))
    if not (p.is_dir() or p.suffix.lower() in (".csv", ".parquet", ".pq")):
        whole = read_series(path, split, drop_unordered)  # an .npz entity is read whole by its loader anyway
        return (whole, False) if len(whole) <= max_rows else (whole.slice(0, max_rows), True)
    parts: list[Series] = []
    held = 0
    for chunk in iter_series(path, drop_unordered=drop_unordered):
        parts.append(chunk)
        held += len(chunk)
        if held > max_rows:
            break
    else:
        return read_series(path, split, drop_unordered), False
    meta = {k: v for k, v in parts[0].meta.items() if k == "time_unit"}
    meta["read_rows"] = str(max_rows)
    head = _concat(parts, str(p) if p.is_dir() else parts[0].source, meta)
    return head.slice(0, max_rows), True


def _columns(path: Path, header: list[str]) -> tuple[list[str], tuple[int, list[int], int | None, int | None]]:
    """The header's names without surrounding spaces, and the positions of the timestamp, the channels, the label
    and the attack column; a :class:`DataError` for a header a series cannot be read by (a column without a
    name, which would be a channel named "", a name twice, no timestamp, no channel)."""
    names = [h.strip() for h in header]
    if "" in names:
        raise DataError(f"{path}: row 1, column {names.index('') + 1}: the column has no name; name every column")
    if "timestamp" not in names:
        raise DataError(f"{path}: row 1: no 'timestamp' column (columns: {', '.join(map(repr, names))})")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{path}: row 1: column {dup!r} appears twice")
    ts = names.index("timestamp")
    lab = names.index("label") if "label" in names else None
    att = names.index("attack") if "attack" in names else None
    chans = [i for i, n in enumerate(names) if n not in RESERVED]
    if not chans:
        raise DataError(f"{path}: no channel columns besides {', '.join(n for n in names if n in RESERVED)}")
    return names, (ts, chans, lab, att)


def _read_csv(path: Path, drop_unordered: bool = False) -> Series:
    chunks = list(_csv_chunks(path, drop_unordered, None))
    return chunks[0]


class _Order:
    """What a chunked reader carries from one chunk to the next: the latest timestamp and the time unit."""

    def __init__(self) -> None:
        self.last: float | None = None
        self.unit: str | None = None  # decided on the first chunk (a whole file read at once is one chunk)

    def check(self, path: Path | str, ts: np.ndarray, first_row: int, drop: bool) -> np.ndarray | None:
        """:func:`_check_order` across chunks; ``first_row`` is the file row of ``ts[0]`` as errors number it."""
        if self.last is None:
            keep = _check_order(path, ts, header_rows=first_row - 1, drop=drop)
        else:
            ext = _check_order(path, np.concatenate(([self.last], ts)), header_rows=first_row - 2, drop=drop)
            keep = None if ext is None else ext[1:]
        kept = ts if keep is None else ts[keep]
        if len(kept):
            self.last = float(kept[-1])
        return keep


def _csv_chunks(path: Path, drop_unordered: bool, chunk_rows: int | None) -> Iterator[Series]:
    """The CSV file as series of at most ``chunk_rows`` rows (all rows in one when ``None``)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = (r for r in csv.reader(fh) if any(cell.strip() for cell in r))
            header = next(rows, None)
            if header is None:
                raise DataError(f"{path}: empty file")
            names, cols = _columns(path, header)
            order, line, any_rows = _Order(), 2, False
            while True:
                body = list(itertools.islice(rows, chunk_rows))
                if not body:
                    break
                any_rows = True
                chunk = _csv_block(path, names, cols, body, line, order, drop_unordered)
                line += len(body)
                if chunk is not None:
                    yield chunk
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV: {exc}") from None
    if not any_rows:
        raise DataError(f"{path}: no data rows below the header")


def _csv_block(path: Path, names: list[str], cols: tuple[int, list[int], int | None, int | None],
               body: list[list[str]], first_line: int, order: _Order, drop_unordered: bool) -> Series | None:
    """Rows ``body`` (the first at file line ``first_line``) as a series; ``None`` when every row was dropped."""
    ts_i, chans, lab_i, att_i = cols
    n = len(body)
    ts = np.empty(n)
    vals = np.empty((n, len(chans)))
    labels = np.zeros(n, dtype=np.int8) if lab_i is not None else None
    attacks = np.empty(n, dtype=object) if att_i is not None else None
    numeric_times = True
    for r, row in enumerate(body):
        line = r + first_line
        if len(row) != len(names):
            raise DataError(f"{path}: row {line}: {len(row)} cells, header has {len(names)}")
        try:
            ts[r] = parse_timestamp(row[ts_i])
        except ValueError:
            raise DataError(f"{path}: row {line}, column 'timestamp': {row[ts_i]!r} is not a time") from None
        if not math.isfinite(ts[r]):
            raise DataError(f"{path}: row {line}, column 'timestamp': {row[ts_i]!r} is not finite")
        numeric_times = numeric_times and is_number(row[ts_i])
        for j, c in enumerate(chans):
            cell = row[c]
            try:
                v = float(cell)
            except ValueError:
                raise DataError(f"{path}: row {line}, column {names[c]!r}: {cell!r} is not a number") from None
            if not math.isfinite(v):
                raise DataError(f"{path}: row {line}, column {names[c]!r}: {cell!r} is not finite")
            if abs(v) > MAX_ABS_VALUE:
                raise DataError(f"{path}: row {line}, column {names[c]!r}: {cell!r} is out of range "
                                f"(|value| > {MAX_ABS_VALUE:g})")
            vals[r, j] = v
        if labels is not None:
            cell = row[lab_i].strip()
            if cell not in ("0", "1", "0.0", "1.0"):
                raise DataError(f"{path}: row {line}, column 'label': {cell!r} is not 0 or 1")
            labels[r] = int(float(cell))
        if attacks is not None:
            attacks[r] = row[att_i].strip()
    ts, unit = _to_seconds(ts, numeric_times, order)
    keep = order.check(path, ts, first_line, drop_unordered)
    if keep is not None and not keep.any():
        return None
    return _build(path, ts, vals, tuple(names[c] for c in chans), labels, attacks, keep, unit)


def _to_seconds(ts: np.ndarray, numeric: bool, order: _Order) -> tuple[np.ndarray, str]:
    """Numeric epoch times in seconds, in the unit the first chunk chose (:func:`epoch_seconds`)."""
    if not numeric:
        return ts, "s"
    if order.unit is None:
        ts, order.unit = epoch_seconds(ts)
        return ts, order.unit
    per_second = next((u[1] for u in EPOCH_UNITS if u[0] == order.unit), 1.0)
    return (ts / per_second if order.unit != "s" else ts), order.unit


def is_number(text: str) -> bool:
    """Whether ``text`` reads as a number (an epoch time rather than an ISO 8601 one, for a timestamp).

    >>> is_number(" 1.7e9 "), is_number("2026-01-01")
    (True, False)
    """
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_order(path: Path | str, ts: np.ndarray, header_rows: int, drop: bool) -> np.ndarray | None:
    """None when timestamps strictly increase; else the rows to keep (``drop``) or a DataError."""
    d = np.diff(ts)
    if not (d <= 0).any():
        return None
    if drop:
        prev_max = np.maximum.accumulate(np.concatenate(([-np.inf], ts[:-1])))
        return ts > prev_max
    i = int(np.argmax(d <= 0)) + 1
    kind = "duplicate" if d[i - 1] == 0 else "decreasing"
    raise DataError(
        f"{path}: row {i + 1 + header_rows}, column 'timestamp': {kind} timestamp "
        f"(previous row has {float(ts[i - 1])!r}, this one {float(ts[i])!r}); "
        "fix the file or pass --drop-unordered to drop such rows"
    )


def _build(path: Path, ts: np.ndarray, vals: np.ndarray, channels: tuple[str, ...], labels: np.ndarray | None,
           attacks: np.ndarray | None, keep: np.ndarray | None, unit: str = "s") -> Series:
    meta: dict[str, str] = {} if unit == "s" else {"time_unit": unit}
    if keep is not None:
        meta["dropped_rows"] = str(int((~keep).sum()))
        ts, vals = ts[keep], vals[keep]
        labels = None if labels is None else labels[keep]
        attacks = None if attacks is None else attacks[keep]
    return Series(ts, vals, channels, labels, attacks, str(path), meta)


def max_decoded_bytes() -> int:
    """:data:`MAX_DECODED_BYTES`, or the positive integer in ``TINYWARDEN_MAX_DECODED_BYTES``."""
    text = os.environ.get(MAX_DECODED_BYTES_ENV)
    if text is None:
        return MAX_DECODED_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise DataError(f"environment variable {MAX_DECODED_BYTES_ENV}={text!r}: expected a positive number of bytes")
    return value


def _check_parquet_footer(path: Path, md: Any) -> None:
    """Refuse a Parquet footer whose row counts disagree or whose decoded size exceeds :func:`max_decoded_bytes`,
    before Arrow allocates anything by it (its reader sizes buffers from the row groups' stated row counts).

    Only the file's and the row groups' fields are read: pyarrow's column chunk metadata object aborts the whole
    process (an uncaught C++ exception) on a corrupt size-statistics histogram, which ``read_table`` reports as
    an ordinary error instead.
    """
    limit = max_decoded_bytes()
    groups = [md.row_group(i) for i in range(md.num_row_groups)]
    rows = [g.num_rows for g in groups]
    if md.num_rows < 0 or any(r < 0 for r in rows) or sum(rows) != md.num_rows:
        raise DataError(f"{path}: corrupt Parquet footer: the row groups claim {sum(rows)} rows in all "
                        f"({', '.join(map(str, rows[:4]))}{', ...' if len(rows) > 4 else ''}), the file {md.num_rows}")
    decoded = max(8 * md.num_rows * md.num_columns, sum(max(g.total_byte_size, 0) for g in groups))
    if decoded > limit:
        raise DataError(f"{path}: {md.num_rows} rows x {md.num_columns} columns would take {decoded} bytes decoded, "
                        f"over the limit of {limit} ({MAX_DECODED_BYTES_ENV} raises it)")


def _read_parquet(path: Path, drop_unordered: bool = False) -> Series:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # one open file for the footer check and the read: a file replaced meanwhile (a recorder rewrites its open
        # segment by rename) is read whole as it was when checked, never a new file's pages against an old size
        with open(path, "rb") as fh, pq.ParquetFile(fh) as pf:
            _check_parquet_footer(path, pf.metadata)
            table = pf.read()
    except (pa.ArrowInvalid, OSError) as exc:
        detail = " ".join(str(exc).split())  # Arrow's messages may span lines; ours are one
        raise DataError(f"{path}: not a readable Parquet file ({detail})") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: empty file")
    out = _parquet_block(path, table, 1, _Order(), drop_unordered)
    assert out is not None  # the first rows of a file are never all dropped
    return out


def _parquet_chunks(path: Path, drop_unordered: bool, chunk_rows: int) -> Iterator[Series]:
    """The Parquet file as series of at most ``chunk_rows`` rows, read batch by batch (never whole)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(path)
        _check_parquet_footer(path, f.metadata)  # row counts and decoded size, before any batch is read
        batches = f.iter_batches(batch_size=chunk_rows)
        order, row, any_rows = _Order(), 1, False
        for batch in batches:
            if batch.num_rows == 0:
                continue
            any_rows = True
            chunk = _parquet_block(path, pa.Table.from_batches([batch]), row, order, drop_unordered)
            row += batch.num_rows
            if chunk is not None:
                yield chunk
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: a column name or text cell is not UTF-8 ({exc.reason})") from None
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())})") from None
    if not any_rows:
        raise DataError(f"{path}: empty file")


def _parquet_block(path: Path, table: object, first_row: int, order: _Order, drop_unordered: bool) -> Series | None:
    """Rows of an Arrow ``table`` (the first is file row ``first_row``) as a series; ``None`` if all dropped."""
    import pyarrow as pa

    assert isinstance(table, pa.Table)
    off = first_row - 1
    names, (ts_i, chans, lab_i, att_i) = _columns(path, table.column_names)
    ts_col = table.column(ts_i)
    unit = "s"
    if pa.types.is_timestamp(ts_col.type):
        ts = ts_col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy().astype(np.float64) / 1e6
    elif pa.types.is_integer(ts_col.type) or pa.types.is_floating(ts_col.type):
        ts = ts_col.to_numpy(zero_copy_only=False).astype(np.float64)
        unit = "numeric"
    elif pa.types.is_string(ts_col.type) or pa.types.is_large_string(ts_col.type):
        raw = ts_col.to_pylist()
        ts = np.empty(len(raw))
        for r, cell in enumerate(raw):
            try:
                ts[r] = parse_timestamp(str(cell))
            except ValueError:
                raise DataError(f"{path}: row {r + 1 + off}, column 'timestamp': {cell!r} is not a time") from None
    else:
        raise DataError(f"{path}: column 'timestamp' has type {ts_col.type}, expected a time or a number")
    vals = np.empty((table.num_rows, len(chans)))
    for j, c in enumerate(chans):
        col = table.column(c)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            raise DataError(f"{path}: column {names[c]!r} has type {col.type}, expected numbers")
        if col.null_count:
            r = next(i for i, v in enumerate(col.to_pylist()) if v is None)
            raise DataError(f"{path}: row {r + 1 + off}, column {names[c]!r}: missing value")
        vals[:, j] = col.to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(vals[:, j])
        if bad.any():
            r = int(np.argmax(bad))
            raise DataError(f"{path}: row {r + 1 + off}, column {names[c]!r}: {float(vals[r, j])!r} is not finite")
        huge = np.abs(vals[:, j]) > MAX_ABS_VALUE
        if huge.any():
            r = int(np.argmax(huge))
            raise DataError(f"{path}: row {r + 1 + off}, column {names[c]!r}: {float(vals[r, j])!r} is out of range "
                            f"(|value| > {MAX_ABS_VALUE:g})")
    labels = None
    if lab_i is not None:
        lab = np.asarray(table.column(lab_i).to_pylist(), dtype=object)
        ok = np.isin(lab, (0, 1))
        if not ok.all():
            r = int(np.argmax(~ok))
            raise DataError(f"{path}: row {r + 1 + off}, column 'label': {lab[r]!r} is not 0 or 1")
        labels = lab.astype(np.int8)
    attacks = None
    if att_i is not None:
        attacks = np.asarray(["" if v is None else str(v) for v in table.column(att_i).to_pylist()], dtype=object)
    bad_ts = ~np.isfinite(ts)
    if bad_ts.any():
        raise DataError(f"{path}: row {int(np.argmax(bad_ts)) + 1 + off}, column 'timestamp': not a finite time")
    if unit == "numeric":
        ts, unit = _to_seconds(ts, True, order)
    keep = order.check(path, ts, first_row, drop_unordered)
    if keep is not None and not keep.any():
        return None
    return _build(path, ts, vals, tuple(names[c] for c in chans), labels, attacks, keep, unit)




def read_npz(path: str | Path, split: str = "test") -> Series:
    """One SMD/ASD entity from ``../shared/data/smd_asd/npz`` as a series.

    The arrays carry no timestamps; rows are evenly spaced at the dataset's sampling period (60 s for
    SMD ``machine-*``, 300 s for ASD ``omi-*``) from epoch 0. ``split="test"`` attaches ``test_label``.
    """
    p = Path(path)
    if split not in NPZ_SPLITS:
        raise DataError(f"{p}: unknown split {split!r} (expected one of {', '.join(NPZ_SPLITS)})")
    try:
        with np.load(p, allow_pickle=False) as z:
            if split not in z.files:
                raise DataError(f"{p}: no {split!r} array (has {', '.join(z.files)})")
            vals = np.asarray(z[split], dtype=np.float64)
            labels = np.asarray(z["test_label"]).astype(np.int8).ravel() if split == "test" else None
    except (OSError, ValueError) as exc:
        raise DataError(f"{p}: not a readable .npz file ({exc})") from None
    if vals.ndim != 2 or vals.shape[0] == 0:
        raise DataError(f"{p}: {split!r} array has shape {vals.shape}, expected rows x metrics")
    period = next((v for k, v in NPZ_PERIOD_S.items() if p.stem.startswith(k)), 60.0)
    ts = np.arange(vals.shape[0], dtype=np.float64) * period
    channels = tuple(f"m{i + 1}" for i in range(vals.shape[1]))
    return Series(ts, vals, channels, labels, None, f"{p}:{split}", {"dataset": p.stem, "split": split})


def _nab_windows_file(path: Path) -> Path | None:
    """NAB's label file when ``path`` sits in a NAB ``data/<dir>/`` tree, else None."""
    if path.parent.parent.name != "data":
        return None
    windows_file = path.parent.parent.parent / "labels" / "combined_windows.json"
    return windows_file if windows_file.exists() else None


def _attach_nab_labels(series: Series, path: Path) -> Series:
    """Label rows inside NAB's anomaly windows when ``path`` sits in a NAB ``data/<dir>/`` tree."""
    windows_file = _nab_windows_file(path)
    if series.labels is not None or windows_file is None:
        return series
    key = f"{path.parent.name}/{path.name}"
    try:
        windows = json.loads(windows_file.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{windows_file}: malformed JSON ({exc})") from None
    if key not in windows:
        return series
    labels = np.zeros(len(series), dtype=np.int8)
    for start, end in windows[key]:
        lo, hi = parse_timestamp(start), parse_timestamp(end)
        labels[(series.timestamps >= lo) & (series.timestamps <= hi)] = 1
    return Series(series.timestamps, series.values, series.channels, labels, None, series.source,
                  {**series.meta, "dataset": "nab", "nab_key": key})


def write_csv(series: Series, path: str | Path) -> None:
    """Write ``series`` in the CSV format :func:`read_series` reads (timestamps as epoch seconds)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(p, "w", newline="") as fh:
        fh.write(csv_header(series.channels, series.labels is not None, series.attacks is not None))
        fh.write(csv_rows(series))


def csv_header(channels: tuple[str, ...], labels: bool = False, attacks: bool = False) -> str:
    """The header line :func:`write_csv` writes for a series of ``channels`` (with its label/attack columns)."""
    return _csv_text([["timestamp", *channels, *(["label"] if labels else []), *(["attack"] if attacks else [])]])


def csv_rows(series: Series) -> str:
    """The lines :func:`write_csv` writes for the rows of ``series`` (no header): a writer that keeps a file's
    text can format only the rows it has not written yet (:class:`tinywarden.telemetry.record.Recorder`)."""
    out = []
    for i in range(len(series)):
        row = [repr(float(series.timestamps[i]))]
        row += [f"{v:.10g}" for v in series.values[i]]
        if series.labels is not None:
            row.append(str(int(series.labels[i])))
        if series.attacks is not None:
            row.append(series.attacks[i] or "")
        out.append(row)
    return _csv_text(out)


def _csv_text(rows: list[list[str]]) -> str:
    buf = io.StringIO(newline="")
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


def write_parquet(series: Series, path: str | Path) -> None:
    """Write ``series`` as Parquet with the same columns as :func:`write_csv` (atomically, like it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, object] = {"timestamp": series.timestamps}
    for j, name in enumerate(series.channels):
        cols[name] = series.values[:, j]
    if series.labels is not None:
        cols["label"] = series.labels.astype(np.int8)
    if series.attacks is not None:
        cols["attack"] = [a or "" for a in series.attacks]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(p, "wb") as fh:
        pq.write_table(pa.table(cols), fh)
