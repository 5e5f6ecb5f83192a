"""The agent loop over replayed telemetry with real signed bundles: responses, incidents, status, hot swap,
refused bundles, faults and bounded memory. (MQTT delivery is in test_agent_mqtt.py.)"""

from __future__ import annotations

import json
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import CAMERA_POLICY
from tinywarden import bundle as tb
from tinywarden.agent.config import AgentConfig, AgentError
from tinywarden.agent.escalate import Incident
from tinywarden.agent.loop import Agent, WindowScore
from tinywarden.agent.sources import ReplaySource, channel_indices
from tinywarden.agent.status import read_status
from tinywarden.audit import verify
from tinywarden.detectors import make_detector
from tinywarden.errors import DataError
from tinywarden.features import extract, feature_names
from tinywarden.modelfile import pipeline_to_bytes
from tinywarden.pipeline import Pipeline
from tinywarden.respond import ResponseEngine, SimulatedClock, parse_policy
from tinywarden.simulate import simulate
from tinywarden.telemetry import Series

POLICY = CAMERA_POLICY

# Signed, well-formed, but its only action would suspend the process the policy calls critical.
CRITICAL_POLICY = """
[policy]
name = "bad"
version = "1"
[critical]
processes = ["camera-daemon"]
[tiers.alert]
actions = ["stop_it"]
dead_man_s = 60
[actions.stop_it]
type = "process_suspend"
process = "camera-daemon"
"""


@dataclass
class Kit:
    key: Ed25519PrivateKey
    pub: bytes
    p1: Pipeline  # ewma, window 32 / stride 16
    p2: Pipeline  # ewma, window 64 / stride 32: a swap must cope with a different window
    m1: bytes
    m2: bytes
    stream: Series  # two days of camera telemetry with every attack injected

    def signed(self, model: bytes, version: int, policy: str = POLICY, key: Ed25519PrivateKey | None = None,
               model_id: str = "cam-ewma") -> bytes:  # fmt: skip
        raw = tb.create_bundle(model, policy.encode(), {"model_id": model_id, "profile": "camera"})
        return tb.sign_bundle(raw, key or self.key, version=version)


@pytest.fixture(scope="module")
def kit() -> Kit:
    return build_kit()


def build_kit() -> Kit:
    """Two small models trained on simulated camera telemetry, a signing key and an attacked stream."""
    train = simulate("camera", days=2, attacks="none", seed=11)
    p1 = Pipeline(make_detector("ewma"), window=32, stride=16).fit(train)
    p2 = Pipeline(make_detector("ewma"), window=64, stride=32).fit(train)
    key = tb.generate_key()
    stream = simulate("camera", days=2, attacks="all", seed=12)
    return Kit(key, tb.public_key_of(key), p1, p2, pipeline_to_bytes(p1), pipeline_to_bytes(p2), stream)


def config(kit: Kit, tmp: Path, bundle: bytes | None, **kw) -> AgentConfig:
    path = None
    if bundle is not None:
        path = tmp / "offered.twbundle"
        path.write_bytes(bundle)
    opts = {"device_id": "cam-1", "audit_fsync": False, "persist_engine": False, "poll_interval_s": 1.0}
    return AgentConfig(pubkey=kit.pub, state_dir=tmp / "state", bundle_path=path, **{**opts, **kw})


def expected_incidents(pipeline: Pipeline, series: Series) -> list[tuple[float, int, float]]:
    """(window end, tier, score) of every tier entry, from the batch scorer and a bare engine: no agent."""
    scored = pipeline.score(series)
    engine = ResponseEngine(parse_policy(POLICY), scored.threshold, clock=SimulatedClock())
    out = []
    for t, s in zip(scored.end_times, scored.scores, strict=True):
        tiers = sorted({e.action_tier for e in engine.observe(float(s), at=float(t)) if e.event == "apply"})
        out += [(float(t), tier, float(s)) for tier in tiers]
    return out


def audit_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------- replay


def test_replay_gives_the_independent_timeline_incidents_status_and_audit(kit, tmp_path):
    incidents: list[Incident] = []
    windows: list[WindowScore] = []
    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1))
    with Agent(cfg, kit.stream.channels, replay=True, on_window=windows.append, on_incident=incidents.append) as a:
        assert a.run(ReplaySource(kit.stream)) == len(kit.stream)

    batch = kit.p1.score(kit.stream)
    np.testing.assert_allclose([w.time for w in windows], batch.end_times)
    np.testing.assert_allclose([w.score for w in windows], batch.scores, rtol=1e-9)
    expected = expected_incidents(kit.p1, kit.stream)
    assert {tier for _, tier, _ in expected} == {1, 2}, "the stream must exercise two tiers"
    assert [(i.window_end, i.tier) for i in incidents] == [(t, tier) for t, tier, _ in expected]
    np.testing.assert_allclose([i.score for i in incidents], [s for _, _, s in expected], rtol=1e-9)

    attack_rows = np.flatnonzero(kit.stream.labels)
    in_attack = [i for i in incidents if kit.stream.timestamps[attack_rows].min() <= i.window_end]
    assert in_attack, "the injected attacks must raise incidents"
    for inc in incidents:
        assert (inc.device_id, inc.model_id, inc.model_version) == ("cam-1", "cam-ewma", 1)
        assert inc.tier_name == ("alert" if inc.tier == 1 else "constrain")
        assert inc.threshold == pytest.approx(kit.p1.threshold_)
        assert inc.window_end - inc.window_start == pytest.approx(31 * kit.stream.period)
        # the one confidence scale: the window's calibrated likelihood, as `score` writes it
        conf = kit.p1.confidence(batch.scores, kit.stream, batch.end_rows)[list(batch.end_times).index(inc.window_end)]
        assert inc.confidence == pytest.approx(conf, rel=1e-9)
        # A summary: five scaled features by name, most deviating first; no raw sample values.
        assert len(inc.features) == 5
        assert all(":" in name and name.split(":")[0] in kit.stream.channels for name in inc.features)
        z = [abs(v) for v in inc.features.values()]
        assert z == sorted(z, reverse=True)
    # The summary values are the window's scaled features (z relative to training), recomputed here.
    first = incidents[0]
    end = int(np.searchsorted(kit.stream.timestamps, first.window_end))
    win = kit.stream.values[end - 31 : end + 1]
    z_all = (extract(win[None], kit.p1.features)[0] - kit.p1.offset_) / kit.p1.scale_
    names = feature_names(kit.p1.channels_, kit.p1.features)
    top = np.argsort(-np.abs(z_all))[:5]
    assert first.features == pytest.approx({names[i]: z_all[i] for i in top}, abs=1e-3)

    st = read_status(cfg.state_dir / "status.json")
    assert st["model"]["id"] == "cam-ewma" and st["model"]["version"] == 1
    assert st["samples_seen"] == len(kit.stream) and st["windows_scored"] == len(windows)
    assert st["incidents"] == len(incidents)
    assert [s for _, s in st["last_scores"]] == pytest.approx([w.score for w in windows[-32:]])
    assert st["tier"] == a.engine.tier and st["model"]["threshold"] == kit.p1.threshold_
    assert st["pending_model"] is None and st["escalation"] is None
    assert st["confidence"]["scale"] == "likelihood"
    last = kit.p1.confidence(batch.scores, kit.stream, batch.end_rows)[-1]
    assert st["confidence"]["last"] == pytest.approx(last, rel=1e-9)
    assert st["adaptation"]["enabled"] is False and "enabled = false" in st["adaptation"]["reason"]

    assert verify(cfg.state_dir / "audit.log").ok
    recs = audit_records(cfg.state_dir / "audit.log")
    kinds = [r["kind"] for r in recs]
    assert kinds[:2] == ["genesis", "agent_start"] and kinds[-1] == "agent_stop"
    applied = [r for r in recs if r["kind"] == "action" and r["data"]["event"] == "apply"]
    assert len(applied) == len(expected)
    assert all(0.0 <= r["data"]["confidence"] <= 1.0 for r in applied)


def test_missing_channels_are_named_at_start(kit, tmp_path):
    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1))
    with pytest.raises(AgentError, match="tx_bytes.*distinct_dst"):
        Agent(cfg, ["cpu_pct", "mem_pct", "power_mw", "tx_pkts"], replay=True)
    assert tb.read_state(cfg.state_dir) is None, "a bundle this device cannot run must not become accepted"
    assert channel_indices(["a", "b"], ["x", "a", "y"], {"b": "y"}) == [1, 2]
    with pytest.raises(DataError, match=r"b \(mapped to zz\)"):
        channel_indices(["a", "b"], ["a"], {"b": "zz"})


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda k, b: b[:-40], "truncated|claims"),
        (lambda k, b: b[:200] + bytes([b[200] ^ 1]) + b[201:], "tampered|not valid JSON|canonical"),
        (lambda k, b: k.signed(k.m1, 1, key=tb.generate_key()), "not by the trusted key"),
        (lambda k, b: k.signed(k.m1, 1, policy=CRITICAL_POLICY), "critical process"),
        (lambda k, b: k.signed(k.m1[:-5], 1), "model section"),
    ],
    ids=["truncated", "byte-flip", "wrong-key", "critical-policy", "corrupt-model"],
)
def test_an_unusable_first_bundle_stops_the_start_with_a_clear_error(kit, tmp_path, mutate, message):
    cfg = config(kit, tmp_path, mutate(kit, kit.signed(kit.m1, 1)))
    with pytest.raises(Exception, match=message) as err:
        Agent(cfg, kit.stream.channels, replay=True)
    assert isinstance(err.value, AgentError)


# ----------------------------------------------------------------------------------------- hot swap


def test_hot_swap_mid_replay_leaves_no_window_unscored(kit, tmp_path):
    windows: list[WindowScore] = []
    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1))
    samples = iter(ReplaySource(kit.stream))
    half = len(kit.stream) // 2 + 7  # not on a window boundary of either model
    with Agent(cfg, kit.stream.channels, replay=True, on_window=windows.append) as a:
        a.run(samples, half)
        assert a.model.bundle.version == 1
        assert cfg.bundle_path is not None
        cfg.bundle_path.write_bytes(kit.signed(kit.m2, 2, model_id="cam-ewma"))
        a.run(samples, 5)  # the next poll finds it: pending, filling its own 64-sample window
        assert a.pending is not None and a.pending.bundle.version == 2
        st = read_status(cfg.state_dir / "status.json")
        assert st["pending_model"]["version"] == 2 and st["model"]["version"] == 1
        a.run(samples)
    models = [w.model for w in windows]
    first_v2 = models.index("cam-ewma@v2")
    assert set(models[:first_v2]) == {"cam-ewma@v1"} and set(models[first_v2:]) == {"cam-ewma@v2"}
    gaps = np.diff([w.time for w in windows])
    assert gaps.max() <= 32 * kit.stream.period, "a window went unscored across the swap"
    # The new model's windows after the swap are exactly its batch windows over the samples it saw.
    swap_row = int(np.searchsorted(kit.stream.timestamps, windows[first_v2].time))
    start_row = swap_row - 63
    tail = Series(kit.stream.timestamps[start_row:], kit.stream.values[start_row:], kit.stream.channels)
    np.testing.assert_allclose([w.score for w in windows[first_v2:]], kit.p2.score(tail).scores, rtol=1e-9)

    st = read_status(cfg.state_dir / "status.json")
    assert st["model"]["version"] == 2 and st["model"]["window"] == 64 and st["bundles"]["swaps"] == 1
    assert tb.read_state(cfg.state_dir).accepted_version == 2
    swap = [r for r in audit_records(cfg.state_dir / "audit.log") if r["kind"] == "model_swap"]
    assert len(swap) == 1 and swap[0]["data"]["engine"] == "carried over"
    assert swap[0]["data"]["from"]["version"] == 1 and swap[0]["data"]["to"]["version"] == 2


def test_bundle_installed_by_another_tool_is_picked_up_from_the_state_dir(kit, tmp_path):
    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1))
    samples = iter(ReplaySource(kit.stream))
    with Agent(cfg, kit.stream.channels, replay=True) as a:
        a.run(samples, 1000)
        other = tmp_path / "v3.twbundle"
        other.write_bytes(kit.signed(kit.m1, 3, policy=POLICY.replace('version = "1"', 'version = "2"')))
        tb.install_bundle(other, kit.pub, cfg.state_dir)  # what `tinywarden install` does
        a.run(samples, 1000)
        assert a.model.bundle.version == 3
    swap = [r for r in audit_records(cfg.state_dir / "audit.log") if r["kind"] == "model_swap"]
    assert swap[0]["data"]["engine"] == "restarted (policy changed)"


def test_an_action_whose_revert_failed_at_a_policy_swap_is_retried_by_the_new_engine(kit, tmp_path):
    """A bundle with a new policy reverts the old policy's actions; one whose revert failed (a busy nft) was
    audited and forgotten with the old engine, so it stayed on the device for good."""
    from tinywarden.respond.actuators import ActuatorError, Targets
    from tinywarden.respond.actuators.base import Actuator

    class Stuck(Actuator):
        name = "stop_it"

        def __init__(self) -> None:
            self.applied, self.failures = True, 2

        def apply(self) -> None:
            self.applied = True

        def revert(self) -> None:
            if self.failures:
                self.failures -= 1
                raise ActuatorError("nft: Device or resource busy")
            self.applied = False

        def is_applied(self) -> bool:
            return self.applied

        def describe(self) -> str:
            return "stuck"

        def targets(self) -> Targets:
            return Targets()

    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1))
    samples = iter(ReplaySource(kit.stream))
    stuck = Stuck()
    with Agent(cfg, kit.stream.channels, replay=True) as a:
        a.run(samples, 100)
        a.engine.actuators[0] = stuck  # the old policy's action, in place
        other = tmp_path / "v3.twbundle"
        other.write_bytes(kit.signed(kit.m1, 3, policy=POLICY.replace('version = "1"', 'version = "2"')))
        tb.install_bundle(other, kit.pub, cfg.state_dir)
        while a.model.bundle.version != 3:
            a.run(samples, 1)
        assert stuck.applied and a.engine.unreverted == ("stop_it",)
        a.write_status()
        assert read_status(cfg.state_dir / "status.json")["unreverted"] == ["stop_it"]
        a.run(samples, 2000)
        assert not stuck.applied and a.engine.unreverted == ()
    records = audit_records(cfg.state_dir / "audit.log")
    assert [r["data"]["status"][:7] for r in records if r["kind"] == "swap_revert"] == ["failed:"]
    retries = [r["data"] for r in records if r["data"].get("reason_code") == "revert_retry"]
    assert [(d["action"], d["status"][:7]) for d in retries] == [("stop_it", "failed:"), ("stop_it", "done")]


def test_an_agent_starting_without_engine_state_reverts_what_a_run_before_it_left(kit, tmp_path, monkeypatch):
    """A bundle installed while the agent was stopped (its engine state is named by the old bundle's digest), or
    an engine state set aside as unusable: the agent started at tier 0 and the old run's fence stayed for good."""
    import tinywarden.agent.loop as loop
    from tinywarden.respond.actuators import Targets
    from tinywarden.respond.actuators.base import Actuator

    class Fence(Actuator):
        name = "notify_more"
        applied = True  # what the run before this one left (a table an actuator can see on the system)

        def apply(self) -> None:
            Fence.applied = True

        def revert(self) -> None:
            Fence.applied = False

        def is_applied(self) -> bool:
            return Fence.applied

        def describe(self) -> str:
            return "fence"

        def targets(self) -> Targets:
            return Targets()

    real = loop.build_actuators
    monkeypatch.setattr(loop, "build_actuators", lambda policy, dry_run=True: [
        Fence() if a.name == "notify_more" else a for a in real(policy, dry_run=True)])
    cfg = config(kit, tmp_path, kit.signed(kit.m1, 2), persist_engine=True)
    with Agent(cfg, kit.stream.channels, replay=True) as a:
        assert a.engine.tier == 0 and not Fence.applied
    records = audit_records(cfg.state_dir / "audit.log")
    assert [(r["data"]["action"], r["data"]["reason_code"], r["data"]["status"]) for r in records
            if r["kind"] == "action"] == [("notify_more", "leftover", "done")]


def test_refused_bundles_mid_run_are_audited_and_monitoring_continues(kit, tmp_path):
    windows: list[WindowScore] = []
    cfg = config(kit, tmp_path, kit.signed(kit.m1, 5))
    assert cfg.bundle_path is not None
    good = kit.signed(kit.m1, 5)
    offers = {
        "tampered": good[:300] + bytes([good[300] ^ 0x40]) + good[301:],
        "rollback": kit.signed(kit.m2, 4),
        "wrong key": kit.signed(kit.m2, 6, key=tb.generate_key()),
        "garbage": b"\x00" * 100,
        "critical": kit.signed(kit.m2, 6, policy=CRITICAL_POLICY),
        "channels": kit.signed(
            pipeline_to_bytes(
                Pipeline(make_detector("ewma"), window=32, stride=16).fit(
                    Series(np.arange(3000.0), np.random.default_rng(0).normal(size=(3000, 1)), ("fan_rpm",))
                )
            ),
            6,
        ),
    }
    samples = iter(ReplaySource(kit.stream))
    with Agent(cfg, kit.stream.channels, replay=True, on_window=windows.append) as a:
        a.run(samples, 500)
        for i, data in enumerate(offers.values(), start=1):
            cfg.bundle_path.write_bytes(data)
            a.run(samples, 400)
            assert a.refused == i and a.pending is None and a.model.bundle.version == 5
        a.run(samples, 400)
    assert tb.read_state(cfg.state_dir).accepted_version == 5
    reasons = [r["data"]["reason"] for r in audit_records(cfg.state_dir / "audit.log") if r["kind"] == "bundle_refused"]
    assert len(reasons) == len(offers)
    for reason, pattern in zip(
        reasons,
        ["tampered|canonical|JSON", "rollback refused", "not by the trusted key", "not a tinywarden bundle",
         "critical process", "fan_rpm"],
        strict=True,
    ):  # fmt: skip
        assert __import__("re").search(pattern, reason), (pattern, reason)
    assert np.diff([w.time for w in windows]).max() == 16 * kit.stream.period  # never a gap
    st = read_status(cfg.state_dir / "status.json")
    assert st["bundles"]["refused"] == len(offers) and "fan_rpm" in st["bundles"]["last_refusal"]



def test_a_status_file_that_cannot_be_written_does_not_stop_the_monitoring(kit, tmp_path):
    # a full disk or a folder gone under --status raised StatusError out of the loop: the agent stopped (exit 2),
    # though the status is only a picture for local tools
    import shutil

    folder = tmp_path / "run"
    folder.mkdir()
    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1), status_path=folder / "status.json")
    windows: list[WindowScore] = []
    samples = iter(ReplaySource(kit.stream))
    with Agent(cfg, kit.stream.channels, replay=True, on_window=windows.append) as a:
        a.run(samples, 300)
        shutil.rmtree(folder)
        before = len(windows)
        a.run(samples, 600)
        assert len(windows) > before  # still scoring
        folder.mkdir()
        a.run(samples, 300)
    kinds = [r["kind"] for r in audit_records(cfg.state_dir / "audit.log")]
    assert kinds.count("status_unwritable") == 1, kinds  # once per failing streak, not once a window
    assert read_status(folder / "status.json")["samples_seen"] == 1200  # written again once it could be

def test_a_refused_bundle_file_at_start_falls_back_to_the_installed_one(kit, tmp_path):
    cfg = config(kit, tmp_path, kit.signed(kit.m1, 2))
    Agent(cfg, kit.stream.channels, replay=True).close()
    assert cfg.bundle_path is not None
    cfg.bundle_path.write_bytes(kit.signed(kit.m2, 1))  # older than the accepted version 2
    with Agent(cfg, kit.stream.channels, replay=True) as a:
        assert a.model.bundle.version == 2 and a.refused == 1
    assert "rollback" in read_status(cfg.state_dir / "status.json")["bundles"]["last_refusal"]


def test_a_restarted_agent_resumes_its_tier_from_the_engine_state(kit, tmp_path):
    incidents: list[Incident] = []
    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1), persist_engine=True)
    samples = iter(ReplaySource(kit.stream))
    with Agent(cfg, kit.stream.channels, replay=True, on_incident=incidents.append) as a:
        while not incidents:
            a.run(samples, 1)
        tier = a.engine.tier
    assert tier >= 1
    with Agent(cfg, kit.stream.channels, replay=True) as b:  # the process died and came back
        assert b.engine.tier == tier and b.model.bundle.version == 1
        b.run(samples, 100)


def test_an_agent_refuses_a_state_directory_others_can_write(kit, tmp_path):
    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1))
    cfg.state_dir.mkdir()
    cfg.state_dir.chmod(0o777)
    with pytest.raises(AgentError, match="others may write the state directory"):
        Agent(cfg, kit.stream.channels, replay=True)
    assert not (cfg.state_dir / "audit.log").exists()


def test_a_large_forged_bundle_offered_to_a_running_agent_costs_it_no_memory(kit, tmp_path):
    """The watcher read an offered file whole to hash it, then the loader read it again and copied it twice more
    before checking the signature: a forged 250 MB file cost the agent 777 MB. The agent's memory budget is 40 MB."""
    import tracemalloc

    from tinywarden.agent.bundles import BundleWatcher, Refusal

    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1))
    tb.install_bundle(cfg.bundle_path, kit.pub, cfg.state_dir)
    watcher = BundleWatcher(cfg, kit.stream.channels, cfg.state_dir)
    list(watcher.poll(set))
    meta = tb._canonical_json({"model_id": "m", "profile": "p", "version": 9, "created_at": "2026-01-01T00:00:00"})
    size = 64 * 2**20
    with open(cfg.bundle_path, "wb") as f:  # the trusted key named as signer, a signature made over something else
        f.write(tb._HEADER.pack(tb.MAGIC, tb.FORMAT_VERSION) + tb._SECTION.pack(b"META", len(meta)) + meta)
        f.write(tb._SECTION.pack(b"MODL", size))
        f.seek(size, 1)
        f.write(tb._SECTION.pack(b"POLI", 0) + tb._SECTION.pack(b"SIGN", 96) + kit.pub + kit.key.sign(b"other"))
    tracemalloc.start()
    try:
        (refusal,) = list(watcher.poll(set))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(refusal, Refusal) and "signature does not match" in refusal.reason
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB for a 64 MiB forgery"


def test_a_corrupt_engine_state_is_set_aside_and_the_agent_starts_afresh(kit, tmp_path):
    """A state file nested too deeply or holding 1e400 raised RecursionError/OverflowError, which the start-up's
    set-aside path (StateFileError only) did not catch: the agent could not start until someone removed it."""
    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1), persist_engine=True)
    samples = iter(ReplaySource(kit.stream))
    with Agent(cfg, kit.stream.channels, replay=True) as a:
        a.run(samples, 50)
    (state,) = cfg.state_dir.glob("engine-*.json")
    for text in ("[" * 100_000, state.read_text().replace('"windows": ', '"windows": 1e400, "x": ')):
        state.write_text(text)
        with Agent(cfg, kit.stream.channels, replay=True) as b:
            assert b.engine.tier == 0 and b.engine.windows == 0
            b.run(samples, 10)
        assert state.with_name(state.name + ".stale").read_text() == text
    records = [json.loads(line) for line in (cfg.state_dir / "audit.log").read_text().splitlines()]
    assert [r["kind"] for r in records].count("engine_state_stale") == 2


# ------------------------------------------------------------------------------------------- faults


def test_bad_samples_become_engine_faults_and_the_fail_safe_incident(kit, tmp_path):
    incidents: list[Incident] = []
    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1))
    with Agent(cfg, kit.stream.channels, replay=True, on_incident=incidents.append) as a:
        a.run(ReplaySource(kit.stream), 200)
        t = float(kit.stream.timestamps[199])
        for i in range(3):  # a sample with too few values: the model path raises, the engine counts faults
            a.process(t + 10 * (i + 1), np.ones(2))
        assert a.model_faults == 3 and a.engine.tier == 1
        assert incidents and incidents[-1].confidence == 1.0 and incidents[-1].tier == 1
        for i in range(2 * 16):  # NaN telemetry: the detector refuses each window it completes
            a.process(t + 40 + 10 * i, np.full(len(kit.stream.channels), np.nan))
        assert a.model_faults == 5 and "NaN" in a.last_fault
        st = a.status()
        assert st["faults"]["engine_fault"] is True
        for i in range(64):  # good telemetry again: windows score, the fault clears
            a.process(t + 400 + 10 * i, kit.stream.values[200 + i])
    st = read_status(cfg.state_dir / "status.json")  # the final status, written by close()
    assert st["faults"]["model_faults"] == 7 and st["faults"]["engine_fault"] is False  # 2 windows still held NaN
    recs = audit_records(cfg.state_dir / "audit.log")
    kinds = [r["kind"] for r in recs]
    assert kinds.count("model_fault") == 1 and kinds.count("model_recovered") == 1  # per streak, not per sample
    assert any(r["kind"] == "note" and r["data"]["reason_code"] == "fault_model" for r in recs)


def test_a_wall_clock_stepping_forward_live_is_not_missing_telemetry(kit, tmp_path):
    """An NTP step forward (a gateway that booted with a stale clock, synced after the agent started) used to
    look like hours without telemetry: the engine went to the fail-safe tier and applied its actions, and any
    dead-man or de-escalation fell due at once. Live, the agent measures the step against the monotonic clock
    (the sampler's clock_offset) and the engine's timers move with it: the same events as without the step."""
    step = 3 * 3600.0  # > the policy's telemetry_timeout_s of 3600
    rows = kit.stream.values[:300]

    def run(tmp: Path, jump_at: int | None) -> tuple[list[tuple], list[dict]]:
        offset = [0.0]
        tmp.mkdir()
        cfg = config(kit, tmp, kit.signed(kit.m1, 1))
        seen = []
        with Agent(cfg, kit.stream.channels, clock_offset=lambda: offset[0]) as a:
            assert not a.replay
            for i, row in enumerate(rows):
                if i == jump_at:
                    offset[0] += step
                t = 1.7e9 + 10 * i + (step if jump_at is not None and i >= jump_at else 0.0)
                seen += [(e.event, e.reason_code, e.action, e.tier) for e in a.process(t, row)]
        return seen, audit_records(cfg.state_dir / "audit.log")

    plain, _ = run(tmp_path / "plain", None)
    stepped, recs = run(tmp_path / "stepped", 150)
    assert [e for e in stepped if e[1] != "clock_forward"] == plain
    assert not any(code.startswith("fault") for _, code, _, _ in stepped)
    notes = [r for r in recs if r["kind"] == "note" and r["data"]["reason_code"] == "clock_forward"]
    assert len(notes) == 1 and notes[0]["time"] == 1.7e9 + 1500 + step  # audited at the true (new) wall time
    assert verify(tmp_path / "stepped" / "state" / "audit.log").ok


# ------------------------------------------------------------------------------------------- memory


def test_a_simulated_week_does_not_grow_memory(kit, tmp_path):
    week = simulate("camera", days=7, attacks="all", seed=13)
    assert len(week) >= 60_000
    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1), audit_max_bytes=64 * 1024, poll_interval_s=3600.0)
    samples = iter(ReplaySource(week))
    with Agent(cfg, week.channels, replay=True) as a:
        a.run(samples, 15_000)  # warm-up: every buffer filled, the audit log rotated at least once
        tracemalloc.start()
        try:
            a.run(samples, 5_000)
            base = tracemalloc.get_traced_memory()[0]
            a.run(samples)
            grown = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert a.samples_seen == len(week) and a.incidents > 0
    assert grown < 64 * 1024, f"memory grew by {grown} bytes over {len(week) - 20_000} samples"
    assert verify(cfg.state_dir / "audit.log").ok


@pytest.mark.parametrize(("second", "expect"), [("m1", "carried over"), ("m2", "reset")])
def test_the_likelihood_is_carried_over_a_same_model_swap_and_reset_on_a_new_model(kit, tmp_path, second, expect):
    from conftest import ADAPTING_CAMERA_POLICY

    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1, policy=ADAPTING_CAMERA_POLICY))
    samples = iter(ReplaySource(kit.stream))
    with Agent(cfg, kit.stream.channels, replay=True) as a:
        a.run(samples, len(kit.stream) // 2)
        before = a._likelihood
        assert before is not None and a.status()["adaptation"]["enabled"] is True
        assert a.status()["adaptation"]["adapted_windows"] > 0
        assert cfg.bundle_path is not None
        cfg.bundle_path.write_bytes(kit.signed(getattr(kit, second), 2, policy=ADAPTING_CAMERA_POLICY))
        a.run(samples, 200)
        assert a.model.bundle.version == 2
        assert (a._likelihood is before) == (expect == "carried over")
    swaps = [r for r in audit_records(cfg.state_dir / "audit.log") if r["kind"] == "model_swap"]
    assert len(swaps) == 1 and swaps[0]["data"]["likelihood"].startswith(expect)


def test_a_revert_owed_by_a_replaced_policy_is_retried_after_the_agent_restarts(kit, tmp_path):
    """The reverts a new policy's engine took over at a swap lived in memory only: an agent restarted before they
    went through forgot them, and the old policy's action stayed on the device for good. The engine state holds
    each one's action now; the restarted agent rebuilds it (as it builds its actuators: here dry-run) and retries."""
    from tinywarden.respond.actuators import ActuatorError, DryRunActuator, Targets
    from tinywarden.respond.actuators.base import Actuator

    class Stuck(Actuator):
        name = "notify"  # an action of the old policy

        def apply(self) -> None: ...

        def revert(self) -> None:
            raise ActuatorError("nft: Device or resource busy")

        def is_applied(self) -> bool:
            return True

        def describe(self) -> str:
            return "stuck"

        def targets(self) -> Targets:
            return Targets()

    cfg = config(kit, tmp_path, kit.signed(kit.m1, 1), persist_engine=True)
    samples = iter(ReplaySource(kit.stream))
    with Agent(cfg, kit.stream.channels, replay=True) as a:
        a.run(samples, 100)
        idx = a.engine.policy.action_index("notify")
        a.engine.actuators[idx] = Stuck()
        other = tmp_path / "v3.twbundle"
        other.write_bytes(kit.signed(kit.m1, 3, policy=POLICY.replace('version = "1"', 'version = "2"')))
        tb.install_bundle(other, kit.pub, cfg.state_dir)
        while a.model.bundle.version != 3:
            a.run(samples, 1)
        assert a.engine.unreverted == ("notify",)
    with Agent(cfg, kit.stream.channels, replay=True) as b:  # restarted before any retry went through
        assert b.engine.unreverted == ("notify",)
        assert isinstance(b.engine._orphans[0].act, DryRunActuator)
        b.run(samples, 2000)
        assert b.engine.unreverted == ()
    retries = [r["data"] for r in audit_records(cfg.state_dir / "audit.log")
               if r["data"].get("reason_code") == "revert_retry"]
    assert retries and retries[-1]["action"] == "notify" and retries[-1]["status"] == "done"
