"""scikit-learn's own ``check_estimator`` on every detector family (the conventions users already test with).

Feature families take ``(n, n_features)`` input and must pass every check scikit-learn runs. Raw-window
families take ``(n, window, channels)``: their tags declare 3-D input, so scikit-learn runs only the checks
that do not feed 2-D arrays, and they must pass those. Scores stay "higher = more anomalous" (documented in
``tinywarden.detectors.base``), which no check here depends on.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import sparse
from sklearn.exceptions import SkipTestWarning
from sklearn.utils import estimator_checks, get_tags
from sklearn.utils.estimator_checks import check_estimator, parametrize_with_checks

from checks import normal_data
from test_detectors import FAST
from tinywarden.detectors import REGISTRY, make_detector
from tinywarden.detectors.flat import FlatWindows
from tinywarden.errors import DataError, DataTypeError, TinywardenError

FEATURE_FAMILIES = sorted(n for n, cls in REGISTRY.items() if cls.input_kind == "features")
WINDOW_FAMILIES = sorted(n for n, cls in REGISTRY.items() if cls.input_kind == "window")


def test_both_input_kinds_are_covered() -> None:
    assert len(FEATURE_FAMILIES) >= 7 and len(WINDOW_FAMILIES) >= 4
    assert set(FEATURE_FAMILIES) | set(WINDOW_FAMILIES) == set(REGISTRY)


@parametrize_with_checks([make_detector(n, **FAST[n]) for n in FEATURE_FAMILIES])
def test_feature_family_passes_sklearn_checks(estimator, check) -> None:  # noqa: ANN001 (sklearn's fixtures)
    check(estimator)


#: scikit-learn's checks that feed no data (so they apply to 3-D input too); check_estimator skips them for
#: an estimator whose tags say it takes no 2-D array, so they are run here one by one.
DATA_FREE_CHECKS = (
    "check_estimator_cloneable", "check_estimator_tags_renamed", "check_valid_tag_types", "check_estimator_repr",
    "check_no_attributes_set_in_init", "check_do_not_raise_errors_in_init_or_set_params", "check_mixin_order",
    "check_get_params_invariance", "check_set_params", "check_parameters_default_constructible",
)


@pytest.mark.parametrize("name", WINDOW_FAMILIES)
def test_window_family_declares_3d_input_and_passes_what_applies(name: str) -> None:
    det = make_detector(name, **FAST[name])
    tags = get_tags(det).input_tags
    assert tags.three_d_array and not tags.two_d_array
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = check_estimator(det, on_fail=None)
    assert [r["status"] for r in results] == ["passed"] * len(results) and results
    assert any(issubclass(w.category, SkipTestWarning) and "requires input" in str(w.message) for w in caught)
    for check in DATA_FREE_CHECKS:
        getattr(estimator_checks, check)(type(det).__name__, make_detector(name, **FAST[name]))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_bad_input_is_refused_with_the_standard_message_as_both_error_kinds(name: str) -> None:
    det = make_detector(name, **FAST[name])
    x = normal_data(det, 40)
    bad = x.copy()
    bad.flat[5] = np.inf
    wrong_rank = x.reshape(len(x), -1) if det.input_kind == "window" else x[:, :, None]
    cases: list[tuple[object, str]] = [
        (bad, "Input X contains infinity"),
        (x[:0], "0 sample"),
        (x[:1], "1 sample"),
        (x.astype(complex), "Complex data not supported"),
        (x.reshape(-1), "Expected 2D array, got 1D array"),
        (wrong_rank, "expects a 3-D array|Found array with dim 3"),
    ]
    for value, message in cases:
        with pytest.raises(DataError, match=message) as info:
            make_detector(name, **FAST[name]).fit(value)
        assert isinstance(info.value, ValueError) and isinstance(info.value, TinywardenError)
        assert type(det).__name__ in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", FEATURE_FAMILIES)
def test_feature_family_sets_and_restores_n_features_in(name: str) -> None:
    det = make_detector(name, **FAST[name])
    x = normal_data(det, 60)
    assert not hasattr(det, "n_features_in_")
    det.fit(x)
    assert det.n_features_in_ == x.shape[1]
    again = type(det).from_state(det.get_params(), det.state())
    assert again.n_features_in_ == x.shape[1]
    with pytest.raises(DataError, match=f"expecting {x.shape[1]} features"):
        again.score_samples(x[:, :-1])
    with pytest.raises(DataTypeError, match="[Ss]parse") as info:
        det.score_samples(sparse.csr_matrix(x))
    assert isinstance(info.value, TypeError)


#: Raw-window families on flattened 2-D rows (one channel: a row of n features is a window of n steps).
#: ``ar`` at order 1, since scikit-learn's arrays have as few as 2 columns and AR(p) needs windows longer than p.
FLAT = [FlatWindows(make_detector("bounds")), FlatWindows(make_detector("ar", order=1)),
        FlatWindows(make_detector("gru_ae", hidden=4, max_steps=20))]


def test_flat_windows_cover_every_window_family() -> None:
    assert {f.detector.name for f in FLAT} | {"conv_ae"} == set(WINDOW_FAMILIES)


@parametrize_with_checks(FLAT)
def test_window_family_on_flattened_rows_passes_sklearn_checks(estimator, check) -> None:  # noqa: ANN001
    check(estimator)


def test_conv_autoencoder_on_flattened_rows_fails_only_where_its_window_rule_does_not_hold() -> None:
    """Two pooling layers need windows divisible by 4: every check on such arrays passes, and every other one
    is refused with that rule, not with a crash."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(FlatWindows(make_detector("conv_ae", **FAST["conv_ae"])), on_fail=None)
    failed = [r for r in results if r["status"] == "failed"]
    assert sum(r["status"] == "passed" for r in results) >= 20
    for r in failed:
        assert isinstance(r["exception"], DataError), r["check_name"]
        assert "needs a window divisible by 4" in str(r["exception"]), r["check_name"]


def test_flat_windows_reshape_time_major_and_refuse_partial_windows() -> None:
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(50, 8, 3))
    inner = make_detector("bounds").fit(windows)
    flat = FlatWindows(make_detector("bounds"), channels=3).fit(windows.reshape(50, -1))
    np.testing.assert_array_equal(flat.score_samples(windows.reshape(50, -1)), inner.score_samples(windows))
    with pytest.raises(DataError, match="10 feature\\(s\\) are not whole windows of 3 channel"):
        FlatWindows(make_detector("bounds"), channels=3).fit(rng.normal(size=(20, 10)))
    with pytest.raises(TinywardenError, match="wraps a raw-window detector"):
        FlatWindows(make_detector("pca")).fit(rng.normal(size=(20, 10)))
