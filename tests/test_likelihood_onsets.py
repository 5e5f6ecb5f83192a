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
