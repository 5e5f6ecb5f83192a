"""Thresholds at a target FPR and k-of-n persistence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinywarden.calibrate import Persistence, persist, threshold_at_fpr
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
