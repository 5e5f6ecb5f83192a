"""The response state machine as one pure function over plain records: the part the C emitter mirrors.

:func:`step` takes a :class:`MachineState`, the policy compiled to :class:`Tables` and one input, and
returns the next state and the events it caused. Everything in both records is an integer or a float
and every action is an index into the policy's action table, so the generated C module can hold the
same struct and run the same function line for line (``tw_respond_step``). Nothing here reads a
clock, a file or an actuator: the caller passes the time in and carries out the events.

Rules, in the order :func:`step` applies them at time ``t``:

1. Time never runs backwards. A timestamp before the last one adds the difference to ``skew`` so the
   engine's own time ("effective time") stays monotonic, and a ``CLOCK`` note is emitted.
2. Timers. Telemetry missing for ``telemetry_timeout`` or the watchdog unfed for ``watchdog_timeout``
   is a fault (rule 5). Unless the engine is faulted or an operator pinned the tier, the top tier's
   actions revert when its dead-man ``deadline`` passes, and the tier steps down one level after
   ``deescalate_after`` of normal scores (hysteresis).
3. A finite score shifts one bit per tier into ``history`` (1 when above that tier's ``bar``), renews
   the dead-man deadline of every active tier whose k-of-n still holds, and escalates one tier when the
   next tier's k-of-n holds and the current tier's ``min_dwell`` has passed.
4. A NaN/inf score or a model fault counts toward ``fault_tolerance`` consecutive faults.
5. A fault moves straight to the fail-safe tier (never down) and freezes timers until a finite
   score arrives again; then hysteresis and dead-man timers restart from that moment.
6. ``INPUT_CONFIRM`` pins the tier (no dead-man, no de-escalation); ``INPUT_RELEASE`` unpins it
   before the timers of rule 2 run and restarts the dead-man timers.

The history invariant: bit 0 of ``history[t]`` is the newest window; only the low ``n[t]`` bits count.

An action may belong to several tiers; it is held while any active tier lists it. Active tiers are always
``1..tier``, so that is a static rule (:func:`held_below`): entering tier ``t`` applies only the actions no
lower tier lists, and leaving it reverts only those, so a higher tier's dead-man or de-escalation never takes
away an action a lower, still active tier holds.

>>> tables = Tables(bar=(1.0, 1.0, 2.0, 3.0), k=(0, 1, 2, 2), n=(0, 1, 2, 2),
...                 min_dwell=(0.0, 0.0, 10.0, 10.0), deescalate_after=(0.0, 60.0, 60.0, 60.0),
...                 dead_man=(0.0, 0.0, 120.0, 120.0), tier_actions=((), (0,), (1,), (2,)),
...                 fail_safe_tier=2, fault_tolerance=3, telemetry_timeout=30.0, watchdog_timeout=0.0)
>>> s, ev = step(MachineState(), tables, INPUT_SCORE, 0.0, 1.5)
>>> s.tier, [(e.action, e.kind, e.reason) for e in ev]
(1, [(0, 1, 1)])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple

# Input kinds.
INPUT_SCORE = 0  # a detector score for one window (NaN/inf counts as a fault)
INPUT_FAULT = 1  # the model or feature path raised instead of producing a score
INPUT_TICK = 2  # time passes; only timers run
INPUT_FEED = 3  # the feature/model loop fed the watchdog
INPUT_CONFIRM = 4  # an operator confirmed the current tier: hold it until released
INPUT_RELEASE = 5  # an operator released a confirmed tier

# Event kinds.
EVENT_NOTE = 0  # no action runs; recorded for the audit log
EVENT_APPLY = 1
EVENT_REVERT = 2

# Reason codes: one list, so names and numbers cannot drift apart.
REASONS: tuple[str, ...] = (
    "none",
    "escalate",  # k-of-n windows above the tier's bar
    "normal",  # deescalate_after of normal scores
    "dead_man",  # dead-man deadline passed without renewal
    "fault_score",  # NaN/inf scores reached fault_tolerance
    "fault_model",  # model/feature exceptions reached fault_tolerance
    "fault_telemetry",  # no input for telemetry_timeout
    "fault_watchdog",  # watchdog not fed for watchdog_timeout
    "fault_cleared",  # a finite score after a fault
    "clock_backwards",  # a timestamp before the previous one
    "operator_confirm",
    "operator_release",
)
(
    REASON_NONE,
    REASON_ESCALATE,
    REASON_NORMAL,
    REASON_DEAD_MAN,
    REASON_FAULT_SCORE,
    REASON_FAULT_MODEL,
    REASON_FAULT_TELEMETRY,
    REASON_FAULT_WATCHDOG,
    REASON_FAULT_CLEARED,
    REASON_CLOCK_BACKWARDS,
    REASON_OPERATOR_CONFIRM,
    REASON_OPERATOR_RELEASE,
) = range(len(REASONS))

#: The reasons that can hold the engine in a fault (``MachineState.fault``).
FAULTS: tuple[int, ...] = (REASON_FAULT_SCORE, REASON_FAULT_MODEL, REASON_FAULT_TELEMETRY, REASON_FAULT_WATCHDOG)

N_TIERS = 3
_MASK32 = 0xFFFFFFFF
INF = math.inf


@dataclass(frozen=True)
class Tables:
    """The policy compiled for one threshold; index 0 of each per-tier tuple is unused ("no tier").

    ``bar[0]`` is the detector threshold itself (scores above it are "not normal"); ``bar[t]`` is the
    score a window must exceed to count toward tier ``t``. Times are seconds; 0 ``dead_man`` means no
    dead-man timer; 0 ``watchdog_timeout`` disables the watchdog. ``tier_actions[t]`` holds indices
    into the policy's action table.
    """

    bar: tuple[float, float, float, float]
    k: tuple[int, int, int, int]
    n: tuple[int, int, int, int]
    min_dwell: tuple[float, float, float, float]
    deescalate_after: tuple[float, float, float, float]
    dead_man: tuple[float, float, float, float]
    tier_actions: tuple[tuple[int, ...], ...]
    fail_safe_tier: int
    fault_tolerance: int
    telemetry_timeout: float
    watchdog_timeout: float

    @property
    def top_tier(self) -> int:
        """The highest tier that has actions (tiers above it are not defined by the policy)."""
        return max((t for t in range(1, N_TIERS + 1) if self.tier_actions[t]), default=0)


@dataclass
class MachineState:
    """Everything the engine remembers; a plain record of integers and floats.

    Times are effective (skew-corrected) seconds. Invariants (:func:`state_problem` checks them; every
    :func:`step` keeps them):

    * ``started`` is 0 or 1; while 0 the record is exactly ``MachineState()``;
    * ``0 <= tier <= tables.top_tier``; ``pinned`` is 0 or 1, and 0 when ``tier`` is 0;
    * ``fault`` is 0 or one of :data:`FAULTS`, and while it is set ``tier >= tables.fail_safe_tier``;
    * ``skew >= 0``; ``entered_at``, ``last_input`` and ``last_feed`` are finite and ``<= last_time``;
      ``last_anomalous`` is ``-inf`` (none yet) or finite and ``<= last_time``;
    * ``deadline[t]`` is ``inf`` (no dead-man) for ``t == 0`` and ``t > tier``; for ``1 <= t <= tier`` it is
      ``inf`` or, when the tier has a dead-man, at most ``last_time + dead_man[t]``;
    * ``history[0]`` is 0 and every ``history[t]`` a uint32; ``fault_streak`` is a uint32 (it saturates).
    """

    started: int = 0
    tier: int = 0
    entered_at: float = 0.0
    last_time: float = 0.0
    skew: float = 0.0
    last_input: float = 0.0
    last_feed: float = 0.0
    last_anomalous: float = -INF
    history: list[int] = field(default_factory=lambda: [0] * (N_TIERS + 1))
    deadline: list[float] = field(default_factory=lambda: [INF] * (N_TIERS + 1))
    fault: int = 0
    fault_streak: int = 0
    pinned: int = 0

    def copy(self) -> MachineState:
        """An independent copy (the lists are not shared)."""
        return replace(self, history=list(self.history), deadline=list(self.deadline))


def state_problem(state: MachineState, tables: Tables) -> str | None:
    """The first invariant of :class:`MachineState` that ``state`` breaks under ``tables``, or ``None``.

    A restored state file (or the C module's ``tw_response_t``) is checked with this before the machine runs
    on it, so a corrupt or hand-edited state is refused instead of driving the actuators.

    >>> tables = Tables(bar=(1.0,) * 4, k=(0, 1, 1, 1), n=(0, 1, 1, 1), min_dwell=(0.0,) * 4,
    ...                 deescalate_after=(0.0, 60.0, 60.0, 60.0), dead_man=(0.0,) * 4, tier_actions=((), (0,), (), ()),
    ...                 fail_safe_tier=0, fault_tolerance=3, telemetry_timeout=30.0, watchdog_timeout=0.0)
    >>> state_problem(MachineState(), tables) is None
    True
    >>> state_problem(MachineState(started=1, tier=2), tables)
    'tier 2 is not in 0..1'
    """
    s = state
    if len(s.history) != N_TIERS + 1 or len(s.deadline) != N_TIERS + 1:
        return f"history and deadline must hold {N_TIERS + 1} entries"
    if s.started not in (0, 1):
        return f"started {s.started} is not 0 or 1"
    if not s.started:
        return None if s == MachineState() else "a state that never started must be the initial one"
    if not 0 <= s.tier <= tables.top_tier:
        return f"tier {s.tier} is not in 0..{tables.top_tier}"
    if s.pinned not in (0, 1) or (s.pinned and not s.tier):
        return f"pinned {s.pinned} with tier {s.tier}"
    if s.fault and (s.fault not in FAULTS or s.tier < tables.fail_safe_tier):
        return f"fault {s.fault} with tier {s.tier} (fail-safe tier {tables.fail_safe_tier})"
    if not (math.isfinite(s.last_time) and 0 <= s.skew < INF):
        return f"last_time {s.last_time} or skew {s.skew} out of range"
    for name in ("entered_at", "last_input", "last_feed"):
        if not -INF < getattr(s, name) <= s.last_time:
            return f"{name} {getattr(s, name)} is not a time <= last_time {s.last_time}"
    if not (s.last_anomalous == -INF or -INF < s.last_anomalous <= s.last_time):
        return f"last_anomalous {s.last_anomalous} is after last_time {s.last_time}"
    for t in range(N_TIERS + 1):
        d = s.deadline[t]
        if d != INF and (t == 0 or t > s.tier or tables.dead_man[t] <= 0 or
                         not -INF < d <= s.last_time + tables.dead_man[t]):
            return f"deadline[{t}] {d} out of range"
        if not 0 <= s.history[t] <= (_MASK32 if t else 0):
            return f"history[{t}] {s.history[t]} out of range"
    if not 0 <= s.fault_streak <= _MASK32:
        return f"fault_streak {s.fault_streak} out of range"
    return None


class Event(NamedTuple):
    """One thing the caller must do or record: apply/revert ``action`` (an index) or a note (``-1``).

    ``tier`` is the engine's tier after the event; ``action_tier`` the tier the action belongs to.
    """

    time: float
    tier: int
    action_tier: int
    action: int
    kind: int
    reason: int


def k_of_n(state: MachineState, tables: Tables, tier: int) -> bool:
    """Whether at least ``k`` of the last ``n`` windows were above tier ``tier``'s bar."""
    window = state.history[tier] & ((1 << tables.n[tier]) - 1)
    return bin(window).count("1") >= tables.k[tier]


def held_below(tables: Tables, tier: int, action: int) -> bool:
    """Whether a tier below ``tier`` lists ``action``: then it is already in place whenever ``tier`` is
    entered and must stay in place when ``tier`` is left (the reference count of a shared action)."""
    return any(action in tables.tier_actions[t] for t in range(1, tier))


def _renew(s: MachineState, tables: Tables, tier: int, now: float) -> None:
    s.deadline[tier] = now + tables.dead_man[tier] if tables.dead_man[tier] > 0 else INF


def _note(s: MachineState, out: list[Event], now: float, reason: int) -> None:
    out.append(Event(now, s.tier, 0, -1, EVENT_NOTE, reason))


def _up(s: MachineState, tables: Tables, out: list[Event], now: float, to: int, reason: int) -> None:
    while s.tier < to:
        s.tier += 1
        for a in tables.tier_actions[s.tier]:
            if not held_below(tables, s.tier, a):
                out.append(Event(now, s.tier, s.tier, a, EVENT_APPLY, reason))
        _renew(s, tables, s.tier, now)
    s.entered_at = now


def _down(s: MachineState, tables: Tables, out: list[Event], now: float, reason: int) -> None:
    tier = s.tier
    for a in reversed(tables.tier_actions[tier]):
        if not held_below(tables, tier, a):
            out.append(Event(now, tier - 1, tier, a, EVENT_REVERT, reason))
    # Fresh evidence is needed to come back, so a reverted tier cannot bounce straight back up.
    s.history[tier] = 0
    s.deadline[tier] = INF
    s.tier = tier - 1
    s.entered_at = now
    if s.tier == 0:
        s.pinned = 0


def _fault(s: MachineState, tables: Tables, out: list[Event], now: float, reason: int) -> None:
    if s.fault:
        return
    s.fault = reason
    _note(s, out, now, reason)
    if s.tier < tables.fail_safe_tier:
        _up(s, tables, out, now, tables.fail_safe_tier, reason)


def step(
    state: MachineState, tables: Tables, kind: int, time: float, score: float = math.nan,
    unconfident: int = 0,
) -> tuple[MachineState, tuple[Event, ...]]:
    """Advance the machine by one input at (raw) ``time``; return the new state and its events.

    ``kind`` is one of the ``INPUT_*`` codes; ``score`` is only read for ``INPUT_SCORE``. Bit ``t`` of
    ``unconfident`` set means the window does not count toward tier ``t`` whatever its score (its
    confidence is below the tier's ``min_confidence``; the engine sets it, and so does the C module's
    ``tw_respond`` from the window's Q15 confidence). Pure: the input state is not modified, and the same
    state, tables and input always give the same result.
    """
    s = state.copy()
    out: list[Event] = []
    if not s.started:
        s.started = 1
        s.entered_at = s.last_time = s.last_input = s.last_feed = time
    now = time + s.skew
    if now < s.last_time:
        s.skew += s.last_time - now
        now = s.last_time
        _note(s, out, now, REASON_CLOCK_BACKWARDS)
    s.last_time = now

    # A release takes effect before the timers run, so a tier that is due to step down does so now.
    if kind == INPUT_RELEASE and s.pinned:
        s.pinned = 0
        for t in range(1, s.tier + 1):
            _renew(s, tables, t, now)
        _note(s, out, now, REASON_OPERATOR_RELEASE)

    # Timers, as of the moment this input arrives and before it takes effect.
    if not s.fault:
        if now - s.last_input >= tables.telemetry_timeout:
            _fault(s, tables, out, now, REASON_FAULT_TELEMETRY)
        elif tables.watchdog_timeout > 0 and now - s.last_feed >= tables.watchdog_timeout:
            _fault(s, tables, out, now, REASON_FAULT_WATCHDOG)
    if not s.fault and not s.pinned:
        while s.tier > 0 and s.deadline[s.tier] <= now:
            _down(s, tables, out, now, REASON_DEAD_MAN)
        if s.tier > 0 and now - max(s.last_anomalous, s.entered_at) >= tables.deescalate_after[s.tier]:
            _down(s, tables, out, now, REASON_NORMAL)

    if kind == INPUT_SCORE and math.isfinite(score):
        s.last_input = s.last_feed = now
        s.fault_streak = 0
        if s.fault:
            # Recovery restarts the hysteresis and dead-man clocks; the fail-safe tier stays for now.
            s.fault = 0
            s.last_anomalous = now
            _note(s, out, now, REASON_FAULT_CLEARED)
            for t in range(1, s.tier + 1):
                _renew(s, tables, t, now)
        if score > tables.bar[0]:
            s.last_anomalous = now
        for t in range(1, N_TIERS + 1):
            s.history[t] = ((s.history[t] << 1) | int(score > tables.bar[t] and not unconfident >> t & 1)) & _MASK32
        for t in range(1, s.tier + 1):
            if k_of_n(s, tables, t):
                _renew(s, tables, t, now)
        nxt = s.tier + 1
        if (
            nxt <= N_TIERS
            and tables.tier_actions[nxt]
            and k_of_n(s, tables, nxt)
            and (s.tier == 0 or now - s.entered_at >= tables.min_dwell[s.tier])
        ):
            _up(s, tables, out, now, nxt, REASON_ESCALATE)
    elif kind in (INPUT_SCORE, INPUT_FAULT):
        s.last_input = now
        s.fault_streak = min(s.fault_streak + 1, _MASK32)  # saturating, as the C module's uint32
        if s.fault_streak >= tables.fault_tolerance:
            _fault(s, tables, out, now, REASON_FAULT_SCORE if kind == INPUT_SCORE else REASON_FAULT_MODEL)
    elif kind == INPUT_FEED:
        s.last_feed = now
    elif kind == INPUT_CONFIRM and s.tier > 0 and not s.pinned:
        s.pinned = 1
        _note(s, out, now, REASON_OPERATOR_CONFIRM)
    return s, tuple(out)


def shift(state: MachineState, seconds: float) -> MachineState:
    """``state`` with every time in it ``seconds`` later: for a wall clock that stepped forward (an NTP step) while
    ``seconds`` of it did not pass, so every timer keeps the time it had left rather than firing at once. Pure;
    a state that never started is returned as it is.

    >>> shift(MachineState(started=1, last_time=5.0, deadline=[INF, 65.0, INF, INF]), 100.0).deadline[1]
    165.0
    """
    if not state.started or not seconds:
        return state.copy()
    s = state.copy()
    s.entered_at += seconds
    s.last_time += seconds
    s.last_input += seconds
    s.last_feed += seconds
    s.last_anomalous += seconds  # -inf (none yet) stays -inf
    s.deadline = [d + seconds for d in s.deadline]  # inf (no dead-man) stays inf
    return s


def next_deadline(state: MachineState, tables: Tables) -> float:
    """The earliest effective time at which a timer would fire without any input (``inf`` if none).

    A caller replaying a stream ticks the machine at each deadline before the next input, so every
    timer fires at its own time rather than when the next window happens to arrive.
    """
    if not state.started:
        return INF
    times = []
    if not state.fault:
        times.append(state.last_input + tables.telemetry_timeout)
        if tables.watchdog_timeout > 0:
            times.append(state.last_feed + tables.watchdog_timeout)
        if state.tier > 0 and not state.pinned:
            times.append(state.deadline[state.tier])
            times.append(max(state.last_anomalous, state.entered_at) + tables.deescalate_after[state.tier])
    return min(times, default=INF)


#: Most timer rounds :func:`advance` runs before an input; each strictly advances or removes a timer, so
#: a handful suffices and the bound only keeps a machine bug from becoming a hang (on a device too).
MAX_TIMER_ROUNDS = 4 * (N_TIERS + 2)


def advance(
    state: MachineState, tables: Tables, kind: int, time: float, score: float = math.nan, unconfident: int = 0
) -> tuple[MachineState, tuple[Event, ...]]:
    """Fire every timer that fell due before raw ``time``, each at its own time, then :func:`step` the input.

    This is what :class:`~tinywarden.respond.engine.ResponseEngine` does per input and what the
    generated C ``tw_respond`` does per call, so a caller that inputs rarely still sees each dead-man
    or de-escalation at the moment it fell due. Pure, like :func:`step`.

    >>> tables = Tables(bar=(1.0, 1.0, 2.0, 3.0), k=(0, 1, 1, 1), n=(0, 1, 1, 1),
    ...                 min_dwell=(0.0,) * 4, deescalate_after=(0.0, 60.0, 60.0, 60.0),
    ...                 dead_man=(0.0,) * 4, tier_actions=((), (0,), (), ()),
    ...                 fail_safe_tier=0, fault_tolerance=3, telemetry_timeout=1000.0, watchdog_timeout=0.0)
    >>> s, _ = advance(MachineState(), tables, INPUT_SCORE, 0.0, 1.5)
    >>> s, ev = advance(s, tables, INPUT_TICK, 500.0)
    >>> [(e.time, e.kind, REASONS[e.reason]) for e in ev]
    [(60.0, 2, 'normal')]
    """
    out: list[Event] = []
    s = state
    for _ in range(MAX_TIMER_ROUNDS):
        due = next_deadline(s, tables)
        if due > time + s.skew:
            break
        s, events = step(s, tables, INPUT_TICK, max(due, s.last_time) - s.skew)
        out += events
    s, events = step(s, tables, kind, time, score, unconfident)
    return s, (*out, *events)
