"""The tamper-evident local audit log: append-only JSON lines, each keyed to the previous by an HMAC.

Every record is one line ``{"seq", "time", "kind", "data", "prev", "hash"}``: ``seq`` counts from 0
without gaps, ``prev`` is the previous record's ``hash`` (64 zeros for the first), and ``hash`` is the
HMAC-SHA256, under a per-device :class:`AuditKey`, of the record's canonical JSON without the ``hash``
key. Editing, removing, reordering, appending or recomputing records therefore breaks the chain at a
place :func:`verify` can name, and only a holder of the key can write a chain that verifies. The key
lives in its own file (mode 0600), never in the log's folder.

The chain starts at a ``genesis`` record that names the log (``log_id``, ``key_id``, ``device_id``), and
every rotated file starts with a keyed ``rotate`` record that says how many older files were kept, so a
fresh forged log, a log cut at its start and deleted rotated files are all visible. A small side file
``LOG.head``, replaced atomically after each append and keyed too, holds the last ``seq`` and ``hash``,
so records cut off the end are detected unless the head is rewound with them, which only a key holder
can do. What a key holder (local root) can still do, rewrite the whole log, is caught outside the
device: each escalated incident carries the log's head (``seq``, ``hash``) as an anchor, and
:func:`check_anchor` tells whether a log still holds it. See docs/audit.md.

A log written without a key (the format before keys, or ``AuditLog(path)``) is chained with plain
SHA-256: :func:`verify` checks it against accidents and says it is unkeyed, never that it is intact.

Crash safety: each record is written with one ``write`` and ``fsync``. A crash mid-write leaves a
partial last line; :func:`verify` reports it as a crash artefact (the records before it stay valid),
and the next :class:`AuditLog` to open the file moves the partial bytes out of the chain and records
their length and SHA-256 in a ``recovered`` record, so the evidence is kept.

Several writers: every :class:`AuditLog` on one file (a second agent, ``tinywarden respond --audit`` run on
the agent's log) appends under an exclusive lock on the log's folder and first continues after the last record
on disk if another writer wrote since, so their records extend one chain (and one head) instead of forking it.

Size is bounded: when the live file would grow past ``max_bytes`` it becomes ``LOG.1`` (older ones
shift to ``LOG.2`` ... ``LOG.<keep>``, the oldest is deleted) and the new file starts with a ``rotate``
record whose ``prev`` is the last hash of the old file, so the chain stays verifiable across files.

The log holds why things happened (scores, threshold, tier, policy version, model id), never raw
telemetry.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> key = load_key(d / "keys" / "audit.key", create=True)
>>> log = AuditLog(d / "logs" / "audit.log", key=key)
>>> _ = log.append("action", {"tier": 1, "score": 0.93}, time=10.0)
>>> report = verify(d / "logs" / "audit.log", key=key)
>>> report.verdict, report.records
('intact', 2)
>>> check_anchor(report, *log.head)
[]
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import stat
import time as _time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinywarden.errors import TinywardenError
from tinywarden.fileio import NotRegularFile, atomic_write, fsync_dir, open_regular

GENESIS = "0" * 64
RECORD_KEYS = ("seq", "time", "kind", "data", "prev", "hash")
KEY_BYTES = 32
# Keyed chain and keyed head are MACs over different domains, so one can never stand for the other.
_RECORD_DOMAIN = b"tinywarden-audit-record-v1\0"
_HEAD_DOMAIN = b"tinywarden-audit-head-v1\0"
_KEY_ID_DOMAIN = b"tinywarden-audit-key-id-v1\0"
HEX_HASH = re.compile(r"[0-9a-f]{64}")  # a record hash or MAC, as the writer prints it
_MAX_KEY_FILE = 1024


class AuditError(TinywardenError):
    """An audit log or key that cannot be written or read (not a tampering finding: see :func:`verify`)."""


class AuditKeyMismatch(AuditError):
    """A keyed log found where a writer was given another key (lost or replaced): it cannot be continued.

    ``log_key_id`` is the id of the key the log was written with.
    """

    def __init__(self, message: str, log_key_id: str) -> None:
        super().__init__(message)
        self.log_key_id = log_key_id


# ------------------------------------------------------------------------------------------------ key


@dataclass(frozen=True)
class AuditKey:
    """The per-device secret that keys the chain; ``path`` is where it was read from (for messages).

    ``key_id`` names the key in the log without revealing it (a domain-separated SHA-256 of the secret).
    """

    secret: bytes = field(repr=False)
    path: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != KEY_BYTES:
            raise AuditError(f"an audit key is {KEY_BYTES} bytes")

    @property
    def key_id(self) -> str:
        return hashlib.sha256(_KEY_ID_DOMAIN + self.secret).hexdigest()[:16]

    def mac(self, domain: bytes, body: bytes) -> str:
        """HMAC-SHA256 (hex) of ``body`` in ``domain``."""
        return hmac.new(self.secret, domain + body, hashlib.sha256).hexdigest()


def load_key(path: str | Path, create: bool = False) -> AuditKey:
    """Read the audit key at ``path`` (64 hex digits, mode 0600); with ``create``, make one if missing.

    A new key gets a fresh 32-byte secret, its file mode 0600 and its folder (made if needed) 0700. A
    key file that others can read or write is refused: whoever reads the key can forge the log; so is one owned by
    another user than this one or root, or in a folder anyone may write (without the sticky bit).
    """
    p = Path(path)
    if create and not p.exists():
        try:
            p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: read theirs
        except OSError as exc:
            raise AuditError(f"{p}: cannot create the audit key ({exc.strerror or exc})") from None
        else:
            try:
                os.write(fd, (secrets.token_hex(KEY_BYTES) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(p.parent)
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise AuditError(f"{p}: the audit key must be a regular file")
        with open(p, "rb") as f:
            raw = f.read(_MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise AuditError(f"{p}: no such audit key") from None
    except OSError as exc:
        raise AuditError(f"{p}: cannot read the audit key ({exc.strerror or exc})") from None
    if st.st_mode & 0o077:
        raise AuditError(
            f"{p}: the audit key has mode {stat.S_IMODE(st.st_mode):04o}; whoever reads it can forge the log, "
            "so it must be readable by its owner only (chmod 600)"
        )
    # As OpenSSH's StrictModes: a key another user owns, or one in a folder anyone may write (and so swap the key
    # for their own), is not this agent's key.
    if st.st_uid not in (os.geteuid(), 0):
        raise AuditError(f"{p}: the audit key belongs to uid {st.st_uid}, not to this user or root; whoever owns it "
                         "can forge the log")
    folder = p.parent.stat()
    if folder.st_mode & 0o002 and not folder.st_mode & stat.S_ISVTX:
        raise AuditError(f"{p.parent}: anyone may replace the audit key in this folder (mode "
                         f"{stat.S_IMODE(folder.st_mode):04o}); keep it in a folder only its owner writes (chmod 700)")
    text = raw.decode("ascii", errors="replace").strip().lower()
    if len(raw) > _MAX_KEY_FILE or not HEX_HASH.fullmatch(text):
        raise AuditError(f"{p}: not an audit key (expected {2 * KEY_BYTES} hex digits)")
    return AuditKey(bytes.fromhex(text), p)


# -------------------------------------------------------------------------------------------- records


def _canonical(record: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def record_hash(record: Mapping[str, Any], key: AuditKey | None = None) -> str:
    """The ``hash`` a record must carry: HMAC-SHA256 under ``key`` (plain SHA-256 for an unkeyed log),
    over its canonical JSON without the ``hash`` key."""
    body = _canonical(record)
    return hashlib.sha256(body).hexdigest() if key is None else key.mac(_RECORD_DOMAIN, body)


def _same(a: str, b: str) -> bool:
    """Constant-time equality of two hex strings as read from a file (which may hold any text)."""
    return hmac.compare_digest(a.encode(), b.encode())


def _head_mac(key: AuditKey, seq: int, hash_: str) -> str:
    return key.mac(_HEAD_DOMAIN, _canonical({"seq": seq, "hash": hash_, "key_id": key.key_id}))


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf; keep them readable as strings instead of failing to log a fault."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFinite(name)


def _finite_float(text: str) -> float:
    """A number like ``1e400`` would become infinity, which no record holds either."""
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(f"number {text[:20]}")
    return value


def _loads(line: bytes | str) -> Any:
    """``json.loads`` that refuses NaN/Infinity and numbers overflowing to infinity (which the writer never
    writes) instead of accepting them."""
    return json.loads(line, parse_constant=_reject_constant, parse_float=_finite_float)


def _line(record: Mapping[str, Any]) -> bytes:
    """The one byte form of a record line (without its newline): what the writer writes and verify demands."""
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def _is_record(rec: Any) -> bool:
    return (
        isinstance(rec, dict)
        and set(rec) == set(RECORD_KEYS)
        and isinstance(rec["seq"], int)
        and not isinstance(rec["seq"], bool)
        and isinstance(rec["kind"], str)
        and isinstance(rec["data"], dict)
        and isinstance(rec["prev"], str)
        and isinstance(rec["hash"], str)
    )


def _marker(rec: Mapping[str, Any]) -> bool:
    """A record that starts a keyed chain or segment: ``genesis``, or a ``rotate`` that names its key."""
    data = rec.get("data")
    return rec.get("kind") in ("genesis", "rotate") and isinstance(data, dict) and isinstance(data.get("key_id"), str)


def segments(path: str | Path) -> list[Path]:
    """The files of the log at ``path`` that exist, oldest first (``LOG.N`` ... ``LOG.1``, ``LOG``)."""
    p = Path(path)
    rotated = []
    for f in p.parent.glob(p.name + ".*"):
        suffix = f.name[len(p.name) + 1 :]
        if suffix.isascii() and suffix.isdigit():  # "²".isdigit() too, which int() refuses, and "١" is int 1
            rotated.append((int(suffix), f))
    out = [f for _, f in sorted(rotated, reverse=True)]
    if p.exists():
        out.append(p)
    return out


def set_aside(path: str | Path, now: float | None = None) -> Path:
    """Rename the log at ``path`` (every segment and its head) to ``LOG.set-aside-YYYYmmddTHHMMSSZ``;
    return the new path of the live file. Nothing is deleted: the renamed log still verifies with
    :func:`verify` (``LOG.set-aside-….1`` … are its rotated files, ``….head`` its head).
    """
    p = Path(path)
    stamp = _dt.datetime.fromtimestamp(_time.time() if now is None else now, _dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = p.with_name(f"{p.name}.set-aside-{stamp}")
    n = 1
    while base.exists() or _head_path(base).exists():
        n += 1
        base = p.with_name(f"{p.name}.set-aside-{stamp}-{n}")
    try:
        for seg in segments(p):
            os.rename(seg, base.with_name(base.name + seg.name[len(p.name):]))
        if _head_path(p).exists():
            os.rename(_head_path(p), _head_path(base))
    except OSError as exc:
        raise AuditError(f"{p}: cannot set the log aside as {base.name} ({exc.strerror or exc})") from None
    _fsync_dir(p.parent)
    return base


def _open_file(path: Path, flags: int) -> int:
    """``os.open`` of a log file that must be a regular file of its own: a symbolic link is not followed and a FIFO
    does not block (a writer as root in a folder others may write would append to, or cut, the file a link names,
    and hang on a FIFO; :func:`~tinywarden.fileio.open_regular`). The caller closes the descriptor."""
    try:
        return open_regular(path, flags, 0o640)
    except NotRegularFile as exc:
        if exc.errno == errno.ELOOP:
            raise AuditError(f"{path}: not a regular file (a symbolic link); refusing to follow it") from None
        raise AuditError(f"{path}: not a regular file ({exc}); refusing to use it as the audit log") from None
    except OSError as exc:
        raise AuditError(f"{path}: cannot open ({exc.strerror or exc})") from None


def _read_file(path: Path) -> bytes:
    """The bytes of log file ``path`` (see :func:`_open_file`)."""
    fd = _open_file(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fsync_dir(directory)


# ------------------------------------------------------------------------------------------------ writer


class AuditLog:
    """Appends chained records to the log at ``path`` (see the module docstring).

    With ``key`` every record, rotate record and the head file are keyed; a new log starts with a
    ``genesis`` record naming ``device_id``, and an unkeyed log found at ``path`` is continued by a keyed
    ``genesis`` that pins it. Without ``key`` the log is unkeyed (plain SHA-256: accidents only), and a
    keyed log found at ``path`` is refused rather than continued unkeyed; a keyed log found with another
    key is refused with :class:`AuditKeyMismatch`. The key file must not sit in the log's folder.
    ``genesis`` adds fields to the ``genesis`` record of a new keyed log (say, why an older log was set
    aside: :func:`set_aside`). ``max_bytes`` bounds each file and ``keep`` the number of rotated files, so
    the log never takes more than about ``(keep + 1) * max_bytes``. ``fsync=False`` trades crash safety
    for speed.
    """

    def __init__(
        self,
        path: str | Path,
        max_bytes: int = 1_000_000,
        keep: int = 4,
        fsync: bool = True,
        *,
        key: AuditKey | None = None,
        device_id: str | None = None,
        genesis: Mapping[str, Any] | None = None,
    ) -> None:
        if max_bytes < 1024 or keep < 1:
            raise AuditError(f"{path}: max_bytes must be >= 1024 and keep >= 1 (got {max_bytes}, {keep})")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.fsync = fsync
        self.key = key
        self.device_id = device_id
        self.log_id: str | None = None
        self._genesis = dict(genesis or {})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot create directory ({exc.strerror})") from exc
        if key is not None and key.path is not None and key.path.resolve().parent == self.path.resolve().parent:
            raise AuditError(
                f"{key.path}: the audit key must be kept apart from the log, not in its folder {self.path.parent}"
            )
        self.seq = 0
        self.last_hash = GENESIS
        self._holding = False  # this writer holds the folder's lock (appends nest inside a rotation)
        with self._lock():
            partial, last_file = self._find_end()
            self._end = self._live_end()
            self._open_chain(last_file)
            if partial is not None:
                self._recovered(partial)

    def _recovered(self, partial: bytes) -> None:
        self.append("recovered", {"partial_bytes": len(partial), "partial_sha256": hashlib.sha256(partial).hexdigest()})

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Hold the exclusive lock of the log's folder (``flock`` on the directory: the live file is renamed by
        rotation and the head replaced, so neither can carry it); re-entered freely by this writer."""
        if self._holding:
            yield
            return
        try:
            fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise AuditError(f"{self.path.parent}: cannot lock the log's folder ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._holding = True
            yield
        finally:
            self._holding = False
            os.close(fd)

    def _live_end(self) -> tuple[int, int] | None:
        """(inode, size) of the live file: what tells this writer that another one wrote or rotated since."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot read ({exc.strerror or exc})") from None
        return st.st_ino, st.st_size

    def _catch_up(self) -> None:
        """Continue after the last record on disk when another writer appended or rotated since our last write."""
        if self._live_end() == self._end:
            return
        partial, _ = self._find_end()
        self._end = self._live_end()
        if partial is not None:  # a writer that died mid-record, as at start
            self._recovered(partial)

    @property
    def head(self) -> tuple[int, str] | None:
        """``(seq, hash)`` of the last record: the anchor an incident carries to the fleet."""
        return (self.seq - 1, self.last_hash) if self.seq > 0 else None

    def _find_end(self) -> tuple[bytes | None, Path | None]:
        """Find the chain's end; move a partial last line (a crash mid-write) out of the chain."""
        partial: bytes | None = None
        for seg in reversed(segments(self.path)):
            raw = _read_file(seg)
            if seg == self.path and raw and not raw.endswith(b"\n"):
                cut = raw.rfind(b"\n") + 1
                partial = raw[cut:]
                fd = _open_file(seg, os.O_WRONLY)
                try:
                    os.ftruncate(fd, cut)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                raw = raw[:cut]
            lines = raw.splitlines()
            if lines:
                try:
                    last = _loads(lines[-1])
                    if not _is_record(last):
                        raise ValueError("not a record")
                except (ValueError, RecursionError) as exc:
                    raise AuditError(
                        f"{seg}: line {len(lines)}: last record unreadable; run `tinywarden audit verify` "
                        "and move the log aside"
                    ) from exc
                self.seq = last["seq"] + 1
                self.last_hash = last["hash"]
                return partial, seg
        return partial, None

    def _open_chain(self, last_file: Path | None) -> None:
        """Check the key against the log, start a keyed chain if there is none, finish a cut-short rotation."""
        marker = self._find_marker(last_file) if last_file is not None else None
        if marker is not None:
            kid = marker["data"]["key_id"]
            if self.key is None:
                raise AuditError(f"{self.path}: a keyed log (key id {kid}); open it with its key")
            if kid != self.key.key_id:
                raise AuditKeyMismatch(
                    f"{self.path}: keyed with key id {kid}, but the key {self.key.path or ''} has id "
                    f"{self.key.key_id}: give the log's own key, or move the log aside",
                    kid,
                )
            self.log_id = str(marker["data"].get("log_id", ""))
        elif self.key is not None:
            if self.seq == 0:
                self._write_head(-1, GENESIS)  # so a missing head file always means it was deleted
            self.log_id = uuid.uuid4().hex
            data: dict[str, Any] = {
                **self._genesis, "log_id": self.log_id, "key_id": self.key.key_id, "device_id": self.device_id
            }
            if self.seq > 0:
                data["unkeyed_before"] = self.seq  # an older unkeyed log, pinned from here on by this keyed record
            self.append("genesis", data)
            return
        if last_file is not None and last_file != self.path:
            self._rotated()  # a crash between moving the live file away and writing its successor's first record

    @staticmethod
    def _find_marker(seg: Path) -> dict[str, Any] | None:
        """The last keyed marker in ``seg``: its first record, or a ``genesis`` further on."""
        found = None
        for i, line in enumerate(_read_file(seg).splitlines()):
            if i and b'"kind":"genesis"' not in line:
                continue
            with contextlib.suppress(ValueError):
                rec = _loads(line)
                if _is_record(rec) and _marker(rec):
                    found = rec
        return found

    def append(self, kind: str, data: Mapping[str, Any], time: float | None = None) -> dict[str, Any]:
        """Write one record of ``kind`` with ``data`` (JSON-able; NaN/inf become strings); return it."""
        with self._lock():
            self._catch_up()
            return self._append(kind, data, time)

    def _append(self, kind: str, data: Mapping[str, Any], time: float | None) -> dict[str, Any]:
        record: dict[str, Any] = {
            "seq": self.seq,
            "time": _clean(float(time)) if time is not None else None,
            "kind": kind,
            "data": _clean(dict(data)),
            "prev": self.last_hash,
        }
        record["hash"] = record_hash(record, self.key)
        line = _line(record) + b"\n"
        if (
            self.path.exists()
            and self.path.stat().st_size > 0
            and (self.path.stat().st_size + len(line) > self.max_bytes)
        ):
            self._rotate()
            return self._append(kind, data, time)
        self._write(line)
        self._end = self._live_end()
        self.seq += 1
        self.last_hash = record["hash"]
        self._write_head(record["seq"], record["hash"])
        return record

    def _write_head(self, seq: int, hash_: str) -> None:
        head: dict[str, Any] = {"seq": seq, "hash": hash_}
        if self.key is not None:
            head["key_id"] = self.key.key_id
            head["mac"] = _head_mac(self.key, seq, hash_)
        path = _head_path(self.path)
        try:
            atomic_write(path, json.dumps(head, sort_keys=True) + "\n", mode=0o640, fsync=self.fsync)
        except OSError as exc:
            raise AuditError(f"{path}: cannot write the log's head ({exc.strerror or exc})") from None

    def _write(self, line: bytes) -> None:
        fd = _open_file(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
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
        self._rotated()

    def _rotated(self) -> None:
        """Start the new live file: a rotate record linking to the old file and counting the files kept."""
        kept = sum(1 for i in range(1, self.keep + 1) if self.path.with_name(f"{self.path.name}.{i}").exists())
        data: dict[str, Any] = {"previous_seq": self.seq - 1, "previous_hash": self.last_hash, "files": kept}
        if self.key is not None:
            data.update(log_id=self.log_id, key_id=self.key.key_id)
        self._append("rotate", data, None)


# ---------------------------------------------------------------------------------------------- verifier


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
    """The result of :func:`verify`: how many records are valid and every problem found.

    ``keyed`` says the log has a keyed chain, ``authenticated`` that its MACs were checked with the right
    key; ``hashes`` maps each record's ``seq`` to its ``hash`` (what :func:`check_anchor` compares).
    """

    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    files: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    keyed: bool = False
    authenticated: bool = False
    key_id: str | None = None
    log_id: str | None = None
    head: tuple[int, str] | None = None
    hashes: dict[int, str] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """True when nothing points to tampering (crash artefacts and notes are allowed)."""
        return not any(p.severity == "tamper" for p in self.problems)

    @property
    def verdict(self) -> str:
        """``"tampered"``; ``"intact"`` (keyed, MACs checked); ``"unkeyed"`` (accidents only, no proof);
        or ``"unverified"`` (keyed, but no key to check the MACs with)."""
        if not self.ok:
            return "tampered"
        if self.authenticated:
            return "intact"
        return "unverified" if self.keyed else "unkeyed"


def verify(path: str | Path, key: AuditKey | None = None, anchors: Iterable[tuple[int, str]] = ()) -> VerifyReport:
    """Check the whole chain of the log at ``path`` (with its rotated files and head file).

    With ``key``, every keyed record and the head file must carry its MAC: a record appended, edited or
    recomputed without the key, a forged fresh log, a rewritten head and deleted rotated files are
    named. Without it only the links are checked (``verdict`` ``"unverified"``). Each of ``anchors``
    (``(seq, hash)`` the fleet holds from incidents) is checked with :func:`check_anchor`. Names every
    edited, reordered, removed or truncated record and a partial last record left by a crash; never
    raises for a damaged log (only for one that does not exist).
    """
    p = Path(path)
    files = segments(p)
    if not files:
        raise AuditError(f"{p}: no such audit log")
    report = VerifyReport(files=[str(f) for f in files])
    parsed: list[tuple[str, dict[str, Any]]] = []
    live_first: dict[str, Any] | None = None
    for f in files:
        raw = f.read_bytes()
        lines = raw.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        for i, line in enumerate(complete, start=1):
            where = f"{f.name}:{i}"
            try:
                rec = _loads(line)
                if not _is_record(rec):
                    raise ValueError("missing or extra keys")
            except _NonFinite as exc:
                report.problems.append(
                    Problem("tamper", where, f"not a valid record: {exc} in it, which the writer never writes (edited)")
                )
                continue
            except (ValueError, RecursionError):
                report.problems.append(Problem("tamper", where, "not a valid record (edited or corrupted)"))
                continue
            if _line(rec) != line:
                # The MAC covers the parsed record, so a duplicate key (json.loads keeps the last, a reader may see
                # the first), added whitespace or another escape would otherwise verify although edited.
                report.problems.append(
                    Problem("tamper", where, "not in the writer's canonical form (duplicate key, whitespace or "
                            "escape added: edited)")  # fmt: skip
                )
            if f == p and i == 1:
                live_first = rec
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

    keyed_at = next((i for i, (_, rec) in enumerate(parsed) if _marker(rec)), None)
    _key_findings(p, parsed, keyed_at, key, report)
    # With a key every record from the keyed marker on (all of them if there is none) must carry its MAC:
    # the given key is the authority, whatever key id the log claims.
    mac_from = keyed_at if keyed_at is not None else (0 if key is not None else None)
    _check_chain(parsed, mac_from, key, report)
    if live_first is not None:
        _check_rotated_files(p, live_first, report)
    _check_head(p, parsed, report, key)
    if not report.keyed and key is None:  # with a key, an unkeyed log is already a finding
        report.problems.append(
            Problem("info", p.name, "unkeyed: integrity only against accidents (anyone who can write it can forge it)")
        )
    elif key is None:
        report.problems.append(
            Problem("info", p.name, f"keyed (key id {report.key_id}) but no key given: links checked, MACs not")
        )
    for seq, hash_ in anchors:
        report.problems += check_anchor(report, seq, hash_)
    return report


def _key_findings(
    path: Path, parsed: list[tuple[str, dict[str, Any]]], keyed_at: int | None, key: AuditKey | None,
    report: VerifyReport,
) -> None:
    """Fill the report's key facts; name an unkeyed log or another key when ``key`` is given."""
    if keyed_at is None:
        if key is not None and parsed:
            report.problems.append(
                Problem(
                    "tamper",
                    path.name,
                    f"no record is keyed with key id {key.key_id}: not written by its keyed writer "
                    "(forged, or an unkeyed log: verify it without a key)",
                )
            )
        return
    where, marker = parsed[keyed_at]
    report.keyed = True
    report.key_id = str(marker["data"]["key_id"])
    report.log_id = str(marker["data"].get("log_id", ""))
    if keyed_at > 0:
        first, last = parsed[0][1]["seq"], parsed[keyed_at - 1][1]["seq"]
        report.problems.append(
            Problem("info", parsed[0][0], f"seq {first}..{last} were written before the log was keyed "
                    f"(pinned by {where}): integrity only against accidents")  # fmt: skip
        )
    if key is None:
        return
    if report.key_id != key.key_id:
        report.problems.append(
            Problem(
                "tamper",
                where,
                f"keyed with key id {report.key_id}, not with the given key (id {key.key_id}): "
                "another log's key, or forged with another key",
            )
        )
        return
    report.authenticated = True


def _check_chain(
    parsed: list[tuple[str, dict[str, Any]]], mac_from: int | None, key: AuditKey | None, report: VerifyReport
) -> None:
    """Links, sequence and content of every record; records from index ``mac_from`` on are keyed."""
    present = {rec["seq"] for _, rec in parsed}
    expected_seq: int | None = None
    expected_prev: str | None = None
    bad_hashes: list[tuple[str, int]] = []
    bad_macs: list[tuple[str, int]] = []
    for i, (where, rec) in enumerate(parsed):
        seq = rec["seq"]
        if mac_from is None or i < mac_from:
            if record_hash(rec) != rec["hash"]:
                bad_hashes.append((where, seq))
        elif key is not None and not _same(record_hash(rec, key), rec["hash"]):
            bad_macs.append((where, seq))
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
            report.problems.append(Problem("tamper", where, _link_message(seq, expected_seq, present)))
        # Follow the chain as it stands, so one damaged place is reported once, not at every later record.
        expected_seq = seq + 1
        expected_prev = rec["hash"]
        report.records += 1
        report.first_seq = seq if report.first_seq is None else report.first_seq
        report.last_seq = seq
        report.hashes[seq] = rec["hash"]
        prev_seq, prev_hash = rec["data"].get("previous_seq"), rec["data"].get("previous_hash")
        if rec["kind"] == "rotate" and isinstance(prev_seq, int) and isinstance(prev_hash, str):
            report.hashes.setdefault(prev_seq, prev_hash)
    for bad, what in ((bad_hashes, "content does not match its hash (edited)"),
                      (bad_macs, "MAC does not match (forged, edited or rewritten without the key)")):  # fmt: skip
        for where, first, last in _runs(bad):
            span = f"seq {first}" if first == last else f"seq {first}..{last} ({last - first + 1} records)"
            report.problems.append(Problem("tamper", where, f"{span}: {what}"))


def _link_message(seq: int, expected_seq: int, present: set[int]) -> str:
    if seq == expected_seq:
        return f"seq {seq}: prev hash does not match seq {seq - 1} (that record was edited or replaced)"
    if seq > expected_seq:
        gap = range(expected_seq, seq)
        if all(s in present for s in gap):
            return f"seq {seq} found where seq {expected_seq} was expected (records reordered)"
        lost = f"{gap[0]}" if len(gap) == 1 else f"{gap[0]}..{gap[-1]}"
        return f"seq {lost} missing before seq {seq} (records removed)"
    return f"seq {seq} found after seq {expected_seq - 1} (records reordered or duplicated)"


def _runs(bad: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """Consecutive seqs as ``(where of the first, first, last)``: a recomputed tail is one finding, not N."""
    out: list[tuple[str, int, int]] = []
    for where, seq in bad:
        if out and seq == out[-1][2] + 1:
            out[-1] = (out[-1][0], out[-1][1], seq)
        else:
            out.append((where, seq, seq))
    return out


def _check_rotated_files(path: Path, first: dict[str, Any], report: VerifyReport) -> None:
    """The live file's rotate record says how many older files were kept; each of them must be there."""
    kept = first["data"].get("files")
    if first["kind"] != "rotate" or isinstance(kept, bool) or not isinstance(kept, int):
        return
    missing = [i for i in range(1, kept + 1) if not path.with_name(f"{path.name}.{i}").exists()]
    if missing:
        names = ", ".join(f"{path.name}.{i}" for i in missing)
        report.problems.append(
            Problem(
                "tamper",
                f"{path.name}:1",
                f"the rotate record (seq {first['seq']}) says {kept} older file(s) were kept, "
                f"but {names} {'is' if len(missing) == 1 else 'are'} gone (rotated files deleted)",
            )
        )


def _check_head(
    path: Path, parsed: list[tuple[str, dict[str, Any]]], report: VerifyReport, key: AuditKey | None
) -> None:
    head_file = _head_path(path)
    if not head_file.exists():
        if report.keyed or key is not None:
            report.problems.append(
                Problem("tamper", head_file.name, "head file deleted (a keyed log always has one): "
                        "records cut off the end cannot be ruled out")  # fmt: skip
            )
        elif parsed:
            report.problems.append(
                Problem("info", head_file.name, "no head file; records cut off the end could not be detected")
            )
        return
    try:
        head = _loads(head_file.read_bytes()[:4096])
        head_seq, head_hash = head["seq"], head["hash"]
        if isinstance(head_seq, bool) or not isinstance(head_seq, int) or not isinstance(head_hash, str):
            raise TypeError("bad types")
    except (ValueError, KeyError, TypeError, OSError, RecursionError):
        report.problems.append(Problem("tamper", head_file.name, "head file unreadable"))
        return
    report.head = (head_seq, head_hash)
    if (report.keyed or key is not None) and "mac" not in head:
        report.problems.append(Problem("tamper", head_file.name, "head file carries no MAC (rewritten)"))
    elif key is not None and not _same(str(head.get("mac")), _head_mac(key, head_seq, head_hash)):
        report.problems.append(
            Problem("tamper", head_file.name, "head file MAC does not match (rewritten without the key)")
        )
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


# ------------------------------------------------------------------------------------------------ anchors


def parse_anchor(text: str) -> tuple[int, str]:
    """``SEQ:HASH`` (an incident's ``audit_head``) as ``(seq, hash)``.

    >>> parse_anchor("12:" + "ab" * 32)[0]
    12
    """
    seq, sep, hash_ = text.strip().partition(":")
    if not sep or not seq.isdigit() or not HEX_HASH.fullmatch(hash_.lower()):
        raise AuditError(f"anchor {text!r}: expected SEQ:HASH (a sequence number and 64 hex digits)")
    return int(seq), hash_.lower()


def check_anchor(log: VerifyReport | str | Path, seq: int, hash: str, key: AuditKey | None = None) -> list[Problem]:
    """What the fleet side runs: does the log (a path, or a :func:`verify` report) still hold the record
    ``seq`` with ``hash`` that an incident carried? Returns the problems found (empty: it does).

    A log that ends before ``seq`` was rewound (records cut off, or the log replaced by a fresh one); a
    different hash at ``seq`` means the log was rewritten from there or earlier, even by a key holder.
    An anchor older than the retained log cannot be checked and is reported as ``info``.
    """
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or not isinstance(hash, str) \
            or not HEX_HASH.fullmatch(hash.lower()):  # fmt: skip
        raise AuditError(f"anchor {seq!r}:{hash!r}: expected a sequence number >= 0 and 64 hex digits")
    hash = hash.lower()
    report = log if isinstance(log, VerifyReport) else verify(log, key)
    where = f"anchor {seq}:{hash[:12]}"
    if report.last_seq is None or seq > report.last_seq:
        ends = "has no records" if report.last_seq is None else f"ends at seq {report.last_seq}"
        return [Problem("tamper", where, f"the log {ends} but the fleet holds seq {seq}: rewound "
                        "(records cut off the end, or the log replaced)")]  # fmt: skip
    if seq in report.hashes:
        if _same(report.hashes[seq], hash):
            return []
        return [Problem("tamper", where, f"seq {seq} carries another hash than the fleet holds: "
                        f"the log was rewritten at or before seq {seq}")]  # fmt: skip
    if report.first_seq is not None and seq < report.first_seq:
        return [Problem("info", where, f"seq {seq} is older than the log's first record (seq {report.first_seq}): "
                        "rotated away, cannot be checked")]  # fmt: skip
    return [Problem("tamper", where, f"seq {seq} is missing from the log (records removed)")]
