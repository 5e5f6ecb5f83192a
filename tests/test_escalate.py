"""Incidents, the on-disk spool, CEF/syslog lines, and a publisher facing no broker or a hostile one."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mosquitto import HostileBroker
from tinywarden.agent.escalate import (
    BrokerConfig,
    EscalationError,
    EscalationPolicy,
    Incident,
    MqttPublisher,
    Spool,
    SyslogSink,
    format_cef,
    format_syslog,
)


def incident(n: int = 0, tier: int = 1, confidence: float = 0.9, device: str = "gw-1") -> Incident:
    return Incident(
        device_id=device,
        model_id="gw-ewma",
        model_version=4,
        tier=tier,
        tier_name=f"tier{tier}",
        score=10.0 + n,
        threshold=5.0,
        confidence=confidence,
        window_start=1000.0 + n,
        window_end=1016.0 + n,
        features={"cpu_pct.max": 97.5, "eth0.tx_pps.mean": 1200.0 + n},
        incident_id=f"inc-{n:04d}",
        created_at=1700000000.0 + n,
    )


# ---------------------------------------------------------------------------------------- incidents


def test_incident_json_round_trip_and_contains_only_a_summary():
    inc = incident(3)
    d = json.loads(inc.to_json())
    assert d["window"] == {"start": 1003.0, "end": 1019.0}
    assert set(d) == {
        "device_id", "model_id", "model_version", "tier", "tier_name", "score", "threshold",
        "confidence", "window", "features", "incident_id", "created_at",
    }  # fmt: skip
    assert Incident.from_json(inc.to_json()) == inc


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"device_id": "gw/1"}, "device_id"),
        ({"device_id": "#"}, "device_id"),
        ({"score": float("nan")}, "score"),
        ({"confidence": 1.5}, "confidence"),
        ({"tier": -1}, "tier"),
        ({"window_end": 10.0}, "window_end"),
        ({"features": {"raw": [1.0, 2.0, 3.0]}}, "raw"),  # raw samples are not a summary
        ({"features": {f"f{i}": 1.0 for i in range(65)}}, "features"),
        ({"features": {"x": float("inf")}}, "x"),
    ],
)
def test_bad_incidents_are_refused_naming_the_field(change, field):
    kw = {**incident().__dict__, **change}
    with pytest.raises(EscalationError, match=field):
        Incident(**kw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_messages_never_parse_into_an_incident_silently(data):
    try:
        Incident.from_json(data)
    except EscalationError:
        return
    raise AssertionError(f"garbage parsed: {data!r}")


@pytest.mark.parametrize(
    ("min_tier", "min_conf", "expected"),
    [(0, 0.0, [True, True, True]), (1, 0.0, [False, True, True]), (1, 0.8, [False, False, True])],
)
def test_policy_admits_by_tier_and_confidence(min_tier, min_conf, expected):
    pol = EscalationPolicy(min_tier=min_tier, min_confidence=min_conf)
    cases = [
        incident(tier=0, confidence=0.95),
        incident(tier=2, confidence=0.5),
        incident(tier=1, confidence=0.8),
    ]
    assert [pol.admits(c) for c in cases] == expected


# -------------------------------------------------------------------------------------------- spool


def test_spool_keeps_order_across_reopening(tmp_path):
    sp = Spool(tmp_path / "sp", max_messages=10)
    for i in range(5):
        sp.put(incident(i, tier=i % 3))
    again = Spool(tmp_path / "sp", max_messages=10)
    assert [i.incident_id for i in again.incidents()] == [f"inc-{i:04d}" for i in range(5)]
    entry, first = again.peek()
    again.remove(entry)
    again.put(incident(9))
    assert [i.incident_id for i in Spool(tmp_path / "sp").incidents()] == [
        "inc-0001", "inc-0002", "inc-0003", "inc-0004", "inc-0009",
    ]  # fmt: skip


def test_overflow_drops_lowest_tier_oldest_first_and_reports_it(tmp_path):
    dropped: list[tuple[str, str]] = []
    sp = Spool(
        tmp_path / "sp", max_messages=3, on_drop=lambda inc, why: dropped.append((inc.incident_id, why))
    )
    sp.put(incident(0, tier=2))
    sp.put(incident(1, tier=0))
    sp.put(incident(2, tier=0))
    sp.put(incident(3, tier=1))  # evicts inc-0001: lowest tier, oldest
    assert [i.incident_id for i in sp.incidents()] == ["inc-0000", "inc-0002", "inc-0003"]
    sp.put(incident(4, tier=3))  # evicts inc-0002
    sp.put(incident(5, tier=0))  # the newcomer is now the lowest-tier oldest: it goes itself
    assert [d[0] for d in dropped] == ["inc-0001", "inc-0002", "inc-0005"]
    assert "full (3 incidents)" in dropped[0][1] and "tier 0" in dropped[0][1]
    assert [i.incident_id for i in sp.incidents()] == ["inc-0000", "inc-0003", "inc-0004"]
    assert len(list((tmp_path / "sp").glob("*.json"))) == 3


def test_reopening_with_a_smaller_bound_evicts_by_the_same_rule(tmp_path):
    sp = Spool(tmp_path / "sp", max_messages=10)
    for i, tier in enumerate([1, 0, 2, 0]):
        sp.put(incident(i, tier=tier))
    dropped: list[str] = []
    small = Spool(tmp_path / "sp", max_messages=2, on_drop=lambda inc, why: dropped.append(inc.incident_id))
    assert dropped == ["inc-0001", "inc-0003"]
    assert [i.incident_id for i in small.incidents()] == ["inc-0000", "inc-0002"]


def test_truncated_spool_file_is_quarantined_and_the_rest_delivered(tmp_path):
    sp = Spool(tmp_path / "sp")
    for i in range(3):
        sp.put(incident(i))
    victim = sorted((tmp_path / "sp").glob("*.json"))[1]
    victim.write_bytes(victim.read_bytes()[:20])
    (tmp_path / "sp" / ".000000000009-t001.json.abc.tmp").write_bytes(b"half")  # interrupted write
    corrupt: list[str] = []
    sp2 = Spool(tmp_path / "sp", on_corrupt=lambda p, why: corrupt.append(why))
    assert not list((tmp_path / "sp").glob(".*.tmp"))
    seen = []
    while (item := sp2.peek()) is not None:
        seen.append(item[1].incident_id)
        sp2.remove(item[0])
    assert seen == ["inc-0000", "inc-0002"]
    assert len(corrupt) == 1 and victim.name in corrupt[0] and "not an incident record" in corrupt[0]
    assert len(list((tmp_path / "sp" / "corrupt").glob(victim.name + ".*"))) == 1


def test_a_planted_fifo_or_symlink_in_the_spool_is_quarantined_without_blocking_the_agent(tmp_path):
    # read_bytes() on a FIFO named like a spool file blocked forever inside the spool's lock: the sender hung and
    # the agent loop with it at its next submit(); a symlink (to /dev/zero, to a file elsewhere) was followed
    import os

    d = tmp_path / "sp"
    d.mkdir()
    os.mkfifo(d / "000000000000-t001.json")  # ahead of the real ones in delivery order
    elsewhere = tmp_path / "elsewhere.json"  # a file the agent never wrote, outside the spool
    elsewhere.write_bytes(incident(666).to_json())
    (d / "000000000001-t001.json").symlink_to(elsewhere)
    sp = Spool(d)
    sp.put(incident(1))
    sp.put(incident(3))
    corrupt: list[str] = []
    sp2 = Spool(d, on_corrupt=lambda p, why: corrupt.append(why))
    seen: list[str] = []

    def drain() -> None:
        while (item := sp2.peek()) is not None:
            seen.append(item[1].incident_id)
            sp2.remove(item[0])

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # let the stuck reader go before failing
        with contextlib.suppress(OSError):
            os.close(os.open(d / "000000000000-t001.json", os.O_WRONLY | os.O_NONBLOCK))
        t.join(10)
        pytest.fail("peek() blocked on a FIFO in the spool")
    assert seen == ["inc-0001", "inc-0003"]
    assert len(corrupt) == 2 and "not a regular file" in corrupt[0] and "symbolic link" in corrupt[1], corrupt
    assert sorted(p.name.split(".json")[0] for p in (d / "corrupt").iterdir()) == [
        "000000000000-t001", "000000000001-t001"]


def test_an_oversized_spool_file_is_quarantined_unread(tmp_path):
    from tinywarden.agent import escalate

    d = tmp_path / "sp"
    sp = Spool(d)
    sp.put(incident(0))
    big = d / "000000000001-t001.json"
    with big.open("wb") as f:
        f.truncate(escalate.MAX_SPOOL_BYTES + 1)  # sparse: costs no disk, but read whole it would cost memory
    corrupt: list[str] = []
    sp2 = Spool(d, on_corrupt=lambda p, why: corrupt.append(why))
    assert [i.incident_id for i in sp2.incidents()] == ["inc-0000"]
    assert len(corrupt) == 1 and "larger than" in corrupt[0], corrupt


def test_spool_files_past_twelve_digits_are_read_back_in_order(tmp_path):
    # one planted (or very old) file named 999999999999 made every later name 13 digits long, which the spool's
    # own pattern did not match: those incidents were never delivered after a restart, and never reported
    d = tmp_path / "sp"
    d.mkdir()
    (d / "999999999999-t001.json").write_bytes(incident(0).to_json())
    sp = Spool(d)
    sp.put(incident(1))
    sp.put(incident(2))
    assert [i.incident_id for i in Spool(d).incidents()] == ["inc-0000", "inc-0001", "inc-0002"]


def test_spool_rejects_bad_bound(tmp_path):
    with pytest.raises(EscalationError, match="max_messages"):
        Spool(tmp_path, max_messages=0)


# ---------------------------------------------------------------------------------------- CEF/syslog


def test_cef_escapes_header_and_extension_and_maps_severity():
    inc = Incident(**{
        **incident(tier=3).__dict__,
        "tier_name": "isolate|now",
        "model_id": "a=b\\c\nd",
        "features": {"x": 1.0},
    })  # fmt: skip
    line = format_cef(inc)
    assert "\n" not in line
    head = re.split(r"(?<!\\)\|", line)  # split on unescaped pipes only
    assert len(head) == 8 and head[0] == "CEF:0" and head[6] == "9"  # tier 3 -> severity 9
    assert "isolate\\|now" in line
    assert "cs1=a\\=b\\\\c\\nd" in line
    assert "dvchost=gw-1" in line and "externalId=inc-0000" in line and "start=1000000" in line
    assert format_cef(incident(tier=0)).split("|")[6] == "3"
    assert format_cef(incident(tier=9)).split("|")[6] == "10"


def test_syslog_line_is_rfc5424_with_tier_severity():
    line = format_syslog(incident(tier=0), hostname="dev one")
    assert line.startswith("<133>1 2023-11-14T22:13:20.000Z dev_one tinywarden - incident - CEF:0|")
    assert format_syslog(incident(tier=4), hostname="h").startswith("<130>1 ")


def test_syslog_sink_sends_one_datagram_per_incident():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        sink = SyslogSink("127.0.0.1", rx.getsockname()[1], hostname="h")
        sink(incident(7))
        data, _ = rx.recvfrom(65536)
        sink.close()
    assert data.decode() == format_syslog(incident(7), hostname="h")


def test_syslog_of_an_incident_dated_outside_the_calendar_sends_a_nil_timestamp_not_an_exception():
    # a replayed recording may carry any finite time (ns epochs up to 1e30 read as 1e21 s, negative seconds): the
    # SIEM copy is best effort and must never raise into submit(), which the agent does not expect to fail so
    for t in (1e21, -1e15):
        inc = Incident(**{**incident(2).__dict__, "created_at": t, "window_start": t, "window_end": t})
        assert format_syslog(inc, hostname="h").startswith("<132>1 - h tinywarden - incident - CEF:0|")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
            rx.bind(("127.0.0.1", 0))
            rx.settimeout(5)
            sink = SyslogSink("127.0.0.1", rx.getsockname()[1], hostname="h")
            sink(inc)
            data, _ = rx.recvfrom(65536)
            sink.close()
        assert data.decode() == format_syslog(inc, hostname="h")


# --------------------------------------------------------------------------- publisher, no good broker


def fast_broker(port: int) -> BrokerConfig:
    return BrokerConfig(
        port=port, connect_timeout_s=1.0, ack_timeout_s=1.0, retry_min_s=0.01, retry_max_s=0.05
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_broker_keeps_everything_spooled(tmp_path):
    pub = MqttPublisher(
        "gw-1", Spool(tmp_path / "sp"), fast_broker(closed_port()), EscalationPolicy(min_tier=1)
    )
    assert pub.submit(incident(0, tier=0)) is False  # below the policy: never leaves the device
    for i in range(1, 4):
        assert pub.submit(incident(i)) is True
    for _ in range(3):
        assert pub.flush(timeout_s=0.5) == 0
    assert [i.incident_id for i in pub.spool.incidents()] == ["inc-0001", "inc-0002", "inc-0003"]
    assert pub.connect_failures >= 1 and "cannot connect" in pub.last_error
    pub.close()


def test_incident_for_another_device_is_refused(tmp_path):
    pub = MqttPublisher("gw-1", Spool(tmp_path / "sp"), fast_broker(closed_port()))
    with pytest.raises(EscalationError, match="gw-2"):
        pub.submit(incident(device="gw-2"))
    assert len(pub.spool) == 0


@pytest.mark.parametrize(
    "reply",
    [
        b"\xde\xad\xbe\xef" * 64,  # noise
        b"HTTP/1.1 400 Bad Request\r\n\r\n",  # wrong protocol
        b"\x20\x02\x00\x05",  # a well-formed CONNACK that refuses (not authorised)
        b"\x20\x7f\x00",  # a CONNACK whose length lies
        b"",  # accept and hang up at once
    ],
)
def test_garbage_or_disconnecting_broker_never_crashes_and_loses_nothing(tmp_path, reply):
    srv = HostileBroker(reply)
    try:
        pub = MqttPublisher("gw-1", Spool(tmp_path / "sp"), fast_broker(srv.port))
        for i in range(3):
            pub.submit(incident(i))
        for _ in range(4):
            assert pub.flush(timeout_s=1.5) == 0
            pub._next_attempt = 0.0  # retry at once: we want many hostile connections, not backoff
        assert srv.connections >= 2
        assert pub.last_error
        assert [i.incident_id for i in pub.spool.incidents()] == ["inc-0000", "inc-0001", "inc-0002"]
        pub.close()
    finally:
        srv.close()


def test_a_broker_that_accepts_but_never_acknowledges_gets_a_growing_back_off(tmp_path):
    # A successful CONNACK reset the retry delay and a lost PUBACK did not double it, so a broker that accepts every
    # connection and acknowledges nothing was reconnected at the shortest delay for ever (one more connection every
    # ack timeout). The delay now doubles on each lost connection and resets only when the broker acknowledges.
    srv = HostileBroker(b"\x20\x02\x00\x00", hold_s=0.5)  # CONNACK: accepted; then silence
    try:
        cfg = BrokerConfig(port=srv.port, connect_timeout_s=2.0, ack_timeout_s=0.2, retry_min_s=0.01,
                           retry_max_s=10.0)
        pub = MqttPublisher("gw-1", Spool(tmp_path / "sp"), cfg)
        pub.submit(incident(0))
        delays = []
        for _ in range(4):
            assert pub.flush(timeout_s=3.0) == 0
            delays.append(pub._delay)
            pub._next_attempt = 0.0  # the next flush connects at once: the delay is what is checked
        assert srv.connections >= 4 and "PUBACK" in pub.last_error
        assert delays == pytest.approx([0.02, 0.04, 0.08, 0.16])
        assert [i.incident_id for i in pub.spool.incidents()] == ["inc-0000"]
        pub.close()
    finally:
        srv.close()


def test_background_sender_survives_a_hostile_broker(tmp_path):
    srv = HostileBroker(b"\xff" * 32)
    try:
        pub = MqttPublisher("gw-1", Spool(tmp_path / "sp"), fast_broker(srv.port))
        pub.start()
        for i in range(5):
            pub.submit(incident(i))
        deadline_hits = 0
        while srv.connections < 3 and deadline_hits < 200:
            threading.Event().wait(0.025)
            deadline_hits += 1
        pub.close()
        assert srv.connections >= 3
        assert len(Spool(tmp_path / "sp")) == 5
    finally:
        srv.close()


def test_bad_broker_settings_are_refused(tmp_path):
    with pytest.raises(EscalationError, match="port"):
        BrokerConfig(port=0)
    with pytest.raises(EscalationError, match="retry_max_s"):
        BrokerConfig(retry_min_s=5, retry_max_s=1)
    with pytest.raises(EscalationError, match="device_id"):
        MqttPublisher("a/b", Spool(tmp_path / "sp"))
