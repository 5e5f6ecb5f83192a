"""The agent escalating to a real Mosquitto broker on 127.0.0.1: exactly the expected incidents, a broker
outage mid-run (spooled, then delivered once and in order), an unreachable or hostile broker, a
truncated spool file and spool overflow."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from mosquitto import HostileBroker, Mosquitto, free_port, require_mosquitto
from test_agent import Kit, audit_records, build_kit, config, expected_incidents
from test_escalate_mqtt import Subscriber
from tinywarden.agent.config import EscalationConfig
from tinywarden.agent.escalate import BrokerConfig, EscalationPolicy, Incident
from tinywarden.agent.loop import Agent
from tinywarden.agent.sources import ReplaySource
from tinywarden.agent.status import read_status
from tinywarden.audit import verify

WAIT_S = 20.0  # upper bound on any wait; nothing asserts on how long things took
INCIDENT_KEYS = {"device_id", "model_id", "model_version", "tier", "tier_name", "score", "threshold", "confidence",
                 "window", "features", "incident_id", "created_at", "audit_head"}  # fmt: skip


@pytest.fixture(scope="module")
def kit() -> Kit:
    return build_kit()


def broker_cfg(port: int) -> BrokerConfig:
    return BrokerConfig(port=port, connect_timeout_s=2.0, ack_timeout_s=2.0, retry_min_s=0.02, retry_max_s=0.2)


def run_until(agent: Agent, samples: Iterator[tuple[float, np.ndarray]], done: Callable[[], bool]) -> None:
    while not done():
        assert agent.run(samples, 1) == 1, "the stream ended before the condition held"


def wait_until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_exactly_the_expected_incidents_reach_the_broker(kit: Kit, tmp_path: Path):
    built: list[Incident] = []
    with Mosquitto(tmp_path / "broker") as broker:
        sub = Subscriber(broker.port)
        esc = EscalationConfig(broker_cfg(broker.port), EscalationPolicy(min_tier=2, min_confidence=0.5))
        cfg = config(kit, tmp_path, kit.signed(kit.m1, 1), escalation=esc)
        with Agent(cfg, kit.stream.channels, replay=True, on_incident=built.append) as a:
            a.run(ReplaySource(kit.stream))
            assert a.drain(WAIT_S), a.publisher.last_error if a.publisher else ""
            delivered = a.publisher.delivered if a.publisher else -1
        expected = [(t, tier) for t, tier, _ in expected_incidents(kit.p1, kit.stream) if tier >= 2]
        assert expected, "the stream must reach tier 2"
        at_tier = [i for i in built if i.tier >= 2]
        # min_confidence is read on the calibrated likelihood scale: only those at or above it are published
        sent = [i for i in at_tier if i.confidence >= 0.5]
        assert sent, "the stream must reach tier 2 with confidence >= 0.5"
        got = sub.wait_for_id(sent[-1].incident_id)
        sub.close()
    assert [(i.window_end, i.tier) for i in at_tier] == expected  # the agent built the independent set
    assert got == [i.incident_id for i in sent] and delivered == len(sent)  # and only those were published
    assert set(sub.topics) == {"tinywarden/cam-1/incident"}
    for payload, inc in zip(sub.payloads, sent, strict=True):
        doc = json.loads(payload)
        assert set(doc) == INCIDENT_KEYS  # a summary: no raw samples travel
        assert Incident.from_json(payload) == inc
        assert doc["model_id"] == "cam-ewma" and doc["model_version"] == 1 and len(doc["features"]) == 5


def test_broker_outage_mid_run_spools_then_delivers_every_incident_once_in_order(kit: Kit, tmp_path: Path):
    built: list[Incident] = []
    samples = iter(ReplaySource(kit.stream))
    with Mosquitto(tmp_path / "broker") as broker:
        sub = Subscriber(broker.port)
        esc = EscalationConfig(broker_cfg(broker.port), EscalationPolicy(min_tier=1))
        cfg = config(kit, tmp_path, kit.signed(kit.m1, 1), escalation=esc)
        with Agent(cfg, kit.stream.channels, replay=True, on_incident=built.append) as a:
            assert a.publisher is not None
            run_until(a, samples, lambda: len(built) >= 3)
            sub.wait_for_id(built[-1].incident_id)
            wait_until(lambda: len(a.publisher.spool) == 0, "the spool to empty")  # every PUBACK is in

            broker.stop()
            before = len(built)
            run_until(a, samples, lambda: len(built) >= before + 4)
            during = [i.incident_id for i in built[before:]]
            assert [i.incident_id for i in a.publisher.spool.incidents()] == during
            a.write_status()
            esc_status = read_status(cfg.state_dir / "status.json")["escalation"]
            assert esc_status["spooled"] == len(during) and esc_status["connected"] is False

            broker.start()  # same port; the subscriber's persistent session gets what it missed
            a.run(samples)
            assert a.drain(WAIT_S), a.publisher.last_error
        got = sub.wait_for_id(built[-1].incident_id)
        sub.close()
    assert got == [i.incident_id for i in built]  # every incident once, in the order they were built
    assert len(built) > before + 4


def test_unreachable_broker_truncated_spool_and_overflow_lose_nothing_silently(kit: Kit, tmp_path: Path):
    built: list[Incident] = []
    spool_dir = tmp_path / "state" / "spool"
    spool_dir.mkdir(parents=True)
    (spool_dir / "000000000000-t002.json").write_bytes(b'{"device_id":"cam-1","model_id":"cam-ew')  # a crash
    esc = EscalationConfig(broker_cfg(free_port()), EscalationPolicy(min_tier=1), spool_max=3)
    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1), escalation=esc)
    with Agent(cfg, kit.stream.channels, replay=True, on_incident=built.append) as a:
        assert a.run(ReplaySource(kit.stream)) == len(kit.stream)
        assert a.publisher is not None
        wait_until(lambda: a.publisher.connect_failures > 0, "a failed connection attempt")
        kept = [i.incident_id for i in a.publisher.spool.incidents()]
    # Overflow drops the lowest tier first, oldest first within it: replay that rule over what was built.
    model: list[Incident] = []
    for inc in built:
        model.append(inc)
        if len(model) > 3:
            model.remove(min(model, key=lambda i: (i.tier, model.index(i))))
    assert kept == [i.incident_id for i in model]

    recs = audit_records(cfg.state_dir / "audit.log")
    drops = [r["data"] for r in recs if r["kind"] == "spool_drop"]
    assert len(drops) == len(built) - 3
    assert {d["incident_id"] for d in drops} == {i.incident_id for i in built} - set(kept)
    corrupt = [r["data"] for r in recs if r["kind"] == "spool_corrupt"]
    assert len(corrupt) == 1 and Path(corrupt[0]["file"]).exists()  # quarantined, not deleted
    assert verify(cfg.state_dir / "audit.log").ok
    st = read_status(cfg.state_dir / "status.json")["escalation"]
    assert st["spooled"] == 3 and st["dropped"] == len(built) - 3 and st["connected"] is False
    assert "cannot connect" in st["last_error"] or "did not accept" in st["last_error"]


def test_a_broker_that_sends_garbage_then_the_real_one_gets_every_incident(kit: Kit, tmp_path: Path):
    require_mosquitto()
    hostile = HostileBroker(b"\x20\x7f\xff\xff")  # a CONNACK with an impossible length, then hang-up
    built: list[Incident] = []
    esc = EscalationConfig(broker_cfg(hostile.port), EscalationPolicy(min_tier=1))
    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1), escalation=esc)
    try:
        with Agent(cfg, kit.stream.channels, replay=True, on_incident=built.append) as a:
            assert a.publisher is not None
            a.run(ReplaySource(kit.stream))
            wait_until(lambda: hostile.connections >= 2, "repeated connection attempts")
            assert len(a.publisher.spool) == len(built) and a.publisher.delivered == 0
    finally:
        hostile.close()
    # The next agent run (same state dir, real broker on that port) delivers what the hostile one refused.
    with Mosquitto(tmp_path / "broker", port=hostile.port) as broker:
        sub = Subscriber(broker.port)
        with Agent(cfg, kit.stream.channels, replay=True) as b:
            assert b.drain(WAIT_S)
        got = sub.wait_for_id(built[-1].incident_id)
        sub.close()
    assert got == [i.incident_id for i in built]
