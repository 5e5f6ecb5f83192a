"""Packet-filter actuators: block remote addresses, or all egress but an allow-list.

Each action owns one nftables table (``inet tw_<action>``), so applying is one atomic ``nft -f`` load
and reverting is deleting that table; nothing else in the ruleset is touched. Where ``nft`` is missing
the same rules go into an iptables/ip6tables chain of their own (``TW-<action>``) hooked into
OUTPUT/INPUT. Loopback, the policy's critical interfaces and critical addresses are always allowed by
the egress allow-list, so the device keeps its critical function while isolated.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from tinywarden.respond.actuators.base import Actuator, ActuatorError, CommandRunner, Targets, kernel_name
from tinywarden.respond.addresses import normalize_networks


@dataclass(frozen=True)
class FilterRules:
    """A backend-neutral rule set: drop traffic to/from ``drop``, or (``egress_only``) drop all egress
    except to ``allow`` and out of ``allow_interfaces``."""

    drop: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    allow_interfaces: tuple[str, ...] = ()
    egress_only: bool = False


_RULE_IFNAME = re.compile(r"[A-Za-z0-9_.@-]{1,15}")


def rule_ifname(name: str) -> str:
    """``name``, an interface name written into a rule, when the rule matches exactly that interface; else an
    :class:`ActuatorError`. The names come from the system (``ip link``), and the kernel takes any bytes but ``/``,
    ``:`` and white space: ``"`` ends nftables' quoted string (a syntax error, so the whole allow-list failed to
    load), a final ``*`` makes it a wildcard in nftables, as ``+`` does in iptables (``oifname "e*"`` kept every
    ``e`` interface open) and ``\\`` is an escape.

    >>> rule_ifname("eth0")
    'eth0'
    >>> try:
    ...     rule_ifname('e*')
    ... except ActuatorError as exc:
    ...     print(str(exc)[:58])
    interface name 'e*' cannot be written into a packet-filter
    """
    if not _RULE_IFNAME.fullmatch(name):
        raise ActuatorError(
            f"interface name {name!r} cannot be written into a packet-filter rule that matches it "
            "alone (only 1-15 of A-Z a-z 0-9 _ . @ -); rename the interface"
        )
    return name


def _split(addrs: Sequence[str]) -> tuple[list[str], list[str]]:
    v4 = [a for a in addrs if ipaddress.ip_network(a, strict=False).version == 4]
    v6 = [a for a in addrs if ipaddress.ip_network(a, strict=False).version == 6]
    return v4, v6


def nft_script(table: str, rules: FilterRules) -> str:
    """The ``nft -f`` script that creates ``table`` holding ``rules``.

    >>> print(nft_script("tw_x", FilterRules(drop=("203.0.113.7/32",))), end="")
    table inet tw_x {
      chain output {
        type filter hook output priority -10; policy accept;
        ip daddr { 203.0.113.7/32 } counter drop
      }
      chain input {
        type filter hook input priority -10; policy accept;
        ip saddr { 203.0.113.7/32 } counter drop
      }
    }
    """
    # Priority -10 runs our chains before the usual priority-0 filter chains. Every drop is counted so
    # the operator can see what the rule stopped (``Actuator.dropped_packets``).
    head = "type filter hook {} priority -10; policy {};"
    lines = [f"table inet {table} {{"]
    if rules.egress_only:
        v4, v6 = _split(rules.allow)
        body = ['oifname "lo" accept']
        body += [f'oifname "{rule_ifname(i)}" accept' for i in rules.allow_interfaces]
        body += [f"ip daddr {{ {', '.join(v4)} }} accept"] if v4 else []
        body += [f"ip6 daddr {{ {', '.join(v6)} }} accept"] if v6 else []
        body.append("counter drop")  # the policy would drop too, uncounted
        chains = [("output", head.format("output", "drop"), body)]
    else:
        v4, v6 = _split(rules.drop)
        out = [f"ip daddr {{ {', '.join(v4)} }} counter drop"] if v4 else []
        out += [f"ip6 daddr {{ {', '.join(v6)} }} counter drop"] if v6 else []
        inp = [r.replace("daddr", "saddr") for r in out]
        chains = [
            ("output", head.format("output", "accept"), out),
            ("input", head.format("input", "accept"), inp),
        ]
    for name, hook, body in chains:
        lines += [f"  chain {name} {{", f"    {hook}", *(f"    {r}" for r in body), "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def nft_table(action: str) -> str:
    """The nftables table (family ``inet``) that the packet-filter action named ``action`` owns."""
    return f"tw_{action.replace('-', '_')}"


def iptables_chain(action: str) -> str:
    """The stem of the iptables chains (``STEM-O``, ``STEM-I``) that the action named ``action`` owns where ``nft`` is
    missing (iptables chain names are at most 28 characters)."""
    return f"TW-{action[:22]}"


class _NftBackend:
    def __init__(self, table: str, runner: CommandRunner) -> None:
        self.table = table
        self.runner = runner

    def present(self) -> bool:
        return self.runner.run(["nft", "list", "table", "inet", self.table], check=False).returncode == 0

    def install(self, rules: FilterRules) -> None:
        self.runner.run(["nft", "-f", "-"], stdin=nft_script(self.table, rules))

    def remove(self) -> None:
        self.runner.run(["nft", "delete", "table", "inet", self.table])

    def dropped(self) -> int:
        listed = self.runner.run(["nft", "list", "table", "inet", self.table]).stdout
        return sum(int(n) for n in re.findall(r"counter packets (\d+) bytes \d+ drop", listed))

    def commands(self, rules: FilterRules) -> str:
        return f"nft -f - <<< {nft_script(self.table, rules)!r}"


class _IptablesBackend:
    """The same rules as iptables/ip6tables chains, for systems without nft."""

    def __init__(self, chain: str, runner: CommandRunner) -> None:
        self.chain = chain
        self.runner = runner

    def _chains(self, rules: FilterRules) -> list[tuple[str, str, list[list[str]]]]:
        """(binary, hook, rule arguments) for each chain this rule set needs."""
        out: list[tuple[str, str, list[list[str]]]] = []
        for binary, version in (("iptables", 4), ("ip6tables", 6)):
            if rules.egress_only:
                addrs = [a for a in rules.allow if ipaddress.ip_network(a).version == version]
                body = [["-o", "lo", "-j", "ACCEPT"]]
                body += [["-o", rule_ifname(i), "-j", "ACCEPT"] for i in rules.allow_interfaces]
                body += [["-d", a, "-j", "ACCEPT"] for a in addrs]
                body.append(["-j", "DROP"])
                out.append((binary, "OUTPUT", body))
            else:
                addrs = [a for a in rules.drop if ipaddress.ip_network(a).version == version]
                if addrs:
                    out.append((binary, "OUTPUT", [["-d", a, "-j", "DROP"] for a in addrs]))
                    out.append((binary, "INPUT", [["-s", a, "-j", "DROP"] for a in addrs]))
        return out

    def _name(self, hook: str) -> str:
        return f"{self.chain}-{hook[0]}"  # iptables chain names are at most 28 characters

    def present(self) -> bool:
        return self.runner.run(["iptables", "-S", self._name("OUTPUT")], check=False).returncode == 0 or (
            self.runner.run(["ip6tables", "-S", self._name("OUTPUT")], check=False).returncode == 0
        )

    def install(self, rules: FilterRules) -> None:
        for binary, hook, body in self._chains(rules):
            name = self._name(hook)
            self.runner.run([binary, "-N", name])
            for r in body:
                self.runner.run([binary, "-A", name, *r])
            self.runner.run([binary, "-I", hook, "1", "-j", name])

    def remove(self) -> None:
        for binary in ("iptables", "ip6tables"):
            for hook in ("OUTPUT", "INPUT"):
                name = self._name(hook)
                if self.runner.run([binary, "-S", name], check=False).returncode != 0:
                    continue
                while self.runner.run([binary, "-D", hook, "-j", name], check=False).returncode == 0:
                    pass
                self.runner.run([binary, "-F", name])
                self.runner.run([binary, "-X", name])

    def dropped(self) -> int:
        total = 0
        for binary in ("iptables", "ip6tables"):
            for hook in ("OUTPUT", "INPUT"):
                listed = self.runner.run([binary, "-L", self._name(hook), "-v", "-x", "-n"], check=False)
                for line in listed.stdout.splitlines()[2:]:  # chain title and column header
                    cols = line.split()
                    if len(cols) > 2 and cols[2] == "DROP":
                        total += int(cols[0])
        return total

    def commands(self, rules: FilterRules) -> str:
        return "; ".join(
            f"{b} -N {self._name(h)}; " + "; ".join(f"{b} -A {self._name(h)} {' '.join(r)}" for r in body)
            for b, h, body in self._chains(rules)
        )


def _networks(name: str, texts: Sequence[str]) -> tuple[str, ...]:
    """The rule's addresses in the policy's one normalised form (so the critical check sees what runs)."""
    try:
        return normalize_networks(list(dict.fromkeys(texts)))
    except ValueError as exc:
        raise ActuatorError(f"{name}: {exc}") from None


class _FilterActuator(Actuator):
    def __init__(
        self, name: str, rules: FilterRules, runner: CommandRunner | None, backend: str | None
    ) -> None:
        self.name = name
        self.rules = rules
        runner = runner or CommandRunner()
        backend = backend or ("nft" if shutil.which("nft") else "iptables")
        if backend == "nft":
            self.backend: _NftBackend | _IptablesBackend = _NftBackend(nft_table(name), runner)
        elif backend == "iptables":
            self.backend = _IptablesBackend(iptables_chain(name), runner)
        else:
            raise ActuatorError(f"unknown packet-filter backend {backend!r} (nft or iptables)")

    def apply(self) -> None:
        if not self.is_applied():
            self.backend.install(self.rules)

    def revert(self) -> None:
        if self.is_applied():
            self.backend.remove()

    def is_applied(self) -> bool:
        return self.backend.present()

    def dropped_packets(self) -> int | None:
        """Packets this action's rules have dropped since it was applied; ``None`` when it is not applied."""
        return self.backend.dropped() if self.is_applied() else None


class NftBlockAddress(_FilterActuator):
    """Drop all traffic to and from ``addresses`` (the ``nft_block_address`` action type)."""

    def __init__(
        self,
        name: str,
        addresses: Sequence[str],
        runner: CommandRunner | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__(name, FilterRules(drop=_networks(name, addresses)), runner, backend)

    def describe(self) -> str:
        return f"drop traffic to/from {', '.join(self.rules.drop)} ({self.backend.commands(self.rules)})"

    def targets(self) -> Targets:
        return Targets(addresses=self.rules.drop)


class NftEgressAllowlist(_FilterActuator):
    """Drop all outgoing traffic except to ``allow``, loopback and the critical interfaces/addresses."""

    def __init__(
        self,
        name: str,
        allow: Sequence[str],
        critical_interfaces: Sequence[str] = (),
        critical_addresses: Sequence[str] = (),
        runner: CommandRunner | None = None,
        backend: str | None = None,
    ) -> None:
        # A critical address the allow-list already covers adds nothing; keep one entry per network.
        allowed = _networks(name, allow)
        rules = FilterRules(
            allow=allowed + tuple(a for a in _networks(name, critical_addresses) if a not in allowed),
            allow_interfaces=tuple(critical_interfaces),
            egress_only=True,
        )
        super().__init__(name, rules, runner, backend)
        self._critical_interfaces = tuple(critical_interfaces)

    def apply(self) -> None:
        """Install the rules, each critical interface kept by the policy's name and the kernel's (``oifname`` and
        ``-o`` match the kernel's name only: a critical interface the policy names by an altname was cut off too).
        Its altnames are left out: no rule matches them, and one the kernel accepts may break or widen the rule
        (:func:`rule_ifname`), which refuses a kernel name it cannot write exactly."""
        if not self.is_applied():
            names = (n for i in self._critical_interfaces for n in (i, kernel_name(self.backend.runner, i) or i))
            try:
                allow = tuple(rule_ifname(n) for n in dict.fromkeys(names))
            except ActuatorError as exc:
                raise ActuatorError(f"{self.name}: {exc}") from None
            self.rules = dataclasses.replace(self.rules, allow_interfaces=allow)
            self.backend.install(self.rules)

    def describe(self) -> str:
        allowed = ", ".join(["lo", *self.rules.allow_interfaces, *self.rules.allow])
        return f"drop all egress except {allowed} ({self.backend.commands(self.rules)})"
