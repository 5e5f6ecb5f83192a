"""The policy's ``[critical]`` table: what no action may ever touch.

Its own module, below both the policy loader and the actuator catalog, so each can name it without
importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinywarden.respond.addresses import Network, normalize_network, overlapping

__all__ = ["Critical"]


@dataclass(frozen=True)
class Critical:
    """What no action may ever touch: process names, interface names and addresses (networks)."""

    processes: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()

    def networks(self) -> list[Network]:
        """The critical addresses as normalised networks (:func:`normalize_network`)."""
        return [normalize_network(a) for a in self.addresses]

    def network_conflict(self, target: str) -> Network | None:
        """The first critical network that the address or network ``target`` overlaps, or ``None``."""
        net = normalize_network(target)
        return next((c for c in self.networks() if overlapping(net, c)), None)
