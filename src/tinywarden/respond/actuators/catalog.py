"""The one list of action types: what a policy may name, with which parameters, and what each does.

The policy loader (:mod:`tinywarden.respond.policy`) reads each type's required and optional
parameters from :data:`ACTUATOR_TYPES`, :func:`tinywarden.respond.actuators.build_actuator` builds from
its ``build``, and the table of action types in ``docs/policy.md`` is :func:`markdown_table` (a test
keeps them equal), so a type cannot be added to one of them and forgotten in another.

>>> list(ACTUATOR_TYPES)[:3]
['log', 'nft_block_address', 'nft_egress_allowlist']
>>> ACTUATOR_TYPES["tc_rate_limit"].required, dict(ACTUATOR_TYPES["tc_rate_limit"].optional)
(('interface', 'rate'), {'burst': '32kbit'})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from tinywarden.respond.actuators.base import Actuator, CommandRunner
from tinywarden.respond.actuators.interface import InterfaceDown
from tinywarden.respond.actuators.log import LogActuator
from tinywarden.respond.actuators.nftables import NftBlockAddress, NftEgressAllowlist, iptables_chain, nft_table
from tinywarden.respond.actuators.process import ProcessRenice, ProcessSuspend
from tinywarden.respond.actuators.tc import TcRateLimit

if TYPE_CHECKING:
    from tinywarden.respond.critical import Critical

__all__ = ["ACTUATOR_TYPES", "ActuatorType", "markdown_table"]

Builder = Callable[[str, Mapping[str, Any], "Critical", CommandRunner | None, str | None], Actuator]
Owns = Callable[[str, Mapping[str, Any]], tuple[str, ...]]


def _owns_nothing(name: str, params: Mapping[str, Any]) -> tuple[str, ...]:
    return ()


def _filter_owns(name: str, params: Mapping[str, Any]) -> tuple[str, ...]:
    return (f"nftables table inet {nft_table(name)}", f"iptables chains {iptables_chain(name)}-O/-I")


@dataclass(frozen=True)
class ActuatorType:
    """One action ``type``: its parameters (required; optional with defaults), the documentation of its
    apply and revert, and ``build(name, params, critical, runner, backend)`` for the real actuator."""

    name: str
    required: tuple[str, ...]
    optional: Mapping[str, Any]
    parameters: str
    apply: str
    revert: str
    build: Builder
    shapes_traffic: bool = False
    """Whether it changes the device's own traffic (drops, caps, takes links down): what a model of the packet
    and byte rates scores, so windows scored while it is in place are not the device's normal."""
    owns: Owns = _owns_nothing
    """``owns(name, params)``: what on the device the action holds for itself, which no other action may hold
    too. Its ``is_applied`` and ``revert`` recognise the thing, not who put it there: a second action on it would
    find it "applied" and do nothing, and its revert would lift the first one's (the policy loader refuses that)."""


ACTUATOR_TYPES: Mapping[str, ActuatorType] = MappingProxyType({t.name: t for t in (
    ActuatorType(
        "log", (), MappingProxyType({"message": "anomalous behaviour"}),
        '`message` (default "anomalous behaviour")', "log the message", "log the revert",
        lambda name, p, crit, runner, backend: LogActuator(name, p["message"]),
    ),
    ActuatorType(
        "nft_block_address", ("addresses",), MappingProxyType({}),
        "`addresses` (list, required)",
        "nftables table `inet tw_NAME` dropping traffic to and from them (iptables chains `TW-NAME-O/I` where "
        "`nft` is missing)",
        "delete that table/chains",
        lambda name, p, crit, runner, backend: NftBlockAddress(name, p["addresses"], runner, backend),
        shapes_traffic=True, owns=_filter_owns,
    ),
    ActuatorType(
        "nft_egress_allowlist", (), MappingProxyType({"allow": []}),
        "`allow` (list)", "drop all egress except loopback, `allow`, critical interfaces and addresses",
        "delete the table",
        lambda name, p, crit, runner, backend: NftEgressAllowlist(
            name, p["allow"], crit.interfaces, crit.addresses, runner, backend
        ),
        shapes_traffic=True, owns=_filter_owns,
    ),
    ActuatorType(
        "tc_rate_limit", ("interface", "rate"), MappingProxyType({"burst": "32kbit"}),
        "`interface`, `rate` (e.g. `256kbit`), `burst` (default `32kbit`)", "root `tbf` qdisc with handle `7477:`",
        "delete that qdisc",
        lambda name, p, crit, runner, backend: TcRateLimit(name, p["interface"], p["rate"], p["burst"], runner),
        shapes_traffic=True, owns=lambda name, p: (f"the root qdisc of interface {p['interface']}",),
    ),
    ActuatorType(
        "process_suspend", ("process",), MappingProxyType({}),
        "`process` (name)",
        "SIGSTOP every matching process (never pid 1, the engine, its parents or critical processes)",
        "SIGCONT the ones it stopped",
        lambda name, p, crit, runner, backend: ProcessSuspend(name, process=p["process"], critical=crit.processes),
        owns=lambda name, p: (f"the stopped state of process {p['process']!r}",),
    ),
    ActuatorType(
        "process_renice", ("process",), MappingProxyType({"nice": 19}),
        "`process`, `nice` (-20..19, default 19)", "set the nice value", "restore each process's old value",
        lambda name, p, crit, runner, backend: ProcessRenice(
            name, process=p["process"], nice=p["nice"], critical=crit.processes
        ),
    ),
    ActuatorType(
        "interface_down", ("interface",), MappingProxyType({}),
        "`interface`", "`ip link set dev IF down`", "bring it up again, only if it was up before",
        lambda name, p, crit, runner, backend: InterfaceDown(name, p["interface"], runner),
        shapes_traffic=True,
    ),
)})  # fmt: skip
"""Every action ``type`` a policy may use, in documentation order."""


def markdown_table() -> str:
    """The table of action types as it stands in ``docs/policy.md``.

    >>> print(markdown_table().splitlines()[2])
    | `log` | `message` (default "anomalous behaviour") | log the message | log the revert |
    """
    rows = ["| `type` | parameters | apply | revert |", "|---|---|---|---|"]
    rows += [f"| `{t.name}` | {t.parameters} | {t.apply} | {t.revert} |" for t in ACTUATOR_TYPES.values()]
    return "\n".join(rows) + "\n"
