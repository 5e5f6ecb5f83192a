"""The one estimator interface every tinywarden detector follows.

scikit-learn conventions: ``__init__`` only stores its arguments unchanged; ``fit(X)`` learns from
normal data and returns ``self``; learned state ends in ``_``; ``get_params``/``set_params``/``clone``
come from :class:`sklearn.base.BaseEstimator`.

**Scores are "higher = more anomalous"** for every tinywarden detector (the opposite of scikit-learn's
IsolationForest ``score_samples``).

``input_kind`` says what a detector consumes: ``"features"`` (scaled window feature vectors, shape
``(n, n_features)``) or ``"window"`` (raw windows scaled per channel, shape ``(n, window, channels)``).

A fitted detector exposes ``n_params_`` (learned numbers it needs to score) and ``model_bytes_`` (their
size as float32), and round-trips through :meth:`Detector.state` / :meth:`Detector.from_state` so the
model file stores arrays, never pickles.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from sklearn.base import BaseEstimator

from tinywarden.errors import ConfigError, DataError, ModelFileError, NotFittedError

InputKind = Literal["features", "window"]

REGISTRY: dict[str, type[Detector]] = {}


class Detector(BaseEstimator):
    """Base class: unsupervised detector of deviations from normal (higher score = more anomalous)."""

    input_kind: ClassVar[InputKind] = "features"
    #: short name used on the command line and in model files
    name: ClassVar[str] = ""
    #: names of the learned arrays that make up the state
    state_arrays: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            REGISTRY[cls.name] = cls

    # -- the estimator interface ------------------------------------------------------------
    def fit(self, X: np.ndarray, y: None = None) -> Detector:  # noqa: N803 (sklearn naming)
        raise NotImplementedError

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        raise NotImplementedError

    # -- sizes -------------------------------------------------------------------------------
    @property
    def n_params_(self) -> int:
        """Number of learned values needed at scoring time."""
        self._check_fitted()
        return int(sum(np.asarray(getattr(self, a)).size for a in self._state_names()))

    @property
    def model_bytes_(self) -> int:
        """Size of those values stored as float32."""
        return 4 * self.n_params_

    # -- persistence -------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """Learned arrays by name, enough to score after :meth:`from_state`."""
        self._check_fitted()
        arrays = {a: np.asarray(getattr(self, a)) for a in self._state_names()}
        arrays["input_shape_"] = np.asarray(self.input_shape_, dtype=np.int64)
        return arrays

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Detector:
        """Rebuild a fitted detector from :meth:`get_params` and :meth:`state`."""
        try:
            det = cls(**params)
        except TypeError as exc:
            raise ModelFileError(f"detector {cls.name!r}: bad parameters in model file ({str(exc)!r})") from None
        missing = [a for a in (*det._state_names(), "input_shape_") if a not in arrays]
        if missing:
            raise ModelFileError(f"detector {cls.name!r}: model file lacks array(s) {', '.join(missing)}")
        for a in det._state_names():
            setattr(det, a, np.asarray(arrays[a]))
        det.input_shape_ = tuple(int(v) for v in arrays["input_shape_"])
        det._restore()
        return det

    def _state_names(self) -> tuple[str, ...]:
        """Names of the learned arrays; a detector whose layer count is a parameter overrides this."""
        return self.state_arrays

    def _restore(self) -> None:
        """Hook: rebuild derived objects (e.g. a torch module) after :meth:`from_state`."""

    # -- checks ------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "input_shape_") or not all(hasattr(self, a) for a in self._state_names()):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit() first")

    def _check_input(self, X: np.ndarray, fitting: bool = False) -> np.ndarray:  # noqa: N803
        x = np.asarray(X, dtype=np.float64)
        want = 2 if self.input_kind == "features" else 3
        if x.ndim != want:
            raise DataError(f"{type(self).__name__} expects a {want}-D array, got shape {x.shape}")
        if len(x) == 0:
            raise DataError(f"{type(self).__name__}: no samples")
        if not np.isfinite(x).all():
            raise DataError(f"{type(self).__name__}: input contains NaN or infinity")
        if fitting and len(x) < 2:
            raise DataError(f"{type(self).__name__}: need at least 2 samples to fit, got {len(x)}")
        if not fitting and hasattr(self, "input_shape_") and x.shape[1:] != tuple(self.input_shape_):
            raise DataError(
                f"{type(self).__name__} was fitted on shape {tuple(self.input_shape_)}, got {x.shape[1:]}"
            )
        return x


def check_param(name: str, value: Any, ok: bool, expected: str) -> None:
    """One standard message for an out-of-range parameter, checked at ``fit`` time."""
    if not ok:
        raise ConfigError(f"parameter {name}={value!r} is invalid: expected {expected}")


def make_detector(name: str, **params: Any) -> Detector:
    """A new, unfitted detector by its short name (``ewma``, ``kmeans``, ``dense_ae``, ``conv_ae``)."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown detector {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**params)
