"""The adapted-state file (tinywarden.agent.adaptstate): sealed with the device key, bound to its bundle; the
rollback counter read back from the keyed audit chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinywarden.agent import adaptstate
from tinywarden.agent.adaptstate import AdaptedStateError, audited_counter, read_state, write_state
from tinywarden.audit import AuditKey, AuditLog, load_key

BUNDLE = "ab" * 32
BODY = {"bundle": BUNDLE, "counter": 7, "state": {"format": "x", "g": [32768, 30000]}}


@pytest.fixture
def key(tmp_path: Path) -> AuditKey:
    return load_key(tmp_path / "keys" / "audit.key", create=True)


def test_a_sealed_state_reads_back_and_is_private(tmp_path, key):
    path = tmp_path / "adaptation.json"
    write_state(path, BODY, key, fsync=False)
    assert read_state(path, key, BUNDLE) == BODY
    assert path.stat().st_mode & 0o777 == 0o600


def _refused(path: Path, key: AuditKey, match: str, bundle: str | None = BUNDLE) -> None:
    with pytest.raises(AdaptedStateError, match=match) as info:
        read_state(path, key, bundle)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_tampered_forged_truncated_foreign_and_huge_states_are_refused(tmp_path, key):
    path = tmp_path / "adaptation.json"
    write_state(path, BODY, key, fsync=False)
    good = path.read_text()
    doc = json.loads(good)

    path.write_text(good.replace("30000", "30001"))  # one value edited, the MAC kept
    _refused(path, key, "MAC")
    other = AuditKey(b"\x01" * 32)
    write_state(path, BODY, other, fsync=False)  # sealed by someone else's key: named as such
    _refused(path, key, "key id")
    path.write_text(json.dumps({**doc, "mac": other.mac(b"tinywarden-adapted-state-v1\0", b"{}")}))
    _refused(path, key, "MAC")  # the agent's key id claimed, a MAC it did not make
    # the old keyless form: a SHA-256 anyone can recompute
    path.write_text(json.dumps({**doc["body"], "sha256": "0" * 64}))
    _refused(path, key, "format")
    path.write_text(good[: len(good) // 2])
    _refused(path, key, "unreadable")
    path.write_text("")
    _refused(path, key, "unreadable")
    write_state(path, BODY, key, fsync=False)
    _refused(path, key, "written for bundle", bundle="cd" * 32)
    path.write_bytes(b" " * (adaptstate.MAX_BYTES + 1))
    _refused(path, key, "larger than")
    path.unlink()
    _refused(path, key, "unreadable")


def test_the_audited_counter_is_the_highest_keyed_checkpoint_of_the_bundle(tmp_path, key):
    log_path = tmp_path / "audit.log"
    log = AuditLog(log_path, key=key, fsync=False, max_bytes=1024)  # small: the checkpoints span rotated files
    assert audited_counter(log_path, key, BUNDLE) is None
    log.append("adaptation_restored", {"x": 1, **adaptstate.checkpoint(BUNDLE, 5)}, time=1.0)
    for i in range(12):
        log.append("noise", {"i": i, "pad": "p" * 80}, time=2.0)
    rec = log.append("agent_stop", adaptstate.checkpoint(BUNDLE, 9), time=3.0)
    log.append("agent_stop", adaptstate.checkpoint("cd" * 32, 40), time=4.0)  # another bundle's
    log.append("baseline_drift", adaptstate.checkpoint(BUNDLE, 8), time=5.0)
    assert len(list(tmp_path.glob("audit.log.*"))) >= 1
    assert audited_counter(log_path, key, BUNDLE) == (9, rec["seq"])
    # a record the key did not write proves nothing
    forged = {"seq": 999, "time": 6.0, "kind": "agent_stop", "data": adaptstate.checkpoint(BUNDLE, 10**6),
              "prev": "0" * 64, "hash": "f" * 64}
    with log_path.open("a") as f:
        f.write(json.dumps(forged) + "\n")
    assert audited_counter(log_path, key, BUNDLE) == (9, rec["seq"])
    assert audited_counter(log_path, AuditKey(b"\x02" * 32), BUNDLE) is None


def test_an_edited_state_with_nan_or_deep_nesting_is_refused_not_raised(tmp_path, key):
    # JSON's reader takes NaN/Infinity and raises RecursionError on deep nesting: an edited file must still be
    # the one-line AdaptedStateError the agent sets aside, never a ValueError that stops it at start
    path = tmp_path / "adaptation.json"
    write_state(path, BODY, key, fsync=False)
    good = path.read_text()
    path.write_text(good.replace("30000", "NaN"))
    _refused(path, key, "MAC")
    path.write_text(good.replace("30000", "Infinity"))
    _refused(path, key, "MAC")
    path.write_text("[" * 100_000)
    _refused(path, key, "unreadable")


def test_a_planted_audit_line_with_nan_or_deep_nesting_proves_nothing_and_raises_nothing(tmp_path, key):
    # audited_counter runs at every start: a line it cannot hash must be ignored like a forged one, not stop the agent
    log_path = tmp_path / "audit.log"
    log = AuditLog(log_path, key=key, fsync=False)
    rec = log.append("agent_stop", adaptstate.checkpoint(BUNDLE, 9), time=3.0)
    needle = json.dumps(BUNDLE)
    with log_path.open("a") as f:
        f.write('{"seq": 999, "time": NaN, "kind": "agent_stop", "data": {"state_bundle": ' + needle
                + ', "state_counter": 99}, "prev": "' + "0" * 64 + '", "hash": "' + "f" * 64 + '"}\n')
        f.write('{"data": {"state_bundle": ' + needle + ', "state_counter": 98}, "seq": 1000, "hash": "", "x": '
                + "[" * 100_000 + "}\n")
    assert audited_counter(log_path, key, BUNDLE) == (9, rec["seq"])


def test_a_link_or_fifo_at_the_adapted_state_path_is_refused_not_followed(tmp_path, key):
    """The engine state's rule (fileio.read_regular): a FIFO at the path hung the agent's start; a link was read."""
    import os
    import threading

    target = tmp_path / "elsewhere.json"
    write_state(target, BODY, key, fsync=False)
    link = tmp_path / "adaptation.json"
    link.symlink_to(target)
    _refused(link, key, r"not a regular file: a symbolic link")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    errors: list[str] = []
    t = threading.Thread(target=lambda: errors.append(_why(fifo, key)), daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("read_state blocked on a FIFO")
    assert "not a regular file: a FIFO" in errors[0]


def _why(path: Path, key: AuditKey) -> str:
    try:
        read_state(path, key, BUNDLE)
    except AdaptedStateError as exc:
        return str(exc)
    return "read"
