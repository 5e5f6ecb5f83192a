"""Recording the host's live telemetry to a folder of files, to train on later.

A :class:`Recorder` takes samples from a :class:`~tinywarden.telemetry.live.LiveSampler` (the very
sampler the agent runs, so a model trained on the recording has the agent's channels) and writes them
to ``out_dir`` as Parquet or CSV *segments*, one file per ``rotate_s`` seconds (or ``max_rows`` rows).

Durability: the open segment is rewritten whole every ``flush_s`` seconds through
:func:`tinywarden.fileio.atomic_open` (temporary file, fsync, rename), so every file on disk is
always complete and readable, and a kill or a power loss loses at most the samples since the last
flush. Rewriting is why a segment is bounded: its rows are held in memory until it rotates. A CSV segment keeps
its text too, so each flush formats only its new rows and writes the rest as it was.

Resuming: a recorder never overwrites. It names each segment ``rec-<UTC start>-<seq>.<ext>`` with a
sequence number past every file already there, and it continues after the folder's last timestamp,
so the folder reads as one series (:func:`tinywarden.telemetry.io.read_folder`). A folder recorded
with other channels (another interface set, another host) is refused at start.

Clocks: timestamps follow the monotonic clock from the wall-clock time at start, and the wall clock is
compared with them at every sample. A wall clock that steps *back* (by more than :data:`CLOCK_STEP_S`) is not
followed, since that would write rows out of order: timestamps keep counting from the monotonic clock, ahead
of the wall clock by the step. A wall clock that steps *forward* (an NTP correction on a gateway without a
real-time clock, or a suspend, which the monotonic clock does not count) is followed: the timestamps jump
with it, which readers see as a gap. A run that starts with the wall clock before the folder's last
timestamp starts just after that timestamp instead. Each of these is said in :attr:`RecordStats.notes`.
A sampling slot the host missed (suspend, overload) is counted as a gap.

Interfaces: one that disappears while recording (removed, or renamed: the note names the new name when the
kernel's interface index shows it) keeps its channels, which read 0 until it is back; the others are
recorded as before, and both events are noted with the row they happened at.

One recorder a folder: a recorder holds an exclusive ``flock`` on the folder's :data:`LOCK_FILE` from its start
until :meth:`Recorder.close` (or its process ends), and a second one on the same folder is refused at start,
naming the first one's pid (two recorders would pick the same next sequence number and write files overlapping
in time). The lock is the kernel's, dropped when its process dies, so the file a killed recorder leaves behind
blocks nothing; the file stays (removing it on close would let two recorders lock two different files), and the
folder's readers pass it by (a hidden name, not a telemetry suffix).

A write that fails (a full disk, a folder gone) stops the recording cleanly: what was flushed before stays
on disk, and :attr:`RecordStats.stopped` says what happened in one line.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import re
import socket
import stat
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinywarden.errors import ConfigError, DataError
from tinywarden.fileio import atomic_open
from tinywarden.telemetry.io import CALENDAR_END, csv_header, csv_rows, folder_files, read_series, write_parquet
from tinywarden.telemetry.live import LiveSampler
from tinywarden.telemetry.series import Series

__all__ = ["CLOCK_STEP_S", "FORMATS", "LOCK_FILE", "RecordStats", "Recorder", "parse_duration", "segment_number"]

log = logging.getLogger(__name__)

#: File formats a recording is written in, by ``--format`` name: the file suffix.
FORMATS = {"parquet": ".parquet", "csv": ".csv"}
#: Gap rule, as :meth:`Series.gaps`: a spacing above this many sampling periods is a gap.
GAP_PERIODS = 2.0
#: A change of the wall clock against the recording's timestamps larger than this, between two samples, is a
#: clock step (NTP slews the clock far more slowly than this; a suspend or a manual set step it).
CLOCK_STEP_S = 2.0
#: Notes kept in :attr:`RecordStats.notes` (a flapping interface must not grow them without bound).
MAX_NOTES = 100
#: The first second of the year 10000: a file name (and ``time.gmtime``) has no time from there on.
LAST_TIME = CALENDAR_END
#: The file a running recorder holds locked in its folder, with its pid in it (see the module docstring).
LOCK_FILE = ".record.lock"
# Matched whole (fullmatch): "^...$" with re.match let a name ending in a newline through as a segment.
_SEGMENT = re.compile(r"rec-\d{8}T\d{6}Z-(\d+)\.(?:parquet|csv)")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, option: str = "--duration") -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``2h`` or ``1d``; anything else names the option.

    >>> parse_duration("2h"), parse_duration("90"), parse_duration("1.5m")
    (7200.0, 90.0, 90.0)
    """
    t = text.strip().lower()
    unit = _UNITS.get(t[-1:])
    number = t[:-1] if unit is not None else t
    try:
        value = float(number) * (unit or 1.0)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected a number of seconds or e.g. 30s, 15m, 2h, 1d") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{option} {text!r}: must be a positive duration")
    return value


def segment_number(name: str) -> int | None:
    """The sequence number in the name of a segment file (``rec-<UTC start>-<seq>.<ext>``), None for any other name.

    >>> segment_number("rec-20260101T000000Z-0042.csv"), segment_number("rec-20260101T000000Z-0042.csv\\n")
    (42, None)
    """
    m = _SEGMENT.fullmatch(name)
    return int(m.group(1)) if m else None


@dataclass
class RecordStats:
    """What a recording run did: rows written (flushed to disk), gaps, files and why it stopped early."""

    channels: tuple[str, ...]
    rows: int = 0
    rows_flushed: int = 0
    gaps: int = 0
    files: list[Path] = field(default_factory=list)
    resumed_after: float | None = None  # the folder's last timestamp when this run continued a recording
    started: float = 0.0
    last: float = 0.0
    stopped: str | None = None  # why the recording stopped before its duration (None: it did not)
    notes: list[str] = field(default_factory=list)  # clock steps, interfaces gone or back, one line each
    notes_dropped: int = 0  # notes past MAX_NOTES, counted only

    def note(self, text: str) -> None:
        """Keep one line about something the recording did not record as it came (also logged)."""
        log.info("%s", text)
        if len(self.notes) < MAX_NOTES:
            self.notes.append(text)
        else:
            self.notes_dropped += 1


class Recorder:
    """Samples ``sampler`` into segment files in ``out_dir`` (see the module docstring).

    ``clock`` is monotonic seconds (the sampler's cadence), ``wallclock`` epoch seconds read once at
    start; both are injectable for tests. The recorder holds ``out_dir`` locked until :meth:`close` (or the end
    of a ``with`` block, or its collection): a second recorder there is a :class:`ConfigError`.
    """

    def __init__(
        self,
        sampler: LiveSampler,
        out_dir: str | Path,
        *,
        fmt: str = "parquet",
        rotate_s: float = 3600.0,
        flush_s: float = 10.0,
        max_rows: int = 100_000,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        if fmt not in FORMATS:
            raise ConfigError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
        for name, v in (("--rotate", rotate_s), ("--flush", flush_s)):
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a positive number of seconds, got {v!r}")
        if max_rows < 1:
            raise ConfigError(f"max_rows must be >= 1, got {max_rows}")
        self.sampler = sampler
        self.out_dir = Path(out_dir)
        self.fmt = fmt
        self.rotate_s, self.flush_s, self.max_rows = float(rotate_s), float(flush_s), int(max_rows)
        self.wallclock = wallclock
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ConfigError(f"--out {self.out_dir}: exists and is not a folder")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # taken before the folder is listed: the next sequence number is this recorder's alone
        self._unlock = weakref.finalize(self, os.close, _lock_folder(self.out_dir))
        self.stats = RecordStats(channels=tuple(sampler.channels))
        try:
            self._seq, self.stats.resumed_after = self._existing()
        except BaseException:
            self.close()
            raise
        self._ifindex = {i: _ifindex(i) for i in getattr(sampler, "interfaces", ())}
        # the open CSV segment's text, kept between flushes (see _write)
        self._csv_path: Path | None = None
        self._csv_text: list[str] = []
        self._csv_rows = 0

    def close(self) -> None:
        """Release the folder (another recorder may then write to it); the files written stay. Idempotent."""
        self._unlock()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _existing(self) -> tuple[int, float | None]:
        """The next segment number, and the last timestamp of the recording already in the folder."""
        files = folder_files(self.out_dir)
        seqs = [n for f in files if (n := segment_number(f.name)) is not None]
        last: float | None = None
        for f in files:
            try:
                s = read_series(f)
            except DataError:
                continue  # a damaged file is skipped (and named) when the folder is read
            if s.channels != self.stats.channels:
                raise ConfigError(
                    f"--out {self.out_dir}: {f.name} was recorded with channels {', '.join(s.channels)}, this "
                    f"host samples {', '.join(self.stats.channels)}; record into another folder"
                )
            end = float(s.timestamps[-1])
            if end >= LAST_TIME:
                raise ConfigError(
                    f"--out {self.out_dir}: {f.name} ends at {end!r} s, after the year 9999: no recording can "
                    "continue after it; record into another folder"
                )
            last = end if last is None else max(last, end)
        return max(seqs, default=0) + 1, last

    def _segment_path(self, t: float) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))
        while True:
            p = self.out_dir / f"rec-{stamp}-{self._seq:04d}{FORMATS[self.fmt]}"
            self._seq += 1
            if not p.exists():
                return p

    def _write(self, path: Path, ts: list[float], rows: list[np.ndarray]) -> None:
        if self.fmt == "parquet":
            write_parquet(Series(np.asarray(ts), np.vstack(rows), self.stats.channels, source=str(path)), path)
            return
        # CSV: the segment's text is kept, so a flush formats only the rows since the last one (formatting every
        # row again at each flush made a 2 s flush of a 40-minute 10 Hz segment cost half a second of sampling)
        if self._csv_path != path:
            self._csv_path, self._csv_text, self._csv_rows = path, [], 0
        if len(ts) > self._csv_rows:
            new = Series(np.asarray(ts[self._csv_rows:]), np.vstack(rows[self._csv_rows:]), self.stats.channels,
                         source=str(path))
            self._csv_text.append(csv_rows(new))
            self._csv_rows = len(ts)
        with atomic_open(path, "w", newline="") as fh:
            fh.write(csv_header(self.stats.channels))
            fh.writelines(self._csv_text)

    def run(
        self,
        duration_s: float | None = None,
        *,
        progress: Callable[[RecordStats], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> RecordStats:
        """Record for ``duration_s`` seconds (forever when ``None``) or until ``should_stop()``; ``progress``
        is called after every sample. Returns the run's :class:`RecordStats`; never raises on a failed write."""
        st = self.stats
        period = self.sampler.period_s
        clock = self.sampler.clock
        mono0 = clock()
        base = wall0 = self.wallclock()
        if st.resumed_after is not None and base <= st.resumed_after:
            st.note(f"the wall clock ({_utc(base)}) is before the folder's last timestamp ({_utc(st.resumed_after)}); "
                    "this run's timestamps start just after that one, so the rows stay in order")
            base = st.resumed_after + period
        st.started = base

        def stamp() -> float:
            return base + (clock() - mono0)

        offset = wall0 - base  # wall clock minus the recording's timestamps, at the last sample
        jumped = 0.0  # forward clock steps followed, which the duration does not count
        missing: frozenset[str] = frozenset()

        seg_path: Path | None = None
        seg_start = 0.0
        ts: list[float] = []
        rows: list[np.ndarray] = []
        last_flush = mono0
        prev_t = st.resumed_after

        def flush() -> bool:
            nonlocal last_flush
            last_flush = clock()
            if seg_path is None or not ts:
                return True
            try:
                self._write(seg_path, ts, rows)
            except OSError as exc:
                st.stopped = (f"cannot write {seg_path} ({exc.strerror or exc}): recording stopped; "
                              f"{st.rows_flushed} row(s) written before are kept")
                return False
            if seg_path not in st.files:
                st.files.append(seg_path)
            st.rows_flushed = st.rows
            return True

        try:
            for t, sample in self.sampler.stream(None, wallclock=stamp):
                now = self.wallclock() - stamp()
                if now - offset > CLOCK_STEP_S and now > CLOCK_STEP_S:
                    st.note(f"row {st.rows + 1}: the wall clock jumped forward {now:.0f} s (a clock step or a "
                            "suspend); timestamps follow it from here, a gap in the recording")
                    base += now
                    t += now
                    jumped += now
                    now = 0.0
                elif now - offset > CLOCK_STEP_S:
                    st.note(f"row {st.rows + 1}: the wall clock stepped forward {now - offset:.0f} s, back within "
                            f"{CLOCK_STEP_S:g} s of the recording's timestamps")
                elif now - offset < -CLOCK_STEP_S:
                    st.note(f"row {st.rows + 1}: the wall clock stepped back {offset - now:.0f} s; timestamps keep "
                            f"counting on the monotonic clock so rows stay in order ({-now:.0f} s ahead of the wall "
                            "clock from here)")
                offset = now
                gone = getattr(self.sampler, "missing_interfaces", frozenset())
                if gone != missing:
                    self._note_interfaces(missing, gone)
                    missing = gone
                if prev_t is not None and t - prev_t > GAP_PERIODS * period:
                    st.gaps += 1
                prev_t = t
                if seg_path is None or t - seg_start >= self.rotate_s or len(ts) >= self.max_rows:
                    if not flush():
                        break
                    seg_path, seg_start, ts, rows = self._segment_path(t), t, [], []
                ts.append(t)
                rows.append(sample)
                st.rows += 1
                st.last = t
                if clock() - last_flush >= self.flush_s and not flush():
                    break
                if progress is not None:
                    progress(st)
                # the sample in the last slot of ``duration_s`` ends the run (robust to a late wake-up)
                if (duration_s is not None and t - jumped - st.started >= duration_s - 1.5 * period) or should_stop():
                    break
        finally:
            if st.stopped is None:
                flush()
        return st

    def _note_interfaces(self, before: frozenset[str], now: frozenset[str]) -> None:
        row = self.stats.rows + 1
        for iface in sorted(now - before):
            renamed = ""
            index = self._ifindex.get(iface)
            if index is not None:
                other = next((n for i, n in socket.if_nameindex() if i == index and n != iface), None)
                renamed = f" (renamed to {other}: same interface index)" if other else ""
            self.stats.note(f"row {row}: interface {iface} disappeared{renamed}; its channels read 0 while it is "
                            "gone, the other channels are recorded as before")
        for iface in sorted(before - now):
            self.stats.note(f"row {row}: interface {iface} is back; its channels are recorded again")


def _lock_folder(folder: Path) -> int:
    """A descriptor of ``folder``'s :data:`LOCK_FILE` holding its exclusive lock, with this process's pid written in
    it; a :class:`ConfigError` naming the holder's pid when another recorder has it. Closing the descriptor (or the
    process ending) releases the lock."""
    path = folder / LOCK_FILE
    try:  # not through a link (it is truncated below) and not a FIFO or device a planted name could block on
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        raise ConfigError(f"--out {folder}: cannot lock {path} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"--out {folder}: cannot lock {path} (not a regular file)")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip()
        os.close(fd)
        pid = f" (pid {holder})" if holder.isdigit() else ""  # empty while the holder is still writing it
        raise ConfigError(f"--out {folder}: another recorder{pid} is writing to this folder; stop it or record into "
                          "another folder") from None
    except OSError as exc:  # a file system without locks
        os.close(fd)
        raise ConfigError(f"--out {folder}: cannot lock {path} ({exc.strerror or exc})") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _ifindex(name: str) -> int | None:
    """The kernel's index of interface ``name`` (kept across a rename), or None where it has none."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
