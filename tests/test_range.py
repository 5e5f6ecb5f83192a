"""A small attack range (issue 15 item 4; the full one is benchmarks/range.py): two network namespaces of its
own, a normal workload recorded through `tinywarden record`, tuned, bundled, signed and installed through the
CLI, the agent running with --real-actuators and --mqtt in the device namespace, then a real UDP flood and a
real exfiltration. Asserts what the kernel and the broker show, never how long anything took."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks import range as attack_range  # noqa: E402


@pytest.fixture(scope="module")
def small_range(tmp_path_factory: pytest.TempPathFactory) -> attack_range.RangeResult:
    reason = attack_range.unavailable()
    if reason:
        pytest.skip(reason)
    # no normal period (nothing here asserts on it: the benchmark measures it) and 4 s attacks (both are seen
    # within a second)
    cfg = attack_range.Config(record_s=30, normal_s=0, rate=10, day_s=15, attacks=("flood", "exfil"), attack_s=4,
                              trials=1, settle_s=150, workdir=tmp_path_factory.mktemp("range"))  # fmt: skip
    # settle_s bounds the wait for each revert; the wait ends as soon as the device is quiet (about 8 s on an
    # idle machine), so a loaded machine only makes the test slower, never decides its verdict
    return attack_range.run_range(cfg, log=lambda _m: None)


def test_the_range_leaves_no_namespace_and_had_no_route_out(small_range: attack_range.RangeResult) -> None:
    for ns, routes in small_range.routes.items():
        assert "default" not in routes and routes.count("\n") == 0, (ns, routes)
        assert routes.startswith("10.77.0.0/29 dev "), (ns, routes)
    import subprocess

    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in listed for ns in small_range.routes)


def test_the_flood_is_detected_and_dropped_by_the_rule_counter(small_range: attack_range.RangeResult) -> None:
    flood = next(a for a in small_range.attacks if a["attack"] == "flood")
    assert flood["detected"], flood
    assert "egress_allowlist" in flood["actions"], flood
    assert flood["nft_dropped"] > 0, flood
    assert flood["process_report"]["refused_by_filter"] > 0, flood


@pytest.mark.parametrize("attack", ["flood", "exfil"])
def test_each_attack_is_reverted_audited_and_escalated(small_range: attack_range.RangeResult, attack: str) -> None:
    a = next(x for x in small_range.attacks if x["attack"] == attack)
    assert a["detected"], a
    assert a["reverted"] and a["revert_reasons"], a
    assert a["audit"] == "intact", a
    assert a["incidents_received"] >= 1 and 1 in a["incident_tiers"], a


def test_nothing_is_lost_at_the_broker(small_range: attack_range.RangeResult) -> None:
    b = small_range.broker
    assert b["delivered"] == b["received"] == b["incidents_raised"] > 0, b
    assert not b["dropped"] and not b["spooled"], b
    assert small_range.audit_verdict == "intact"


@pytest.mark.parametrize("role", attack_range.SENDERS)
def test_a_sending_role_refuses_to_run_outside_the_device_namespace(role: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # run by hand on the host, a flood would follow the host's default route; the role itself never runs here
    called: list[str] = []
    monkeypatch.setitem(attack_range.ROLES, role, lambda a: called.append(role))
    with pytest.raises(SystemExit, match="refusing to send anything"):
        attack_range.role_main([role, "--seconds", "0.1", "--packets", "1"])
    assert not called
