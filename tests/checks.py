"""Contract checks every detector must pass (river/scikit-learn style), driven by one parametrised test."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import numpy as np
import pytest
from sklearn.base import clone

from tinywarden.detectors.base import Detector
from tinywarden.errors import ConfigError, DataError, ModelFileError, NotFittedError


def normal_data(det: Detector, n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if det.input_kind == "window":
        t = np.arange(16)
        base = np.sin(2 * np.pi * t / 8)[None, :, None]
        return base + rng.normal(scale=0.1, size=(n, 16, 3))
    latent = rng.normal(size=(n, 3))
    return np.c_[latent, latent @ rng.normal(size=(3, 5))] + rng.normal(scale=0.05, size=(n, 8))


def outliers(det: Detector, n: int = 20, seed: int = 1) -> np.ndarray:
    x = normal_data(det, n, seed)
    return x + 6.0 * np.sign(np.random.default_rng(seed).normal(size=x.shape))


def check_init_stores_params(det: Detector) -> None:
    params = det.get_params()
    assert clone(det).get_params() == params
    assert not any(k.endswith("_") for k in vars(det)), "learned state before fit"


def check_not_fitted(det: Detector) -> None:
    with pytest.raises(NotFittedError):
        det.score_samples(normal_data(det, 4))


def check_fit_returns_self_and_scores(det: Detector) -> None:
    x = normal_data(det)
    assert det.fit(x) is det
    s = det.score_samples(x)
    assert s.shape == (len(x),) and s.dtype == np.float64 and np.isfinite(s).all()


def check_outliers_score_higher(det: Detector) -> None:
    det.fit(normal_data(det))
    normal = det.score_samples(normal_data(det, 200, seed=5))
    odd = det.score_samples(outliers(det))
    assert np.median(odd) > np.quantile(normal, 0.99), "higher score must mean more anomalous"


def check_deterministic(det: Detector) -> None:
    """Same parameters and data give the same model, whatever the global random state was."""
    import torch

    x = normal_data(det)
    a = clone(det).fit(x).score_samples(x)
    torch.rand(7)  # disturb every global generator a detector might (wrongly) draw from
    np.random.seed(12345)
    b = clone(det).fit(x).score_samples(x)
    np.testing.assert_array_equal(a, b)


def check_state_round_trip(det: Detector) -> None:
    x = normal_data(det)
    det.fit(x)
    again = type(det).from_state(det.get_params(), det.state())
    np.testing.assert_array_equal(again.score_samples(x), det.score_samples(x))
    unpickled = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(unpickled.score_samples(x), det.score_samples(x))


def check_state_shapes_are_enforced(det: Detector) -> None:
    """``state_shapes`` covers every state array and the fitted state meets it; a state with any array cut by one
    element along its last axis (a model file edited and re-checksummed) is refused, not scored by broadcasting."""
    det.fit(normal_data(det))
    state = det.state()
    for name in det._state_names():
        cut = {**state, name: state[name][..., :-1]}
        with pytest.raises(ModelFileError, match=r"array '[a-z_0-9]+' has shape"):
            type(det).from_state(det.get_params(), cut)
    assert set(det.state_shapes()) == set(det._state_names())


def check_sizes(det: Detector) -> None:
    det.fit(normal_data(det))
    assert det.n_params_ == sum(v.size for k, v in det.state().items() if k != "input_shape_")
    assert det.model_bytes_ == 4 * det.n_params_ > 0


def check_bad_input(det: Detector) -> None:
    x = normal_data(det)
    bad = x.copy()
    bad[3] = np.nan
    with pytest.raises(DataError):
        clone(det).fit(bad)
    det.fit(x)
    with pytest.raises(DataError):
        det.score_samples(bad)
    with pytest.raises(DataError):
        det.score_samples(x[:, :-1])  # wrong shape


def check_partial_fit_learns(det: Detector) -> None:
    """An online family starts like ``fit``, moves towards new normal data and refuses bad input unchanged;
    any other family refuses ``partial_fit``."""
    if not type(det).online:
        assert not hasattr(det, "partial_fit"), f"{det.name} offers partial_fit but does not declare online = True"
        with pytest.raises(AttributeError):
            det.partial_fit(normal_data(det))  # type: ignore[attr-defined]
        return
    x = normal_data(det)
    np.testing.assert_array_equal(clone(det).partial_fit(x).score_samples(x), clone(det).fit(x).score_samples(x))
    det.fit(x)
    shifted = normal_data(det, 300, seed=9) + 3.0
    before = det.score_samples(shifted).mean()
    for _ in range(5):
        assert det.partial_fit(shifted) is det
    assert det.score_samples(shifted).mean() < before, "partial_fit must move towards the new normal"
    learned = {k: v.copy() for k, v in det.state().items()}
    bad = shifted.copy()
    bad[3] = np.nan
    for wrong in (bad, shifted[:, :-1]):
        with pytest.raises(DataError):
            det.partial_fit(wrong)
    for k, v in det.state().items():
        np.testing.assert_array_equal(v, learned[k], err_msg=f"refused input changed {k}")


def check_family_declaration(det: Detector) -> None:
    """The family's registry entry is usable: every search-space size builds a detector, the flash lower bound
    is a non-negative integer that does not shrink as a size grows, and the int8 path says whether it exists."""
    cls = type(det)
    assert det.input_kind in ("features", "window")
    assert isinstance(cls.search_space, tuple) and cls.search_space, "search_space must list at least one size"
    bounds = []
    for params in cls.search_space:
        assert isinstance(params, dict)
        clone(det).set_params(**params)
        b = cls.flash_lower_bound(params, 24, 3)
        assert isinstance(b, int) and b >= 0
        bounds.append(b)
    assert bounds == sorted(bounds), "search_space must run from small to large"
    assert isinstance(cls.has_int8_path(), bool)


ALL_CHECKS: list[Callable[[Detector], None]] = [
    check_init_stores_params,
    check_not_fitted,
    check_fit_returns_self_and_scores,
    check_outliers_score_higher,
    check_deterministic,
    check_state_round_trip,
    check_state_shapes_are_enforced,
    check_sizes,
    check_bad_input,
    check_partial_fit_learns,
    check_family_declaration,
]

__all__ = ["ALL_CHECKS", "ConfigError", "normal_data", "outliers"]
