"""alarm_onsets: each alarm notified once at its onset, silent only while it stands, value records always."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tinywarden.likelihood import HOLDOFF_LEVEL, REARM_LEVEL, alarm_onsets

conf_st = st.lists(st.one_of(st.floats(0.0, 1.0), st.just(float("nan"))), min_size=1, max_size=120)


@settings(max_examples=80, deadline=None)
@given(conf=conf_st, flags=st.lists(st.booleans(), min_size=120, max_size=120))
def test_onsets_silence_only_a_standing_alarm(conf: list[float], flags: list[bool]) -> None:
    c = np.array(conf)
    always = np.array(flags[: len(c)])
    out = alarm_onsets(c, always=always)
    assert np.array_equal(np.isnan(out), np.isnan(c))
    ok = ~np.isnan(c)
    changed = ok & (out != c)
    assert (out[changed] == 0.0).all() and not always[changed].any()
    # a silenced window is inside a standing alarm: an earlier alarm start with nothing below REARM since
    valid = np.flatnonzero(ok)
    for i in np.flatnonzero(changed):
        before = [j for j in valid if j < i]
        assert c[i] >= REARM_LEVEL
        start = max(j for j in before if c[j] >= HOLDOFF_LEVEL)
        assert all(c[j] >= REARM_LEVEL for j in before if j > start)
    # the first window of every alarm (after a confidence under REARM, or the stream's start) is kept
    prev_low = True
    for i in valid:
        if prev_low and c[i] >= HOLDOFF_LEVEL:
            assert out[i] == c[i]
        prev_low = (prev_low and c[i] < HOLDOFF_LEVEL) or c[i] < REARM_LEVEL


def test_a_value_record_inside_a_standing_alarm_is_still_reported() -> None:
    c = np.array([0.1, 0.9, 0.8, 1.0, 0.6, 0.1, 0.1])
    rec = np.array([0, 0, 0, 1, 0, 0, 0], dtype=bool)
    assert alarm_onsets(c).tolist() == [0.1, 0.9, 0.0, 0.0, 0.0, 0.1, 0.1]
    assert alarm_onsets(c, always=rec).tolist() == [0.1, 0.9, 0.0, 1.0, 0.0, 0.1, 0.1]


def test_notifications_are_the_onsets_of_the_unchanged_confidence_with_every_value_record() -> None:
    from tinywarden.likelihood import AnomalyLikelihood

    rng = np.random.default_rng(3)
    train = rng.gamma(2.0, size=400)
    lik = AnomalyLikelihood().fit(train, values=rng.normal(size=(400, 1)))
    scores = np.r_[rng.gamma(2.0, size=100), np.full(20, 30.0), rng.gamma(2.0, size=50)]
    rows = [np.array([[0.0]]) for _ in scores]
    rows[110] = np.array([[50.0]])  # a value record while the alarm stands
    before = lik.transform(scores, rows)
    out = lik.notifications(scores, rows)
    assert np.array_equal(lik.transform(scores, rows), before)  # the confidence the tiers read is unchanged
    onsets = alarm_onsets(before, always=np.arange(len(scores)) == 110)
    assert np.array_equal(out, onsets)
    assert out[100] == before[100] >= HOLDOFF_LEVEL  # the alarm's onset is notified
    assert (out[101:110] == 0.0).all() and out[110] == 1.0  # silent while it stands, but for the value record


def test_pipeline_notifications_view_its_confidence() -> None:
    from tinywarden.detectors import make_detector
    from tinywarden.pipeline import Pipeline
    from tinywarden.telemetry import Series

    rng = np.random.default_rng(4)
    v = np.sin(np.arange(1200) / 10.0) + 0.05 * rng.standard_normal(1200)
    v[900:960] += 3.0
    s = Series(np.arange(1200.0), v[:, None], ("x",))
    p = Pipeline(make_detector("ewma"), window=16, stride=4).fit(s.slice(0, 600))
    scored = p.score(s)
    conf = p.confidence(scored.scores, s, scored.end_rows)
    out = p.notifications(scored.scores, s, scored.end_rows)
    assert conf is not None and out is not None and out.shape == conf.shape
    assert ((out == conf) | (out == 0.0)).all()  # a view: each window notified as it is, or silent
    near = (scored.end_rows >= 900) & (scored.end_rows < 960)
    assert conf[near].max() >= HOLDOFF_LEVEL and out[near].max() >= HOLDOFF_LEVEL
    assert (out >= HOLDOFF_LEVEL).sum() < (conf >= HOLDOFF_LEVEL).sum()  # the standing alarm is notified once
