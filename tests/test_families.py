"""Family-specific behaviour of the issue-8 detectors (the shared contract checks run in test_detectors.py)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

from checks import normal_data
from tinywarden.detectors import (
    ARResidual,
    BoundsDetector,
    BudgetOneClassSVM,
    GRUAutoencoder,
    PCAReconstruction,
    PrototypeKNN,
    TrimmedIsolationForest,
    fail_safe_detector,
    make_detector,
)
from tinywarden.detectors.iforest import (
    FRAC_BITS,
    MAX_FEATURES,
    MAX_FEATURES_UINT8,
    average_path_length,
    quantize_features,
)
from tinywarden.errors import ConfigError, DataError
from tinywarden.pipeline import Pipeline
from tinywarden.telemetry import read_series


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train rows, test rows and test labels: two correlated normal modes, scattered anomalies."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(4, 6))
    normal = np.r_[rng.normal(size=(600, 4)) @ mix, rng.normal(size=(600, 4)) @ mix + 4.0]
    test_normal = np.r_[rng.normal(size=(200, 4)) @ mix, rng.normal(size=(200, 4)) @ mix + 4.0]
    odd = rng.uniform(-8, 12, size=(40, 6))
    return normal, np.r_[test_normal, odd], np.r_[np.zeros(400), np.ones(40)]


@pytest.mark.parametrize(
    ("name", "params"),
    [("pca", {"n_components": 1.5}), ("pca", {"n_components": -1}), ("iforest", {"max_depth": 8}),
     ("iforest", {"n_estimators": 0}), ("knn", {"n_prototypes": 65}), ("knn", {"n_prototypes": 4, "k": 5}),
     ("ocsvm", {"max_support_vectors": 33}), ("ocsvm", {"kernel": "poly"}), ("gru_ae", {"hidden": 0}),
     ("gru_ae", {"mode": "both"}), ("ar", {"order": 0}), ("ar", {"aggregate": "mean"}),
     ("bounds", {"quantile": 0.4}), ("bounds", {"margin": -0.1})],
)
def test_invalid_parameters_are_refused_at_fit(name: str, params: dict[str, object]) -> None:
    det = make_detector(name, **params)
    with pytest.raises(ConfigError, match="is invalid"):
        det.fit(normal_data(det))


# -- PCA ------------------------------------------------------------------------------------------
def test_pca_keeps_more_components_for_more_variance_and_never_all() -> None:
    x = normal_data(PCAReconstruction())
    counts = [len(PCAReconstruction(n_components=v).fit(x).components_) for v in (0.5, 0.9, 0.999)]
    assert counts == sorted(counts) and counts[0] >= 1
    assert len(PCAReconstruction(n_components=50).fit(x).components_) == x.shape[1] - 1


def test_pca_error_is_zero_on_the_subspace_and_grows_off_it() -> None:
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(2, 5))
    det = PCAReconstruction(n_components=2).fit(rng.normal(size=(200, 2)) @ basis + 1.0)
    on = np.array([[0.3, -1.2]]) @ basis + 1.0
    off = on + 0.5 * np.linalg.svd(basis)[2][-1]  # a direction orthogonal to the basis
    assert det.score_samples(on)[0] < 1e-20
    assert det.score_samples(off)[0] == pytest.approx(0.25 / 5)


def test_pca_is_invariant_to_row_order() -> None:
    x = normal_data(PCAReconstruction())
    a = PCAReconstruction().fit(x).score_samples(x)
    b = PCAReconstruction().fit(x[::-1].copy()).score_samples(x)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


# -- trimmed isolation forest ----------------------------------------------------------------------
def test_iforest_packs_nodes_in_small_integers_within_the_depth_budget() -> None:
    det = TrimmedIsolationForest(n_estimators=12, max_depth=5).fit(_blobs()[0])
    assert (det.feature_.dtype, det.threshold_.dtype, det.left_.dtype) == (np.uint8, np.int16, np.uint8)
    sizes = np.diff(np.r_[det.tree_start_.astype(int), len(det.feature_)])
    assert len(sizes) == 12 and sizes.max() <= 2 ** (5 + 1) - 1
    assert det.packed_bytes_ == 4 * sizes.sum() + 2 * 12 <= 12 * (4 * 63 + 2)


def _walk(det: TrimmedIsolationForest, row: np.ndarray) -> int:
    """The plain loop a C port runs: integer compares on the packed arrays, one tree after another."""
    q = quantize_features(row)
    total = 0
    for start in det.tree_start_.tolist():
        node = start
        while det.left_[node] != 0:
            right = int(q[det.feature_[node]]) > int(det.threshold_[node])
            node = start + int(det.left_[node]) + int(right)
        total += int(det.threshold_[node])
    return total


def test_iforest_vectorised_score_equals_a_scalar_integer_walk() -> None:
    train, test, _ = _blobs()
    det = TrimmedIsolationForest(n_estimators=8).fit(train)
    sums = det.path_length_sum(test)
    assert sums.tolist() == [_walk(det, row) for row in test]
    # the float score is a decreasing function of that integer only
    order = np.argsort(sums, kind="stable")
    assert np.all(np.diff(det.score_samples(test)[order]) <= 0)


def test_iforest_inputs_beyond_the_fixed_point_range_saturate() -> None:
    assert quantize_features(np.array([200.0, -200.0, 1.0])).tolist() == [32767, -32768, 1 << FRAC_BITS]
    det = TrimmedIsolationForest().fit(_blobs()[0])
    far = np.full((1, 6), 500.0)
    assert det.score_samples(far)[0] == det.score_samples(np.full((1, 6), 128.0))[0]


def test_iforest_is_close_to_scikit_learns_full_forest() -> None:
    train, test, labels = _blobs()
    ours = roc_auc_score(labels, TrimmedIsolationForest().fit(train).score_samples(test))
    full = roc_auc_score(labels, -IsolationForest(random_state=0).fit(train).score_samples(test))
    assert ours > 0.9 and ours >= full - 0.05


def test_iforest_feature_indices_take_the_smallest_type_that_holds_them() -> None:
    rng = np.random.default_rng(0)
    narrow = TrimmedIsolationForest().fit(rng.normal(size=(300, MAX_FEATURES_UINT8)))
    wide = TrimmedIsolationForest().fit(rng.normal(size=(300, MAX_FEATURES_UINT8 + 1)))
    assert (narrow.feature_.dtype, wide.feature_.dtype) == (np.uint8, np.uint16)
    # 4 bytes a node with uint8 indices, 5 with uint16 ones, plus a uint16 start a tree
    assert narrow.packed_bytes_ == 4 * len(narrow.feature_) + 2 * narrow.n_estimators
    assert wide.packed_bytes_ == 5 * len(wide.feature_) + 2 * wide.n_estimators
    # an index beyond uint8 is used and reached: no feature is silently folded onto another
    assert int(wide.feature_[wide.left_ != 0].max()) > 255 or len(wide.feature_) < 8
    x = rng.normal(size=(64, MAX_FEATURES_UINT8 + 1))
    assert wide.path_length_sum(x).tolist() == [_walk(wide, row) for row in x]


def test_iforest_refuses_more_features_than_uint16_can_index() -> None:
    with pytest.raises(DataError, match="uint16"):
        TrimmedIsolationForest().fit(np.zeros((2, MAX_FEATURES + 1)))


def test_average_path_length_matches_the_harmonic_formula() -> None:
    n = 50
    harmonic = sum(1.0 / i for i in range(1, n))
    assert float(average_path_length(n)) == pytest.approx(2 * harmonic - 2 * (n - 1) / n, rel=0.01)


# -- prototypes ----------------------------------------------------------------------------------
def test_knn_prototypes_are_training_rows_and_score_zero_there() -> None:
    train = _blobs()[0]
    det = PrototypeKNN(n_prototypes=64, k=1).fit(train)
    assert det.prototypes_.shape == (64, 6)
    assert all((train == p).all(axis=1).any() for p in det.prototypes_)
    np.testing.assert_allclose(det.score_samples(det.prototypes_), 0.0, atol=1e-6)


def test_knn_covers_both_normal_modes() -> None:
    train, test, labels = _blobs()
    det = PrototypeKNN(n_prototypes=16, k=3).fit(train)
    assert roc_auc_score(labels, det.score_samples(test)) > 0.9


# -- one-class SVM --------------------------------------------------------------------------------
def test_ocsvm_rbf_stays_within_its_support_vector_budget() -> None:
    train, test, labels = _blobs()
    det = BudgetOneClassSVM(max_support_vectors=32).fit(train)
    assert 1 <= len(det.support_vectors_) <= 32 and det.n_params_ == len(det.support_vectors_) * 7 + 2
    assert roc_auc_score(labels, det.score_samples(test)) > 0.9


def test_ocsvm_random_fourier_features_size_and_quality() -> None:
    train, test, labels = _blobs()
    det = BudgetOneClassSVM(kernel="rff", n_components=48).fit(train)
    assert det.n_params_ == 48 * (6 + 2) + 1
    assert roc_auc_score(labels, det.score_samples(test)) > 0.85


# -- AR residuals ---------------------------------------------------------------------------------
def _ar2(n: int, length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros((n, length, 1))
    noise = rng.normal(scale=0.1, size=(n, length, 1))
    x[:, :2] = rng.normal(size=(n, 2, 1))
    for t in range(2, length):
        x[:, t] = 1.2 * x[:, t - 1] - 0.5 * x[:, t - 2] + noise[:, t]
    return x


def test_ar_recovers_the_generating_coefficients() -> None:
    det = ARResidual(order=2).fit(_ar2(300, 32, 0))
    np.testing.assert_allclose(det.coef_[0], [1.2, -0.5], atol=0.05)
    assert det.mad_[0] == pytest.approx(0.1 / 1.4826, rel=0.15)


def test_ar_flags_a_jump_that_the_value_range_would_miss() -> None:
    x = _ar2(300, 32, 0)
    det = ARResidual(order=2, horizon=4).fit(x)
    test = _ar2(50, 32, 1)
    jumped = test.copy()
    jumped[:, -2:] += 1.0  # small against the signal's range, huge against the 0.1 innovations
    assert det.score_samples(jumped).min() > det.score_samples(test).max()


def test_ar_refuses_windows_too_short_for_its_order_or_horizon() -> None:
    with pytest.raises(DataError, match="longer than 4"):
        ARResidual(order=4).fit(np.zeros((10, 4, 2)))
    with pytest.raises(DataError, match="horizon"):
        ARResidual(order=2, horizon=10).fit(np.zeros((10, 8, 2)))


# -- rule bounds ----------------------------------------------------------------------------------
def test_bounds_score_is_zero_on_a_bound_and_positive_only_beyond() -> None:
    grid = np.linspace(0, 1, 33)
    det = BoundsDetector(quantile=1.0, margin=0.0).fit(np.stack([grid[:-1], grid[1:]], axis=1)[:, :, None])
    assert det.lo_[0] == 0.0 and det.hi_[0] == 1.0
    on = np.array([[[0.97], [1.0]]])
    beyond = np.array([[[1.0], [1.01]]])
    assert det.score_samples(on)[0] == pytest.approx(0.0) and not det.violates(on)[0]
    assert det.violates(beyond)[0]


def test_bounds_catch_a_fast_step_inside_the_value_range() -> None:
    slow = np.cumsum(np.full((20, 16, 1), 0.01), axis=1)
    det = BoundsDetector(quantile=1.0, margin=0.1).fit(slow)
    jump = slow[:1].copy()
    jump[0, 8:] = jump[0, 8:] - 0.05  # stays in range, one step of -0.06
    assert jump.min() >= det.lo_[0] and det.violates(jump)[0] and not det.violates(slow).any()


def test_fail_safe_detector_works_in_raw_units_without_calibration() -> None:
    rng = np.random.default_rng(0)
    raw = np.array([50.0, 2000.0]) + rng.normal(scale=[1.0, 100.0], size=(300, 8, 2))
    guard = fail_safe_detector(raw)
    assert not guard.violates(raw).any()  # training range itself is never a violation
    hot = raw[:1].copy()
    hot[0, -1, 0] = 80.0
    assert guard.violates(hot)[0]


# -- GRU ------------------------------------------------------------------------------------------
def test_gru_budget_arithmetic_for_smd_sized_input() -> None:
    det = GRUAutoencoder(hidden=16, max_steps=2).fit(np.random.default_rng(0).normal(size=(32, 16, 38)))
    flash, ram = det.flash_ram_bytes()
    assert det.n_params_ == 3 * (38 * 16 + 16 * 16 + 2 * 16) + 38 * 16 + 38
    assert flash == (3 * (38 * 16 + 16 * 16) + 38 * 16) + 4 * (6 * 16 + 38) <= 8 * 1024
    assert ram == 2 * 16 * 38 + 2 * 16 + 4 * 3 * 16 <= 4 * 1024


def test_gru_forecaster_learns_a_rhythm() -> None:
    t = np.arange(16)
    rng = np.random.default_rng(0)
    phase = rng.uniform(0, 2 * np.pi, size=(400, 1, 1))
    waves = np.sin(2 * np.pi * t[None, :, None] / 8 + phase) + rng.normal(scale=0.05, size=(400, 16, 2))
    det = GRUAutoencoder(hidden=8, max_steps=400).fit(waves)
    noise = rng.normal(size=(50, 16, 2))
    assert np.median(det.score_samples(noise)) > 4 * np.median(det.score_samples(waves[:50]))


# -- real data --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pca", "knn", "bounds"])
def test_families_detect_real_smd_anomalies(shared_data: object, name: str) -> None:
    path = f"{shared_data}/smd_asd/npz/machine-1-6.npz"
    train, test = read_series(f"{path}:train"), read_series(f"{path}:test")
    pipe = Pipeline(make_detector(name), window=16, stride=4, features=("last", "mean", "std", "max", "min"))
    scored = pipe.fit(train).score(test)
    labels = test.labels[scored.end_rows]
    assert roc_auc_score(labels, scored.scores) > 0.75


def test_ocsvm_fits_degenerate_training_windows() -> None:
    """Flat-lining metrics repeat one window: the fit uses the distinct rows and never fails in libsvm."""
    probe = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [3.0, 3.0, 3.0]])
    one = make_detector("ocsvm").fit(np.zeros((100, 3)))
    assert len(one.support_vectors_) == 1 and one.score_samples(probe)[0] == 0.0
    assert np.all(np.diff(one.score_samples(probe)) > 0)
    # two distinct windows (nu would be 1 without the cap: libsvm's dual coefficients turn non-finite)
    two = make_detector("ocsvm").fit(np.r_[np.zeros((99, 3)), np.ones((1, 3))])
    s = two.score_samples(probe)
    assert np.all(np.isfinite(s)) and s[2] > max(s[0], s[1])
