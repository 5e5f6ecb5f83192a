"""The fleet's output folder: signed bundles, their summaries, and which devices are done.

For each device ``OUT/<device_id>.twbundle`` (signed) and ``OUT/<device_id>.json`` (its summary, with the
bundle's SHA-256 and version) are written atomically (:func:`tinywarden.fileio.atomic_write`), bundle
first. A device is *done* when its summary names the bundle that is on disk; a rerun skips it. Signing
happens here, in the process that holds the key, never on a worker.

Versions: a device's new bundle gets one more than the highest version any earlier bundle or summary of
that device carried, so a version once signed is never signed again with other content (a worker killed
after the bundle was written but before its summary makes the retrained bundle version 2, not a second
version 1).

The run's record ``OUT/fleet-run.json`` (devices done, skipped, failed with why) is replaced, atomically, by one
marked :data:`RUN_RUNNING` before a run changes any device's files (:func:`start_run`), and written whole when
the run ends (:func:`write_run`): a run that stops before its end (interrupted, killed, a machine gone) leaves
that mark, never an earlier run's record to be read as its own, and keeps every device it finished (a rerun
skips them).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

from tinywarden.bundle import BundleError, parse_bundle, sign_bundle, verify_bundle
from tinywarden.errors import DataError
from tinywarden.fileio import atomic_write
from tinywarden.fleet.device import CONFIDENCE_EDGES, DeviceOutcome

RUN_FILE = "fleet-run.json"
#: ``status`` of the run record from a run's start until its end, and once it has ended (a record without one was
#: written, at its end, by a run before the status existed).
RUN_RUNNING, RUN_COMPLETE = "running", "complete"


#: The summary fields :mod:`tinywarden.fleet.report` cannot do without (``fleet coldstart`` names its own).
REPORT_FIELDS = ("profile", "flash", "ram")
#: Summary fields that are numbers when present (null or absent where a device has none).
_NUMBERS = ("flash", "ram", "version", "bundle_bytes", "false_alarms_per_day", "normal_days", "incidents",
            "detected", "detection_rate")


def _is_number(v: Any) -> bool:
    """A finite int or float (not a bool); an integer too large for a float is not one (JSON's have no bound)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def check_summary(doc: dict[str, Any], path: Path, required: tuple[str, ...] = ()) -> None:
    """A one-line :class:`DataError` naming ``path`` for a device summary one cannot compute with: a ``required``
    field missing or null, a profile that is not a name, a number field that is not a finite number, a confidence
    histogram that is not :data:`~tinywarden.fleet.device.CONFIDENCE_EDGES`' bins of window counts."""
    for key in required:
        if doc.get(key) is None:
            raise DataError(f"{path}: device summary without {key!r}")
    if "profile" in doc and not isinstance(doc["profile"], str):
        raise DataError(f"{path}: profile {doc['profile']!r}: expected a name")
    for key in _NUMBERS:
        if doc.get(key) is not None and not _is_number(doc[key]):
            raise DataError(f"{path}: {key} {doc[key]!r}: expected a finite number")
    hist = doc.get("confidence_hist") or {}
    if not isinstance(hist, dict):
        raise DataError(f"{path}: confidence_hist: expected an object")
    bins = len(CONFIDENCE_EDGES) - 1
    for name in ("normal", "attack"):
        counts = hist.get(name)
        if counts is not None and not (isinstance(counts, list) and len(counts) == bins and all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)):
            raise DataError(f"{path}: confidence_hist {name!r}: expected {bins} window counts")


def bundle_path(out: str | Path, device_id: str) -> Path:
    return Path(out) / f"{device_id}.twbundle"


def summary_path(out: str | Path, device_id: str) -> Path:
    return Path(out) / f"{device_id}.json"


def read_summary(out: str | Path, device_id: str) -> dict[str, Any] | None:
    """The device's summary, or ``None`` when it has none or it is unreadable (then the device is not done)."""
    try:
        doc = json.loads(summary_path(out, device_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def is_done(out: str | Path, device_id: str, public_key: bytes | None = None) -> bool:
    """True when the device's summary names the signed bundle on disk (same SHA-256) and, given
    ``public_key``, that bundle verifies under it (a bundle signed with another key is done again)."""
    summary = read_summary(out, device_id)
    if summary is None:
        return False
    path = bundle_path(out, device_id)
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if hashlib.sha256(data).hexdigest() != summary.get("bundle_sha256"):
        return False
    if public_key is None:
        return True
    try:
        verify_bundle(data, public_key, source=str(path))
    except BundleError:
        return False
    return True


def last_version(out: str | Path, device_id: str) -> int:
    """The highest version an earlier bundle or summary of this device carried (0 if none).

    A bundle on disk whose version cannot be read is refused (:class:`DataError`): signing over it could
    reuse the version it carried.
    """
    versions = [0]
    summary = read_summary(out, device_id)
    if summary is not None and isinstance(summary.get("version"), int):
        versions.append(summary["version"])
    path = bundle_path(out, device_id)
    if path.is_file():
        try:
            versions.append(parse_bundle(path.read_bytes(), source=str(path)).version)
        except (BundleError, OSError) as exc:
            raise DataError(f"{path}: an earlier bundle whose version cannot be read ({exc}); move it away "
                            "to train this device again") from None
    return max(versions)


def publish(out: str | Path, outcome: DeviceOutcome, key: Any) -> dict[str, Any]:
    """Sign a successful outcome's bundle with the device's next version and write bundle, then summary."""
    if not outcome.ok:
        raise DataError(f"{outcome.device_id}: nothing to publish ({outcome.error})")
    version = last_version(out, outcome.device_id) + 1
    path = bundle_path(out, outcome.device_id)
    signed = sign_bundle(outcome.unsigned, key, version=version, source=str(path))
    atomic_write(path, signed)
    summary = {**outcome.summary, "version": version, "bundle": path.name, "bundle_bytes": len(signed),
               "bundle_sha256": hashlib.sha256(signed).hexdigest()}
    atomic_write(summary_path(out, outcome.device_id), json.dumps(summary, sort_keys=True) + "\n")
    return summary


def start_run(out: str | Path, to_train: int) -> Path:
    """Mark the run's record :data:`RUN_RUNNING` (with when it started and how many devices it trains), before
    the run changes any device's files: until :func:`write_run`, ``fleet report`` says the run has not finished."""
    return _write_record(out, {"status": RUN_RUNNING, "started": time.time(), "to_train": to_train})


def write_run(out: str | Path, run: dict[str, Any]) -> Path:
    """The ended run's record (devices done, skipped, failed with their errors), for ``fleet report``."""
    return _write_record(out, {**run, "status": RUN_COMPLETE})


def _write_record(out: str | Path, record: dict[str, Any]) -> Path:
    path = Path(out) / RUN_FILE
    atomic_write(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return path


def unfinished_run(path: Path, record: dict[str, Any]) -> str | None:
    """The one line ``fleet report`` refuses a folder with while the run record ``record`` (read from ``path``) is
    :data:`RUN_RUNNING`, or None when the record is of a run that ended."""
    if record.get("status") != RUN_RUNNING:
        return None
    started, to_train = record.get("started"), record.get("to_train")
    about: list[str] = []
    if _is_number(started) and 0 <= started < 2**40:  # a time.gmtime can take
        about.append(time.strftime("started %Y-%m-%d %H:%M:%S UTC", time.gmtime(started)))
    if isinstance(to_train, int) and not isinstance(to_train, bool):
        about.append(f"{to_train} device(s) to train")
    told = f" ({', '.join(about)})" if about else ""
    return (f"{path}: the last `fleet train` into this folder{told} has not finished: it is still running or was "
            "stopped; run it again to finish it (devices already done are skipped), then report")


def last_run_failures(folder: str | Path) -> dict[str, str]:
    """Failed device -> error, from the run record in ``folder`` (none without a record). A :class:`DataError` in one
    line for a record that cannot be read, and for a run that has not ended (:func:`unfinished_run`): what the
    folder holds then mixes its devices with an earlier run's. ``fleet report`` and ``fleet coldstart`` read it."""
    path = Path(folder) / RUN_FILE
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable run record ({exc})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: unreadable run record (expected an object)")
    refusal = unfinished_run(path, record)
    if refusal is not None:
        raise DataError(refusal)
    failed = record.get("failed", {})
    if not isinstance(failed, dict) or not all(isinstance(v, str) for v in failed.values()):
        raise DataError(f"{path}: unreadable run record (failed: expected device id -> error)")
    return failed
