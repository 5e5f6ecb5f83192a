"""Actuators: the things the response engine does, behind one small interface (:mod:`.base`).

:func:`build_actuators` turns a policy's action table into actuators, in the same order, so the
engine's action indices select them directly. ``dry_run=True`` (the default everywhere) builds
:class:`~tinywarden.respond.actuators.log.DryRunActuator` stand-ins that record what would happen.
"""

from __future__ import annotations

from collections.abc import Sequence

from tinywarden.respond.actuators.base import Actuator, ActuatorError, CommandRunner, Targets
from tinywarden.respond.actuators.interface import InterfaceDown
from tinywarden.respond.actuators.log import DryRunActuator, LogActuator
from tinywarden.respond.actuators.nftables import NftBlockAddress, NftEgressAllowlist
from tinywarden.respond.actuators.process import ProcessRenice, ProcessSuspend
from tinywarden.respond.actuators.tc import TcRateLimit
from tinywarden.respond.policy import ActionSpec, Policy

__all__ = [
    "Actuator",
    "ActuatorError",
    "CommandRunner",
    "DryRunActuator",
    "InterfaceDown",
    "LogActuator",
    "NftBlockAddress",
    "NftEgressAllowlist",
    "ProcessRenice",
    "ProcessSuspend",
    "Targets",
    "TcRateLimit",
    "build_actuator",
    "build_actuators",
]


def build_actuator(
    spec: ActionSpec, policy: Policy, runner: CommandRunner | None = None, backend: str | None = None
) -> Actuator:
    """The real actuator for one action of ``policy`` (``backend``: ``"nft"``/``"iptables"``/auto)."""
    p = spec.params
    crit = policy.critical
    if spec.type == "log":
        return LogActuator(spec.name, p["message"])
    if spec.type == "nft_block_address":
        return NftBlockAddress(spec.name, p["addresses"], runner, backend)
    if spec.type == "nft_egress_allowlist":
        return NftEgressAllowlist(spec.name, p["allow"], crit.interfaces, crit.addresses, runner, backend)
    if spec.type == "tc_rate_limit":
        return TcRateLimit(spec.name, p["interface"], p["rate"], p["burst"], runner)
    if spec.type == "process_suspend":
        return ProcessSuspend(spec.name, process=p["process"], critical=crit.processes)
    if spec.type == "process_renice":
        return ProcessRenice(spec.name, process=p["process"], nice=p["nice"], critical=crit.processes)
    if spec.type == "interface_down":
        return InterfaceDown(spec.name, p["interface"], runner)
    raise ActuatorError(f"{spec.name}: no actuator for action type {spec.type!r}")


def build_actuators(
    policy: Policy, dry_run: bool = True, prefix: Sequence[str] = (), backend: str | None = None
) -> list[Actuator]:
    """One actuator per action of ``policy``, in the policy's order.

    ``prefix`` is put before every command (e.g. ``["ip", "netns", "exec", "ns1"]``).
    """
    runner = CommandRunner(prefix)
    out: list[Actuator] = []
    for spec in policy.actions:
        real = build_actuator(spec, policy, runner, backend)
        out.append(DryRunActuator(spec.name, real.describe(), real.targets()) if dry_run else real)
    return out
