"""The host-native runtime (tinywarden.native): the generated C built for this host and called through ctypes
must give the Python int8 reference's scores, decisions and confidences bit for bit, in one batch call and
one sample at a time, and the lean agent's model must load without importing numpy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from int8_fixtures import camera, fitted, shared_entity
from tinywarden.adaptation import Adaptation
from tinywarden.native import NativeError, compile_program, find_compiler, native_cache
from tinywarden.program import Int8Stream, run_confidence, run_int8

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="no host C compiler")


def assert_batch_exact(program, values, cache):
    lib = compile_program(program, cache=cache)
    scores, flags, anomalies, conf = lib.batch(values)
    ref_scores, ref_alarms = run_int8(program, values)
    assert len(scores) == len(ref_scores) > 0
    assert scores.tolist() == ref_scores.tolist()
    assert flags.tolist() == (ref_scores > program.threshold).astype(int).tolist()
    assert anomalies.tolist() == ref_alarms.tolist()
    ref_conf = run_confidence(program, ref_scores, values)
    assert conf.tolist() == (ref_conf.tolist() if ref_conf is not None else [0] * len(scores))
    return lib


def test_batch_equals_the_int8_reference_on_the_simulator(tmp_path):
    _, prog = fitted("dense_ae")
    s, _ = camera()
    values = s.values[:20000]
    assert_batch_exact(prog, values, tmp_path)
    assert run_int8(prog, values)[1].any()  # the attacks raise alarms: both decisions are compared


def test_batch_equals_the_int8_reference_on_an_smd_entity(tmp_path):
    prog, values = shared_entity("smd", "dense_ae", epochs=3, max_steps=150)
    assert_batch_exact(prog, values, tmp_path)


@pytest.mark.parametrize("adapt", [False, True])
def test_stream_equals_int8_stream_with_and_without_adaptation(adapt, tmp_path):
    _, prog = fitted("dense_ae")
    s, _ = camera()
    values = s.values[:6000].copy()
    values[3000:3200] *= 3.0  # a shift, so the adaptation and the likelihood both move
    ad = Adaptation(rate_shift=4, below_confidence=0.9) if adapt else None
    lib = compile_program(prog, ad, cache=tmp_path)
    assert lib.has_adaptation == (adapt and prog.adaptation is not None)
    ref, nat = Int8Stream(prog, ad), lib.stream()
    n = 0
    for row in values:
        a, b = ref.push(row), nat.push(row.tolist())
        assert (a is None) == (b is None)
        if a is not None:
            n += 1
            assert (b[0], b[2]) == (float(a[0]), bool(a[1]))
            assert round(nat.confidence * 32768) == ref.confidence
            if ref.adapter is not None:
                st = nat.adaptation()
                assert (st["adapted"], st["flags"], st["drift"]) == (ref.adapter.adapted, ref.adapter.flags,
                                                                     ref.adapter.drift)
    assert n > 50
    if adapt:
        assert nat.adaptation()["adapted"] > 0


def test_a_non_finite_sample_scores_nan_for_its_windows(tmp_path):
    _, prog = fitted("dense_ae")
    nat = compile_program(prog, cache=tmp_path).stream()
    row = [1.0] * prog.n_channels
    outs = [nat.push([float("nan"), *row[1:]] if i == prog.window - 1 else row)
            for i in range(prog.window + 2 * prog.stride)]
    got = [o for o in outs if o is not None]
    assert np.isnan(got[0][0]) and np.isnan(got[1][0]) and not np.isnan(got[2][0])


def test_carry_over_takes_the_likelihood_state_and_keeps_the_samples(tmp_path):
    _, prog = fitted("dense_ae")
    s, _ = camera()
    lib = compile_program(prog, cache=tmp_path)
    old, new = lib.stream(), lib.stream()
    for row in s.values[:2000]:
        old.push(row.tolist())
    for row in s.values[2000:2000 + prog.window - 1]:
        old.push(row.tolist())
        new.push(row.tolist())
    assert old.adaptation()["lik_mean"] != new.adaptation()["lik_mean"]
    new.carry_from(old)
    assert old.adaptation()["lik_mean"] == new.adaptation()["lik_mean"]
    out = new.push(s.values[2000 + prog.window - 1].tolist())
    assert out is not None  # its own ring and phase were kept: the window completes on time


def test_carry_over_takes_the_value_records_grown_range(tmp_path):
    """A hot swap carries the value record's grown range: a value the old state already saw is no record after
    the carry, as in the Python reference given the same likelihood state (a fresh range would report it)."""
    _, prog = fitted("dense_ae")
    s, train = camera()
    w = prog.window
    values = s.values[: 2000 + w - 1 + 400].astype(np.float64)
    lo, hi = train.values.min(axis=0), train.values.max(axis=0)
    values[1500, 0] = values[2000 + w + 100, 0] = hi[0] + (hi[0] - lo[0])  # seen before the swap, then again
    lib = compile_program(prog, cache=tmp_path)
    old, new = lib.stream(), lib.stream()
    ref_old, ref_new, ref_fresh = Int8Stream(prog), Int8Stream(prog), Int8Stream(prog)
    for i, row in enumerate(values[: 2000 + w - 1]):
        old.push(row.tolist())
        ref_old.push(row)
        if i >= 2000:
            new.push(row.tolist())
            ref_new.push(row)
            ref_fresh.push(row)
    new.carry_from(old)
    assert ref_old.likelihood is not None and ref_new.likelihood is not None and ref_fresh.likelihood is not None
    state = {k: (list(v) if isinstance(v, list) else v) for k, v in ref_old.likelihood.__dict__.items()}
    ref_new.likelihood.__dict__.update(state)
    ref_fresh.likelihood.__dict__.update({**state, "vlo": ref_fresh.likelihood.vlo, "vhi": ref_fresh.likelihood.vhi})
    got, want, fresh = [], [], []
    for row in values[2000 + w - 1 :]:
        if new.push(row.tolist()) is not None:
            got.append(round(new.confidence * 32768))
        if ref_new.push(row) is not None:
            want.append(ref_new.confidence)
        if ref_fresh.push(row) is not None:
            fresh.append(ref_fresh.confidence)
    assert got == want
    assert fresh != want and 32768 in fresh  # the range from training alone would report the value again


def test_no_compiler_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(NativeError, match="no C compiler found"):
        find_compiler()


def test_a_cache_others_may_write_is_refused(tmp_path):
    d = tmp_path / "cache"
    d.mkdir()
    os.chmod(d, 0o777)
    with pytest.raises(NativeError, match="writable by it alone"):
        native_cache(d)


def _model_bytes():
    from tinywarden.modelfile import pipeline_to_bytes
    from tinywarden.quantize import int8_sections

    pipe, _ = fitted("dense_ae")
    _, train = camera()
    extra, arrays, _ = int8_sections(pipe, train)
    return pipeline_to_bytes(pipe, extra, arrays)


def test_the_lean_model_loads_and_scores_without_numpy(tmp_path):
    model = tmp_path / "m.tw"
    model.write_bytes(_model_bytes())
    s, _ = camera()
    rows = s.values[:1000]
    (tmp_path / "rows.json").write_text(json.dumps(rows.tolist()))
    code = f"""
import json, sys
from pathlib import Path
from tinywarden.adaptation import Adaptation
from tinywarden.native import load_native
m = load_native(Path({str(model)!r}).read_bytes(), Adaptation(), "m.tw", cache={str(tmp_path / 'c')!r})
sc = m.stream()
out = [sc.push(r) for r in json.loads(Path({str(tmp_path / 'rows.json')!r}).read_text())]
print(json.dumps([o[0] for o in out if o is not None]))
print("numpy" in sys.modules)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    scores, numpy_loaded = res.stdout.splitlines()
    assert numpy_loaded == "False"
    _, prog = fitted("dense_ae")
    ref = Int8Stream(prog, Adaptation())
    want = [float(o[0]) for o in (ref.push(r) for r in rows) if o is not None]
    assert json.loads(scores) == want and len(want) > 5


def test_non_finite_and_out_of_float32_samples_score_as_the_int8_scorer_does(tmp_path):
    from tinywarden.runtime import Int8Scorer

    _, prog = fitted("dense_ae")
    s, _ = camera()
    rows = s.values[:3 * prog.window].copy()
    rows[prog.window + 3, 0] = 1e39  # finite as a double, infinite as the float the C takes
    rows[2 * prog.window + 5, 1] = float("inf")
    nat, ref = compile_program(prog, cache=tmp_path).stream(), Int8Scorer(prog)
    got = [(nat.push(r.tolist()), ref.push(r)) for r in rows]
    pairs = [(a, b) for a, b in got if a is not None or b is not None]
    assert len(pairs) > 3
    for a, b in pairs:
        assert a is not None and b is not None and (a[1:], np.isnan(a[0])) == (b[1:], np.isnan(b[0]))
        assert np.isnan(a[0]) or a[0] == b[0]
    assert any(np.isnan(a[0]) for a, _ in pairs) and not all(np.isnan(a[0]) for a, _ in pairs)


def test_a_library_removed_from_the_cache_is_built_again_and_a_changed_one_refused(tmp_path):
    from tinywarden.native import load_native

    model = _model_bytes()
    first = load_native(model, None, "m.tw", tmp_path)
    first.lib.path.unlink()
    again = load_native(model, None, "m.tw", tmp_path)
    assert again.lib.path.is_file() and again.threshold_ == first.threshold_
    again.lib.path.write_bytes(again.lib.path.read_bytes() + b"\0")
    with pytest.raises(NativeError, match="does not match its description"):
        load_native(model, None, "m.tw", tmp_path)


@pytest.mark.parametrize("detector", ["dense_ae", "conv_ae"])
def test_the_lean_incident_summary_matches_the_numpy_one(detector, tmp_path):
    from collections import deque
    from types import SimpleNamespace

    from tinywarden.agent.incidents import native_summary, window_summary
    from tinywarden.modelfile import pipeline_to_bytes
    from tinywarden.native import load_native
    from tinywarden.quantize import int8_sections

    pipe, _ = fitted(detector)
    s, train = camera()
    extra, arrays, note = int8_sections(pipe, train)
    assert extra, note
    model = load_native(pipeline_to_bytes(pipe, extra, arrays), None, "m.tw", tmp_path)
    assert (model.summary_ is not None) == (model.input_kind == "features")
    scorer, rows = model.stream(), deque(maxlen=model.window)
    checked = 0
    for i, r in enumerate(s.values[:20000]):
        rows.append(r.tolist())
        if scorer.push(r.tolist()) is not None and i % 1000 < model.stride:
            runner = SimpleNamespace(scorer=scorer, rows=rows)
            lean = native_summary(model, runner, 5)
            ref = window_summary(model, np.array(rows), 5)
            assert lean is not None and len(lean) == len(ref) == 5
            # the C's features come from the int16 samples: z agrees to the quantization's error (a crossing of
            # the mean more or less moves a crossings z by a step)
            top = max(abs(v) for v in ref.values())
            common = set(lean) & set(ref)
            assert len(common) >= 3
            assert all(abs(lean[k] - ref[k]) <= 0.2 * max(top, 1.0) for k in common), (lean, ref)
            checked += 1
    assert checked >= 10


def test_a_sample_of_the_wrong_width_is_one_clear_error(tmp_path):
    _, prog = fitted("dense_ae")
    nat = compile_program(prog, cache=tmp_path).stream()
    for bad in ([1.0] * (prog.n_channels - 1), [1.0] * (prog.n_channels + 1)):
        with pytest.raises(NativeError, match=f"has {prog.n_channels} channel values, got {len(bad)}"):
            nat.push(bad)
    with pytest.raises(NativeError, match="shape"):
        compile_program(prog, cache=tmp_path).batch(np.zeros((10, prog.n_channels + 1)))


def test_the_feature_affine_from_the_program_alone_is_the_quantizers(tmp_path):
    from tinywarden.native import feature_affine
    from tinywarden.quantize.ptq import feature_affine as quantizer_affine

    pipe, prog = fitted("dense_ae")
    a, b = feature_affine(prog)
    qa, qb = quantizer_affine(pipe, 1.0 / prog.sample_mul.astype(np.float64), prog.sample_zero)
    assert a == qa.tolist() and b == qb.tolist() and len(a) == prog.n_channels * len(pipe.features)


def test_preparing_a_module_needs_no_train_extra(tmp_path):
    model = tmp_path / "m.tw"
    model.write_bytes(_model_bytes())
    code = f"""
import sys
from pathlib import Path
from tinywarden.native import prepare
prepare(Path({str(model)!r}).read_bytes(), None, "m.tw", {str(tmp_path / 'c')!r})
print(sorted({{m.split('.')[0] for m in sys.modules}} & {{'torch', 'sklearn', 'matplotlib', 'pandas', 'scipy'}}))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert res.stdout.strip() == "[]"
