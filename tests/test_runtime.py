"""The light runtime: the agent scores with the model file's int8 program, numpy only, and never imports
torch, scikit-learn or matplotlib (checked in a fresh interpreter after a real `agent --replay`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ADAPTING_CAMERA_POLICY
from tinywarden import bundle as tb
from tinywarden.agent.config import AgentConfig, AgentError
from tinywarden.agent.loop import Agent, WindowScore
from tinywarden.agent.sources import ReplaySource
from tinywarden.cli import TRAIN_EXTRA
from tinywarden.detectors import make_detector
from tinywarden.errors import ModelFileError
from tinywarden.modelfile import decode, encode, pipeline_to_bytes
from tinywarden.pipeline import Pipeline
from tinywarden.program import Int8Stream, run_confidence, run_int8
from tinywarden.quantize import int8_sections
from tinywarden.respond import parse_policy
from tinywarden.runtime import Int8Model, load_model
from tinywarden.simulate import simulate
from tinywarden.telemetry import Series, write_csv

#: Not loaded by the agent's int8 runtime: the train extra, and scipy (about 25 MB resident for one function).
HEAVY = ("torch", "sklearn", "matplotlib", "scipy")
#: What the light agent command leaves out too: the full CLI's stack, paho without --mqtt, ssl without TLS.
CLI_STACK = ("typer", "rich", "pydantic", "click", "paho", "ssl", "pyarrow")


@pytest.fixture(scope="module")
def model() -> tuple[Pipeline, bytes, Series]:
    train = simulate("camera", days=2, attacks="none", seed=11)
    p = Pipeline(make_detector("ewma"), window=32, stride=16).fit(train)
    extra, arrays, note = int8_sections(p, train)
    assert extra, note
    return p, pipeline_to_bytes(p, extra, arrays), simulate("camera", days=1, attacks="all", seed=12)


def test_the_runtime_scores_as_the_int8_program_does(model) -> None:
    p, data, stream = model
    m = load_model(data, "m.twb")
    assert isinstance(m, Int8Model) and m.channels_ == p.channels_ and (m.window, m.stride) == (32, 16)
    values = stream.values[:, [stream.channels.index(c) for c in m.channels_]]
    batch, alarms = run_int8(m.program, values)
    scorer = m.stream()
    got = [out for out in map(scorer.push, values) if out is not None]
    assert [s for s, _, _ in got] == batch.astype(float).tolist()
    assert [a for _, _, a in got] == alarms.astype(bool).tolist()
    assert m.threshold_ == m.program.threshold and any(f for _, f, _ in got)
    # confidences on the product's one scale: the program's own integer likelihood, as the C's tw_confidence
    assert m.likelihood_ is not None
    lik = m.likelihood_.fresh()
    ends = m.program.window - 1 + m.program.stride * np.arange(len(batch))
    new = [values[a : b + 1] for a, b in zip(np.r_[0, ends[:-1] + 1], ends, strict=True)]
    conf = np.array([lik.update(float(s), r) for s, r in zip(batch, new, strict=True)])
    np.testing.assert_array_equal(conf * 32768, run_confidence(m.program, batch, values))
    assert ((conf >= 0) & (conf <= 1)).all() and conf[alarms == 1].mean() > conf[alarms == 0].mean()


def test_the_guard_judges_as_the_float_pipeline_does(model) -> None:
    p, data, stream = model
    m = load_model(data)
    values = stream.values[:, [stream.channels.index(c) for c in p.channels_]]
    seen = set()
    for end in range(32, len(values), 97):
        win = values[end - 32 : end]
        a, b = m.judge_window(win), p.judge_window(win)
        assert (a.violation, a.reason) == (b.violation, b.reason) and a.score == pytest.approx(b.score)
        seen.add(a.violation)
    assert seen == {True, False}
    win[3, 1] = np.nan
    assert m.judge_window(win).violation is None


def test_a_window_with_nan_scores_nan_and_float_stays_available(model) -> None:
    p, data, stream = model
    m = load_model(data)
    scorer = m.stream()
    row = stream.values[0, [stream.channels.index(c) for c in m.channels_]]
    outs = [scorer.push(row) for _ in range(31)] + [scorer.push(np.full_like(row, np.nan))]
    assert np.isnan(outs[-1][0]) and outs[-1][1] is False
    assert isinstance(load_model(data, prefer_int8=False), Pipeline)
    assert isinstance(load_model(pipeline_to_bytes(p)), Pipeline)  # no program: the float pipeline


def test_a_malformed_program_or_guard_is_a_model_file_error(model) -> None:
    _, data, _ = model
    header, arrays = decode(data)
    bad = dict(arrays)
    bad["guard/rate_"] = -bad["guard/rate_"]
    with pytest.raises(ModelFileError, match="step limit"):
        load_model(encode({k: v for k, v in header.items() if k != "arrays"}, bad), "x.twb")
    h = {k: v for k, v in header.items() if k != "arrays"}
    h["int8"] = {**h["int8"], "ops": "nonsense"}
    with pytest.raises(ModelFileError, match="x.twb: malformed int8 program"):
        load_model(encode(h, arrays), "x.twb")


def _bundle(data: bytes, tmp: Path) -> tuple[Path, Path]:
    """A signed bundle of the model with a policy that asks for adaptation, and the fleet's public key."""
    priv, pub = tb.write_keypair(tmp / "fleet")
    raw = tb.create_bundle(data, ADAPTING_CAMERA_POLICY.encode(), {"model_id": "cam-int8", "profile": "camera"})
    path = tmp / "cam.twbundle"
    path.write_bytes(tb.sign_bundle(raw, tb.load_private_key(priv), version=1))
    return path, pub


def test_the_agent_runs_the_int8_program(model, tmp_path: Path) -> None:
    p, data, stream = model
    path, pub = _bundle(data, tmp_path)
    windows: list[WindowScore] = []
    cfg = AgentConfig(pubkey=tb.load_public_key(pub), state_dir=tmp_path / "state", bundle_path=path, device_id="cam-1",
                      audit_fsync=False, persist_engine=False)
    with Agent(cfg, stream.channels, replay=True, on_window=windows.append) as a:
        a.run(ReplaySource(stream))
        status = a.status()
    m = load_model(data)
    values = stream.values[:, [stream.channels.index(c) for c in m.channels_]]
    # the policy asks for adaptation: the scores are the adapting integer step's, as the exported C's
    device = Int8Stream(m.program, parse_policy(ADAPTING_CAMERA_POLICY).adaptation)
    assert [w.score for w in windows] == [float(o[0]) for x in values if (o := device.push(x)) is not None]
    assert [w.score for w in windows] != run_int8(m.program, values)[0].astype(float).tolist()
    assert status["model"]["runtime"] == "int8" and status["incidents"] > 0
    assert status["confidence"]["scale"] == "likelihood"
    assert status["adaptation"]["runtime"].startswith("int8") and status["adaptation"]["adapted_windows"] > 0
    with pytest.raises(AgentError, match="runtime must be one of native, int8, float"):
        AgentConfig(pubkey=tb.load_public_key(pub), state_dir=tmp_path, runtime="fast")


def _cli_modules(argv: list[str], block: bool = False) -> dict:
    """Run the CLI in a fresh interpreter: exit code, which heavy modules it loaded, stderr. ``block`` makes
    importing them fail, as on a runtime-only install (pip install tinywarden, without the train extra)."""
    code = (
        "import sys, json\n"
        + (f"sys.modules.update(dict.fromkeys({list(TRAIN_EXTRA)!r}))\n" if block else "")
        + "from tinywarden.entry import main\n"
        f"sys.argv = {argv!r}\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code or 0\nelse:\n    code = 0\n"
        f"print(json.dumps({{'code': code, 'heavy': [m for m in {list(HEAVY)!r} if m in sys.modules], "
        f"'stack': [m for m in {list(CLI_STACK)!r} if m in sys.modules]}}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return {**json.loads(r.stdout.strip().splitlines()[-1]), "stderr": r.stderr}


def _agent_modules(tmp: Path, bundle: Path, pub: Path, data: Path, *extra: str, block: bool = False) -> dict:
    """`tinywarden agent --replay` in a fresh interpreter (see :func:`_cli_modules`)."""
    return _cli_modules(["tinywarden", "agent", "--bundle", str(bundle), "--pubkey", str(pub), "--state-dir",
                         str(tmp / "state"), "--replay", str(data), "--drain", "0", *extra], block)


def test_an_agent_replay_never_imports_torch_sklearn_or_matplotlib(model, tmp_path: Path) -> None:
    _, data, stream = model
    bundle, pub = _bundle(data, tmp_path)
    csv = tmp_path / "cam.csv"
    write_csv(stream.slice(0, 3000), csv)
    light = _agent_modules(tmp_path / "a", bundle, pub, csv)
    assert (light["code"], light["heavy"], light["stack"]) == (0, [], []), light["stderr"]
    # the check can fail: the float pipeline of the same bundle loads scikit-learn
    heavy = _agent_modules(tmp_path / "b", bundle, pub, csv, "--runtime", "float")
    assert heavy["code"] == 0 and "sklearn" in heavy["heavy"], heavy["stderr"]


def test_a_runtime_only_install_runs_the_agent_and_names_the_extra_for_training(model, tmp_path: Path) -> None:
    _, data, stream = model
    bundle, pub = _bundle(data, tmp_path)
    csv = tmp_path / "cam.csv"
    write_csv(stream.slice(0, 2000), csv)
    ran = _agent_modules(tmp_path / "a", bundle, pub, csv, block=True)
    assert ran["code"] == 0 and "incidents" not in ran["stderr"], ran["stderr"]
    train = _cli_modules(["tinywarden", "train", str(csv), "--model", "kmeans", "--out", str(tmp_path / "m.twb")],
                         block=True)
    assert train["code"] == 2 and "Traceback" not in train["stderr"]
    assert "pip install 'tinywarden[train]'" in " ".join(train["stderr"].split())


def test_the_normal_tail_without_scipy_matches_scipy() -> None:
    from scipy.special import log_ndtr

    from tinywarden.likelihood import log_tail

    z = np.concatenate([np.linspace(-40.0, 60.0, 100_001), [36.999, 37.0, 37.001, 1e3, 1e6]])
    got, want = log_tail(z), log_ndtr(-z)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert float(log_tail(3.0)) == pytest.approx(float(log_ndtr(-3.0)), rel=1e-14)
