"""The pipeline's ``likelihood_gate``: chosen at train/tune time, kept by the model file and the int8 program, and
what it is for (one burst does not blind the confidence scale to the next one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import make_series
from inprocess import run_tinywarden
from tinywarden.detectors import make_detector
from tinywarden.errors import ConfigError
from tinywarden.modelfile import load_pipeline, save_pipeline
from tinywarden.pipeline import Pipeline
from tinywarden.program import INT8_HEADER_KEY, from_model_file
from tinywarden.quantize import int8_sections
from tinywarden.telemetry.series import Series


def _fit(gate: float | None) -> tuple[Pipeline, Series]:
    s = make_series(n=4000, channels=2)
    return Pipeline(make_detector("ewma"), 16, 8, target_fpr=0.01, likelihood_gate=gate).fit(s), s


def test_gate_reaches_the_likelihood_the_model_file_and_the_int8_program(tmp_path: Path) -> None:
    for gate in (None, 3.0):
        p, s = _fit(gate)
        assert p.likelihood_ is not None and p.likelihood_.gate == gate
        extra, arrays, _ = int8_sections(p, s)
        path = tmp_path / f"m{gate}.twb"
        save_pipeline(p, path, extra=extra, extra_arrays=arrays)
        back = load_pipeline(path)
        assert back.likelihood_gate == gate and back.config() == p.config()
        assert back.likelihood_ is not None and back.likelihood_.gate == gate
        program = from_model_file(back.header_[INT8_HEADER_KEY], back.extra_arrays_)
        assert program.likelihood is not None
        assert program.likelihood.attrs["gate"] == (-1 if gate is None else round(gate * 2**12))


@pytest.mark.parametrize("bad", [0.0, -3.0, float("nan"), float("inf"), True])
def test_a_gate_that_is_not_a_positive_z_is_refused(bad: float) -> None:
    with pytest.raises(ConfigError, match="likelihood gate"):
        Pipeline(make_detector("ewma"), 16, 8, likelihood_gate=bad)


def test_a_gated_scale_is_not_blinded_by_an_earlier_burst() -> None:
    """Two equal bursts 50 windows apart: without the gate the first widens the long-term distribution and the
    second reports a lower confidence; with it the second is judged on (almost) the scale the first was."""
    second: dict[float | None, float] = {}
    for gate in (None, 3.0):
        p, _ = _fit(gate)
        test = make_series(n=2400, channels=2, seed=5)
        vals = test.values.copy()
        for start in (400, 1200):
            vals[start : start + 160] += 6.0
        windows = p.window_inputs(Series(test.timestamps, vals, test.channels))[1]
        conf = p.likelihood_.fresh().transform(p.score_inputs(windows))
        first_burst, second_burst = conf[(400 // 8) : (560 // 8)], conf[(1200 // 8) : (1360 // 8)]
        assert first_burst.max() == pytest.approx(1.0)
        second[gate] = float(np.median(second_burst))
    assert second[3.0] > second[None] + 0.1


def test_train_and_tune_take_the_gate_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "normal.csv"
    s = make_series(n=3000, channels=2)
    data.write_text("timestamp,c0,c1\n" + "\n".join(f"{t},{a},{b}" for t, (a, b) in zip(s.timestamps, s.values,
                                                                                        strict=True)))
    out = tmp_path / "m.twb"
    r = run_tinywarden("train", str(data), "--out", str(out), "--model", "ewma", "--window", "16", "--stride", "8",
                       "--likelihood-gate", "3")
    assert r.returncode == 0, r.stderr
    assert load_pipeline(out).likelihood_.gate == 3.0
    r = run_tinywarden("train", str(data), "--out", str(tmp_path / "bad.twb"), "--model", "ewma",
                       "--likelihood-gate", "-1")
    assert r.returncode == 2 and "likelihood gate must be a positive z" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "bad.twb").exists()
    tuned = tmp_path / "t.twb"
    r = run_tinywarden("tune", str(data), "--out", str(tuned), "--families", "ewma", "--windows", "16", "--trials",
                       "1", "--no-count", "--likelihood-gate", "2.5")
    assert r.returncode == 0, r.stderr
    back = load_pipeline(tuned)
    assert back.likelihood_.gate == 2.5
    program = from_model_file(back.header_[INT8_HEADER_KEY], back.extra_arrays_)
    assert program.likelihood.attrs["gate"] == round(2.5 * 2**12)


def test_the_device_likelihood_with_a_gate_still_reaches_the_red_level_after_a_loud_attack() -> None:
    """The attack range's sequence in integers: 60 windows at 1e8, normal, then a moderate attack (40x the
    threshold). Ungated, the burst teaches the scale its own levels and the moderate attack stays under 0.5;
    with the gate at z 3 it reaches 0.5 (what the range's confidence bar needs)."""
    from tinywarden.kernels.likelihood_q import CONF_ONE, confidence_q, lower_likelihood
    from tinywarden.likelihood import AnomalyLikelihood

    rng = np.random.default_rng(1)
    train = np.round(rng.gamma(2.0, size=500) * 1000).astype(np.int64)
    threshold = float(np.quantile(train, 0.999))
    normal = np.round(rng.gamma(2.0, size=400) * 1000).astype(np.int64)
    scores = np.r_[normal[:300], np.full(60, 10**8), normal[300:], np.full(5, int(threshold * 40))]
    hits = np.zeros(len(scores), dtype=bool)
    later = {gate: confidence_q(lower_likelihood(AnomalyLikelihood(gate=gate).fit(train)), scores, hits)[-5:]
             for gate in (None, 3.0)}
    assert later[None].max() < CONF_ONE // 2 <= later[3.0].min()
