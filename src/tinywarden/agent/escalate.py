"""Escalation: publish incidents to the fleet over MQTT, spooling them on disk while the broker is away.

An :class:`Incident` carries only a summary (scores, the window's time span, a few feature values),
never raw telemetry. :class:`MqttPublisher` sends each incident that passes its
:class:`EscalationPolicy` as JSON to ``tinywarden/<device_id>/incident`` with QoS 1, optionally over
TLS, and can also hand a CEF line to a SIEM through :class:`SyslogSink`.

Delivery guarantee. Every incident is written to the :class:`Spool` *before* any network attempt and
removed only after the broker's PUBACK, one message at a time, so incidents reach the broker in the
order they were submitted and none is lost while the spool has room. QoS 1 is "at least once": if a
connection dies after the broker got a message but before its PUBACK arrived, that message is sent
again; subscribers that must count exactly drop repeats by ``incident_id``. The paho client of a
failed connection is thrown away rather than reconnected, so paho never re-sends on its own and the
spool stays the single source of what is still owed.

Overflow. The spool holds at most ``max_messages`` incidents. Adding one more drops the entry of the
lowest tier, and among those the oldest (possibly the new incident itself), and reports it through
``on_drop(incident, reason)`` so the agent can write it to the audit log. A spool file that cannot be
read back (truncated, corrupted) is moved to ``<spool>/corrupt/`` and reported through
``on_corrupt(path, reason)``; it is never deleted silently.

>>> inc = Incident("gw-1", "m1", 3, tier=2, score=9.5, threshold=4.0, confidence=0.9,
...                window_start=100.0, window_end=116.0, features={"cpu_pct.max": 97.0})
>>> Incident.from_json(inc.to_json()) == inc
True
>>> format_cef(inc).split("|")[:7]
['CEF:0', 'tinywarden', 'tinywarden', '0.1.0', 'tier-2', 'tinywarden incident tier 2', '7']
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import math
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tinywarden.audit import HEX_HASH
from tinywarden.errors import TinywardenError
from tinywarden.fileio import NotRegularFile, atomic_write, read_regular

if TYPE_CHECKING:
    import ssl

    import paho.mqtt.client as mqtt

__all__ = [
    "BrokerConfig",
    "EscalationError",
    "EscalationPolicy",
    "Incident",
    "MqttPublisher",
    "Spool",
    "SpoolEntry",
    "SyslogSink",
    "TlsConfig",
    "format_cef",
    "format_syslog",
]

log = logging.getLogger(__name__)


def paho_client() -> ModuleType:
    """``paho.mqtt.client``, imported on first use: an agent without ``--mqtt`` never loads paho (about 9 MB)."""
    import paho.mqtt.client

    return paho.mqtt.client

MAX_FEATURES = 64  # a summary, not a dump: keeps raw windows from leaking into incidents
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")  # safe inside one MQTT topic level
_SPOOL_NAME = re.compile(r"(\d{12,})-t(\d{3})\.json")  # 12 digits, more past 10**12 - 1
_VERSION = "0.1.0"
#: An incident is a summary of a few hundred bytes; a bigger spool file is not one the agent wrote.
MAX_SPOOL_BYTES = 1 << 20
#: Longest feature name, model id, tier name or incident id an incident carries, in characters; a longer one is cut
#: to this with a final "…" (:func:`bounded_text`). With at most :data:`MAX_FEATURES` features, every incident's JSON
#: stays far under :data:`MAX_SPOOL_BYTES` (at most 12 bytes a character, a surrogate pair escaped), so it is never
#: spooled only to be quarantined as too big to be one the agent wrote.
MAX_TEXT = 256


class EscalationError(TinywardenError):
    """An incident, spool or broker setting that cannot be used; the message names the field or file."""


@dataclass(frozen=True)
class Incident:
    """One detection worth telling the fleet about.

    ``tier`` is the response tier, 0 = least severe; ``confidence`` is in [0, 1]; the window bounds
    are epoch seconds; ``features`` maps at most :data:`MAX_FEATURES` feature names to finite values.
    ``audit_head`` is the device's audit log head ``(seq, hash)`` when the incident was built: the fleet
    keeps it as an anchor, so a log rewound or rewritten later is caught (see
    :func:`tinywarden.audit.check_anchor`).
    """

    device_id: str
    model_id: str
    model_version: int
    tier: int
    score: float
    threshold: float
    confidence: float
    window_start: float
    window_end: float
    features: Mapping[str, float] = field(default_factory=dict)
    tier_name: str = ""
    incident_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = field(default_factory=time.time)
    audit_head: tuple[int, str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.device_id, str) or not _DEVICE_ID.fullmatch(self.device_id):
            raise EscalationError(
                f"incident device_id {self.device_id!r} must be 1-128 of [A-Za-z0-9_.-] "
                "(it names an MQTT topic)"
            )
        if not isinstance(self.model_id, str) or not self.model_id:
            raise EscalationError(f"incident model_id must be a non-empty string, got {self.model_id!r}")
        for name in ("model_version", "tier"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise EscalationError(f"incident {name} must be an integer >= 0, got {v!r}")
        for name in ("score", "threshold", "confidence", "window_start", "window_end", "created_at"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not _finite(v):
                raise EscalationError(f"incident {name} must be a finite number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if not 0.0 <= self.confidence <= 1.0:
            raise EscalationError(f"incident confidence must be in [0, 1], got {self.confidence!r}")
        if self.window_end < self.window_start:
            raise EscalationError(
                f"incident window_end {self.window_end} is before window_start {self.window_start}"
            )
        if not isinstance(self.features, Mapping) or len(self.features) > MAX_FEATURES:
            raise EscalationError(f"incident features must be a mapping of at most {MAX_FEATURES} values")
        feats: dict[str, float] = {}
        for k, v in self.features.items():
            if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int | float):
                raise EscalationError(f"incident feature {k!r:.{MAX_TEXT}} must map a name to one number, got {v!r}")
            if not _finite(v):
                raise EscalationError(f"incident feature {k!r:.{MAX_TEXT}} is not finite: {v!r}")
            # A name past MAX_TEXT (a channel named by a 200 KB column header) is cut, marked, and kept apart from
            # another cut to the same text, so the incident stays a small message that always reaches the broker.
            name, n = bounded_text(k), 1
            while name in feats:
                n += 1
                name = bounded_text(k, MAX_TEXT - len(str(n))) + str(n)
            feats[name] = float(v)
        object.__setattr__(self, "features", feats)
        for name in ("model_id", "tier_name", "incident_id"):
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, bounded_text(getattr(self, name)))
        if (
            not isinstance(self.tier_name, str)
            or not isinstance(self.incident_id, str)
            or not self.incident_id
        ):
            raise EscalationError(
                "incident tier_name and incident_id must be strings (incident_id non-empty)"
            )
        if self.audit_head is not None:
            head = tuple(self.audit_head) if isinstance(self.audit_head, list | tuple) else ()
            if (
                len(head) != 2
                or isinstance(head[0], bool)
                or not isinstance(head[0], int)
                or head[0] < 0
                or not isinstance(head[1], str)
                or not HEX_HASH.fullmatch(head[1])
            ):
                raise EscalationError(f"incident audit_head must be (seq >= 0, 64 hex digits), got {self.audit_head!r}")
            object.__setattr__(self, "audit_head", head)

    def to_json(self) -> bytes:
        """The wire and spool form: compact JSON, keys sorted."""
        d = {
            "device_id": self.device_id,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "tier": self.tier,
            "tier_name": self.tier_name,
            "score": self.score,
            "threshold": self.threshold,
            "confidence": self.confidence,
            "window": {"start": self.window_start, "end": self.window_end},
            "features": dict(self.features),
            "incident_id": self.incident_id,
            "created_at": self.created_at,
        }
        if self.audit_head is not None:
            d["audit_head"] = {"seq": self.audit_head[0], "hash": self.audit_head[1]}
        return json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def from_json(cls, data: bytes, *, source: str = "<message>") -> Incident:
        """Parse :meth:`to_json` output; anything else raises :class:`EscalationError`."""
        try:
            d = json.loads(data.decode("utf-8"))
            window = d.pop("window")
            head = d.pop("audit_head", None)
            if head is not None:
                d["audit_head"] = (head["seq"], head["hash"])
            return cls(window_start=window["start"], window_end=window["end"], **d)
        except EscalationError as exc:
            raise EscalationError(f"{source}: {exc}") from None
        except RecursionError:
            raise EscalationError(f"{source}: not an incident record (JSON nested too deeply)") from None
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # repr: the detail may quote a key of the file, line breaks included
            raise EscalationError(f"{source}: not an incident record ({type(exc).__name__}: {str(exc)!r})") from None


def bounded_text(text: str, limit: int = MAX_TEXT) -> str:
    """``text``, or its first ``limit - 1`` characters and "…" when it is longer (the mark says it was cut).

    >>> bounded_text("cpu_pct.max"), bounded_text("x" * 300)[-3:], len(bounded_text("x" * 300))
    ('cpu_pct.max', 'xx…', 256)
    """
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _finite(v: float) -> bool:
    """``math.isfinite`` that also answers False for an integer too large to be a float."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


@dataclass(frozen=True)
class EscalationPolicy:
    """Which incidents leave the device: tier >= ``min_tier`` and confidence >= ``min_confidence``."""

    min_tier: int = 0
    min_confidence: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.min_tier, bool) or not isinstance(self.min_tier, int) or self.min_tier < 0:
            raise EscalationError(f"escalation min_tier must be an integer >= 0, got {self.min_tier!r}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise EscalationError(f"escalation min_confidence must be in [0, 1], got {self.min_confidence!r}")

    def admits(self, incident: Incident) -> bool:
        return incident.tier >= self.min_tier and incident.confidence >= self.min_confidence


# ---------------------------------------------------------------------------------------------- spool


def _read_spool_file(path: Path) -> Incident:
    """The incident in spool file ``path``: OSError or EscalationError (naming it) for anything but a regular file
    of at most :data:`MAX_SPOOL_BYTES` (a symlink, a FIFO that would block, a device that never ends: none of them
    is a file the spool wrote; :func:`~tinywarden.fileio.read_regular`)."""
    try:
        data = read_regular(path, MAX_SPOOL_BYTES)
    except NotRegularFile as exc:
        what = str(exc) if exc.errno == errno.EFBIG else f"not a regular file ({exc})"
        raise EscalationError(f"{path}: {what}") from None
    return Incident.from_json(data, source=str(path))


@dataclass(frozen=True)
class SpoolEntry:
    """Where one spooled incident lives: its sequence number (the delivery order), tier and file."""

    seq: int
    tier: int
    path: Path


class Spool:
    """A bounded, crash-safe, ordered on-disk queue of incidents: one file per incident.

    File ``<seq:012d>-t<tier:03d>.json`` holds :meth:`Incident.to_json`; it is written to a temp file,
    fsynced and renamed, so a crash leaves whole files only (stray temp files are removed at start).
    Invariant: ``self._entries`` is sorted by ``seq`` and mirrors the committed files.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_messages: int = 1000,
        *,
        on_drop: Callable[[Incident, str], None] | None = None,
        on_corrupt: Callable[[Path, str], None] | None = None,
    ) -> None:
        if isinstance(max_messages, bool) or not isinstance(max_messages, int) or max_messages < 1:
            raise EscalationError(f"spool max_messages must be an integer >= 1, got {max_messages!r}")
        self.directory = Path(directory)
        self.max_messages = max_messages
        self.on_drop = on_drop
        self.on_corrupt = on_corrupt
        self._lock = threading.RLock()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EscalationError(f"{self.directory}: cannot create spool directory ({exc})") from None
        self._entries: list[SpoolEntry] = []
        for p in sorted(self.directory.iterdir()):
            m = _SPOOL_NAME.fullmatch(p.name)
            if m:
                self._entries.append(SpoolEntry(int(m.group(1)), int(m.group(2)), p))
            elif p.name.startswith(".") and p.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    p.unlink()  # an interrupted write: never committed, so nothing is lost
        self._entries.sort(key=lambda e: e.seq)  # by number: a 13-digit name sorts before a 12-digit one
        self._next_seq = self._entries[-1].seq + 1 if self._entries else 0
        # A spool restored from disk may be over a smaller bound chosen since.
        while len(self._entries) > self.max_messages:
            self._evict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def put(self, incident: Incident) -> None:
        """Append ``incident`` (durably); evicts by severity when the bound is exceeded."""
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            tier = min(incident.tier, 999)
            path = self.directory / f"{seq:012d}-t{tier:03d}.json"
            try:
                atomic_write(path, incident.to_json(), mode=0o600)
            except OSError as exc:
                raise EscalationError(f"{path}: cannot write spool file ({exc.strerror or exc})") from None
            self._entries.append(SpoolEntry(seq, tier, path))
            while len(self._entries) > self.max_messages:
                self._evict()

    def peek(self) -> tuple[SpoolEntry, Incident] | None:
        """The oldest readable entry, quarantining unreadable ones on the way; ``None`` when empty."""
        with self._lock:
            while self._entries:
                e = self._entries[0]
                try:
                    return e, _read_spool_file(e.path)
                except (OSError, EscalationError) as exc:
                    self._entries.pop(0)
                    self._quarantine(e.path, str(exc))
            return None

    def remove(self, entry: SpoolEntry) -> None:
        """Forget a delivered entry."""
        with self._lock:
            with contextlib.suppress(ValueError):
                self._entries.remove(entry)
            with contextlib.suppress(FileNotFoundError):
                entry.path.unlink()

    def incidents(self) -> list[Incident]:
        """Every readable spooled incident, oldest first (for status displays and tests)."""
        with self._lock:
            out = []
            for e in list(self._entries):
                try:
                    out.append(_read_spool_file(e.path))
                except (OSError, EscalationError) as exc:
                    self._entries.remove(e)
                    self._quarantine(e.path, str(exc))
            return out

    def _evict(self) -> None:
        victim = min(self._entries, key=lambda e: (e.tier, e.seq))
        self._entries.remove(victim)
        try:
            incident = _read_spool_file(victim.path)
        except (OSError, EscalationError) as exc:
            self._quarantine(victim.path, str(exc))
            return
        with contextlib.suppress(FileNotFoundError):
            victim.path.unlink()
        reason = (
            f"spool {self.directory} full ({self.max_messages} incidents): dropped tier {incident.tier} "
            f"incident {incident.incident_id}, the oldest of the lowest tier"
        )
        log.warning(reason)
        if self.on_drop is not None:
            self.on_drop(incident, reason)

    def _quarantine(self, path: Path, reason: str) -> None:
        qdir = self.directory / "corrupt"
        try:
            qdir.mkdir(exist_ok=True)
            dest = qdir / f"{path.name}.{uuid.uuid4().hex[:8]}"  # sequence numbers restart when empty
            os.replace(path, dest)
        except OSError:
            dest = path
        msg = f"unreadable spool file moved to {dest}: {reason}"
        log.warning(msg)
        if self.on_corrupt is not None:
            self.on_corrupt(dest, msg)


# ---------------------------------------------------------------------------------------- formatters


def cef_severity(tier: int) -> int:
    """CEF severity 0-10 for a tier: 3 (low) for tier 0, +2 per tier, capped at 10."""
    return min(10, 3 + 2 * tier)


def format_cef(incident: Incident) -> str:
    """One ArcSight CEF:0 line for SIEMs (header and extension escaped as the CEF spec says)."""

    def hdr(s: str) -> str:
        return s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")

    def ext(s: str) -> str:
        return s.replace("\\", "\\\\").replace("=", "\\=").replace("\n", "\\n").replace("\r", "\\r")

    name = f"tinywarden incident tier {incident.tier}" + (
        f" ({incident.tier_name})" if incident.tier_name else ""
    )
    feats = ", ".join(f"{k}={v:.6g}" for k, v in incident.features.items())
    fields = [
        ("rt", str(int(incident.created_at * 1000))),
        ("dvchost", incident.device_id),
        ("externalId", incident.incident_id),
        ("start", str(int(incident.window_start * 1000))),
        ("end", str(int(incident.window_end * 1000))),
        ("cs1Label", "modelId"),
        ("cs1", incident.model_id),
        ("cn1Label", "modelVersion"),
        ("cn1", str(incident.model_version)),
        ("cfp1Label", "score"),
        ("cfp1", f"{incident.score:.6g}"),
        ("cfp2Label", "threshold"),
        ("cfp2", f"{incident.threshold:.6g}"),
        ("cfp3Label", "confidence"),
        ("cfp3", f"{incident.confidence:.4g}"),
        ("msg", f"features: {feats}" if feats else "no feature summary"),
    ]
    head = "|".join(
        [
            "CEF:0",
            "tinywarden",
            "tinywarden",
            _VERSION,
            hdr(f"tier-{incident.tier}"),
            hdr(name),
            str(cef_severity(incident.tier)),
        ]
    )
    return head + "|" + " ".join(f"{k}={ext(v)}" for k, v in fields)


def format_syslog(incident: Incident, *, hostname: str | None = None, facility: int = 16) -> str:
    """An RFC 5424 syslog line carrying :func:`format_cef` (facility 16 = local0)."""
    severity = max(2, 5 - incident.tier)  # tier 0 notice, 1 warning, 2 error, 3+ critical
    try:
        ts = _dt.datetime.fromtimestamp(incident.created_at, _dt.UTC).isoformat(timespec="milliseconds")
        stamp = ts.replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):  # a replayed time outside years 1-9999: RFC 5424's NILVALUE
        stamp = "-"
    host = (hostname or socket.gethostname() or "-").replace(" ", "_")
    return f"<{facility * 8 + severity}>1 {stamp} {host} tinywarden - incident - {format_cef(incident)}"


class SyslogSink:
    """Send :func:`format_syslog` lines over UDP; failures are logged, never raised (SIEM is best effort)."""

    def __init__(
        self, host: str, port: int = 514, *, facility: int = 16, hostname: str | None = None
    ) -> None:
        self.address = (host, port)
        self.facility = facility
        self.hostname = hostname
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)

    def __call__(self, incident: Incident) -> None:
        line = format_syslog(incident, hostname=self.hostname, facility=self.facility)
        try:
            self._sock.sendto(line.encode("utf-8")[:8192], self.address)
        except OSError as exc:
            log.warning("syslog %s:%s unreachable: %s", *self.address, exc)

    def close(self) -> None:
        self._sock.close()


# ------------------------------------------------------------------------------------------ publisher


@dataclass(frozen=True)
class TlsConfig:
    """TLS for the broker connection: CA bundle, optional client certificate and key."""

    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None
    check_hostname: bool = True


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how to reach the MQTT broker; every wait is bounded by one of these timeouts."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: TlsConfig | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    connect_timeout_s: float = 5.0
    ack_timeout_s: float = 5.0
    retry_min_s: float = 0.5
    retry_max_s: float = 30.0
    topic_prefix: str = "tinywarden"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise EscalationError(f"broker port must be 1-65535, got {self.port!r}")
        for name in ("connect_timeout_s", "ack_timeout_s", "retry_min_s", "retry_max_s"):
            if not getattr(self, name) > 0:
                raise EscalationError(f"broker {name} must be > 0, got {getattr(self, name)!r}")
        if self.retry_max_s < self.retry_min_s:
            raise EscalationError("broker retry_max_s must be >= retry_min_s")


class _Session:
    """One paho client and one TCP connection; discarded (never reconnected) when that connection ends."""

    def __init__(self) -> None:
        self.client: mqtt.Client | None = None
        self.connack = threading.Event()
        self.connected = threading.Event()
        self.error = ""


class MqttPublisher:
    """Spool-first, in-order QoS 1 publisher of incidents for one device.

    Call :meth:`submit` from the agent loop (it never blocks on the network) and either :meth:`start`
    the background sender or call :meth:`flush` yourself. :meth:`close` stops everything.
    """

    def __init__(
        self,
        device_id: str,
        spool: Spool,
        broker: BrokerConfig | None = None,
        policy: EscalationPolicy | None = None,
        *,
        syslog: Callable[[Incident], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(device_id, str) or not _DEVICE_ID.fullmatch(device_id):
            raise EscalationError(f"device_id {device_id!r} must be 1-128 of [A-Za-z0-9_.-]")
        self.device_id = device_id
        self.spool = spool
        self.broker = broker or BrokerConfig()
        self.policy = policy or EscalationPolicy()
        self.syslog = syslog
        self.clock = clock
        self.topic = f"{self.broker.topic_prefix}/{device_id}/incident"
        self._tls = _tls_context(self.broker.tls) if self.broker.tls is not None else None
        self.delivered = 0
        self.connect_failures = 0
        self.last_error = ""
        self._session = _Session()
        self._flush_lock = threading.Lock()
        self._next_attempt = 0.0
        self._delay = self.broker.retry_min_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        return self._session.connected.is_set()

    def submit(self, incident: Incident) -> bool:
        """Spool ``incident`` for delivery if the policy admits it; returns whether it was admitted."""
        if incident.device_id != self.device_id:
            raise EscalationError(
                f"incident from device {incident.device_id!r} submitted to the publisher "
                f"of {self.device_id!r}"
            )
        if not self.policy.admits(incident):
            return False
        self.spool.put(incident)
        if self.syslog is not None:
            self.syslog(incident)
        self._wake.set()
        return True

    def flush(self, timeout_s: float = 10.0) -> int:
        """Deliver spooled incidents in order until the spool is empty, the broker fails or time runs out.

        Returns how many were acknowledged by the broker in this call.
        """
        done = 0
        deadline = self.clock() + timeout_s
        with self._flush_lock:
            while self.clock() < deadline:
                item = self.spool.peek()
                if item is None or not self._ensure_connected():
                    break
                entry, incident = item
                if not self._publish_one(incident.to_json(), deadline):
                    break
                self.spool.remove(entry)
                done += 1
        self.delivered += done
        return done

    def start(self) -> None:
        """Run :meth:`flush` in a background thread whenever there is something to send."""
        if self._worker is not None:
            return
        self._stop.clear()
        self._worker = threading.Thread(
            target=self._run, name=f"tinywarden-mqtt-{self.device_id}", daemon=True
        )
        self._worker.start()
        self._wake.set()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the background sender and disconnect; spooled incidents stay on disk for next time."""
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout_s)
            self._worker = None
        self._drop_session()

    def __enter__(self) -> MqttPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.flush(timeout_s=self.broker.ack_timeout_s + self.broker.connect_timeout_s)
            except Exception as exc:  # the sender must outlive any surprise; the spool keeps the data
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("incident sender failed; will retry")
            if len(self.spool) and not self.connected:
                wait = max(0.01, self._next_attempt - self.clock())
            elif len(self.spool):
                wait = 0.01
            else:
                wait = self.broker.retry_max_s
            self._wake.wait(wait)

    def _ensure_connected(self) -> bool:
        s = self._session
        if s.client is not None and s.connected.is_set():
            return True
        if self.clock() < self._next_attempt:
            return False
        self._drop_session()
        s = self._session = _Session()
        mqtt = paho_client()
        try:
            client = self._new_client(s)
            s.client = client
            client.connect(self.broker.host, self.broker.port, keepalive=self.broker.keepalive_s)
            client.loop_start()
        except (OSError, ValueError, mqtt.WebsocketConnectionError) as exc:
            return self._connect_failed(f"cannot connect to {self.broker.host}:{self.broker.port}: {exc}")
        if not s.connack.wait(self.broker.connect_timeout_s) or not s.connected.is_set():
            return self._connect_failed(
                f"broker {self.broker.host}:{self.broker.port} did not accept the connection: "
                f"{s.error or 'no CONNACK'}"
            )
        if self.connect_failures or self.last_error:
            log.info("connected to broker %s:%s", self.broker.host, self.broker.port)
        return True  # the retry delay resets only when the broker acknowledges (a CONNACK alone proves little)

    def _new_client(self, s: _Session) -> mqtt.Client:
        mqtt = paho_client()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"tinywarden-{self.device_id}-{uuid.uuid4().hex[:8]}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        client.connect_timeout = self.broker.connect_timeout_s
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self._tls is not None:
            client.tls_set_context(self._tls)

        def on_connect(_c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
            if reason.is_failure:
                s.error = f"CONNACK refused: {reason}"
            else:
                s.connected.set()
            s.connack.set()

        def on_disconnect(_c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
            s.error = s.error or f"disconnected: {reason}"
            s.connected.clear()
            s.connack.set()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        return client

    def _publish_one(self, payload: bytes, deadline: float) -> bool:
        s = self._session
        assert s.client is not None
        info = s.client.publish(self.topic, payload, qos=1)
        mqtt = paho_client()
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._connection_lost(f"publish refused by client: {mqtt.error_string(info.rc)}")
            return False
        ack_deadline = min(deadline, self.clock() + self.broker.ack_timeout_s)
        while not info.is_published():
            if not s.connected.is_set():
                self._connection_lost(s.error or "connection lost before PUBACK")
                return False
            if self.clock() >= ack_deadline:
                self._connection_lost("no PUBACK within the ack timeout")
                return False
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(0.05)
        self._delay = self.broker.retry_min_s
        return True

    def _connect_failed(self, reason: str) -> bool:
        self.connect_failures += 1
        if reason != self.last_error:
            log.warning("%s; incidents stay spooled in %s", reason, self.spool.directory)
        self.last_error = reason
        self._drop_session()
        self._next_attempt = self.clock() + self._delay
        self._delay = min(self._delay * 2, self.broker.retry_max_s)
        return False

    def _connection_lost(self, reason: str) -> None:
        log.warning("broker connection lost (%s); incidents stay spooled", reason)
        self.last_error = reason
        self._drop_session()
        self._next_attempt = self.clock() + self._delay
        self._delay = min(self._delay * 2, self.broker.retry_max_s)

    def _drop_session(self) -> None:
        s = self._session
        self._session = _Session()
        if s.client is not None:
            with contextlib.suppress(Exception):  # tearing down a dead socket may fail in many ways
                s.client.disconnect()
            with contextlib.suppress(Exception):
                s.client.loop_stop()


def _tls_context(t: TlsConfig) -> ssl.SSLContext:
    """Build the TLS context once, so a wrong path fails when the publisher is made, not at first send.

    ``ssl`` is imported here: an agent that talks to no broker over TLS never loads it."""
    import ssl

    try:
        ctx = ssl.create_default_context(cafile=t.ca_file)
        if t.cert_file:
            ctx.load_cert_chain(t.cert_file, t.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise EscalationError(f"TLS setup failed (ca {t.ca_file}, cert {t.cert_file}): {exc}") from None
    ctx.check_hostname = t.check_hostname
    return ctx
