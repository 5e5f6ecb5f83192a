"""A lost or replaced audit key never locks the agent out: the keyed log it cannot continue is set aside
(renamed, nothing deleted), a new keyed log says why in its genesis record, the audit, one warning line and
status.json say so, and the fleet's anchors into the old log no longer verify against the new one."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from test_agent import Kit, build_kit, config
from tinywarden.agent.escalate import Incident
from tinywarden.agent.loop import Agent
from tinywarden.agent.sources import ReplaySource
from tinywarden.agent.status import read_status
from tinywarden.audit import check_anchor, load_key, verify
from tinywarden.telemetry import Series


@pytest.fixture(scope="module")
def kit() -> Kit:
    return build_kit()


def _part(s: Series, lo: int, hi: int) -> Series:
    return Series(s.timestamps[lo:hi], s.values[lo:hi], s.channels)


@pytest.mark.parametrize("how", ["lost", "replaced"])
def test_agent_sets_a_log_it_cannot_continue_aside_and_keeps_monitoring(
    kit: Kit, tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    incidents: list[Incident] = []
    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1))
    with Agent(cfg, kit.stream.channels, replay=True, on_incident=incidents.append) as a:
        a.run(ReplaySource(kit.stream))
    log = cfg.state_dir / "audit.log"
    key_path = cfg.state_dir / "keys" / "audit.key"
    old_key = load_key(key_path)
    old_bytes, old_head = log.read_bytes(), log.with_name("audit.log.head").read_bytes()
    anchors = [i.audit_head for i in incidents if i.audit_head is not None]
    assert anchors and verify(log, old_key, anchors=anchors).verdict == "intact"

    key_path.unlink()
    if how == "replaced":
        load_key(key_path, create=True)
    with caplog.at_level(logging.WARNING, logger="tinywarden"), \
            Agent(cfg, kit.stream.channels, replay=True) as b:  # fmt: skip
        assert b.run(ReplaySource(_part(kit.stream, 0, 400))) == 400  # monitoring goes on
    new_key = load_key(key_path)
    assert new_key.key_id != old_key.key_id

    # The old log is renamed, byte for byte, with its head, and still verifies under its own key.
    (aside,) = [p for p in cfg.state_dir.iterdir() if p.name.startswith("audit.log.set-aside-")
                and not p.name.endswith(".head")]  # fmt: skip
    assert aside.read_bytes() == old_bytes
    assert aside.with_name(aside.name + ".head").read_bytes() == old_head
    assert verify(aside, old_key, anchors=anchors).verdict == "intact"

    # The new log is keyed with the new key and its genesis names the set-aside file and why.
    records = [json.loads(x) for x in log.read_text().splitlines()]
    genesis = records[0]
    assert genesis["kind"] == "genesis" and genesis["data"]["key_id"] == new_key.key_id
    assert genesis["data"]["set_aside"] == aside.name
    assert old_key.key_id in genesis["data"]["set_aside_reason"]
    noted = [r for r in records if r["kind"] == "audit_log_set_aside"]
    assert len(noted) == 1 and noted[0]["data"]["file"] == str(aside)
    assert noted[0]["data"]["old_key_id"] == old_key.key_id
    assert verify(log, new_key).verdict == "intact"

    # One warning line; status.json says it too.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0] and aside.name in warnings[0]
    status = read_status(cfg.state_dir / "status.json")
    assert status["audit"]["set_aside"] == str(aside)
    assert old_key.key_id in status["audit"]["set_aside_reason"]

    # The fleet sees the discontinuity: its anchors into the old log do not hold for the new one.
    last_seq, last_hash = anchors[-1]
    assert check_anchor(log, last_seq, last_hash, key=new_key)


def test_a_log_with_the_right_key_is_continued_not_set_aside(kit: Kit, tmp_path: Path) -> None:
    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1))
    for _ in range(2):
        with Agent(cfg, kit.stream.channels, replay=True) as a:
            a.run(ReplaySource(_part(kit.stream, 0, 100)))
        assert a.status()["audit"]["set_aside"] is None
    assert sorted(p.name for p in cfg.state_dir.glob("audit.log*")) == ["audit.log", "audit.log.head"]
    records = [json.loads(x) for x in (cfg.state_dir / "audit.log").read_text().splitlines()]
    assert [r["kind"] for r in records].count("genesis") == 1
