"""The tamper-evident local audit log: append-only JSON lines, each carrying the SHA-256 of the previous.

Every record is one line ``{"seq", "time", "kind", "data", "prev", "hash"}``: ``seq`` counts from 0
without gaps, ``prev`` is the previous record's ``hash`` (64 zeros for the first), and ``hash`` is the
SHA-256 of the record's canonical JSON without the ``hash`` key. Editing, removing or reordering a
record therefore breaks the chain at a place :func:`verify` can name. A small side file ``LOG.head``,
replaced atomically after each append, holds the last ``seq`` and ``hash``, so cutting whole records
off the end is detected too.

Crash safety: each record is written with one ``write`` and ``fsync``. A crash mid-write leaves a
partial last line; :func:`verify` reports it as a crash artefact (the records before it stay valid),
and the next :class:`AuditLog` to open the file moves the partial bytes out of the chain and records
their length and SHA-256 in a ``recovered`` record, so the evidence is kept.

Size is bounded: when the live file would grow past ``max_bytes`` it becomes ``LOG.1`` (older ones
shift to ``LOG.2`` ... ``LOG.<keep>``, the oldest is deleted) and the new file starts with a ``rotate``
record whose ``prev`` is the last hash of the old file, so the chain stays verifiable across files.

The log holds why things happened (scores, threshold, tier, policy version, model id), never raw
telemetry.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> log = AuditLog(d / "audit.log")
>>> _ = log.append("action", {"tier": 1, "score": 0.93}, time=10.0)
>>> verify(d / "audit.log").ok
True
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinywarden.errors import TinywardenError

GENESIS = "0" * 64
RECORD_KEYS = ("seq", "time", "kind", "data", "prev", "hash")


class AuditError(TinywardenError):
    """An audit log that cannot be written or read (not a tampering finding: see :func:`verify`)."""


def _canonical(record: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def record_hash(record: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) a record must carry: over its canonical JSON without the ``hash`` key."""
    return hashlib.sha256(_canonical(record)).hexdigest()


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf; keep them readable as strings instead of failing to log a fault."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _no_constant(name: str) -> Any:
    """``json.loads`` hook: NaN and infinities never appear in a record this log wrote (see :func:`_clean`)."""
    raise ValueError(f"non-finite number {name}")


def _finite_float(text: str) -> float:
    """``json.loads`` hook: a number like ``1e400`` would become infinity, which no record holds either."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def segments(path: str | Path) -> list[Path]:
    """The files of the log at ``path`` that exist, oldest first (``LOG.N`` ... ``LOG.1``, ``LOG``)."""
    p = Path(path)
    rotated = []
    for f in p.parent.glob(p.name + ".*"):
        suffix = f.name[len(p.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), f))
    out = [f for _, f in sorted(rotated, reverse=True)]
    if p.exists():
        out.append(p)
    return out


def _head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def _atomic_write(path: Path, text: str, fsync: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class AuditLog:
    """Appends hash-chained records to the log at ``path`` (see the module docstring).

    ``max_bytes`` bounds each file and ``keep`` the number of rotated files, so the log never takes
    more than about ``(keep + 1) * max_bytes``. ``fsync=False`` trades crash safety for speed.
    """

    def __init__(
        self, path: str | Path, max_bytes: int = 1_000_000, keep: int = 4, fsync: bool = True
    ) -> None:
        if max_bytes < 1024 or keep < 1:
            raise AuditError(f"{path}: max_bytes must be >= 1024 and keep >= 1 (got {max_bytes}, {keep})")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.fsync = fsync
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot create directory ({exc.strerror})") from exc
        self.seq = 0
        self.last_hash = GENESIS
        self._recover()

    def _recover(self) -> None:
        """Find the chain's end; move a partial last line (a crash mid-write) out of the chain."""
        partial: bytes | None = None
        for seg in reversed(segments(self.path)):
            raw = seg.read_bytes()
            if seg == self.path and raw and not raw.endswith(b"\n"):
                cut = raw.rfind(b"\n") + 1
                partial = raw[cut:]
                with open(seg, "r+b") as f:
                    f.truncate(cut)
                    os.fsync(f.fileno())
                raw = raw[:cut]
            lines = raw.splitlines()
            if lines:
                try:
                    last = json.loads(lines[-1])
                    self.seq = int(last["seq"]) + 1
                    self.last_hash = str(last["hash"])
                except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
                    raise AuditError(
                        f"{seg}: line {len(lines)}: last record unreadable; run `tinywarden audit verify` "
                        "and move the log aside"
                    ) from exc
                break
        if partial is not None:
            self.append(
                "recovered",
                {"partial_bytes": len(partial), "partial_sha256": hashlib.sha256(partial).hexdigest()},
            )

    def append(self, kind: str, data: Mapping[str, Any], time: float | None = None) -> dict[str, Any]:
        """Write one record of ``kind`` with ``data`` (JSON-able; NaN/inf become strings); return it."""
        record: dict[str, Any] = {
            "seq": self.seq,
            "time": _clean(float(time)) if time is not None else None,
            "kind": kind,
            "data": _clean(dict(data)),
            "prev": self.last_hash,
        }
        record["hash"] = record_hash(record)
        line = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        if (
            self.path.exists()
            and self.path.stat().st_size > 0
            and (self.path.stat().st_size + len(line) > self.max_bytes)
        ):
            self._rotate()
            return self.append(kind, data, time)
        self._write(line)
        self.seq += 1
        self.last_hash = record["hash"]
        _atomic_write(
            _head_path(self.path), json.dumps({"seq": record["seq"], "hash": record["hash"]}) + "\n", self.fsync
        )
        return record

    def _write(self, line: bytes) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot open for append ({exc.strerror})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        # LOG.<keep> is overwritten by LOG.<keep-1>: that is where the oldest file is dropped.
        for i in range(self.keep, 1, -1):
            src = self.path.with_name(f"{self.path.name}.{i - 1}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        _fsync_dir(self.path.parent)
        self.append("rotate", {"previous_seq": self.seq - 1, "previous_hash": self.last_hash})


@dataclass(frozen=True)
class Problem:
    """One finding of :func:`verify`: ``severity`` is ``"tamper"``, ``"crash"`` or ``"info"``."""

    severity: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}"


@dataclass
class VerifyReport:
    """The result of :func:`verify`: how many records are valid and every problem found."""

    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    files: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing points to tampering (crash artefacts and notes are allowed)."""
        return not any(p.severity == "tamper" for p in self.problems)


def verify(path: str | Path) -> VerifyReport:
    """Check the whole chain of the log at ``path`` (with its rotated files and head file).

    Names every edited, reordered, removed or truncated record and a partial last record left by a
    crash; never raises for a damaged log (only for one that does not exist).
    """
    p = Path(path)
    files = segments(p)
    if not files:
        raise AuditError(f"{p}: no such audit log")
    report = VerifyReport(files=[str(f) for f in files])
    parsed: list[tuple[str, dict[str, Any]]] = []
    for f in files:
        raw = f.read_bytes()
        lines = raw.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        for i, line in enumerate(complete, start=1):
            where = f"{f.name}:{i}"
            try:
                rec = json.loads(line, parse_constant=_no_constant, parse_float=_finite_float)
                if (
                    not isinstance(rec, dict)
                    or set(rec) != set(RECORD_KEYS)
                    or not isinstance(rec["seq"], int)
                ):
                    raise ValueError("missing or extra keys")
            except (ValueError, RecursionError):
                report.problems.append(Problem("tamper", where, "not a valid record (edited or corrupted)"))
                continue
            parsed.append((where, rec))
        if tail:
            where = f"{f.name}:{len(complete) + 1}"
            if f == files[-1]:
                report.problems.append(
                    Problem(
                        "crash",
                        where,
                        f"partial last record ({len(tail)} bytes; crash mid-write); "
                        "the records before it are valid",
                    )
                )
            else:
                report.problems.append(Problem("tamper", where, "unterminated record inside the chain"))

    present = {rec["seq"] for _, rec in parsed}
    expected_seq: int | None = None
    expected_prev: str | None = None
    for where, rec in parsed:
        seq = rec["seq"]
        if record_hash(rec) != rec["hash"]:
            report.problems.append(
                Problem("tamper", where, f"seq {seq}: content does not match its hash (edited)")
            )
        if expected_seq is None:
            if seq == 0 and rec["prev"] == GENESIS:
                pass
            elif rec["kind"] == "rotate":
                report.problems.append(
                    Problem("info", where, f"chain starts at seq {seq}; older files were rotated away")
                )
            else:
                report.problems.append(
                    Problem(
                        "tamper", where, f"chain starts at seq {seq} with no rotate record (records removed)"
                    )
                )
        elif rec["prev"] != expected_prev or seq != expected_seq:
            if seq == expected_seq:
                msg = (
                    f"seq {seq}: prev hash does not match seq {seq - 1} (that record was edited or replaced)"
                )
            elif seq > expected_seq:
                gap = range(expected_seq, seq)
                if all(s in present for s in gap):
                    msg = f"seq {seq} found where seq {expected_seq} was expected (records reordered)"
                else:
                    lost = f"{gap[0]}" if len(gap) == 1 else f"{gap[0]}..{gap[-1]}"
                    msg = f"seq {lost} missing before seq {seq} (records removed)"
            else:
                msg = f"seq {seq} found after seq {expected_seq - 1} (records reordered or duplicated)"
            report.problems.append(Problem("tamper", where, msg))
        # Follow the chain as it stands, so one damaged place is reported once, not at every later record.
        expected_seq = seq + 1
        expected_prev = rec["hash"]
        report.records += 1
        report.first_seq = seq if report.first_seq is None else report.first_seq
        report.last_seq = seq

    _check_head(p, parsed, report)
    return report


def _check_head(path: Path, parsed: list[tuple[str, dict[str, Any]]], report: VerifyReport) -> None:
    head_file = _head_path(path)
    if not head_file.exists():
        if parsed:
            report.problems.append(
                Problem("info", head_file.name, "no head file; records cut off the end could not be detected")
            )
        return
    try:
        head = json.loads(head_file.read_text(encoding="utf-8"))
        head_seq, head_hash = int(head["seq"]), str(head["hash"])
    except (ValueError, KeyError, TypeError, OSError, OverflowError, RecursionError):
        report.problems.append(Problem("tamper", head_file.name, "head file unreadable"))
        return
    by_seq = {rec["seq"]: rec for _, rec in parsed}
    last = max(by_seq, default=-1)
    if head_seq > last:
        lost = f"{last + 1}" if head_seq == last + 1 else f"{last + 1}..{head_seq}"
        report.problems.append(
            Problem(
                "tamper",
                path.name,
                f"log ends at seq {last} but the head file says {head_seq}: seq {lost} cut off (truncated)",
            )
        )
    elif head_seq in by_seq and by_seq[head_seq]["hash"] != head_hash:
        report.problems.append(
            Problem(
                "tamper", head_file.name, f"seq {head_seq} does not carry the hash the head file recorded"
            )
        )
    elif head_seq == last - 1:
        report.problems.append(
            Problem(
                "crash",
                head_file.name,
                f"head file one record behind (seq {head_seq}, log ends at {last}): "
                "crash between writing a record and updating the head",
            )
        )
    elif head_seq < last:
        report.problems.append(
            Problem("tamper", head_file.name, f"head file says seq {head_seq} but the log runs to {last}")
        )
