"""Every detector passes the shared contract checks in tests/checks.py."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from sklearn.base import clone

from checks import ALL_CHECKS, normal_data
from tinywarden.detectors import REGISTRY, ConvAutoencoder, DenseAutoencoder, Detector, make_detector
from tinywarden.errors import ConfigError

FAST = {
    "ewma": {},
    "kmeans": {"n_clusters": 4},
    "dense_ae": {"hidden": (6, 3), "epochs": 30, "max_steps": 300},
    "conv_ae": {"channels": (4, 2), "kernel_size": 3, "epochs": 30, "max_steps": 300},
    "pca": {},
    "gaussian": {},
    "iforest": {},
    "knn": {"n_prototypes": 16},
    "ocsvm": {},
    "gru_ae": {"hidden": 4, "max_steps": 200},
    "ar": {},
    "bounds": {},
    "ensemble": {},
}


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_contract(name: str, check: Callable[[Detector], None]) -> None:
    check(make_detector(name, **FAST.get(name, {})))


def test_make_detector_builds_every_registered_family_and_refuses_unknown_names() -> None:
    assert set(FAST) == set(REGISTRY)
    for name, cls in REGISTRY.items():
        assert type(make_detector(name)) is cls and cls.name == name
    with pytest.raises(ConfigError, match=f"unknown detector 'svm9000'; known: {', '.join(sorted(REGISTRY))}"):
        make_detector("svm9000")


@pytest.mark.parametrize(
    ("name", "params"),
    [("ewma", {"alpha": 0.0}), ("ewma", {"aggregate": "mean"}), ("kmeans", {"n_clusters": 0}),
     ("dense_ae", {"hidden": ()}), ("dense_ae", {"lr": -1.0}), ("conv_ae", {"kernel_size": 4})],
)
def test_invalid_parameters_are_refused_at_fit(name: str, params: dict[str, object]) -> None:
    det = make_detector(name, **params)  # __init__ only stores
    with pytest.raises(ConfigError, match="is invalid"):
        det.fit(normal_data(det))


def test_parameter_counts_follow_the_architecture() -> None:
    ae = DenseAutoencoder(hidden=(5, 2), max_steps=10).fit(np.random.default_rng(0).normal(size=(50, 7)))
    assert ae.n_params_ == (7 * 5 + 5) + (5 * 2 + 2) + (2 * 5 + 5) + (5 * 7 + 7)
    conv = ConvAutoencoder(channels=(4, 2), kernel_size=3, max_steps=10)
    conv.fit(np.random.default_rng(0).normal(size=(50, 16, 3)))
    assert conv.n_params_ == (3 * 4 * 3 + 4) + (4 * 2 * 3 + 2) + (2 * 4 * 3 + 4) + (4 * 3 * 3 + 3)


def test_conv_autoencoder_rejects_indivisible_window() -> None:
    from tinywarden.errors import DataError

    with pytest.raises(DataError, match="divisible by 4"):
        ConvAutoencoder(channels=(2, 2)).fit(np.zeros((10, 18, 2)))


def test_clone_is_unfitted() -> None:
    det = make_detector("kmeans", n_clusters=2).fit(np.random.default_rng(0).normal(size=(30, 2)))
    assert not hasattr(clone(det), "centroids_")


@pytest.mark.parametrize(("members", "message"), [
    ("pca(n_components=8)", "2 to 3 members, got 1"),
    ("pca()+kmeans()+gaussian()+knn()", "2 to 3 members, got 4"),
    ("pca()+bounds()", "'bounds' reads the raw window"),
    ("pca()+svm9000()", "'svm9000' is not a family"),
    ("pca(n_components=8+kmeans()", "expected family\\(param=literal"),
    ("pca(n_components=open('x'))+kmeans()", "expected family\\(param=literal"),
])
def test_ensemble_refuses_a_bad_member_list_in_one_line(members: str, message: str) -> None:
    det = make_detector("ensemble", members=members)  # __init__ only stores
    with pytest.raises(ConfigError, match=message) as exc:
        det.fit(normal_data(det))
    assert "\n" not in str(exc.value)


def test_ensemble_score_is_the_mean_of_its_members_on_their_calibrated_scales() -> None:
    x = normal_data(make_detector("pca"))
    ens = make_detector("ensemble", members="pca(n_components=2)+kmeans(n_clusters=3)").fit(x)
    pca, km = (make_detector("pca", n_components=2).fit(x), make_detector("kmeans", n_clusters=3).fit(x))
    expect = (pca.score_samples(x) / np.quantile(pca.score_samples(x), 0.99)
              + km.score_samples(x) / np.quantile(km.score_samples(x), 0.99)) / 2
    np.testing.assert_allclose(ens.score_samples(x), expect, rtol=1e-9)
    assert np.quantile(ens.score_samples(x), 0.99) == pytest.approx(1.0, abs=0.2)
