"""The agent with baseline adaptation on the int8 runtime (the integer step the generated C runs, so agent and
device agree), and the operator's re-baseline with a signed bundle: applied and audited when signed,
refused when unsigned or tampered."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ADAPTING_CAMERA_POLICY
from tinywarden import bundle as tb
from tinywarden.adapt import Adaptation, settle_windows
from tinywarden.agent.config import AgentConfig
from tinywarden.agent.loop import Agent, WindowScore
from tinywarden.agent.sources import ReplaySource
from tinywarden.detectors import make_detector
from tinywarden.errors import ConfigError
from tinywarden.modelfile import pipeline_to_bytes
from tinywarden.pipeline import Pipeline
from tinywarden.program import Int8Stream
from tinywarden.quantize import int8_sections
from tinywarden.runtime import Int8Adapter, Int8Model, Int8Scorer, load_model
from tinywarden.simulate import simulate
from tinywarden.telemetry import Series

#: adapting fast, flagging early: a ramp raises the flag within the test's stream
POLICY = ADAPTING_CAMERA_POLICY.replace("enabled = true", "enabled = true\nrate_shift = 3\nmax_drift = 0.5")


class Kit:
    def __init__(self) -> None:
        train = simulate("camera", days=2, attacks="none", seed=11)
        self.pipe = Pipeline(make_detector("ewma"), window=32, stride=16).fit(train)
        extra, arrays, note = int8_sections(self.pipe, train)
        assert extra, note
        self.model = pipeline_to_bytes(self.pipe, extra, arrays)
        self.key = tb.generate_key()
        s = simulate("camera", days=1, attacks="none", seed=12)
        ramp = np.clip(np.arange(len(s)) - 1000, 0, None)[:, None] * 4e-4 * s.values[:1000].std(axis=0)
        self.stream = Series(s.timestamps, s.values + ramp, s.channels)  # a slow drift the adapter flags

    def signed(self, version: int, **meta) -> bytes:
        raw = tb.create_bundle(self.model, POLICY.encode(), {"model_id": "cam", "profile": "camera", **meta})
        return tb.sign_bundle(raw, self.key, version=version)


@pytest.fixture(scope="module")
def kit() -> Kit:
    return Kit()


def config(kit: Kit, tmp: Path, bundle: bytes, runtime: str) -> AgentConfig:
    path = tmp / "offered.twbundle"
    path.write_bytes(bundle)
    return AgentConfig(pubkey=tb.public_key_of(kit.key), state_dir=tmp / "state", bundle_path=path,
                       device_id="cam-1", audit_fsync=False, persist_engine=False, poll_interval_s=1.0,
                       runtime=runtime)


def audit(tmp: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp / "state" / "audit.log").read_text().splitlines()]


def test_the_int8_agent_adapts_as_the_device_does(kit, tmp_path):
    windows: list[WindowScore] = []
    cfg = config(kit, tmp_path, kit.signed(1), "int8")
    with Agent(cfg, kit.stream.channels, replay=True, on_window=windows.append) as a:
        a.run(ReplaySource(kit.stream))
        assert isinstance(a._active.scorer, Int8Scorer)
        st = a.status()["adaptation"]
        program = a._active.scorer.program
    device = Int8Stream(program, Adaptation(rate_shift=3, max_drift=0.5))
    want = [out[0] for x in kit.stream.values if (out := device.push(x)) is not None]
    assert [w.score for w in windows] == want  # the adapted scores, bit for bit
    assert device.adapter is not None and st["enabled"] is True and st["runtime"].startswith("int8")
    assert st["adapted_windows"] == device.adapter.adapted > 0 and st["flags"] == device.adapter.flags >= 1
    # the float adapter's default rule, in integers: the gate, offsets only, the settling count from settle_s
    params = device.adapter.params
    assert params.gate and not params.adapt_scale and params.settle_n == settle_windows(kit.pipe, 43200.0) > 0
    assert st["settling"] == device.adapter.settling and st["settled_windows"] == device.adapter.settled
    assert any(r["kind"] == "baseline_drift" for r in audit(tmp_path))


def test_a_hot_swap_carries_the_integer_adapted_state(kit):
    """Int8Adapter.rebind hands every part of the adapted state (the settling rule's too) to the new scorer, which
    then adapts as an unswapped one does."""
    model = load_model(kit.model)
    assert isinstance(model, Int8Model)
    cfg = Adaptation(max_drift=0.5, settle_s=1600.0)  # 10 windows: the level shift below settles
    ref, old = model.stream(cfg), model.stream(cfg)
    running = [old]
    adapter = Int8Adapter(lambda: running[0], cfg)
    values = kit.stream.values.copy()
    values[2000:] += 4.0 * values[:2000].std(axis=0)  # a firmware update
    half = len(values) * 3 // 4
    for x in values[:half]:
        ref.push(x)
        old.push(x)
    a = old.stream.adapter
    assert a is not None and a.settled > 0 and a.params.settle_n == 10
    new = model.stream(cfg)
    # the samples in flight (the agent's overlap refills them) and the k-of-n decisions (the agent's engine keeps its
    # own): the swap happens while the ramp's alarm stands
    ring = ("ring", "head", "filled", "phase", "persistence")
    new.stream.__dict__.update({k: v for k, v in old.stream.__dict__.items() if k in ring})
    running[0] = new
    adapter.rebind(None)
    b = new.stream.adapter
    assert b is not None and b is not a
    for name in ("mu", "sd", "smu", "svar", "wmu"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for name in ("elevated", "settling", "settled", "drift", "flagged", "flags", "adapted", "held"):
        assert getattr(a, name) == getattr(b, name), name
    outs = [(new.push(x), ref.push(x)) for x in values[half:]]
    assert all(o == r for o, r in outs) and adapter.status()["settled_windows"] == ref.stream.adapter.settled


@pytest.mark.parametrize("runtime", ["int8", "float"])
def test_a_signed_rebaseline_bundle_resets_the_baseline_and_is_audited(kit, tmp_path, runtime):
    cfg = config(kit, tmp_path, kit.signed(1), runtime)
    samples = iter(ReplaySource(kit.stream))
    with Agent(cfg, kit.stream.channels, replay=True) as a:
        a.run(samples, len(kit.stream) // 2)
        before = a.status()["adaptation"]
        assert before["flagged"] is True and before["drift"] > 0.5
        cfg.bundle_path.write_bytes(kit.signed(2, rebaseline=True))
        a.run(samples, 3 * 16)  # the poll, the overlap until the new window is full, then the swap
        assert a.model.bundle.version == 2 and a.model.bundle.rebaseline
        after = a.status()["adaptation"]
    assert after["flagged"] is False and after["drift"] < before["drift"] / 4
    assert after["adapted_windows"] < before["adapted_windows"]  # a fresh baseline
    recs = [r for r in audit(tmp_path) if r["kind"] == "rebaseline"]
    assert len(recs) == 1 and recs[0]["data"]["model"] == "cam@v2"
    assert recs[0]["data"]["dropped"]["flagged"] is True
    assert recs[0]["data"]["signer"] == tb.fingerprint(tb.public_key_of(kit.key))


@pytest.mark.parametrize("how", ["unsigned", "tampered", "other key"])
def test_an_unsigned_or_tampered_rebaseline_bundle_is_refused(kit, tmp_path, how):
    cfg = config(kit, tmp_path, kit.signed(1), "int8")
    samples = iter(ReplaySource(kit.stream))
    if how == "unsigned":
        offered = tb.create_bundle(kit.model, POLICY.encode(), {"model_id": "cam", "profile": "camera",
                                                                "rebaseline": True})
    elif how == "tampered":  # a signed bundle of version 2 without the order, the order written in afterwards
        good = kit.signed(2, rebaseline=False, z="xx")
        offered = good.replace(b'"rebaseline":false,', b'"rebaseline":true,').replace(b'"z":"xx"', b'"z":"xxx"')
        assert offered != good and len(offered) == len(good)
    else:
        raw = tb.create_bundle(kit.model, POLICY.encode(), {"model_id": "cam", "profile": "camera",
                                                            "rebaseline": True})
        offered = tb.sign_bundle(raw, tb.generate_key(), version=2)
    with Agent(cfg, kit.stream.channels, replay=True) as a:
        a.run(samples, len(kit.stream) // 2)
        before = a.status()["adaptation"]
        cfg.bundle_path.write_bytes(offered)
        a.run(samples, 3 * 16)
        after = a.status()["adaptation"]
        assert a.model.bundle.version == 1
    assert after["adapted_windows"] >= before["adapted_windows"] and after["flags"] >= before["flags"]
    kinds = [r["kind"] for r in audit(tmp_path)]
    assert "rebaseline" not in kinds and "bundle_refused" in kinds


def test_rebaseline_metadata_must_be_a_bool():
    with pytest.raises(tb.BundleError, match="rebaseline"):
        tb.create_bundle(b"m", b"[policy]\n", {"model_id": "m", "profile": "p", "rebaseline": "yes"})


def test_the_cli_packs_and_shows_a_rebaseline_order(kit, tmp_path):
    def tw(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-c", "from tinywarden.cli import main; main()", *args]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    (tmp_path / "m.twb").write_bytes(kit.model)
    (tmp_path / "p.toml").write_text(POLICY)
    assert tw("keygen", "--out", "k").returncode == 0
    for name, flag in (("plain", []), ("rebase", ["--rebaseline"])):
        r = tw("bundle", "m.twb", "--policy", "p.toml", "--out", name, "--model-id", "cam", "--profile", "camera",
               *flag)
        assert r.returncode == 0, r.stderr
        assert tw("sign", name, "--key", "k.key", "--version", "2").returncode == 0
        b = tb.verify_bundle((tmp_path / name).read_bytes(), tb.load_public_key(tmp_path / "k.pub"))
        assert b.rebaseline == (name == "rebase")
        r = tw("verify", name, "--pubkey", "k.pub")
        assert r.returncode == 0 and ("re-baseline" in r.stdout) == (name == "rebase")


def _stream_to(model: Int8Model, cfg: Adaptation, values: np.ndarray) -> Int8Scorer:
    scorer = model.stream(cfg)
    for x in values:
        scorer.push(x)
    return scorer


def test_the_integer_adapted_state_survives_a_restart_and_a_foreign_one_falls_back_to_the_reference(kit):
    """Int8Adapter.snapshot / load: a restarted scorer carries on exactly as one that never stopped; a snapshot
    (authentic: the sealed file's MAC is tests/test_adaptstate.py's) taken of another program or rule, or with any
    value out of range, is refused with a one-line error and leaves the frozen reference in place."""
    model = load_model(kit.model)
    assert isinstance(model, Int8Model)
    cfg = Adaptation(max_drift=0.5, settle_s=1600.0)
    values = kit.stream.values.copy()
    values[2000:] += 4.0 * values[:2000].std(axis=0)
    half = len(values) * 3 // 4
    ref = _stream_to(model, cfg, values[:half])
    doc = json.loads(json.dumps(Int8Adapter(lambda: ref, cfg).snapshot()))  # through JSON, as the file holds it
    assert ref.stream.adapter is not None and ref.stream.adapter.settled > 0
    new = model.stream(cfg)
    # the samples in flight and the k-of-n decisions: the test's, not the restart's
    ring = ("ring", "head", "filled", "phase", "persistence")
    new.stream.__dict__.update({k: copy.deepcopy(v) for k, v in ref.stream.__dict__.items() if k in ring})
    Int8Adapter(lambda: new, cfg).load(doc)
    assert [new.push(x) for x in values[half:]] == [ref.push(x) for x in values[half:]]

    def edited(edit) -> dict:
        body = json.loads(json.dumps(doc))
        edit(body)
        return body

    bad = {
        "sd out of range": edited(lambda b: b["state"]["sd"].__setitem__(0, 0)),
        "mu out of range": edited(lambda b: b["state"]["mu"].__setitem__(0, 2**40)),
        "settling without a count": edited(lambda b: b["state"].update(elevated=0, settling=True)),
        "likelihood sum": edited(lambda b: b["likelihood"].update(sum=b["likelihood"]["sum"] + 1)),
        "value range inverted": edited(lambda b: b["likelihood"].update(vlo=[v + 1 for v in b["likelihood"]["vhi"]])),
        "value range missing (a file from before the value record)": edited(
            lambda b: [b["likelihood"].pop(k) for k in ("vlo", "vhi", "vnew")]),
        "another rule": edited(lambda b: b["rule"].update(rate_shift=3)),
        "another program": edited(lambda b: b.update(model_id="0" * 16)),
        "an older format": edited(lambda b: b.update(format="tinywarden-int8-adaptation/1")),
        "the format before the 16-bit scale": edited(lambda b: b.update(format="tinywarden-int8-adaptation/2")),
    }
    for what, body in bad.items():
        fresh = model.stream(cfg)
        with pytest.raises(ConfigError, match="adapted state") as info:
            Int8Adapter(lambda f=fresh: f, cfg).load(body)
        assert "\n" not in str(info.value), what
        a = fresh.stream.adapter
        assert a is not None and a.adapted == 0 and (a.mu == 0).all() and not a.settling, what
        assert fresh.stream.likelihood is not None and fresh.stream.likelihood.count == 0, what


def test_a_restarted_int8_agent_carries_on_and_sets_aside_a_corrupted_state(kit, tmp_path):
    cfg = dataclasses.replace(config(kit, tmp_path, kit.signed(1), "int8"), persist_engine=True)
    samples = iter(ReplaySource(kit.stream))
    with Agent(cfg, kit.stream.channels, replay=True) as a:
        a.run(samples, len(kit.stream) // 2)
        before = a.status()["adaptation"]
    assert before["adapted_windows"] > 0 and before["flagged"] is True
    (path,) = (tmp_path / "state").glob("adaptation-*.json")
    with Agent(cfg, kit.stream.channels, replay=True) as b:
        after = b.status()["adaptation"]
    keys = ("adapted_windows", "held_windows", "drift", "likelihood_drift", "flagged", "flags", "settling")
    assert {k: after[k] for k in keys} == {k: before[k] for k in keys}
    assert any(r["kind"] == "adaptation_restored" for r in audit(tmp_path))
    path.write_bytes(path.read_bytes().replace(b'"flagged":true', b'"flagged":false'))  # a tampered flag
    with Agent(cfg, kit.stream.channels, replay=True) as c:
        cleared = c.status()["adaptation"]
    assert cleared["adapted_windows"] == 0 and cleared["drift"] == 0 and cleared["flagged"] is False
    stale = [r for r in audit(tmp_path) if r["kind"] == "adaptation_state_stale"]
    assert len(stale) == 1 and "MAC" in stale[0]["data"]["reason"]
    assert path.with_name(path.name + ".stale").exists() and not path.exists()


def test_a_forged_state_that_clears_the_drift_flag_is_refused(kit, tmp_path):
    """An attacker who can write the state directory but not read the key rewrites the state with the drift flag
    cleared, with every check they can compute: before the MAC, a SHA-256 of the content (accepted then: the flag
    was cleared by the restart), now sealed with a key of their own. Both are set aside; the flag is not lost
    silently (the baseline restarts from the reference, audited)."""
    import hashlib

    from tinywarden.agent import adaptstate
    from tinywarden.audit import AuditKey

    cfg = dataclasses.replace(config(kit, tmp_path, kit.signed(1), "int8"), persist_engine=True)
    with Agent(cfg, kit.stream.channels, replay=True) as a:
        a.run(iter(ReplaySource(kit.stream)), len(kit.stream) // 2)
        assert a.status()["adaptation"]["flagged"] is True
    (path,) = (tmp_path / "state").glob("adaptation-*.json")
    body = json.loads(path.read_text())["body"]
    body["state"]["state"].update(flagged=False, flags=0)
    old_form = {**body["state"], "sha256": hashlib.sha256(json.dumps(
        body["state"], sort_keys=True, separators=(",", ":")).encode()).hexdigest()}
    for forged, why in ((json.dumps(old_form), "format"), (None, "key id")):
        if forged is None:
            adaptstate.write_state(path, body, AuditKey(b"\x05" * 32), fsync=False)
        else:
            path.write_text(forged)
        with Agent(cfg, kit.stream.channels, replay=True) as b:
            st = b.status()["adaptation"]
        assert st["adapted_windows"] == 0 and st["flags"] == 0, why
        stale = [r for r in audit(tmp_path) if r["kind"] == "adaptation_state_stale"]
        assert why in stale[-1]["data"]["reason"]
        assert not any(r["kind"] == "adaptation_restored" for r in audit(tmp_path)[-4:])
