"""Take a network interface down, and bring it back up on revert (only if it was up before)."""

from __future__ import annotations

from typing import Any

from tinywarden.respond.actuators.base import Actuator, ActuatorError, CommandRunner, Targets, interface_names


class InterfaceDown(Actuator):
    """``ip link set dev IFACE down``; revert restores the administrative state found at apply time."""

    def __init__(self, name: str, interface: str, runner: CommandRunner | None = None) -> None:
        self.name = name
        self.interface = interface
        self.runner = runner or CommandRunner()
        self._was_up: bool | None = None

    def admin_up(self) -> bool:
        """Whether the interface is administratively up (the ``UP`` flag of ``ip link``)."""
        out = self.runner.run(["ip", "-o", "link", "show", "dev", self.interface]).stdout
        try:
            flags = out.split("<", 1)[1].split(">", 1)[0].split(",")
        except IndexError:
            raise ActuatorError(f"ip link show dev {self.interface}: unexpected output {out!r}") from None
        return "UP" in flags

    def apply(self) -> None:
        if self._was_up is None:
            self._was_up = self.admin_up()
        if self.admin_up():
            self.runner.run(["ip", "link", "set", "dev", self.interface, "down"])

    def revert(self) -> None:
        # An interface that was already down before we acted stays down: we only undo our own change.
        if self._was_up and not self.admin_up():
            self.runner.run(["ip", "link", "set", "dev", self.interface, "up"])
        self._was_up = None

    def is_applied(self) -> bool:
        return self._was_up is not None and not self.admin_up()

    def describe(self) -> str:
        return f"bring interface {self.interface} down (ip link set dev {self.interface} down)"

    def targets(self) -> Targets:
        return Targets(interfaces=interface_names(self.runner, self.interface))

    def snapshot(self) -> dict[str, Any]:
        return {"was_up": self._was_up}

    def restore(self, memo: dict[str, Any]) -> None:
        self._was_up = memo.get("was_up")
