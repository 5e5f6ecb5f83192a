"""The light runtime: a model file's int8 program scored the way the device does, with numpy alone.

A gateway that only runs the agent needs no training stack. :func:`load_model` reads model-file bytes
and, when the file holds an int8 program (``train`` stores one for every detector whose features
support it), returns an :class:`Int8Model`: the program interpreted by :class:`~tinywarden.program.Int8Stream`
(the bit-exact twin of the generated C), the fail-safe guard's bounds (:mod:`tinywarden.guard`), and
the program's own integer likelihood step (the generated C's ``tw_confidence``). Nothing here imports the
detector families, scikit-learn, torch or matplotlib; only a model file without an int8 program loads
the float :class:`~tinywarden.pipeline.Pipeline` (and with it the training stack), as before.

Baseline adaptation: with a policy's ``[adaptation]`` enabled, the scorer adapts the program's feature
scaling with the integer step the generated C runs (:mod:`tinywarden.kernels.adapt_q`, inside
:class:`~tinywarden.program.Int8Stream`), so the agent and a device exported with the same policy agree
bit for bit; :class:`Int8Adapter` reports it to the agent as :class:`tinywarden.adapt.BaselineAdapter`
does for the float pipeline. A program without the step (a family that reads the raw window, a model
file written before the step existed) keeps its trained baseline.

Scores and threshold are the program's int32 score and integer threshold; the response policy's
margins are relative to the threshold, so they mean the same on either scale. A window that holds a
NaN or infinite sample scores NaN (the C code would read it as 0): the agent treats it as a model
fault, as it does on the float path, and the fail-safe guard cannot judge it either.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tinywarden.adapt import AdaptStep
from tinywarden.errors import ConfigError, ModelFileError
from tinywarden.guard import GuardVerdict, judge_bounds
from tinywarden.kernels.adapt_q import G_ONE, AdaptQState
from tinywarden.kernels.base import Op
from tinywarden.kernels.likelihood_q import LikelihoodQStream
from tinywarden.modelfile import GUARD_HEADER_KEY, decode
from tinywarden.program import (
    INT8_HEADER_KEY,
    Int8Stream,
    Program,
    adaptation_params,
    from_model_file,
    quantize_samples,
)

if TYPE_CHECKING:
    from tinywarden.adapt import Adaptation
    from tinywarden.pipeline import Pipeline

__all__ = ["STATE_FORMAT", "GuardBounds", "Int8Adapter", "Int8Model", "Int8Scorer", "ProgramLikelihood", "load_model"]

_GUARD_ARRAYS = ("lo_", "hi_", "rate_")


@dataclass(frozen=True)
class GuardBounds:
    """The fail-safe guard's learned bounds, per channel, for windows of ``input_shape_``."""

    lo_: np.ndarray
    hi_: np.ndarray
    rate_: np.ndarray
    input_shape_: tuple[int, int]


class Int8Scorer:
    """Push raw samples; every ``stride`` samples get ``(score, raw_flag, alarm)``, as
    :class:`~tinywarden.pipeline.StreamingScorer` does, from the int8 program (adapting its baseline as the
    C does when ``adaptation`` is enabled and the program has the step)."""

    def __init__(self, program: Program, adaptation: Adaptation | None = None) -> None:
        self.program = program
        self.stream = Int8Stream(program, adaptation)
        self.finite: deque[bool] = deque(maxlen=program.window)
        #: the adapted op's integer input of the last window (None without adaptation)
        self.last_input: np.ndarray | None = None

    def push(self, sample: np.ndarray | Sequence[float]) -> tuple[float, bool, bool] | None:
        x = np.asarray(sample, dtype=np.float64)
        self.finite.append(bool(np.isfinite(x).all()))
        out = self.stream.push(x)
        if out is None:
            return None
        score, alarm = out
        if self.stream.adapter is not None:
            self.last_input = self.stream.last_inputs
        if not all(self.finite):
            return float("nan"), False, bool(alarm)
        return float(score), score > self.program.threshold, bool(alarm)

    def reset(self) -> None:
        self.stream.reset()
        self.finite.clear()


class ProgramLikelihood:
    """The int8 program's likelihood step as the agent uses a likelihood: the confidence the device computes.

    ``update`` takes the program's integer score and returns its Q15 confidence as a float in [0, 1]
    (a non-finite score gives NaN and changes nothing, as the float likelihood does); ``drift`` is how far
    the running mean has moved from the fitted one, in fitted standard deviations.
    """

    def __init__(self, op: Op, program: Program | None = None) -> None:
        self.op = op
        self.program = program
        self.stream = LikelihoodQStream(op)

    def fresh(self) -> ProgramLikelihood:
        return ProgramLikelihood(self.op, self.program)

    def update(self, score: float, rows: np.ndarray | Sequence[Sequence[float]] | None = None) -> float:
        """The window's confidence; ``rows`` (the raw samples the window adds) go to the value record first,
        quantized as the device quantizes them (a program without the record, or no ``rows``: nothing)."""
        if rows is not None and self.program is not None and self.stream.values:
            self.stream.observe_q(quantize_samples(self.program, np.asarray(rows, dtype=np.float64).reshape(
                -1, self.program.n_channels)))
        if not np.isfinite(score):
            self.stream.vnew = 0  # as the float likelihood: a NaN window reports NaN, its samples still grow the range
            return float("nan")
        return self.stream.push(int(score)) / 32768.0

    def drift(self) -> float:
        fitted_mean, fitted_var = int(self.op.attrs["mean"]), int(self.op.attrs["var"])
        return abs(self.stream.mean - fitted_mean) / 65536.0 / max(float(np.sqrt(fitted_var)), 1.0)


class Int8Model:
    """What the agent needs of a model, from a model file's int8 program (module docstring).

    It answers the same questions as a loaded :class:`~tinywarden.pipeline.Pipeline` does for the agent
    (``channels_``, ``window``, ``stride``, ``threshold_``, :meth:`stream`, :meth:`judge_window`,
    ``likelihood_``, ``guard_``), so the agent runs either.
    """

    runtime = "int8"

    def __init__(self, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray], source: str = "<model>") -> None:
        section = header[INT8_HEADER_KEY]
        if not isinstance(section, Mapping):
            raise ModelFileError(f"{source}: malformed int8 program (not an object)")
        self.program = from_model_file(section, arrays, source)
        p = self.program
        self.header_ = dict(header)
        self.channels_: tuple[str, ...] = p.channels
        self.window, self.stride, self.k, self.n = p.window, p.stride, p.k, p.n
        self.threshold_ = float(p.threshold)
        self.features: tuple[str, ...] = tuple(p.info.get("features", ()))
        self.input_kind = "features" if self.features else "window"
        feat = next((op for op in p.ops if op.kind == "features_s16"), None)
        #: crossings of the trained mean (its float level) or, without one, of each block's own mean
        self.crossings_level = (np.asarray(p.info["crossings_level"], dtype=np.float64)
                                if feat is not None and "level" in feat.consts else None)
        self.crossings_block = None if self.crossings_level is not None else (
            int(feat.attrs.get("block", p.window)) if feat is not None else p.window)
        self.offset_ = np.asarray(arrays.get("scaler/offset", np.zeros(0)), dtype=np.float64)
        self.scale_ = np.asarray(arrays.get("scaler/scale", np.ones(0)), dtype=np.float64)
        self.likelihood_ = None if p.likelihood is None else ProgramLikelihood(p.likelihood, p)
        self.guard_, self.guard_note_ = _guard(header, arrays, p, source)

    def stream(self, adaptation: Adaptation | None = None) -> Int8Scorer:
        """A one-sample-at-a-time scorer of the program (adapting under ``adaptation``, if enabled)."""
        return Int8Scorer(self.program, adaptation)

    def judge_window(self, window: np.ndarray) -> GuardVerdict:
        """The fail-safe guard's verdict on one raw window (as :meth:`tinywarden.pipeline.Pipeline.judge_window`)."""
        g = self.guard_
        if g is None:
            return GuardVerdict(None, float("nan"), self.guard_note_ or "this model has no fail-safe guard")
        return judge_bounds(window, self.channels_, g.lo_, g.hi_, g.rate_, g.input_shape_)


class Int8Adapter:
    """The agent's view of an :class:`Int8Scorer`'s integer adaptation, shaped as
    :class:`tinywarden.adapt.BaselineAdapter` (``observe``, ``status``, ``rebind``, ``config``).

    The scorer adapts inside ``push`` (the device's order: adapted op, score, likelihood, update);
    :meth:`observe` only reports what that window did. :meth:`snapshot` and :meth:`load` keep the adapted state
    across a restart (checked on load: a foreign or out-of-range state is refused and the reference stays).
    ``scorer`` is asked for the running scorer each time
    (a hot swap to the same model hands the adapted state over to the new one in :meth:`rebind`).
    """

    def __init__(self, scorer: Callable[[], Int8Scorer], config: Adaptation) -> None:
        self._scorer = scorer
        self._config = config
        self._stream = scorer().stream
        self._adapter()  # refuse a scorer without the step

    def _adapter(self) -> AdaptQState:
        a = self._stream.adapter
        if a is None:
            raise ModelFileError("the int8 program has no adaptation step")
        return a

    @property
    def config(self) -> Adaptation:
        return self._config

    @config.setter
    def config(self, value: Adaptation) -> None:
        params = adaptation_params(self._stream.program, value)
        if params is not None:
            self._adapter().params = params
        self._config = value

    def observe(
        self, x: Any, confidence: float | None, likelihood: Any = None, score: float | None = None
    ) -> AdaptStep:
        """What the scorer's last window did (it adapted already, inside ``push``, with the program's integer score
        and confidence: the float adapter's rule, :mod:`tinywarden.kernels.adapt_q`). The arguments are accepted as
        the float adapter accepts them and not used."""
        stream, a = self._stream, self._adapter()
        return AdaptStep(bool(stream.adapted), a.drift / 4096.0, self._likelihood_drift(), bool(stream.new_flag))

    def _likelihood_drift(self) -> float:
        lik = self._stream.likelihood
        if lik is None:
            return 0.0
        fitted_mean, fitted_var = int(lik.op.attrs["mean"]), int(lik.op.attrs["var"])
        return abs(lik.mean - fitted_mean) / 65536.0 / max(float(np.sqrt(fitted_var)), 1.0)

    def rebind(self, pipeline: Any) -> None:
        """Carry the adapted state (and the program's likelihood state) over to the scorer now running the
        same program (a hot swap to the same model file)."""
        old, new = self._stream, self._scorer().stream
        if new is not old and old.adapter is not None and new.adapter is not None:
            a, b = old.adapter, new.adapter
            b.mu, b.sd, b.smu, b.svar = a.mu.copy(), a.sd.copy(), a.smu.copy(), a.svar.copy()
            b.wmu, b.level = a.wmu.copy(), a.level
            b.drift, b.flagged, b.flags, b.adapted, b.held = a.drift, a.flagged, a.flags, a.adapted, a.held
            b.elevated, b.settling, b.settled = a.elevated, a.settling, a.settled
            if old.likelihood is not None and new.likelihood is not None:  # it gates the adaptation
                new.likelihood.__dict__.update({k: (list(v) if isinstance(v, list) else v)
                                                for k, v in old.likelihood.__dict__.items()})
            self._stream = new

    def snapshot(self) -> dict[str, Any]:
        """The adapted state and the program's likelihood state (which gates it), as JSON values, for a restarted
        agent to carry on from (:meth:`load`). The agent seals it with the device key and writes it
        (:mod:`tinywarden.agent.adaptstate`)."""
        stream = self._stream
        return {"format": STATE_FORMAT, "model_id": stream.program.model_id,
                "rule": dataclasses.asdict(self._adapter().params), "state": self._adapter().snapshot(),
                "likelihood": None if stream.likelihood is None else
                {k: getattr(stream.likelihood, k) for k in _LIK_STATE}}  # fmt: skip

    def load(self, doc: Mapping[str, Any], *likelihoods: LikelihoodQStream) -> None:
        """Carry on from a :meth:`snapshot` (also into each of ``likelihoods``, e.g. the agent's own copy of the
        program's likelihood). ConfigError, and everything left as it was (the frozen reference for a fresh
        adapter), when it is of another format, was taken of another program or rule, or any value is out of
        range (its authenticity is the sealed file's: :mod:`tinywarden.agent.adaptstate`)."""
        stream, a = self._stream, self._adapter()
        if not isinstance(doc, Mapping) or doc.get("format") != STATE_FORMAT:
            raise ConfigError(f"not an adapted state of format {STATE_FORMAT}")
        if doc.get("model_id") != stream.program.model_id or doc.get("rule") != dataclasses.asdict(a.params):
            raise ConfigError("the adapted state was written for another program or adaptation rule")
        lik = doc.get("likelihood")
        if (lik is None) != (stream.likelihood is None):
            raise ConfigError("the adapted state's likelihood does not match the program's")
        if stream.likelihood is not None:
            _check_likelihood_state(stream.likelihood, lik)
        state = doc.get("state")
        if not isinstance(state, dict):
            raise ConfigError("the adapted state has no state")
        a.restore(state)
        for target in (stream.likelihood, *likelihoods):
            if target is not None:
                target.__dict__.update({k: (list(v) if isinstance(v, list) else v) for k, v in lik.items()})

    def status(self) -> dict[str, Any]:
        """The ``adaptation`` block of the agent's status file (as :meth:`BaselineAdapter.status`)."""
        a = self._adapter()
        return {
            "enabled": True,
            "runtime": "int8 (the generated C's integer step)",
            "adapted_windows": a.adapted,
            "held_windows": a.held,
            "drift": round(a.drift / 4096.0, 4),
            "likelihood_drift": round(self._likelihood_drift(), 4),
            "max_drift": self._config.max_drift,
            "level_drift": round(a.level / 4096.0, 4),
            "watch_drift": self._config.watch_drift,
            # the watch's distance as a fraction of the threshold (0 when the program does not measure it)
            "level_distance": round(a.distance / max(a.params.threshold, 1), 4) if a.params.distance_bound else 0.0,
            "watch_distance": self._config.watch_distance if a.params.distance_bound else 0.0,
            "flagged": bool(a.flagged),
            "flags": a.flags,
            "settling": bool(a.settling),
            "settled_windows": a.settled,
            "scale_ratio_max": round(float(np.max(G_ONE / a.g)), 4),  # the adapted multiplier's factor is g / G_ONE
        }


#: The adapted state's format (:meth:`Int8Adapter.snapshot`); 2: sealed by the agent with the device key; 3: the
#: adapted scale as ``sd`` (no ``var``, no ``g``) and means within 24 bits (tinywarden.kernels.adapt_q.SD_BITS).
STATE_FORMAT = "tinywarden-int8-adaptation/3"
#: The program likelihood's running state, as the state file keeps it.
_LIK_STATE = ("ring", "pos", "count", "sum", "mean", "var", "hold", "rec_lo", "rec_hi", "vlo", "vhi", "vnew")
_LIK_LISTS = ("ring", "vlo", "vhi")


def _check_likelihood_state(lik: LikelihoodQStream, doc: Any) -> None:
    """ConfigError unless ``doc`` is a running state ``lik`` can reach."""
    ok = isinstance(doc, dict) and set(doc) == set(_LIK_STATE) and all(
        type(doc[k]) is int for k in _LIK_STATE if k not in _LIK_LISTS) and all(
        isinstance(doc[k], list) and all(type(v) is int for v in doc[k]) for k in _LIK_LISTS)
    ok = ok and len(doc["ring"]) == lik.short and 0 <= doc["pos"] < lik.short and 0 <= doc["count"] <= lik.short
    ok = ok and doc["var"] >= lik.var_floor and 0 <= doc["hold"] <= max(lik.holdoff, 0)
    ok = ok and doc["sum"] == sum(doc["ring"])
    ok = ok and len(doc["vlo"]) == len(doc["vhi"]) == len(lik.vlo) and doc["vnew"] in (0, 1) and all(
        -(2**15) <= lo <= hi < 2**15 for lo, hi in zip(doc["vlo"], doc["vhi"], strict=True))
    if not ok:
        raise ConfigError("the adapted state's likelihood is malformed or out of range")


def _guard(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray], program: Program,
           source: str) -> tuple[GuardBounds | None, str]:
    if header.get(GUARD_HEADER_KEY) is None:
        return None, (f"{source}: model file has no fail-safe guard (written before tinywarden stored one); a "
                      "model fault falls back to the policy's fault_tolerance/fail_safe_tier rules")
    c = program.n_channels
    got = {}
    for name in _GUARD_ARRAYS:
        a = arrays.get(f"guard/{name}")
        if a is None or a.shape != (c,) or not np.isfinite(a).all():
            raise ModelFileError(f"{source}: fail-safe guard array {name!r} is missing, not {c} values or not finite")
        got[name] = np.asarray(a, dtype=np.float64)
    if (got["hi_"] <= got["lo_"]).any() or (got["rate_"] <= 0).any():
        raise ModelFileError(f"{source}: fail-safe guard has an empty range or a step limit <= 0")
    return GuardBounds(got["lo_"], got["hi_"], got["rate_"], (program.window, c)), ""


def load_model(data: bytes, source: str = "<bytes>", *, prefer_int8: bool = True) -> Int8Model | Pipeline:
    """The model a device runs from model-file bytes: the int8 runtime when the file holds a program (and
    ``prefer_int8``), else the float pipeline (which loads the training stack)."""
    if prefer_int8:
        header, arrays = decode(data, source)
        if INT8_HEADER_KEY in header:
            return Int8Model(header, arrays, source)
    from tinywarden.modelfile import pipeline_from_bytes

    return pipeline_from_bytes(data, source)
