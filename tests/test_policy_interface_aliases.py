"""Interface names that iproute2 resolves to *another* interface must not slip past the [critical] check.

``ip`` and ``tc`` look a name up through ``if_nametoindex``, whose ``SIOCGIFINDEX`` ioctl cuts the name at
the first ``:`` (an IPv4 alias label: ``eth1:0`` is ``eth1``), and iproute2 then reads ``ifN`` as interface
index ``N`` when no interface has that name. A name the kernel never gives an interface (``dev_valid_name``
refuses ``:``) or that iproute2 reads as an index would otherwise pass the name comparison with the critical
interfaces and take the critical interface down anyway.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

import pytest

from tinywarden.respond.policy import PolicyError, parse_policy

POLICY = """
[policy]
name = "t"
version = "1"

[critical]
interfaces = ["eth1"]

[tiers.alert]
actions = ["notify"]

[tiers.constrain]
actions = ["act"]
margin = 0.5
dead_man_s = 60

[actions.notify]
type = "log"
message = "hi"

[actions.act]
{body}
"""


@pytest.mark.parametrize("kind", ["interface_down", "tc_rate_limit"])
@pytest.mark.parametrize("name", ["eth1:0", "eth1:x", "if2", "if02", "eth1\\n"])
def test_interface_names_that_resolve_to_another_interface_are_refused(kind: str, name: str) -> None:
    body = f'type = "{kind}"\ninterface = "{name}"' + ('\nrate = "1mbit"' if kind == "tc_rate_limit" else "")
    with pytest.raises(PolicyError, match="actions.act.interface: .* is not a valid interface name"):
        parse_policy(POLICY.format(body=body), source="p.toml")


def test_critical_interface_alias_names_are_refused() -> None:
    body = 'type = "interface_down"\ninterface = "eth0"'
    with pytest.raises(PolicyError, match="critical.interfaces: 'eth1:0' is not a valid interface name"):
        parse_policy(POLICY.format(body=body).replace('["eth1"]', '["eth1:0"]'), source="p.toml")


def test_ordinary_interface_names_still_load() -> None:
    for name in ("eth0", "wlan0", "eth0.100", "br-lan", "veth_a@b", "iface2", "wg0"):
        body = f'type = "interface_down"\ninterface = "{name}"'
        assert parse_policy(POLICY.format(body=body)).actions[1].params["interface"] == name


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")
def test_iproute2_really_resolves_an_alias_label_and_an_index_name_to_the_interface() -> None:
    """Why the names above are refused: in a fresh namespace ``ip link set dev lo:7 down`` and
    ``ip link set dev if1 down`` each take ``lo`` (index 1) down."""
    ns = f"tw-alias-{secrets.token_hex(4)}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace")
    try:
        def ip(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["ip", "netns", "exec", ns, "ip", *args], capture_output=True, text=True)

        for alias in ("lo:7", "if1"):
            assert ip("link", "set", "dev", "lo", "up").returncode == 0
            assert "UP" in ip("-o", "link", "show", "dev", "lo").stdout.split(">")[0]
            assert ip("link", "set", "dev", alias, "down").returncode == 0
            assert "UP" not in ip("-o", "link", "show", "dev", "lo").stdout.split(">")[0]
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_a_rate_or_an_action_name_with_a_trailing_newline_is_refused_when_the_policy_loads() -> None:
    # "^...$" with re.match lets "$" match before a final newline: "1mbit\n" loaded and failed only when tc ran, and an
    # action named "act\n" loaded (a line break in every log and audit line that names it)
    body = 'type = "tc_rate_limit"\ninterface = "eth0"\nrate = "1mbit\\n"'
    with pytest.raises(PolicyError, match="actions.act.rate: must be a tc rate"):
        parse_policy(POLICY.format(body=body), source="p.toml")
    named = POLICY.replace('actions = ["act"]', 'actions = ["act\\n"]').replace("[actions.act]", '[actions."act\\n"]')
    with pytest.raises(PolicyError, match="action names are 1-32 characters"):
        parse_policy(named.format(body='type = "log"\nmessage = "x"'), source="p.toml")
