"""The multichannel telemetry time series that every later stage consumes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tinywarden.errors import DataError

#: The largest magnitude a telemetry value may have. Features square the samples (band energies, RMS) and
#: the float32 detectors and int8 calibration cast them; 1e30 squared stays far inside float64 and 1e30
#: inside float32 (max 3.4e38), while real counters (bytes, nanoseconds since 1970: < 1e19) fit with room.
MAX_ABS_VALUE = 1e30


@dataclass(frozen=True)
class Gap:
    """A stretch of time with no samples, longer than the series' usual sampling period allows."""

    after_row: int
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Series:
    """Evenly or unevenly sampled multichannel telemetry.

    Invariants (checked at construction): ``timestamps`` is float64 epoch seconds, strictly increasing;
    ``values`` is float64 of shape ``(len(timestamps), len(channels))`` with every value finite and of
    magnitude at most :data:`MAX_ABS_VALUE`;
    ``labels`` (optional) holds 0 = normal / 1 = anomalous per row; ``attacks`` (optional) names the
    injected attack per row ("" when normal).

    >>> s = Series(np.array([0.0, 1.0, 2.0]), np.ones((3, 2)), ("cpu_pct", "mem_pct"))
    >>> s.n_channels, len(s)
    (2, 3)
    """

    timestamps: np.ndarray
    values: np.ndarray
    channels: tuple[str, ...]
    labels: np.ndarray | None = None
    attacks: np.ndarray | None = None
    source: str = "<memory>"
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ts = np.asarray(self.timestamps, dtype=np.float64)
        vals = np.asarray(self.values, dtype=np.float64)
        if vals.ndim == 1:
            vals = vals[:, None]
        object.__setattr__(self, "timestamps", ts)
        object.__setattr__(self, "values", vals)
        object.__setattr__(self, "channels", tuple(self.channels))
        src = self.source
        if ts.ndim != 1 or len(ts) == 0:
            raise DataError(f"{src}: no rows of telemetry")
        if not self.channels:
            raise DataError(f"{src}: no channel columns")
        if vals.shape != (len(ts), len(self.channels)):
            raise DataError(f"{src}: values have shape {vals.shape}, expected ({len(ts)}, {len(self.channels)})")
        if len(set(self.channels)) != len(self.channels):
            raise DataError(f"{src}: duplicate channel names {self.channels}")
        bad = ~np.isfinite(ts)
        if bad.any():
            raise DataError(f"{src}: row {int(np.argmax(bad))}: timestamp is not finite")
        d = np.diff(ts)
        if (d <= 0).any():
            i = int(np.argmax(d <= 0)) + 1
            kind = "duplicate" if d[i - 1] == 0 else "decreasing"
            raise DataError(f"{src}: row {i}: {kind} timestamp {ts[i]!r} (previous {ts[i - 1]!r})")
        finite = np.isfinite(vals)
        if not finite.all():
            r, c = np.argwhere(~finite)[0]
            raise DataError(f"{src}: row {r}, column {self.channels[c]!r}: value {float(vals[r, c])!r} is not finite")
        huge = np.abs(vals) > MAX_ABS_VALUE
        if huge.any():
            r, c = np.argwhere(huge)[0]
            raise DataError(f"{src}: row {r}, column {self.channels[c]!r}: value {float(vals[r, c])!r} is out of range "
                            f"(|value| > {MAX_ABS_VALUE:g})")
        if self.labels is not None:
            lab = np.asarray(self.labels)
            if lab.shape != ts.shape:
                raise DataError(f"{src}: label column has {lab.shape[0]} rows, expected {len(ts)}")
            if not np.isin(lab, (0, 1)).all():
                r = int(np.argmax(~np.isin(lab, (0, 1))))
                raise DataError(f"{src}: row {r}, column 'label': {lab[r]!r} is not 0 or 1")
            object.__setattr__(self, "labels", lab.astype(np.int8))
        if self.attacks is not None:
            att = np.asarray(self.attacks, dtype=object)
            if att.shape != ts.shape:
                raise DataError(f"{src}: attack column has {att.shape[0]} rows, expected {len(ts)}")
            object.__setattr__(self, "attacks", att)

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def period(self) -> float:
        """The typical sampling period in seconds (median spacing; 1.0 for a single row)."""
        if len(self) < 2:
            return 1.0
        return float(np.median(np.diff(self.timestamps)))

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def gaps(self, tolerance: float = 2.0) -> list[Gap]:
        """Stretches where the spacing exceeds ``tolerance`` times the usual period.

        Gaps are reported, never filled: a window that spans one is still computed from the samples
        that exist, and callers decide whether to warn or to drop it.
        """
        watch = GapWatch(tolerance)
        watch.add(self)
        return watch.gaps

    def slice(self, start: int, stop: int) -> Series:
        """Rows ``start:stop`` as a new series."""
        sl = slice(start, stop)
        return Series(
            self.timestamps[sl],
            self.values[sl],
            self.channels,
            None if self.labels is None else self.labels[sl],
            None if self.attacks is None else self.attacks[sl],
            self.source,
            dict(self.meta),
        )

    def split(self, fraction: float) -> tuple[Series, Series]:
        """The first ``fraction`` of rows and the rest."""
        if not 0.0 < fraction < 1.0:
            raise DataError(f"{self.source}: split fraction must be in (0, 1), got {fraction}")
        cut = int(round(len(self) * fraction))
        if cut < 1 or cut >= len(self):
            raise DataError(f"{self.source}: {len(self)} rows are too few to split at {fraction}")
        return self.slice(0, cut), self.slice(cut, len(self))

    def days(self) -> float:
        """Time covered, in days (at least one sampling period)."""
        return float(self.timestamps[-1] - self.timestamps[0] + self.period) / 86400.0


class GapWatch:
    """The gaps of a series read in chunks (:func:`~tinywarden.telemetry.io.iter_series`), by the rule of
    :meth:`Series.gaps`, against the first chunk's usual period (the whole series' median spacing would need every
    timestamp at once). ``gaps`` count rows from the first chunk's first row.

    >>> s = Series(np.array([0.0, 1.0, 2.0, 60.0, 61.0]), np.zeros(5), ("x",))
    >>> w = GapWatch(); w.add(s.slice(0, 3)); w.add(s.slice(3, 5))
    >>> w.gaps == s.gaps(), w.rows
    (True, 5)
    """

    def __init__(self, tolerance: float = 2.0) -> None:
        self.tolerance = tolerance
        self.gaps: list[Gap] = []
        self.rows = 0
        #: rows the reader dropped as duplicate or out of time order (``--drop-unordered``), over the chunks seen
        self.dropped = 0
        #: the unit the first chunk's numeric times were read in (``Series.meta["time_unit"]``)
        self.time_unit = "s"
        self._period: float | None = None
        self._last: float | None = None

    def add(self, chunk: Series) -> None:
        """Note the gaps in ``chunk``, the series' next rows, and between it and the rows before (and the rows
        its reader dropped)."""
        self.dropped += int(chunk.meta.get("dropped_rows", 0) or 0)
        if self._period is None:
            self._period = chunk.period
            self.time_unit = str(chunk.meta.get("time_unit", "s"))
        ts = chunk.timestamps if self._last is None else np.concatenate(([self._last], chunk.timestamps))
        first = self.rows if self._last is None else self.rows - 1  # the row ts[0] is
        for i in np.flatnonzero(np.diff(ts) > self.tolerance * self._period):
            self.gaps.append(Gap(first + int(i), float(ts[i]), float(ts[i + 1])))
        self.rows += len(chunk)
        self._last = float(chunk.timestamps[-1])


    def notes(self, rows: int | None = None) -> list[str]:
        """What a command says of the telemetry it read (:func:`time_unit_note`, :func:`dropped_note`,
        :func:`gap_note`), the gaps among its first ``rows`` rows only when given."""
        gaps = self.gaps if rows is None else [g for g in self.gaps if g.after_row + 1 < rows]
        return [n for n in (time_unit_note(self.time_unit), dropped_note(self.dropped), gap_note(gaps)) if n]


#: How the notes name the units numeric times may be read in (:func:`tinywarden.telemetry.io.parse_timestamp`).
TIME_UNIT_NAMES = {"ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


def time_unit_note(unit: str) -> str | None:
    """The note for numeric times read in ``unit`` rather than epoch seconds; None for seconds."""
    if unit == "s":
        return None
    return (f"times read as epoch {TIME_UNIT_NAMES.get(unit, unit)} (numbers this large cannot be seconds) and "
            "converted to seconds")


def dropped_note(rows: int) -> str | None:
    """The note for rows dropped as duplicate or out of time order; None when none was."""
    return f"dropped {rows} row(s) with duplicate or out-of-order timestamps" if rows else None


def gap_note(gaps: Sequence[Gap]) -> str | None:
    """What a command that reads telemetry says of its gaps in time (``train``, ``score``, ``agent --replay``): one
    line with their count and the largest, by the file row it follows (1-based, the header being row 1); None
    without any.

    >>> gap_note([Gap(2, 2.0, 60.0)]).split(";")[0]
    '1 gap(s) in time, largest 58 s after row 4'
    """
    if not gaps:
        return None
    big = max(gaps, key=lambda g: g.seconds)
    return (f"{len(gaps)} gap(s) in time, largest {big.seconds:.0f} s after row {big.after_row + 2}; windows spanning "
            "a gap are scored from the samples that exist (nothing is interpolated)")
