"""The agent's status file: one small JSON document that local tools (and people) read to see what the
agent is doing right now.

It is replaced atomically (:func:`tinywarden.fileio.atomic_write`), so a reader sees
the previous or the next document, never a torn one. It is not fsynced: after a power cut a slightly
stale status is harmless, and the agent rewrites it on its next window. One the agent cannot write (a full disk,
its folder gone) does not stop the monitoring: the first failure is logged and audited (``status_unwritable``) and
the agent writes it again as soon as it can. It holds no raw telemetry.

Fields (format 1): ``device_id``, ``mode`` (``live``/``replay``), ``model`` (id, version, digest,
threshold, window, stride, channels), ``pending_model`` (a verified bundle waiting for its first full
window, or null), ``tier`` and ``tier_name``, ``unreverted`` (actions whose revert failed and is being
retried), ``last_scores`` (``[time, score]`` pairs, oldest first),
``samples_seen``, ``windows_scored``, ``incidents``, ``started_at``, ``last_update``, ``faults``
(``model_faults``, ``last``, ``engine_fault``, and the fail-safe bounds guard: ``guard`` (what guards the
device when the model faults, or ``none: why``), ``guarding`` (it is judging the windows now),
``guarded_windows``, ``guard_violations``, ``last_guard``),
``bundles`` (swaps, refusals, the last refusal), ``audit`` (``log``, ``key_id``, and ``set_aside`` /
``set_aside_reason``: the keyed log set aside at start because the key could not continue it, or null)
``escalation`` (spool and broker state, or null), ``confidence`` (``scale``: ``likelihood`` or
``none: why``, and ``last``: the last window's calibrated confidence in [0, 1], or null) and
``adaptation`` (:meth:`tinywarden.adapt.BaselineAdapter.status`: windows adapted and held, drift from the
training reference, ``flagged``; or ``enabled: false`` and why).

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "status.json"
>>> write_status(p, {"device_id": "cam-1", "tier": 0})
>>> read_status(p)["device_id"]
'cam-1'
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tinywarden.errors import TinywardenError
from tinywarden.fileio import atomic_write

__all__ = ["STATUS_FORMAT", "StatusError", "read_status", "write_status"]

STATUS_FORMAT = 1


class StatusError(TinywardenError):
    """A status file that cannot be written or read; the message names the file."""


def write_status(path: str | os.PathLike[str], doc: Mapping[str, Any]) -> None:
    """Replace the status file at ``path`` with ``doc`` (plus ``format``), atomically."""
    p = Path(path)
    body = json.dumps({"format": STATUS_FORMAT, **doc}, sort_keys=True, allow_nan=False) + "\n"
    try:
        atomic_write(p, body, mode=0o644, fsync=False)
    except OSError as exc:
        raise StatusError(f"{p}: cannot write status ({exc.strerror or exc})") from None


def read_status(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The status document at ``path``; :class:`StatusError` if it is missing or not a status file."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StatusError(f"{p}: no status file (is the agent running with --status {p}?)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StatusError(f"{p}: not a readable status file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != STATUS_FORMAT:
        raise StatusError(f"{p}: not a tinywarden status file of format {STATUS_FORMAT}")
    return doc
