"""Interface names from the system pasted into packet-filter rules: only names a rule matches exactly, checked
through a fake command runner (no nft, iptables or ip runs)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from tinywarden.respond.actuators import ActuatorError, CommandRunner, NftEgressAllowlist
from tinywarden.respond.actuators.nftables import FilterRules, nft_script


class FakeRunner(CommandRunner):
    """Answers ``ip -o link show dev X`` from ``links`` (name -> the line ip prints), says no table or chain is in
    place, and records every command with its stdin."""

    def __init__(self, links: dict[str, str]) -> None:
        super().__init__()
        self.links = links
        self.calls: list[tuple[list[str], str | None]] = []

    def run(self, cmd: Sequence[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        cmd = list(cmd)
        self.calls.append((cmd, stdin))
        if cmd[:3] == ["ip", "-o", "link"]:
            line = self.links.get(cmd[-1])
            return subprocess.CompletedProcess(cmd, 0 if line else 1, line or "", "")
        present = cmd[:2] in (["nft", "list"], ["iptables", "-S"], ["ip6tables", "-S"])
        return subprocess.CompletedProcess(cmd, 1 if present else 0, "", "")

    def installed(self) -> str:
        return "".join(
            stdin or " ".join(cmd) + "\n"
            for cmd, stdin in self.calls
            if cmd[0] != "ip" and cmd[:2] not in (["nft", "list"], ["iptables", "-S"], ["ip6tables", "-S"])
        )


def link(name: str, *altnames: str) -> str:
    alt = "".join(f"\\    altname {a}" for a in altnames)
    head = f"3: {name}: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP"
    return f"{head}\\    link/ether 02:00:00:00:00:01{alt}\n"


@pytest.mark.parametrize("backend", ["nft", "iptables"])
@pytest.mark.parametrize("altname", ['x"y', "e*", "e+", "a\\b", 'x";accept;"'])
def test_an_odd_altname_of_a_critical_interface_never_reaches_a_rule(backend: str, altname: str) -> None:
    # The kernel gives an altname any bytes but '/', ':' and white space. Pasted into 'oifname "..." accept' a '"'
    # was a syntax error (the whole allow-list failed to load mid-attack) and 'e*' a wildcard that kept every e*
    # interface open (iptables' -o 'e+' likewise); no rule matches an altname, so none is written.
    run = FakeRunner({"crit0": link("crit0", altname)})
    act = NftEgressAllowlist("iso", ["192.0.2.1"], critical_interfaces=["crit0"], runner=run, backend=backend)
    act.apply()
    rules = run.installed()
    assert altname not in rules and "crit0" in rules, rules
    assert act.rules.allow_interfaces == ("crit0",)


@pytest.mark.parametrize("backend", ["nft", "iptables"])
@pytest.mark.parametrize("kernel", ['a"b', "e*", "eth+"])
def test_a_critical_interface_whose_kernel_name_no_rule_can_match_is_refused_in_one_line(
    backend: str, kernel: str
) -> None:
    # The policy names it by a plain altname; oifname/-o match the kernel's name, which cannot be written exactly.
    run = FakeRunner({"crit": link(kernel, "crit")})
    act = NftEgressAllowlist("iso", ["192.0.2.1"], critical_interfaces=["crit"], runner=run, backend=backend)
    with pytest.raises(ActuatorError) as err:
        act.apply()
    assert str(err.value).startswith(f"iso: interface name {kernel!r} cannot be written") and "\n" not in str(err.value)
    assert run.installed() == ""  # nothing half-installed


def test_nft_script_refuses_a_name_it_cannot_quote() -> None:
    with pytest.raises(ActuatorError, match="cannot be written"):
        nft_script("tw_x", FilterRules(allow_interfaces=('a"b',), egress_only=True))
    assert 'oifname "eth0" accept' in nft_script("tw_x", FilterRules(allow_interfaces=("eth0",), egress_only=True))
