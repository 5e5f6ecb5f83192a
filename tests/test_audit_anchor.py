"""Anchors outside the device: incidents carry the audit head, and the fleet side (``check_anchor``,
``audit verify --anchor``) catches a log rewound or rewritten even by someone who holds the key. Also the
``audit verify`` command's verdicts and exit codes, and a NaN inside a record as one line at the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inprocess import cli, run_tinywarden
from test_agent import Kit, build_kit, config
from tinywarden.agent.escalate import EscalationError, Incident
from tinywarden.agent.loop import Agent
from tinywarden.agent.sources import ReplaySource
from tinywarden.audit import (
    AuditError,
    AuditKey,
    AuditLog,
    VerifyReport,
    check_anchor,
    load_key,
    parse_anchor,
    segments,
    verify,
)


@pytest.fixture
def key(tmp_path: Path) -> AuditKey:
    return load_key(tmp_path / "keys" / "audit.key", create=True)


def write_log(path: Path, key: AuditKey, n: int = 6, **kw: int) -> AuditLog:
    log = AuditLog(path, key=key, **kw)
    for i in range(n):
        log.append("action", {"tier": i % 4}, time=float(i))
    return log



# ------------------------------------------------------------------------------------------- fleet side


def test_anchor_held_by_an_honest_log_passes(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    writer = write_log(log, key, n=3)
    anchor = writer.head
    write_log(log, key, n=3)  # the log grows on after the incident left
    assert anchor is not None and check_anchor(log, *anchor) == [] and check_anchor(verify(log, key), *anchor) == []


def test_rewound_log_with_its_own_old_head_is_caught_only_by_the_anchor(tmp_path: Path, key: AuditKey) -> None:
    log, head = tmp_path / "a.log", tmp_path / "a.log.head"
    writer = write_log(log, key, n=3)
    saved_log, saved_head = log.read_bytes(), head.read_bytes()  # a copy kept by whoever can write the folder
    write_log(log, key, n=3)
    anchor = writer.head
    later = AuditLog(log, key=key).head
    assert anchor is not None and later is not None
    log.write_bytes(saved_log)
    head.write_bytes(saved_head)
    assert verify(log, key).verdict == "intact"  # a genuine older state: nothing local can tell
    found = check_anchor(log, *later)
    assert [p.severity for p in found] == ["tamper"] and "rewound" in found[0].message
    assert check_anchor(log, *anchor) == []
    assert verify(log, key, anchors=[later]).verdict == "tampered"


def test_log_rewritten_by_a_key_holder_is_caught_by_the_anchor(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    writer = write_log(log, key, n=4)
    anchor = writer.head
    assert anchor is not None
    # Local root reads the key, deletes the log and writes a new one of the same length: locally intact.
    for f in [*segments(log), tmp_path / "a.log.head"]:
        f.unlink()
    write_log(log, key, n=4)
    assert verify(log, key).verdict == "intact"
    found = check_anchor(log, *anchor, key=key)
    assert [p.severity for p in found] == ["tamper"] and "rewritten at or before seq 4" in found[0].message
    # A shorter fresh log is a rewind.
    for f in [*segments(log), tmp_path / "a.log.head"]:
        f.unlink()
    write_log(log, key, n=1)
    assert "rewound" in check_anchor(log, *anchor)[0].message


def test_anchor_older_than_the_retained_log_cannot_be_checked(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    writer = write_log(log, key, n=2, max_bytes=2048, keep=1)
    old = writer.head
    for i in range(60):
        writer.append("action", {"tier": 1, "pad": "x" * 40}, time=float(i))
    assert old is not None and verify(log, key).first_seq > old[0]
    found = check_anchor(log, *old)
    assert [p.severity for p in found] == ["info"] and "rotated away" in found[0].message


def test_anchor_text_is_checked() -> None:
    assert parse_anchor(f"7:{'AB' * 32}") == (7, "ab" * 32)
    for bad in ("7", "x:" + "ab" * 32, "7:abc", "-1:" + "ab" * 32, "7:" + "\u00e9" * 64):
        with pytest.raises(AuditError, match="expected SEQ:HASH"):
            parse_anchor(bad)
    report = VerifyReport(records=1, first_seq=0, last_seq=0, hashes={0: "ab" * 32})
    assert check_anchor(report, 0, "AB" * 32) == []
    for seq, h in ((-1, "ab" * 32), (0, "\u00e9" * 64), (0, "ab")):
        with pytest.raises(AuditError, match="expected a sequence number"):
            check_anchor(report, seq, h)


def test_incident_carries_the_audit_head_on_the_wire() -> None:
    head = (12, "cd" * 32)
    inc = Incident("gw-1", "m1", 3, tier=2, score=9.5, threshold=4.0, confidence=0.9, window_start=1.0,
                   window_end=2.0, audit_head=head)  # fmt: skip
    assert json.loads(inc.to_json())["audit_head"] == {"seq": 12, "hash": "cd" * 32}
    assert Incident.from_json(inc.to_json()) == inc
    for bad in ((-1, "cd" * 32), (1, "xyz"), (True, "cd" * 32), "12:cd"):
        with pytest.raises(EscalationError, match="audit_head"):
            Incident("gw-1", "m1", 3, tier=2, score=9.5, threshold=4.0, confidence=0.9, window_start=1.0,
                     window_end=2.0, audit_head=bad)  # type: ignore[arg-type]  # fmt: skip


@pytest.fixture(scope="module")
def kit() -> Kit:
    return build_kit()


def test_agent_incidents_anchor_its_keyed_log(kit: Kit, tmp_path: Path) -> None:
    incidents: list[Incident] = []
    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1))
    with Agent(cfg, kit.stream.channels, replay=True, on_incident=incidents.append) as a:
        a.run(ReplaySource(kit.stream))
    key = load_key(cfg.state_dir / "keys" / "audit.key")
    log = cfg.state_dir / "audit.log"
    report = verify(log, key, anchors=[i.audit_head for i in incidents if i.audit_head is not None])
    assert incidents and all(i.audit_head is not None for i in incidents)
    assert report.verdict == "intact" and report.key_id == key.key_id
    seqs = [i.audit_head[0] for i in incidents if i.audit_head is not None]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # each points at the record that led to it
    # Cut the log back to before the last incident and restore a keyed head of that time: the fleet sees it.
    last = incidents[-1].audit_head
    assert last is not None
    recs = log.read_text().splitlines(keepends=True)
    log.write_text("".join(recs[: last[0]]))
    assert any("rewound" in p.message for p in check_anchor(log, *last, key=key))


# ------------------------------------------------------------------------------------------------- CLI


def test_verify_verdicts_and_exit_codes(tmp_path: Path, key: AuditKey, monkeypatch) -> None:
    log = tmp_path / "a.log"
    writer = write_log(log, key)
    assert writer.head is not None
    anchor = f"{writer.head[0]}:{writer.head[1]}"
    rc, out, _ = cli("audit", "verify", log, "--key", key.path, "--anchor", anchor)
    assert rc == 0 and "keyed chain intact" in out and "1 anchor(s) held" in out
    rc, out, _ = cli("audit", "verify", log)
    assert rc == 3 and out.startswith("UNVERIFIED") and "intact" not in out
    monkeypatch.setenv("TINYWARDEN_AUDIT_KEY", str(key.path))
    rc, out, _ = cli("audit", "verify", log, "--anchor", f"{writer.head[0] + 5}:{'0' * 64}")
    monkeypatch.delenv("TINYWARDEN_AUDIT_KEY")
    assert rc == 1 and "TAMPERED" in out
    legacy = tmp_path / "legacy.log"
    AuditLog(legacy).append("action", {"tier": 1})
    rc, out, err = cli("audit", "verify", legacy)
    assert rc == 3 and out.startswith("UNKEYED") and "integrity only against accidents" in out + err
    assert "intact" not in out
    rc, _, err = cli("audit", "verify", log, "--anchor", "nonsense")
    assert rc == 2 and "expected SEQ:HASH" in err and "Traceback" not in err


def test_nan_inside_a_record_is_one_line_at_the_cli(tmp_path: Path, key: AuditKey) -> None:
    log = tmp_path / "a.log"
    write_log(log, key)
    text = log.read_text().splitlines(keepends=True)
    text[2] = text[2].replace('"tier":1', '"tier":NaN')
    log.write_text("".join(text))
    r = run_tinywarden("audit", "verify", str(log), "--key", str(key.path))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "tamper: a.log:3: not a valid record: NaN in it, which the writer never writes (edited)",
        "tamper: a.log:4: seq 2 missing before seq 3 (records removed)",
    ]
    assert r.stdout.startswith("TAMPERED")
