"""Actuators that only record: the ``log`` action type, and the dry run that stands in for any action.

A dry run is the default: :class:`DryRunActuator` records what the real actuator *would* do (its
:meth:`~tinywarden.respond.actuators.base.Actuator.describe` line) and remembers whether it is
"applied", so a replay shows the exact timeline without changing the machine it runs on.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from tinywarden.respond.actuators.base import Actuator, Targets

log = logging.getLogger("tinywarden.respond")
RECORDS_KEPT = 256


class LogActuator(Actuator):
    """The ``log`` action: writes its message to the ``tinywarden.respond`` logger; changes nothing.

    >>> a = LogActuator("notify", "beaconing to an unknown host")
    >>> a.apply(); a.is_applied(), list(a.records)
    (True, ['apply notify: beaconing to an unknown host'])
    """

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self.message = message
        # the newest lines only: a long-running agent must not grow; the audit log keeps every event
        self.records: deque[str] = deque(maxlen=RECORDS_KEPT)
        self._applied = False

    def _record(self, verb: str) -> None:
        line = f"{verb} {self.name}: {self.describe()}"
        self.records.append(line)
        log.info("%s", line)

    def apply(self) -> None:
        if not self._applied:
            self._applied = True
            self._record("apply")

    def revert(self) -> None:
        if self._applied:
            self._applied = False
            self._record("revert")

    def is_applied(self) -> bool:
        # There is no system state to look at: the record of having logged *is* the state.
        return self._applied

    def describe(self) -> str:
        return self.message

    def snapshot(self) -> dict[str, Any]:
        return {"applied": self._applied}

    def restore(self, memo: dict[str, Any]) -> None:
        self._applied = bool(memo.get("applied", False))


class DryRunActuator(LogActuator):
    """Stands in for a real actuator: records "would ..." lines, touches nothing."""

    def __init__(self, name: str, description: str, targets: Targets = Targets()) -> None:
        super().__init__(name, description)
        self._targets = targets

    def _record(self, verb: str) -> None:
        super()._record(f"would {verb}")

    def targets(self) -> Targets:
        return self._targets
