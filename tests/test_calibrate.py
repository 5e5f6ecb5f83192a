"""Thresholds at a target FPR and k-of-n persistence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinywarden.calibrate import Persistence, persist, tail_threshold, threshold_at_fpr
from tinywarden.errors import ConfigError, DataError


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=400), st.floats(0.001, 0.5))
def test_empirical_fpr_never_exceeds_target(scores: list[float], fpr: float) -> None:
    s = np.array(scores)
    thr = threshold_at_fpr(s, fpr)
    assert np.mean(s > thr) <= fpr + 1e-12
    assert thr in s  # an observed score, not an extrapolation


def test_threshold_is_monotone_in_target() -> None:
    s = np.random.default_rng(0).normal(size=5000)
    thresholds = [threshold_at_fpr(s, f) for f in (0.2, 0.1, 0.01, 0.001)]
    assert thresholds == sorted(thresholds)


def test_too_few_scores_fall_back_to_the_maximum() -> None:
    s = np.arange(50.0)
    assert threshold_at_fpr(s, 0.001) == 49.0


@pytest.mark.parametrize(("scores", "fpr", "err"), [([], 0.01, DataError), ([1.0, np.nan], 0.01, DataError),
                                                     ([1.0], 0.0, ConfigError), ([1.0], 1.0, ConfigError)])
def test_bad_calibration_input(scores: list[float], fpr: float, err: type[Exception]) -> None:
    with pytest.raises(err):
        threshold_at_fpr(np.array(scores), fpr)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 1), max_size=200), st.integers(1, 8), st.integers(0, 8))
def test_streaming_persistence_equals_batch(flags: list[int], k: int, extra: int) -> None:
    n = k + extra
    p = Persistence(k, n)
    streamed = [int(p.push(f)) for f in flags]
    assert streamed == persist(np.array(flags, dtype=np.uint8), k, n).tolist()


def test_persistence_suppresses_isolated_flags() -> None:
    flags = np.array([1, 0, 0, 1, 0, 0, 1, 1, 0])
    assert persist(flags, 2, 3).tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert persist(flags, 1, 1).tolist() == flags.tolist()
    with pytest.raises(ConfigError):
        persist(flags, 3, 2)


def test_an_unresolvable_target_is_extrapolated_from_the_tail() -> None:
    # 2,000 scores cannot resolve 1e-5: the highest score is at about 1 in 2,000. The tail fit's quantile is
    # near the distribution's own, where the highest score is far below it.
    samples = [np.random.default_rng(seed).exponential(1.0, 2000) for seed in range(15)]
    thresholds = np.array([threshold_at_fpr(s, 1e-5) for s in samples])
    highest = np.array([s.max() for s in samples])
    assert (thresholds >= highest).all() and np.median(thresholds / highest) > 1.2
    truth = -np.log(1e-5)  # the exponential's own quantile, 11.5; 40 peaks estimate it loosely
    assert abs(np.median(thresholds) - truth) < abs(np.median(highest) - truth)
    heavier = [np.random.default_rng(seed).pareto(3.0, 2000) for seed in range(15)]  # extrapolates further
    assert np.median([threshold_at_fpr(s, 1e-5) / s.max() for s in heavier]) > np.median(thresholds / highest)


def test_the_tail_fit_needs_enough_peaks() -> None:
    s = np.random.default_rng(1).exponential(1.0, 900)  # 18 scores over the 98% quantile
    assert tail_threshold(s, 1e-5) is None
    assert threshold_at_fpr(s, 1e-5) == s.max()
    assert tail_threshold(np.random.default_rng(1).exponential(1.0, 1100), 1e-5) is not None


def test_a_resolvable_target_keeps_the_empirical_quantile() -> None:
    s = np.random.default_rng(2).exponential(1.0, 5000)
    assert threshold_at_fpr(s, 1e-3) in s


def test_far_outliers_do_not_put_the_threshold_out_of_reach() -> None:
    # three windows a thousand times the rest: a shape over 1 is refitted at MAX_TAIL_SHAPE
    s = np.concatenate([np.random.default_rng(4).exponential(1.0, 1500), [4000.0, 5000.0, 6000.0]])
    thr = tail_threshold(s, 1e-5)
    assert thr is not None and 6000.0 <= thr < 6000.0 * 100
    assert thr <= tail_threshold(s, 1e-6) < 6000.0 * 1000  # monotone in the target, and bounded


@pytest.mark.parametrize("seed", range(20))
def test_an_extrapolated_threshold_is_never_below_the_highest_score(seed: int) -> None:
    rng = np.random.default_rng(seed)
    draw = [rng.normal, rng.exponential, rng.standard_cauchy, lambda size: rng.integers(0, 5, size)][seed % 4]
    s = np.abs(np.asarray(draw(size=int(rng.integers(1000, 3000))), dtype=np.float64))
    fpr = float(10 ** rng.uniform(-8, -3.5))
    assert threshold_at_fpr(s, fpr) >= s.max()


def test_a_pipeline_says_which_rule_set_its_threshold() -> None:
    from tinywarden.detectors import make_detector
    from tinywarden.pipeline import Pipeline
    from tinywarden.simulate import simulate

    series = simulate("camera", days=2.2, attacks="none", seed=1)
    rules = {}
    for target in (1e-2, 1e-5):
        pipe = Pipeline(make_detector("pca"), window=16, stride=4, target_fpr=target).fit(series)
        _, cal_x = pipe.split_inputs(series)
        highest = pipe.detector.score_samples(pipe.scale_inputs(cal_x)).max()
        rules[target] = pipe.train_summary_["calibration_rule"]
        assert (pipe.threshold_ > highest) == (target == 1e-5)
    assert rules == {1e-2: "quantile", 1e-5: "tail fit"}
