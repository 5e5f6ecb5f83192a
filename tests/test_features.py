"""Windowing and features: streaming equals batch to the bit, and each feature means what it says."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinywarden.errors import ConfigError
from tinywarden.features import (
    DEFAULT_FEATURES,
    FEATURES,
    RingBuffer,
    StreamingFeatures,
    batch_features,
    check_features,
    crossings_block,
    extract,
    feature_names,
    window_end_rows,
)


def _stream(values: np.ndarray, window: int, stride: int, feats: tuple[str, ...],
            level: np.ndarray | None = None) -> np.ndarray:
    sf = StreamingFeatures(window, stride, values.shape[1], feats, level=level)
    out = [f for x in values if (f := sf.push(x)) is not None]
    return np.array(out).reshape(len(out), -1)


def test_stream_equals_batch_on_thousands_of_windows() -> None:
    rng = np.random.default_rng(1)
    scales = np.array([1.0, 100.0, 1e4, 1e-3, 7.0, 0.5])
    values = rng.normal(size=(64 * 3000 + 200, 6)) * scales + rng.normal(size=6) * 50
    ends, batch = batch_features(values, 128, 64)
    assert len(ends) > 2900
    streamed = _stream(values, 128, 64, DEFAULT_FEATURES)
    assert np.array_equal(batch, streamed)  # identical bits, not merely close


@settings(max_examples=40, deadline=None)
@given(
    window_log=st.integers(2, 6),
    stride_frac=st.floats(0.05, 1.0),
    channels=st.integers(1, 4),
    n_extra=st.integers(0, 300),
    seed=st.integers(0, 2**16),
)
def test_stream_equals_batch_property(window_log: int, stride_frac: float, channels: int, n_extra: int,
                                      seed: int) -> None:
    window = 2**window_log
    stride = max(1, int(window * stride_frac))
    feats = tuple(f for f in DEFAULT_FEATURES if not f.startswith("band") or int(f[4:]) <= window_log)
    values = np.random.default_rng(seed).normal(size=(window + n_extra, channels)) * 10
    ends, batch = batch_features(values, window, stride, feats)
    np.testing.assert_array_equal(ends, window_end_rows(len(values), window, stride))
    assert np.array_equal(batch, _stream(values, window, stride, feats))
    level = values.mean(axis=0)  # crossings of a trained level: the same bits streamed and in batch
    assert np.array_equal(batch_features(values, window, stride, feats, level=level)[1],
                          _stream(values, window, stride, feats, level))


def test_crossings_of_a_level_count_every_adjacent_pair_across_the_window() -> None:
    x = np.array([0.0, 2.0, 2.0, 0.0, 3.0, 1.0, 1.0, 1.0])[None, :, None]
    # crossings of 1.5: 0->2, 2->0, 0->3, 3->1; a sample equal to the level is not above it
    assert extract(x, ("crossings",), level=np.array([1.5]))[0, 0] * 7 == pytest.approx(4.0)
    assert extract(x, ("crossings",), level=np.array([1.0]))[0, 0] * 7 == pytest.approx(4.0)
    with pytest.raises(ConfigError, match="one value per channel"):
        extract(x, ("crossings",), level=np.array([1.0, 2.0]))


def test_each_feature_matches_its_definition() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 64, 1)) * 3 + 5
    v = x[0, :, 0]
    got = dict(zip(DEFAULT_FEATURES, extract(x)[0], strict=True))
    assert got["mean"] == pytest.approx(v.mean())
    assert got["std"] == pytest.approx(v.std())
    assert got["min"] == v.min() and got["max"] == v.max()
    assert got["rms"] == pytest.approx(np.sqrt((v**2).mean()))
    above = v > v.mean()
    assert got["crossings"] == pytest.approx((above[1:] != above[:-1]).sum() / 63)
    assert got["diff_abs_mean"] == pytest.approx(np.abs(np.diff(v)).mean())
    assert got["diff_abs_max"] == pytest.approx(np.abs(np.diff(v)).max())


def test_band_energies_follow_frequency() -> None:
    t = np.arange(128)
    fast = np.cos(np.pi * t)[None, :, None]  # Nyquist: all energy in band1
    slow = np.sin(2 * np.pi * t / 32)[None, :, None]  # period 32 samples: fs/32, lies in band 4
    f = dict(zip(DEFAULT_FEATURES, extract(fast)[0], strict=True))
    s = dict(zip(DEFAULT_FEATURES, extract(slow)[0], strict=True))
    assert f["band1"] == pytest.approx(1.0) and f["band2"] == pytest.approx(0.0, abs=1e-12)
    assert s["band1"] < s["band2"] < s["band3"]
    # orthonormal Haar: band energies never exceed the signal's energy
    x = np.random.default_rng(3).normal(size=(1, 128, 1))
    bands = extract(x, tuple(f"band{i}" for i in range(1, 7)))[0]
    assert bands.sum() <= (x**2).mean() + 1e-12


def test_ring_buffer_returns_windows_in_row_order() -> None:
    rb = RingBuffer(window=4, stride=3, n_channels=1)
    wins = [w[:, 0].tolist() for i in range(11) if (w := rb.push([float(i)])) is not None]
    assert wins == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    rb.reset()
    assert rb.push([1.0]) is None
    with pytest.raises(ConfigError):
        rb.push([1.0, 2.0])


@pytest.mark.parametrize(("window", "stride"), [(1, 1), (8, 0), (8, 9), (8, 2.5)])
def test_bad_window_config(window: int, stride: int) -> None:
    with pytest.raises(ConfigError):
        RingBuffer(window, stride, 1)


def test_feature_list_validation() -> None:
    with pytest.raises(ConfigError, match="unknown feature"):
        check_features(["mean", "kurtosis"], 128)
    with pytest.raises(ConfigError, match="divisible by 8"):
        check_features(["band3"], 100)
    with pytest.raises(ConfigError, match="empty"):
        check_features([], 128)
    assert feature_names(["cpu"], ["mean", "max"]) == ["cpu:mean", "cpu:max"]
    assert set(DEFAULT_FEATURES) <= set(FEATURES)


def test_crossings_are_counted_per_block_against_the_blocks_own_mean() -> None:
    # two halves oscillating around different levels: the window's mean (5) is crossed once, in the middle;
    # each half's own mean is crossed at every step inside the half (31 + 31), none across the halves
    x = np.concatenate([np.tile([-1.0, 1.0], 16), np.tile([9.0, 11.0], 16)]).reshape(1, 64, 1)
    assert extract(x, ("crossings",))[0, 0] * 63 == pytest.approx(1.0)
    assert extract(x, ("crossings",), 32)[0, 0] * 63 == pytest.approx(62.0)
    assert extract(x, ("crossings",), 64)[0, 0] * 63 == pytest.approx(1.0)
    assert crossings_block(64, 32) == 32 and crossings_block(128, 64) == 64
    assert crossings_block(32, 4) == 32  # blocks of 4 are too short to count in: the whole window
    for bad in (0, 3, 65, 2.0):
        with pytest.raises(ConfigError, match="crossings block"):
            extract(x, ("crossings",), bad)  # type: ignore[arg-type]
