"""ONE description of the on-device loop, and the numpy interpreter that is the ground truth for the C code.

A :class:`Program` is what :mod:`tinywarden.quantize.ptq` produces from a fitted pipeline and what
:mod:`tinywarden.codegen.c` prints as C. Its stages, in the order a device runs them:

1. **sample quantization** (once per pushed sample, per channel ``c``), integer only, defined exactly so
   that C and Python agree to the bit (see :func:`quantize_samples`). ``sample_mul[c]`` is folded at
   generation into a Q31 ``multiplier`` and a power-of-two ``shift`` (:func:`tinywarden.arith.quantize_multiplier`);
   a sample ``x = m * 2**e`` (a float32's integer mantissa and exponent, read from its bits, or a fixed-point
   reading ``raw * 2**-frac_bits``) becomes::

       y = round-half-away(|m| * multiplier * 2**(e + shift - 31))   # exact, in 64-bit integers
       q = sat16(sign(x) * y - sample_zero[c]);   NaN -> 0

   The int16 ``q`` stands for the real value ``(q + sample_zero[c]) / sample_mul[c]``. No floating-point
   operation is involved, so an FPU-less core pays no soft-float helper.
2. **ring buffer**: the last ``window`` int16 samples; a window is due after ``window`` pushes and then
   every ``stride`` pushes (the same rule as :class:`tinywarden.features.RingBuffer`).
3. **ops**: a straight list of integer kernels (:data:`tinywarden.kernels.KERNELS`, one module per
   kernel with its numpy reference, argument checks, C template and limits), each reading named tensors and writing
   one; the first reads the implicit tensor ``"window"`` (int16, ``window x n_channels``, oldest row
   first); the last writes the int32 ``"score"``.
4. **decision**: ``flag = score > threshold``; ``anomaly`` when at least ``k`` of the last ``n`` flags
   are set (:func:`tinywarden.calibrate.persist`).
5. **likelihood** (optional, ``Program.likelihood``): the calibrated confidence of the score stream in Q15,
   integer only, with state carried from window to window (:mod:`tinywarden.kernels.likelihood_q`;
   :func:`run_confidence`).

Kernels are named like CMSIS-NN's (``<op>_<dtype>``); :func:`run_int8` interprets the program with their
numpy references, :mod:`tinywarden.codegen.c` prints it with their C templates, and the test suite requires
the two to agree bit for bit. This module keeps the program description, the interpreter and the
model-file form.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinywarden.adapt import REARM_FRACTION, Adaptation, windows_in
from tinywarden.arith import INT16_MAX, INT16_MIN, quantize_multiplier
from tinywarden.calibrate import MAX_PERSIST_N, Persistence, persist
from tinywarden.errors import ConfigError, ModelFileError
from tinywarden.features import window_end_rows
from tinywarden.kernels import CTYPES, KERNELS, Op, TensorSpec
from tinywarden.kernels.adapt_q import AdaptParams, AdaptQState, adapt_params, check_adaptation, distance_score_op
from tinywarden.kernels.features_s16 import MAX_WINDOW
from tinywarden.kernels.likelihood_q import LikelihoodQStream, check_likelihood, confidence_q, value_hits_q

__all__ = ["INT8_HEADER_KEY", "KERNELS", "MAX_FRAC_BITS", "MAX_SAMPLE_ZERO", "MAX_WINDOW", "POW2_MULTIPLIER",
           "PROGRAM_VERSION", "Int8Stream", "Op", "Program", "TensorSpec", "from_model_file", "quantize_fixed",
           "quantize_samples", "run_confidence", "run_int8", "run_windows", "to_model_file"]

PROGRAM_VERSION = 1
#: Header key of the program in a ``.twb`` model file (arrays are named ``int8/...``).
INT8_HEADER_KEY = "int8"
#: Fixed-point readings ``raw * 2**-frac_bits`` (``tw_push_fixed``) take ``frac_bits`` in [0, MAX_FRAC_BITS].
MAX_FRAC_BITS = 31
#: |round(x * mul)| is saturated here before the zero point is subtracted ...
SAMPLE_SATURATION = 2**30
#: ... and |sample_zero| is at most this: +-y - zero fits int32, and a saturated y still saturates the sample.
MAX_SAMPLE_ZERO = 2**29
#: The Q31 multiplier of a power-of-two ``sample_mul`` (``quantize_multiplier(2**k) == (2**30, k + 1)``): when
#: every channel has it, the generated C converts samples with a shift (``TW_SAMPLE_POW2``).
POW2_MULTIPLIER = 1 << 30


@dataclass(frozen=True)
class Program:
    """The whole integer on-device loop of one fitted pipeline (see the module docstring)."""

    channels: tuple[str, ...]
    window: int
    stride: int
    sample_offset: np.ndarray  # float32 (C,)
    sample_mul: np.ndarray  # float32 (C,)
    sample_zero: np.ndarray  # int32 (C,): real sample = (q + sample_zero) / sample_mul
    tensors: tuple[TensorSpec, ...]
    ops: tuple[Op, ...]
    threshold: int
    k: int
    n: int
    info: Mapping[str, Any] = field(default_factory=dict)  # provenance and real scales, for reports only
    #: the calibrated likelihood after the score (:mod:`tinywarden.kernels.likelihood_q`), or None
    likelihood: Op | None = None
    #: the baseline adaptation of the features' requantization (:mod:`tinywarden.kernels.adapt_q`), or None;
    #: it runs only when asked for (:class:`Int8Stream` ``adaptation``, the C export with an enabled policy)
    adaptation: Op | None = None

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    def tensor(self, name: str) -> TensorSpec:
        if name == "window":
            return TensorSpec("window", "int16", (self.window, self.n_channels))
        for t in self.tensors:
            if t.name == name:
                return t
        raise ConfigError(f"program has no tensor {name!r}")

    @property
    def sample_requant(self) -> tuple[np.ndarray, np.ndarray]:
        """``(multiplier int32, shift int32)`` per channel: ``sample_mul`` as a Q31 multiplier and shift."""
        pairs = [quantize_multiplier(float(m)) for m in self.sample_mul]
        return (np.array([m for m, _ in pairs], dtype=np.int32), np.array([s for _, s in pairs], dtype=np.int32))

    @property
    def const_bytes(self) -> int:
        """Bytes of constant data on the device (weights, multipliers, sample quantization)."""
        n = 9 * self.n_channels  # per channel: int32 multiplier, int8 shift, int32 zero point
        ops = (*self.ops, self.likelihood) if self.likelihood is not None else self.ops
        return n + sum(np.asarray(a).nbytes for op in ops for a in op.consts.values())

    @property
    def model_id(self) -> str:
        """First 16 hex digits of the SHA-256 of the program's canonical serialisation."""
        header, arrays = to_model_file(self, with_id=False)
        h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
        for name in sorted(arrays):
            h.update(name.encode())
            h.update(np.ascontiguousarray(arrays[name]).tobytes())
        return h.hexdigest()[:16]

    def validate(self) -> Program:
        """Check the program is well formed (known kernels, tensors exist, dtypes and shapes agree)."""
        c = self.n_channels
        if not 2 <= self.window <= MAX_WINDOW or not 1 <= self.stride <= self.window:
            raise ConfigError(f"program window {self.window} / stride {self.stride} out of range "
                              f"(2 <= window <= {MAX_WINDOW}, 1 <= stride <= window)")
        if not 1 <= self.k <= self.n <= MAX_PERSIST_N:
            raise ConfigError(f"program persistence k={self.k}, n={self.n} out of range "
                              f"1 <= k <= n <= {MAX_PERSIST_N}")
        sample_arrays = (
            ("sample_offset", self.sample_offset, "float32"),
            ("sample_mul", self.sample_mul, "float32"),
            ("sample_zero", self.sample_zero, "int32"),
        )
        for name, arr, dt in sample_arrays:
            if arr.dtype != np.dtype(dt) or arr.shape != (c,):
                raise ConfigError(f"program {name} must be {dt} of shape ({c},), got {arr.dtype} {arr.shape}")
        if not (np.isfinite(self.sample_mul).all() and (self.sample_mul > 0).all()):
            raise ConfigError("program sample_mul must be finite and > 0")
        if np.abs(self.sample_zero.astype(np.int64)).max(initial=0) > MAX_SAMPLE_ZERO:
            raise ConfigError(f"program sample_zero must lie in [-{MAX_SAMPLE_ZERO}, {MAX_SAMPLE_ZERO}]")
        known = {"window"}
        for t in self.tensors:
            if t.dtype not in CTYPES or not t.name.isidentifier():
                raise ConfigError(f"program tensor {t.name!r} has bad dtype {t.dtype!r} or name")
            known.add(t.name)
        dsts = [op.dst for op in self.ops]
        if len(set(dsts)) != len(dsts) or "window" in dsts:
            raise ConfigError(f"program ops must each write their own tensor (not the window), got {dsts}")
        for i, op in enumerate(self.ops):
            if op.kind not in KERNELS:
                raise ConfigError(f"program op {i}: unknown kernel {op.kind!r} (known: {', '.join(KERNELS)})")
            spec = KERNELS[op.kind]
            missing = [s for s in (*op.src, op.dst) if s not in known]
            if missing:
                raise ConfigError(f"program op {i} ({op.kind}): unknown tensor(s) {', '.join(missing)}")
            for cname, dt in spec.consts.items():
                a = op.consts.get(cname)
                if a is None or np.asarray(a).dtype != np.dtype(dt):
                    raise ConfigError(f"program op {i} ({op.kind}): constant {cname!r} must be {dt}")
            want_src = [self.tensor(s).dtype for s in op.src]
            if want_src != list(spec.src_dtypes) or self.tensor(op.dst).dtype != spec.dst_dtype:
                raise ConfigError(f"program op {i} ({op.kind}): tensor dtypes {want_src} -> "
                                  f"{self.tensor(op.dst).dtype} do not match the kernel")
            if spec.check is not None:
                try:
                    spec.check(op, self)
                except ConfigError as exc:
                    raise ConfigError(f"program op {i} ({op.kind}): {exc}") from None
        if not self.ops or self.ops[-1].dst != "score" or self.tensor("score").shape != (1,):
            raise ConfigError("program must end with an op writing the int32 tensor 'score' of shape (1,)")
        if self.likelihood is not None:
            try:
                check_likelihood(self.likelihood)
            except ConfigError as exc:
                raise ConfigError(f"program likelihood: {exc}") from None
            if "vrecord" in self.likelihood.attrs and np.asarray(
                    self.likelihood.consts["value_lo"]).shape != (self.n_channels,):
                raise ConfigError(f"program likelihood: value_lo / value_hi must hold one range per channel "
                                  f"({self.n_channels})")
        if self.adaptation is not None:  # inert without a likelihood: nothing gates it (adaptation_params)
            try:
                check_adaptation(self.adaptation, self.ops)
            except (ConfigError, KeyError) as exc:
                raise ConfigError(f"program adaptation: {exc}") from None
        return self


# -- sample quantization ---------------------------------------------------------------------------
def _scale_to_q(program: Program, neg: np.ndarray, m: np.ndarray, e: np.ndarray) -> np.ndarray:
    """int16 of ``(-1)**neg * m * 2**e`` (``m`` < 2**32, per column of the program's channels); the C
    ``tw_sample_to_q`` step by step: ``y = round(m * multiplier * 2**(e + shift - 31))`` (ties away from zero)
    saturated at :data:`SAMPLE_SATURATION`, then ``q = sat16(+-y - zero)``."""
    mult, shift = (v.astype(np.int64) for v in program.sample_requant)
    p = m.astype(np.int64) * mult  # < 2**32 * 2**31: fits int64
    sh = 30 - shift - e.astype(np.int64)  # one less than the rounding shift
    r = np.minimum(p >> np.clip(sh, 0, 62), 2**32 - 1)  # kept bits, saturated to uint32
    y = np.minimum((r >> 1) + (r & 1), SAMPLE_SATURATION)
    y = np.where(sh < 0, np.where(p == 0, 0, SAMPLE_SATURATION), np.where(sh > 62, 0, y))
    t = np.where(neg, -y, y) - program.sample_zero.astype(np.int64)
    return np.clip(t, INT16_MIN, INT16_MAX).astype(np.int16)


def quantize_samples(program: Program, samples: np.ndarray) -> np.ndarray:
    """Float samples ``(rows, channels)`` to int16, exactly as the C ``tw_push`` does (module docstring).

    Values are first converted to float32 (as a C caller passing ``float`` does); the float's sign, 24-bit
    mantissa and exponent are read from its bits and scaled in integers: NaN becomes 0, infinities saturate.

    >>> p = Program(("a",), 2, 1, np.float32([1.0]), np.float32([2.0]), np.int32([2]), (), (), 0, 1, 1)
    >>> quantize_samples(p, np.array([[1.25], [0.75], [np.nan], [1e9], [-np.inf]])).ravel().tolist()
    [1, 0, 0, 32767, -32768]
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != program.n_channels:
        raise ConfigError(f"samples must have shape (rows, {program.n_channels}), got {x.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        bits = x.astype(np.float32).view(np.uint32).astype(np.int64)
    neg, exp, frac = bits >> 31, (bits >> 23) & 0xFF, bits & 0x7FFFFF
    m = np.where(exp == 0, frac, frac | (1 << 23))
    e = np.where(exp == 0, 1, exp) - 150  # an infinity (exponent 255) saturates like any huge value
    q = _scale_to_q(program, neg.astype(bool), m, e)
    return np.where((exp == 255) & (frac != 0), np.int16(0), q)


def quantize_fixed(program: Program, raw: np.ndarray, frac_bits: int = 0) -> np.ndarray:
    """Fixed-point readings ``raw * 2**-frac_bits`` (int32, ``(rows, channels)``) to int16, exactly as the C
    ``tw_push_fixed`` / ``tw_quantize_fixed`` do: no floating point at all.

    >>> p = Program(("a",), 2, 1, np.float32([1.0]), np.float32([2.0]), np.int32([2]), (), (), 0, 1, 1)
    >>> quantize_fixed(p, np.array([[5], [-3]], dtype=np.int32), frac_bits=2).ravel().tolist()
    [1, -4]
    """
    r = np.asarray(raw)
    if r.dtype != np.int32 or r.ndim != 2 or r.shape[1] != program.n_channels:
        raise ConfigError(f"fixed-point samples must be int32 of shape (rows, {program.n_channels}), "
                          f"got {r.dtype} {r.shape}")
    if not 0 <= frac_bits <= MAX_FRAC_BITS:
        raise ConfigError(f"frac_bits must be in [0, {MAX_FRAC_BITS}], got {frac_bits}")
    r64 = r.astype(np.int64)
    return _scale_to_q(program, r64 < 0, np.abs(r64), np.full(r.shape, -frac_bits, dtype=np.int64))


# -- interpreter -----------------------------------------------------------------------------------
def run_windows(program: Program, windows: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """int32 scores of int16 windows ``(n, window, channels)`` (oldest row first)."""
    win = np.asarray(windows)
    if win.dtype != np.int16 or win.shape[1:] != (program.window, program.n_channels):
        raise ConfigError(f"windows must be int16 of shape (n, {program.window}, {program.n_channels}), "
                          f"got {win.dtype} {win.shape}")
    out = np.empty(len(win), dtype=np.int32)
    for lo in range(0, len(win), chunk):
        env: dict[str, np.ndarray] = {"window": win[lo : lo + chunk]}
        for op in program.ops:
            env[op.dst] = KERNELS[op.kind].fn([env[s] for s in op.src], op)
        out[lo : lo + chunk] = env["score"][:, 0]
    return out


def run_int8(program: Program, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(scores int32, anomalies uint8)`` for every window of a stream of samples, as the C returns them.

    ``samples`` is ``(rows, channels)``: int16 values are used as they are (``tw_push_q``), anything else
    goes through :func:`quantize_samples` first (``tw_push``). Window ``i`` ends at row
    ``window - 1 + i * stride``, exactly when ``tw_push`` returns 1.
    """
    x = np.asarray(samples)
    q = x if x.dtype == np.int16 else quantize_samples(program, x)
    if q.ndim != 2 or q.shape[1] != program.n_channels:
        raise ConfigError(f"samples must have shape (rows, {program.n_channels}), got {q.shape}")
    ends = window_end_rows(len(q), program.window, program.stride)
    if len(ends) == 0:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.uint8)
    view = np.lib.stride_tricks.sliding_window_view(q, program.window, axis=0)  # (rows-W+1, C, W)
    scores = np.empty(len(ends), dtype=np.int32)
    for lo in range(0, len(ends), 4096):
        starts = ends[lo : lo + 4096] - (program.window - 1)
        scores[lo : lo + 4096] = run_windows(program, np.ascontiguousarray(view[starts].transpose(0, 2, 1)))
    flags = (scores > program.threshold).astype(np.uint8)
    return scores, persist(flags, program.k, program.n)


def run_confidence(program: Program, scores: np.ndarray, samples: np.ndarray | None = None) -> np.ndarray | None:
    """uint16 Q15 confidences of the int32 window scores of one stream, as ``tw_confidence`` gives them after
    each window (from ``tw_init``); None for a program without a likelihood step. ``samples``: the stream's samples
    (as :func:`run_int8` takes them), for the likelihood's value record; without them it reports nothing."""
    if program.likelihood is None:
        return None
    hits = None
    if samples is not None and "vrecord" in program.likelihood.attrs:
        x = np.asarray(samples)
        q = x if x.dtype == np.int16 else quantize_samples(program, x)
        ends = window_end_rows(len(q), program.window, program.stride)[: len(scores)]
        hits = value_hits_q(program.likelihood, q, ends)
    return confidence_q(program.likelihood, np.asarray(scores, dtype=np.int32), hits)


def adaptation_params(program: Program, adaptation: Adaptation | None) -> AdaptParams | None:
    """The integer form of a policy's ``[adaptation]`` for ``program``; None when adaptation is off (None or
    ``enabled = false``) or the program has no adaptation step (a family without an adaptable op, a model
    file written before the step existed) or no likelihood."""
    if adaptation is None or not adaptation.enabled or program.adaptation is None or program.likelihood is None:
        return None
    period_us = program.adaptation.attrs.get("period_us")
    settle_n = windows_in(adaptation.settle_s, program.stride, None if period_us is None else int(period_us) / 1e6)
    scores_distance = distance_score_op(program.ops, int(program.adaptation.attrs["op"])) is not None
    return adapt_params(program.likelihood, adaptation.rate_shift, adaptation.below_confidence,
                        adaptation.max_drift, REARM_FRACTION, threshold=int(program.threshold),
                        gate=adaptation.below_threshold, adapt_scale=adaptation.adapt_scale, settle_n=settle_n,
                        settle_shift=adaptation.settle_rate_shift, watch_drift=adaptation.watch_drift,
                        watch_distance=adaptation.watch_distance if scores_distance else 0.0)


class Int8Stream:
    """Firmware-style interpreter: push one sample, get ``(score, anomaly)`` when a window completes.

    It mirrors the C ``tw_push`` step by step (ring buffer, then the ops on the one window); the batch
    :func:`run_int8` must give the same numbers. With ``adaptation`` (a policy's ``[adaptation]``, enabled)
    and a program that has the step, it also adapts its baseline as the C exported with that policy does
    (:mod:`tinywarden.kernels.adapt_q`; ``adapter`` holds the state, ``adapted`` / ``new_flag`` say what the
    last window did).
    """

    def __init__(self, program: Program, adaptation: Adaptation | None = None) -> None:
        self.program = program
        self.ring = np.zeros((program.window, program.n_channels), dtype=np.int16)
        self.persistence = Persistence(program.k, program.n)
        self.likelihood = None if program.likelihood is None else LikelihoodQStream(program.likelihood)
        params = adaptation_params(program, adaptation)
        self.adapter: AdaptQState | None = None
        if params is not None and program.adaptation is not None:
            j = int(program.adaptation.attrs["op"])
            self.adapter = AdaptQState(program.adaptation, program.ops[j], params, distance_score_op(program.ops, j))
        #: Q15 confidence of the last window (``tw_confidence``); 0 before the first, and without a likelihood
        self.confidence = 0
        self.adapted = self.new_flag = False
        #: the adapted op's input of the last window (the integer features), with adaptation
        self.last_inputs: np.ndarray | None = None
        self.reset()

    def reset(self) -> None:
        """Forget every sample and flag (``tw_init``)."""
        self.head, self.filled, self.phase = 0, 0, 0
        self.persistence.reset()
        self.confidence = 0
        if self.likelihood is not None:
            self.likelihood.reset()
        if self.adapter is not None:
            self.adapter.reset()

    def rebaseline(self) -> None:
        """The operator's re-baseline (``tw_rebaseline``): the adapted scaling and the likelihood's running
        distribution back to the reference, the drift flag cleared; samples and counts are kept."""
        if self.adapter is not None:
            self.adapter.rebaseline()
        if self.likelihood is not None:
            self.likelihood.mean = int(self.likelihood.op.attrs["mean"])
            self.likelihood.var = int(self.likelihood.op.attrs["var"])

    def push(self, sample: np.ndarray) -> tuple[int, int] | None:
        s = np.asarray(sample)
        q = s if s.dtype == np.int16 else quantize_samples(self.program, s.reshape(1, -1))[0]
        p = self.program
        self.ring[self.head] = q
        if self.likelihood is not None:
            self.likelihood.observe_q(q)  # the value record sees every sample (tw_push_q)
        self.head = (self.head + 1) % p.window
        if self.filled < p.window:
            self.filled += 1
            if self.filled < p.window:
                return None
            self.phase = 0
        else:
            self.phase = (self.phase + 1) % p.stride
            if self.phase:
                return None
        win = np.concatenate((self.ring[self.head :], self.ring[: self.head]))[None]
        if self.adapter is None:
            score = int(run_windows(p, win)[0])
        else:
            score, self.last_inputs = _run_adapted(p, win, self.adapter)
        if self.likelihood is not None:
            self.confidence = self.likelihood.push(score)
        if self.adapter is not None and self.likelihood is not None:
            self.adapted, self.new_flag = self.adapter.observe(self.last_inputs, self.confidence, self.likelihood.mean,
                                                               int(self.likelihood.op.attrs["mean"]), score)
        return score, int(self.persistence.push(score > p.threshold))


def _run_adapted(program: Program, windows: np.ndarray, state: AdaptQState) -> tuple[int, np.ndarray]:
    """The score of one window with the adapted op in place of the reference one, and that op's input."""
    j = int(state.op.attrs["op"])
    env: dict[str, np.ndarray] = {"window": windows}
    for i, op in enumerate(program.ops):
        srcs = [env[s] for s in op.src]
        env[op.dst] = KERNELS[op.kind].fn(srcs, state.forward(op) if i == j else op)
    return int(env["score"][0, 0]), env[program.ops[j].src[0]][0]


# -- model-file form -------------------------------------------------------------------------------
def _jsonable(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(i) for i in v]
    if isinstance(v, Mapping):
        return {str(k): _jsonable(i) for k, i in v.items()}
    return v


def to_model_file(program: Program, with_id: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(header section, arrays)`` to store a program in a ``.twb`` file (header key ``"int8"``,
    arrays named ``int8/...``)."""
    arrays = {"int8/sample_offset": program.sample_offset, "int8/sample_mul": program.sample_mul,
              "int8/sample_zero": program.sample_zero}
    ops = []
    for i, op in enumerate(program.ops):
        for cname, arr in op.consts.items():
            arrays[f"int8/op{i}/{cname}"] = np.asarray(arr)
        ops.append({"kind": op.kind, "src": list(op.src), "dst": op.dst, "attrs": _jsonable(dict(op.attrs)),
                    "consts": sorted(op.consts)})
    header = {
        "version": PROGRAM_VERSION,
        "channels": list(program.channels),
        "window": program.window,
        "stride": program.stride,
        "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in program.tensors],
        "ops": ops,
        "threshold": int(program.threshold),
        "k": program.k,
        "n": program.n,
        "info": _jsonable(dict(program.info)),
    }
    if program.likelihood is not None:  # absent for a program without one, so older model ids are unchanged
        lik = program.likelihood
        arrays.update({f"int8/likelihood/{c}": np.asarray(a) for c, a in lik.consts.items()})
        header["likelihood"] = {"kind": lik.kind, "src": list(lik.src), "dst": lik.dst,
                                "attrs": _jsonable(dict(lik.attrs)), "consts": sorted(lik.consts)}
    if program.adaptation is not None:  # likewise
        ad = program.adaptation
        arrays.update({f"int8/adaptation/{c}": np.asarray(a) for c, a in ad.consts.items()})
        header["adaptation"] = {"kind": ad.kind, "src": list(ad.src), "dst": ad.dst,
                                "attrs": _jsonable(dict(ad.attrs)), "consts": sorted(ad.consts)}
    if with_id:
        header["model_id"] = program.model_id
    return header, arrays


def _narrow_legacy(kind: str, consts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feature requantization constants of files written before they were narrowed (int32 pre_shift,
    int64 offset) in today's dtypes; the arithmetic is the same whenever the values fit, which is checked."""
    if not kind.startswith("requantize_s64_"):
        return consts
    out = dict(consts)
    for name, dt in (("pre_shift", np.int8), ("offset", np.int32)):
        a = out.get(name)
        if a is not None and a.dtype != dt and a.dtype.kind == "i":
            info = np.iinfo(dt)
            if a.size and (a.min() < info.min or a.max() > info.max):
                raise ConfigError(f"{kind} {name} does not fit {np.dtype(dt).name}; re-run training")
            out[name] = a.astype(dt)
    return out


def from_model_file(
    header: Mapping[str, Any], arrays: Mapping[str, np.ndarray], source: str = "<model>"
) -> Program:
    """Rebuild a :class:`Program` stored by :func:`to_model_file`; a malformed one is a ModelFileError."""
    try:
        if header["version"] != PROGRAM_VERSION:
            raise ModelFileError(f"{source}: int8 program version {header['version']} is not supported "
                                 f"(this tinywarden reads {PROGRAM_VERSION}); re-run training")
        ops = tuple(
            Op(o["kind"], tuple(o["src"]), o["dst"], dict(o["attrs"]),
               _narrow_legacy(o["kind"], {c: np.asarray(arrays[f"int8/op{i}/{c}"]) for c in o["consts"]}))
            for i, o in enumerate(header["ops"])
        )
        lh = header.get("likelihood")
        likelihood = None if lh is None else Op(
            lh["kind"], tuple(lh["src"]), lh["dst"], dict(lh["attrs"]),
            {c: np.asarray(arrays[f"int8/likelihood/{c}"]) for c in lh["consts"]})
        ah = header.get("adaptation")
        adaptation = None if ah is None else Op(
            ah["kind"], tuple(ah["src"]), ah["dst"], dict(ah["attrs"]),
            {c: np.asarray(arrays[f"int8/adaptation/{c}"]) for c in ah["consts"]})
        program = Program(
            channels=tuple(header["channels"]),
            window=int(header["window"]),
            stride=int(header["stride"]),
            sample_offset=np.asarray(arrays["int8/sample_offset"]),
            sample_mul=np.asarray(arrays["int8/sample_mul"]),
            sample_zero=np.asarray(arrays["int8/sample_zero"]),
            tensors=tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in header["tensors"]),
            ops=ops,
            threshold=int(header["threshold"]),
            k=int(header["k"]),
            n=int(header["n"]),
            info=dict(header.get("info", {})),
            likelihood=likelihood,
            adaptation=adaptation,
        )
        program.validate()
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{source}: malformed int8 program ({type(exc).__name__}: {exc})") from None
    except ConfigError as exc:
        raise ModelFileError(f"{source}: invalid int8 program: {exc}") from None
    return program
