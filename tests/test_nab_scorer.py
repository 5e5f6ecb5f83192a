"""NAB's published scoring on tiny hand-computed cases (no shared data needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tinywarden.errors import DataError
from tinywarden.evaluate.nab import (
    PROFILES,
    NabFile,
    perfect_scores,
    probationary_length,
    scaled_sigmoid,
    score_corpus,
)

STANDARD = PROFILES["standard"]


def _s(x: float) -> float:
    """The scaled sigmoid written out by hand: 2 * sigmoid(-5x) - 1."""
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def _file(n: int, windows: list[tuple[int, int]], name: str = "f") -> NabFile:
    ts = np.datetime64("2020-01-01T00:00") + np.arange(n).astype("timedelta64[m]")
    return NabFile(name, ts, [(ts[a], ts[b]) for a, b in windows])


def _at(n: int, rows: dict[int, float]) -> np.ndarray:
    x = np.zeros(n)
    for i, v in rows.items():
        x[i] = v
    return x


def test_profiles_are_nab_published_cost_matrices() -> None:
    assert [(p.tp_weight, p.fp_weight, p.fn_weight) for p in PROFILES.values()] == [
        (1.0, 0.11, 1.0), (1.0, 0.22, 1.0), (1.0, 0.11, 2.0)]


def test_probationary_period_is_15_percent_capped_at_750_rows() -> None:
    assert probationary_length(100) == 15
    assert probationary_length(1127) == 169  # floor(169.05)
    assert probationary_length(5000) == 750
    assert probationary_length(22695) == 750


def test_scaled_sigmoid_values() -> None:
    assert scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661429815)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828363995)
    assert scaled_sigmoid(1.0) == pytest.approx(-0.98661429815)
    assert scaled_sigmoid(3.0) == pytest.approx(_s(3.0))
    assert scaled_sigmoid(3.01) == -1.0


def test_detection_on_the_first_window_row_earns_the_full_tp_weight() -> None:
    f = _file(20, [(10, 13)])
    r = score_corpus([f], [_at(20, {10: 1.0})], STANDARD)
    assert r.raw_score == pytest.approx(1.0)
    assert (r.tp, r.fn, r.fp) == (1, 0, 0)
    assert r.normalized == pytest.approx(100.0)


def test_later_detection_earns_the_scaled_sigmoid_of_its_position() -> None:
    f = _file(20, [(10, 13)])  # width 4: row 12 sits at -(13 - 12 + 1) / 4 = -0.5
    r = score_corpus([f], [_at(20, {12: 1.0})], STANDARD)
    assert r.raw_score == pytest.approx(_s(-0.5) / _s(-1.0))


def test_only_the_first_detection_in_a_window_counts() -> None:
    f = _file(20, [(10, 13)])
    r = score_corpus([f], [_at(20, {11: 1.0, 12: 1.0, 13: 1.0})], STANDARD)
    assert r.raw_score == pytest.approx(_s(-0.75) / _s(-1.0))
    assert r.tp == 1


def test_false_positives_before_and_after_a_window() -> None:
    f = _file(40, [(10, 13)])  # probation: rows 0..5
    # row 7: before any window, full -fp_weight; row 15: |13 - 15| / (4 - 1) past the window
    r = score_corpus([f], [_at(40, {7: 1.0, 10: 1.0, 15: 1.0})], STANDARD, threshold=1.0)
    want = 1.0 - 0.11 + 0.11 * _s(2.0 / 3.0)
    assert r.raw_score == pytest.approx(want)
    assert r.fp == 2
    # a detection far past the window (more than 3 widths) costs the full weight
    far = score_corpus([f], [_at(40, {10: 1.0, 30: 1.0})], STANDARD, threshold=1.0)
    assert far.raw_score == pytest.approx(1.0 - 0.11)


def test_probationary_rows_are_never_scored() -> None:
    f = _file(40, [(10, 13)])
    r = score_corpus([f], [_at(40, {2: 1.0, 10: 0.5})], STANDARD, threshold=0.5)
    assert r.raw_score == pytest.approx(1.0)
    assert r.fp == 0


def test_missed_window_costs_fn_weight_per_profile() -> None:
    f = _file(40, [(10, 13), (30, 33)])
    x = _at(40, {10: 1.0})
    assert score_corpus([f], [x], STANDARD, threshold=1.0).raw_score == pytest.approx(0.0)
    assert score_corpus([f], [x], PROFILES["reward_low_FN_rate"], threshold=1.0).raw_score == pytest.approx(-1.0)


def test_one_threshold_optimised_over_all_files_per_profile() -> None:
    # File a: a window found at score 0.9. File b: a window found only at 0.5, and 12 rows before it
    # scoring 0.6. Lowering the threshold to 0.5 gains tp + fn = 2 (3 under reward_low_FN) for
    # 12 false positives: worth it at fp 0.11, not at fp 0.22.
    a = _file(40, [(20, 23)], "a")
    b = _file(100, [(50, 59)], "b")
    xa = _at(40, {20: 0.9})
    xb = _at(100, {**{i: 0.6 for i in range(20, 32)}, 50: 0.5})
    std = score_corpus([a, b], [xa, xb], STANDARD)
    low_fp = score_corpus([a, b], [xa, xb], PROFILES["reward_low_FP_rate"])
    low_fn = score_corpus([a, b], [xa, xb], PROFILES["reward_low_FN_rate"])
    assert std.threshold == 0.5 and std.raw_score == pytest.approx(2.0 - 12 * 0.11)
    assert low_fp.threshold == 0.9 and low_fp.raw_score == pytest.approx(0.0)
    assert low_fn.threshold == 0.5 and low_fn.raw_score == pytest.approx(2.0 - 12 * 0.11)
    assert std.per_file == pytest.approx({"a": 1.0, "b": 1.0 - 12 * 0.11})


def test_ties_pick_the_highest_threshold() -> None:
    f = _file(40, [(10, 13)])
    # 0.9 and 0.8 both detect the window on its first row (row 12 at 0.8 adds nothing): same score
    r = score_corpus([f], [_at(40, {10: 0.9, 12: 0.8, 20: 0.7})], STANDARD)
    assert r.threshold == 0.9


def test_null_detector_scores_0_and_perfect_detector_100_on_every_profile() -> None:
    files = [_file(60, [(20, 25), (40, 41)], "a"), _file(100, [], "b"), _file(50, [(30, 30)], "c")]
    for p in PROFILES.values():
        null = score_corpus(files, [np.full(len(f), 0.5) for f in files], p)
        perfect = score_corpus(files, [perfect_scores(f) for f in files], p)
        assert null.normalized == pytest.approx(0.0)
        assert null.null_score == pytest.approx(-p.fn_weight * 3)
        assert perfect.normalized == pytest.approx(100.0)


def test_a_repeated_hour_away_from_windows_is_scored_and_a_window_bound_on_it_is_refused() -> None:
    # a daylight-saving hour repeated: rows 5..7 repeat the times of rows 2..4
    ts = np.datetime64("2020-01-01T00:00") + np.r_[0:5, 2:5, 5:30].astype("timedelta64[h]")
    f = NabFile("dst", ts, [(ts[10], ts[12])])
    r = score_corpus([f], [_at(len(ts), {10: 1.0})], STANDARD)
    assert r.raw_score == pytest.approx(1.0)
    # NAB's labeler refuses a bound more than one row carries; this took the first of them
    for bounds in ((ts[3], ts[12]), (ts[0], ts[6])):
        with pytest.raises(DataError, match="more than one row carries"):
            score_corpus([NabFile("dst", ts, [bounds])], [_at(len(ts), {})], STANDARD)


def test_optimiser_equals_scoring_every_threshold() -> None:
    rng = np.random.default_rng(3)
    files = [_file(200, [(60, 79), (150, 169)], "a"), _file(300, [(100, 139)], "b"), _file(120, [], "c")]
    scores = [np.round(rng.random(len(f)), 2) for f in files]  # rounding makes ties
    for p in PROFILES.values():
        best = score_corpus(files, scores, p)
        brute = [score_corpus(files, scores, p, threshold=t).raw_score for t in np.unique(np.concatenate(scores))]
        brute.append(score_corpus(files, scores, p, threshold=math.inf).raw_score)
        assert best.raw_score == pytest.approx(max(brute))


def test_bad_input_is_refused_with_a_data_error() -> None:
    f = _file(20, [(10, 13)])
    with pytest.raises(DataError, match="NaN"):
        score_corpus([f], [np.full(20, np.nan)], STANDARD)
    with pytest.raises(DataError, match="rows"):
        score_corpus([f], [np.zeros(19)], STANDARD)
    ts = f.timestamps
    off = NabFile("off", ts, [(ts[3] + np.timedelta64(30, "s"), ts[5])])
    with pytest.raises(DataError, match="off: window"):
        score_corpus([off], [np.zeros(20)], STANDARD)
