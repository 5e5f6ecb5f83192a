"""Real actuators against the real kernel: each network test runs in its own network namespace, applies
the rule, checks it is really there, reverts, and checks it is really gone."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from tinywarden.respond.actuators import (
    CommandRunner,
    DryRunActuator,
    InterfaceDown,
    NftBlockAddress,
    NftEgressAllowlist,
    ProcessRenice,
    ProcessSuspend,
    TcRateLimit,
    build_actuators,
)
from tinywarden.respond.policy import load_policy


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) not installed"
    return None


@pytest.fixture
def netns() -> Iterator[CommandRunner]:
    """A fresh network namespace with loopback up and a veth pair (tw0 up, tw1 down)."""
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    name = f"tw-test-{secrets.token_hex(4)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        run = CommandRunner(["ip", "netns", "exec", name])
        run.run(["ip", "link", "set", "lo", "up"])
        run.run(["ip", "link", "add", "tw0", "type", "veth", "peer", "name", "tw1"])
        run.run(["ip", "link", "set", "tw0", "up"])
        yield run
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _need(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} not installed")


SEND_UDP = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b"x", (sys.argv[1], 9))
    print("sent")
except PermissionError:
    print("EPERM")
"""


def _send_udp(runner: CommandRunner, address: str) -> str:
    return runner.run([sys.executable, "-c", SEND_UDP, address]).stdout.strip()


def test_runner_prefix_is_put_before_every_command() -> None:
    assert CommandRunner(["ip", "netns", "exec", "x"]).argv(["tc", "qdisc"]) == [
        "ip", "netns", "exec", "x", "tc", "qdisc",
    ]  # fmt: skip


def test_nft_block_address_really_drops_and_is_really_gone(netns: CommandRunner) -> None:
    _need("nft")
    act = NftBlockAddress("block_c2", ["203.0.113.7/32", "2001:db8::7/128"], netns, backend="nft")
    assert not act.is_applied()
    act.apply()
    ruleset = netns.run(["nft", "list", "ruleset"]).stdout
    assert "table inet tw_block_c2" in ruleset
    assert "ip daddr 203.0.113.7 counter packets 0 bytes 0 drop" in ruleset
    assert "ip6 daddr 2001:db8::7 counter packets 0 bytes 0 drop" in ruleset
    assert "ip saddr 203.0.113.7 counter packets 0 bytes 0 drop" in ruleset
    assert act.is_applied()
    assert act.dropped_packets() == 0
    act.apply()  # idempotent
    act.revert()
    assert "tw_block_c2" not in netns.run(["nft", "list", "ruleset"]).stdout
    assert not act.is_applied()
    act.revert()  # idempotent


def test_nft_egress_allowlist_blocks_egress_but_keeps_loopback_and_critical(netns: CommandRunner) -> None:
    _need("nft")
    netns.run(["ip", "addr", "add", "10.99.0.1/24", "dev", "tw0"])
    act = NftEgressAllowlist("fence", ["10.20.0.0/16"], critical_interfaces=["tw1"],
                             critical_addresses=["192.168.10.5/32"], runner=netns, backend="nft")  # fmt: skip
    act.apply()
    rules = netns.run(["nft", "list", "table", "inet", "tw_fence"]).stdout
    assert "policy drop" in rules
    assert 'oifname "lo" accept' in rules and 'oifname "tw1" accept' in rules
    assert "10.20.0.0/16" in rules and "192.168.10.5" in rules
    # Really enforced: a datagram to a non-allowed address is refused at the output hook (EPERM);
    # loopback still works.
    assert _send_udp(netns, "10.99.0.2") == "EPERM"
    assert _send_udp(netns, "127.0.0.1") == "sent"
    # The drop is counted, so an operator (and the attack range) can see what the rule stopped.
    assert act.dropped_packets() == 1
    act.revert()
    assert act.dropped_packets() is None
    assert "tw_fence" not in netns.run(["nft", "list", "ruleset"]).stdout
    assert _send_udp(netns, "10.99.0.2") == "sent"


def test_iptables_backend_applies_and_reverts(netns: CommandRunner) -> None:
    _need("iptables")
    _need("ip6tables")
    act = NftBlockAddress("block_c2", ["203.0.113.7/32", "2001:db8::7/128"], netns, backend="iptables")
    act.apply()
    v4 = netns.run(["iptables", "-S"]).stdout
    v6 = netns.run(["ip6tables", "-S"]).stdout
    assert "-A OUTPUT -j TW-block_c2-O" in v4 and "-A TW-block_c2-O -d 203.0.113.7/32 -j DROP" in v4
    assert "-A TW-block_c2-I -s 203.0.113.7/32 -j DROP" in v4
    assert "-A TW-block_c2-O -d 2001:db8::7/128 -j DROP" in v6
    assert act.is_applied()
    act.revert()
    assert "TW-block_c2" not in netns.run(["iptables", "-S"]).stdout
    assert "TW-block_c2" not in netns.run(["ip6tables", "-S"]).stdout
    assert not act.is_applied()

    fence = NftEgressAllowlist("fence", ["10.20.0.0/16"], runner=netns, backend="iptables")
    fence.apply()
    rules = netns.run(["iptables", "-S", "TW-fence-O"]).stdout
    assert "-A TW-fence-O -o lo -j ACCEPT" in rules and rules.rstrip().endswith("-A TW-fence-O -j DROP")
    fence.revert()
    assert "TW-fence" not in netns.run(["iptables", "-S"]).stdout


def test_tc_rate_limit_installs_and_removes_its_qdisc(netns: CommandRunner) -> None:
    _need("tc")
    act = TcRateLimit("cap", "tw0", "256kbit", runner=netns)
    assert not act.is_applied()
    act.apply()
    shown = netns.run(["tc", "qdisc", "show", "dev", "tw0"]).stdout
    assert "qdisc tbf 7477: root" in shown and "rate 256Kbit" in shown
    assert act.is_applied()
    act.apply()  # idempotent: a second add would fail
    act.revert()
    assert "tbf" not in netns.run(["tc", "qdisc", "show", "dev", "tw0"]).stdout
    assert not act.is_applied()


def test_interface_down_and_back_up_only_if_it_was_up(netns: CommandRunner) -> None:
    up = InterfaceDown("uplink_down", "tw0", netns)
    assert up.admin_up()
    up.apply()
    assert not up.admin_up() and up.is_applied()
    assert "state DOWN" in netns.run(["ip", "link", "show", "dev", "tw0"]).stdout
    up.revert()
    assert up.admin_up() and not up.is_applied()

    already_down = InterfaceDown("other", "tw1", netns)
    assert not already_down.admin_up()
    already_down.apply()
    already_down.revert()
    assert not already_down.admin_up()  # we did not bring up what we had not taken down


@pytest.fixture
def sleeper(tmp_path) -> Iterator[psutil.Process]:
    """A ``sleep`` child under a unique process name, so acting "by name" touches only it."""
    binary = tmp_path / f"tw-zz-{secrets.token_hex(3)}"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    child = subprocess.Popen([str(binary), "60"])
    try:
        yield psutil.Process(child.pid)
    finally:
        child.kill()
        child.wait()


def _status_becomes(p: psutil.Process, status: str) -> bool:
    # Signals are delivered asynchronously; poll briefly for the state, without asserting on time.
    for _ in range(200):
        if p.status() == status:
            return True
        time.sleep(0.005)
    return False


def test_process_suspend_stops_and_resumes_a_real_child(sleeper: psutil.Process) -> None:
    act = ProcessSuspend("stop", pid=sleeper.pid)
    act.apply()
    assert _status_becomes(sleeper, psutil.STATUS_STOPPED) and act.is_applied()
    act.revert()
    assert _status_becomes(sleeper, psutil.STATUS_SLEEPING) and not act.is_applied()


def test_process_suspend_by_name_survives_restart_via_snapshot(sleeper: psutil.Process) -> None:
    act = ProcessSuspend("stop", process=sleeper.name())
    act.apply()
    assert _status_becomes(sleeper, psutil.STATUS_STOPPED)
    again = ProcessSuspend("stop", process=sleeper.name())
    again.restore(act.snapshot())
    assert again.is_applied()
    again.revert()
    assert _status_becomes(sleeper, psutil.STATUS_SLEEPING)


def test_critical_process_names_are_never_suspended(sleeper: psutil.Process) -> None:
    act = ProcessSuspend("stop", process=sleeper.name(), critical=[sleeper.name()])
    act.apply()
    assert not act.is_applied() and sleeper.status() != psutil.STATUS_STOPPED
    me = ProcessSuspend("self", pid=os.getpid())  # never the responder itself
    me.apply()
    assert not me.is_applied()


def test_process_renice_sets_and_restores_nice(sleeper: psutil.Process) -> None:
    before = sleeper.nice()
    act = ProcessRenice("slow", pid=sleeper.pid, nice=17)
    act.apply()
    assert sleeper.nice() == 17 and act.is_applied()
    act.revert()
    assert sleeper.nice() == before and not act.is_applied()


def test_dry_run_records_what_it_would_do_and_touches_nothing(netns: CommandRunner) -> None:
    policy = load_policy(os.path.join(os.path.dirname(__file__), "..", "examples", "policy.toml"))
    acts = build_actuators(policy, dry_run=True, prefix=netns.prefix)
    assert all(isinstance(a, DryRunActuator) for a in acts)
    fence = acts[policy.action_index("egress_allowlist")]
    fence.apply()
    assert fence.is_applied() and fence.records[0].startswith("would apply egress_allowlist: drop all egress")
    assert "eth1" in fence.records[0] and "192.168.10.5/32" in fence.records[0]  # critical stay allowed
    assert netns.run(["nft", "list", "ruleset"]).stdout.strip() == ""


def test_real_engine_run_in_a_namespace_applies_and_reverts(netns: CommandRunner, tmp_path) -> None:
    _need("nft")
    _need("tc")
    from tinywarden.respond.engine import ResponseEngine, SimulatedClock
    from tinywarden.respond.policy import parse_policy

    policy = parse_policy("""
        [policy]
        name = "ns"
        version = "1"
        [tiers.alert]
        actions = ["cap", "block"]
        consecutive = 2
        deescalate_after_s = 30
        dead_man_s = 100
        [actions.cap]
        type = "tc_rate_limit"
        interface = "tw0"
        rate = "1mbit"
        [actions.block]
        type = "nft_block_address"
        addresses = ["198.51.100.9"]
    """)
    real = build_actuators(policy, dry_run=False, prefix=netns.prefix)
    engine = ResponseEngine(policy, 1.0, actuators=real, clock=SimulatedClock())
    engine.observe(2.0, at=0.0)
    engine.observe(2.0, at=1.0)
    assert "tbf 7477:" in netns.run(["tc", "qdisc", "show", "dev", "tw0"]).stdout
    assert "198.51.100.9" in netns.run(["nft", "list", "ruleset"]).stdout
    events = engine.observe(0.1, at=40.0)
    assert [e.event for e in events] == ["revert", "revert"] and all(e.status == "done" for e in events)
    assert "tbf" not in netns.run(["tc", "qdisc", "show", "dev", "tw0"]).stdout
    assert netns.run(["nft", "list", "ruleset"]).stdout.strip() == ""




def test_run_time_critical_check_sees_one_address_form() -> None:
    """The engine's run-time double check compares normalised networks (issue 12 item 4)."""
    from tinywarden.respond.critical import Critical
    from tinywarden.respond.engine import critical_conflict

    critical = Critical(addresses=("::ffff:192.168.10.5",))
    assert critical_conflict(NftBlockAddress("b", ["192.168.10.0/24"], backend="nft"), critical) == \
        "critical address 192.168.10.5/32"
    mapped_target = NftBlockAddress("b", ["::ffff:192.168.10.5"], backend="nft")
    assert mapped_target.rules.drop == ("192.168.10.5/32",)
    assert critical_conflict(mapped_target, Critical(addresses=("192.168.10.5",))) is not None
    assert critical_conflict(NftBlockAddress("b", ["192.168.11.5"], backend="nft"), critical) is None


def test_mapped_critical_address_stays_reachable_through_the_egress_allowlist(netns: CommandRunner) -> None:
    """In a real namespace: the critical host written as ::ffff:192.168.10.5 is still reachable over IPv4."""
    _need("nft")
    netns.run(["ip", "addr", "add", "10.99.0.1/24", "dev", "tw0"])
    netns.run(["ip", "route", "add", "192.168.10.0/24", "dev", "tw0"])
    act = NftEgressAllowlist("fence", [], critical_addresses=["::ffff:192.168.10.5"], runner=netns, backend="nft")
    act.apply()
    assert "ip daddr 192.168.10.5 accept" in netns.run(["nft", "list", "table", "inet", "tw_fence"]).stdout
    assert _send_udp(netns, "192.168.10.5") == "sent"
    assert _send_udp(netns, "192.168.10.6") == "EPERM"
    act.revert()


def test_a_process_known_by_the_15_characters_of_a_critical_name_is_never_suspended() -> None:
    """The kernel keeps 15 characters of a process name (comm); a daemon whose argv[0] does not start with them is
    known to psutil by those alone. The critical 'plc-bridge-daemon' running so was 'plc-bridge-daem', not in the
    critical list, and an action on 'plc-bridge-daem' stopped it. Refused when the policy loads and at run time."""
    from tinywarden.respond.policy import PolicyError, parse_policy

    hold = "open('/proc/self/comm', 'w').write('plc-bridge-daemon'); import time; time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", hold])
    try:
        proc = psutil.Process(child.pid)
        deadline = time.monotonic() + 10
        while proc.name() != "plc-bridge-daem" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.name() == "plc-bridge-daem"
        act = ProcessSuspend("stop", process="plc-bridge-daem", critical=("plc-bridge-daemon",))
        act.apply()
        try:
            assert act.snapshot() == {"acted": {}}  # no pid was stopped
            time.sleep(0.2)
            assert proc.status() != psutil.STATUS_STOPPED
        finally:
            act.revert()
    finally:
        child.kill()
        child.wait()
    text = '''
[policy]
name = "p"
version = "1"
[critical]
processes = ["plc-bridge-daemon"]
[tiers.alert]
actions = ["note"]
[tiers.constrain]
actions = ["stop"]
margin = 1.0
dead_man_s = 60
[actions.note]
type = "log"
[actions.stop]
type = "process_suspend"
process = "plc-bridge-daem"
'''
    with pytest.raises(PolicyError, match="actions.stop.process: 'plc-bridge-daem' can be the critical process"):
        parse_policy(text)
    parse_policy(text.replace('process = "plc-bridge-daem"', 'process = "telnetd"'))
