"""The one estimator interface every tinywarden detector follows.

scikit-learn conventions: ``__init__`` only stores its arguments unchanged; ``fit(X)`` learns from
normal data and returns ``self``; learned state ends in ``_``; ``get_params``/``set_params``/``clone``
come from :class:`sklearn.base.BaseEstimator`.

**Scores are "higher = more anomalous"** for every tinywarden detector (the opposite of scikit-learn's
IsolationForest ``score_samples``).

``input_kind`` says what a detector consumes: ``"features"`` (scaled window feature vectors, shape
``(n, n_features)``) or ``"window"`` (raw windows scaled per channel, shape ``(n, window, channels)``).

Each family is one module: the estimator class (registered in :data:`REGISTRY` by its ``name``), its
int8 lowering (:meth:`Detector.lower`, which reads only the detector's public fitted state), the lower
bound on its int8 constants that ``tune`` filters by (:meth:`Detector.flash_lower_bound`), the model
sizes ``tune`` searches (:attr:`Detector.search_space`) and its float score as graph nodes for the ONNX export
(:meth:`Detector.score_graph`). Everything that lists families (the CLI, ``tune``,
the benchmarks, the shared tests) reads :data:`REGISTRY`, in registration order.

A fitted detector exposes ``n_params_`` (learned numbers it needs to score) and ``model_bytes_`` (their
size as float32), and round-trips through :meth:`Detector.state` / :meth:`Detector.from_state` so the
model file stores arrays, never pickles. Each family states, in :meth:`Detector.state_shapes`, the shape every
state array must have for its ``input_shape_`` and parameters; :meth:`Detector.from_state` refuses any other
(numpy broadcasting would otherwise score a wrong-sized state without a word).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import Tags, check_array
from sklearn.utils.validation import validate_data

from tinywarden.errors import ConfigError, DataError, DataTypeError, ModelFileError, NotFittedError

if TYPE_CHECKING:
    from tinywarden.detectors.lowering import Lowered, LoweringContext

InputKind = Literal["features", "window"]

REGISTRY: dict[str, type[Detector]] = {}

#: The family of the default pipeline (``train`` and ``demo`` without ``--model``/``--detector``): the one with
#: the most incidents found within 1 false alarm per device-day on development seeds of the simulator
#: (``benchmarks/default_family.py``, results/default_family.md; the demo's and drift.py's seeds left as the
#: test). Its adapting module fits 8 KB of flash and 4 KB of RAM on every core on the demo's device
#: (``tests/test_target_model.py``; the constants' widths follow the data, so the size does too).
DEFAULT_FAMILY = "gaussian"


class ScoreGraph(Protocol):
    """What a family writes its float score with (:mod:`tinywarden.codegen.onnx` builds an ONNX graph from it):
    operators and attributes are ONNX's (opset 13), values float32 unless given otherwise."""

    def const(self, name: str, value: np.ndarray) -> str:
        """A constant tensor; returns its name."""
        ...

    def node(self, op: str, inputs: Sequence[str], output: str, more: Sequence[str] = (), **attrs: Any) -> str:
        """One operator computing ``output`` (and ``more`` outputs, e.g. ``TopK``'s indices) from ``inputs``;
        returns ``output``."""
        ...

    def output(self, name: str, width: int) -> None:
        """Also expose tensor ``name`` (``(n, width)`` floats) as a graph output."""
        ...


def graph_squared_distances(g: ScoreGraph, x: str, points: np.ndarray, prefix: str) -> str:
    """``(n, P)`` squared distances from the rows of ``x`` to ``points`` (``P x F``) as ``|x|^2 - 2 x.p + |p|^2``,
    the distance families' own formula (k-means, kNN, the RBF one-class SVM); not clipped at 0."""
    x2 = g.node("ReduceSum", [g.node("Mul", [x, x], f"{prefix}/x2"),
                              g.const(f"{prefix}/axes", np.array([1], np.int64))], f"{prefix}/x_energy", keepdims=1)
    cross = g.node("Mul", [g.node("MatMul", [x, g.const(f"{prefix}/points_t", points.T)], f"{prefix}/dots"),
                           g.const(f"{prefix}/two", np.array(2.0, np.float32))], f"{prefix}/cross")
    return g.node("Add", [g.node("Sub", [x2, cross], f"{prefix}/partial"),
                          g.const(f"{prefix}/p_energy", (points**2).sum(1)[None, :])], f"{prefix}/d2")


@dataclass(frozen=True)
class Learned:
    """A state dimension learned from the data (e.g. the clusters kept): any size in ``[lo, hi]``, the same in
    every array of one detector that names it."""

    name: str
    lo: int = 1
    hi: int | None = None


#: A state array's declared shape: fixed sizes and learned ones.
Shape = tuple[int | Learned, ...]


class Detector(BaseEstimator):
    """Base class: unsupervised detector of deviations from normal (higher score = more anomalous)."""

    input_kind: ClassVar[InputKind] = "features"
    #: short name used on the command line and in model files
    name: ClassVar[str] = ""
    #: names of the learned arrays that make up the state
    state_arrays: ClassVar[tuple[str, ...]] = ()
    #: model sizes ``tune`` tries, smallest first (a size over budget skips the larger ones)
    search_space: ClassVar[tuple[dict[str, Any], ...]] = ({},)
    #: whether the family learns online: ``partial_fit`` moves it towards new normal data. A family that does
    #: not has no ``partial_fit`` at all (scikit-learn's convention for batch-only estimators).
    online: ClassVar[bool] = False
    #: whether the score judges the level of the input itself (a learned range, a forecast residual around a
    #: trained intercept): the deployed baseline then adapts the likelihood only and never re-centres the
    #: scaler in front of the family, whose moved offsets would erase the very contrast it scores
    #: (:class:`tinywarden.adapt.BaselineAdapter`; the int8 program has no adaptable op for such a family either).
    judges_level: ClassVar[bool] = False
    #: whether the score stops growing beyond the learned range (an isolation forest: a value far outside it is
    #: isolated like the most extreme training value, so 30 standard deviations off can score under the
    #: threshold). The baseline's gate refuses to learn from windows by their score, which is blind to such
    #: a window here, so the deployed baseline adapts the likelihood only (:meth:`keeps_trained_scaler`)
    saturates_out_of_range: ClassVar[bool] = False
    #: whether the score of a scaled input is a distance from the training mean that is 0 at the mean (PCA's
    #: residual, the Gaussian's Mahalanobis distance): the score of a displacement of the baseline (the slow-drift
    #: watch's day-long level) then measures how far it moved in the model's own metric
    #: (:data:`tinywarden.adaptation.WATCH_DISTANCE`)
    scores_displacement: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            REGISTRY[cls.name] = cls

    def keeps_trained_scaler(self) -> bool:
        """Whether the deployed baseline leaves the scaler in front of this detector as trained and adapts the
        likelihood only (:class:`tinywarden.adapt.BaselineAdapter`; the int8 program then has no adaptation
        step): :attr:`judges_level` or :attr:`saturates_out_of_range`."""
        return self.judges_level or self.saturates_out_of_range

    # -- the estimator interface ------------------------------------------------------------
    def fit(self, X: np.ndarray, y: None = None) -> Detector:  # noqa: N803 (sklearn naming)
        raise NotImplementedError

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        raise NotImplementedError

    # -- the int8 path ------------------------------------------------------------------------
    def lower(self, ctx: LoweringContext) -> Lowered:
        """The fitted model as integer ops from the model input to the int32 ``"score"`` tensor.

        A family without an int8 path keeps this default, which says so.
        """
        supported = ", ".join(n for n, c in REGISTRY.items() if c.has_int8_path())
        raise ConfigError(f"detector {self.name!r} has no int8 path (supported: {supported})")

    @classmethod
    def has_int8_path(cls) -> bool:
        return cls.lower is not Detector.lower

    # -- the float graph (ONNX export) ----------------------------------------------------------
    def score_graph(self, g: ScoreGraph, x: str) -> str | None:
        """Add the fitted model's score of the scaled input rows ``x`` (``(n, n_features)``) to ``g``, as
        :meth:`score_samples` computes it; returns the score's name (``(n,)``). A family without a float graph
        keeps this default (None), and the ONNX export refuses it."""
        return None

    @classmethod
    def has_score_graph(cls) -> bool:
        return cls.score_graph is not Detector.score_graph

    @classmethod
    def flash_lower_bound(cls, params: dict[str, Any], n_inputs: int, n_channels: int) -> int:
        """Bytes of int8 constants the model with ``params`` needs at least on ``n_inputs`` model inputs
        (``n_channels`` raw channels), counted before fitting; the quantizer may store more, never less.
        The part every program has (sample quantization, one multiplier per input) is counted by ``tune``."""
        return 0

    @classmethod
    def max_inputs(cls, params: dict[str, Any]) -> int | None:
        """The most model inputs the int8 program of the model with ``params`` takes, or None when its kernels bound
        none: the family's integer arithmetic (an int32 accumulator over every input ...), known before fitting.

        Inputs are counted as :meth:`flash_lower_bound` counts them: window features (channels x features per
        channel) for a feature family, channels for a raw-window one. A deployable pipeline refuses a wider input
        before it fits anything (:meth:`tinywarden.pipeline.Pipeline.check_width`).
        """
        return None

    def state_shapes(self) -> dict[str, Shape]:
        """The shape every state array must have, given ``input_shape_`` and the parameters.

        :meth:`from_state` checks a loaded state against it. Every family declares its own; a family that
        does not cannot be loaded from a model file.
        """
        raise NotImplementedError(f"{type(self).__name__} does not declare its state_shapes()")

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
        if "input_shape_" not in arrays:
            raise ModelFileError(f"detector {cls.name!r}: model file lacks array(s) input_shape_")
        det.input_shape_ = _input_shape(cls.name, det.input_kind, arrays["input_shape_"])
        if det.input_kind == "features":
            det.n_features_in_ = det.input_shape_[0]
        try:
            names, shapes = det._state_names(), det.state_shapes()
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"detector {cls.name!r}: bad parameters in model file ({exc})") from None
        missing = [a for a in names if a not in arrays]
        if missing:
            raise ModelFileError(f"detector {cls.name!r}: model file lacks array(s) {', '.join(missing)}")
        det._check_state({a: np.asarray(arrays[a]) for a in names}, shapes)
        for a in names:
            setattr(det, a, np.asarray(arrays[a]))
        det._restore()
        return det

    def _check_state(self, arrays: dict[str, np.ndarray], shapes: dict[str, Shape]) -> None:
        """Refuse a state whose arrays do not have the ``shapes`` :meth:`state_shapes` declares, or hold NaN/inf."""
        learned: dict[str, tuple[int, str]] = {}
        for a, arr in arrays.items():
            want = shapes[a]
            if arr.ndim != len(want) or not all(_fits(got, d, learned) for got, d in zip(arr.shape, want, strict=True)):
                raise ModelFileError(f"detector {self.name!r}: array {a!r} has shape {arr.shape}, expected "
                                     f"{_show(want, learned)} for input shape {self.input_shape_}")
            for got, d in zip(arr.shape, want, strict=True):
                if isinstance(d, Learned):
                    learned.setdefault(d.name, (got, a))
            if arr.dtype.kind not in "iuf" or (arr.dtype.kind == "f" and not np.isfinite(arr).all()):
                raise ModelFileError(f"detector {self.name!r}: array {a!r} holds NaN, infinity or non-numbers")

    def _state_names(self) -> tuple[str, ...]:
        """Names of the learned arrays; a detector whose layer count is a parameter overrides this."""
        return self.state_arrays

    def _restore(self) -> None:
        """Hook: rebuild derived objects (e.g. a torch module) after :meth:`from_state`."""

    # -- checks ------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "input_shape_") or not all(hasattr(self, a) for a in self._state_names()):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit() first")

    def _check_input(self, X: Any, fitting: bool = False) -> np.ndarray:  # noqa: N803
        """``X`` as a finite float64 array of this detector's input kind (see :func:`validate_input`)."""
        x = validate_input(self, X, self.input_kind, fitting)
        if not fitting and hasattr(self, "input_shape_") and x.shape[1:] != tuple(self.input_shape_):
            name = type(self).__name__
            raise DataError(f"{name} was fitted on shape {tuple(self.input_shape_)}, got {x.shape[1:]}")
        return x

    def __sklearn_tags__(self) -> Tags:
        """Raw-window detectors declare 3-D input, so scikit-learn's checks do not feed them 2-D arrays."""
        tags = super().__sklearn_tags__()
        if self.input_kind == "window":
            tags.input_tags.two_d_array = False
            tags.input_tags.three_d_array = True
        return tags


def _input_shape(name: str, kind: InputKind, stored: np.ndarray) -> tuple[int, ...]:
    """A stored ``input_shape_``: one positive size for feature input, two (window, channels) for raw windows."""
    want = 1 if kind == "features" else 2
    arr = np.asarray(stored)
    if arr.shape != (want,) or arr.dtype.kind not in "iu" or (arr < 1).any():
        raise ModelFileError(f"detector {name!r}: array 'input_shape_' is {arr.tolist()!r}, expected {want} "
                             "positive integer(s)")
    return tuple(int(v) for v in arr)


def _fits(got: int, dim: int | Learned, learned: dict[str, tuple[int, str]]) -> bool:
    if not isinstance(dim, Learned):
        return got == dim
    if dim.name in learned:
        return got == learned[dim.name][0]
    return dim.lo <= got and (dim.hi is None or got <= dim.hi)


def _show(shape: Shape, learned: dict[str, tuple[int, str]]) -> str:
    """A declared shape for a message: learned sizes as bound so far (``3 as in 'centroids_'``) or as ranges."""
    def dim(d: int | Learned) -> str:
        if not isinstance(d, Learned):
            return str(d)
        if d.name in learned:
            return f"{learned[d.name][0]} {d.name} as in {learned[d.name][1]!r}"
        return f"{d.lo}..{'' if d.hi is None else d.hi} {d.name}"
    return "(" + ", ".join(dim(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def sizes(*values: Any) -> tuple[int, ...]:
    """Parameters read as sizes (``operator.index``: a model file's ``"8"`` or ``8.5`` is refused, not rounded)."""
    return tuple(operator.index(v) for v in values)


def validate_input(estimator: BaseEstimator, X: Any, kind: InputKind, fitting: bool) -> np.ndarray:  # noqa: N803
    """``X`` as a finite float64 array of ``kind``, or a :class:`DataError` naming ``estimator`` and the fault.

    Feature input (2-D) goes through scikit-learn's :func:`~sklearn.utils.validation.validate_data`, so the
    estimator sets (when ``fitting``) and checks ``n_features_in_`` and refuses empty, 1-D, sparse, complex,
    NaN and infinite input with scikit-learn's standard messages; raw windows (3-D) follow the same
    :func:`~sklearn.utils.check_array` rules. Fitting needs at least 2 samples. The errors are
    :class:`DataError` (a ValueError) and :class:`DataTypeError` (a TypeError), as scikit-learn callers expect.

    >>> validate_input(make_detector("ewma"), [[1.0, float("nan")]], "features", fitting=False)
    Traceback (most recent call last):
    ...
    tinywarden.errors.DataError: EWMAZScore: Input X contains NaN.
    """
    name = type(estimator).__name__
    checks: dict[str, Any] = {"dtype": np.float64, "ensure_min_samples": 2 if fitting else 1}
    try:
        if kind == "features":
            x = validate_data(estimator, X, reset=fitting, **checks)
        else:
            x = check_array(X, allow_nd=True, estimator=estimator, input_name="X", **checks)
    # the first line only: some of scikit-learn's messages go on to print the whole array
    except TypeError as exc:
        raise DataTypeError(f"{name}: {str(exc).strip().splitlines()[0]}") from None
    except ValueError as exc:
        raise DataError(f"{name}: {str(exc).strip().splitlines()[0]}") from None
    want = 2 if kind == "features" else 3
    if x.ndim != want:
        raise DataError(f"{name} expects a {want}-D array, got shape {x.shape}")
    return x


def check_param(name: str, value: Any, ok: bool, expected: str) -> None:
    """One standard message for an out-of-range parameter, checked at ``fit`` time."""
    if not ok:
        raise ConfigError(f"parameter {name}={value!r} is invalid: expected {expected}")


def make_detector(name: str, **params: Any) -> Detector:
    """A new, unfitted detector by its short name (a key of :data:`REGISTRY`, e.g. ``ewma`` or ``pca``).

    >>> make_detector("kmeans", n_clusters=4)
    KMeansDistance(n_clusters=4)
    """
    if name not in REGISTRY:
        raise ConfigError(f"unknown detector {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**params)
