"""The likelihood's value record (HTM's spatial anomaly on the values): per channel, both sides, growing range."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinywarden.errors import ConfigError, DataError
from tinywarden.likelihood import AnomalyLikelihood, ValueRecord


def _train(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Training scores and two-channel values (channel 0 in [0, 10], channel 1 in [-1, 1])."""
    rng = np.random.default_rng(seed)
    values = np.c_[rng.uniform(0.0, 10.0, n), rng.uniform(-1.0, 1.0, n)]
    values[0], values[1] = [0.0, -1.0], [10.0, 1.0]
    return rng.gamma(2.0, size=n), values


def test_a_value_outside_everything_seen_reports_one_in_an_ordinary_window() -> None:
    scores, values = _train()
    lik = AnomalyLikelihood().fit(scores, values=values)
    ordinary = float(np.median(scores))
    assert lik.update(ordinary, [5.0, 0.0]) < 0.5
    assert lik.update(ordinary, [5.0, 1.2]) == 1.0  # channel 1 beyond 1 + 5% of its range 2
    assert lik.update(ordinary, [5.0, 1.2]) < 0.5  # the range grew: the same value again is no record
    assert lik.update(ordinary, [-0.6, 0.0]) == 1.0  # below, on the other channel
    assert lik.update(ordinary, [10.4, 0.0]) < 0.5  # within 5% of the range above it


def test_every_step_of_a_ramp_beyond_the_range_reports() -> None:
    """The range grows only by reporting: an attacker cannot widen it unseen."""
    rec = ValueRecord(0.05).fit(np.array([[0.0], [10.0]]))
    ramp = 10.0 * 1.06 ** np.arange(1, 30)  # each step beats the last by more than 5% of the grown range
    assert all(rec.push([v]) for v in ramp)
    slow = ValueRecord(0.05).fit(np.array([[0.0], [10.0]]))
    creep = 10.0 + 0.4 * np.arange(1, 60)  # steps under the tolerance: never a record, but the range grows
    hits = [slow.push([v]) for v in creep]
    assert not any(hits) and slow.state()[1][0] == creep[-1]


def test_samples_of_one_window_are_checked_one_by_one() -> None:
    rec = ValueRecord(0.05).fit(np.array([[0.0], [10.0]]))
    assert rec.push([[10.4], [10.9]]) is False  # 10.4 grows the range to 10.4, then 10.9 < 10.4 + 0.52
    rec.reset()
    assert rec.push([[10.9]]) is True  # against the fitted range alone it is a record


def test_non_finite_values_neither_report_nor_widen() -> None:
    scores, values = _train()
    lik = AnomalyLikelihood().fit(scores, values=values)
    ordinary = float(np.median(scores))
    assert lik.update(ordinary, [np.nan, np.inf]) < 0.5
    assert lik.update(ordinary, [11.0, 0.0]) == 1.0
    assert np.isnan(lik.update(np.nan, [20.0, 0.0]))  # a NaN score: NaN, but the value range still learns
    assert lik.update(ordinary, [20.5, 0.0]) < 0.5


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(-50, 50), st.floats(-5, 5), st.floats(0, 30)), min_size=1, max_size=40))
def test_stream_equals_batch_with_values(stream: list[tuple[float, float, float]]) -> None:
    scores, values = _train()
    lik = AnomalyLikelihood().fit(scores, values=values)
    rows = [np.array(r[:2]) for r in stream]
    s = np.array([r[2] for r in stream])
    batch = lik.transform(s, rows)
    np.testing.assert_array_equal(batch, [lik.update(x, r) for x, r in zip(s, rows, strict=True)])
    off = AnomalyLikelihood(value_record=None).fit(scores, values=values).transform(s, rows)
    assert (batch >= off).all() and np.array_equal(batch[batch < 1.0], off[batch < 1.0])


def _stream_state(lik: AnomalyLikelihood) -> tuple:
    lo, hi = lik.values_.state() if lik.values_ is not None else (None, None)
    return (lik._ring.tobytes(), lik._pos, lik._count, lik._sum, lik._mean, lik._var, lik._hold, lik._rec_lo,
            lik._rec_hi, lik._value_hit, None if lo is None else (lo.tobytes(), hi.tobytes()))


@settings(max_examples=60, deadline=None)
@given(stream=st.lists(st.tuples(st.one_of(st.floats(-50, 80), st.sampled_from([np.nan, np.inf])),
                                 st.lists(st.tuples(st.one_of(st.floats(-15, 25), st.just(np.nan)), st.floats(-5, 5)),
                                          min_size=1, max_size=3)), min_size=1, max_size=60),
       cuts=st.lists(st.integers(0, 60), max_size=5), observed=st.integers(-1, 60),
       params=st.sampled_from([{}, {"holdoff": 3}, {"short": 4, "gate": 2.0}, {"value_record": None}]),
       with_rows=st.booleans())
def test_update_many_equals_update_window_after_window(stream: list, cuts: list[int], observed: int,
                                                       params: dict, with_rows: bool) -> None:
    """The block update (what the chunked scorer calls) gives every confidence and leaves the stream state bit for
    bit as the per-window loop does, carried across blocks of any size, with a sample observe()d between windows."""
    scores, values = _train()
    one, many = (AnomalyLikelihood(**params).fit(scores, values=values) for _ in range(2))
    s = np.array([x for x, _ in stream])
    rows = [np.array(r) for _, r in stream] if with_rows else None
    loop, blocks = [], []
    bounds = [0, *sorted({c for c in cuts if c < len(s)}), len(s)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        for i in range(a, b):
            if i == observed:
                one.observe([30.0, 0.0])
            loop.append(one.update(s[i], None if rows is None else rows[i]))
        if a <= observed < b:  # the sample arrives before window `observed`: blocks split there
            blocks.append(many.update_many(s[a:observed], None if rows is None else rows[a:observed]))
            many.observe([30.0, 0.0])
            a = observed
        blocks.append(many.update_many(s[a:b], None if rows is None else rows[a:b]))
        assert _stream_state(many) == _stream_state(one)
    got = np.concatenate(blocks)
    assert got.dtype == np.float64 and got.tobytes() == np.array(loop).tobytes()


def test_without_values_the_confidences_are_the_scores_alone() -> None:
    scores, values = _train()
    stream = np.r_[np.random.default_rng(5).gamma(2.0, size=200), 60.0, 2.0]
    plain = AnomalyLikelihood().fit(scores).transform(stream)
    assert np.array_equal(AnomalyLikelihood().fit(scores, values=values).transform(stream), plain)
    assert np.array_equal(AnomalyLikelihood(value_record=None).fit(scores).transform(stream), plain)
    assert "value_lo" not in AnomalyLikelihood().fit(scores).state()


def test_the_range_round_trips_through_the_model_state_and_tampering_is_refused() -> None:
    scores, values = _train()
    lik = AnomalyLikelihood().fit(scores, values=values)
    lik.update(1.0, [30.0, 0.0])  # stream state: a model file keeps the fitted range, not this one
    back = AnomalyLikelihood.from_state(lik.get_params(), lik.state())
    assert back.update(1.0, [30.0, 0.0]) == 1.0
    assert lik.fresh().state() == lik.state()
    params, state = lik.get_params(), lik.state()
    for bad in ({"value_lo": [0.0]}, {"value_hi": [1.0, "x"]}, {"value_lo": [0.0, 2.0], "value_hi": [1.0, 1.0]},
                {"value_lo": [0.0, float("nan")]}, {"value_lo": []}):
        with pytest.raises(DataError, match="value_lo"):
            AnomalyLikelihood.from_state(params, {**state, **bad})
    old = {k: v for k, v in params.items() if k != "value_record"}  # a model written before the rule
    assert AnomalyLikelihood.from_state(old, {k: v for k, v in state.items() if not k.startswith("value")}
                                        ).update(1.0, [30.0, 0.0]) < 1.0


def test_bad_inputs_get_one_line_errors() -> None:
    scores, values = _train()
    lik = AnomalyLikelihood().fit(scores, values=values)
    with pytest.raises(DataError, match="2 channel"):
        lik.update(1.0, [1.0, 2.0, 3.0])
    with pytest.raises(DataError, match="windows of rows"):
        lik.transform([1.0, 2.0], [[1.0, 0.0]])
    with pytest.raises(DataError, match="no finite"):
        AnomalyLikelihood().fit(scores, values=np.c_[values[:, 0], np.full(len(values), np.nan)])
    for bad in (-0.1, 17.0, True, "0.05"):
        with pytest.raises(ConfigError, match="value_record"):
            AnomalyLikelihood(value_record=bad).fit(scores)  # type: ignore[arg-type]


def test_the_pipeline_fits_the_value_record_and_every_scoring_path_reports_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Fitted from the training rows, stored in the model file, fed each window's new rows by the batch
    confidence, the chunked scorer (the CLI's ``score``) and the replay alike."""
    from tinywarden.chunked_score import score_chunks
    from tinywarden.detectors import EWMAZScore
    from tinywarden.modelfile import load_pipeline, save_pipeline
    from tinywarden.pipeline import Pipeline
    from tinywarden.replay import replay
    from tinywarden.telemetry.series import Series

    rng = np.random.default_rng(3)
    values = rng.normal(size=(3000, 2))
    lo, hi = values[:2000, 1].min(), values[:2000, 1].max()
    values[2500, 1] = hi + 0.1 * (hi - lo)  # one sample beyond every training value, by twice the tolerance
    s = Series(np.arange(3000.0), values, ("a", "b"))
    p = Pipeline(EWMAZScore(), window=32, stride=16).fit(s.slice(0, 2000))
    assert p.likelihood_ is not None and p.likelihood_.values_ is not None
    np.testing.assert_array_equal(p.likelihood_.values_.lo_, values[:2000].min(axis=0))
    save_pipeline(p, tmp_path / "m.twb")
    p = load_pipeline(tmp_path / "m.twb")
    test = s.slice(2000, 3000)
    scored = p.score(test)
    conf = p.confidence(scored.scores, test, scored.end_rows)
    plain = p.confidence(scored.scores)
    assert conf is not None and plain is not None
    hit = int(np.flatnonzero((scored.end_rows >= 500) & (scored.end_rows - 16 < 500))[0])  # the window adding row 500
    assert conf[hit] == 1.0 and plain[hit] < 1.0
    assert np.array_equal(np.delete(conf, hit), np.delete(plain, hit))
    chunked = np.concatenate([c.confidence for c in score_chunks(p, [test.slice(i, i + 77) for i in range(0, 1000, 77)])
                              if c.confidence is not None])
    np.testing.assert_array_equal(chunked, conf)
    np.testing.assert_array_equal(replay(p, test).confidences, conf)
