"""emlearn's deployable anomaly model: a scikit-learn GaussianMixture converted to C by emlearn.

emlearn converts GaussianMixture / EllipticEnvelope (its anomaly-detection models) but not
IsolationForest (its tree converter takes only Random Forest / Extra Trees / Decision Trees). The model
is fitted in scikit-learn, converted with ``emlearn.convert``, and:

* its size is what the C compiler makes of emlearn's generated code (``gcc -c -Os``, text + data
  from ``size``), plus the z-scaler's 2 x 4 B per feature that the device also needs;
* the compiled C model is run on the first test windows and must give scikit-learn's log-likelihood
  (``c_max_abs_diff_`` and ``c_max_rel_diff_`` report the largest disagreement); the timed scoring
  uses scikit-learn, because emlearn's Python route runs the C through a subprocess.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np
from benchmarks.peers.base import Peer, fit_standard_scaler
from sklearn.mixture import GaussianMixture

#: Test windows the compiled C model is checked on (emlearn builds and runs an executable for it).
C_CHECK_ROWS = 256


class EmlearnGMM(Peer):
    """GaussianMixture (2 components, full covariance) on z-scaled features; score = -log-likelihood."""

    name = "emlearn_gmm"
    note = ("scikit-learn GaussianMixture(2, full) converted by emlearn; bytes = gcc -Os object of the "
            "generated C + scaler; C scores checked against scikit-learn")

    def __init__(self, n_components: int = 2) -> None:
        self.n_components = n_components

    def fit(self, X: np.ndarray) -> EmlearnGMM:  # noqa: N803
        emlearn = _import_emlearn()
        self.scaler_ = fit_standard_scaler(X)
        self.gmm_ = GaussianMixture(self.n_components, covariance_type="full", reg_covar=1e-3,
                                    random_state=0).fit(self.scaler_.transform(X))
        self.c_model_ = emlearn.convert(self.gmm_, method="inline")
        self.object_bytes_ = _object_bytes(self.c_model_.save(name="tw_bench_gmm"), emlearn.includedir)
        self.n_features_ = X.shape[1]
        return self

    def check_c(self, X: np.ndarray) -> None:  # noqa: N803
        """Run the compiled C model on the first rows of ``X``; record its disagreement with scikit-learn."""
        z = self.scaler_.transform(X[:C_CHECK_ROWS]).astype(np.float32)
        c_scores = np.asarray(self.c_model_.score_samples(z), dtype=np.float64)
        py_scores = self.gmm_.score_samples(z.astype(np.float64))
        diff = np.abs(c_scores - py_scores)
        self.c_max_abs_diff_ = float(diff.max())
        self.c_max_rel_diff_ = float((diff / np.maximum(np.abs(py_scores), 1.0)).max())

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        return -self.gmm_.score_samples(self.scaler_.transform(X))

    @property
    def n_params_(self) -> int:
        k, d = self.gmm_.means_.shape
        # what emlearn stores: means, full precision Cholesky factors, log-determinants, log-weights
        return k * d + k * d * d + 2 * k + 2 * d

    @property
    def model_bytes_(self) -> int:
        return self.object_bytes_ + 8 * self.n_features_


def _import_emlearn() -> ModuleType:
    """``import emlearn`` without its side effect: emlearn.bayes calls ``numpy.seterr(all='raise')`` at
    import, which would turn harmless float underflows in every later computation into exceptions."""
    saved = np.geterr()
    try:
        import emlearn
    finally:
        np.seterr(**saved)
    return emlearn


def _object_bytes(code: str, include_dir: str) -> int:
    """text + data bytes of ``code`` compiled with ``gcc -c -Os`` (the host compiler)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    size = shutil.which("size")
    if cc is None or size is None:
        raise RuntimeError("emlearn model size needs a C compiler (gcc) and binutils' size on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        src, obj = Path(tmp) / "model.c", Path(tmp) / "model.o"
        src.write_text(code)
        subprocess.run([cc, "-c", "-Os", "-I", include_dir, str(src), "-o", str(obj)], check=True,
                       capture_output=True, timeout=600)
        out = subprocess.run([size, str(obj)], check=True, capture_output=True, text=True).stdout
    text, data = (int(v) for v in out.splitlines()[1].split()[:2])
    return text + data
