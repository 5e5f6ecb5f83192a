"""Escalation against a real Mosquitto broker on 127.0.0.1: delivery, order, outage and restart, TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mosquitto import HostileBroker, Mosquitto, free_port, require_mosquitto
from tinywarden.agent.escalate import (
    BrokerConfig,
    EscalationError,
    EscalationPolicy,
    Incident,
    MqttPublisher,
    Spool,
    TlsConfig,
)

WAIT_S = 15.0  # upper bound on any wait; tests never assert on how long things took


def incident(n: int, tier: int = 1, confidence: float = 0.9) -> Incident:
    return Incident(
        device_id="gw-7",
        model_id="gw-ewma",
        model_version=2,
        tier=tier,
        score=8.0 + n,
        threshold=5.0,
        confidence=confidence,
        window_start=2000.0 + n,
        window_end=2010.0 + n,
        features={"cpu_pct.max": 90.0 + n},
        incident_id=f"inc-{n:04d}",
    )


class Subscriber:
    """A fleet-side consumer with a persistent session, so queued messages survive its reconnects.

    The broker may resend to it (DUP flag set) a message whose PUBACK was cut off by a broker stop:
    that is the broker-to-subscriber leg, not the publisher, so such redeliveries are kept apart.
    """

    def __init__(self, port: int, tls_ca: Path | None = None) -> None:
        self.payloads: list[bytes] = []
        self.redelivered: list[bytes] = []
        self.topics: list[str] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="fleet-backend",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        c.reconnect_delay_set(0.05, 0.2)
        if tls_ca is not None:
            c.tls_set(ca_certs=str(tls_ca))
        c.on_connect = lambda cl, *_: cl.subscribe("tinywarden/+/incident", qos=1)
        c.on_subscribe = lambda *_: self._subscribed.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", port, keepalive=5)
        c.loop_start()
        self.client = c
        assert self._subscribed.wait(WAIT_S), "subscriber never got its SUBACK"

    def _on_message(self, _c, _u, msg) -> None:
        with self._cond:
            if msg.dup and msg.payload in self.payloads:
                self.redelivered.append(msg.payload)
                return
            self.topics.append(msg.topic)
            self.payloads.append(msg.payload)
            self._cond.notify_all()

    def ids(self) -> list[str]:
        with self._cond:
            return [json.loads(p)["incident_id"] for p in self.payloads]

    def wait_for_id(self, incident_id: str) -> list[str]:
        """Wait until ``incident_id`` arrived; everything published before it has arrived by then."""
        with self._cond:
            self._cond.wait_for(lambda: incident_id in self.ids(), WAIT_S)
        return self.ids()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def drain(pub: MqttPublisher) -> None:
    """Flush until the spool is empty (bounded: fails the test instead of hanging)."""
    deadline = time.monotonic() + WAIT_S
    while len(pub.spool) and time.monotonic() < deadline:
        if pub.flush(timeout_s=2.0) == 0:
            time.sleep(0.02)
    assert len(pub.spool) == 0, f"spool not drained: {pub.last_error}"


def broker_cfg(port: int, tls: TlsConfig | None = None) -> BrokerConfig:
    return BrokerConfig(
        port=port, tls=tls, connect_timeout_s=2.0, ack_timeout_s=2.0, retry_min_s=0.02, retry_max_s=0.2
    )


@pytest.fixture()
def broker(tmp_path):
    with Mosquitto(tmp_path / "broker") as b:
        yield b


def test_exactly_the_admitted_incidents_arrive_in_order_as_json(tmp_path, broker):
    sub = Subscriber(broker.port)
    pub = MqttPublisher(
        "gw-7",
        Spool(tmp_path / "sp"),
        broker_cfg(broker.port),
        EscalationPolicy(min_tier=1, min_confidence=0.6),
    )
    cases = [incident(0, tier=0), incident(1), incident(2, confidence=0.3), incident(3, tier=3), incident(4)]
    admitted = [pub.submit(c) for c in cases]
    assert admitted == [False, True, False, True, True]
    drain(pub)
    pub.submit(incident(99))  # sentinel: anything stray would have arrived before it
    drain(pub)
    assert sub.wait_for_id("inc-0099") == ["inc-0001", "inc-0003", "inc-0004", "inc-0099"]
    assert set(sub.topics) == {"tinywarden/gw-7/incident"}
    assert Incident.from_json(sub.payloads[1]) == cases[3]
    assert pub.delivered == 4
    pub.close()
    sub.close()


def test_broker_outage_spools_then_delivers_every_incident_once_in_order(tmp_path, broker):
    sub = Subscriber(broker.port)
    pub = MqttPublisher("gw-7", Spool(tmp_path / "sp"), broker_cfg(broker.port))
    for i in range(3):
        pub.submit(incident(i))
    drain(pub)
    assert sub.wait_for_id("inc-0002") == ["inc-0000", "inc-0001", "inc-0002"]

    broker.stop()
    for i in range(3, 10):
        pub.submit(incident(i, tier=i % 3))
        assert pub.flush(timeout_s=0.5) == 0
    assert [i.incident_id for i in pub.spool.incidents()] == [f"inc-{i:04d}" for i in range(3, 10)]
    assert pub.last_error

    broker.start()  # same port, sessions restored from its persistence file
    drain(pub)
    pub.submit(incident(99))
    drain(pub)
    expected = [f"inc-{i:04d}" for i in [*range(10), 99]]
    assert sub.wait_for_id("inc-0099") == expected
    pub.close()
    sub.close()


def test_background_sender_rides_out_repeated_restarts(tmp_path, broker):
    sub = Subscriber(broker.port)
    pub = MqttPublisher("gw-7", Spool(tmp_path / "sp"), broker_cfg(broker.port))
    pub.start()
    n = 0
    for _ in range(3):
        for _ in range(4):
            pub.submit(incident(n))
            n += 1
        sub.wait_for_id(f"inc-{n - 1:04d}")
        broker.stop()
        for _ in range(3):
            pub.submit(incident(n))
            n += 1
        broker.start()
    pub.submit(incident(999))
    got = sub.wait_for_id("inc-0999")
    pub.close()
    sub.close()
    assert got == [f"inc-{i:04d}" for i in [*range(n), 999]]
    assert len(Spool(tmp_path / "sp")) == 0


def test_spool_written_before_a_crash_is_delivered_by_the_next_process(tmp_path, broker):
    sub = Subscriber(broker.port)
    dead = MqttPublisher("gw-7", Spool(tmp_path / "sp"), broker_cfg(free_port()))
    for i in range(4):
        dead.submit(incident(i))
    dead.close()  # the agent dies with incidents still owed
    pub = MqttPublisher("gw-7", Spool(tmp_path / "sp"), broker_cfg(broker.port))
    drain(pub)
    assert sub.wait_for_id("inc-0003") == [f"inc-{i:04d}" for i in range(4)]
    pub.close()
    sub.close()


def test_hostile_server_first_then_the_real_broker_on_the_same_port(tmp_path):
    require_mosquitto()
    hostile = HostileBroker(b"\x20\x7f\xff\xff")
    port = hostile.port
    pub = MqttPublisher("gw-7", Spool(tmp_path / "sp"), broker_cfg(port))
    for i in range(3):
        pub.submit(incident(i))
    for _ in range(3):
        assert pub.flush(timeout_s=1.0) == 0
        pub._next_attempt = 0.0
    hostile.close()
    with Mosquitto(tmp_path / "broker", port=port) as b:
        sub = Subscriber(b.port)
        drain(pub)
        assert sub.wait_for_id("inc-0002") == ["inc-0000", "inc-0001", "inc-0002"]
        pub.close()
        sub.close()


# ---------------------------------------------------------------------------------------------- TLS


def _cert(subject: str, key, issuer_name, issuer_key, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(d: Path, name: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1: (ca.pem, server.pem, server.key)."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = _cert(name, ca_key, ca_name, ca_key, ca=True)
    srv = _cert("127.0.0.1", srv_key, ca_name, ca_key, ca=False)
    paths = d / f"{name}-ca.pem", d / f"{name}-server.pem", d / f"{name}-server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        srv_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def test_tls_delivers_with_the_right_ca_and_spools_with_a_wrong_one(tmp_path):
    require_mosquitto()
    ca, cert, key = make_pki(tmp_path / "pki", "fleet")
    other_ca, _, _ = make_pki(tmp_path / "pki", "impostor")
    with Mosquitto(tmp_path / "broker", tls=(ca, cert, key)) as b:
        sub = Subscriber(b.port, tls_ca=ca)
        wrong = MqttPublisher("gw-7", Spool(tmp_path / "wrong"), broker_cfg(b.port, TlsConfig(str(other_ca))))
        wrong.submit(incident(0))
        assert wrong.flush(timeout_s=2.0) == 0
        assert "certificate verify failed" in wrong.last_error.lower() or "ssl" in wrong.last_error.lower()
        assert len(wrong.spool) == 1
        wrong.close()
        plain = MqttPublisher("gw-7", Spool(tmp_path / "plain"), broker_cfg(b.port))
        plain.submit(incident(1))
        assert plain.flush(timeout_s=2.0) == 0  # a plaintext client cannot talk to a TLS-only listener
        plain.close()

        with pytest.raises(EscalationError, match="missing.pem"):
            MqttPublisher(
                "gw-7", Spool(tmp_path / "x"), broker_cfg(b.port, TlsConfig(str(tmp_path / "missing.pem")))
            )
        pub = MqttPublisher("gw-7", Spool(tmp_path / "sp"), broker_cfg(b.port, TlsConfig(str(ca))))
        for i in range(2, 5):
            pub.submit(incident(i))
        drain(pub)
        assert sub.wait_for_id("inc-0004") == ["inc-0002", "inc-0003", "inc-0004"]
        pub.close()
        sub.close()


def test_an_incident_named_by_huge_channels_reaches_the_broker_cut_and_marked(tmp_path, broker):
    # A model trained on a CSV whose 64 column headers are ~200 KB each: the incident's JSON was 13 MB, spooled,
    # then quarantined as "larger than 1048576 bytes" on the way out, so the fleet never heard of the attack.
    from tinywarden.agent.escalate import MAX_SPOOL_BYTES

    sub = Subscriber(broker.port)
    pub = MqttPublisher("gw-7", Spool(tmp_path / "sp"), broker_cfg(broker.port))
    names = {"c" * 200_000 + f"{i:02d}:max": 90.0 + i for i in range(64)}  # the same first 256 characters
    big = Incident(device_id="gw-7", model_id="m" * 200_000, model_version=2, tier=2, score=9.0, threshold=5.0,
                   confidence=0.9, window_start=2000.0, window_end=2010.0, features=names, incident_id="inc-big")
    assert pub.submit(big)
    drain(pub)
    assert sub.wait_for_id("inc-big") == ["inc-big"]
    assert len(big.to_json()) < MAX_SPOOL_BYTES // 8
    got = Incident.from_json(sub.payloads[0])
    assert got == big and len(got.features) == 64  # none lost to a name cut to the same text
    assert all(len(k) <= 256 and "…" in k for k in got.features)  # MAX_TEXT
    assert sorted(got.features.values()) == sorted(names.values())
    assert got.model_id.endswith("…") and len(got.model_id) == 256
    assert not (tmp_path / "sp" / "corrupt").exists()  # never set aside as unreadable
    pub.close()
    sub.close()
