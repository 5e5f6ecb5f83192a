"""The Gaussian (Mahalanobis) family: exact full-covariance distance, the low-rank form, its one-matrix int8 path."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.covariance import OAS, LedoitWolf

from tinywarden.detectors import GaussianMahalanobis, make_detector
from tinywarden.errors import ConfigError
from tinywarden.pipeline import Pipeline
from tinywarden.program import run_int8
from tinywarden.quantize import quantize_pipeline
from tinywarden.telemetry.series import Series


def correlated(n: int = 600, f: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(f, f)) * np.linspace(3.0, 0.2, f)[None, :]
    return rng.normal(size=(n, f)) @ mix.T + 5.0


@pytest.mark.parametrize(("shrinkage", "estimator"), [("ledoit_wolf", LedoitWolf), ("oas", OAS)])
def test_full_covariance_is_the_exact_mahalanobis_distance_under_the_shrunk_estimate(shrinkage, estimator) -> None:
    x = correlated()
    det = GaussianMahalanobis(n_components=None, structure="eigen", shrinkage=shrinkage).fit(x)
    assert len(det.components_) == x.shape[1] - 1  # the last axis is the one "remaining" variance: exact
    test = correlated(50, seed=1) * 1.5
    want = estimator().fit(x).mahalanobis(test)  # squared distance, location = the training mean
    np.testing.assert_allclose(det.score_samples(test), want, rtol=1e-8)


def test_low_rank_form_is_the_whitening_identity_and_sees_deviations_pca_does_not() -> None:
    x = correlated()
    det = GaussianMahalanobis(n_components=2, structure="eigen").fit(x)
    z = correlated(40, seed=2) - det.mean_
    v = det.whitening()
    np.testing.assert_allclose(det.noise_variance_[0] * det.score_samples(z + det.mean_),
                               (z * z).sum(1) - ((z @ v.T) ** 2).sum(1), rtol=1e-9)
    # a point far out along the main axis: PCA (same two axes) sees no residual, the Gaussian sees 8 spreads
    far = det.mean_ + 8.0 * np.sqrt(det.variances_[0] * det.noise_variance_[0]) * det.components_[0]
    pca = make_detector("pca", n_components=2).fit(x)
    assert pca.score_samples(far[None])[0] < 1e-9 * pca.score_samples(x).mean()
    assert det.score_samples(far[None])[0] == pytest.approx(64.0, rel=1e-6)
    assert det.score_samples(far[None])[0] > np.quantile(det.score_samples(x), 0.999)


def test_more_axes_never_exceed_n_features_minus_one_and_bad_parameters_are_refused() -> None:
    x = correlated(f=4)
    assert len(GaussianMahalanobis(n_components=32).fit(x).components_) == 3
    for bad in ({"n_components": 0}, {"n_components": 2.5}, {"n_components": True}, {"shrinkage": "empirical"},
                {"structure": "full"}):
        with pytest.raises(ConfigError, match="is invalid: expected"):
            GaussianMahalanobis(**bad).fit(x)


def factor_data(n: int, seed: int) -> np.ndarray:
    """Two factors over 8 features, each feature with its own noise spread (0.6 to 2)."""
    rng = np.random.default_rng(seed)
    load = np.random.default_rng(0).normal(size=(2, 8)) * 2.0
    return rng.normal(size=(n, 2)) @ load + rng.normal(size=(n, 8)) * np.linspace(0.6, 2.0, 8) + 5.0


def test_factor_structure_is_the_mahalanobis_distance_of_factor_analysis_with_per_feature_noise() -> None:
    from sklearn.decomposition import FactorAnalysis

    x = factor_data(800, 0)
    det = GaussianMahalanobis(n_components=2).fit(x)
    assert det.structure == "factor" and len(det.components_) == 2
    # one noise variance per feature, the generating ones (0.36 ... 4) within sampling error
    np.testing.assert_allclose(det.noise_variance_, np.linspace(0.6, 2.0, 8) ** 2, rtol=0.25)
    test = factor_data(60, 1) * 1.3
    fa = FactorAnalysis(n_components=2, random_state=0, tol=1e-4, svd_method="lapack").fit(x)
    z = test - fa.mean_
    got = det.score_samples(test)
    np.testing.assert_allclose(got, np.einsum("ij,jk,ik->i", z, fa.get_precision(), z), rtol=0.02)
    # in the noise-whitened space the axes are orthonormal and the whitening identity holds
    np.testing.assert_allclose(det.components_ @ det.components_.T, np.eye(2), atol=1e-9)
    y = (test - det.mean_) / np.sqrt(det.noise_variance_)
    np.testing.assert_allclose(got, (y * y).sum(1) - ((y @ det.whitening().T) ** 2).sum(1), rtol=1e-9)


def test_int8_program_ranks_windows_as_the_float_model_does() -> None:
    rng = np.random.default_rng(3)
    t = np.arange(4000, dtype=np.float64)
    load = 30 + 10 * np.sin(2 * np.pi * t / 500) + rng.normal(0, 1.0, len(t))
    values = np.c_[load, 0.5 * load + rng.normal(0, 0.5, len(t)), rng.normal(20, 2, len(t))]
    s = Series(t, values, ("cpu", "mem", "temp"))
    pipe = Pipeline(make_detector("gaussian", n_components=None), 16, 4, ("mean", "std", "max")).fit(s)
    program = quantize_pipeline(pipe, s)
    # a test stretch that breaks the cpu/mem correlation halfway
    test = values[:1200].copy()
    test[600:, 1] -= 8.0
    float_scores = pipe.score(Series(t[:1200], test, s.channels)).scores
    int_scores, _ = run_int8(program, test)
    assert spearmanr(float_scores, int_scores).statistic > 0.99
    n_normal = (600 - 16) // 4
    assert int_scores[-50:].min() > program.threshold
    assert np.mean(int_scores[:n_normal] > program.threshold) <= 0.05
