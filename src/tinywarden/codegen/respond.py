"""Print the response state machine of :mod:`tinywarden.respond.machine` into the generated C module.

With a policy, ``tinywarden export MODEL --target c --policy POLICY.toml`` appends a response section
to ``tinywarden_model.h`` / ``.c``: the policy compiled to integer tables (:func:`c_tables`) printed as
constants, and the machine's ``step`` / ``advance`` / ``next_deadline`` printed from the templates
``tinywarden_respond.h.tmpl`` and ``tinywarden_respond.c.tmpl``. Every code list (input kinds, event
kinds, reasons) and name table (actions, reasons, tiers) is printed from the Python lists, so the C
cannot drift from them.

The integer mapping, exact by construction:

* **time** is whole seconds: the C is fed ``uint32_t now_s`` and the Python reference the same
  numbers as floats. Every policy duration is rounded *up* to whole seconds; for whole-second times
  ``elapsed >= d`` then decides exactly as before, and timers fall due at whole seconds on both sides.
* **scores** are the int8 program's int32 scores; a tier's bar becomes
  ``floor(threshold + margin * |threshold|)`` (clamped to just outside the int32 range), and for an
  integer ``s``, ``s > floor(b)`` exactly when ``s > b``.

:func:`run_respond_int8` is the Python reference of the generated loop (``tw_respond_push`` then
``tw_respond`` per sample): :func:`tinywarden.program.run_int8` for the scores and
:func:`tinywarden.respond.machine.advance` for the events; the test suite compiles the C and
requires identical events and final state.

>>> from tinywarden.respond.policy import parse_policy
>>> policy = parse_policy('''
... [policy]
... name = "doc"
... version = "1"
... [actions.notify]
... type = "log"
... [tiers.alert]
... actions = ["notify"]
... margin = 0.3
... deescalate_after_s = 2.5
... ''')
>>> t = c_tables(policy, 1000)
>>> t.bar[:2], t.deescalate_after[1]
((1000.0, 1300.0), 3.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from tinywarden.codegen.render import GENERATOR, c_array
from tinywarden.codegen.render import template as _template
from tinywarden.errors import ConfigError
from tinywarden.features import window_end_rows
from tinywarden.kernels.likelihood_q import CONF_ONE
from tinywarden.program import Int8Stream, Program, adaptation_params, run_confidence, run_int8
from tinywarden.respond import machine as m
from tinywarden.respond.engine import compile_tables
from tinywarden.respond.policy import MAX_DURATION_S, TIER_NAMES, Policy, check_c_exportable

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_UINT32_MAX = 2**32 - 1

#: Largest ``skew`` (sum of backward clock jumps) the C module takes: effective times then stay below 2**53,
#: where the Python reference's doubles are exact and no int64 sum in the C can overflow. Reaching it takes
#: over a million backward jumps across the whole uint32 clock range.
MAX_SKEW_S = 2**52
_DURATIONS = ("min_dwell", "deescalate_after", "dead_man")


def _codes(prefix: str) -> list[tuple[str, int]]:
    """``(name, value)`` of every ``machine.<prefix>*`` constant, by value: the one list of those codes."""
    return sorted(((k, v) for k, v in vars(m).items() if k.startswith(prefix) and isinstance(v, int)),
                  key=lambda kv: kv[1])


def _whole_seconds(value: float, key: str, policy: Policy) -> float:
    # The policy loader already refuses durations above MAX_DURATION_S; this catches a Policy built by hand.
    if not value <= MAX_DURATION_S:
        raise ConfigError(f"{policy.source}: {key}: {value:g} s exceeds the C module's limit of "
                          f"{MAX_DURATION_S} s")
    return float(math.ceil(value))


def c_tables(policy: Policy, threshold: int) -> m.Tables:
    """The policy's :class:`~tinywarden.respond.machine.Tables` for the integer-domain ``threshold``, as the
    C module holds them: durations rounded up to whole seconds, bars floored into the integer score domain.

    Run :func:`tinywarden.respond.machine.step` on these tables with whole-second times and integer
    scores and it decides exactly as the generated C does.
    """
    t = compile_tables(policy, float(threshold))
    # Clamp before flooring, so that even an infinite bar (a huge margin on a Policy built by hand) maps to
    # "no int32 score is above it" instead of failing.
    bars = tuple(float(math.floor(min(max(b, _INT32_MIN - 1), _INT32_MAX))) for b in t.bar)
    keys = {"min_dwell": "min_dwell_s", "deescalate_after": "deescalate_after_s", "dead_man": "dead_man_s"}
    times = {
        f: tuple(
            _whole_seconds(v, f"tiers.{TIER_NAMES[i - 1]}.{keys[f]}", policy) if i else 0.0
            for i, v in enumerate(getattr(t, f))
        )
        for f in _DURATIONS
    }
    return replace(
        t,
        bar=bars,  # type: ignore[arg-type]
        telemetry_timeout=_whole_seconds(t.telemetry_timeout, "policy.telemetry_timeout_s", policy),
        watchdog_timeout=_whole_seconds(t.watchdog_timeout, "policy.watchdog_timeout_s", policy),
        **times,  # type: ignore[arg-type]
    )


def c_state_problem(state: m.MachineState, tables: m.Tables) -> str | None:
    """The first invariant of the C module's ``tw_response_t`` that ``state`` breaks, or ``None``: those of
    :func:`~tinywarden.respond.machine.state_problem` plus the C time domain (times >= 0, the caller's clock a
    uint32, ``skew <= MAX_SKEW_S``). ``tw_respond`` returns ``TW_EINVAL`` exactly when this is not ``None``
    (``clean_samples``, which only the C has, aside)."""
    problem = m.state_problem(state, tables)
    if problem is not None or not state.started:
        return problem
    s = state
    if s.skew > MAX_SKEW_S:
        return f"skew {s.skew} > {MAX_SKEW_S}"
    if not 0 <= s.last_time - s.skew <= _UINT32_MAX:
        return f"last_time - skew = {s.last_time - s.skew} is not a uint32 clock reading"
    times = [s.entered_at, s.last_input, s.last_feed, s.last_anomalous, *s.deadline]
    if any(x < 0 for x in times if math.isfinite(x)):
        return "a time before 0"
    return None


def max_events(tables: m.Tables) -> int:
    """Most events one ``tw_respond`` call (one :func:`~tinywarden.respond.machine.advance`) can return.

    Within one call the tier first only falls (timers) and then only rises (a fault, then an
    escalation), so each action is reverted at most once and applied at most once; the notes are at
    most a backward clock jump, a fault and one of recovery / confirm / release.
    """
    return 2 * sum(len(a) for a in tables.tier_actions) + 3


def _c_string(s: str) -> str:
    # Names come from validated policy keys, but quote defensively so any text stays one C literal.
    return '"' + "".join(c if c.isalnum() or c in " _-.:/@" else f"\\{ord(c):03o}" for c in s) + '"'


def _const(name: str, ctype: str, values: Sequence[int]) -> str:
    return c_array(name, values, ctype.removesuffix("_t"))


def _defines(prefix: str, codes: Sequence[tuple[str, int]]) -> str:
    return "\n".join(f"#define TW_{prefix}{name.upper()} {value}" for name, value in codes)


@dataclass(frozen=True)
class RespondSection:
    """The response section of the C module: text appended to the header and to the source."""

    header: str
    source: str


def emit_respond(program: Program, policy: Policy) -> RespondSection:
    """The response section for ``program`` (its integer threshold sets the bars) under ``policy``."""
    check_c_exportable(policy, has_likelihood=program.likelihood is not None)
    tables = c_tables(policy, program.threshold)
    starts = [0]
    flat: list[int] = []
    held: list[int] = []
    for t in range(m.N_TIERS + 1):
        flat.extend(tables.tier_actions[t])
        held.extend(int(m.held_below(tables, t, a)) for a in tables.tier_actions[t])
        starts.append(len(flat))
    base = compile_tables(policy, float(program.threshold))
    rounded = [
        f"{f} {getattr(base, f)[i]:g}->{int(getattr(tables, f)[i])}"
        for f in _DURATIONS for i in range(1, m.N_TIERS + 1)
        if getattr(base, f)[i] != getattr(tables, f)[i]
    ] + [f"{f} {getattr(base, f):g}->{int(getattr(tables, f))}"
         for f in ("telemetry_timeout", "watchdog_timeout") if getattr(base, f) != getattr(tables, f)]
    inputs = _codes("INPUT_")
    common = {
        "generator": GENERATOR,
        "model_id": program.model_id,
        "policy_name": _c_string(policy.name)[1:-1],
        "policy_version": _c_string(policy.version)[1:-1],
    }
    header = _template("tinywarden_respond.h.tmpl").substitute(
        common,
        policy_source=_c_string(policy.source)[1:-1].replace("*/", "* /"),
        rounded_note=f"rounded here: {', '.join(rounded)}" if rounded else "none needed rounding here",
        bar_list=", ".join(f"{name} {int(b)}" for name, b in zip(("threshold", *TIER_NAMES), tables.bar,
                                                                  strict=True)),
        n_tiers=m.N_TIERS,
        n_actions=len(policy.actions),
        n_reasons=len(m.REASONS),
        max_events=max_events(tables),
        input_defines=_defines("", inputs) + f"\n#define TW_N_INPUTS {len(inputs)}",
        event_defines=_defines("", _codes("EVENT_")),
        reason_defines=_defines("REASON_", [(r, i) for i, r in enumerate(m.REASONS)]),
    )
    constants = [
        _const("tw_resp_bar", "int64_t", [int(b) for b in tables.bar]),
        _const("tw_resp_k", "uint32_t", list(tables.k)),
        _const("tw_resp_mask", "uint32_t", [(1 << n) - 1 for n in tables.n]),
        *(_const(f"tw_resp_{f}", "int64_t", [int(v) for v in getattr(tables, f)]) for f in _DURATIONS),
        _const("tw_resp_action_start", "uint16_t", starts),
        _const("tw_resp_actions", "uint16_t", flat),
        _const("tw_resp_held_below", "uint8_t", held),
        _const("tw_resp_min_confidence", "uint16_t", c_min_confidence(policy)),
    ]
    source = _template("tinywarden_respond.c.tmpl").substitute(
        common,
        constants="\n".join(constants).rstrip(),
        fail_safe_tier=tables.fail_safe_tier,
        fault_tolerance=tables.fault_tolerance,
        telemetry_timeout=int(tables.telemetry_timeout),
        watchdog_timeout=int(tables.watchdog_timeout),
        max_timer_rounds=m.MAX_TIMER_ROUNDS,
        top_tier=tables.top_tier,
        skew_max=MAX_SKEW_S,
        not_a_fault=" && ".join(f"r->fault != {c}u" for c in m.FAULTS),
        action_names="\n".join(f"    {_c_string(a.name)}," for a in policy.actions),
        reason_names="\n".join(f"    {_c_string(r)}," for r in m.REASONS),
        tier_names="\n".join(f"    {_c_string(n)}," for n in ("none", *TIER_NAMES)),
    )
    return RespondSection(header, source)


def c_min_confidence(policy: Policy) -> list[int]:
    """Per tier (index 0 unused) the ``min_confidence`` bar in the Q15 of the window's confidence:
    ``ceil(bar * 32768)``, 0 for none. For an integer ``c``, ``c >= ceil(b)`` exactly when ``c >= b``, so the
    C decides as the engine does on the confidence ``c / 32768``."""
    return [0, *(0 if t.min_confidence is None else math.ceil(t.min_confidence * CONF_ONE) for t in policy.tiers)]


def unconfident_bits(bars: Sequence[int], confidence: int) -> int:
    """The ``unconfident`` input of :func:`~tinywarden.respond.machine.step` for a window's Q15 confidence."""
    return sum(1 << t for t in range(1, len(bars)) if confidence < bars[t])


def window_faults(program: Program, samples: np.ndarray) -> np.ndarray:
    """For each window :func:`~tinywarden.program.run_int8` returns: whether it holds a sample that is
    NaN or infinite as a float32 (what ``tw_respond_push`` turns into ``TW_SCORE_FAULT``)."""
    x = np.asarray(samples)
    with np.errstate(over="ignore"):  # a finite float64 beyond float32's range is infinite on the device
        bad = ~np.isfinite(x.astype(np.float32)).all(axis=1) if x.dtype != np.int16 else np.zeros(len(x), bool)
    ends = window_end_rows(len(x), program.window, program.stride)
    run = np.concatenate(([0], np.cumsum(bad)))  # run[i] = non-finite rows before row i
    return (run[ends + 1] - run[ends + 1 - program.window]) > 0


def run_respond_int8(
    program: Program, tables: m.Tables, times: Sequence[int], samples: np.ndarray,
    state: m.MachineState | None = None, policy: Policy | None = None,
) -> tuple[m.MachineState, list[m.Event]]:
    """The Python reference of the generated loop: per sample at whole second ``times[i]``,
    ``tw_respond_push`` then ``tw_respond`` (a window's score, a fault for a window with a non-finite
    sample, or a pure timer tick). With ``policy``, its tiers' ``min_confidence`` bars are applied to the
    windows' Q15 confidences (:func:`c_min_confidence`), as the C module does, and its enabled
    ``[adaptation]`` adapts the baseline as the C module exported with it does
    (:class:`~tinywarden.program.Int8Stream`). Returns the final state and every event, in order."""
    x = np.asarray(samples)
    if len(times) != len(x):
        raise ConfigError(f"{len(times)} times for {len(x)} samples")
    if policy is not None and adaptation_params(program, policy.adaptation) is not None:
        dev = Int8Stream(program, policy.adaptation)
        pairs = [(out[0], dev.confidence) for row in x if (out := dev.push(row)) is not None]
        scores = np.array([p for p, _ in pairs], dtype=np.int32)
        confidences = [c for _, c in pairs]
    else:
        scores, _ = run_int8(program, x)
        conf = run_confidence(program, scores, x)
        confidences = [0] * len(scores) if conf is None else conf.tolist()
    bars = c_min_confidence(policy) if policy is not None else [0] * (m.N_TIERS + 1)
    faults = window_faults(program, x)
    ends = {int(e): i for i, e in enumerate(window_end_rows(len(x), program.window, program.stride))}
    s = state if state is not None else m.MachineState()
    out: list[m.Event] = []
    for row, t in enumerate(times):
        w = ends.get(row)
        if w is None:
            s, ev = m.advance(s, tables, m.INPUT_TICK, float(t))
        elif faults[w]:
            s, ev = m.advance(s, tables, m.INPUT_FAULT, float(t))
        else:
            s, ev = m.advance(s, tables, m.INPUT_SCORE, float(t), float(scores[w]),
                              unconfident_bits(bars, confidences[w]))
        out.extend(ev)
    return s, out
