"""Metrics of tinywarden.evaluate on hand-built cases whose answers can be worked out on paper."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve, roc_auc_score

from tinywarden.errors import ConfigError, DataError
from tinywarden.evaluate import WindowScores, evaluate, find_incidents
from tinywarden.evaluate.metrics import ranking_metrics
from tinywarden.telemetry import Series

T0 = 1_700_000_000.0


def make_series(labels, attacks=None, period: float = 10.0) -> Series:
    n = len(labels)
    att = None if attacks is None else np.array(attacks, dtype=object)
    return Series(T0 + period * np.arange(n), np.zeros((n, 1)), ("x",), np.array(labels), att, "case.csv")


def make_ws(n_rows: int, window: int, alarms, scores=None, raw=None, threshold: float = 0.5) -> WindowScores:
    """Windows ending on every row from ``window - 1`` on, as a sliding detector produces them."""
    ends = np.arange(window - 1, n_rows, dtype=np.int64)
    alarms = np.asarray(alarms, dtype=np.uint8)
    assert len(alarms) == len(ends)
    scores = alarms.astype(float) if scores is None else np.asarray(scores, dtype=float)
    raw = alarms if raw is None else np.asarray(raw, dtype=np.uint8)
    return WindowScores(ends, window, scores, raw, alarms, threshold)


def test_two_incidents_one_detected_after_three_samples() -> None:
    # rows 0..29, period 10 s, window of 1 row (window == row). Incident A: rows 5..9, incident B: 20..22.
    labels = np.zeros(30, int)
    labels[5:10] = 1
    labels[20:23] = 1
    alarms = np.zeros(30, np.uint8)
    alarms[8:10] = 1  # A caught on row 8: three samples after onset at row 5
    alarms[15] = 1  # a false alarm on a normal window
    ev = evaluate(make_series(labels), make_ws(30, 1, alarms), params=7, model_bytes=64, detector="d")

    assert ev.n_incidents == 2 and ev.n_detected == 1
    assert ev.detection_rate == 0.5
    assert ev.mean_detection_latency_s == 30.0
    assert ev.median_detection_latency_s == 30.0
    assert [inc.detected for inc in ev.incidents] == [True, False]
    assert math.isnan(ev.incidents[1].latency_s)
    # 22 normal windows, one alarm among them.
    assert ev.n_normal_windows == 22 and ev.n_anomalous_windows == 8
    assert ev.fpr == pytest.approx(1 / 22)
    # tp = 2 (rows 8, 9), fp = 1 (row 15), fn = 6.
    assert ev.precision == pytest.approx(2 / 3)
    assert ev.recall == pytest.approx(2 / 8)
    assert ev.f1 == pytest.approx(f1_score(labels, alarms))
    # One rising edge on a normal window; normal time = 22 windows * 10 s.
    assert ev.false_alarm_events == 1
    assert ev.normal_days == pytest.approx(220 / 86400)
    assert ev.false_alarms_per_day == pytest.approx(86400 / 220)
    assert (ev.params, ev.model_bytes, ev.detector) == (7, 64, "d")


def test_window_covers_rows_so_alarm_after_incident_end_still_counts() -> None:
    # window of 4 rows: the window ending on row 12 still holds row 9, the incident's last row.
    labels = np.zeros(20, int)
    labels[7:10] = 1
    n_windows = 20 - 3
    alarms = np.zeros(n_windows, np.uint8)
    alarms[12 - 3] = 1  # window index = end_row - (window - 1)
    ev = evaluate(make_series(labels), make_ws(20, 4, alarms), params=0, model_bytes=0)
    assert ev.detection_rate == 1.0
    assert ev.mean_detection_latency_s == (12 - 7) * 10.0
    # The same alarm one window later no longer overlaps the incident: missed, and a false alarm.
    alarms_late = np.zeros(n_windows, np.uint8)
    alarms_late[13 - 3] = 1
    ev_late = evaluate(make_series(labels), make_ws(20, 4, alarms_late), params=0, model_bytes=0)
    assert ev_late.detection_rate == 0.0
    assert ev_late.false_alarm_events == 1
    # Window labels: windows ending on rows 7..12 contain incident rows.
    assert ev.n_anomalous_windows == 6


def test_alarm_before_onset_does_not_detect() -> None:
    labels = np.zeros(10, int)
    labels[5:7] = 1
    alarms = np.zeros(10, np.uint8)
    alarms[4] = 1
    ev = evaluate(make_series(labels), make_ws(10, 1, alarms), params=0, model_bytes=0)
    assert ev.detection_rate == 0.0
    assert math.isnan(ev.mean_detection_latency_s)
    assert ev.to_dict()["mean_detection_latency_s"] is None


def test_per_attack_breakdown_and_split_on_attack_change() -> None:
    attacks = [""] * 40
    labels = np.zeros(40, int)
    for lo, hi, name in ((5, 8, "scan"), (8, 10, "flood"), (20, 23, "scan"), (30, 33, "exfil")):
        labels[lo:hi] = 1
        attacks[lo:hi] = [name] * (hi - lo)
    s = make_series(labels, attacks)
    assert find_incidents(s) == [(5, 7, "scan"), (8, 9, "flood"), (20, 22, "scan"), (30, 32, "exfil")]

    alarms = np.zeros(40, np.uint8)
    alarms[6] = 1  # scan #1 after 1 sample
    alarms[9] = 1  # flood after 1 sample
    alarms[22] = 1  # scan #2 after 2 samples
    ev = evaluate(s, make_ws(40, 1, alarms), params=0, model_bytes=0)
    by = {a.attack: a for a in ev.per_attack}
    assert list(by) == ["exfil", "flood", "scan"]
    assert (by["scan"].incidents, by["scan"].detected, by["scan"].detection_rate) == (2, 2, 1.0)
    assert by["scan"].mean_latency_s == 15.0 and by["scan"].median_latency_s == 15.0
    assert (by["flood"].detected, by["flood"].mean_latency_s) == (1, 10.0)
    assert by["exfil"].detection_rate == 0.0 and math.isnan(by["exfil"].mean_latency_s)
    assert ev.detection_rate == 0.75
    assert ev.mean_detection_latency_s == pytest.approx((10 + 10 + 20) / 3)


def test_incidents_without_attack_column_are_called_anomaly() -> None:
    labels = [0, 1, 1, 0, 1]
    assert find_incidents(make_series(labels)) == [(1, 2, "anomaly"), (4, 4, "anomaly")]
    # A labelled row with an empty attack cell is an anomaly too.
    named = make_series(labels, ["", "", "", "", "scan"])
    assert find_incidents(named) == [(1, 2, "anomaly"), (4, 4, "scan")]


def test_skip_rows_drops_early_windows_and_incidents() -> None:
    labels = np.zeros(30, int)
    labels[3:6] = 1  # inside the skipped part
    labels[20:22] = 1
    alarms = np.zeros(30, np.uint8)
    alarms[1] = 1  # false alarm in the skipped part
    alarms[10:13] = 1  # an alarm run starting exactly at the skip boundary
    s = make_series(labels)
    full = evaluate(s, make_ws(30, 1, alarms), params=0, model_bytes=0)
    part = evaluate(s, make_ws(30, 1, alarms), params=0, model_bytes=0, skip_rows=10)
    assert full.n_incidents == 2 and part.n_incidents == 1
    assert full.n_windows == 30 and part.n_windows == 20
    assert part.incidents[0].onset_row == 20
    assert full.false_alarm_events == 2 and part.false_alarm_events == 1
    assert part.fpr == pytest.approx(3 / 18)
    # An alarm already on when evaluation starts is not a new event.
    assert evaluate(s, make_ws(30, 1, alarms), params=0, model_bytes=0, skip_rows=11).false_alarm_events == 0


def test_auc_matches_sklearn_and_best_f1_bounds_f1() -> None:
    rng = np.random.default_rng(3)
    labels = np.zeros(300, int)
    for lo in (40, 120, 200, 260):
        labels[lo : lo + 12] = 1
    window = 5
    s = make_series(labels)
    ends = np.arange(window - 1, 300)
    y = np.array([labels[max(0, e - window + 1) : e + 1].any() for e in ends])
    scores = rng.normal(size=len(ends)) + 1.5 * y
    alarms = (scores > 1.0).astype(np.uint8)
    ev = evaluate(s, make_ws(300, window, alarms, scores=scores, threshold=1.0), params=0, model_bytes=0)
    assert ev.roc_auc == pytest.approx(roc_auc_score(y, scores))
    assert ev.pr_auc == pytest.approx(average_precision_score(y, scores))
    assert ev.f1 == pytest.approx(f1_score(y, alarms))
    assert ev.f1 <= ev.best_f1 <= 1.0


def test_one_class_gives_nan_auc_and_json_null() -> None:
    labels = np.zeros(20, int)
    ev = evaluate(make_series(labels), make_ws(20, 1, np.zeros(20)), params=1, model_bytes=2)
    assert math.isnan(ev.roc_auc) and math.isnan(ev.pr_auc) and math.isnan(ev.best_f1)
    assert math.isnan(ev.detection_rate) and ev.n_incidents == 0
    assert ev.fpr == 0.0 and ev.false_alarms_per_day == 0.0
    d = json.loads(json.dumps(ev.to_dict(), allow_nan=False))
    for key in ("roc_auc", "pr_auc", "detection_rate", "mean_detection_latency_s", "precision", "recall"):
        assert d[key] is None, key
    required = {"roc_auc", "pr_auc", "f1", "fpr", "detection_rate", "mean_detection_latency_s", "params"}
    required |= {"model_bytes", "best_f1", "precision", "recall", "raw_fpr", "false_alarms_per_day"}
    required |= {"threshold", "per_attack"}
    assert required <= d.keys()


def test_raw_fpr_counts_flags_before_persistence() -> None:
    labels = np.zeros(10, int)
    labels[8:] = 1
    raw = np.array([1, 0, 1, 1, 0, 0, 0, 0, 1, 1], np.uint8)
    alarms = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 1], np.uint8)
    ev = evaluate(make_series(labels), make_ws(10, 1, alarms, raw=raw), params=0, model_bytes=0)
    assert ev.raw_fpr == pytest.approx(3 / 8)
    assert ev.fpr == pytest.approx(1 / 8)


def test_json_round_trip_has_plain_types() -> None:
    labels = np.zeros(10, int)
    labels[4:6] = 1
    alarms = np.zeros(10, np.uint8)
    alarms[5] = 1
    d = evaluate(
        make_series(labels, [""] * 4 + ["scan"] * 2 + [""] * 4),
        make_ws(10, 1, alarms),
        params=3,
        model_bytes=9,
    ).to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["per_attack"] == [
        {
            "attack": "scan",
            "incidents": 1,
            "detected": 1,
            "detection_rate": 1.0,
            "mean_latency_s": 10.0,
            "median_latency_s": 10.0,
        }
    ]
    assert d["incidents"][0]["detected"] is True


BASE_WS = make_ws(10, 1, np.zeros(10))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scores": BASE_WS.scores[:-1]}, "scores has shape"),
        ({"end_rows": BASE_WS.end_rows + 5}, "window 5 ends on row 10, outside the 10 series rows"),
        ({"end_rows": BASE_WS.end_rows[::-1].copy()}, "not after window"),
        ({"end_rows": BASE_WS.end_rows.astype(float)}, "must be integers"),
        ({"scores": np.full(10, np.nan)}, "window 0 .row 0. has non-finite score nan"),
        ({"alarms": BASE_WS.alarms + 2}, "alarms value 2 is not 0 or 1"),
        (
            {
                "end_rows": BASE_WS.end_rows[:0],
                "scores": BASE_WS.scores[:0],
                "raw_flags": BASE_WS.raw_flags[:0],
                "alarms": BASE_WS.alarms[:0],
            },
            "no scored windows",
        ),
    ],
)
def test_bad_windows_raise_data_error(changes, message) -> None:
    labels = np.zeros(10, int)
    labels[3] = 1
    with pytest.raises(DataError, match=message):
        evaluate(make_series(labels), replace(BASE_WS, **changes), params=0, model_bytes=0)


def test_series_without_labels_is_refused() -> None:
    s = Series(T0 + np.arange(10.0), np.zeros((10, 1)), ("x",), source="nolabels.csv")
    with pytest.raises(DataError, match="nolabels.csv: evaluation needs a label column"):
        evaluate(s, BASE_WS, params=0, model_bytes=0)


def test_nothing_left_after_skip_rows() -> None:
    s = make_series([0, 1, 0, 0])
    with pytest.raises(DataError, match="no windows left to evaluate.*skip_rows=4"):
        evaluate(s, make_ws(4, 1, np.zeros(4)), params=0, model_bytes=0, skip_rows=4)
    with pytest.raises(ConfigError, match="skip_rows"):
        evaluate(s, make_ws(4, 1, np.zeros(4)), params=0, model_bytes=0, skip_rows=-1)


@st.composite
def labelled_case(draw):
    n = draw(st.integers(8, 60))
    window = draw(st.integers(1, 5))
    labels = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    # Both classes present, so every rate is defined.
    pos = draw(st.integers(0, n - 1))
    labels[pos] = 1
    labels[(pos + draw(st.integers(1, n - 1))) % n] = 0
    n_windows = n - window + 1
    alarms = np.array(draw(st.lists(st.integers(0, 1), min_size=n_windows, max_size=n_windows)), np.uint8)
    extra = np.array(draw(st.lists(st.integers(0, 1), min_size=n_windows, max_size=n_windows)), np.uint8)
    return labels, window, alarms, alarms | extra


@settings(max_examples=150, deadline=None)
@given(labelled_case())
def test_rates_bounded_and_monotone_in_alarms(case) -> None:
    labels, window, alarms, more = case
    s = make_series(labels)
    ws_lo = make_ws(len(labels), window, alarms)
    ws_hi = make_ws(len(labels), window, more)
    lo = evaluate(s, ws_lo, params=0, model_bytes=0)
    hi = evaluate(s, ws_hi, params=0, model_bytes=0)
    for ev in (lo, hi):
        assert 0.0 <= ev.detection_rate <= 1.0
        if ev.n_normal_windows:
            assert 0.0 <= ev.fpr <= 1.0
        assert all(inc.latency_s >= 0 for inc in ev.incidents if inc.detected)
    assert hi.detection_rate >= lo.detection_rate
    if lo.n_normal_windows:
        assert hi.fpr >= lo.fpr
    # More alarms can only catch an incident earlier, never later.
    for a, b in zip(lo.incidents, hi.incidents, strict=True):
        if a.detected:
            assert b.latency_s <= a.latency_s


@settings(max_examples=300, deadline=None)
@given(labels=st.lists(st.booleans(), min_size=2, max_size=200),
       levels=st.sampled_from([3, 50, 0]), seed=st.integers(0, 2**32 - 1))
def test_ranking_metrics_equal_sklearns_to_the_last_bit(labels: list[bool], levels: int, seed: int) -> None:
    y = np.array(labels)
    if y.all() or not y.any():
        y[0] = not y[0]
    rng = np.random.default_rng(seed)
    # few distinct scores (many ties, like the int8 program's), some, or all distinct
    scores = rng.integers(0, levels, len(y)).astype(float) if levels else rng.normal(size=len(y)) + y * rng.random()
    p, r, _ = precision_recall_curve(y, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        best_f1 = float(np.where(p + r > 0, 2 * p * r / (p + r), 0.0).max())
    want = (float(roc_auc_score(y, scores)), float(average_precision_score(y, scores)), best_f1)
    assert ranking_metrics(y, scores) == want
