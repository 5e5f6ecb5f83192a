"""The response state machine in the generated C module against the Python machine (advance/step):
identical events and final state for scenarios, hypothesis sequences and an end-to-end camera run."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from int8_fixtures import camera, fitted
from tinywarden.codegen.c import emit_c, write_c
from tinywarden.codegen.respond import (
    MAX_SKEW_S,
    c_state_problem,
    c_tables,
    max_events,
    run_respond_int8,
    window_faults,
)
from tinywarden.errors import ConfigError
from tinywarden.respond import machine as m
from tinywarden.respond.engine import ResponseEngine
from tinywarden.respond.policy import TIER_NAMES, parse_policy

HARNESS = Path(__file__).parent / "c" / "respond_harness.c"
FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"]
THRESHOLD = 1000  # integer-domain threshold of the test program: bars 1000 / 1250 / 1600
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="no host gcc to compile the generated C")


def policy_text(
    *, dwell: float = 20, deescalate: float = 60, dead_man: float = 120, fail_safe: str = "constrain",
    tolerance: int = 3, telemetry: float = 50, watchdog: float = 0, alert_kn: tuple[int, int] = (2, 3),
    constrain_kn: tuple[int, int] = (3, 4), harden_kn: tuple[int, int] = (3, 3),
) -> str:
    return textwrap.dedent(f"""
        [policy]
        name = "c-test"
        version = "3"
        fail_safe_tier = "{fail_safe}"
        fault_tolerance = {tolerance}
        telemetry_timeout_s = {telemetry}
        watchdog_timeout_s = {watchdog}
        [tiers.alert]
        actions = ["notify"]
        k = {alert_kn[0]}
        n = {alert_kn[1]}
        min_dwell_s = {dwell}
        deescalate_after_s = {deescalate}
        [tiers.constrain]
        actions = ["cap", "block"]
        k = {constrain_kn[0]}
        n = {constrain_kn[1]}
        margin = 0.25
        min_dwell_s = {dwell}
        deescalate_after_s = {deescalate}
        dead_man_s = {dead_man}
        [tiers.harden]
        actions = ["stop-shell", "uplink_down"]
        k = {harden_kn[0]}
        n = {harden_kn[1]}
        margin = 0.6
        deescalate_after_s = {deescalate}
        dead_man_s = {dead_man}
        [actions.notify]
        type = "log"
        [actions.cap]
        type = "tc_rate_limit"
        interface = "eth0"
        rate = "256kbit"
        [actions.block]
        type = "nft_block_address"
        addresses = ["203.0.113.7"]
        [actions.stop-shell]
        type = "process_suspend"
        process = "telnetd"
        [actions.uplink_down]
        type = "interface_down"
        interface = "wlan0"
        """)


ALERT_ONLY = textwrap.dedent("""
    [policy]
    name = "alert-only"
    version = "1"
    telemetry_timeout_s = 30
    [tiers.alert]
    actions = ["notify", "beep"]
    consecutive = 2
    deescalate_after_s = 15
    [actions.notify]
    type = "log"
    [actions.beep]
    type = "log"
    message = "beep"
    """)

POLICIES = {
    "standard": policy_text(),
    # fractional durations (rounded up in C), a watchdog, harden as fail-safe, 32-window k-of-n
    "fractional": policy_text(dwell=2.5, deescalate=30.2, dead_man=45.5, fail_safe="harden", tolerance=1,
                              telemetry=40.5, watchdog=25.3, alert_kn=(20, 32), harden_kn=(2, 32)),
    "alert_only": ALERT_ONLY,
    # issue 12 item 5: "cap" is held by constrain and by harden; harden's dead-man must not revert it
    "shared": policy_text().replace('actions = ["stop-shell", "uplink_down"]', 'actions = ["stop-shell", "cap"]')
                           .replace('[actions.uplink_down]\ntype = "interface_down"\ninterface = "wlan0"\n', ""),
}


def program():
    _, prog = fitted("ewma")
    return replace(prog, threshold=THRESHOLD)


@pytest.fixture(scope="module")
def exes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One compiled harness per test policy (and the standard one under ASan/UBSan)."""
    out = {}
    for name, text in [*POLICIES.items(), ("sanitized", POLICIES["standard"])]:
        d = tmp_path_factory.mktemp(name)
        out[name] = build(program(), parse_policy(text), d, SANITIZE if name == "sanitized" else ())
    return out


def build(prog, policy, d: Path, extra=()) -> Path:
    write_c(prog, d, policy)
    exe = d / "respond_harness"
    r = subprocess.run(["gcc", *FLAGS, *extra, "-I", str(d), str(d / "tinywarden_model.c"), str(HARNESS),
                        "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return exe


def state_tuple(s: m.MachineState) -> tuple[int, ...]:
    def t(x: float) -> int:
        return INT64_MIN if x == -math.inf else INT64_MAX if x == math.inf else int(x)

    times = (s.entered_at, s.last_time, s.skew, s.last_input, s.last_feed, s.last_anomalous)
    return (s.started, s.tier, *map(t, times), *s.history, *map(t, s.deadline), s.fault, s.fault_streak, s.pinned)


def parse(out: str) -> tuple[list[tuple[int, ...]], tuple[int, ...], list[tuple[int, int]]]:
    events, state, windows = [], (), []
    for line in out.splitlines():
        tag, *vals = line.split()
        if tag == "e":
            events.append(tuple(int(v) for v in vals))
        elif tag == "s":
            state = tuple(int(v) for v in vals)
        elif tag == "w":
            windows.append((int(vals[0]), int(vals[1])))
    return events, state, windows


def run_c(exe: Path, inputs: list[tuple[int, int, int]], tmp: Path) -> tuple[list[tuple[int, ...]], tuple[int, ...]]:
    path = tmp / "inputs.bin"
    np.array(inputs, dtype=[("kind", "<i4"), ("now", "<u4"), ("score", "<i4")]).tofile(path)
    r = subprocess.run([str(exe), str(path), "i"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    events, state, _ = parse(r.stdout)
    return events, state


def run_py(tables: m.Tables, inputs: list[tuple[int, int, int]]) -> tuple[list[tuple[int, ...]], m.MachineState]:
    s, out = m.MachineState(), []
    for i, (kind, t, score) in enumerate(inputs):
        s, ev = m.advance(s, tables, kind, float(t), float(score))
        assert len(ev) <= max_events(tables)  # the C's TW_RESPOND_MAX_EVENTS holds
        assert c_state_problem(s, tables) is None  # every reachable state keeps the invariants tw_respond checks
        out += [(i, int(e.time), e.tier, e.action_tier, e.action, e.kind, e.reason) for e in ev]
    return out, s


def check(exe: Path, policy_name: str, inputs: list[tuple[int, int, int]], tmp: Path) -> list[tuple[int, ...]]:
    """Run both sides; require identical events and final states; return the events."""
    tables = c_tables(parse_policy(POLICIES[policy_name]), THRESHOLD)
    want, s = run_py(tables, inputs)
    got, state = run_c(exe, inputs, tmp)
    assert got == want
    assert state == state_tuple(s)
    return want


S, F, T, FEED, CONFIRM, RELEASE = m.INPUT_SCORE, m.INPUT_FAULT, m.INPUT_TICK, m.INPUT_FEED, m.INPUT_CONFIRM, \
    m.INPUT_RELEASE


def reasons(events: list[tuple[int, ...]]) -> list[str]:
    return [m.REASONS[e[-1]] for e in events]


def test_escalation_through_all_tiers_and_dead_man(exes, tmp_path):
    inputs = [(S, 10 * i, 1700) for i in range(12)]  # above every bar
    inputs += [(S, 120 + 10 * i, 1100) for i in range(40)]  # anomalous, but below constrain: no renewal
    ev = check(exes["standard"], "standard", inputs, tmp_path)
    applied = [e for e in ev if e[5] == m.EVENT_APPLY]
    assert [e[3] for e in applied] == [1, 2, 2, 3, 3]  # alert, constrain x2, harden x2, in order
    dead = [e for e in ev if m.REASONS[e[6]] == "dead_man"]
    assert [e[3] for e in dead] == [3, 3, 2, 2]  # harden then constrain revert by themselves
    assert [e[4] for e in dead] == [4, 3, 2, 1]  # each tier's actions in reverse order


def test_action_held_by_two_tiers_is_reverted_once_by_the_last_tier(exes, tmp_path):
    inputs = [(S, 10 * i, 1700) for i in range(12)]  # above every bar: alert, constrain, harden
    inputs += [(S, 120 + 10 * i, 1300) for i in range(15)]  # renews constrain only: harden's dead-man fires
    inputs += [(S, 270 + 10 * i, 500) for i in range(10)]  # normal: constrain steps down after 60 s
    ev = check(exes["shared"], "shared", inputs, tmp_path)
    names = [a.name for a in parse_policy(POLICIES["shared"]).actions]
    cap = names.index("cap")
    assert [(e[3], m.REASONS[e[6]]) for e in ev if e[4] == cap] == [(2, "escalate"), (2, "normal")]
    assert [(names[e[4]], e[3]) for e in ev if m.REASONS[e[6]] == "dead_man"] == [("stop-shell", 3)]


def test_oscillation_at_threshold_and_bars(exes, tmp_path):
    seq = [THRESHOLD, THRESHOLD + 1, 1250, 1251, 1600, 1601, 999, 1000]
    inputs = [(S, 7 * i, seq[i % len(seq)]) for i in range(120)]
    ev = check(exes["standard"], "standard", inputs, tmp_path)
    assert ev and "escalate" in reasons(ev)
    flip = [(S, 5 * i, THRESHOLD + (i % 2)) for i in range(60)]  # exactly at, then one above, the threshold
    assert reasons(check(exes["alert_only"], "alert_only", flip, tmp_path)) == []  # never 2 in a row


def test_hysteresis_steps_down_one_tier_at_a_time_with_pure_ticks(exes, tmp_path):
    inputs = [(S, 10 * i, 1700) for i in range(8)]
    inputs += [(T, 80 + i, 0) for i in range(0, 400, 3)]  # only ticks: timers fire at their own time
    inputs += [(S, 480 + 10 * i, 500) for i in range(30)]
    ev = check(exes["standard"], "standard", inputs, tmp_path)
    downs = [e for e in ev if e[5] == m.EVENT_REVERT]
    assert downs and {m.REASONS[e[6]] for e in downs} <= {"normal", "dead_man", "fault_telemetry"}
    assert ev[-1][2] == 0  # back to no tier


def test_faults_reach_the_fail_safe_tier_and_clear(exes, tmp_path):
    inputs = [(S, 0, 500), (F, 10, 0), (F, 20, 0), (F, 30, 0), (S, 40, 500)]
    inputs += [(S, 40 + 10 * i, 500) for i in range(1, 20)]
    inputs += [(T, 400, 0), (T, 1000, 0), (S, 1010, 500)]  # telemetry timeout, then recovery
    ev = check(exes["standard"], "standard", inputs, tmp_path)
    rs = reasons(ev)
    # the fault note, then alert's and constrain's actions applied for the same reason
    assert rs.count("fault_model") == 1 + 3 and max(e[2] for e in ev) == 2
    assert "fault_telemetry" in rs and rs.count("fault_cleared") == 2
    # the watchdog (26 s, fed at 10 s) before telemetry (41 s); a tolerance of 1; harden as fail-safe
    wd = [(S, 0, 500), (FEED, 10, 0), (T, 38, 0), (S, 40, 500), (F, 45, 0)]
    ev = check(exes["fractional"], "fractional", wd, tmp_path)
    assert [(e[1], m.REASONS[e[6]]) for e in ev if e[5] == m.EVENT_NOTE] == [
        (36, "fault_watchdog"), (40, "fault_cleared"), (45, "fault_model")]
    assert max(e[2] for e in ev) == 3


def test_clock_backwards_and_operator_commands(exes, tmp_path):
    inputs = [(S, 1000 + 10 * i, 1700) for i in range(6)]
    inputs += [(S, 500, 1700), (CONFIRM, 510, 0), (T, 2000, 0), (S, 400, 1100), (RELEASE, 2100, 0),
               (T, 3000, 0), (S, 0, 1700), (S, 4_000_000_000, 0)]
    ev = check(exes["standard"], "standard", inputs, tmp_path)
    rs = reasons(ev)
    assert rs.count("clock_backwards") == 3 and "operator_confirm" in rs and "operator_release" in rs


def test_name_tables_and_contract(exes):
    out = subprocess.run([str(exes["standard"]), "n"], capture_output=True, text=True, check=True).stdout
    policy = parse_policy(POLICIES["standard"])
    assert out.splitlines() == ([f"action {a.name}" for a in policy.actions] + [f"reason {r}" for r in m.REASONS]
                                + [f"tier {t}" for t in ("none", *TIER_NAMES)])
    for exe in (exes["standard"], exes["sanitized"]):
        r = subprocess.run([str(exe), "c"], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.startswith("ok "), r.stderr


KINDS = st.sampled_from([S] * 6 + [F, T, T, T, FEED, CONFIRM, RELEASE])
STEPS = st.sampled_from([0, 1, 1, 2, 3, 5, 10, 10, 20, 30, 41, 46, 61, 121, 400, -3, -50])
SCORES = st.sampled_from([0, 500, 999, 1000, 1001, 1249, 1250, 1251, 1599, 1600, 1601, 2**31 - 1])


@st.composite
def sequences(draw: st.DrawFn) -> list[tuple[int, int, int]]:
    n = draw(st.integers(1, 80))
    t = draw(st.integers(0, 100))
    out = []
    for _ in range(n):
        t = max(0, t + draw(STEPS))
        out.append((draw(KINDS), t, draw(SCORES)))
    return out


@pytest.mark.parametrize("name", list(POLICIES))
def test_random_sequences_match(name, exes, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"hyp-{name}")

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(sequences())
    def prop(inputs):
        check(exes[name], name, inputs, tmp)

    prop()


TW_EINVAL = -1
RECORD = np.dtype([
    *((f, "<i8") for f in ("entered_at", "last_time", "skew", "last_input", "last_feed", "last_anomalous")),
    ("deadline", "<i8", (m.N_TIERS + 1,)), ("history", "<u4", (m.N_TIERS + 1,)), ("fault_streak", "<u4"),
    ("clean_samples", "<u2"), ("started", "u1"), ("tier", "u1"), ("fault", "u1"), ("pinned", "u1"),
    ("kind", "<i4"), ("now", "<u4"), ("score", "<i4"),
])  # packed, in tw_response_t's declaration order (what respond_harness mode "r" reads)
TIMES = ("entered_at", "last_time", "skew", "last_input", "last_feed", "last_anomalous")


def record_state(r: np.void) -> m.MachineState:
    def t(x: int) -> float:
        return -math.inf if x == INT64_MIN else math.inf if x == INT64_MAX else float(x)

    return m.MachineState(
        started=int(r["started"]), tier=int(r["tier"]), **{f: t(int(r[f])) for f in TIMES},
        history=[int(h) for h in r["history"]], deadline=[t(int(d)) for d in r["deadline"]],
        fault=int(r["fault"]), fault_streak=int(r["fault_streak"]), pinned=int(r["pinned"]),
    )


def reachable_states(tables: m.Tables, rng: np.random.Generator, n: int) -> list[tuple[m.MachineState, int]]:
    """States (with the caller's last clock reading) that the machine really reaches from random inputs."""
    out = []
    while len(out) < n:
        s, t = m.MachineState(), int(rng.integers(0, 2**32))
        for _ in range(int(rng.integers(1, 60))):
            t = int(np.clip(t + rng.choice([0, 1, 5, 10, 30, 61, 121, 400, -50, 2**31, -(2**31)]), 0, 2**32 - 1))
            kind = int(rng.choice([S] * 5 + [F, T, FEED, CONFIRM, RELEASE]))
            s, _ = m.advance(s, tables, kind, float(t), float(rng.choice([0, 1000, 1251, 1601])))
            out.append((s, t))
    return out[:n]


def mutated_records(tables: m.Tables, window: int, rng: np.random.Generator, n: int) -> np.ndarray:
    """Reachable states, most with one field set to a random or boundary value, plus a random input."""
    recs = np.zeros(n, RECORD)
    specials = [INT64_MIN, INT64_MAX, -1, 0, 1, MAX_SKEW_S, MAX_SKEW_S + 1, 2**32, 2**53, 2**62]
    for i, (s, t) in enumerate(reachable_states(tables, rng, n)):
        r = recs[i]
        for f in TIMES:
            r[f] = INT64_MIN if s.__dict__[f] == -math.inf else int(s.__dict__[f])
        r["deadline"] = [INT64_MAX if d == math.inf else int(d) for d in s.deadline]
        r["history"], r["fault_streak"], r["clean_samples"] = s.history, s.fault_streak, rng.integers(0, window + 1)
        r["started"], r["tier"], r["fault"], r["pinned"] = s.started, s.tier, s.fault, s.pinned
        if rng.random() < 0.8:
            field = str(rng.choice([*TIMES, "deadline", "history", "fault_streak", "clean_samples", "started",
                                    "tier", "fault", "pinned"]))
            near = int(s.last_time) + int(rng.choice([-1, 0, 1, 2**31, 2**32]))
            if field in TIMES or field == "deadline":
                value = int(rng.choice([*specials, near, int(rng.integers(INT64_MIN, INT64_MAX))]))
                if field == "deadline":
                    r["deadline"][int(rng.integers(0, m.N_TIERS + 1))] = value
                else:
                    r[field] = value
            elif field == "history":
                r["history"][int(rng.integers(0, m.N_TIERS + 1))] = rng.integers(0, 2**32)
            elif field == "fault_streak":
                r[field] = rng.choice([2**32 - 1, rng.integers(0, 2**32)])
            elif field == "clean_samples":
                r[field] = rng.choice([window + 1, 2**16 - 1])
            else:
                r[field] = rng.integers(0, 256) if rng.random() < 0.5 else rng.integers(0, 5)
        r["kind"] = rng.integers(0, m.INPUT_RELEASE + 1)
        r["now"] = rng.choice([t, t + 1, t + 1000, 0, 2**32 - 1, rng.integers(0, 2**32)]) % 2**32
        r["score"] = rng.choice([0, 999, 1001, 1251, 1601, 2**31 - 1])
    return recs


def test_tw_respond_refuses_every_state_that_breaks_an_invariant(exes, tmp_path):
    """Issue 12 item 7: arbitrary state (random bytes, and reachable states with one field broken) under ASan and
    UBSan: tw_respond returns TW_EINVAL, touching nothing, exactly for the states that break an invariant of the
    header (c_state_problem), never overflows, and on every state it accepts gives the Python machine's events."""
    policy = parse_policy(POLICIES["standard"])
    tables = c_tables(policy, THRESHOLD)
    window = program().window
    rng = np.random.default_rng(12)
    noise = np.frombuffer(rng.bytes(400 * RECORD.itemsize), RECORD).copy()
    noise["kind"] %= m.INPUT_RELEASE + 1
    noise["score"] &= 0x7FFFFFFF  # a negative score is a fault window, as the harness feeds it
    recs = np.concatenate([noise, mutated_records(tables, window, rng, 3000)])
    recs.tofile(tmp_path / "states.bin")
    r = subprocess.run([str(exes["sanitized"]), str(tmp_path / "states.bin"), "r"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    results: dict[int, list[str]] = {}
    for line in r.stdout.splitlines():
        if line.startswith("r "):
            results[int(line.split()[1])] = [line]
        else:
            results[max(results)].append(line)
    assert len(results) == len(recs)
    refused = accepted = 0
    for i, rec in enumerate(recs):
        state = record_state(rec)
        problem = c_state_problem(state, tables)
        if rec["clean_samples"] > window:
            problem = "clean_samples > TW_WINDOW"
        rc = int(results[i][0].split()[2])
        assert (rc == TW_EINVAL) == (problem is not None), (i, problem, rc, state)
        if problem is not None:
            refused += 1
            continue
        accepted += 1
        s, ev = m.advance(state, tables, int(rec["kind"]), float(rec["now"]), float(rec["score"]))
        events, final, _ = parse("\n".join(results[i][1:]))
        assert events == [(i, int(e.time), e.tier, e.action_tier, e.action, e.kind, e.reason) for e in ev]
        assert final == state_tuple(s)
        assert c_state_problem(s, tables) is None  # an accepted call keeps the invariants
    assert refused > 1000 and accepted > 500, (refused, accepted)


@pytest.mark.parametrize("name", ["standard", "shared"])
def test_engine_gives_the_same_timeline_as_the_reference(name):
    """The Python reference the C is checked against is the engine's own timeline (whole-second policy)."""
    policy = parse_policy(POLICIES[name])
    tables = c_tables(policy, THRESHOLD)
    engine = ResponseEngine(policy, float(THRESHOLD))
    rng = np.random.default_rng(3)
    s = m.MachineState()
    t = 0
    for _ in range(400):
        t += int(rng.choice([1, 5, 10, 30, 70, 130]))
        kind = int(rng.choice([S, S, S, F, T]))
        score = float(rng.choice([0, 1000, 1001, 1251, 1601]))
        s, ev = m.advance(s, tables, kind, float(t), score)
        if kind == S:
            got = engine.observe(score, at=t)
        else:
            got = engine.report_fault("x", at=t) if kind == F else engine.tick(at=t)
        names = [a.name for a in policy.actions]
        assert [(e.time, e.tier, e.action_tier, e.action, e.event, e.reason_code) for e in got] == [
            (e.time, e.tier, e.action_tier, None if e.action < 0 else names[e.action],
             ("note", "apply", "revert")[e.kind], m.REASONS[e.reason]) for e in ev]
    assert state_tuple(engine.state) == state_tuple(s)


def test_integer_tables_are_exact():
    policy = parse_policy(POLICIES["fractional"])
    t = c_tables(policy, 777)
    assert t.bar == (777.0, 777.0, math.floor(777 * 1.25), math.floor(777 * 1.6))
    assert (t.min_dwell[1], t.deescalate_after[1], t.dead_man[2], t.telemetry_timeout, t.watchdog_timeout) == \
        (3.0, 31.0, 46.0, 41.0, 26.0)
    float_bars = ResponseEngine(policy, 777.0).tables.bar
    for score in range(700, 1300):  # floor(bar) decides as the float bar for every integer score
        assert [score > b for b in t.bar] == [score > b for b in float_bars]
    # One limit for the loader and the C export (issue 12 item 7): the loader refuses what C cannot hold, and a
    # Policy built by hand past the loader is still refused by the export.
    with pytest.raises(ConfigError, match=r"tiers\.constrain\.dead_man_s: must be <= 2147483647"):
        parse_policy(policy_text(dead_man=3e9))
    at_limit = parse_policy(policy_text(dead_man=2**31 - 1))
    assert c_tables(at_limit, 1000).dead_man[2] == 2**31 - 1
    tiers = (at_limit.tiers[0], replace(at_limit.tiers[1], dead_man_s=3e9), at_limit.tiers[2])
    with pytest.raises(ConfigError, match=r"tiers\.constrain\.dead_man_s: 3e\+09 s exceeds"):
        c_tables(replace(at_limit, tiers=tiers), 1000)


def test_module_without_policy_is_unchanged():
    prog = program()
    base = emit_c(prog)
    assert base == emit_c(prog, None) and "tw_respond" not in base["tinywarden_model.c"]
    # a policy that leaves adaptation off only appends the response machine (one that enables it also
    # compiles the adaptation into the detector loop: tests/test_adapt_q.py)
    with_policy = emit_c(prog, parse_policy(POLICIES["standard"] + "\n[adaptation]\nenabled = false\n"))
    for name, text in base.items():
        assert with_policy[name].startswith(text) and "tw_respond" in with_policy[name][len(text):]


def stream(n: int = 20000):
    s, _ = camera()
    values = s.values[:n].copy()
    times = (s.timestamps[:n] - s.timestamps[0]).astype(np.int64) + 1_700_000_000
    times[5000:5400] -= 3600  # the device clock jumps back an hour for a while
    values[8000:8003, 1] = np.nan  # a sensor glitch: the windows holding it are model faults
    values[8100, 2] = np.inf
    values[9000, 0] = 1e39  # overflows float32: infinite on the device too
    return times, values


@pytest.mark.parametrize("sanitized", [False, True])
def test_end_to_end_camera_samples(sanitized, exes, tmp_path):
    """Simulated camera samples -> tw_respond_push + tw_respond vs run_int8 + machine.advance."""
    _, prog = fitted("ewma")
    times, values = stream()
    policy = parse_policy(policy_text(dwell=600, deescalate=1800, dead_man=3600, telemetry=5000))
    exe = build(prog, policy, tmp_path, SANITIZE if sanitized else ())
    rec = np.zeros(len(values), dtype=[("t", "<u4"), ("x", "<f4", (prog.n_channels,))])
    with np.errstate(over="ignore"):  # 1e39 becomes inf as a float32, as on the device
        rec["t"], rec["x"] = times, values.astype(np.float32)
    rec.tofile(tmp_path / "samples.bin")
    r = subprocess.run([str(exe), str(tmp_path / "samples.bin"), "s"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got, state, windows = parse(r.stdout)

    tables = c_tables(policy, prog.threshold)
    s, ev = run_respond_int8(prog, tables, times.tolist(), values, policy=policy)  # the policy adapts the baseline
    faults = window_faults(prog, values)
    assert 0 < faults.sum() < 10
    assert [w for _, w in windows if w < 0] == [-1] * int(faults.sum())
    assert state == state_tuple(s)
    assert [g[1:] for g in got] == [(int(e.time), e.tier, e.action_tier, e.action, e.kind, e.reason) for e in ev]
    rs = {m.REASONS[e.reason] for e in ev}
    assert {"escalate", "fault_model", "fault_cleared", "clock_backwards"} <= rs, rs


def test_cli_export_with_policy(tmp_path, capsys):
    from tinywarden.cli import main
    from tinywarden.modelfile import save_pipeline
    from tinywarden.quantize import int8_sections

    pipe, _ = fitted("ewma")
    _, train = camera()
    extra, arrays, _ = int8_sections(pipe, train)
    save_pipeline(pipe, tmp_path / "m.twb", extra=extra, extra_arrays=arrays)
    (tmp_path / "p.toml").write_text(POLICIES["standard"])

    def cli(*args: str) -> tuple[int, str]:
        argv, sys.argv = sys.argv, ["tinywarden", *args]
        try:
            with pytest.raises(SystemExit) as exc:
                main()
        finally:
            sys.argv = argv
        return int(exc.value.code or 0), capsys.readouterr().err

    rc, err = cli("export", str(tmp_path / "m.twb"), "--target", "c", "--policy", str(tmp_path / "p.toml"),
                  "--out", str(tmp_path / "c"))
    assert rc == 0, err
    assert "tw_respond_init" in (tmp_path / "c" / "tinywarden_model.h").read_text()
    rc, err = cli("export", str(tmp_path / "m.twb"), "--target", "onnx", "--policy", str(tmp_path / "p.toml"),
                  "--out", str(tmp_path / "o"))
    assert rc == 2 and "only --target c" in err
    (tmp_path / "bad.toml").write_text(POLICIES["standard"].replace("k = 3\n", "k = 9\n", 1))
    rc, err = cli("export", str(tmp_path / "m.twb"), "--policy", str(tmp_path / "bad.toml"), "--out",
                  str(tmp_path / "b"))
    assert rc == 2 and "bad.toml: tiers.constrain.k" in err


@pytest.mark.parametrize("sanitized", [False, True])
def test_end_to_end_min_confidence_matches_the_reference(sanitized, tmp_path):
    """Tiers with min_confidence: tw_respond compares the window's Q15 confidence with the bars, as
    run_respond_int8 (run_confidence + machine.advance with the unconfident bits) does."""
    _, prog = fitted("ewma")
    assert prog.likelihood is not None
    times, values = stream()
    text = policy_text(dwell=600, deescalate=1800, dead_man=3600, telemetry=5000, alert_kn=(1, 2))
    text = text.replace("[tiers.alert]\n", "[tiers.alert]\nmin_confidence = 0.2\n", 1)
    text = text.replace("[tiers.constrain]\n", "[tiers.constrain]\nmin_confidence = 0.45\n", 1)
    policy = parse_policy(text)
    assert [t.min_confidence for t in policy.tiers][:2] == [0.2, 0.45]
    exe = build(prog, policy, tmp_path, SANITIZE if sanitized else ())
    rec = np.zeros(len(values), dtype=[("t", "<u4"), ("x", "<f4", (prog.n_channels,))])
    with np.errstate(over="ignore"):
        rec["t"], rec["x"] = times, values.astype(np.float32)
    rec.tofile(tmp_path / "samples.bin")
    r = subprocess.run([str(exe), str(tmp_path / "samples.bin"), "s"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got, state, _ = parse(r.stdout)
    tables = c_tables(policy, prog.threshold)
    s, ev = run_respond_int8(prog, tables, times.tolist(), values, policy=policy)
    assert state == state_tuple(s)
    assert [g[1:] for g in got] == [(int(e.time), e.tier, e.action_tier, e.action, e.kind, e.reason) for e in ev]
    # the bars change the timeline: without them the same scores escalate differently
    s0, ev0 = run_respond_int8(prog, tables, times.tolist(), values)
    assert [(e.time, e.tier, e.kind) for e in ev0] != [(e.time, e.tier, e.kind) for e in ev]
    assert any(m.REASONS[e.reason] == "escalate" for e in ev)
