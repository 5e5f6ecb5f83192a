"""Actuators: the things the response engine does, behind one small interface (:mod:`.base`).

The action types a policy may use, their parameters and how each is built are listed once, in
:data:`~tinywarden.respond.actuators.catalog.ACTUATOR_TYPES`. :func:`build_actuators` turns a policy's
action table into actuators, in the same order, so the
engine's action indices select them directly. ``dry_run=True`` (the default everywhere) builds
:class:`~tinywarden.respond.actuators.log.DryRunActuator` stand-ins that record what would happen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tinywarden.respond.actuators.base import Actuator, ActuatorError, CommandRunner, Targets
from tinywarden.respond.actuators.catalog import ACTUATOR_TYPES, ActuatorType
from tinywarden.respond.actuators.interface import InterfaceDown
from tinywarden.respond.actuators.log import DryRunActuator, LogActuator
from tinywarden.respond.actuators.nftables import NftBlockAddress, NftEgressAllowlist
from tinywarden.respond.actuators.process import ProcessRenice, ProcessSuspend
from tinywarden.respond.actuators.tc import TcRateLimit

if TYPE_CHECKING:
    from tinywarden.respond.critical import Critical
    from tinywarden.respond.policy import ActionSpec, Policy

__all__ = [
    "ACTUATOR_TYPES",
    "Actuator",
    "ActuatorType",
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
    "actuator_for",
    "build_actuator",
    "build_actuators",
]


def build_actuator(
    spec: ActionSpec, policy: Policy, runner: CommandRunner | None = None, backend: str | None = None
) -> Actuator:
    """The real actuator for one action of ``policy`` (``backend``: ``"nft"``/``"iptables"``/auto)."""
    return actuator_for(spec, policy.critical, runner, backend)


def actuator_for(
    spec: ActionSpec,
    critical: Critical,
    runner: CommandRunner | None = None,
    backend: str | None = None,
    dry_run: bool = False,
) -> Actuator:
    """The actuator for action ``spec`` of a policy whose ``[critical]`` table is ``critical`` (a dry-run stand-in
    with ``dry_run``); the policy need not be loaded any more (an action of a replaced policy still to revert)."""
    kind = ACTUATOR_TYPES.get(spec.type)
    if kind is None:
        raise ActuatorError(f"{spec.name}: no actuator for action type {spec.type!r}")
    real = kind.build(spec.name, spec.params, critical, runner, backend)
    return DryRunActuator(spec.name, real.describe(), real.targets()) if dry_run else real


def build_actuators(
    policy: Policy, dry_run: bool = True, prefix: Sequence[str] = (), backend: str | None = None
) -> list[Actuator]:
    """One actuator per action of ``policy``, in the policy's order.

    ``prefix`` is put before every command (e.g. ``["ip", "netns", "exec", "ns1"]``).
    """
    runner = CommandRunner(prefix)
    return [actuator_for(spec, policy.critical, runner, backend, dry_run) for spec in policy.actions]
