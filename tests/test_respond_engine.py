"""The response state machine and engine in simulated time: escalation, hysteresis, dead-man timers,
fail-safe, operator commands, and the adversarial / chaos inputs of issue 4."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinywarden.audit import AuditLog, verify
from tinywarden.respond import machine as m
from tinywarden.respond.actuators import Actuator, ActuatorError, LogActuator, Targets
from tinywarden.respond.actuators.process import ProcessSuspend
from tinywarden.respond.engine import ResponseEngine, SimulatedClock, StateFileError, compile_tables
from tinywarden.respond.policy import parse_policy
from tinywarden.respond.replay import replay

THRESHOLD = 1.0


def policy_text(
    *,
    alert_k: int = 2,
    alert_n: int = 3,
    constrain_k: int = 3,
    constrain_n: int = 4,
    harden_k: int = 3,
    harden_n: int = 3,
    dwell: float = 20.0,
    deescalate: float = 60.0,
    dead_man: float = 120.0,
    fail_safe: str = "constrain",
    tolerance: int = 3,
    telemetry_timeout: float = 50.0,
    watchdog: float = 0.0,
    harden_actions: str = '["stop"]',
) -> str:
    return textwrap.dedent(f"""
        [policy]
        name = "test"
        version = "7"
        fail_safe_tier = "{fail_safe}"
        fault_tolerance = {tolerance}
        telemetry_timeout_s = {telemetry_timeout}
        watchdog_timeout_s = {watchdog}

        [critical]
        processes = ["plc-bridge"]

        [tiers.alert]
        actions = ["notify"]
        k = {alert_k}
        n = {alert_n}
        min_dwell_s = {dwell}
        deescalate_after_s = {deescalate}

        [tiers.constrain]
        actions = ["cap", "fence"]
        k = {constrain_k}
        n = {constrain_n}
        margin = 0.5
        min_dwell_s = {dwell}
        deescalate_after_s = {deescalate}
        dead_man_s = {dead_man}

        [tiers.harden]
        actions = {harden_actions}
        k = {harden_k}
        n = {harden_n}
        margin = 1.0
        deescalate_after_s = {deescalate}
        dead_man_s = {dead_man}

        [actions.notify]
        type = "log"
        message = "anomaly"
        [actions.cap]
        type = "tc_rate_limit"
        interface = "eth0"
        rate = "128kbit"
        [actions.fence]
        type = "nft_egress_allowlist"
        allow = ["10.0.0.0/8"]
        [actions.stop]
        type = "process_suspend"
        process = "telnetd"
    """)


def make_engine(tmp_path: Path | None = None, **kw: object) -> ResponseEngine:
    policy = parse_policy(policy_text(**kw))  # type: ignore[arg-type]
    audit = AuditLog(tmp_path / "audit.log") if tmp_path is not None else None
    return ResponseEngine(policy, THRESHOLD, clock=SimulatedClock(), audit=audit, model_id="m1")


def run(engine: ResponseEngine, scores: list[float], period: float = 10.0, start: float = 0.0) -> list:
    return replay(engine, [(start + i * period, s) for i, s in enumerate(scores)])


def applies(events: list, event: str = "apply") -> list[tuple[float, str]]:
    return [(e.time, e.action) for e in events if e.event == event]


def test_k_of_n_escalates_one_tier_at_a_time_after_min_dwell() -> None:
    engine = make_engine()
    # 2.5 clears every bar (alert 1.0, constrain 1.5, harden 2.0).
    events = run(engine, [0.2, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5])
    assert applies(events) == [(20.0, "notify"), (40.0, "cap"), (40.0, "fence"), (60.0, "stop")]
    assert engine.tier == 3
    assert [e.tier for e in events if e.event == "apply"] == [1, 2, 2, 3]


def test_single_spikes_never_escalate() -> None:
    engine = make_engine()
    events = run(engine, [5.0, 0.1, 0.1, 5.0, 0.1, 0.1] * 10)
    assert applies(events) == []
    assert engine.tier == 0


def test_margins_gate_heavy_tiers() -> None:
    # 1.2 is anomalous (> 1.0) but below the constrain bar 1.5: alert only, however long it lasts.
    engine = make_engine()
    events = run(engine, [1.2] * 50)
    assert {a for _, a in applies(events)} == {"notify"}
    assert engine.tier == 1


def test_hysteresis_needs_deescalate_after_of_normal() -> None:
    engine = make_engine(deescalate=60.0)
    events = run(engine, [1.2, 1.2] + [0.1] * 20)
    # Last anomalous window at t=10; de-escalation exactly 60 s later, fired by the timer itself.
    assert applies(events, "revert") == [(70.0, "notify")]
    assert engine.tier == 0


def test_dead_man_reverts_heavy_actions_without_renewal() -> None:
    engine = make_engine(dead_man=100.0, deescalate=10_000.0)
    # Escalate to constrain, then hover between the alert and constrain bars: still anomalous (no
    # de-escalation) but no longer evidence for constrain, so its dead-man timer runs out.
    events = run(engine, [2.0] * 5 + [1.2] * 30)
    reverts = applies(events, "revert")
    # Constrain's k-of-n (3 of 4 above 1.5) last holds at t=50 (windows 20, 30, 40): +100 s.
    assert reverts == [(150.0, "fence"), (150.0, "cap")]
    assert all(e.reason_code == "dead_man" for e in events if e.event == "revert")
    assert engine.tier == 1


def test_continued_detection_renews_the_dead_man() -> None:
    engine = make_engine(dead_man=100.0)
    events = run(engine, [2.0] * 100)
    assert applies(events, "revert") == []
    assert engine.tier == 2  # harden needs scores above 2.0


def test_operator_confirm_holds_and_release_restarts_timers() -> None:
    engine = make_engine(dead_man=100.0, deescalate=60.0)
    run(engine, [2.0] * 5)
    assert engine.tier == 2
    assert [e.reason_code for e in engine.confirm(at=45.0)] == ["operator_confirm"]
    held = run(engine, [0.1] * 50, start=50.0)
    assert held == [] and engine.tier == 2
    # Normal scores during the hold count toward hysteresis: released after 500 s of calm, the
    # device steps down at once (one tier per timer round, never all at once).
    released = engine.release(at=545.0)
    assert [(e.time, e.action) for e in released if e.event == "revert"] == [(545.0, "fence"), (545.0, "cap")]
    assert engine.tier == 1
    later = run(engine, [0.1] * 10, start=550.0)
    assert applies(later, "revert") == [(605.0, "notify")]


def test_nan_burst_below_tolerance_is_tolerated_and_at_tolerance_fails_safe(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, tolerance=3)
    quiet = run(engine, [0.1, math.nan, math.nan, 0.1, math.nan, math.nan, 0.1])
    assert applies(quiet) == [] and engine.tier == 0
    events = run(engine, [math.nan] * 3 + [0.1] * 20, start=100.0)
    failsafe = [e for e in events if e.event == "apply"]
    assert [e.action for e in failsafe] == ["notify", "cap", "fence"]
    assert {e.time for e in failsafe} == {120.0}
    assert all(e.reason_code == "fault_score" for e in failsafe)
    assert "3 non-finite scores in a row" in failsafe[0].reason
    notes = [e.reason_code for e in events if e.event == "note"]
    assert notes == ["fault_score", "fault_cleared"]
    # The fail-safe holds until the normal rules step it down after recovery (t=130 + 60).
    assert applies(events, "revert")[0] == (190.0, "fence")
    audit_text = (tmp_path / "audit.log").read_text()
    assert "fault_score" in audit_text and verify(tmp_path / "audit.log").ok


def test_model_raising_mid_stream_reaches_fail_safe() -> None:
    engine = make_engine(tolerance=2)
    calls = iter([0.1, 0.2, "raise", "raise", 0.1])

    def model() -> float:
        v = next(calls)
        if v == "raise":
            raise RuntimeError("feature buffer corrupted")
        return float(v)

    events = []
    for i in range(5):
        events += engine.observe_call(model, at=i * 10.0)
    fault = [e for e in events if e.reason_code == "fault_model"]
    assert fault and "RuntimeError: feature buffer corrupted" in fault[0].reason
    assert engine.tier == 2
    assert events[-1].reason_code == "fault_cleared"


def test_missing_telemetry_fails_safe_at_the_timeout() -> None:
    engine = make_engine(telemetry_timeout=50.0)
    events = replay(engine, [(0.0, 0.1), (10.0, 0.1), (500.0, 0.1)])
    first = [e for e in events if e.event == "apply"]
    assert {e.time for e in first} == {60.0}
    assert first[0].reason_code == "fault_telemetry"


def test_unfed_watchdog_fails_safe_even_while_nan_scores_arrive() -> None:
    engine = make_engine(watchdog=40.0, tolerance=1000)
    events = run(engine, [0.1] + [math.nan] * 10)
    assert [e.reason_code for e in events if e.event == "note"] == ["fault_watchdog"]
    assert engine.tier == 2
    assert [e.time for e in events if e.event == "note"] == [40.0]


def test_feeding_the_watchdog_keeps_it_quiet() -> None:
    engine = make_engine(watchdog=40.0, tolerance=1000)
    for i in range(10):
        engine.feed_watchdog(at=i * 10.0)
        engine.observe(math.nan if i else 0.1, at=i * 10.0 + 1)
    assert engine.tier == 0


def test_clock_jumping_backwards_keeps_timers_monotonic() -> None:
    engine = make_engine(dead_man=100.0, deescalate=10_000.0)
    run(engine, [2.0] * 5)
    assert engine.tier == 2
    # The clock jumps back an hour; evidence stops. The dead-man must still fire 100 s of engine time
    # after the last renewal, not an hour later, and the jump is recorded.
    events = replay(engine, [(-3600.0 + i * 10.0, 1.2) for i in range(20)])
    assert events[0].reason_code == "clock_backwards"
    reverts = [e for e in events if e.event == "revert"]
    assert reverts and reverts[0].reason_code == "dead_man"
    assert engine.state.skew == pytest.approx(3640.0)
    # Engine time of the revert: last renewal (t=40) + 100 s.
    assert reverts[0].time + engine.state.skew == pytest.approx(140.0)


@settings(max_examples=60, deadline=None)
@given(
    noise=st.lists(st.floats(-0.05, 0.05), min_size=50, max_size=300),
    period=st.sampled_from([1.0, 5.0, 10.0]),
)
def test_oscillating_at_threshold_cannot_flap_faster_than_hysteresis(noise: list[float], period: float):
    engine = make_engine(deescalate=60.0)
    scores = [THRESHOLD + (d if i % 2 else -d) for i, d in enumerate(noise)]
    events = run(engine, scores, period=period)
    changes = [e for e in events if e.event in ("apply", "revert") and e.action == "notify"]
    span = len(scores) * period
    # Each apply/revert cycle of alert needs 60 s of normal scores in between.
    assert len(changes) <= 2 * (span / 60.0 + 1)
    # Within the band, scores never reach the constrain bar (1.5): nothing heavy, ever.
    assert all(e.action == "notify" for e in events if e.event == "apply")


def test_slow_drift_is_caught_once_it_crosses_and_sawtooth_cannot_reset_k_of_n() -> None:
    engine = make_engine(alert_k=2, alert_n=3)
    ramp = [0.5 + 0.01 * i for i in range(100)]  # crosses 1.0 after window 50
    events = run(engine, ramp)
    first = applies(events)[0]
    assert first == (520.0, "notify")  # windows 51 and 52 are the first two above 1.0
    # An attacker dipping below the threshold every third window never gets 60 s of "normal",
    # so the device does not relax.
    engine2 = make_engine(alert_k=2, alert_n=3, deescalate=60.0)
    saw = run(engine2, [1.1, 1.1, 0.9] * 40)
    assert applies(saw) == [(10.0, "notify")] and applies(saw, "revert") == []


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.one_of(st.floats(-5, 5), st.just(math.nan), st.just(math.inf)),
        min_size=1,
        max_size=120,
    ),
    st.lists(st.floats(-30, 200), min_size=1, max_size=120),
)
def test_machine_invariants_on_arbitrary_streams(scores: list[float], gaps: list[float]) -> None:
    policy = parse_policy(policy_text())
    tables = compile_tables(policy, THRESHOLD)
    state = m.MachineState()
    t = 0.0
    for i, score in enumerate(scores):
        t += gaps[i % len(gaps)]
        before = state.copy()
        new, events = m.step(state, tables, m.INPUT_SCORE, t, score)
        assert state == before  # pure: the input state is untouched
        assert m.step(before, tables, m.INPUT_SCORE, t, score) == (new, events)  # deterministic
        assert m.state_problem(new, tables) is None  # every step keeps the documented invariants
        assert not state.started or new.last_time >= state.last_time  # engine time is monotonic
        ups = [e for e in events if e.kind == m.EVENT_APPLY]
        if not new.fault and not any(e.reason in (m.REASON_FAULT_TELEMETRY,) for e in events):
            assert len({e.action_tier for e in ups}) <= 1  # one tier at a time unless failing safe
        state = new


class Recording(Actuator):
    """A real (in-memory) actuator that can be told to fail, or to claim a critical target."""

    def __init__(self, name: str, fail: bool = False, target: str | None = None) -> None:
        self.name = name
        self.fail = fail
        self.target = target
        self.applied = False
        self.calls: list[str] = []

    def apply(self) -> None:
        self.calls.append("apply")
        if self.fail:
            raise ActuatorError(f"{self.name}: simulated failure")
        self.applied = True

    def revert(self) -> None:
        self.calls.append("revert")
        self.applied = False

    def is_applied(self) -> bool:
        return self.applied

    def describe(self) -> str:
        return self.name

    def targets(self) -> Targets:
        return Targets(processes=(self.target,) if self.target else ())


def test_engine_refuses_at_run_time_an_action_touching_a_critical_function() -> None:
    policy = parse_policy(policy_text())
    stop = Recording("stop", target="plc-bridge")
    acts = [LogActuator("notify", "x"), Recording("cap"), Recording("fence"), stop]
    engine = ResponseEngine(policy, THRESHOLD, actuators=acts, clock=SimulatedClock())
    events = run(engine, [2.5] * 8)
    stop = [e for e in events if e.action == "stop"]
    assert stop and stop[0].status.startswith("refused: would touch critical process 'plc-bridge'")
    assert acts[3].calls == []  # never even attempted
    assert acts[1].applied and acts[2].applied


def test_a_failing_actuator_is_recorded_and_the_engine_carries_on() -> None:
    policy = parse_policy(policy_text())
    acts = [LogActuator("notify", "x"), Recording("cap", fail=True), Recording("fence"), Recording("stop")]
    engine = ResponseEngine(policy, THRESHOLD, actuators=acts, clock=SimulatedClock())
    events = run(engine, [2.5] * 8)
    cap = next(e for e in events if e.action == "cap")
    assert cap.status.startswith("failed:") and "simulated failure" in cap.status
    assert acts[2].applied and engine.tier == 3


def _timeline(events: list) -> list[tuple]:
    return [(e.time, e.tier, e.action, e.event, e.reason_code) for e in events]


def test_restart_from_state_file_continues_the_same_timeline(tmp_path: Path) -> None:
    policy = parse_policy(policy_text())
    rows = [(i * 10.0, 2.5 if 10 <= i < 30 else (math.nan if 50 <= i < 54 else 0.1)) for i in range(120)]
    whole = _timeline(replay(ResponseEngine(policy, THRESHOLD, clock=SimulatedClock()), rows))

    state, log = tmp_path / "engine.json", tmp_path / "audit.log"
    first = ResponseEngine(policy, THRESHOLD, clock=SimulatedClock(), audit=AuditLog(log), state_path=state)
    part1 = replay(first, rows[:25])
    del first  # "killed": nothing but the files survives
    second = ResponseEngine(policy, THRESHOLD, clock=SimulatedClock(), audit=AuditLog(log), state_path=state)
    assert second.tier == 3 and second.windows == 25
    part2 = replay(second, rows, resume=True)  # the whole file again: already-seen rows are skipped
    assert _timeline(part1 + part2) == whole
    report = verify(log)
    assert report.ok and report.records == len(whole)  # one audit record per event, none doubled


def test_state_file_for_another_policy_or_threshold_is_refused(tmp_path: Path) -> None:
    policy = parse_policy(policy_text())
    state = tmp_path / "engine.json"
    run(ResponseEngine(policy, THRESHOLD, clock=SimulatedClock(), state_path=state), [0.1])
    with pytest.raises(StateFileError, match="threshold"):
        ResponseEngine(policy, 2.0, clock=SimulatedClock(), state_path=state)
    other = parse_policy(policy_text().replace('version = "7"', 'version = "8"'))
    with pytest.raises(StateFileError, match="version '7'"):
        ResponseEngine(other, THRESHOLD, clock=SimulatedClock(), state_path=state)
    state.write_text("{not json")
    with pytest.raises(StateFileError, match="unreadable"):
        ResponseEngine(policy, THRESHOLD, clock=SimulatedClock(), state_path=state)


def test_restart_reapplies_actions_of_the_active_tier_that_went_missing(tmp_path: Path) -> None:
    policy = parse_policy(policy_text())
    state = tmp_path / "engine.json"
    acts = [LogActuator("notify", "x"), Recording("cap"), Recording("fence"), Recording("stop")]
    first = ResponseEngine(policy, THRESHOLD, actuators=acts, clock=SimulatedClock(), state_path=state)
    run(first, [2.0] * 5)
    fresh = [LogActuator("notify", "x"), Recording("cap"), Recording("fence"), Recording("stop")]
    engine = ResponseEngine(policy, THRESHOLD, actuators=fresh, clock=SimulatedClock(), state_path=state)
    assert engine.tier == 2
    assert fresh[1].applied and fresh[2].applied and not fresh[3].applied
    assert fresh[0].is_applied()  # its memory came back from the state file, so it was not re-logged
    assert list(fresh[0].records) == []


KILL_SCRIPT = """
import math, os, signal, sys
from tinywarden.audit import AuditLog
from tinywarden.respond.engine import ResponseEngine, SimulatedClock
from tinywarden.respond.policy import load_policy
policy = load_policy(sys.argv[1])
audit = AuditLog(sys.argv[2])
engine = ResponseEngine(policy, 1.0, clock=SimulatedClock(), audit=audit, state_path=sys.argv[3])
kill_at = int(sys.argv[4])
for i in range(engine.windows, 120):
    if i == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    score = 2.5 if 10 <= i < 30 else (math.nan if 50 <= i < 54 else 0.1)
    engine.observe(score, at=i * 10.0)
print(engine.tier)
"""


def test_process_killed_mid_stream_resumes_with_state_and_audit_chain_intact(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(policy_text())
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    log, state = tmp_path / "audit.log", tmp_path / "engine.json"
    args = [sys.executable, str(script), str(policy_file), str(log), str(state)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    killed = subprocess.run([*args, "27"], capture_output=True, text=True, env=env, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert verify(log).ok
    done = subprocess.run([*args, "-1"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"

    reference = tmp_path / "ref.log"
    policy = parse_policy(policy_text())
    ref = ResponseEngine(policy, THRESHOLD, clock=SimulatedClock(), audit=AuditLog(reference))
    rows = [(i * 10.0, 2.5 if 10 <= i < 30 else (math.nan if 50 <= i < 54 else 0.1)) for i in range(120)]
    replay(ref, rows)
    report = verify(log)
    assert report.ok
    assert report.records == verify(reference).records  # nothing lost, nothing doubled


def test_action_held_by_two_tiers_stays_applied_until_the_lower_tier_leaves() -> None:
    """Issue 12 item 5: with ``cap`` in constrain and harden, harden's dead-man reverted it while constrain
    still held it, leaving the device in "constrain" with no rate limit."""
    policy = parse_policy(policy_text(harden_actions='["stop", "cap"]', dead_man=100.0, deescalate=300.0))
    acts = [LogActuator("notify", "x"), Recording("cap"), Recording("fence"), Recording("stop")]
    engine = ResponseEngine(policy, THRESHOLD, actuators=acts, clock=SimulatedClock())
    up = run(engine, [2.5] * 7)  # above every bar: alert, constrain, harden
    assert engine.tier == 3 and [e.action for e in up if e.event == "apply"] == ["notify", "cap", "fence", "stop"]
    # Above constrain's bar (1.5) but not harden's (2.0): constrain is renewed, harden's dead-man runs out.
    held = run(engine, [1.7] * 20, start=70.0)
    dead = [(e.action, e.action_tier) for e in held if e.reason_code == "dead_man"]
    assert dead == [("stop", 3)]  # cap stays: constrain, still active, holds it
    assert engine.tier == 2 and acts[1].applied and acts[1].calls == ["apply"]
    down = run(engine, [0.1] * 60, start=270.0)  # normal: constrain times out and only now lets cap go
    assert [(e.action, e.action_tier, e.reason_code) for e in down if e.event == "revert"] == [
        ("fence", 2, "dead_man"), ("cap", 2, "dead_man"), ("notify", 1, "normal")]
    assert not acts[1].applied and acts[1].calls == ["apply", "revert"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("entered_at", 1e9, "entered_at 1000000000.0 is not a time <= last_time"),
        ("tier", 1, "deadline\\[2\\] .* out of range"),  # constrain's deadline left set below its tier
        ("pinned", 2, "pinned 2"),
        ("fault", 99, "fault 99"),
        ("skew", -5.0, "last_time 40.0 or skew -5.0 out of range"),
        ("history", [1, 0, 0, 0], "history\\[0\\] 1 out of range"),
    ],
)
def test_state_file_breaking_a_machine_invariant_is_refused(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    """The same invariants the generated C checks at tw_respond entry guard a restored state file."""
    import json

    policy = parse_policy(policy_text())
    state = tmp_path / "engine.json"
    run(ResponseEngine(policy, THRESHOLD, clock=SimulatedClock(), state_path=state), [2.5] * 5)
    doc = json.loads(state.read_text())
    assert doc["machine"]["tier"] == 2
    ResponseEngine(policy, THRESHOLD, clock=SimulatedClock(), state_path=state)  # untouched: it loads
    doc["machine"][field] = value
    state.write_text(json.dumps(doc))
    with pytest.raises(StateFileError, match=f"engine.json: machine state breaks an invariant: {message}"):
        ResponseEngine(policy, THRESHOLD, clock=SimulatedClock(), state_path=state)


class FlakyRevert(Recording):
    """An actuator whose revert fails ``failures`` times (a busy ``nft``, a transient ``ip`` error), then works."""

    def __init__(self, name: str, failures: int) -> None:
        super().__init__(name)
        self.failures = failures

    def revert(self) -> None:
        self.calls.append("revert")
        if self.failures > 0:
            self.failures -= 1
            raise ActuatorError(f"{self.name}: simulated revert failure")
        self.applied = False


def test_an_action_whose_revert_failed_is_retried_until_it_reverts(tmp_path: Path) -> None:
    """A revert that failed once left the mitigation in place for good: the machine had left the tier and
    nothing tried again, so a transient ``nft``/``tc``/``ip`` error kept a rate cap or an egress fence up
    forever, against the dead-man promise. Now it is retried (audited when it goes through), across a
    restart too."""
    policy = parse_policy(policy_text(dead_man=60.0))
    state, log = tmp_path / "engine.json", tmp_path / "audit.log"
    cap = FlakyRevert("cap", failures=2)
    acts = [LogActuator("notify", "x"), cap, Recording("fence"), Recording("stop")]
    engine = ResponseEngine(policy, THRESHOLD, actuators=acts, clock=SimulatedClock(), audit=AuditLog(log),
                            state_path=state)
    run(engine, [1.7] * 6)  # constrain, not harden
    assert engine.tier == 2 and cap.applied
    down = run(engine, [0.1] * 6, start=60.0)  # 60 s of normal: constrain is left, the revert fails
    failed = [e for e in down if e.action == "cap" and e.event == "revert"]
    assert failed and failed[0].status.startswith("failed:") and cap.applied
    assert engine.unreverted == ("cap",)
    # Restart: the pending revert survives in the state file and is retried until it goes through.
    again = [LogActuator("notify", "x"), cap, Recording("fence"), Recording("stop")]
    engine = ResponseEngine(policy, THRESHOLD, actuators=again, clock=SimulatedClock(), audit=AuditLog(log),
                            state_path=state)
    assert engine.unreverted == ("cap",)
    later = run(engine, [0.1] * 30, start=120.0)
    assert not cap.applied and engine.unreverted == ()
    retried = [(e.time, e.status[:7], e.reason_code) for e in later if e.action == "cap" and e.event == "revert"]
    # at the first input after the restart (fails again), then after the first wait: done
    assert retried == [(120.0, "failed:", "revert_retry"), (130.0, "done", "revert_retry")]
    assert verify(log).ok


def test_a_pending_revert_is_dropped_when_its_tier_applies_the_action_again() -> None:
    policy = parse_policy(policy_text(dead_man=60.0))
    cap = FlakyRevert("cap", failures=5)
    acts = [LogActuator("notify", "x"), cap, Recording("fence"), Recording("stop")]
    engine = ResponseEngine(policy, THRESHOLD, actuators=acts, clock=SimulatedClock())
    run(engine, [1.7] * 6)
    run(engine, [0.1] * 6, start=60.0)
    assert engine.unreverted == ("cap",)
    # escalates again while the revert still fails: cap is wanted now, so no retry may lift it later
    again = run(engine, [1.7] * 12, start=115.0)
    assert [(e.time, e.event, e.status[:6]) for e in again if e.action == "cap"] == [
        (125.0, "revert", "failed"), (135.0, "apply", "done")]
    assert engine.tier == 2 and cap.applied and engine.unreverted == ()


def _edit(field: str, value: object) -> Callable[[str], str]:
    def edit(text: str) -> str:
        import json

        doc = json.loads(text)
        where = doc["machine"] if field in doc["machine"] else doc
        where[field] = value
        return json.dumps(doc)

    return edit


@pytest.mark.parametrize(
    ("name", "edit"),
    [
        ("nested 100,000 deep", lambda text: "[" * 100_000),
        ("a machine integer of 1e400", lambda text: text.replace('"started": ', '"started": 1e400, "x": ')),
        ("windows of 1e400", lambda text: text.replace('"windows": ', '"windows": 1e400, "x": ')),
        ("windows as text", _edit("windows", "abc")),
        ("windows below 0", _edit("windows", -5)),
        ("recent as a number", _edit("recent", 5)),
        ("recent holding text", _edit("recent", ["x"])),
        ("recent holding NaN", lambda text: text.replace('"recent": [', '"recent": [NaN, ')),
        ("guarded null", _edit("guarded", None)),
        ("actuators as a list", _edit("actuators", [])),
        ("a process memory that is not pids", _edit("actuators", {"stop": {"acted": {"x": [0, 1.0]}}})),
        ("unreverted naming no action", _edit("unreverted", {"nope": 2})),
    ],
)
def test_a_corrupt_state_file_is_a_state_file_error_never_another_exception(
    tmp_path: Path, name: str, edit: Callable[[str], str]
) -> None:
    """The agent sets a StateFileError's file aside and starts afresh (``engine_state_stale``); any other
    exception from a torn, edited or newer file stopped the agent at every start."""
    policy = parse_policy(policy_text())
    state = tmp_path / "engine.json"
    acts = [LogActuator("notify", "x"), Recording("cap"), Recording("fence"), Recording("stop")]
    run(ResponseEngine(policy, THRESHOLD, actuators=acts, clock=SimulatedClock(), state_path=state), [2.5] * 5)
    state.write_text(edit(state.read_text()))
    fresh = [LogActuator("notify", "x"), Recording("cap"), Recording("fence"), ProcessSuspend("stop", "telnetd")]
    with pytest.raises(StateFileError, match="engine.json: .*move it aside") as info:
        ResponseEngine(policy, THRESHOLD, actuators=fresh, clock=SimulatedClock(), state_path=state)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    assert fresh[3].snapshot() == {"acted": {}}  # a refused file leaves no memory behind in the actuators


def test_reverts_adopted_from_a_replaced_policy_are_retried_and_carried_over_a_model_swap() -> None:
    policy = parse_policy(policy_text())
    old_cap = FlakyRevert("old-cap", failures=1)
    old_cap.applied = True
    engine = ResponseEngine(policy, THRESHOLD, clock=SimulatedClock())
    engine.adopt_unreverted([old_cap], at=0.0)
    swapped = ResponseEngine(policy, THRESHOLD, actuators=engine.actuators, clock=SimulatedClock())
    swapped.take_over(engine)  # a later swap of the model alone keeps what is owed
    assert swapped.unreverted == ("old-cap",)
    events = run(swapped, [0.1] * 5)
    assert [(e.time, e.action, e.status[:6], e.action_tier) for e in events if e.event == "revert"] == [
        (10.0, "old-cap", "failed", 0), (30.0, "old-cap", "done", 0)]
    assert not old_cap.applied and swapped.unreverted == ()


def test_a_fresh_engine_sweeps_the_actions_a_run_before_it_left_in_place(tmp_path: Path) -> None:
    """An engine state set aside as unusable (or one written for the bundle this one replaced while the agent was
    stopped) took with it the only record of the actions in place: the fresh engine started at tier 0 and a rate
    cap or an egress fence stayed for good. The agent now sweeps them at start; a restored engine does not."""
    policy = parse_policy(policy_text())
    state = tmp_path / "engine.json"
    left = [LogActuator("notify", "x"), Recording("cap"), Recording("fence"), Recording("stop")]
    left[1].applied = left[2].applied = True
    engine = ResponseEngine(policy, THRESHOLD, actuators=left, clock=SimulatedClock(), state_path=state,
                            audit=AuditLog(tmp_path / "audit.log"))
    assert not engine.restored
    swept = engine.sweep(at=5.0)
    assert [(e.action, e.event, e.reason_code, e.status) for e in swept] == [
        ("cap", "revert", "leftover", "done"), ("fence", "revert", "leftover", "done")]
    assert not left[1].applied and not left[2].applied
    run(engine, [2.5] * 5)  # constrain: both applied again, and saved
    again = [LogActuator("notify", "x"), Recording("cap"), Recording("fence"), Recording("stop")]
    restored = ResponseEngine(policy, THRESHOLD, actuators=again, clock=SimulatedClock(), state_path=state)
    assert restored.restored and restored.sweep() == [] and again[1].applied  # its tier holds them


def test_reverts_adopted_from_a_replaced_policy_survive_a_restart(tmp_path: Path) -> None:
    """Reverts owed by a replaced policy (a policy swap whose revert of its cap failed) lived in memory only: an
    agent restarted before the retry went through forgot them, and the cap stayed for good. The state file now
    holds each one's action and that policy's [critical] table; the restarted engine rebuilds it and retries."""
    from tinywarden.respond.actuators import DryRunActuator
    from tinywarden.respond.critical import Critical
    from tinywarden.respond.policy import ActionSpec

    old = parse_policy(policy_text(dead_man=60.0))
    new = parse_policy(policy_text(dead_man=90.0))
    state = tmp_path / "engine.json"
    built: list[tuple[ActionSpec, Critical, FlakyRevert]] = []

    def rebuild(spec: ActionSpec, critical: Critical) -> FlakyRevert:
        act = FlakyRevert(spec.name, failures=1)
        act.applied = True  # what the old run left on the device
        built.append((spec, critical, act))
        return act

    old_cap = FlakyRevert("cap", failures=5)
    old_cap.applied = True
    engine = ResponseEngine(new, THRESHOLD, clock=SimulatedClock(), state_path=state, rebuild=rebuild)
    engine.adopt_unreverted([old_cap, Recording("not-in-the-old-policy")], at=0.0, policy=old)
    del engine  # the agent stops before any retry

    again = ResponseEngine(new, THRESHOLD, clock=SimulatedClock(), state_path=state, rebuild=rebuild)
    assert again.unreverted == ("cap",)  # one the old policy had no action for is forgotten (documented)
    (spec, critical, act), = built
    assert (spec.type, spec.params["interface"], spec.params["rate"]) == ("tc_rate_limit", "eth0", "128kbit")
    assert critical == old.critical
    events = run(again, [0.1] * 5)
    assert [(e.action, e.status[:6], e.action_tier) for e in events if e.event == "revert"] == [
        ("cap", "failed", 0), ("cap", "done", 0)]
    assert not act.applied and again.unreverted == ()
    assert ResponseEngine(new, THRESHOLD, clock=SimulatedClock(), state_path=state, rebuild=rebuild).unreverted == ()

    # By default (no rebuild given, as the default actuators) the action comes back as a dry-run stand-in, never
    # a command run from a state file the engine did not build its actuators for.
    engine = ResponseEngine(new, THRESHOLD, clock=SimulatedClock(), state_path=state)
    engine.adopt_unreverted([FlakyRevert("fence", failures=9)], at=0.0, policy=old)
    restarted = ResponseEngine(new, THRESHOLD, clock=SimulatedClock(), state_path=state)
    assert restarted.unreverted == ("fence",) and isinstance(restarted._orphans[0].act, DryRunActuator)


@pytest.mark.parametrize("orphan", [
    {"name": "cap", "memo": {}, "action": {"type": "tc_rate_limit", "interface": "eth0", "rate": "0bit"},
     "critical": {}},
    {"name": "cap", "memo": {}, "action": {"type": "interface_down", "interface": "eth1"},
     "critical": {"interfaces": ["eth1"]}},
    {"name": "cap", "memo": {}, "action": {"type": "explode"}, "critical": {}},
    {"name": "cap", "memo": [], "action": {"type": "log"}, "critical": {}},
    "cap",
])
def test_an_edited_orphan_in_the_state_file_is_a_state_file_error(tmp_path: Path, orphan: object) -> None:
    """An action of a replaced policy read back from the state file is checked as a policy's action is."""
    import json

    from tinywarden.respond.engine import StateFileError

    policy = parse_policy(policy_text())
    state = tmp_path / "engine.json"
    ResponseEngine(policy, THRESHOLD, clock=SimulatedClock(), state_path=state).save()
    doc = json.loads(state.read_text())
    state.write_text(json.dumps({**doc, "orphans": [orphan]}))
    with pytest.raises(StateFileError, match="a replaced policy still to revert is wrong") as info:
        ResponseEngine(policy, THRESHOLD, clock=SimulatedClock(), state_path=state)
    assert "\n" not in str(info.value)
