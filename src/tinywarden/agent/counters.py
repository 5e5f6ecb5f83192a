"""What the agent counts: samples, windows, incidents, faults, the fail-safe guard and bundles.

The counters are only ever added to; :class:`AgentCounters` also writes their sections of the status
document (:mod:`tinywarden.agent.status`).

>>> c = AgentCounters(); c.sample(5.0); c.sample(6.0); c.samples_seen, c.started_at, c.last_time
(2, 5.0, 6.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["AgentCounters"]


@dataclass
class AgentCounters:
    """The agent's running totals and the last fault, guard verdict and bundle refusal."""

    samples_seen: int = 0
    windows_scored: int = 0
    incidents: int = 0
    model_faults: int = 0
    guarded_windows: int = 0
    guard_violations: int = 0
    swaps: int = 0
    refused: int = 0
    spool_dropped: int = 0
    last_fault: str = ""
    last_guard: str = ""
    last_refusal: str = ""
    started_at: float | None = None
    last_time: float | None = None

    def sample(self, t: float) -> None:
        """One more sample, at ``t``."""
        if self.started_at is None:
            self.started_at = t
        self.last_time = t
        self.samples_seen += 1

    def fault(self, detail: str) -> None:
        self.model_faults += 1
        self.last_fault = detail

    def guarded(self, violation: bool | None, reason: str) -> None:
        """The fail-safe guard judged a window (``violation`` None: it could not)."""
        if violation is not None:
            self.guarded_windows += 1
            self.guard_violations += int(violation)
        self.last_guard = reason

    def refusal(self, reason: str) -> None:
        self.refused += 1
        self.last_refusal = reason

    def faults_doc(self, guard: str, engine_fault: bool, guarding: bool) -> dict[str, Any]:
        """The ``faults`` section of the status document."""
        return {
            "model_faults": self.model_faults,
            "last": self.last_fault,
            "engine_fault": engine_fault,
            "guard": guard,
            "guarding": guarding,
            "guarded_windows": self.guarded_windows,
            "guard_violations": self.guard_violations,
            "last_guard": self.last_guard,
        }

    def bundles_doc(self) -> dict[str, Any]:
        """The ``bundles`` section of the status document."""
        return {"swaps": self.swaps, "refused": self.refused, "last_refusal": self.last_refusal}
