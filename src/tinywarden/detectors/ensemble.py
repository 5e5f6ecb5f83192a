"""An ensemble of two or three feature families sharing one feature stage, fused on a calibrated scale.

Each member is fitted on the same window features; its raw scores are put on a common scale by dividing by
its own high quantile (:data:`CALIBRATION_QUANTILE`) of the scores of its training windows, so "1" means
"as unusual as the member's rarest normal windows" for every member whatever its units (a squared
reconstruction error, a Mahalanobis distance, a path length ...). The ensemble's score is the mean of the
members' calibrated scores; the pipeline then calibrates its threshold on that one score as on any family's.

On the device the features are computed once; each member's integer ops follow (tensors prefixed ``m0_``,
``m1_`` ...), and one score kernel (``fuse<N>_s32``, registered here) requantizes each member's int32 score by
its calibration (a Q31 multiplier and shift, CMSIS-NN's ``arm_nn_requantize``) and sums them: one module,
the same ``tw_`` interface, bit-exact with :func:`tinywarden.program.run_int8`.

``members`` is a string: families with their parameters, joined by ``+``, e.g.
``"pca(n_components=16)+kmeans(n_clusters=8)"`` (scalar parameters only, as Python literals).

>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(500, 6))
>>> det = Ensemble("pca(n_components=2)+gaussian(n_components=2)").fit(x)
>>> s = det.score_samples(np.r_[x[:3], x[:1] + 8.0])
>>> bool(s[3] > 5 * s[:3].max())
True
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from tinywarden.arith import quantize_multiplier, requantize, round_half_away
from tinywarden.detectors.base import REGISTRY, Detector, Learned, ScoreGraph, Shape
from tinywarden.detectors.lowering import Lowered, LoweringContext
from tinywarden.errors import ConfigError
from tinywarden.kernels import KERNELS, Op, ProgramView, TensorSpec, score_kernel, score_total
from tinywarden.kernels.base import const_shape, int_attr, requant_shifts, require

#: Each member's scores are divided by this quantile of its scores on its training windows.
CALIBRATION_QUANTILE = 0.99
#: Members an ensemble may hold (one fusion kernel is registered per count).
MAX_MEMBERS = 3
#: On the device, a member's calibrated score of 1 is this many integer units before the sum.
FUSED_UNIT = 1 << 12
#: Before fusion, a member's calibration quantile is at least this many integer units (below twice as many) after
#: its score shift: fine enough to rank normal windows, coarse enough that its int32 score saturates only beyond
#: 2**31 / (2 * MEMBER_UNIT) times that quantile, as far as the fused score itself reaches.
MEMBER_UNIT = FUSED_UNIT

def parse_members(spec: str) -> tuple[tuple[str, dict[str, Any]], ...]:
    """``"pca(n_components=16)+kmeans(n_clusters=8)"`` -> ``(("pca", {"n_components": 16}), ("kmeans", ...))``.

    Each member is a call with keyword arguments whose values are Python literals. Raises
    :class:`ConfigError` for a malformed spec, an unknown family, a raw-window family, or a count outside
    2..:data:`MAX_MEMBERS`.

    >>> parse_members("pca(n_components=8)+dense_ae(hidden=(8,))")
    (('pca', {'n_components': 8}), ('dense_ae', {'hidden': (8,)}))
    """
    if not isinstance(spec, str):
        raise ConfigError(f"ensemble members {spec!r}: expected a string such as 'pca(n_components=8)+kmeans()'")
    out = []
    for part in spec.split("+"):
        try:
            call = ast.parse(part.strip(), mode="eval").body
            if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or call.args:
                raise ValueError("not a call with keyword arguments")
            fam = call.func.id
            params = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg is not None}
            if len(params) != len(call.keywords):
                raise ValueError("** arguments")
        except (SyntaxError, ValueError) as exc:
            raise ConfigError(f"ensemble member {part.strip()!r}: expected family(param=literal, ...) "
                              f"({exc})") from None
        cls = REGISTRY.get(fam)
        if cls is None or cls is Ensemble:
            known = ", ".join(n for n, c in REGISTRY.items() if c is not Ensemble)
            raise ConfigError(f"ensemble member {fam!r} is not a family (known: {known})")
        if cls.input_kind != "features":
            raise ConfigError(f"ensemble member {fam!r} reads the raw window; members share the feature stage")
        out.append((fam, params))
    if not 2 <= len(out) <= MAX_MEMBERS:
        raise ConfigError(f"an ensemble holds 2 to {MAX_MEMBERS} members, got {len(out)} in {spec!r}")
    return tuple(out)


def member_spec(members: list[tuple[str, dict[str, Any]]]) -> str:
    """The ``members`` string of families with their parameters (the inverse of :func:`parse_members`).

    >>> member_spec([("pca", {"n_components": 8}), ("kmeans", {})])
    'pca(n_components=8)+kmeans()'
    """
    return "+".join(f"{fam}({', '.join(f'{k}={v!r}' for k, v in sorted(p.items()))})" for fam, p in members)


class Ensemble(Detector):
    """The mean of 2-3 feature families' scores, each divided by its own high quantile on normal data.

    ``members``: see :func:`parse_members`. Learned: ``scales_`` (one per member) and every member's own
    state, stored under ``m<i>_<name>``.
    """

    name: ClassVar[str] = "ensemble"
    search_space: ClassVar[tuple[dict[str, Any], ...]] = (
        {"members": "pca(n_components=8)+kmeans(n_clusters=8)"},
        {"members": "pca(n_components=16)+gaussian(n_components=8)"},
    )

    def __init__(self, members: str = "pca(n_components=8)+kmeans(n_clusters=8)"):
        self.members = members

    # -- members ----------------------------------------------------------------------------------
    def keeps_trained_scaler(self) -> bool:
        """The members share the scaler: it stays as trained when any member needs it to."""
        return any(d.keeps_trained_scaler() for d in self.member_detectors())

    def member_detectors(self) -> list[Detector]:
        """The members as detectors (fitted when the ensemble is), built once from ``members``."""
        cached = self.__dict__.get("_built")
        if cached is None or cached[0] != self.members:
            cached = (self.members, [REGISTRY[f](**p) for f, p in parse_members(self.members)])
            self.__dict__["_built"] = cached
        return cached[1]

    def _state_names(self) -> tuple[str, ...]:
        names = ["scales_"]
        for i, det in enumerate(self.member_detectors()):
            names += [f"m{i}_{a}" for a in det._state_names()]
        return tuple(names)

    def state_shapes(self) -> dict[str, Shape]:
        dets = self.member_detectors()
        shapes: dict[str, Shape] = {"scales_": (len(dets),)}
        for i, det in enumerate(dets):
            det.input_shape_ = self.input_shape_
            for a, shape in det.state_shapes().items():
                shapes[f"m{i}_{a}"] = tuple(Learned(f"m{i}.{d.name}", d.lo, d.hi) if isinstance(d, Learned) else d
                                            for d in shape)
        return shapes

    def _restore(self) -> None:
        """Hand each member its arrays back (after :meth:`from_state`)."""
        for i, det in enumerate(self.member_detectors()):
            det.input_shape_ = self.input_shape_
            det.n_features_in_ = self.input_shape_[0]
            for a in det._state_names():
                setattr(det, a, np.asarray(getattr(self, f"m{i}_{a}")))
            det._restore()

    # -- the estimator interface ----------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: None = None) -> Ensemble:  # noqa: N803
        dets = self.member_detectors()
        x = self._check_input(X, fitting=True)
        scales = []
        for i, det in enumerate(dets):
            det.fit(x)
            scales.append(_scale(det.score_samples(x)))
            for a, v in det.state().items():
                if a != "input_shape_":
                    setattr(self, f"m{i}_{a}", v)
        self.input_shape_ = x.shape[1:]
        self.scales_ = np.array(scales)
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        self._check_fitted()
        x = self._check_input(X)
        dets = self.member_detectors()
        return np.mean([det.score_samples(x) / s for det, s in zip(dets, self.scales_, strict=True)], axis=0)

    def score_graph(self, g: ScoreGraph, x: str) -> str | None:
        """Each member's own graph (its names under ``m<i>/``), its score divided by its scale, then their mean;
        None when a member has no graph."""
        self._check_fitted()
        dets = self.member_detectors()
        if not all(d.has_score_graph() for d in dets):
            return None
        parts = []
        for i, (det, scale) in enumerate(zip(dets, self.scales_, strict=True)):
            score = det.score_graph(_Prefixed(g, f"m{i}/"), x)
            assert score is not None  # has_score_graph
            parts.append(g.node("Div", [score, g.const(f"m{i}/scale", np.asarray(scale))], f"m{i}/calibrated"))
        total = g.node("Sum", parts, "ensemble/total")
        return g.node("Div", [total, g.const("ensemble/n", np.asarray(float(len(parts))))], "score")

    # -- the int8 path ----------------------------------------------------------------------------------
    def lower(self, ctx: LoweringContext) -> Lowered:
        """Every member's lowering (tensors renamed ``m<i>_...``, each score op with its own shift), then the
        fusion kernel, whose multipliers map each member's integer score at its calibration quantile on the
        training windows to :data:`FUSED_UNIT`."""
        self._check_fitted()
        dets = self.member_detectors()
        a, b = ctx.features()
        feats = round_half_away((ctx.mu + ctx.sigma * ctx.fit_scaled - b) / a).astype(np.int64)
        low = Lowered()
        members, mults, shifts = [], [], []
        for i, det in enumerate(dets):
            part = det.lower(ctx)
            names = {t.name: f"m{i}_{t.name}" for t in part.tensors} | {"score": f"m{i}_score"}
            low.tensors += [TensorSpec(names[t.name], t.dtype, t.shape) for t in part.tensors]
            low.tensors.append(TensorSpec(f"m{i}_score", "int32", (1,)))
            ops = [Op(op.kind, tuple(names.get(s, s) for s in op.src), names.get(op.dst, op.dst), op.attrs, op.consts)
                   for op in part.ops]
            ops[-1], scores = _with_member_shift(ops, feats)
            low.ops += ops
            m, sh = quantize_multiplier(FUSED_UNIT / _scale(scores.astype(np.float64), floor=1.0))
            members.append(f"m{i}_score")
            mults.append(m)
            shifts.append(sh)
        low.ops.append(Op(f"fuse{len(dets)}_s32", tuple(members), "score", {"shift": 0},
                          {"multiplier": np.array(mults, dtype=np.int32), "shift": np.array(shifts, dtype=np.int8)}))
        low.info["score_unit"] = 1.0 / (len(dets) * FUSED_UNIT)
        return low

    @classmethod
    def flash_lower_bound(cls, params: dict[str, Any], n_inputs: int, n_channels: int) -> int:
        spec = {**cls().get_params(), **params}["members"]
        # every member's own bound, plus its own requantization of the features (counted once by tune)
        return sum(REGISTRY[f].flash_lower_bound(p, n_inputs, n_channels) + 4 * n_inputs
                   for f, p in parse_members(spec)) - 4 * n_inputs

    @classmethod
    def max_inputs(cls, params: dict[str, Any]) -> int | None:
        spec = {**cls().get_params(), **params}["members"]
        limits = [n for f, p in parse_members(spec) if (n := REGISTRY[f].max_inputs(p)) is not None]
        return min(limits, default=None)  # every member reads every feature


def _scale(scores: np.ndarray, floor: float = 1e-12) -> float:
    """A member's calibration: the :data:`CALIBRATION_QUANTILE` of its normal scores, or their largest value
    when that quantile is zero (a rule-based member, silent on almost all of normal), never below ``floor``."""
    q = float(np.quantile(scores, CALIBRATION_QUANTILE))
    return max(q if q > 0 else float(np.max(scores)), floor)


def _with_member_shift(ops: list[Op], feats: np.ndarray) -> tuple[Op, np.ndarray]:
    """A member's score op with the right shift that leaves its calibration quantile on ``feats`` (the training
    windows' integer features) in ``[MEMBER_UNIT, 2 * MEMBER_UNIT)`` integer units, and the member's integer
    scores on ``feats``.

    The shift follows the quantile, not the largest normal total: a shift that only kept the largest normal
    total some fixed factor below the int32 limit let a member whose rarest normal windows score far above its
    quantile saturate a few hundred quantiles out, so that on a test split far outside the training range
    (SMD machine-3-4) most windows fused to one value (float ROC AUC 0.974, int8 0.556)."""
    env: dict[str, np.ndarray] = {"features": feats}
    for op in ops[:-1]:
        env[op.dst] = KERNELS[op.kind].fn([env[s] for s in op.src], op)
    last = ops[-1]
    quantile = int(_scale(score_total([env[s] for s in last.src], last).astype(np.float64), floor=1.0))
    shift = max(0, quantile.bit_length() - MEMBER_UNIT.bit_length())
    last = Op(last.kind, last.src, last.dst, {**last.attrs, "shift": shift}, last.consts)
    return last, KERNELS[last.kind].fn([env[s] for s in last.src], last)[:, 0]


# -- the fusion kernel ---------------------------------------------------------------------------------
def _fuse_total(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    m, sh = op.consts["multiplier"], op.consts["shift"]
    total = np.zeros(len(srcs[0]), dtype=np.int64)
    for j, s in enumerate(srcs):
        total += requantize(np.asarray(s, dtype=np.int64)[:, 0], int(m[j]), int(sh[j]))
    return total


def _fuse_check(op: Op, p: ProgramView) -> None:
    n = len(op.src)
    int_attr(op, "shift", 0, 62)
    for s in op.src:
        require(p.tensor(s).dtype == "int32" and p.tensor(s).size == 1, f"fusion input {s!r} must be one int32 score")
    require(const_shape(op, "multiplier") == (n,) and const_shape(op, "shift") == (n,),
            f"fusion needs one multiplier and shift per member ({n})")
    require(bool((np.asarray(op.consts["multiplier"]) >= 0).all()), "fusion multipliers must be non-negative")
    requant_shifts(op, "shift")


def _fuse_template(n: int) -> str:
    args = ", ".join(f"s->t_${{src{j}}}" for j in range(n))
    params = ", ".join(f"const int32_t *m{j}" for j in range(n))
    adds = "\n".join(f"    total += tw_requantize(m{j}[0], multiplier[{j}], shift[{j}]);" for j in range(n))
    return f"""
//@call: tw_fuse{n}_s32({args}, ${{c_multiplier}}, ${{c_shift}}, ${{shift}}, s->t_${{dst}});
//@requires: arith score
/* Ensemble of {n}: each member's int32 score requantized to the common calibrated scale (CMSIS-NN
 * arm_nn_requantize), summed: score = sat32((sum_j requantize(m_j, multiplier[j], shift[j])) >> shift_out).
 * Range: member scores >= 0, multiplier in [0, INT32_MAX], shift in [-31, 30], shift_out in [0, 62]. */
static void tw_fuse{n}_s32({params}, const int32_t *multiplier, const int8_t *shift,
                          int32_t shift_out, int32_t *score)
{{
    int64_t total = 0;
{adds}
    score[0] = tw_score_from_total(total, shift_out);
}}
"""


for _n in range(2, MAX_MEMBERS + 1):
    score_kernel(f"fuse{_n}_s32", _fuse_total, ("int32",) * _n, {"multiplier": "int32", "shift": "int8"},
                 f"score = sat32(sum of {_n} requantized member scores >> shift)", _fuse_template(_n),
                 check=_fuse_check)

__all__ = ["Ensemble", "member_spec", "parse_members"]


class _Prefixed:
    """A member's view of the ensemble's :class:`ScoreGraph`: the names it creates under ``prefix`` (members of
    one family would otherwise collide); its extra outputs are not the ensemble's."""

    def __init__(self, g: ScoreGraph, prefix: str) -> None:
        self.g, self.prefix = g, prefix

    def const(self, name: str, value: np.ndarray) -> str:
        return self.g.const(self.prefix + name, value)

    def node(self, op: str, inputs: Sequence[str], output: str, more: Sequence[str] = (), **attrs: Any) -> str:
        return self.g.node(op, inputs, self.prefix + output, [self.prefix + m for m in more], **attrs)

    def output(self, name: str, width: int) -> None:
        pass
