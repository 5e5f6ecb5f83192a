"""Egress bandwidth cap with ``tc``: a token-bucket root qdisc on one interface.

The qdisc carries a fixed handle (``7477:``, "tw"), so :meth:`TcRateLimit.is_applied` recognises ours
and :meth:`TcRateLimit.revert` deletes only ours; the interface falls back to its default qdisc.
"""

from __future__ import annotations

from tinywarden.respond.actuators.base import Actuator, CommandRunner, Targets, interface_names

HANDLE = "7477:"


class TcRateLimit(Actuator):
    """Cap egress on ``interface`` at ``rate`` (tc units, e.g. ``"256kbit"``) with a ``tbf`` qdisc."""

    def __init__(
        self, name: str, interface: str, rate: str, burst: str = "32kbit", runner: CommandRunner | None = None
    ) -> None:
        self.name = name
        self.interface = interface
        self.rate = rate
        self.burst = burst
        self.runner = runner or CommandRunner()

    def _cmd(self) -> list[str]:
        return ["tc", "qdisc", "add", "dev", self.interface, "root", "handle", HANDLE, "tbf",
                "rate", self.rate, "burst", self.burst, "latency", "400ms"]  # fmt: skip

    def apply(self) -> None:
        if not self.is_applied():
            self.runner.run(self._cmd())

    def revert(self) -> None:
        if self.is_applied():
            self.runner.run(["tc", "qdisc", "del", "dev", self.interface, "root", "handle", HANDLE])

    def is_applied(self) -> bool:
        out = self.runner.run(["tc", "qdisc", "show", "dev", self.interface, "root"]).stdout
        return any(line.split()[:3] == ["qdisc", "tbf", HANDLE] for line in out.splitlines())

    def describe(self) -> str:
        return f"cap egress on {self.interface} at {self.rate} ({' '.join(self._cmd())})"

    def targets(self) -> Targets:
        return Targets(interfaces=interface_names(self.runner, self.interface))
