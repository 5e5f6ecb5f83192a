"""The lean agent: ``tinywarden agent`` live on this host with the native runtime (the default) scores through
the generated C and never imports numpy on its run path; without a usable C compiler it says so in one line
and runs the int8 numpy runtime."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ADAPTING_CAMERA_POLICY
from tinywarden import bundle as tb
from tinywarden.agent.status import read_status
from tinywarden.audit import verify
from tinywarden.detectors import make_detector
from tinywarden.modelfile import pipeline_to_bytes
from tinywarden.pipeline import Pipeline
from tinywarden.quantize import int8_sections
from tinywarden.telemetry import Series
from tinywarden.telemetry.live import LiveSampler

SRC = Path(__file__).resolve().parents[1] / "src"
#: runs the agent command in a fresh interpreter, then says whether numpy was ever imported
AGENT = """
import sys
from tinywarden.agent.command import main
rc = main(sys.argv[1:])
print("NUMPY-IMPORTED", "numpy" in sys.modules, flush=True)
sys.exit(rc)
"""
#: adaptation on; no tier can be entered within the run's 5 windows (an incident's summary loads numpy, and the
#: random training data is nothing like this host's telemetry)
QUIET_POLICY = ADAPTING_CAMERA_POLICY.replace("k = 2\nn = 3", "k = 8\nn = 8").replace("k = 3\nn = 4", "k = 8\nn = 8")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A signed bundle of a pca pipeline (with its int8 program) on this host's live channels (loopback only)."""
    d = tmp_path_factory.mktemp("native-agent")
    channels = LiveSampler(1.0, interfaces=["lo"]).channels
    rng = np.random.default_rng(0)
    train = Series(np.arange(800.0), rng.normal(10.0, 1.0, size=(800, len(channels))), channels)
    p = Pipeline(make_detector("pca"), window=8, stride=4).fit(train)
    extra, arrays, note = int8_sections(p, train)
    assert extra, note
    priv, pub = tb.write_keypair(d / "fleet")
    assert QUIET_POLICY.count("k = 8") == 2
    raw = tb.create_bundle(pipeline_to_bytes(p, extra, arrays), QUIET_POLICY.encode(),
                           {"model_id": "host", "profile": "gateway"})
    bundle = d / "host.twbundle"
    bundle.write_bytes(tb.sign_bundle(raw, tb.load_private_key(priv), version=1))
    noisy = ADAPTING_CAMERA_POLICY.replace("k = 2\nn = 3", "k = 1\nn = 1").replace("margin = 0.5", "margin = 1e5")
    raw = tb.create_bundle(pipeline_to_bytes(p, extra, arrays), noisy.encode(), {"model_id": "host", "profile": "gw"})
    (d / "noisy.twbundle").write_bytes(tb.sign_bundle(raw, tb.load_private_key(priv), version=1))
    return {"bundle": bundle, "pub": pub, "noisy": d / "noisy.twbundle"}


def run_agent(gateway, state: Path, env: dict[str, str] | None = None, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["--bundle", gateway["bundle"], "--pubkey", gateway["pub"], "--state-dir", state, "--rate", "50",
            "--interface", "lo", "--max-samples", "24", "--device-id", "gw-1", *extra]
    full = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
    return subprocess.run([sys.executable, "-c", AGENT, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=full)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no host C compiler")
def test_the_live_agent_scores_natively_and_never_imports_numpy(gateway, tmp_path):
    state = tmp_path / "state"
    r = run_agent(gateway, state)
    assert r.returncode == 0, r.stderr
    assert "NUMPY-IMPORTED False" in r.stdout, "the native agent's run path imported numpy"
    assert "native runtime not used" not in r.stderr
    st = read_status(state / "status.json")
    assert st["model"]["runtime"] == "native" and st["samples_seen"] == 24
    assert st["windows_scored"] == (24 - 8) // 4 + 1 and st["faults"]["model_faults"] == 0
    assert st["adaptation"]["runtime"].startswith("native")
    assert list((state / "native" / "models").glob("*.json")), "the prepared module is cached in the state dir"
    assert verify(state / "audit.log").ok
    built = sorted((state / "native" / "lib").iterdir())
    again = run_agent(gateway, state)  # installed, cached: the restart builds nothing
    assert again.returncode == 0, again.stderr
    assert sorted((state / "native" / "lib").iterdir()) == built
    assert read_status(state / "status.json")["model"]["runtime"] == "native"


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no host C compiler")
def test_incidents_of_the_native_agent_carry_a_summary_without_numpy(gateway, tmp_path):
    state = tmp_path / "state"
    # an alert after every window (k = n = 1), spooled: no broker listens on port 1 of loopback
    r = run_agent({**gateway, "bundle": gateway["noisy"]}, state, None, "--mqtt", "127.0.0.1:1")
    assert r.returncode == 0, r.stderr
    assert "NUMPY-IMPORTED False" in r.stdout, "an incident's summary imported numpy"
    spooled = [json.loads(p.read_text()) for p in sorted((state / "spool").glob("*.json"))]
    assert read_status(state / "status.json")["incidents"] == len(spooled) >= 1
    feats = spooled[0]["features"]
    assert 1 <= len(feats) <= 5 and all(":" in k and isinstance(v, float) for k, v in feats.items())


def test_without_a_compiler_the_agent_says_so_once_and_runs_int8(gateway, tmp_path):
    state = tmp_path / "state"
    r = run_agent(gateway, state, {"CC": str(tmp_path / "no-such-cc")})
    assert r.returncode == 0, r.stderr
    notices = [ln for ln in r.stderr.splitlines() if "native runtime not used" in ln]
    assert len(notices) == 1 and "C compiler" in notices[0]
    st = read_status(state / "status.json")
    assert st["model"]["runtime"] == "int8" and st["windows_scored"] == (24 - 8) // 4 + 1
    assert "NUMPY-IMPORTED True" in r.stdout
    assert json.loads((state / "status.json").read_text())["faults"]["model_faults"] == 0


# ---- the agent loop on the native runtime, against the int8 runtime and the device's interpreter

needs_cc = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")


@pytest.fixture(scope="module")
def kit():
    from test_adapt_agent import Kit

    return Kit()


def replay(kit, tmp: Path, runtime: str, offers: list[bytes]) -> tuple[list[float], dict, list[str]]:
    """Replay the kit's ramp through an agent of ``runtime``, offering each bundle of ``offers`` in turn once
    a quarter of the stream more has passed; (window scores, adaptation status, audit kinds)."""
    from test_adapt_agent import audit, config
    from tinywarden.agent.loop import Agent
    from tinywarden.agent.sources import ReplaySource

    windows: list = []
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = config(kit, tmp, kit.signed(1), runtime)
    samples = iter(ReplaySource(kit.stream))
    with Agent(cfg, kit.stream.channels, replay=True, on_window=windows.append) as a:
        assert a.model.describe()["runtime"] == runtime
        for offer in offers:
            a.run(samples, len(kit.stream) // 4)
            cfg.bundle_path.write_bytes(offer)
        a.run(samples)
        st = a.status()["adaptation"]
    return [w.score for w in windows], st, [r["kind"] for r in audit(tmp)]


@needs_cc
def test_the_native_agent_adapts_as_the_device_does(kit, tmp_path):
    from tinywarden.adaptation import Adaptation
    from tinywarden.modelfile import decode
    from tinywarden.program import Int8Stream, from_model_file

    scores, st, kinds = replay(kit, tmp_path, "native", [])
    header, arrays = decode(kit.model)
    device = Int8Stream(from_model_file(header["int8"], arrays), Adaptation(rate_shift=3, max_drift=0.5))
    want = [float(o[0]) for x in kit.stream.values if (o := device.push(x)) is not None]
    assert scores == want  # the adapted scores, bit for bit
    assert st["runtime"].startswith("native") and st["adapted_windows"] == device.adapter.adapted > 0
    assert st["flags"] == device.adapter.flags >= 1 and "baseline_drift" in kinds


@needs_cc
def test_native_and_int8_agents_agree_across_a_same_model_swap_and_a_rebaseline(kit, tmp_path):
    offers = [kit.signed(2), kit.signed(3, rebaseline=True)]
    got = {rt: replay(kit, tmp_path / rt, rt, offers) for rt in ("native", "int8")}
    (ns, nst, nk), (is_, ist, ik) = got["native"], got["int8"]
    assert nk.count("model_swap") == ik.count("model_swap") == 2 and "rebaseline" in nk
    assert ns == is_  # adaptation carried over the swap and reset by the re-baseline exactly as the int8 step
    for key in ("adapted_windows", "held_windows", "flags", "flagged", "drift"):
        assert nst[key] == ist[key], key


# ---------------------------------------------------------------------------------- adapted state across restarts


def _run(kit, cfg, samples, n: int | None = None) -> tuple[list[tuple], dict]:
    """Run an agent of ``cfg`` over ``samples`` (``n`` of them, or to the end); its windows as (time, score,
    confidence, tier) and its adaptation status."""
    from tinywarden.agent.loop import Agent

    got: list[tuple] = []
    holder: list = []
    with Agent(cfg, kit.stream.channels, replay=True,
               on_window=lambda w: got.append((w.time, w.score, holder[0].last_confidence, w.tier))) as a:
        holder.append(a)
        a.run(samples, n)
        st = a.status()["adaptation"]
    return got, st


def _persisting(kit, tmp: Path, runtime: str, bundle: bytes | None = None):
    import dataclasses

    from test_adapt_agent import config

    tmp.mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(config(kit, tmp, bundle or kit.signed(1), runtime), persist_engine=True)


@needs_cc
@pytest.mark.parametrize("runtime", ["native", "int8"])
def test_a_restarted_agent_carries_on_exactly_as_one_that_never_stopped(kit, tmp_path, runtime):
    """N windows, stop, restart, M more windows == N + M windows without a stop: scores, confidences and tiers bit
    for bit, and the same adaptation status (the restart is fed the samples of its first window again, the
    in-flight samples being a restart's loss on any runtime)."""
    from test_adapt_agent import audit
    from tinywarden.agent.sources import ReplaySource

    rows = list(ReplaySource(kit.stream))
    whole, want = _run(kit, _persisting(kit, tmp_path / "whole", runtime), iter(rows))
    assert want["adapted_windows"] > 0 and want["flagged"] and want["runtime"].startswith(runtime)
    w, s = 32, 16  # the kit's window and stride
    cut = w + s * ((len(rows) // 2 - w) // s)  # a window ended at row cut - 1
    cfg = _persisting(kit, tmp_path / "restarted", runtime)
    first, _ = _run(kit, cfg, iter(rows[:cut]))
    then, got = _run(kit, cfg, iter(rows[cut - (w - s):]))
    assert first + then == whole
    keys = ("adapted_windows", "held_windows", "drift", "likelihood_drift", "flagged", "flags", "settling")
    assert {k: got[k] for k in keys} == {k: want[k] for k in keys}
    kinds = [r["kind"] for r in audit(tmp_path / "restarted")]
    assert "adaptation_restored" in kinds and "adaptation_state_stale" not in kinds


@needs_cc
def test_a_native_state_that_fails_verification_is_set_aside_and_the_reference_runs(kit, tmp_path):
    """Tampered blob, a file sealed with another key, a truncated file, the state of another bundle and a replay of
    an older (valid) state file: each is moved aside as .stale, audited with why, and the restarted agent starts
    from the bundle's frozen reference."""
    import base64
    import shutil

    from test_adapt_agent import audit
    from tinywarden.agent import adaptstate
    from tinywarden.agent.sources import ReplaySource
    from tinywarden.audit import AuditKey

    rows = list(ReplaySource(kit.stream))
    state = tmp_path / "state"
    cfg = _persisting(kit, tmp_path, "native")
    _, before = _run(kit, cfg, iter(rows[: len(rows) // 2]))
    assert before["adapted_windows"] > 0 and before["flagged"]
    (path,) = state.glob("adaptation-*.json")
    good = path.read_bytes()
    doc = json.loads(good)

    def restart_from(content: bytes, match: str) -> None:
        path.write_bytes(content)
        _, st = _run(kit, cfg, iter(()))
        assert st["adapted_windows"] == 0 and st["drift"] == 0 and st["flagged"] is False, match
        stale = [r for r in audit(tmp_path) if r["kind"] == "adaptation_state_stale"]
        assert match in stale[-1]["data"]["reason"] and "\n" not in stale[-1]["data"]["reason"]
        assert not path.exists() and path.with_name(path.name + ".stale").exists()

    snap = doc["body"]["state"]
    blob = bytearray(base64.b64decode(snap["state"]))
    blob[len(blob) // 2] ^= 1
    tampered = {**doc, "body": {**doc["body"], "state": {**snap, "state": base64.b64encode(bytes(blob)).decode()}}}
    restart_from(json.dumps(tampered).encode(), "MAC")
    other = AuditKey(b"\x07" * 32)  # an attacker who can write the state directory, not read the key
    adaptstate.write_state(path, doc["body"], other, fsync=False)
    restart_from(path.read_bytes(), "key id")
    restart_from(good[: len(good) // 3], "unreadable")

    # the state of bundle v1 renamed to the file of bundle v2 (same model): bound to its bundle
    shutil.copytree(state, tmp_path / "kept")
    assert not list((tmp_path / "kept").glob("adaptation-*.json"))  # set aside just now
    v2 = _persisting(kit, tmp_path / "v2", "native", kit.signed(2))
    shutil.copytree(tmp_path / "kept", tmp_path / "v2" / "state")  # the same key and audit chain
    with_v2 = _run(kit, v2, iter(rows[:64]))  # installs v2; its first windows write its own file
    (v2_path,) = (tmp_path / "v2" / "state").glob("adaptation-*.json")
    assert v2_path.name != path.name and with_v2[0]
    v2_path.write_bytes(good)
    _, st = _run(kit, v2, iter(()))
    assert st["adapted_windows"] == 0
    stale = [r for r in audit(tmp_path / "v2") if r["kind"] == "adaptation_state_stale"]
    assert "written for bundle" in stale[-1]["data"]["reason"]

    # a replay of an older valid state: its counter is below the one the audit chain holds
    path.write_bytes(good)
    _run(kit, cfg, iter(rows[len(rows) // 2:]))  # restores, carries on, saves newer states, audits its stop
    newer = json.loads(path.read_bytes())["body"]["counter"]
    assert newer > doc["body"]["counter"]
    restart_from(good, "rollback")
    _run(kit, cfg, iter(rows[:64]))  # after a set-aside (or a deleted file) the counter goes on from the chain's
    _, st = _run(kit, cfg, iter(()))
    assert st["adapted_windows"] > 0 and audit(tmp_path)[-2]["kind"] == "adaptation_restored"
    path.write_bytes(good.replace(b'"counter":', b'"counter":1', 1))  # a raised counter breaks the MAC
    _, st = _run(kit, cfg, iter(()))
    assert st["adapted_windows"] == 0


@needs_cc
def test_a_native_state_of_another_module_or_malformed_is_refused_and_nothing_changes(kit, tmp_path):
    """NativeAdapter.load: a snapshot of another build, wrapper ABI or state size, a blob that is not base64 or
    not TW_STATE_BYTES long: ConfigError in one line, the scorer's state untouched; its own snapshot loads."""
    import base64

    from tinywarden.errors import ConfigError
    from tinywarden.modelfile import decode
    from tinywarden.native import NativeAdapter, compile_program
    from tinywarden.program import from_model_file
    from tinywarden.respond.policy import Adaptation

    header, arrays = decode(kit.model)
    lib = compile_program(from_model_file(header["int8"], arrays), Adaptation(), cache=tmp_path / "cache")
    ran, fresh = lib.stream(), lib.stream()
    for x in kit.stream.values[:2000]:
        ran.push([float(v) for v in x])
    src = NativeAdapter(lambda: ran, Adaptation(), None)  # type: ignore[arg-type]
    dst = NativeAdapter(lambda: fresh, Adaptation(), None)  # type: ignore[arg-type]
    snap = src.snapshot()
    before = fresh.export_state()
    bad = {
        "build": {**snap, "build": "0" * 32},
        "abi": {**snap, "abi": snap["abi"] - 1},
        "state size": {**snap, "state_bytes": snap["state_bytes"] + 8},
        "not base64": {**snap, "state": snap["state"][:-4] + "!!!!"},
        "short blob": {**snap, "state": base64.b64encode(base64.b64decode(snap["state"])[:-8]).decode()},
        "format": {**snap, "format": "tinywarden-int8-adaptation/2"},
    }
    for what, doc in bad.items():
        with pytest.raises(ConfigError, match="adapted state") as info:
            dst.load(doc)
        assert "\n" not in str(info.value) and fresh.export_state() == before, what
    dst.load(snap)
    assert fresh.export_state() == ran.export_state() != before and fresh.adaptation() == ran.adaptation()
