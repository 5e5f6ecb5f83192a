"""The fail-safe bounds guard end to end: learned at ``Pipeline.fit``, stored in the model file, and judging
the raw windows for the response engine (agent and ``tinywarden respond --telemetry``) while the model
path is down. Faults are real: the fitted detector is replaced by one that raises or returns NaN."""

from __future__ import annotations

import copy
import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import CAMERA_POLICY
from inprocess import cli
from tinywarden import bundle as tb
from tinywarden.agent.config import AgentConfig
from tinywarden.agent.loop import Agent
from tinywarden.agent.sources import ReplaySource
from tinywarden.agent.status import read_status
from tinywarden.detectors import make_detector
from tinywarden.detectors.bounds import fail_safe_detector
from tinywarden.errors import ModelFileError
from tinywarden.features import batch_windows, window_end_rows
from tinywarden.modelfile import decode, encode, pipeline_from_bytes, pipeline_to_bytes, save_pipeline
from tinywarden.pipeline import GUARD_MARGIN, Pipeline, normal_window_mask
from tinywarden.respond import ResponseEngine, SimulatedClock, parse_policy
from tinywarden.respond.engine import REASON_FAILSAFE_BOUNDS
from tinywarden.simulate import simulate
from tinywarden.telemetry import Series
from tinywarden.telemetry.io import write_csv

POLICY = CAMERA_POLICY.replace('name = "camera-test"', 'name = "guard-test"').replace(
    "telemetry_timeout_s", "fault_tolerance = 3\ntelemetry_timeout_s")


class RaisingDetector:
    """Stands in for a model that crashes on every window (the fault the guard must cover)."""

    input_kind = "features"  # what the replaced EWMA detector reads

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        raise RuntimeError("model crashed")


class NaNDetector(RaisingDetector):
    """A model whose arithmetic broke: every score is NaN."""

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), np.nan)


class BrokenPathDetector:
    """A model path that fails on every sample, not only when a window completes (no ``input_kind``)."""


@dataclass
class Kit:
    pipeline: Pipeline  # ewma, window 32 / stride 16, trained on attack-free camera telemetry
    normal: Series  # attack-free camera telemetry from another day
    attack: Series  # camera telemetry with botnet floods (every flood window breaks a learned bound)
    key: object
    pub: bytes

    def bundle(self, tmp: Path, model: bytes) -> Path:
        raw = tb.create_bundle(model, POLICY.encode(), {"model_id": "cam-ewma", "profile": "camera"})
        path = tmp / "model.twbundle"
        path.write_bytes(tb.sign_bundle(raw, self.key, version=1))
        return path


@pytest.fixture(scope="module")
def kit() -> Kit:
    train = simulate("camera", days=2, attacks="none", seed=11)
    p = Pipeline(make_detector("ewma"), window=32, stride=16).fit(train)
    key = tb.generate_key()
    return Kit(p, simulate("camera", days=1, attacks="none", seed=13),
               simulate("camera", days=2, attacks="botnet_flood", seed=12), key, tb.public_key_of(key))  # fmt: skip


def without_guard(p: Pipeline) -> bytes:
    """A model file as tinywarden wrote it before the guard existed (no ``guard`` key, no guard arrays)."""
    old = copy.copy(p)
    old.guard_ = None
    return pipeline_to_bytes(old)


def attack_windows(p: Pipeline, s: Series) -> tuple[np.ndarray, np.ndarray]:
    """(end time, holds an attacked row) of every window of ``s``."""
    ends = window_end_rows(len(s), p.window, p.stride)
    return s.timestamps[ends], ~normal_window_mask(s.labels, ends, p.window)


def run_agent(kit: Kit, tmp: Path, series: Series, model: bytes, broken: type | None) -> tuple[Agent, list[dict]]:
    cfg = AgentConfig(pubkey=kit.pub, state_dir=tmp / "state", bundle_path=kit.bundle(tmp, model),
                      device_id="cam-1", audit_fsync=False, persist_engine=False)  # fmt: skip
    with Agent(cfg, series.channels, replay=True) as a:
        if broken is not None:
            a.model.pipeline.detector = broken()
        a.run(ReplaySource(series))
    return a, audit_records(cfg.state_dir / "audit.log")


def audit_records(path: Path) -> list[dict]:
    """Every record of a (possibly rotated) audit log, oldest first."""
    rotated = [f for f in path.parent.glob(path.name + ".*") if f.suffix[1:].isdigit()]
    files = sorted(rotated, key=lambda f: -int(f.suffix[1:])) + [path]
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


# ----------------------------------------------------------------------------------------- fitting


def test_guard_is_fitted_on_the_raw_normal_windows_and_thinning_them_changes_nothing() -> None:
    s = simulate("valve", days=2, attacks="all", seed=4, attack_free_days=1)
    # A feature pipeline with a small stride: the guard still sees raw samples, and only the windows
    # needed to cover every sample and step of the normal windows are materialised.
    p = Pipeline(make_detector("kmeans"), window=32, stride=4).fit(s)
    values = p.select_channels(s)
    ends = window_end_rows(len(values), 32, 4)
    every = np.concatenate(list(batch_windows(values, 32, 4)))[normal_window_mask(s.labels, ends, 32)]
    reference = fail_safe_detector(every, GUARD_MARGIN)
    assert len(p._guard_windows(s)) < len(every) // 4
    for name in ("lo_", "hi_", "rate_"):
        assert getattr(p.guard_, name).tobytes() == getattr(reference, name).tobytes()
    # The attack windows are not part of what the guard learned.
    attacked = fail_safe_detector(np.concatenate(list(batch_windows(values, 32, 4))), GUARD_MARGIN)
    assert not all(np.array_equal(getattr(p.guard_, a), getattr(attacked, a)) for a in ("lo_", "hi_", "rate_"))


def test_guard_verdicts_on_attack_and_normal_windows(kit: Kit) -> None:
    p = kit.pipeline
    values = p.select_channels(kit.attack)
    _, attacked = attack_windows(p, kit.attack)
    ends = window_end_rows(len(values), p.window, p.stride)
    verdicts = [p.judge_window(values[e - p.window + 1 : e + 1]) for e in ends]
    hit = np.array([v.violation for v in verdicts])
    assert hit[attacked].all() and not hit[~attacked].any()
    flood = verdicts[int(np.flatnonzero(attacked)[0])]
    assert flood.score > 0 and "tx_pkts" in flood.reason
    nan_window = values[:32].copy()
    nan_window[5, 2] = np.nan
    v = p.judge_window(nan_window)
    assert v.violation is None and "power_mw" in v.reason and math.isnan(v.score)
    assert p.judge_window(values[:31]).violation is None  # a short window cannot be judged either


# -------------------------------------------------------------------------------------- model file


def test_model_file_round_trip_keeps_the_guard_bit_identical(kit: Kit, tmp_path: Path) -> None:
    p = kit.pipeline
    path = tmp_path / "m.twb"
    save_pipeline(p, path)
    header, arrays = decode(path.read_bytes())
    assert header["guard"] == {"name": "bounds", "params": p.guard_.get_params()}
    assert {k for k in arrays if k.startswith("guard/")} == {"guard/lo_", "guard/hi_", "guard/rate_",
                                                             "guard/input_shape_"}  # fmt: skip
    q = pipeline_from_bytes(path.read_bytes())
    for name in ("lo_", "hi_", "rate_"):
        assert getattr(q.guard_, name).tobytes() == getattr(p.guard_, name).tobytes()
    assert q.guard_.input_shape_ == p.guard_.input_shape_ == (32, 6) and q.guard_note_ == ""
    assert not any(k.startswith("guard/") for k in q.extra_arrays_)  # later stages never see it as theirs
    # Storing the guard leaves the float pipeline's scores alone.
    np.testing.assert_array_equal(q.score(kit.attack).scores, p.score(kit.attack).scores)


def test_old_model_file_without_guard_loads_with_a_note(kit: Kit) -> None:
    data = without_guard(kit.pipeline)
    header, arrays = decode(data)
    assert "guard" not in header and not any(k.startswith("guard/") for k in arrays)
    q = pipeline_from_bytes(data, "old.twb")
    assert q.guard_ is None and "old.twb" in q.guard_note_ and "no fail-safe guard" in q.guard_note_
    v = q.judge_window(kit.attack.values[:32])
    assert v.violation is None and v.reason == q.guard_note_
    np.testing.assert_array_equal(q.score(kit.attack).scores, kit.pipeline.score(kit.attack).scores)


def test_a_guard_that_does_not_fit_the_model_is_refused(kit: Kit) -> None:
    header, arrays = decode(pipeline_to_bytes(kit.pipeline))
    arrays["guard/lo_"] = arrays["guard/lo_"][:3]
    with pytest.raises(ModelFileError, match="fail-safe guard"):
        pipeline_from_bytes(encode({k: v for k, v in header.items() if k != "arrays"}, arrays), "bad.twb")
    del arrays["guard/rate_"]
    with pytest.raises(ModelFileError, match="bad.twb: fail-safe guard.*rate_"):
        pipeline_from_bytes(encode({k: v for k, v in header.items() if k != "arrays"}, arrays), "bad.twb")


# ------------------------------------------------------------------------------------------ engine


def engine(threshold: float = 1.0) -> ResponseEngine:
    return ResponseEngine(parse_policy(POLICY), threshold, clock=SimulatedClock())


def test_engine_guard_violations_escalate_with_the_failsafe_reason_and_quiet_windows_step_down() -> None:
    e = engine()
    events = []
    for i in range(4):
        events += e.observe_guarded(True, "RuntimeError: model crashed", at=160.0 * i, detail="tx_pkts high")
    applies = [ev for ev in events if ev.event == "apply"]
    assert [(ev.action_tier, ev.reason_code) for ev in applies] == [(1, REASON_FAILSAFE_BOUNDS),
                                                                    (2, REASON_FAILSAFE_BOUNDS)]  # fmt: skip
    assert "not the model" in applies[0].reason and "tx_pkts high" in applies[0].reason
    assert [ev.reason_code for ev in events if ev.event == "note"] == ["guard_engaged"]
    assert e.state.fault == 0 and e.guarded == 4 and not e.recent  # stand-ins are not model scores
    out = []
    for i in range(4, 20):  # the guard sees a quiet device: hysteresis brings the tiers down
        out += e.observe_guarded(False, "RuntimeError: model crashed", at=160.0 * i)
    assert [(ev.event, ev.reason_code) for ev in out] == [("revert", "normal"), ("revert", "normal")]
    assert e.tier == 0 and e.state.fault == 0
    released = e.observe(0.1, at=160.0 * 20)
    assert [ev.reason_code for ev in released] == ["guard_released"] and e.guarded == 0


def test_engine_guard_verdicts_do_not_count_toward_fault_tolerance_but_unjudged_windows_do() -> None:
    e = engine()
    for i in range(10):
        assert not [ev for ev in e.observe_guarded(False, "NaN score", at=10.0 * i) if ev.event == "apply"]
    assert e.tier == 0 and e.state.fault == 0
    events = []
    for i in range(10, 13):  # NaN telemetry: the guard cannot judge, the fault rules take over
        events += e.observe_guarded(None, "non-finite score nan", at=10.0 * i, detail="NaN in cpu_pct",
                                    score_fault=True)  # fmt: skip
    applies = [ev for ev in events if ev.event == "apply"]
    assert [(ev.action_tier, ev.reason_code) for ev in applies] == [(1, "fault_score")]
    assert "fail-safe bounds cannot judge: NaN in cpu_pct" in applies[0].reason
    cleared = e.observe_guarded(False, "non-finite score nan", at=130.0)
    assert [ev.reason_code for ev in cleared] == ["fault_cleared"] and "fail-safe bounds" in cleared[0].reason
    model = engine()
    for i in range(3):
        model.observe_guarded(None, "RuntimeError: boom", at=10.0 * i, detail="no guard")
    assert model.tier == 1 and model.state.fault != 0  # a model exception without verdict: fault_model


def test_engine_guard_streak_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "engine.json"
    e = ResponseEngine(parse_policy(POLICY), 1.0, clock=SimulatedClock(), state_path=state)
    e.observe_guarded(False, "boom", at=0.0)
    e.observe_guarded(False, "boom", at=10.0)
    again = ResponseEngine(parse_policy(POLICY), 1.0, clock=SimulatedClock(), state_path=state)
    assert again.guarded == 2
    assert [ev.reason_code for ev in again.observe_guarded(True, "boom", at=20.0)] == []  # no second "engaged"


# ------------------------------------------------------------------------------------------- agent


@pytest.mark.parametrize("broken", [RaisingDetector, NaNDetector, BrokenPathDetector])
def test_agent_model_down_during_an_attack_guard_detects_and_engine_escalates(kit, tmp_path, broken) -> None:
    a, recs = run_agent(kit, tmp_path, kit.attack, pipeline_to_bytes(kit.pipeline), broken)
    times, attacked = attack_windows(kit.pipeline, kit.attack)
    applies = [r["data"] for r in recs if r["kind"] == "action" and r["data"]["event"] == "apply"]
    assert applies and all(d["reason_code"] == REASON_FAILSAFE_BOUNDS for d in applies)
    assert all(d["guard"]["violation"] is True and "outside its learned range" in d["guard"]["detail"]
               for d in applies)  # fmt: skip
    attack_times = set(times[attacked].tolist())
    assert all(d["time"] in attack_times for d in applies)  # only the floods, never the quiet days
    assert a.guarded_windows == len(times) and a.guard_violations == int(attacked.sum())
    assert a.model_faults >= len(times) and a.engine.state.fault == 0  # never forced to the fail-safe tier
    status = read_status(tmp_path / "state" / "status.json")
    f = status["faults"]
    assert f["guard"] == "bounds on 6 channel(s)" and f["guarding"] is True and not f["engine_fault"]
    assert f["guarded_windows"] == len(times) and f["model_faults"] == a.model_faults
    kinds = [r["kind"] for r in recs]
    assert kinds.count("model_fault") == 1  # the fault is recorded once per streak ...
    fault = next(r["data"] for r in recs if r["kind"] == "model_fault")
    assert fault["guard"] == "bounds on 6 channel(s)" and fault["detail"] == a.last_fault
    assert sum(1 for r in recs if r["data"].get("reason_code") == "guard_engaged") == 1  # ... and surfaced


def test_agent_model_down_on_a_quiet_device_raises_nothing(kit, tmp_path) -> None:
    a, recs = run_agent(kit, tmp_path, kit.normal, pipeline_to_bytes(kit.pipeline), RaisingDetector)
    assert not [r for r in recs if r["kind"] == "action"]
    assert a.engine.tier == 0 and a.incidents == 0 and a.guard_violations == 0
    assert a.guarded_windows == len(window_end_rows(len(kit.normal), 32, 16)) > 100
    assert read_status(tmp_path / "state" / "status.json")["faults"]["last"] == "RuntimeError: model crashed"


def test_agent_with_an_old_model_file_falls_back_to_the_fault_rules(kit, tmp_path) -> None:
    a, recs = run_agent(kit, tmp_path, kit.normal, without_guard(kit.pipeline), RaisingDetector)
    applies = [r["data"] for r in recs if r["kind"] == "action" and r["data"]["event"] == "apply"]
    assert [(d["action_tier"], d["reason_code"]) for d in applies] == [(1, "fault_model")]
    assert "fail-safe bounds cannot judge" in applies[0]["reason"] and "no fail-safe guard" in applies[0]["reason"]
    assert applies[0]["time"] == float(kit.normal.timestamps[31 + 2 * 16])  # the third faulted window
    assert a.engine.tier == 1 and a.guarded_windows == 0
    status = a.status()["faults"]
    assert status["guard"].startswith("none: ") and status["engine_fault"] is True


def test_agent_model_recovers_and_the_guard_hands_back(kit, tmp_path) -> None:
    cfg = AgentConfig(pubkey=kit.pub, state_dir=tmp_path / "state",
                      bundle_path=kit.bundle(tmp_path, pipeline_to_bytes(kit.pipeline)),
                      device_id="cam-1", audit_fsync=False, persist_engine=False)  # fmt: skip
    samples = ReplaySource(kit.normal).__iter__()
    with Agent(cfg, kit.normal.channels, replay=True) as a:
        real = a.model.pipeline.detector
        a.model.pipeline.detector = RaisingDetector()
        a.run(samples, 32 * 10)
        assert a.engine.guarded > 0
        a.model.pipeline.detector = real
        a.run(samples, 32 * 10)
        assert a.engine.guarded == 0 and not a.status()["faults"]["guarding"]
    recs = audit_records(cfg.state_dir / "audit.log")
    codes = [r["data"].get("reason_code") for r in recs if r["kind"] == "note"]
    assert codes == ["guard_engaged", "guard_released"]
    assert [r["kind"] for r in recs].count("model_recovered") == 1


# --------------------------------------------------------------------------------------------- CLI


def cli_inputs(kit: Kit, tmp: Path, model: bytes) -> tuple[Path, Path, Path, Path]:
    """Model file, policy, telemetry and a scores file whose every score is missing (the model was down)."""
    (tmp / "m.twb").write_bytes(model)
    (tmp / "policy.toml").write_text(POLICY)
    write_csv(kit.attack, tmp / "telemetry.csv")
    scored = kit.pipeline.score(kit.attack)
    with open(tmp / "scores.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "score"])
        w.writerows([repr(float(t)), "nan"] for t in scored.end_times)
    return tmp / "m.twb", tmp / "policy.toml", tmp / "telemetry.csv", tmp / "scores.csv"


def test_respond_with_telemetry_replays_the_guard(kit, tmp_path) -> None:
    model, policy, telemetry, scores = cli_inputs(kit, tmp_path, pipeline_to_bytes(kit.pipeline))
    base = ("respond", "--policy", policy, "--scores", scores, "--model", model, "--json", "--notes")
    rc, out, _ = cli(*base, "--telemetry", telemetry)
    assert rc == 0
    events = [json.loads(line) for line in out.splitlines()]
    applies = [e for e in events if e["event"] == "apply"]
    times, attacked = attack_windows(kit.pipeline, kit.attack)
    assert applies and all(e["reason_code"] == REASON_FAILSAFE_BOUNDS for e in applies)
    assert {e["time"] for e in applies} <= set(times[attacked].tolist())
    assert not any(e["reason_code"].startswith("fault_") for e in events)
    # The same scores without the raw telemetry: every window is a fault and the fail-safe tier holds.
    rc, out, _ = cli(*base)
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["action_tier"], e["reason_code"]) for e in events if e["event"] == "apply"] == [(1, "fault_score")]


def test_respond_telemetry_with_an_old_model_warns_and_uses_the_fault_rules(kit, tmp_path) -> None:  # fmt: skip
    model, policy, telemetry, scores = cli_inputs(kit, tmp_path, without_guard(kit.pipeline))
    rc, out, err = cli("respond", "--policy", policy, "--scores", scores, "--model", model,
                       "--telemetry", telemetry, "--json")  # fmt: skip
    assert rc == 0 and "no fail-safe guard" in err
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["action_tier"], e["reason_code"]) for e in events if e["event"] == "apply"] == [(1, "fault_score")]
    rc, _, err = cli("respond", "--policy", policy, "--scores", scores, "--threshold", "1",
                     "--telemetry", telemetry)  # fmt: skip
    assert rc == 2 and "--telemetry needs --model" in err
