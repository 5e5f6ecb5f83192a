"""The slow-drift watch (tinywarden.level_watch, issue 14): a ramp that neither teaches the adapted baseline nor
fills the settling count is flagged by its day-long level; the watch is quiet on the data it was fitted on, flags
one excursion once and re-arms, is not moved by windows over the threshold, and is on by default (off with
watch_drift 0)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from tinywarden.adapt import Adaptation, BaselineAdapter
from tinywarden.adaptation import WATCH_DRIFT
from tinywarden.detectors import EWMAZScore
from tinywarden.level_watch import level_drift, watch_record
from tinywarden.pipeline import Pipeline
from tinywarden.telemetry.series import Series

PERIOD_S = 10.0
WINDOW, STRIDE = 32, 16
DAY = int(86400 / PERIOD_S)  # samples per day


def telemetry(days: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(days * DAY)
    return np.c_[rng.normal(size=n), 0.5 * rng.normal(size=n)]


#: The watch on at its stated limit, as the default policy has it (spelled out: the tests below mean this limit).
WATCHED = Adaptation(watch_drift=WATCH_DRIFT)


def series(x: np.ndarray) -> Series:
    return Series(np.arange(len(x)) * PERIOD_S, x, ("temp", "net"))


@pytest.fixture(scope="module")
def trained() -> Pipeline:
    return Pipeline(EWMAZScore(), window=WINDOW, stride=STRIDE).fit(series(telemetry(2.0, 0)))


def windows(p: Pipeline, x: np.ndarray) -> np.ndarray:
    return p.window_inputs(series(x))[1]


def under_the_radar(trained: Pipeline, raw: np.ndarray, adaptation: Adaptation) -> tuple[BaselineAdapter, list[int]]:
    """Every window scored just under the threshold (no alarm, the settling count stays empty) with a confidence of
    0.5 (not clearly normal: it teaches nothing), as a slow ramp's windows were on the simulator; the windows at
    which a drift flag was raised."""
    adapter = BaselineAdapter(copy.deepcopy(trained), adaptation)
    flags = [i for i, x in enumerate(raw) if adapter.observe(x, 0.5, None, 0.99 * trained.threshold_).flagged]
    return adapter, flags


def ramp(days: float, sds: float, seed: int) -> np.ndarray:
    """The temperature channel tampered with: moved by ``sds`` of its training sd, linearly over ``days``."""
    x = telemetry(days, seed)
    x[:, 0] += np.linspace(0.0, sds, len(x))
    return x


def test_a_ramp_that_teaches_nothing_is_flagged_by_its_day_long_level_before_full_rate(trained: Pipeline) -> None:
    raw = windows(trained, ramp(3.0, 2.0, seed=1))
    adapter, flags = under_the_radar(trained, raw, WATCHED)
    # nothing taught the baseline and nothing settled: the max_drift flag alone never rises (the old behaviour) ...
    assert adapter.adapted == 0 and adapter.drift == 0.0 and not adapter.settling
    # ... the watch flags it once, when the ramp has done less than its full 2 sd
    assert len(flags) == 1 and adapter.flags == 1
    assert flags[0] < 0.9 * len(raw)
    assert adapter.status()["level_drift"] > WATCH_DRIFT


def test_the_watch_is_on_by_default_off_with_watch_drift_0_and_needs_no_settling_rule(trained: Pipeline) -> None:
    raw = windows(trained, ramp(3.0, 2.0, seed=1))
    assert Adaptation().watch_drift == WATCH_DRIFT  # the policy's default: on
    default, flags = under_the_radar(trained, raw, Adaptation())
    assert len(flags) == 1 and default.flags == 1 and default.status()["level_drift"] > WATCH_DRIFT
    off, flags = under_the_radar(trained, raw, Adaptation(watch_drift=0.0))
    assert flags == [] and off.flags == 0 and off.level_drift == 0.0
    adapter, flags = under_the_radar(trained, raw, Adaptation(settle_s=0.0))
    assert len(flags) == 1 and adapter.settle_windows == 0


def test_windows_over_the_threshold_do_not_move_the_level(trained: Pipeline) -> None:
    """An alarmed burst (a few hours far from normal) is an alarm already, not a drift: only windows under the
    threshold move the watch's level, so the burst raises no drift flag; the same windows under it would."""
    x = telemetry(1.0, 7)
    x[DAY // 4 : DAY // 4 + DAY // 6, 0] += 3.0  # four hours, 3 channel sd
    raw = windows(trained, x)
    burst = np.zeros(len(raw), dtype=bool)
    burst[(DAY // 4) // STRIDE : (DAY // 4 + DAY // 6) // STRIDE] = True
    for over, want in ((True, 0), (False, 1)):
        adapter = BaselineAdapter(copy.deepcopy(trained), WATCHED)
        scores = np.where(burst & over, 2.0 * trained.threshold_, 0.5 * trained.threshold_)
        flags = [i for i, (x, sc) in enumerate(zip(raw, scores, strict=True))
                 if adapter.observe(x, 0.5, None, float(sc)).flagged]
        assert len(flags) == want, (over, flags)


def test_the_watch_is_quiet_on_normal_data_and_counts_a_moved_series(trained: Pipeline) -> None:
    fresh = watch_record(trained, series(telemetry(3.0, seed=5)))
    assert len(fresh.flag_rows) == 0 and fresh.peak < 0.5 * WATCH_DRIFT and fresh.days > 2.9
    moved = watch_record(trained, series(ramp(3.0, 2.0, seed=5)))
    assert len(moved.flag_rows) == 1 and moved.peak > WATCH_DRIFT and moved.peak_input == 0
    assert moved.flags_per_day == pytest.approx(1 / moved.days)


def test_one_excursion_is_one_flag_and_the_watch_rearms_after_it_returns(trained: Pipeline) -> None:
    x = np.r_[telemetry(1.0, 2), telemetry(1.0, 3), telemetry(2.0, 4), telemetry(1.0, 6)]
    x[DAY : 2 * DAY, 0] += 2.5  # a day-long excursion of 2.5 sd, back to normal, then another one
    x[4 * DAY :, 0] += 2.5
    raw = windows(trained, x)
    adapter, flags = under_the_radar(trained, raw, WATCHED)
    assert len(flags) == 2 and adapter.flags == 2
    per_day = DAY // STRIDE
    assert per_day < flags[0] < 2 * per_day and flags[1] > 4 * per_day


def test_level_drift_is_in_reference_standard_deviations() -> None:
    ref, scale = np.array([1.0, -2.0]), np.array([0.5, 4.0])
    assert level_drift(ref, ref, scale) == 0.0
    assert level_drift(ref + np.array([0.25, -12.0]), ref, scale) == pytest.approx(3.0)


def test_the_watch_only_raises_the_flag_the_scores_and_alarms_are_the_same_on_or_off(trained: Pipeline) -> None:
    """Turning the watch on by default changes what the operator is told (a drift flag), not what is learned or
    scored: the same replay with the watch on and off gives the same scores, alarms and adapted windows (so
    benchmarks/adapt_quality.py's ROC AUC, which reads the scores only, is unchanged by it)."""
    from tinywarden.replay import replay

    x = np.r_[telemetry(1.0, 8), ramp(3.0, 2.0, seed=9)]
    on, off = (replay(trained, series(x), DAY, cfg) for cfg in (Adaptation(), Adaptation(watch_drift=0.0)))
    # the watch ran: it flagged the ramp before the adapted baseline's max_drift did (the ramp teaches it here)
    assert len(on.drift_flag_rows) and on.drift_flag_rows[0] < min(off.drift_flag_rows, default=len(x))
    np.testing.assert_array_equal(on.windows.scores, off.windows.scores)
    np.testing.assert_array_equal(on.windows.alarms, off.windows.alarms)
    assert on.adapted == off.adapted


def test_the_watchs_distance_flags_a_level_off_the_learned_relation_that_no_input_moves_far() -> None:
    """issue 14: a sensor that drifts off the value it follows (the valve's pressure off its position) stays within
    the per-input watch's limit, in its own reference sd, and is missed by it; the Gaussian's own score of the watch's
    level sees it. A move along the relation (both inputs together) by as much is not flagged by it, and with
    ``watch_distance`` 0 (or a family that does not score a displacement) nothing is."""
    from tinywarden.detectors import make_detector

    rng = np.random.default_rng(3)
    n = 20000
    follow = np.repeat(rng.uniform(0.0, 10.0, n // 200), 200) + rng.normal(0.0, 0.3, n)  # a set point, held
    values = np.column_stack([follow, 2.0 * follow + rng.normal(0.0, 0.1, n)])  # the second follows the first
    s = Series(np.arange(n) * 10.0, values, ("position", "pressure"))
    p = Pipeline(make_detector("gaussian", n_components=1), window=32, stride=16, features=("mean", "std")).fit(s)
    sd = values.std(axis=0)
    off = Series(s.timestamps, values + np.array([0.0, 0.8 * sd[1]]), s.channels)  # pressure alone
    along = Series(s.timestamps, values + 0.8 * sd, s.channels)  # both, as the relation holds
    policy = Adaptation(watch_drift=1.5)  # the per-input limit out of these moves' reach (their peak: 1.3 sd)
    assert p.detector.scores_displacement
    assert len(watch_record(p, s, policy).flag_rows) == 0
    moved_off = watch_record(p, off, policy)
    assert len(moved_off.flag_rows) == 1 and moved_off.peak < policy.watch_drift
    assert len(watch_record(p, along, policy).flag_rows) == 0
    assert len(watch_record(p, off, Adaptation(watch_drift=1.5, watch_distance=0.0)).flag_rows) == 0
    ewma = Pipeline(EWMAZScore(), window=32, stride=16, features=("mean", "std")).fit(s)
    assert not ewma.detector.scores_displacement and len(watch_record(ewma, off, policy).flag_rows) == 0
    adapter = BaselineAdapter(copy.deepcopy(p), policy)
    assert adapter.status()["watch_distance"] == policy.watch_distance and "level_distance" in adapter.status()
