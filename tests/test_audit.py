"""The keyed audit log: every kind of tampering is detected and named, crashes are survived, rotation keeps
the chain verifiable and the size bounded, and unkeyed logs are never called intact."""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinywarden.audit import (
    GENESIS,
    AuditError,
    AuditKey,
    AuditLog,
    load_key,
    record_hash,
    segments,
    verify,
)


@pytest.fixture
def key(tmp_path: Path) -> AuditKey:
    return load_key(tmp_path / "keys" / "audit.key", create=True)


def write_log(path: Path, key: AuditKey | None, n: int = 6, **kw: int) -> AuditLog:
    """A genesis record (keyed logs) and ``n`` action records."""
    log = AuditLog(path, key=key, device_id="gw-1", **kw)
    for i in range(n):
        log.append("action", {"tier": i % 4, "scores": [0.5 + i, 1.5], "threshold": 1.0}, time=float(i))
    return log


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def records(path: Path) -> list[dict]:
    return [json.loads(x) for x in lines(path)]


def dump(rec: dict) -> str:
    return json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n"


def sha256_hash(rec: dict) -> str:
    """What a writer without the key can compute: the plain SHA-256 chain of the unkeyed format."""
    body = {k: v for k, v in rec.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def tampers(path: Path, key: AuditKey | None, **kw) -> list[str]:
    return [p.where + " " + p.message for p in verify(path, key, **kw).problems if p.severity == "tamper"]


# ------------------------------------------------------------------------------------------ honest logs


def test_intact_keyed_chain_verifies(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    writer = write_log(log, key)
    report = verify(log, key)
    assert report.verdict == "intact" and report.problems == []
    assert report.records == 7 and (report.first_seq, report.last_seq) == (0, 6)
    assert report.key_id == key.key_id and report.log_id == writer.log_id
    recs = records(log)
    genesis = recs[0]
    assert genesis["kind"] == "genesis" and genesis["prev"] == GENESIS
    assert genesis["data"] == {"log_id": writer.log_id, "key_id": key.key_id, "device_id": "gw-1"}
    assert all(r["prev"] == p["hash"] for p, r in zip(recs, recs[1:], strict=False))
    assert all(record_hash(r, key) == r["hash"] != record_hash(r) for r in recs)
    head = json.loads((tmp_path / "a.log.head").read_text())
    assert (head["seq"], head["hash"]) == writer.head == (6, recs[-1]["hash"]) and len(head["mac"]) == 64
    # The key is the owner's alone, in a folder of its own; the log never names the secret.
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.path.parent.stat().st_mode) == 0o700
    assert key.secret.hex() not in log.read_text() and key.secret.hex() not in repr(key)


def test_reopening_continues_the_keyed_chain(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, key, n=3)
    again = AuditLog(log, key=load_key(key.path))
    again.append("action", {"tier": 0}, time=9.0)
    assert [r["kind"] for r in records(log)].count("genesis") == 1
    assert verify(log, key).verdict == "intact" and verify(log, key).records == 5


def test_edited_record_is_named(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, key)
    text = lines(log)
    text[3] = text[3].replace('"tier":2', '"tier":0')
    log.write_text("".join(text))
    assert tampers(log, key) == [
        "a.log:4 seq 3: MAC does not match (forged, edited or rewritten without the key)"
    ]


def test_removed_record_is_named(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, key)
    text = lines(log)
    del text[3]
    log.write_text("".join(text))
    assert tampers(log, key) == ["a.log:4 seq 3 missing before seq 4 (records removed)"]


def test_reordered_records_are_named(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, key)
    text = lines(log)
    text[2], text[3] = text[3], text[2]
    log.write_text("".join(text))
    found = tampers(log, key)
    assert found and all("reordered" in f for f in found)
    assert found[0].startswith("a.log:3 seq 3 found where seq 2 was expected")


def test_removing_the_genesis_record_is_detected(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, key)
    log.write_text("".join(lines(log)[1:]))
    found = tampers(log, key)
    assert "a.log:1 chain starts at seq 1 with no rotate record (records removed)" in found
    assert any("no record is keyed" in f for f in found)


def test_crash_mid_write_is_reported_and_recovered(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, key)
    # Simulate a crash in the middle of the write() of record 7 (the head file was not updated yet).
    partial = b'{"data":{"tier":1},"hash":"ab'
    with open(log, "ab") as f:
        f.write(partial)
    report = verify(log, key)
    assert report.verdict == "intact" and report.records == 7
    assert [p.severity for p in report.problems] == ["crash"]
    assert "partial last record" in report.problems[0].message
    # The next writer moves the partial bytes out of the chain, recording their digest, and carries on.
    reopened = AuditLog(log, key=key)
    reopened.append("action", {"tier": 0}, time=7.0)
    report = verify(log, key)
    assert report.verdict == "intact" and report.problems == [] and report.records == 9
    recovered = records(log)[7]
    assert recovered["kind"] == "recovered" and recovered["data"]["partial_bytes"] == len(partial)


def test_crash_between_record_and_head_update_is_not_called_tampering(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    writer = write_log(log, key, n=4)
    head = tmp_path / "a.log.head"
    before = head.read_text()  # keyed by the writer itself
    writer.append("action", {"tier": 1})
    head.write_text(before)  # as if the process died between the record's write and the head's
    report = verify(log, key)
    assert report.verdict == "intact" and [p.severity for p in report.problems] == ["crash"]


def test_a_crash_before_the_genesis_record_leaves_a_consistent_log(
    tmp_path: Path, key: AuditKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "a.log"

    def die(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(AuditLog, "append", die)
        with pytest.raises(KeyboardInterrupt):
            AuditLog(log, key=key)
    # The head came first (seq -1), so a keyed log's missing head file can only mean it was deleted.
    assert json.loads((tmp_path / "a.log.head").read_text())["seq"] == -1 and not log.exists()
    AuditLog(log, key=key).append("action", {"tier": 1})
    assert verify(log, key).verdict == "intact" and records(log)[0]["kind"] == "genesis"


def test_rotation_bounds_size_and_keeps_the_chain(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    writer = write_log(log, key, n=200, max_bytes=4096, keep=2)
    files = segments(log)
    assert [f.name for f in files] == ["a.log.2", "a.log.1", "a.log"]
    assert all(f.stat().st_size <= 4096 for f in files)
    report = verify(log, key)
    assert report.verdict == "intact" and report.last_seq == writer.seq - 1
    assert [p.severity for p in report.problems] == ["info"]  # the oldest files were rotated away
    assert "rotated away" in report.problems[0].message
    first = records(files[0])[0]
    assert first["kind"] == "rotate" and first["data"]["key_id"] == key.key_id
    assert first["data"]["log_id"] == writer.log_id and records(log)[0]["data"]["files"] == 2


def test_removing_a_rotated_file_in_the_middle_is_detected(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, key, n=200, max_bytes=4096, keep=3)
    (tmp_path / "a.log.2").unlink()
    found = tampers(log, key)
    assert len(found) == 2
    assert "records removed" in found[0] and found[0].startswith("a.log.1:1")
    assert "a.log.2 is gone (rotated files deleted)" in found[1]


def test_an_interrupted_rotation_is_finished_on_reopen(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, key, n=3)
    log.rename(tmp_path / "a.log.1")  # the crash: the live file moved away, its successor not begun
    AuditLog(log, key=key).append("action", {"tier": 0})
    assert records(log)[0]["kind"] == "rotate" and verify(log, key).verdict == "intact"


def test_non_finite_values_are_logged_not_lost(tmp_path: Path, key: AuditKey) -> None:
    log = AuditLog(tmp_path / "a.log", key=key)
    log.append("note", {"score": math.nan, "scores": [math.inf, 1.0]}, time=1.0)
    rec = records(tmp_path / "a.log")[1]
    assert rec["data"] == {"score": "nan", "scores": ["inf", 1.0]}
    assert verify(tmp_path / "a.log", key).verdict == "intact"


def test_missing_log_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no such audit log"):
        verify(tmp_path / "nope.log")


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_any_single_byte_change_is_detected(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject):
    d = tmp_path_factory.mktemp("fuzz")
    key = load_key(d / "keys" / "k", create=True)
    log = d / "a.log"
    write_log(log, key, n=5)
    raw = bytearray(log.read_bytes())
    pos = data.draw(st.integers(0, len(raw) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[pos]))
    raw[pos] = new
    log.write_bytes(bytes(raw))
    report = verify(log, key)
    # Even a change to the last newline is caught: the head file shows the last record as cut off.
    assert not report.ok


# -------------------------------------------------- forgeries by a writer without the key (issue 12, item 3)
# Each of these verified as "chain intact" before the chain was keyed.


def test_forged_appended_record_is_named(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, key)
    last = records(log)[-1]
    forged = {"seq": 7, "time": 7.0, "kind": "action", "data": {"tier": 0}, "prev": last["hash"]}
    forged["hash"] = sha256_hash(forged)
    log.write_text(log.read_text() + dump(forged))
    (tmp_path / "a.log.head").write_text(json.dumps({"seq": 7, "hash": forged["hash"]}))
    found = tampers(log, key)
    assert "a.log:8 seq 7: MAC does not match (forged, edited or rewritten without the key)" in found
    assert "a.log.head head file carries no MAC (rewritten)" in found


def test_chain_recomputed_from_a_record_is_named_where_it_starts(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, key)
    recs = records(log)
    recs[2]["data"]["tier"] = 3
    for i in range(2, len(recs)):
        recs[i]["prev"] = recs[i - 1]["hash"]
        recs[i]["hash"] = sha256_hash(recs[i])
    log.write_text("".join(dump(r) for r in recs))
    (tmp_path / "a.log.head").write_text(json.dumps({"seq": 6, "hash": recs[-1]["hash"]}))
    found = tampers(log, key)
    assert found[0] == "a.log:3 seq 2..6 (5 records): MAC does not match (forged, edited or rewritten without the key)"
    assert len(found) == 2 and "head file carries no MAC" in found[1]


def test_fresh_one_record_log_is_named(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, key)
    fresh = {"seq": 0, "time": 0.0, "kind": "action", "data": {}, "prev": GENESIS}
    fresh["hash"] = sha256_hash(fresh)
    log.write_text(dump(fresh))
    (tmp_path / "a.log.head").unlink()
    found = tampers(log, key)
    assert any("no record is keyed with key id" in f for f in found)
    assert "a.log:1 seq 0: MAC does not match (forged, edited or rewritten without the key)" in found
    # Without the key nothing is proven either way, and the verdict says so instead of "intact".
    assert verify(log).verdict == "unkeyed"


def test_fresh_log_keyed_with_another_key_is_named(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, key)
    for f in segments(log) + [tmp_path / "a.log.head"]:
        f.unlink()
    write_log(log, AuditKey(b"\x07" * 32), n=1)  # a forger's own key: a well-formed, keyed, wrong log
    found = tampers(log, key)
    assert any(f"not with the given key (id {key.key_id})" in f for f in found)
    assert any("head file MAC does not match" in f for f in found)


def test_records_cut_from_the_end_with_the_head_rewritten_are_named(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, key)
    recs = records(log)
    log.write_text("".join(dump(r) for r in recs[:4]))
    head = tmp_path / "a.log.head"
    keyed_head = json.loads(head.read_text())
    head.write_text(json.dumps({**keyed_head, "seq": 3, "hash": recs[3]["hash"]}))  # the old MAC kept
    assert tampers(log, key) == ["a.log.head head file MAC does not match (rewritten without the key)"]
    head.write_text(json.dumps({"seq": 3, "hash": recs[3]["hash"]}))  # the unkeyed head format
    assert tampers(log, key) == ["a.log.head head file carries no MAC (rewritten)"]


def test_records_cut_from_the_end_with_the_head_deleted_are_named(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, key)
    log.write_text("".join(lines(log)[:4]))
    (tmp_path / "a.log.head").unlink()
    found = tampers(log, key)
    assert len(found) == 1 and found[0].startswith("a.log.head head file deleted")
    assert not verify(log).ok  # the links alone show it too: a keyed log always has its head


def test_all_rotated_files_deleted_is_named(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, key, n=200, max_bytes=4096, keep=3)
    for f in segments(log)[:-1]:
        f.unlink()
    found = tampers(log, key)
    assert found == [
        "a.log:1 the rotate record (seq "
        f"{records(log)[0]['seq']}) says 3 older file(s) were kept, but a.log.1, a.log.2, a.log.3 are gone "
        "(rotated files deleted)"
    ]


def test_nan_inside_a_record_is_a_finding_not_a_crash(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, key)
    text = lines(log)
    text[3] = text[3].replace('"tier":2', '"tier":NaN')
    log.write_text("".join(text))
    found = tampers(log, key)
    assert found[0] == "a.log:4 not a valid record: NaN in it, which the writer never writes (edited)"
    # The writer refuses to continue such a log if the NaN is in its last record, with one line too.
    text[-1] = text[-1].replace('"threshold":1.0', '"threshold":Infinity')
    log.write_text("".join(text))
    with pytest.raises(AuditError, match="last record unreadable"):
        AuditLog(log, key=key)


def test_non_ascii_hashes_and_macs_are_findings(tmp_path: Path, key: AuditKey) -> None:
    log, head = tmp_path / "a.log", tmp_path / "a.log.head"
    write_log(log, key)
    recs = records(log)
    recs[2]["hash"] = "\u00e9" * 64
    log.write_text("".join(dump(r) for r in recs))
    head.write_text(json.dumps({**json.loads(head.read_text()), "mac": "\u00e9" * 64}))
    found = tampers(log, key)
    assert "a.log:3 seq 2: MAC does not match (forged, edited or rewritten without the key)" in found
    assert "a.log.head head file MAC does not match (rewritten without the key)" in found


# ----------------------------------------------------------------------------- keys and unkeyed logs


def test_unkeyed_log_is_never_called_intact(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write_log(log, None)
    report = verify(log)
    assert report.ok and report.verdict == "unkeyed" and not report.keyed
    assert any("unkeyed: integrity only against accidents" in p.message for p in report.problems)
    text = lines(log)
    text[2] = text[2].replace('"tier":2', '"tier":0')
    log.write_text("".join(text))
    assert tampers(log, None) == ["a.log:3 seq 2: content does not match its hash (edited)"]


def test_keyed_log_without_its_key_is_unverified(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, key)
    report = verify(log)
    assert report.ok and report.verdict == "unverified" and report.keyed and not report.authenticated
    with pytest.raises(AuditError, match="keyed log"):
        AuditLog(log)  # never continued unkeyed: that would look like a forged tail
    with pytest.raises(AuditError, match="give the log's own key"):
        AuditLog(log, key=AuditKey(b"\x01" * 32))


def test_an_unkeyed_log_is_continued_by_a_keyed_genesis_that_pins_it(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, None, n=3)
    writer = write_log(log, key, n=2)
    recs = records(log)
    assert recs[3]["kind"] == "genesis" and recs[3]["data"]["unkeyed_before"] == 3 and writer.seq == 6
    report = verify(log, key)
    assert report.verdict == "intact"
    assert [p.message for p in report.problems] == [
        "seq 0..2 were written before the log was keyed (pinned by a.log:4): integrity only against accidents"
    ]
    # Rewriting the unkeyed part, even with its SHA-256 chain recomputed, breaks the keyed genesis' link.
    recs[1]["data"]["tier"] = 3
    for i in (1, 2):
        recs[i]["prev"] = recs[i - 1]["hash"]
        recs[i]["hash"] = sha256_hash(recs[i])
    log.write_text("".join(dump(r) for r in recs))
    assert tampers(log, key) == ["a.log:4 seq 3: prev hash does not match seq 2 (that record was edited or replaced)"]


def test_a_key_another_user_owns_or_in_a_folder_anyone_writes_is_refused(tmp_path: Path) -> None:
    # The key's mode was checked, not its owner nor its folder: an agent running as root accepted a 0600 key another
    # user had planted, and anyone could swap the key in a world-writable folder for their own
    folder = tmp_path / "keys"
    p = folder / "audit.key"
    k = load_key(p, create=True)
    folder.chmod(0o777)
    with pytest.raises(AuditError, match=r"anyone may replace the audit key in this folder \(mode 0777\)"):
        load_key(p)
    folder.chmod(0o1777)  # the sticky bit: only the key's owner may rename or delete it
    assert load_key(p) == k
    folder.chmod(0o700)
    if os.geteuid() == 0:  # only root can give the file away
        os.chown(p, 4242, -1)
        with pytest.raises(AuditError, match="belongs to uid 4242, not to this user or root"):
            load_key(p)
        os.chown(p, 0, -1)
        assert load_key(p) == k


def test_key_files_are_checked(tmp_path: Path) -> None:
    p = tmp_path / "keys" / "audit.key"
    with pytest.raises(AuditError, match="no such audit key"):
        load_key(p)
    k = load_key(p, create=True)
    assert load_key(p) == k and len(k.key_id) == 16
    p.chmod(0o644)
    with pytest.raises(AuditError, match=r"mode 0644.*chmod 600"):
        load_key(p)
    p.chmod(0o600)
    p.write_text("not a key\n")
    with pytest.raises(AuditError, match="not an audit key"):
        load_key(p)
    beside = load_key(tmp_path / "k2", create=True)
    with pytest.raises(AuditError, match="kept apart from the log"):
        AuditLog(tmp_path / "a.log", key=beside)


# ------------------------------------------------------------------------------------------ two writers

WRITER = """
import sys
from tinywarden.audit import AuditLog, load_key
log = AuditLog(sys.argv[1], key=load_key(sys.argv[2]), fsync=False, max_bytes=4096, keep=50)
for i in range(int(sys.argv[4])):
    log.append("note", {"writer": sys.argv[3], "i": i, "pad": "x" * 40})
"""


def test_two_writers_on_one_log_extend_one_chain_not_a_forked_one(tmp_path: Path, key: AuditKey) -> None:
    """Two AuditLog writers on one file (a second agent, or `tinywarden respond --audit` run on the agent's log)
    each kept the chain's end in memory: their records forked it (two seq N, a prev that matches neither), and
    `audit verify` called the honest log tampered. Each append now continues after the last record on disk."""
    path = tmp_path / "logs" / "audit.log"
    a = AuditLog(path, key=key, device_id="gw-1")
    a.append("note", {"who": "a"})
    b = AuditLog(path, key=key, device_id="gw-1")
    a.append("note", {"who": "a"})
    b.append("note", {"who": "b"})
    a.append("note", {"who": "a"})
    report = verify(path, key)
    assert report.verdict == "intact", [str(p) for p in report.problems]
    assert [r["data"].get("who") for r in records(path)] == [None, "a", "a", "b", "a"]
    assert a.head == (4, records(path)[-1]["hash"]) and report.head == a.head


def test_two_writer_processes_racing_with_rotation_leave_one_intact_chain(tmp_path: Path, key: AuditKey) -> None:
    import subprocess
    import sys

    path = tmp_path / "logs" / "audit.log"
    AuditLog(path, key=key, device_id="gw-1")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    procs = [subprocess.Popen([sys.executable, str(script), str(path), str(key.path), w, "150"], env=env)
             for w in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    report = verify(path, key)
    assert report.verdict == "intact", [str(p) for p in report.problems][:5]
    notes = [r for f in segments(path) for r in records(f) if r["kind"] == "note"]
    assert sorted((r["data"]["writer"], r["data"]["i"]) for r in notes) == sorted(
        (w, i) for w in ("a", "b") for i in range(150))
    assert len(segments(path)) > 3  # it rotated while both wrote


@pytest.mark.parametrize("planted", ["link", "fifo"])
def test_a_link_or_fifo_planted_as_the_log_is_refused_and_its_target_left_alone(
    tmp_path: Path, key: AuditKey, planted: str
) -> None:
    """``--audit`` in a folder another user can write (``respond --audit /tmp/tw/audit.log`` as root): a link
    planted there had every record appended to the file it named, and the start-up's crash recovery cut that
    file back to its last newline; a FIFO hung the writer. Refused in one line, nothing written."""
    folder = tmp_path / "shared"
    folder.mkdir()
    victim = tmp_path / "victim.conf"
    victim.write_bytes(b"keep=1\nno newline at the end")
    log = folder / "audit.log"
    if planted == "link":
        log.symlink_to(victim)
    else:
        os.mkfifo(log)
    with pytest.raises(AuditError, match="audit.log: not a regular file") as info:
        AuditLog(log, key=key)
    assert "\n" not in str(info.value)
    assert victim.read_bytes() == b"keep=1\nno newline at the end"
