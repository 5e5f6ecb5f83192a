"""The NAB benchmark's detection-side levers (``benchmarks/nab.py --levers``): label-free, one value per row."""

from __future__ import annotations

import numpy as np
from benchmarks.nab import SUPPRESS_LEVELS, SUPPRESS_ROWS, _family_scores, suppress
from hypothesis import given, settings
from hypothesis import strategies as st


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=200), st.floats(0.05, 1.0), st.integers(0, 30))
@settings(max_examples=60, deadline=None)
def test_suppress_only_lowers_and_keeps_every_detection_outside_a_hold_off(
        conf: list[float], level: float, rows: int) -> None:
    x = np.array(conf)
    out = suppress(x, level, rows)
    assert out.shape == x.shape and (out <= x).all()
    kept = np.flatnonzero(out >= level)
    assert (np.diff(kept) > rows).all()  # at most one report per hold-off
    for i in kept:  # a kept report silences exactly the next `rows` rows
        assert (out[i + 1 : i + 1 + rows] == 0.0).all()
    if len(kept):
        first = int(np.flatnonzero(x >= level)[0])
        assert kept[0] == first


def test_levers_give_a_confidence_per_row_for_every_variant() -> None:
    rng = np.random.default_rng(0)
    values = np.sin(np.arange(1200) / 20.0) + 0.1 * rng.standard_normal(1200)
    values[900:930] += 4.0
    out = _family_scores(values, 180, "kmeans", levers=True)
    want = {f"likelihood suppress {lv:g}/{r}" for lv in SUPPRESS_LEVELS for r in SUPPRESS_ROWS}
    want |= {"likelihood multi-scale", "likelihood adapt", "likelihood adapt suppress 0.3/100"}
    assert want <= set(out)
    for name in want:
        x = out[name]
        assert x.shape == (1200,) and np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0, name
    assert out["likelihood multi-scale"][900:960].max() >= out["likelihood"][900:960].max()
    assert out["likelihood adapt"][900:960].max() > 0.5  # the spike is still found with adaptation
    assert "likelihood adapt" not in _family_scores(values, 180, "kmeans")


def test_a_priori_rows_are_label_free_confidences_with_one_report_per_hold_off() -> None:
    from benchmarks.nab import HOLDOFF_FRACTION, VARIANTS, provenance, spatial

    rng = np.random.default_rng(1)
    values = np.sin(np.arange(1500) / 20.0) + 0.1 * rng.standard_normal(1500)
    values[1000:1030] += 4.0
    probation = 225
    out = _family_scores(values, probation, "kmeans")
    for name in ("likelihood", "likelihood no record", "likelihood hold-off", "htm", "htm hold-off",
                 "htm hold-off spatial"):
        x = out[name]
        assert x.shape == (1500,) and np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0, name
        assert provenance(f"kmeans {name}") == VARIANTS[name]
    rows = probation // HOLDOFF_FRACTION
    for name in ("likelihood hold-off", "htm hold-off", "htm hold-off spatial"):
        reports = np.flatnonzero(out[name] >= 0.5)
        assert (np.diff(reports) > rows).all(), name  # nothing reported within a hold-off of a report
        assert out[name][1000:1060].max() >= 0.5, name  # the shift is still reported
    assert provenance("kmeans likelihood suppress 0.3/100") == "tuned on NAB"
    assert provenance("kmeans htm hold-off p/10 spatial") == "tuned on NAB"
    # HTM's spatial rule on values: a value leaving the seen range by more than 5% of it, either side
    assert spatial(np.array([0.0, 1.0, 0.5, 1.2, 1.21, -0.2, 2.0])).tolist() == [0, 0, 0, 1, 0, 1, 1]


def test_the_product_row_reports_a_value_outside_the_seen_range_and_the_online_rows_are_confidences() -> None:
    from benchmarks.nab import VARIANTS, period_of, periodic, provenance

    rng = np.random.default_rng(2)
    values = np.sin(2 * np.pi * np.arange(1500) / 50.0) + 0.05 * rng.standard_normal(1500)
    values[1200] = 1.5  # one sample beyond the seen range [-1, 1] by a quarter of it, in an ordinary shape
    probation = 225
    out = _family_scores(values, probation, "kmeans", levers=True)
    assert out["likelihood values"][1200] == 1.0
    assert (out["likelihood values"] >= out["likelihood"] - 1e-12).sum() >= 1400
    for name in ("likelihood values", "likelihood values online", "likelihood values periodic",
                 "likelihood values hold-off", "likelihood values onsets", "htm values onsets"):
        x = out[name]
        assert x.shape == (1500,) and np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0, name
        assert provenance(f"kmeans {name}") == VARIANTS[name]
    assert out["likelihood values online"][1200] == 1.0  # the online centroids keep the value record
    assert period_of(values[:probation]) == 50
    assert period_of(rng.standard_normal(300)) == 0
    per = periodic(values, probation)
    assert per[:probation].max() == 0.0 and per[1200:1216].max() > per[1100:1180].max()


def test_the_context_view_reports_once_per_block_and_sees_a_change_of_pattern_inside_the_seen_range() -> None:
    from benchmarks.nab import CONTEXT_ROWS, VARIANTS, block_aggregates, context_view, provenance

    assert block_aggregates(np.array([1.0, 3.0, 2.0, 2.0, 5.0]), 2).tolist() == [[2.0, 2.0], [2.0, 0.0]]
    rng = np.random.default_rng(5)
    t = np.arange(4000)
    values = np.sin(2 * np.pi * t / 200.0) + 0.05 * rng.standard_normal(4000)
    values[3000:3400] = 0.05 * rng.standard_normal(400)  # the cycle stops: every value inside the seen range
    probation = 600
    view = context_view(values, probation, "kmeans")
    assert view is not None
    for x in view:
        reported = ~np.isnan(x)
        ends = np.flatnonzero(reported)
        assert ((ends + 1) % CONTEXT_ROWS == 0).all()  # a report only at the last row of a block
        assert x[reported].min() >= 0.0 and x[reported].max() <= 1.0
    ctx = np.nan_to_num(view[0])
    assert ctx[3000:3400].max() >= 0.5
    assert (ctx[probation:2900] >= 0.5).sum() <= 0.05 * (2900 - probation) / CONTEXT_ROWS  # rare before it
    assert context_view(values[:1000], 100, "kmeans") is None  # 12 probationary blocks: too few to fit
    out = _family_scores(values, probation, "kmeans", context=True)
    for name in ("context", "shipped context", "shipped context onsets", "htm context onsets", "shipped onsets",
                 "sequence", "shipped sequence onsets", "htm sequence onsets", "htm context sequence onsets"):
        x = out[name]
        assert x.shape == (4000,) and np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0, name
        assert provenance(f"kmeans {name}") == VARIANTS[name]
    assert (out["shipped context"] >= out["shipped"]).all()
    assert (out["shipped onsets"] <= out["shipped"]).all()
    assert "context" not in _family_scores(values, probation, "kmeans")


def test_the_sequence_view_is_surprised_by_an_unseen_sequence_of_levels_inside_the_seen_range() -> None:
    from benchmarks.nab import CONTEXT_ROWS, sequence_view

    rng = np.random.default_rng(6)
    t = np.arange(6000)
    values = np.sign(np.sin(2 * np.pi * (t + 0.5) / 160.0)) + 0.05 * rng.standard_normal(6000)  # high, low, high, ...
    values[4000:4080] = 0.05 * rng.standard_normal(80)  # a level between the two: inside the seen range
    seq = sequence_view(values, 900)
    assert seq is not None
    reported = np.flatnonzero(~np.isnan(seq))
    assert reported[0] == 900 // CONTEXT_ROWS * CONTEXT_ROWS + CONTEXT_ROWS - 1
    assert ((reported + 1) % CONTEXT_ROWS == 0).all()
    assert np.nanmax(seq[3990:4300]) >= 0.5 > np.nanmax(seq[1500:3900])
    assert sequence_view(np.ones(2000), 300) is None  # constant: no levels to tell apart
