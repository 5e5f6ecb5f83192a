"""The adapted baseline's state file: what a restarted agent carries on from, sealed with the device's key.

An agent that adapts its baseline (``[adaptation] enabled``, int8 or native runtime) and keeps its state
(``persist_engine``) writes, after every window, ``state_dir/adaptation-<bundle digest[:16]>.json``
atomically (:func:`tinywarden.fileio.atomic_write`, mode 0600), one JSON object::

    {"format": FORMAT, "key_id": "<the key's id>", "body": {...}, "mac": "<64 hex digits>"}

``body`` is ``{"bundle": <the bundle's full digest>, "counter": n, "state": <the adapter's snapshot>}``
and ``mac`` the HMAC-SHA256, under the audit log's per-device key (:class:`tinywarden.audit.AuditKey`), of
the canonical JSON of everything else, in a domain of its own (a state MAC can never stand for an audit
record's or head's, nor one of those for it). Only a holder of the key can write a file that
:func:`read_state` accepts; a file of another bundle fails the ``bundle`` check even when renamed.

Why the audit key and not a second secret: it already is the device's one secret of this kind, created
0600 in a 0700 folder outside the log's, refused when others can read it, and its loss or replacement is
already handled (the log is set aside, audited): a state sealed with a lost key then fails its MAC and is set
aside too, which is the fail-safe answer. See docs/threat-model.md.

Rollback. An older file, validly sealed, is still a file the agent wrote: a replay of it would take the
baseline back (for instance to before a drift flag was raised). ``counter`` grows by one at every save, and
the agent writes it into its audit chain (:func:`checkpoint`) when it restores a state, when the baseline
drift flag is raised and when it stops; :func:`audited_counter` reads back the highest counter the keyed
chain holds for the bundle, and a state file below it is refused as a rollback. Not defended: a replay of a
file written after the last checkpoint (at most the windows since the last start, flag or stop; a crash
skips the stop's checkpoint), and a rollback of the state file together with the whole audit log and its
head (caught off the device by the fleet's anchors, docs/audit.md).

>>> import tempfile, pathlib
>>> from tinywarden.audit import load_key
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> key = load_key(d / "keys" / "audit.key", create=True)
>>> write_state(d / "adaptation.json", {"bundle": "ab" * 32, "counter": 3, "state": {"x": 1}}, key)
>>> read_state(d / "adaptation.json", key)["counter"]
3
"""

from __future__ import annotations

import errno
import hmac
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tinywarden.audit import AuditKey, record_hash, segments
from tinywarden.errors import ConfigError
from tinywarden.fileio import NotRegularFile, atomic_write, read_regular

__all__ = ["FORMAT", "AdaptedStateError", "audited_counter", "checkpoint", "read_state", "write_state"]

FORMAT = "tinywarden-adapted-state/1"
_DOMAIN = b"tinywarden-adapted-state-v1\0"
#: a state is a few kilobytes; a bigger file is refused before it is parsed
MAX_BYTES = 1 << 20


class AdaptedStateError(ConfigError):
    """An adapted-state file the agent must not carry on from (unreadable, unsealed, foreign, rolled back)."""


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _mac(key: AuditKey, body: Mapping[str, Any]) -> str:
    return key.mac(_DOMAIN, _canonical({"format": FORMAT, "key_id": key.key_id, "body": body}))


def write_state(path: str | Path, body: Mapping[str, Any], key: AuditKey, fsync: bool = True) -> None:
    """Seal ``body`` with ``key`` and write it to ``path`` atomically (mode 0600); AdaptedStateError naming
    the file when it cannot be written."""
    doc = {"format": FORMAT, "key_id": key.key_id, "body": body, "mac": _mac(key, body)}
    try:
        atomic_write(path, json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n", mode=0o600, fsync=fsync)
    except OSError as exc:
        raise AdaptedStateError(f"{path}: cannot write the adapted state ({exc.strerror or exc})") from None


def read_state(path: str | Path, key: AuditKey, bundle: str | None = None) -> dict[str, Any]:
    """The body of the sealed state at ``path``: AdaptedStateError (one line naming the file) when it is
    unreadable, too big, not of :data:`FORMAT`, sealed with another key, its MAC does not match (torn,
    corrupted, edited, forged), or (with ``bundle``) it was written for another bundle."""
    p = Path(path)
    try:
        raw = read_regular(p, MAX_BYTES)  # a link is not followed, a FIFO does not block
    except NotRegularFile as exc:
        if exc.errno == errno.EFBIG:
            raise AdaptedStateError(f"{p}: the adapted state is larger than {MAX_BYTES} bytes") from None
        raise AdaptedStateError(f"{p}: unreadable adapted state (not a regular file: {exc})") from None
    except OSError as exc:
        raise AdaptedStateError(f"{p}: unreadable adapted state ({exc.strerror or exc})") from None
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise AdaptedStateError(f"{p}: unreadable adapted state (torn or corrupted: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or set(doc) != {"format", "key_id", "body", "mac"}:
        raise AdaptedStateError(f"{p}: not an adapted state of format {FORMAT} (written by an older agent?)")
    body, mac = doc["body"], doc["mac"]
    if doc["key_id"] != key.key_id:
        raise AdaptedStateError(f"{p}: the adapted state was sealed with key id {str(doc['key_id'])[:16]!r}, not "
                                f"the agent's ({key.key_id})")
    try:
        expected = _mac(key, body) if isinstance(body, dict) else ""
    except (ValueError, RecursionError):  # NaN/Infinity (or nesting) that write_state never writes: no MAC of ours
        expected = ""
    if not expected or not isinstance(mac, str) or not hmac.compare_digest(mac.encode(), expected.encode()):
        raise AdaptedStateError(f"{p}: the adapted state's MAC does not match its content (corrupted or forged)")
    counter = body.get("counter")
    if type(counter) is not int or counter < 0 or not isinstance(body.get("bundle"), str):
        raise AdaptedStateError(f"{p}: the adapted state has no bundle or counter")
    if bundle is not None and body["bundle"] != bundle:
        raise AdaptedStateError(f"{p}: the adapted state was written for bundle {body['bundle'][:16]}, not the "
                                f"running {bundle[:16]}")
    return body


def checkpoint(bundle: str, counter: int) -> dict[str, Any]:
    """The audit data that records a state's counter (merged into ``adaptation_restored``, ``baseline_drift`` and
    ``agent_stop``), for :func:`audited_counter`."""
    return {"state_bundle": bundle, "state_counter": counter}


def audited_counter(audit_path: str | Path, key: AuditKey, bundle: str) -> tuple[int, int] | None:
    """``(counter, seq)``: the highest state counter the keyed audit log at ``audit_path`` (every segment)
    records for ``bundle`` (:func:`checkpoint`) and the seq of its record, or None. A record whose MAC does
    not verify under ``key`` is ignored (it proves nothing; :func:`tinywarden.audit.verify` reports it)."""
    best: tuple[int, int] | None = None
    needle = json.dumps(bundle).encode()
    for seg in segments(audit_path):
        try:
            data = seg.read_bytes()
        except OSError:
            continue
        for line in data.splitlines():
            if b'"state_counter"' not in line or needle not in line:
                continue
            try:
                rec = json.loads(line)
                d = rec["data"]
                ok = (d.get("state_bundle") == bundle and type(d.get("state_counter")) is int
                      and type(rec.get("seq")) is int and isinstance(rec.get("hash"), str))
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
                continue
            better = ok and (best is None or d["state_counter"] > best[0])
            try:  # a record the agent cannot hash (NaN/Infinity, which it never writes) is not one it wrote
                keyed = better and hmac.compare_digest(rec["hash"].encode(), record_hash(rec, key).encode())
            except (ValueError, RecursionError):
                keyed = False
            if keyed:
                best = (d["state_counter"], rec["seq"])
    return best
