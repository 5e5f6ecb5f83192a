"""The hash-chained audit log: every kind of tampering is detected and named, crashes are survived,
rotation keeps the chain verifiable and the size bounded."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinywarden.audit import GENESIS, AuditError, AuditLog, record_hash, segments, verify


def write_log(path: Path, n: int = 6, **kw: int) -> AuditLog:
    log = AuditLog(path, **kw)
    for i in range(n):
        log.append("action", {"tier": i % 4, "scores": [0.5 + i, 1.5], "threshold": 1.0}, time=float(i))
    return log


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def tampers(path: Path) -> list[str]:
    return [p.where + " " + p.message for p in verify(path).problems if p.severity == "tamper"]


def test_intact_chain_verifies(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write_log(log)
    report = verify(log)
    assert report.ok and report.records == 6 and (report.first_seq, report.last_seq) == (0, 5)
    recs = [json.loads(x) for x in lines(log)]
    assert recs[0]["prev"] == GENESIS
    assert all(r["prev"] == p["hash"] for p, r in zip(recs, recs[1:], strict=False))
    assert all(record_hash(r) == r["hash"] for r in recs)


def test_edited_record_is_named(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write_log(log)
    text = lines(log)
    text[2] = text[2].replace('"tier":2', '"tier":0')
    log.write_text("".join(text))
    assert tampers(log) == ["a.log:3 seq 2: content does not match its hash (edited)"]


def test_edited_and_rehashed_record_breaks_the_next_link(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write_log(log)
    text = lines(log)
    rec = json.loads(text[2])
    rec["data"]["tier"] = 0
    rec["hash"] = record_hash(rec)
    text[2] = json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n"
    log.write_text("".join(text))
    found = tampers(log)
    assert len(found) == 1 and found[0].startswith("a.log:4 seq 3: prev hash does not match seq 2")


def test_removed_record_is_named(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write_log(log)
    text = lines(log)
    del text[3]
    log.write_text("".join(text))
    assert tampers(log) == ["a.log:4 seq 3 missing before seq 4 (records removed)"]


def test_reordered_records_are_named(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write_log(log)
    text = lines(log)
    text[2], text[3] = text[3], text[2]
    log.write_text("".join(text))
    found = tampers(log)
    assert found and all("reordered" in f for f in found)
    assert found[0].startswith("a.log:3 seq 3 found where seq 2 was expected")


def test_truncated_log_is_detected_by_the_head_file(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write_log(log)
    log.write_text("".join(lines(log)[:4]))
    assert tampers(log) == ["a.log log ends at seq 3 but the head file says 5: seq 4..5 cut off (truncated)"]


def test_removing_the_first_record_is_detected(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write_log(log)
    log.write_text("".join(lines(log)[1:]))
    assert tampers(log) == ["a.log:1 chain starts at seq 1 with no rotate record (records removed)"]


def test_crash_mid_write_is_reported_and_recovered(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write_log(log)
    # Simulate a crash in the middle of the write() of record 6 (the head file was not updated yet).
    partial = b'{"data":{"tier":1},"hash":"ab'
    with open(log, "ab") as f:
        f.write(partial)
    report = verify(log)
    assert report.ok and report.records == 6
    assert [p.severity for p in report.problems] == ["crash"]
    assert "partial last record" in report.problems[0].message
    # The next writer moves the partial bytes out of the chain, recording their digest, and carries on.
    reopened = AuditLog(log)
    reopened.append("action", {"tier": 0}, time=7.0)
    report = verify(log)
    assert report.ok and report.problems == [] and report.records == 8
    recovered = json.loads(lines(log)[6])
    assert recovered["kind"] == "recovered" and recovered["data"]["partial_bytes"] == len(partial)


def test_crash_between_record_and_head_update_is_not_called_tampering(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write_log(log)
    head = tmp_path / "a.log.head"
    recs = [json.loads(x) for x in lines(log)]
    head.write_text(json.dumps({"seq": 4, "hash": recs[4]["hash"]}))
    report = verify(log)
    assert report.ok and [p.severity for p in report.problems] == ["crash"]


def test_rotation_bounds_size_and_keeps_the_chain(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    writer = write_log(log, n=200, max_bytes=4096, keep=2)
    files = segments(log)
    assert [f.name for f in files] == ["a.log.2", "a.log.1", "a.log"]
    assert all(f.stat().st_size <= 4096 for f in files)
    report = verify(log)
    assert report.ok and report.last_seq == writer.seq - 1
    assert [p.severity for p in report.problems] == ["info"]  # the oldest files were rotated away
    assert "rotated away" in report.problems[0].message
    first = json.loads(lines(files[0])[0])
    assert first["kind"] == "rotate"


def test_removing_a_rotated_file_in_the_middle_is_detected(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write_log(log, n=200, max_bytes=4096, keep=3)
    (tmp_path / "a.log.2").unlink()
    found = tampers(log)
    assert len(found) == 1 and "records removed" in found[0] and found[0].startswith("a.log.1:1")


def test_non_finite_values_are_logged_not_lost(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.log")
    log.append("note", {"score": math.nan, "scores": [math.inf, 1.0]}, time=1.0)
    rec = json.loads(lines(tmp_path / "a.log")[0])
    assert rec["data"] == {"score": "nan", "scores": ["inf", 1.0]}
    assert verify(tmp_path / "a.log").ok


def test_missing_log_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no such audit log"):
        verify(tmp_path / "nope.log")


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_any_single_byte_change_is_detected(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject):
    d = tmp_path_factory.mktemp("fuzz")
    log = d / "a.log"
    write_log(log, n=5)
    raw = bytearray(log.read_bytes())
    pos = data.draw(st.integers(0, len(raw) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[pos]))
    raw[pos] = new
    log.write_bytes(bytes(raw))
    report = verify(log)
    # Even a change to the last newline is caught: the head file shows the last record as cut off.
    assert not report.ok
