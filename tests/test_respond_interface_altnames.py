"""An interface has more names than the one ``ip link`` prints first: alternative names (``ip link property add
dev eth1 altname uplink``; systemd gives every interface its predictable names as altnames) are accepted by
``ip`` and ``tc`` wherever a name is. The engine's run-time check compared the policy's names as strings, so an
action on ``uplink`` took the critical ``eth1`` down. Shown in a network namespace on the real kernel."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from test_policy_interface_aliases import POLICY
from tinywarden.respond.actuators import CommandRunner, build_actuator
from tinywarden.respond.engine import critical_conflict
from tinywarden.respond.policy import parse_policy


def policy_text(critical: str, kind: str, target: str, extra: str = "") -> str:
    """The alias tests' policy with ``critical`` as its critical interface and one ``kind`` action on ``target``."""
    body = f'type = "{kind}"\ninterface = "{target}"' + (f"\n{extra}" if extra else "")
    return POLICY.replace('["eth1"]', f'["{critical}"]').format(body=body)


@pytest.fixture
def netns() -> Iterator[CommandRunner]:
    """A namespace with veth tw0 (up) that also answers to the altnames twuplink and twmgmt."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    name = f"tw-alt-{secrets.token_hex(4)}"
    if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace")
    try:
        run = CommandRunner(["ip", "netns", "exec", name])
        run.run(["ip", "link", "add", "tw0", "type", "veth", "peer", "name", "tw1"])
        run.run(["ip", "link", "set", "tw0", "up"])
        for alt in ("twuplink", "twmgmt"):
            if run.run(["ip", "link", "property", "add", "dev", "tw0", "altname", alt], check=False).returncode:
                pytest.skip("this kernel or iproute2 has no alternative interface names")
        yield run
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _admin_up(run: CommandRunner) -> bool:
    return "UP" in run.run(["ip", "-o", "link", "show", "dev", "tw0"]).stdout.split(">")[0]


@pytest.mark.parametrize("kind", ["interface_down", "tc_rate_limit"])
@pytest.mark.parametrize(("critical", "target"), [("tw0", "twuplink"), ("twuplink", "tw0"), ("twmgmt", "twuplink")])
def test_an_action_on_another_name_of_a_critical_interface_is_refused_at_run_time(
    netns: CommandRunner, kind: str, critical: str, target: str
) -> None:
    extra = 'rate = "1mbit"' if kind == "tc_rate_limit" else ""
    policy = parse_policy(policy_text(critical, kind, target, extra))
    act = build_actuator(policy.actions[1], policy, netns)
    assert critical_conflict(act, policy.critical) is not None


def test_the_altname_really_is_the_critical_interface(netns: CommandRunner) -> None:
    """What the check above stops: the action on the altname takes tw0 itself down."""
    policy = parse_policy(policy_text("tw0", "interface_down", "twuplink"))
    act = build_actuator(policy.actions[1], policy, netns)
    assert _admin_up(netns)
    act.apply()
    assert not _admin_up(netns)
    act.revert()
    assert _admin_up(netns)


def test_an_unrelated_interface_is_still_allowed(netns: CommandRunner) -> None:
    policy = parse_policy(policy_text("twuplink", "interface_down", "tw1"))
    act = build_actuator(policy.actions[1], policy, netns)
    assert critical_conflict(act, policy.critical) is None


def test_the_egress_allow_list_keeps_a_critical_interface_named_by_its_altname_reachable(netns: CommandRunner) -> None:
    # nftables' oifname (and iptables' -o) match the kernel's name only: a critical interface the policy names by an
    # altname got an 'oifname "twuplink" accept' that never matches, so the allow-list cut the critical link too
    if shutil.which("nft") is None or netns.run(["nft", "list", "tables"], check=False).returncode:
        pytest.skip("no nftables here")
    from tinywarden.respond.actuators.nftables import NftEgressAllowlist

    act = NftEgressAllowlist("tw-allow", ["10.99.0.0/24"], critical_interfaces=["twuplink"], runner=netns,
                             backend="nft")
    act.apply()
    try:
        listed = netns.run(["nft", "list", "table", "inet", "tw_tw_allow"]).stdout
        assert 'oifname "tw0" accept' in listed, listed
    finally:
        act.revert()
    assert not act.is_applied()
