"""The policy's ``[critical]`` table: what no action may ever touch.

Its own module, below both the policy loader and the actuator catalog, so each can name it without
importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinywarden.respond.addresses import Network, normalize_network, overlapping

__all__ = ["COMM_LEN", "Critical", "same_process_name"]

COMM_LEN = 15
"""Characters of a process name the kernel keeps (``comm``, TASK_COMM_LEN 16 with the NUL): a process whose
``argv[0]`` does not start with it (a daemon that rewrites its title, a name set with ``prctl``) is known to
``ps -o comm`` and psutil by these 15 characters alone."""


def same_process_name(a: str, b: str) -> bool:
    """Whether process names ``a`` and ``b`` can denote one process: equal, or equal in their first
    :data:`COMM_LEN` characters when either is that long.

    >>> same_process_name("plc-bridge-daemon", "plc-bridge-daem"), same_process_name("sshd", "sshd2")
    (True, False)
    """
    return a == b or (max(len(a), len(b)) >= COMM_LEN and a[:COMM_LEN] == b[:COMM_LEN])


@dataclass(frozen=True)
class Critical:
    """What no action may ever touch: process names, interface names and addresses (networks)."""

    processes: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()

    def process_conflict(self, name: str) -> str | None:
        """The first critical process that a process named ``name`` can be (:func:`same_process_name`), or
        ``None``."""
        return next((c for c in self.processes if same_process_name(name, c)), None)

    def networks(self) -> list[Network]:
        """The critical addresses as normalised networks (:func:`normalize_network`)."""
        return [normalize_network(a) for a in self.addresses]

    def network_conflict(self, target: str) -> Network | None:
        """The first critical network that the address or network ``target`` overlaps, or ``None``."""
        net = normalize_network(target)
        return next((c for c in self.networks() if overlapping(net, c)), None)
