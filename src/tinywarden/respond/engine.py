"""The response engine: drives the pure state machine (:mod:`.machine`) from a score stream and a clock,
carries out its events with actuators, writes the audit log and persists its state.

The engine needs nothing but scores ("higher = more anomalous", as every tinywarden detector) and a
threshold; it imports no detector or feature code. Time comes from an injectable :class:`Clock` (or
an explicit ``at=``), so tests and ``tinywarden respond`` run in simulated time. Before each input
the engine fires every timer that fell due since the last one, at its own time, so a replayed stream
gives the same timeline as a live run.

Fail-safe guard. When the model path faults on a window, a caller that still has the raw window
(the agent, ``tinywarden respond --telemetry``) asks the model file's rule-based bounds for a verdict
and feeds it with :meth:`ResponseEngine.observe_guarded`: a violation counts as a detection for every
tier and a clean window as a quiet one, so the device stays protected; the events it causes say
``failsafe_bounds``. A guard that cannot judge leaves the usual fault rules in charge (docs/policy.md).

Failed reverts. The machine leaves a tier whether or not its actions' reverts worked; an action whose revert
failed (a busy ``nft``, a transient ``ip`` or ``tc`` error) would otherwise stay on the device for good, against
the dead-man promise. The engine keeps such actions in :attr:`ResponseEngine.unreverted` (and in its state file)
and tries each revert again at the inputs that follow, after :data:`REVERT_RETRY_S` doubling up to
:data:`REVERT_RETRY_MAX_S`, each try audited (``reason_code`` ``revert_retry``), until it goes through or a tier
applies the action again.

Crash safety: with ``state_path`` the machine state, the actuators' memory and the number of score
windows seen are written atomically (temporary file, fsync, rename) after every input; a new engine given the
same path continues where the old one stopped and re-applies any action of the active tiers that is
not in place any more (actuators are idempotent, so repeating one is harmless).

>>> from tinywarden.respond.policy import parse_policy
>>> policy = parse_policy('''
... [policy]
... name = "doc"
... version = "1"
... [actions.notify]
... type = "log"
... message = "anomaly"
... [tiers.alert]
... actions = ["notify"]
... consecutive = 2
... deescalate_after_s = 30
... ''')
>>> engine = ResponseEngine(policy, threshold=1.0)
>>> [e.event for e in engine.observe(2.0, at=0.0) + engine.observe(2.0, at=1.0)]
['apply']
>>> [(e.time, e.event, e.reason_code) for e in engine.observe(0.1, at=40.0)]
[(31.0, 'revert', 'normal')]
"""

from __future__ import annotations

import json
import math
import os
import time as _time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from tinywarden.audit import AuditLog
from tinywarden.errors import ConfigError
from tinywarden.fileio import NotRegularFile, atomic_write, read_regular
from tinywarden.respond import machine as m
from tinywarden.respond.actuators import Actuator, ActuatorError, actuator_for, build_actuators
from tinywarden.respond.critical import Critical
from tinywarden.respond.policy import ActionSpec, Policy, PolicyError, action_doc, parse_action

STATE_FORMAT = 1
#: Largest engine state file read back (a few KB in practice; the actuators' memory of the pids they acted on).
MAX_STATE_BYTES = 16 << 20
#: ``reason_code`` of an escalation caused by the fail-safe bounds guard rather than the model.
REASON_FAILSAFE_BOUNDS = "failsafe_bounds"
#: ``reason_code`` of the notes when the guard starts judging (the model path faulted) and stops (it recovered).
REASON_GUARD_ENGAGED = "guard_engaged"
REASON_GUARD_RELEASED = "guard_released"
#: ``reason_code`` of the one note saying a policy's ``min_confidence`` is ignored (the model has no likelihood).
REASON_NO_CONFIDENCE = "no_confidence"
#: ``reason_code`` of the note saying the wall clock stepped forward and the timers were moved with it.
REASON_CLOCK_FORWARD = "clock_forward"
#: ``reason_code`` of a revert tried again after it had failed (see :attr:`ResponseEngine.unreverted`).
REASON_REVERT_RETRY = "revert_retry"
#: ``reason_code`` of an action found in place at start that no engine state accounts for
#: (:meth:`ResponseEngine.sweep`).
REASON_LEFTOVER = "leftover"
#: Seconds (engine time) before a failed revert is tried again; the wait doubles after each failure, up to
#: :data:`REVERT_RETRY_MAX_S`, so a revert that keeps failing costs a few audit records an hour, not one a window.
REVERT_RETRY_S = 10.0
REVERT_RETRY_MAX_S = 600.0


class StateFileError(ConfigError):
    """An engine state file that cannot be used with this policy and threshold (or is unreadable)."""


class Clock(Protocol):
    """Where the engine's time comes from: seconds as a float."""

    def now(self) -> float: ...


class SystemClock:
    """Wall-clock seconds (``time.time``); the engine itself copes with the clock jumping back."""

    def now(self) -> float:
        return _time.time()


class SimulatedClock:
    """A clock that only moves when told to, for tests and replays.

    >>> c = SimulatedClock(100.0); c.advance(5); c.now()
    105.0
    """

    def __init__(self, start: float = 0.0) -> None:
        self.t = float(start)

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def set(self, t: float) -> None:
        self.t = float(t)


@dataclass(frozen=True)
class ActionEvent:
    """One line of the action timeline.

    ``event`` is ``"apply"``, ``"revert"`` or ``"note"`` (a fault, recovery, clock jump or operator
    command: nothing runs). ``tier`` is the engine's tier after the event (0 none, 1 alert, 2
    constrain, 3 harden); ``action_tier`` the tier the action belongs to. ``status`` says what the
    actuator did: ``done``, ``failed: ...`` or ``refused: ...`` (an action that would touch a
    critical function).
    """

    time: float
    tier: int
    action_tier: int
    action: str | None
    event: str
    reason: str
    reason_code: str
    status: str = "done"

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-able dict (the ``--json`` timeline line)."""
        return asdict(self)


def compile_tables(policy: Policy, threshold: float) -> m.Tables:
    """The policy's numbers for one detector ``threshold``, as the machine's plain :class:`~.machine.Tables`.

    A tier's bar is ``threshold + margin * |threshold|``.
    """
    if not math.isfinite(threshold):
        raise ConfigError(f"threshold must be a finite number (got {threshold!r})")
    if threshold == 0 and any(t.margin > 0 for t in policy.tiers):
        raise ConfigError(
            f"{policy.source}: tier margins are relative to |threshold|; a threshold of 0 cannot carry them"
        )
    tiers = policy.tiers
    z = (0.0,)
    return m.Tables(
        bar=(threshold, *(threshold + t.margin * abs(threshold) for t in tiers)),  # type: ignore[arg-type]
        k=(0, *(t.k for t in tiers)),  # type: ignore[arg-type]
        n=(0, *(t.n for t in tiers)),  # type: ignore[arg-type]
        min_dwell=z + tuple(t.min_dwell_s for t in tiers),  # type: ignore[arg-type]
        deescalate_after=z + tuple(t.deescalate_after_s for t in tiers),  # type: ignore[arg-type]
        dead_man=z + tuple(t.dead_man_s for t in tiers),  # type: ignore[arg-type]
        tier_actions=((), *(policy.tier_action_indices(i) for i in range(1, 4))),
        fail_safe_tier=policy.fail_safe_tier,
        fault_tolerance=policy.fault_tolerance,
        telemetry_timeout=policy.telemetry_timeout_s,
        watchdog_timeout=policy.watchdog_timeout_s,
    )


def critical_conflict(actuator: Actuator, critical: Critical) -> str | None:
    """What critical function ``actuator`` would touch, or ``None``; the engine's run-time double check."""
    t = actuator.targets()
    for p in t.processes:
        c = critical.process_conflict(p)
        if c is not None:
            return f"critical process {c!r}"
    for i in t.interfaces:
        if i in critical.interfaces:
            return f"critical interface {i!r}"
    for a in t.addresses:
        c = critical.network_conflict(a)
        if c is not None:
            return f"critical address {c}"
    return None


@dataclass(frozen=True)
class _GuardInput:
    """The window being fed is the fail-safe guard's verdict, not a model score (see ``observe_guarded``)."""

    violation: bool
    fault: str
    detail: str


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _unnum(x: float | None, default: float) -> float:
    return default if x is None else float(x)


def _count(x: object) -> bool:
    """A JSON integer >= 0 (not a bool)."""
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _finite(x: object) -> bool:
    """A JSON number (not a bool) that is finite."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _why(exc: BaseException) -> str:
    """What went wrong while reading a state file, in a few words (a RecursionError's text is long)."""
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]


class _Orphan(NamedTuple):
    """An action of a replaced policy whose revert failed at the swap: retried at ``due``, then after ``wait``.
    ``spec`` and ``critical`` (that policy's) rebuild it after a restart; ``None`` when it had none to give."""

    act: Actuator
    due: float
    wait: float
    spec: ActionSpec | None = None
    critical: Critical = Critical()


Rebuild = Callable[[ActionSpec, Critical], Actuator]
"""``rebuild(spec, critical)``: the actuator of an action of a replaced policy that a state file names."""


def dry_run_rebuild(spec: ActionSpec, critical: Critical) -> Actuator:
    """The default :data:`Rebuild`, as the default actuators: a dry-run stand-in that touches nothing."""
    return actuator_for(spec, critical, dry_run=True)


def revert_in_place(act: Actuator) -> str | None:
    """Revert ``act`` if the system shows it applied: ``None`` when it is not in place, else ``"done"`` or
    ``"failed: <why>"`` (a failure to tell counts as a failed revert)."""
    try:
        if not act.is_applied():
            return None
        act.revert()
        return "done"
    except ActuatorError as exc:
        return f"failed: {exc}"


class ResponseEngine:
    """Runs a :class:`~tinywarden.respond.policy.Policy` against a stream of detector scores.

    ``actuators`` (one per policy action, in order) defaults to dry-run stand-ins; ``audit`` receives
    a record for every event; ``state_path`` makes the engine survive restarts (see the module
    docstring); ``model_id`` names the model in audit records. ``rebuild`` makes the actuator of an action of a
    replaced policy whose revert is still owed when a state file names one (:meth:`adopt_unreverted`); give one
    that builds as ``actuators`` were built (real or dry run), by default a dry-run stand-in.
    """

    def __init__(
        self,
        policy: Policy,
        threshold: float,
        *,
        actuators: Sequence[Actuator] | None = None,
        clock: Clock | None = None,
        audit: AuditLog | None = None,
        model_id: str = "unknown",
        state_path: str | Path | None = None,
        rebuild: Rebuild = dry_run_rebuild,
    ) -> None:
        self.policy = policy
        self.rebuild = rebuild
        self.threshold = float(threshold)
        self.tables = compile_tables(policy, self.threshold)
        self.actuators = list(actuators) if actuators is not None else build_actuators(policy, dry_run=True)
        if len(self.actuators) != len(policy.actions):
            raise ConfigError(
                f"{len(self.actuators)} actuators given for {len(policy.actions)} policy actions"
            )
        self.clock: Clock = clock or SystemClock()
        self.audit = audit
        self.model_id = model_id
        self.state_path = Path(state_path) if state_path is not None else None
        self.state = m.MachineState()
        self.windows = 0
        self.recent: deque[float] = deque(maxlen=max(t.n for t in policy.tiers))
        self.last_fault = ""
        # Windows judged by the fail-safe guard since the model path last produced a score.
        self.guarded = 0
        self._guard: _GuardInput | None = None
        self._confidence: float | None = None  # of the window being observed, for its audit records
        self._confidence_noted = False
        # Action index -> (its tier, engine time of the next try, the wait after that one): reverts that failed.
        self._unreverted: dict[int, tuple[int, float, float]] = {}
        # Actuators of a replaced policy whose revert failed at the swap: (actuator, next try, wait after it).
        self._orphans: list[_Orphan] = []
        self.restored = False  # whether a state file was taken back (see sweep)
        if self.state_path is not None and os.path.lexists(self.state_path):  # a link is refused, even dangling
            self._load()
            self._reconcile()
            self.restored = True

    @property
    def tier(self) -> int:
        """The current tier: 0 none, 1 alert, 2 constrain, 3 harden."""
        return self.state.tier

    @property
    def unreverted(self) -> tuple[str, ...]:
        """The actions whose revert failed and is still to be retried (module docstring), in policy order, then
        those of a replaced policy (:meth:`adopt_unreverted`)."""
        return tuple(self.actuators[i].name for i in sorted(self._unreverted)) + tuple(o.act.name for o in
                                                                                     self._orphans)

    def adopt_unreverted(
        self, actuators: Sequence[Actuator], at: float | None = None, policy: Policy | None = None
    ) -> None:
        """Take over actuators of the policy this engine replaces whose revert failed at the swap: they are
        retried as this policy's own failed reverts are (tier 0 in their records), until each goes through.
        With ``policy`` (the replaced one), the state file holds each one's action (type, parameters) and that
        policy's ``[critical]`` table, so an engine restarted on the file rebuilds it (``rebuild``) and retries on;
        an actuator ``policy`` has no action for lives in memory only, and a restart forgets it."""
        t = (self.clock.now() if at is None else float(at)) + self.state.skew
        for a in actuators:
            spec = next((x for x in policy.actions if x.name == a.name), None) if policy is not None else None
            critical = policy.critical if policy is not None else Critical()
            self._orphans.append(_Orphan(a, t + REVERT_RETRY_S, 2 * REVERT_RETRY_S, spec, critical))
        self.save()

    def sweep(self, at: float | None = None) -> list[ActionEvent]:
        """Revert every action of this policy found in place by an engine that has none applied (tier 0): what a
        run before it left, that no state file now accounts for (one set aside as unusable, or written for the
        bundle this one replaced while the agent was stopped). Such an action would otherwise stay for good, no
        dead-man to lift it. A revert that fails is retried as usual (:attr:`unreverted`). Only what an actuator
        can see on the system is found (an nftables table, a qdisc); a stopped process or a downed interface
        whose record was lost is not. Call it once, at start."""
        if self.state.tier != 0:
            return []
        t = self.clock.now() if at is None else float(at)
        out: list[ActionEvent] = []
        for idx, act in enumerate(self.actuators):
            if critical_conflict(act, self.policy.critical) is not None:
                continue
            status = revert_in_place(act)
            if status is None:
                continue
            tier = min(tr for tr in range(1, m.N_TIERS + 1) if idx in self.tables.tier_actions[tr])
            if status != "done":
                self._unreverted[idx] = (tier, t + self.state.skew + REVERT_RETRY_S, 2 * REVERT_RETRY_S)
            ev = ActionEvent(t, 0, tier, act.name, "revert", "found in place at start with no engine state that "
                             "accounts for it (a run before this one left it)", REASON_LEFTOVER, status)
            self._audit(ev)
            out.append(ev)
        self.save()
        return out

    def take_over(self, old: ResponseEngine) -> None:
        """Continue ``old``'s run (same policy, same actuators: a hot swap of the model alone): its machine state,
        window count and failed reverts still to retry (an earlier policy's too)."""
        self.state = old.state.copy()
        self.windows = old.windows
        self._unreverted = dict(old._unreverted)
        self._orphans = list(old._orphans)
        self.save()

    def observe(self, score: float, at: float | None = None, confidence: float | None = None) -> list[ActionEvent]:
        """Feed one window's score (NaN/inf counts as a fault); return the events it caused.

        ``confidence`` is the window's calibrated confidence in [0, 1] (:mod:`tinywarden.likelihood`),
        or ``None`` for a model without a likelihood. A tier with ``min_confidence`` counts the window
        only when the confidence reaches it; without a confidence its ``min_confidence`` is ignored
        (the engine's behaviour before confidences existed) and a note says so once. Audit records
        of the events carry the confidence.
        """
        try:
            value = float(score)
        except (TypeError, ValueError):
            value = math.nan
        if math.isfinite(value):
            self.recent.append(value)
        else:
            self.last_fault = f"non-finite score {score!r}"
        self._confidence = confidence
        unconfident = 0
        pre: list[ActionEvent] = []
        gated = [(t, spec.min_confidence) for t, spec in enumerate(self.policy.tiers, 1)
                 if spec.min_confidence is not None]
        if gated and (confidence is None or not math.isfinite(confidence)):
            if not self._confidence_noted:
                self._confidence_noted = True
                pre.append(self._engine_note(self.clock.now() if at is None else float(at), REASON_NO_CONFIDENCE,
                                             "this model has no calibrated confidence: tier min_confidence is "
                                             "ignored (scores alone decide, as before confidences existed)"))
        else:
            for t, bar in gated:
                if confidence is not None and confidence < bar:
                    unconfident |= 1 << t
        try:
            return pre + self._input(m.INPUT_SCORE, at, value, unconfident=unconfident)
        finally:
            self._confidence = None

    def observe_call(self, compute: Callable[[], float], at: float | None = None) -> list[ActionEvent]:
        """Run ``compute`` (the model/feature path) and feed its score; an exception becomes a fault."""
        try:
            score = compute()
        except Exception as exc:  # any failure of the model path must reach the fail-safe, not the caller
            return self.report_fault(f"{type(exc).__name__}: {exc}", at)
        return self.observe(score, at)

    def report_fault(self, detail: str, at: float | None = None) -> list[ActionEvent]:
        """Record that the model or feature path failed for this window (``detail`` says how)."""
        self.last_fault = detail
        return self._input(m.INPUT_FAULT, at)

    def observe_guarded(
        self,
        violation: bool | None,
        fault: str,
        at: float | None = None,
        detail: str = "",
        *,
        score_fault: bool = False,
    ) -> list[ActionEvent]:
        """Feed the fail-safe guard's verdict on a window whose model path faulted (``fault`` says how).

        ``violation`` True counts as a window above every tier's bar, False as a quiet window (not above
        the threshold); either way the window is judged, so it does not count toward ``fault_tolerance``.
        ``None`` means the guard could not judge (``detail`` says why): the window is then a fault as
        without a guard, a non-finite score (``score_fault``) or a model failure.
        """
        if violation is None:
            self.last_fault = f"{fault}; fail-safe bounds cannot judge: {detail or 'no verdict'}"
            return self._input(m.INPUT_SCORE if score_fault else m.INPUT_FAULT, at)
        self.last_fault = fault
        # Stand-in scores: strictly above every bar, or exactly the threshold (which is not above it).
        score = math.nextafter(max(self.tables.bar), math.inf) if violation else self.threshold
        return self._input(m.INPUT_SCORE, at, score, _GuardInput(bool(violation), fault, detail))

    def feed_watchdog(self, at: float | None = None) -> list[ActionEvent]:
        """Tell the engine the model/feature loop is alive (needed when ``watchdog_timeout_s`` > 0)."""
        return self._input(m.INPUT_FEED, at)

    def tick(self, at: float | None = None) -> list[ActionEvent]:
        """Let time pass with no input, firing any timer that fell due."""
        return self._input(m.INPUT_TICK, at)

    def clock_stepped(self, seconds: float, at: float | None = None) -> list[ActionEvent]:
        """The wall clock stepped ``seconds`` forward (an NTP step; the caller measured it against a monotonic
        clock) before the input at ``at``: every timer moves with it (:func:`.machine.shift`), so the step is
        neither missing telemetry nor a dead-man or de-escalation falling due; a note records it. A backward
        step needs no call: the machine holds its time monotonic (``skew``).
        """
        if not (math.isfinite(seconds) and seconds > 0):
            raise ConfigError(f"a clock step must be a finite number of seconds > 0 (got {seconds!r})")
        t = self.clock.now() if at is None else float(at)
        self.state = m.shift(self.state, seconds)
        out = [self._engine_note(t, REASON_CLOCK_FORWARD, f"wall clock stepped {seconds:g} s forward; timers moved "
                                                          "with it (no telemetry was missing for that long)")]
        self.save()
        return out

    def confirm(self, at: float | None = None) -> list[ActionEvent]:
        """Operator command: hold the current tier (no dead-man, no de-escalation) until :meth:`release`."""
        return self._input(m.INPUT_CONFIRM, at)

    def release(self, at: float | None = None) -> list[ActionEvent]:
        """Operator command: end a :meth:`confirm`.

        Dead-man timers restart now; normal scores seen during the hold count toward de-escalation.
        """
        return self._input(m.INPUT_RELEASE, at)

    def _input(
        self, kind: int, at: float | None, score: float = math.nan, guard: _GuardInput | None = None,
        unconfident: int = 0,
    ) -> list[ActionEvent]:
        t = self.clock.now() if at is None else float(at)
        if not math.isfinite(t):
            raise ConfigError(f"input time must be a finite number of seconds (got {at!r})")
        out: list[ActionEvent] = []
        # Each tick strictly advances or removes a timer, so a handful of rounds always suffices;
        # the bound only guards against a machine bug turning into a hang.
        for _ in range(4 * (m.N_TIERS + 2)):
            due = m.next_deadline(self.state, self.tables)
            if due > t + self.state.skew:
                break
            out += self._step(m.INPUT_TICK, max(due, self.state.last_time) - self.state.skew)
        if guard is not None:
            if self.guarded == 0:
                out.append(self._engine_note(t, REASON_GUARD_ENGAGED, (
                    f"model path faulted ({guard.fault}); the fail-safe bounds judge the raw windows until "
                    "it scores again"
                )))  # fmt: skip
            self.guarded += 1
        elif kind == m.INPUT_SCORE and math.isfinite(score) and self.guarded:
            out.append(self._engine_note(t, REASON_GUARD_RELEASED, (
                f"the model scores again; {self.guarded} window(s) were judged by the fail-safe bounds"
            )))  # fmt: skip
            self.guarded = 0
        self._guard = guard
        try:
            out += self._step(kind, t, score, unconfident)
        finally:
            self._guard = None
        out += self._retry_reverts()
        if kind in (m.INPUT_SCORE, m.INPUT_FAULT):
            self.windows += 1
        self.save()
        return out

    def _retry_reverts(self) -> list[ActionEvent]:
        """Try again each failed revert that is due and that no active tier holds (module docstring)."""
        out: list[ActionEvent] = []
        now = self.state.last_time
        held = {i for tier in range(1, self.state.tier + 1) for i in self.tables.tier_actions[tier]}
        for idx, (tier, due, wait) in sorted(self._unreverted.items()):
            if idx in held or now < due:
                continue
            act = self.actuators[idx]
            try:
                act.revert()
                status = "done"
                del self._unreverted[idx]
            except ActuatorError as exc:
                status = f"failed: {exc}"
                self._unreverted[idx] = (tier, now + wait, min(2 * wait, REVERT_RETRY_MAX_S))
            reason = "retried a revert that had failed" + ("" if status == "done" else f"; next try in {wait:g} s")
            ev = ActionEvent(now - self.state.skew, self.state.tier, tier, act.name, "revert", reason,
                             REASON_REVERT_RETRY, status)  # fmt: skip
            self._audit(ev)
            out.append(ev)
        left = []
        for orphan in self._orphans:
            act, due, wait = orphan.act, orphan.due, orphan.wait
            if now < due:
                left.append(orphan)
                continue
            try:
                act.revert()
                status = "done"
            except ActuatorError as exc:
                status = f"failed: {exc}"
                left.append(orphan._replace(due=now + wait, wait=min(2 * wait, REVERT_RETRY_MAX_S)))
            reason = ("retried the revert of an action of the replaced policy" +
                      ("" if status == "done" else f"; next try in {wait:g} s"))
            ev = ActionEvent(now - self.state.skew, self.state.tier, 0, act.name, "revert", reason,
                             REASON_REVERT_RETRY, status)  # fmt: skip
            self._audit(ev)
            out.append(ev)
        self._orphans = left
        return out

    def _engine_note(self, t: float, code: str, reason: str) -> ActionEvent:
        """A note of the engine's own (not the machine's), audited like the machine's notes."""
        ev = ActionEvent(max(t + self.state.skew, self.state.last_time) - self.state.skew, self.state.tier, 0,
                         None, "note", reason, code)  # fmt: skip
        self._audit(ev)
        return ev

    def _step(self, kind: int, t: float, score: float = math.nan, unconfident: int = 0) -> list[ActionEvent]:
        self.state, events = m.step(self.state, self.tables, kind, t, score, unconfident)
        return [self._carry_out(e) for e in events]

    def _carry_out(self, e: m.Event) -> ActionEvent:
        reason = self._explain(e)
        code = m.REASONS[e.reason]
        if self._guard is not None and e.reason == m.REASON_ESCALATE:
            code = REASON_FAILSAFE_BOUNDS
        when = e.time - self.state.skew
        if e.kind == m.EVENT_NOTE:
            ev = ActionEvent(when, e.tier, e.action_tier, None, "note", reason, code)
        else:
            act = self.actuators[e.action]
            verb = "apply" if e.kind == m.EVENT_APPLY else "revert"
            status = "done"
            conflict = critical_conflict(act, self.policy.critical)
            if conflict is not None:
                status = f"refused: would touch {conflict}"
            else:
                try:
                    act.apply() if verb == "apply" else act.revert()
                except ActuatorError as exc:
                    status = f"failed: {exc}"
                if verb == "revert" and status != "done":
                    self._unreverted[e.action] = (e.action_tier, e.time + REVERT_RETRY_S, 2 * REVERT_RETRY_S)
                else:  # reverted, or wanted again: an apply (even a failed one) leaves the revert to its tier
                    self._unreverted.pop(e.action, None)
            ev = ActionEvent(when, e.tier, e.action_tier, act.name, verb, reason, code, status)
        self._audit(ev)
        return ev

    def _explain(self, e: m.Event) -> str:
        tb, p = self.tables, self.policy
        t = e.action_tier
        r = e.reason
        g = self._guard
        if g is not None and r == m.REASON_ESCALATE:
            tier = p.tiers[t - 1]
            return (
                f"fail-safe bounds, not the model: {tier.k} of last {tier.n} windows anomalous, this one "
                f"judged by the bounds learned from normal data ({g.detail or 'a bound broken'}) because "
                f"the model path faulted ({g.fault})"
            )
        if g is not None and r == m.REASON_FAULT_CLEARED:
            return "the fail-safe bounds judge the raw windows again; fault cleared, the tier follows the normal rules"
        if r == m.REASON_ESCALATE:
            tier = p.tiers[t - 1]
            return (
                f"{tier.k} of last {tier.n} windows above {tb.bar[t]:.6g} "
                f"(threshold {self.threshold:.6g} + {tier.margin:g} x |threshold|)"
            )
        if r == m.REASON_NORMAL:
            return f"no window above threshold {self.threshold:.6g} for {tb.deescalate_after[t]:g} s"
        if r == m.REASON_DEAD_MAN:
            return f"dead-man: {p.tiers[t - 1].name} not renewed by detection within {tb.dead_man[t]:g} s"
        if r == m.REASON_FAULT_SCORE:
            return f"fail-safe: {tb.fault_tolerance} non-finite scores in a row ({self.last_fault})"
        if r == m.REASON_FAULT_MODEL:
            n = tb.fault_tolerance
            return f"fail-safe: model/feature path failed {n} times in a row ({self.last_fault})"
        if r == m.REASON_FAULT_TELEMETRY:
            return f"fail-safe: no telemetry for {tb.telemetry_timeout:g} s"
        if r == m.REASON_FAULT_WATCHDOG:
            return f"fail-safe: watchdog not fed for {tb.watchdog_timeout:g} s"
        if r == m.REASON_FAULT_CLEARED:
            return "finite scores again; fault cleared, the tier now follows the normal rules"
        if r == m.REASON_CLOCK_BACKWARDS:
            return f"clock went backwards; engine time held monotonic (skew now {self.state.skew:g} s)"
        if r == m.REASON_OPERATOR_CONFIRM:
            return "operator confirmed the tier; held until released"
        if r == m.REASON_OPERATOR_RELEASE:
            return "operator released the tier; timers restart"
        return m.REASONS[r]

    def _audit(self, ev: ActionEvent) -> None:
        if self.audit is None:
            return
        g = self._guard
        guard = {} if g is None else {"guard": {"violation": g.violation, "detail": g.detail, "fault": g.fault}}
        c = self._confidence
        conf = {} if c is None else {"confidence": c if math.isfinite(c) else None}
        self.audit.append(
            "action" if ev.event != "note" else "note",
            {
                **ev.to_dict(),
                "scores": list(self.recent),
                "threshold": self.threshold,
                "bars": list(self.tables.bar),
                "policy": self.policy.name,
                "policy_version": self.policy.version,
                "model_id": self.model_id,
                **guard,
                **conf,
            },
            time=ev.time,
        )

    # Persistence -------------------------------------------------------------------------------

    def _state_doc(self) -> dict[str, Any]:
        s = self.state
        machine = asdict(s)
        machine["last_anomalous"] = _num(s.last_anomalous)
        machine["deadline"] = [_num(d) for d in s.deadline]
        return {
            "format": STATE_FORMAT,
            "policy": self.policy.name,
            "policy_version": self.policy.version,
            "threshold": self.threshold,
            "model_id": self.model_id,
            "windows": self.windows,
            "recent": list(self.recent),
            "last_fault": self.last_fault,
            "guarded": self.guarded,
            "machine": machine,
            "actuators": {a.name: a.snapshot() for a in self.actuators},
            "unreverted": {self.actuators[i].name: tier for i, (tier, _, _) in sorted(self._unreverted.items())},
            "orphans": [{**action_doc(o.spec, o.critical), "memo": o.act.snapshot()} for o in self._orphans
                        if o.spec is not None],
        }

    def save(self) -> None:
        """Write the state file atomically (no-op without ``state_path``)."""
        if self.state_path is None:
            return
        path = self.state_path
        try:
            atomic_write(path, json.dumps(self._state_doc(), allow_nan=False))
        except OSError as exc:
            raise StateFileError(f"{path}: cannot write engine state ({exc.strerror})") from exc

    def _load(self) -> None:
        """Take the state file back, or raise :class:`StateFileError` (never anything else: a file that is torn,
        edited or written by a newer version must reach the caller's set-aside path, not stop it)."""
        path = self.state_path
        assert path is not None
        try:
            # A regular file only (fileio.read_regular): `respond --state PATH` as root at a path others can write
            # read through a planted link, and hung on a FIFO or on /dev/zero.
            doc = json.loads(read_regular(path, MAX_STATE_BYTES).decode("utf-8"))
            if doc.get("format") != STATE_FORMAT:
                raise StateFileError(f"{path}: format {doc.get('format')!r}, expected {STATE_FORMAT}")
            mach = dict(doc["machine"])
        except NotRegularFile as exc:
            raise StateFileError(f"{path}: not a regular file ({exc}); refusing to use it as engine state") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise StateFileError(
                f"{path}: unreadable engine state ({_why(exc)}); move it aside to start afresh"
            ) from None
        if doc.get("policy_version") != self.policy.version or doc.get("policy") != self.policy.name:
            raise StateFileError(
                f"{path}: written for policy {doc.get('policy')!r} version {doc.get('policy_version')!r}, "
                f"not {self.policy.name!r} version {self.policy.version!r}; move it aside to start afresh"
            )
        if doc.get("threshold") != self.threshold:
            raise StateFileError(
                f"{path}: written for threshold {doc.get('threshold')!r}, not {self.threshold!r}"
            )
        try:
            self.state = m.MachineState(
                started=int(mach["started"]),
                tier=int(mach["tier"]),
                entered_at=float(mach["entered_at"]),
                last_time=float(mach["last_time"]),
                skew=float(mach["skew"]),
                last_input=float(mach["last_input"]),
                last_feed=float(mach["last_feed"]),
                last_anomalous=_unnum(mach["last_anomalous"], -math.inf),
                history=[int(h) for h in mach["history"]],
                deadline=[_unnum(d, math.inf) for d in mach["deadline"]],
                fault=int(mach["fault"]),
                fault_streak=int(mach["fault_streak"]),
                pinned=int(mach["pinned"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise StateFileError(
                f"{path}: machine state field missing or wrong ({_why(exc)}); move it aside to start afresh"
            ) from None
        problem = m.state_problem(self.state, self.tables)
        if problem is not None:
            raise StateFileError(
                f"{path}: machine state breaks an invariant: {problem}; move it aside to start afresh"
            )
        windows, recent, last_fault = doc.get("windows", 0), doc.get("recent", []), doc.get("last_fault", "")
        guarded, memos, pending = doc.get("guarded", 0), doc.get("actuators", {}), doc.get("unreverted", {})
        index = {a.name: i for i, a in enumerate(self.actuators)}
        for key, bad in (
            ("windows", not _count(windows)),
            ("guarded", not _count(guarded)),
            ("recent", not isinstance(recent, list) or not all(_finite(x) for x in recent)),
            ("last_fault", not isinstance(last_fault, str)),
            ("actuators", not isinstance(memos, dict)),
            ("unreverted", not isinstance(pending, dict) or not all(
                name in index and _count(tier) and 1 <= tier <= m.N_TIERS for name, tier in pending.items())),
        ):
            if bad:
                raise StateFileError(
                    f"{path}: field {key!r} is not what the engine writes; move it aside to start afresh"
                )
        before = {a.name: a.snapshot() for a in self.actuators}
        try:
            for a in self.actuators:
                if isinstance(memos.get(a.name), dict):
                    a.restore(memos[a.name])
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError, IndexError) as exc:
            for a in self.actuators:  # the caller may build a fresh engine on these very actuators
                a.restore(before[a.name])
            raise StateFileError(
                f"{path}: actuator memory is wrong ({_why(exc)}); move it aside to start afresh"
            ) from None
        self.windows, self.guarded, self.last_fault = windows, guarded, last_fault
        self.recent.extend(float(x) for x in recent)
        # Retried at the first input: whatever wait was running before the restart is over.
        self._unreverted = {index[name]: (tier, -math.inf, REVERT_RETRY_S) for name, tier in pending.items()}
        self._orphans = self._load_orphans(path, doc.get("orphans", []))

    def _load_orphans(self, path: Path, docs: Any) -> list[_Orphan]:
        """The actions of replaced policies still to revert that the state file names, each checked as a policy's
        action is (:func:`~tinywarden.respond.policy.parse_action`) and rebuilt with :attr:`rebuild`."""
        if not isinstance(docs, list):
            raise StateFileError(
                f"{path}: field 'orphans' is not what the engine writes; move it aside to start afresh"
            )
        out = []
        for d in docs:
            try:
                if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not isinstance(d.get("memo"), dict):
                    raise ValueError("not an action with a name and a memory")
                spec, critical = parse_action(d["name"], d.get("action"), d.get("critical"), source="orphans")
                act = self.rebuild(spec, critical)
                act.restore(d["memo"])
            except (PolicyError, ActuatorError, KeyError, TypeError, ValueError, OverflowError, AttributeError,
                    IndexError) as exc:
                raise StateFileError(
                    f"{path}: an action of a replaced policy still to revert is wrong ({_why(exc)}); move it aside "
                    "to start afresh") from None
            out.append(_Orphan(act, -math.inf, REVERT_RETRY_S, spec, critical))
        return out

    def _reconcile(self) -> None:
        """After a restart, put back any action of an active tier that is no longer in place."""
        for tier in range(1, self.state.tier + 1):
            for idx in self.tables.tier_actions[tier]:
                if m.held_below(self.tables, tier, idx):
                    continue  # a lower tier's action: checked with that tier
                act = self.actuators[idx]
                if critical_conflict(act, self.policy.critical) is not None:
                    continue
                try:
                    if act.is_applied():
                        continue
                    act.apply()
                    status = "done"
                except ActuatorError as exc:
                    status = f"failed: {exc}"
                self._audit(
                    ActionEvent(
                        self.state.last_time - self.state.skew,
                        self.state.tier,
                        tier,
                        act.name,
                        "apply",
                        "restart: re-applied an action of the active tier",
                        "restart",
                        status,
                    )
                )
