"""The light runtime: a model file's int8 program scored the way the device does, with numpy alone.

A gateway that only runs the agent needs no training stack. :func:`load_model` reads model-file bytes
and, when the file holds an int8 program (``train`` stores one for every detector whose features
support it), returns an :class:`Int8Model`: the program interpreted by :class:`~tinywarden.program.Int8Stream`
(the bit-exact twin of the generated C), the fail-safe guard's bounds (:mod:`tinywarden.guard`), and
the program's own integer likelihood step (the generated C's ``tw_confidence``). Nothing here imports the
detector families, scikit-learn, torch or matplotlib; only a model file without an int8 program loads
the float :class:`~tinywarden.pipeline.Pipeline` (and with it the training stack), as before.

What the int8 runtime does not do: baseline adaptation (:mod:`tinywarden.adapt` moves the float
pipeline's scaler; the program's sample scaling is fixed at quantization, as in the generated C).

Scores and threshold are the program's int32 score and integer threshold; the response policy's
margins are relative to the threshold, so they mean the same on either scale. A window that holds a
NaN or infinite sample scores NaN (the C code would read it as 0): the agent treats it as a model
fault, as it does on the float path, and the fail-safe guard cannot judge it either.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tinywarden.errors import ModelFileError
from tinywarden.guard import GuardVerdict, judge_bounds
from tinywarden.kernels.base import Op
from tinywarden.kernels.likelihood_q import LikelihoodQStream
from tinywarden.modelfile import GUARD_HEADER_KEY, decode
from tinywarden.program import INT8_HEADER_KEY, Int8Stream, Program, from_model_file

if TYPE_CHECKING:
    from tinywarden.pipeline import Pipeline

__all__ = ["GuardBounds", "Int8Model", "Int8Scorer", "ProgramLikelihood", "load_model"]

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
    :class:`~tinywarden.pipeline.StreamingScorer` does, from the int8 program."""

    last_input = None  # no float model input: nothing for baseline adaptation

    def __init__(self, program: Program) -> None:
        self.program = program
        self.stream = Int8Stream(program)
        self.finite: deque[bool] = deque(maxlen=program.window)

    def push(self, sample: np.ndarray | Sequence[float]) -> tuple[float, bool, bool] | None:
        x = np.asarray(sample, dtype=np.float64)
        self.finite.append(bool(np.isfinite(x).all()))
        out = self.stream.push(x)
        if out is None:
            return None
        score, alarm = out
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

    def __init__(self, op: Op) -> None:
        self.op = op
        self.stream = LikelihoodQStream(op)

    def fresh(self) -> ProgramLikelihood:
        return ProgramLikelihood(self.op)

    def update(self, score: float) -> float:
        if not np.isfinite(score):
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
        self.crossings_block = next((int(op.attrs.get("block", p.window)) for op in p.ops if op.kind == "features_s16"),
                                    p.window)
        self.offset_ = np.asarray(arrays.get("scaler/offset", np.zeros(0)), dtype=np.float64)
        self.scale_ = np.asarray(arrays.get("scaler/scale", np.ones(0)), dtype=np.float64)
        self.likelihood_ = None if p.likelihood is None else ProgramLikelihood(p.likelihood)
        self.guard_, self.guard_note_ = _guard(header, arrays, p, source)

    def stream(self) -> Int8Scorer:
        """A one-sample-at-a-time scorer of the program."""
        return Int8Scorer(self.program)

    def judge_window(self, window: np.ndarray) -> GuardVerdict:
        """The fail-safe guard's verdict on one raw window (as :meth:`tinywarden.pipeline.Pipeline.judge_window`)."""
        g = self.guard_
        if g is None:
            return GuardVerdict(None, float("nan"), self.guard_note_ or "this model has no fail-safe guard")
        return judge_bounds(window, self.channels_, g.lo_, g.hi_, g.rate_, g.input_shape_)


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
