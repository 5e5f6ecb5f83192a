"""The one small interface every actuator implements, and the command runner they share.

An actuator carries out one action of the policy: :meth:`Actuator.apply` puts it in place,
:meth:`Actuator.revert` takes it away again, and :meth:`Actuator.is_applied` looks at the real system
(never at a flag) to say whether it is in place. Both directions are idempotent, so an engine that
restarts after a crash can apply or revert again without harm.

Actuators that run commands take a :class:`CommandRunner`, whose ``prefix`` is put in front of every
command; ``CommandRunner(["ip", "netns", "exec", "tw-test"])`` runs them in a network namespace, which
is how the tests check real rules without touching the host.
"""

from __future__ import annotations

import re
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tinywarden.errors import TinywardenError


class ActuatorError(TinywardenError):
    """An action that could not be applied or reverted (the command, its exit status and stderr)."""


@dataclass(frozen=True)
class Targets:
    """What an action touches, checked against the policy's critical functions before it runs."""

    processes: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()


class CommandRunner:
    """Runs system commands (argv lists, never a shell), each behind an optional ``prefix``.

    >>> CommandRunner(["ip", "netns", "exec", "ns1"]).argv(["nft", "list", "ruleset"])
    ['ip', 'netns', 'exec', 'ns1', 'nft', 'list', 'ruleset']
    """

    def __init__(self, prefix: Sequence[str] = (), timeout_s: float = 10.0) -> None:
        self.prefix = list(prefix)
        self.timeout_s = timeout_s

    def argv(self, cmd: Sequence[str]) -> list[str]:
        """The full command line that :meth:`run` executes for ``cmd``."""
        return [*self.prefix, *cmd]

    def run(
        self, cmd: Sequence[str], stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run ``cmd``; with ``check`` a non-zero exit becomes an :class:`ActuatorError`."""
        argv = self.argv(cmd)
        try:
            proc = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ActuatorError(f"{' '.join(argv)}: {exc}") from exc
        if check and proc.returncode != 0:
            raise ActuatorError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
        return proc


_KERNEL_NAME = re.compile(r"\d+: ([^\s:@]+)")  # "3: eth0: <...>" or "3: veth0@if2: <...>" from ip -o link


def _link_line(runner: CommandRunner, interface: str) -> str:
    try:
        return runner.run(["ip", "-o", "link", "show", "dev", interface], check=False).stdout
    except ActuatorError:
        return ""


def kernel_name(runner: CommandRunner, interface: str) -> str | None:
    """The kernel's own name of the interface ``interface`` denotes (``interface`` may be an altname), the one
    name nftables' ``oifname`` and iptables' ``-o`` match; ``None`` when ``ip`` cannot show it."""
    first = _KERNEL_NAME.match(_link_line(runner, interface))
    return first.group(1) if first else None


def interface_names(runner: CommandRunner, interface: str) -> tuple[str, ...]:
    """``interface`` and every other name the kernel gives the interface it denotes (its name and its
    alternative names, which ``ip`` and ``tc`` accept as well), so the critical check sees every spelling of
    what the command acts on; just ``interface`` when ``ip`` cannot show it."""
    out = _link_line(runner, interface)
    first = _KERNEL_NAME.match(out)
    names = [interface, *([first.group(1)] if first else []), *re.findall(r"\baltname ([^\s\\]+)", out)]
    return tuple(dict.fromkeys(names))


class Actuator(ABC):
    """One reversible action of the policy, named after it (``name``)."""

    name: str

    @abstractmethod
    def apply(self) -> None:
        """Put the action in place (no-op when it already is)."""

    @abstractmethod
    def revert(self) -> None:
        """Undo the action (no-op when it is not in place)."""

    @abstractmethod
    def is_applied(self) -> bool:
        """Whether the action is in place, judged from the real system."""

    @abstractmethod
    def describe(self) -> str:
        """One line saying what :meth:`apply` does, used by dry runs and the audit log."""

    def targets(self) -> Targets:
        """What the action touches; the engine refuses to run it if any of that is critical."""
        return Targets()

    def snapshot(self) -> dict[str, Any]:
        """What the actuator must remember across a restart to revert correctly (JSON-able)."""
        return {}

    def restore(self, memo: dict[str, Any]) -> None:  # noqa: B027  (most actuators remember nothing)
        """Take back what :meth:`snapshot` returned before the restart."""
