"""One-class SVM within a microcontroller budget: RBF kernel by random Fourier features or <= 32 support vectors."""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar, Literal

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.kernel_approximation import RBFSampler
from sklearn.linear_model import SGDOneClassSVM
from sklearn.svm import OneClassSVM

from tinywarden.arith import INT8_MAX, INT16_MAX, quantize_multiplier, round_half_away
from tinywarden.detectors.base import Detector, Learned, ScoreGraph, Shape, check_param, graph_squared_distances, sizes
from tinywarden.detectors.lowering import Lowered, LoweringContext, distance_input
from tinywarden.errors import ConfigError, DataError
from tinywarden.kernels import Op
from tinywarden.kernels.rbf_kernel_sum_s16 import RBF_MAX_SV_SHIFT

MAX_SUPPORT_VECTORS = 32
#: Rows an exact RBF one-class SVM is trained on (its cost grows with the square of the rows).
RBF_FIT_ROWS = 2048


#: The int8 path's RBF kernel 2**-u reads a table of 2**RBF_FRAC_BITS int16 Q15 entries (512 B at 8).
RBF_FRAC_BITS = 8


def int8_support_vectors(steps: np.ndarray) -> tuple[np.ndarray, int]:
    """Support vectors given in int16 input steps as int8 steps of ``2**sv_shift`` input steps, with the
    smallest ``sv_shift`` that keeps every one in [-127, 127]: ``(int8 vectors, sv_shift)``. Half the flash
    of int16 vectors; the rounding is at most ``2**(sv_shift - 1)`` input steps per feature."""
    top = float(np.abs(steps).max()) if steps.size else 0.0
    shift = 0
    while shift < RBF_MAX_SV_SHIFT and round_half_away(top / 2.0**shift) > INT8_MAX:
        shift += 1
    q = np.clip(round_half_away(steps / 2.0**shift), -INT8_MAX, INT8_MAX)
    return q.astype(np.int8), shift


class BudgetOneClassSVM(Detector):
    """One-class SVM with an RBF kernel ``exp(-gamma |x - y|^2)`` whose size is bounded up front.

    ``kernel="rbf"``: scikit-learn's exact :class:`~sklearn.svm.OneClassSVM` on at most
    ``RBF_FIT_ROWS`` training rows (evenly spaced in time), with ``nu`` set so it needs about
    ``max_support_vectors`` support vectors; if it still needs more, the ones with the largest dual
    coefficients are kept. Score = ``offset - sum_i alpha_i k(x, sv_i)``; ``n_params_ ~ m (F + 1)``.

    ``kernel="rff"``: ``n_components`` random Fourier features ``sqrt(2/D) cos(x W + b)``
    (:class:`~sklearn.kernel_approximation.RBFSampler`) feeding a linear
    :class:`~sklearn.linear_model.SGDOneClassSVM`. Score = ``offset - coef . phi(x)``;
    ``n_params_ = D (F + 2) + 1``, so it is the cheaper choice only for few features.

    ``gamma=None`` uses ``1 / (F * var(X))`` (scikit-learn's ``"scale"``). Higher score = more anomalous.

    >>> rng = np.random.default_rng(0)
    >>> det = BudgetOneClassSVM(max_support_vectors=8).fit(rng.normal(size=(300, 2)))
    >>> len(det.support_vectors_) <= 8
    True
    >>> bool(det.score_samples(np.array([[4.0, 4.0]]))[0] > det.score_samples(np.array([[0.0, 0.0]]))[0])
    True
    """

    name: ClassVar[str] = "ocsvm"
    search_space: ClassVar[tuple[dict[str, Any], ...]] = ({"max_support_vectors": 16}, {"max_support_vectors": 32})

    def __init__(
        self,
        kernel: Literal["rbf", "rff"] = "rbf",
        gamma: float | None = None,
        max_support_vectors: int = 32,
        n_components: int = 64,
        nu: float = 0.05,
        random_state: int = 0,
    ):
        self.kernel = kernel
        self.gamma = gamma
        self.max_support_vectors = max_support_vectors
        self.n_components = n_components
        self.nu = nu
        self.random_state = random_state

    def _state_names(self) -> tuple[str, ...]:
        if self.kernel == "rff":
            return ("rff_weights_", "rff_offset_", "coef_", "offset_")
        return ("support_vectors_", "dual_coef_", "gamma_", "offset_")

    def state_shapes(self) -> dict[str, Shape]:
        f = self.input_shape_[0]
        if self.kernel == "rff":
            (d,) = sizes(self.n_components)
            return {"rff_weights_": (f, d), "rff_offset_": (d,), "coef_": (d,), "offset_": (1,)}
        m = Learned("support vectors", 1, sizes(self.max_support_vectors)[0])
        return {"support_vectors_": (m, f), "dual_coef_": (m,), "gamma_": (1,), "offset_": (1,)}

    def _validate(self) -> None:
        check_param("kernel", self.kernel, self.kernel in ("rbf", "rff"), "'rbf' or 'rff'")
        g = self.gamma
        check_param("gamma", g, g is None or (isinstance(g, int | float) and g > 0), "None or a positive float")
        m = self.max_support_vectors
        check_param("max_support_vectors", m, isinstance(m, int) and 1 <= m <= MAX_SUPPORT_VECTORS,
                    f"an integer in [1, {MAX_SUPPORT_VECTORS}]")
        d = self.n_components
        check_param("n_components", d, isinstance(d, int) and d >= 1, "an integer >= 1")
        check_param("nu", self.nu, isinstance(self.nu, float) and 0.0 < self.nu <= 1.0, "a float in (0, 1]")

    def fit(self, X: np.ndarray, y: None = None) -> BudgetOneClassSVM:  # noqa: N803
        self._validate()
        x = self._check_input(X, fitting=True)
        var = float(x.var())
        gamma = float(self.gamma) if self.gamma is not None else 1.0 / (x.shape[1] * (var if var > 0 else 1.0))
        self.input_shape_ = x.shape[1:]
        if self.kernel == "rff":
            self._fit_rff(x, gamma)
        else:
            self._fit_rbf(x, gamma)
        return self

    def _fit_rff(self, x: np.ndarray, gamma: float) -> None:
        sampler = RBFSampler(gamma=gamma, n_components=self.n_components, random_state=self.random_state).fit(x)
        svm = SGDOneClassSVM(nu=self.nu, random_state=self.random_state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            svm.fit(sampler.transform(x))
        self.rff_weights_ = sampler.random_weights_.astype(np.float64)
        self.rff_offset_ = sampler.random_offset_.astype(np.float64)
        self.coef_ = svm.coef_.astype(np.float64).ravel()
        self.offset_ = np.asarray(svm.offset_, dtype=np.float64).reshape(1)

    def _fit_rbf(self, x: np.ndarray, gamma: float) -> None:
        # Repeated windows (a flat-lining metric) add nothing to the boundary and can leave libsvm with
        # non-finite dual coefficients: fit on the distinct rows, in time order.
        _, first = np.unique(x, axis=0, return_index=True)
        distinct = x[np.sort(first)]
        self.gamma_ = np.asarray([gamma], dtype=np.float64)
        if len(distinct) == 1:
            # one point learned: the solution libsvm would give, 1 - k(x, that point), 0 on it
            self.support_vectors_ = distinct.astype(np.float64)
            self.dual_coef_ = np.ones(1)
            self.offset_ = np.ones(1)
            return
        rows = distinct[np.linspace(0, len(distinct) - 1, min(len(distinct), RBF_FIT_ROWS)).astype(np.int64)]
        budget = self.max_support_vectors
        # A one-class SVM has at least nu * n support vectors; aim a little under the budget.
        # (nu = 1 makes every row a bound support vector, which libsvm cannot always solve for)
        nu = min(0.95, max(0.8 * budget / len(rows), 1.0 / len(rows)))
        try:
            svm = OneClassSVM(kernel="rbf", gamma=gamma, nu=nu).fit(rows)
        except ValueError as exc:  # libsvm's numerical failure on degenerate data
            raise DataError(f"one-class SVM could not be fitted on these windows: {exc}") from None
        alpha = svm.dual_coef_.ravel()
        keep = np.sort(np.argsort(-alpha, kind="stable")[:budget])
        self.support_vectors_ = svm.support_vectors_[keep].astype(np.float64)
        self.dual_coef_ = alpha[keep].astype(np.float64)
        self.offset_ = np.asarray(svm.offset_, dtype=np.float64).reshape(1)

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        self._check_fitted()
        x = self._check_input(X)
        if self.kernel == "rff":
            phi = np.sqrt(2.0 / len(self.rff_offset_)) * np.cos(x @ self.rff_weights_ + self.rff_offset_)
            return self.offset_[0] - phi @ self.coef_
        sv = self.support_vectors_
        d2 = (x * x).sum(1)[:, None] - 2.0 * x @ sv.T + (sv * sv).sum(1)[None, :]
        k = np.exp(-self.gamma_[0] * np.maximum(d2, 0.0))
        return self.offset_[0] - k @ self.dual_coef_

    def score_graph(self, g: ScoreGraph, x: str) -> str:
        """``offset - sum_i a_i k(x, sv_i)`` with the RBF kernel, or the random Fourier features' linear model."""
        self._check_fitted()
        if self.kernel == "rff":
            phi = g.node("Cos", [g.node("Add", [g.node("MatMul", [x, g.const("ocsvm/rff_weights", self.rff_weights_)],
                                                       "ocsvm/projected"),
                                                g.const("ocsvm/rff_offset", self.rff_offset_)], "ocsvm/phase")],
                         "ocsvm/cos")
            phi = g.node("Mul", [phi, g.const("ocsvm/rff_gain", np.array(np.sqrt(2.0 / len(self.rff_offset_)),
                                                                          np.float32))], "ocsvm/features")
            coef = self.coef_
        else:
            d2 = graph_squared_distances(g, x, self.support_vectors_, "ocsvm")
            d2 = g.node("Max", [d2, g.const("ocsvm/zero", np.zeros((), np.float32))], "ocsvm/clipped")
            gamma = g.const("ocsvm/minus_gamma", np.array(-self.gamma_[0], np.float32))
            phi = g.node("Exp", [g.node("Mul", [d2, gamma], "ocsvm/exponent")], "ocsvm/kernel")
            coef = self.dual_coef_
        total = g.node("MatMul", [phi, g.const("ocsvm/coef", np.asarray(coef, np.float64).reshape(-1))], "ocsvm/sum")
        return g.node("Sub", [g.const("ocsvm/offset", np.asarray(self.offset_[0])), total], "score")

    def lower(self, ctx: LoweringContext) -> Lowered:
        """As k-means, int16 inputs and support vectors on one scale, the support vectors stored as int8 steps of
        ``2**sv_shift`` input steps (:func:`int8_support_vectors`); ``exp(-gamma d2)`` is ``2**-u`` from a Q15
        table of ``2**RBF_FRAC_BITS`` entries (random Fourier features would need a cosine each)."""
        self._check_fitted()
        if self.kernel != "rbf":
            raise ConfigError("the int8 path of ocsvm needs kernel='rbf' (support vectors and an exp2 table); "
                              "kernel='rff' would need a cosine per random feature: train with kernel='rbf'")
        low = Lowered()
        q_x, _ = distance_input(ctx, self.support_vectors_, low)
        svq, sv_shift = int8_support_vectors(self.support_vectors_ / q_x.scale)
        alpha = self.dual_coef_
        # exp(-gamma d2) = 2**-u with u = gamma log2(e) d2, in Q RBF_FRAC_BITS
        real = float(self.gamma_[0]) * q_x.scale**2 * math.log2(math.e) * 2.0**RBF_FRAC_BITS
        pre = int(min(max(0, math.floor(math.log2(0.25 / real))), 62))
        mult, sh = quantize_multiplier(real * 2.0**pre)
        steps = np.arange(2**RBF_FRAC_BITS) / 2.0**RBF_FRAC_BITS
        table = np.minimum(round_half_away(32768.0 * 2.0**-steps), INT16_MAX).astype(np.int16)
        top_alpha = float(alpha.max()) if alpha.max() > 0 else 1.0
        # a Q15 table entry shifted right by 15 or more is 0: from there on, rank by the nearest distance
        attrs = {"frac_bits": RBF_FRAC_BITS, "tail_from": 15 << RBF_FRAC_BITS, "sv_shift": sv_shift, "shift": 0}
        low.ops.append(Op("rbf_kernel_sum_s16", ("input",), "score", attrs, {
            "support_vectors": svq,
            "alpha": np.clip(round_half_away(alpha / top_alpha * INT16_MAX), 0, INT16_MAX).astype(np.int16),
            "exp2": table, "pre_shift": np.array([pre], dtype=np.int32),
            "multiplier": np.array([mult], dtype=np.int32), "shift": np.array([sh], dtype=np.int8)}))
        low.info["input_scale"] = q_x.scale
        return low

    @classmethod
    def flash_lower_bound(cls, params: dict[str, Any], n_inputs: int, n_channels: int) -> int:
        return int({**cls().get_params(), **params}["max_support_vectors"]) * n_inputs
