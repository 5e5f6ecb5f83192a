"""Process actuators: suspend (SIGSTOP) and resume a process, or lower its CPU priority (renice).

A process is chosen by name (``psutil.Process.name()``) or, for tests and one-off use, by pid. The
actuator remembers the pids it acted on (and their old nice values), so revert touches exactly those
and no process that started later. Critical process names, pid 1 and this process and its ancestors
are never touched, whatever the policy says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psutil

from tinywarden.respond.actuators.base import Actuator, ActuatorError, Targets
from tinywarden.respond.critical import same_process_name


def _protected_pids() -> set[int]:
    me = psutil.Process()
    return {1, me.pid, *(p.pid for p in me.parents())}


class _ProcessActuator(Actuator):
    def __init__(
        self, name: str, process: str | None = None, pid: int | None = None, critical: Sequence[str] = ()
    ) -> None:
        if (process is None) == (pid is None):
            raise ActuatorError(f"{name}: give exactly one of process name or pid")
        self.name = name
        self.process = process
        self.pid = pid
        self.critical = tuple(critical)
        # pid -> (nice before we acted, process start time): the start time tells a reused pid apart.
        self._acted: dict[int, tuple[int, float]] = {}

    def _matches(self) -> list[psutil.Process]:
        """The live processes this action is for, minus everything that must never be touched."""
        protected = _protected_pids()
        if self.pid is not None:
            candidates = [psutil.Process(self.pid)] if psutil.pid_exists(self.pid) else []
        else:
            candidates = [p for p in psutil.process_iter(["name"]) if p.info["name"] == self.process]
        out = []
        for p in candidates:
            try:
                if p.pid in protected or any(same_process_name(p.name(), c) for c in self.critical):
                    continue
                out.append(p)
            except psutil.NoSuchProcess:
                continue
        return out

    def _acted_alive(self) -> list[psutil.Process]:
        out = []
        for pid, (_, started) in self._acted.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == started:
                    out.append(p)
            except psutil.NoSuchProcess:
                continue
        return out

    def targets(self) -> Targets:
        return Targets(processes=(self.process,) if self.process else ())

    def snapshot(self) -> dict[str, Any]:
        return {"acted": {str(k): list(v) for k, v in self._acted.items()}}

    def restore(self, memo: dict[str, Any]) -> None:
        self._acted = {int(k): (int(v[0]), float(v[1])) for k, v in memo.get("acted", {}).items()}

    def _what(self) -> str:
        return f"process {self.process!r}" if self.process else f"pid {self.pid}"


class ProcessSuspend(_ProcessActuator):
    """Stop (SIGSTOP) every matching process; revert continues (SIGCONT) the ones it stopped."""

    def apply(self) -> None:
        for p in self._matches():
            try:
                if p.pid not in self._acted:
                    p.suspend()
                    self._acted[p.pid] = (0, p.create_time())
            except psutil.NoSuchProcess:
                continue
            except psutil.AccessDenied as exc:
                raise ActuatorError(f"{self.name}: cannot suspend pid {p.pid}: access denied") from exc

    def revert(self) -> None:
        for p in self._acted_alive():
            try:
                p.resume()
            except psutil.NoSuchProcess:
                continue
            except psutil.AccessDenied as exc:
                raise ActuatorError(f"{self.name}: cannot resume pid {p.pid}: access denied") from exc
        self._acted.clear()

    def is_applied(self) -> bool:
        alive = self._acted_alive()
        try:
            return bool(alive) and all(p.status() == psutil.STATUS_STOPPED for p in alive)
        except psutil.NoSuchProcess:
            return False

    def describe(self) -> str:
        return f"suspend {self._what()} (SIGSTOP; SIGCONT on revert)"


class ProcessRenice(_ProcessActuator):
    """Set every matching process's nice value to ``nice``; revert restores each one's old value."""

    def __init__(
        self,
        name: str,
        process: str | None = None,
        pid: int | None = None,
        nice: int = 19,
        critical: Sequence[str] = (),
    ) -> None:
        super().__init__(name, process, pid, critical)
        self.nice = nice

    def apply(self) -> None:
        for p in self._matches():
            try:
                if p.pid not in self._acted:
                    old = p.nice()
                    p.nice(self.nice)
                    self._acted[p.pid] = (old, p.create_time())
            except psutil.NoSuchProcess:
                continue
            except psutil.AccessDenied as exc:
                raise ActuatorError(f"{self.name}: cannot renice pid {p.pid}: access denied") from exc

    def revert(self) -> None:
        for p in self._acted_alive():
            try:
                p.nice(self._acted[p.pid][0])
            except psutil.NoSuchProcess:
                continue
            except psutil.AccessDenied as exc:
                raise ActuatorError(
                    f"{self.name}: cannot restore nice of pid {p.pid}: access denied"
                ) from exc
        self._acted.clear()

    def is_applied(self) -> bool:
        alive = self._acted_alive()
        try:
            return bool(alive) and all(p.nice() == self.nice for p in alive)
        except psutil.NoSuchProcess:
            return False

    def describe(self) -> str:
        return f"renice {self._what()} to {self.nice} (old value restored on revert)"
