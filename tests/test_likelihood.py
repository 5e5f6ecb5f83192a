"""The calibrated anomaly likelihood: stream equals batch, one scale for every series, bounded adaptation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from tinywarden.errors import ConfigError, DataError, NotFittedError
from tinywarden.likelihood import HOLDOFF_LEVEL, AnomalyLikelihood, confidence_of_z, z_for_confidence


def _normal_scores(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).gamma(2.0, size=n)


scores_st = st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=60)


@settings(max_examples=40, deadline=None)
@given(train=st.lists(st.floats(0, 100, allow_nan=False), min_size=8, max_size=40), stream=scores_st,
       short=st.integers(1, 6), gate=st.sampled_from([None, 0.5, 3.0]))
def test_stream_equals_batch(train: list[float], stream: list[float], short: int, gate: float | None) -> None:
    lik = AnomalyLikelihood(short=short, gate=gate).fit(train)
    batch = lik.transform(stream)
    one_by_one = np.array([lik.update(s) for s in stream])
    np.testing.assert_array_equal(batch, one_by_one)
    assert ((batch >= 0) & (batch <= 1)).all()


def test_transform_leaves_the_stream_state_alone() -> None:
    lik = AnomalyLikelihood(short=4).fit(_normal_scores(200))
    first = [lik.update(s) for s in _normal_scores(50, 1)]
    lik.transform(_normal_scores(30, 2) * 100)
    again = AnomalyLikelihood(short=4).fit(_normal_scores(200))
    want = [again.update(s) for s in _normal_scores(50, 1)] + [again.update(9.0)]
    assert first + [lik.update(9.0)] == want


def test_confidence_means_the_same_on_every_scale() -> None:
    train, stream = _normal_scores(300), np.r_[_normal_scores(200, 1), [30.0, 60.0]]
    base = AnomalyLikelihood().fit(train).transform(stream)
    for scale, shift in ((1e-3, 0.0), (1e4, 0.0), (1.0, -50.0)):
        other = AnomalyLikelihood().fit(train * scale + shift).transform(stream * scale + shift)
        np.testing.assert_allclose(other, base, atol=1e-9)


def test_normal_scores_rarely_reach_half_confidence_and_a_spike_does() -> None:
    lik = AnomalyLikelihood().fit(_normal_scores(500))
    c = lik.transform(np.r_[_normal_scores(5000, 3), [80.0]])
    assert np.mean(c[:-1] > 0.5) < 0.001
    assert c[-1] > 0.5


def test_a_higher_score_gets_a_higher_confidence() -> None:
    lik = AnomalyLikelihood().fit(_normal_scores(300))
    c = [AnomalyLikelihood.from_state(lik.get_params(), lik.state()).update(s) for s in (1.0, 5.0, 10.0, 20.0)]
    assert c == sorted(c) and c[0] < c[-1]


def _windows_until_quiet(lik: AnomalyLikelihood, level: float, limit: int = 20000) -> int:
    for i in range(limit):
        if lik.update(level) < 0.5:
            return i
    return limit


def test_adaptation_learns_a_lasting_change_in_bounded_time_and_freezing_does_not() -> None:
    train = _normal_scores(500)
    adapting = _windows_until_quiet(AnomalyLikelihood().fit(train), 25.0)
    frozen = _windows_until_quiet(AnomalyLikelihood(rate_shift=20, slow_shift=0).fit(train), 25.0)
    assert 0 < adapting < 4 * 2**9
    assert frozen == 20000


def test_gate_slows_learning_from_elevated_levels() -> None:
    train = _normal_scores(500)
    open_ = _windows_until_quiet(AnomalyLikelihood().fit(train), 25.0)
    gated = _windows_until_quiet(AnomalyLikelihood(gate=3.0, slow_shift=2).fit(train), 25.0)
    assert gated > 2 * open_


def test_nan_score_gives_nan_and_changes_nothing() -> None:
    lik = AnomalyLikelihood(short=3).fit(_normal_scores(100))
    twin = AnomalyLikelihood(short=3).fit(_normal_scores(100))
    assert math.isnan(lik.update(math.nan))
    assert math.isnan(lik.transform([1.0, math.inf])[1])
    assert lik.update(7.0) == twin.update(7.0)


def test_confidence_scale() -> None:
    assert z_for_confidence(0.5, 10.0) == pytest.approx(norm.isf(1e-5), abs=1e-6)
    assert float(confidence_of_z(norm.isf(1e-5), 10.0)) == pytest.approx(0.5)
    assert float(confidence_of_z(-3.0, 10.0)) == pytest.approx(-math.log10(norm.sf(-3.0)) / 10)
    assert float(confidence_of_z(40.0, 10.0)) == 1.0


def test_state_round_trip() -> None:
    lik = AnomalyLikelihood(short=2, rate_shift=8).fit(_normal_scores(100))
    back = AnomalyLikelihood.from_state(lik.get_params(), lik.state())
    stream = _normal_scores(40, 5)
    np.testing.assert_array_equal(back.transform(stream), lik.transform(stream))


@pytest.mark.parametrize("state", [{}, {"lo": 0, "spread": 0, "mean": 0, "var": 1, "std_floor": 1},
                                   {"lo": 0, "spread": 1, "mean": math.nan, "var": 1, "std_floor": 1},
                                   {"lo": "x", "spread": 1, "mean": 0, "var": 1, "std_floor": 1}])
def test_malformed_state_is_refused(state: dict[str, object]) -> None:
    with pytest.raises(DataError):
        AnomalyLikelihood.from_state(AnomalyLikelihood().get_params(), state)  # type: ignore[arg-type]


def test_bad_input_is_refused() -> None:
    with pytest.raises(DataError, match="at least 4"):
        AnomalyLikelihood().fit([1.0, 2.0, 3.0])
    with pytest.raises(DataError, match="NaN"):
        AnomalyLikelihood().fit([1.0] * 7 + [math.nan])
    with pytest.raises(NotFittedError):
        AnomalyLikelihood().update(1.0)
    for bad in ({"short": 0}, {"rate_shift": 21}, {"gate": -1.0}, {"gate": math.nan}, {"gate": math.inf},
                {"decades": 0.0}):
        with pytest.raises(ConfigError):
            AnomalyLikelihood(**bad).fit(_normal_scores(20))  # type: ignore[arg-type]


def test_constant_training_scores_give_finite_confidences() -> None:
    lik = AnomalyLikelihood().fit(np.full(50, 3.0))
    c = lik.transform([3.0, 3.0, 3.5, 100.0])
    assert np.isfinite(c).all() and c[0] < 0.5 < c[-1]


def test_a_hold_off_silences_exactly_the_windows_after_a_confident_one_and_keeps_learning():
    rng = np.random.default_rng(5)
    train = rng.gamma(2.0, size=400)
    stream = np.r_[rng.gamma(2.0, size=300), np.full(5, 60.0), rng.gamma(2.0, size=300), np.full(3, 80.0),
                   rng.gamma(2.0, size=100)]
    plain = AnomalyLikelihood(short=10, rate_shift=13, record=None).fit(train).transform(stream)
    held = AnomalyLikelihood(short=10, rate_shift=13, holdoff=50, record=None).fit(train).transform(stream)
    assert (held <= plain).all()
    quiet = np.zeros(len(stream), dtype=bool)
    for i in np.flatnonzero(plain >= HOLDOFF_LEVEL):  # every raw confident window silences the next 50
        quiet[i + 1 : i + 51] = True
    assert np.array_equal(held, np.where(quiet, 0.0, plain))
    assert quiet.any() and (held >= HOLDOFF_LEVEL).sum() == 2  # one report per event
    lik = AnomalyLikelihood(short=10, rate_shift=13, holdoff=50, record=None).fit(train)
    assert np.array_equal([lik.update(v) for v in stream], held)  # streaming equals batch


@pytest.mark.parametrize("bad", [-1, 65536, 2.5])
def test_a_bad_hold_off_is_refused(bad):
    with pytest.raises(ConfigError, match="holdoff"):
        AnomalyLikelihood(holdoff=bad).fit(np.arange(10.0))


def test_a_new_record_reports_full_confidence_once_per_jump_and_all_along_a_ramp():
    train = np.r_[np.zeros(50), np.linspace(0.0, 10.0, 50)]  # seen range [0, 10]
    stream = np.r_[np.full(20, 5.0), [10.4, 30.0, 30.0, 29.0, 31.0], 40.0 + np.arange(10) * 5.0]
    lik = AnomalyLikelihood().fit(train)
    c = lik.transform(stream)
    rec = c == 1.0
    # 10.4 is within 5% of the range above 10; 30 is a record once (its repeat and 31 are not: the range grew
    # to [0, 30], so a record must pass 31.5); every step of the ramp passes the last one by more than 5%
    assert not rec[:21].any() and rec[21] and not rec[22:25].any() and rec[25:].all()
    assert np.array_equal([lik.update(v) for v in stream], c)  # streaming equals batch
    off = AnomalyLikelihood(record=None).fit(train).transform(stream)
    assert np.array_equal(np.where(rec, off, c), off) and (off[rec] < 1.0).any()


def test_a_model_written_before_the_record_rule_keeps_its_confidences():
    lik = AnomalyLikelihood().fit(_normal_scores(300))
    params, state = lik.get_params(), lik.state()
    old_params = {k: v for k, v in params.items() if k not in ("record", "holdoff")}
    old_state = {k: v for k, v in state.items() if k != "hi"}
    old = AnomalyLikelihood.from_state(old_params, old_state)
    stream = np.r_[_normal_scores(200, seed=3), 1e3]
    assert old.record is None
    assert np.array_equal(old.transform(stream), AnomalyLikelihood(record=None).fit(_normal_scores(300))
                          .transform(stream))
    with pytest.raises(DataError, match="hi"):
        AnomalyLikelihood.from_state(params, {**state, "hi": state["lo"] - 1.0})


@pytest.mark.parametrize("bad", [-0.1, 17.0, True, "0.05"])
def test_a_bad_record_tolerance_is_refused(bad):
    with pytest.raises(ConfigError, match="record"):
        AnomalyLikelihood(record=bad).fit(np.arange(10.0))
