"""ONE description of the on-device loop, and the numpy interpreter that is the ground truth for the C code.

A :class:`Program` is what :mod:`tinywarden.quantize.ptq` produces from a fitted pipeline and what
:mod:`tinywarden.codegen.c` prints as C. Its stages, in the order a device runs them:

1. **sample quantization** (once per pushed sample, per channel ``c``), the only floating-point step,
   defined exactly so that C and Python agree to the bit (see :func:`quantize_samples`)::

       t = (x - sample_offset[c]) * sample_mul[c]   # two float32 operations, each rounded to nearest
       q = 0 if t is NaN; 32767 if t >= 32767; -32768 if t <= -32768; else round-half-away-from-zero(t)

   The int16 ``q`` stands for the real value ``(q + sample_zero[c]) / sample_mul[c]``.
2. **ring buffer**: the last ``window`` int16 samples; a window is due after ``window`` pushes and then
   every ``stride`` pushes (the same rule as :class:`tinywarden.features.RingBuffer`).
3. **ops**: a straight list of integer kernels (:data:`KERNELS`), each reading named tensors and writing
   one; the first reads the implicit tensor ``"window"`` (int16, ``window x n_channels``, oldest row
   first); the last writes the int32 ``"score"``.
4. **decision**: ``flag = score > threshold``; ``anomaly`` when at least ``k`` of the last ``n`` flags
   are set (:func:`tinywarden.calibrate.persist`).

Kernels are named like CMSIS-NN's (``<op>_<dtype>``); :func:`run_int8` and the generated C implement
each of them once, and the test suite requires the two to agree bit for bit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinywarden.calibrate import Persistence, persist
from tinywarden.errors import ConfigError, ModelFileError
from tinywarden.features import window_end_rows
from tinywarden.quantize.scheme import (
    INT32_MAX,
    isqrt_u64,
    requantize,
    saturate,
)

PROGRAM_VERSION = 1
#: Largest window the integer features are proven not to overflow for (see :func:`features_s16`).
MAX_WINDOW = 4096
#: ``pca_residual_s16``: inputs * 127 * 32768 < 2**31 keeps the int32 accumulator exact; at most 64 axes.
PCA_MAX_INPUTS = 515
PCA_MAX_AXES = 64
#: |r_j| <= 1.05 * sqrt(515) * 32768 < 2**20 for near-unit axes; the clamp makes the int64 bounds hold always.
PCA_R_LIMIT = 2**20
#: Feature codes of the ``features_s16`` kernel (its ``codes`` constant); fixed, the C kernel uses them.
FEATURE_CODES: dict[str, int] = {
    "mean": 0, "std": 1, "min": 2, "max": 3, "rms": 4,
    **{f"band{i}": 4 + i for i in range(1, 7)},
    "crossings": 11, "diff_abs_mean": 12, "diff_abs_max": 13, "last": 14,
}
_CODE_NAMES = {code: name for name, code in FEATURE_CODES.items()}
CTYPES = {"int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t", "uint8": "uint8_t",
          "uint16": "uint16_t"}


@dataclass(frozen=True)
class TensorSpec:
    """A named integer buffer of the program (a scratch array in the C state struct)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class Op:
    """One kernel call: ``kind`` (a key of :data:`KERNELS`), input tensor names, output tensor name,
    integer/string attributes and constant integer arrays (weights, multipliers, shifts ...)."""

    kind: str
    src: tuple[str, ...]
    dst: str
    attrs: Mapping[str, Any] = field(default_factory=dict)
    consts: Mapping[str, np.ndarray] = field(default_factory=dict)


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
    def const_bytes(self) -> int:
        """Bytes of constant data on the device (weights, multipliers, sample quantization)."""
        n = self.sample_offset.nbytes + self.sample_mul.nbytes
        return n + sum(np.asarray(a).nbytes for op in self.ops for a in op.consts.values())

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
        if not 1 <= self.k <= self.n <= 64:
            raise ConfigError(f"program persistence k={self.k}, n={self.n} out of range 1 <= k <= n <= 64")
        sample_arrays = (
            ("sample_offset", self.sample_offset, "float32"),
            ("sample_mul", self.sample_mul, "float32"),
            ("sample_zero", self.sample_zero, "int32"),
        )
        for name, arr, dt in sample_arrays:
            if arr.dtype != np.dtype(dt) or arr.shape != (c,):
                raise ConfigError(f"program {name} must be {dt} of shape ({c},), got {arr.dtype} {arr.shape}")
        known = {"window"}
        for t in self.tensors:
            if t.dtype not in CTYPES or not t.name.isidentifier():
                raise ConfigError(f"program tensor {t.name!r} has bad dtype {t.dtype!r} or name")
            known.add(t.name)
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
        return self


# -- sample quantization ---------------------------------------------------------------------------
def quantize_samples(program: Program, samples: np.ndarray) -> np.ndarray:
    """Float samples ``(rows, channels)`` to int16, exactly as the C ``tw_push`` does.

    Values are first converted to float32 (as a C caller passing ``float`` does), then
    ``t = (x - offset) * mul`` in float32; NaN becomes 0, ``t`` saturates to [-32768, 32767] and
    otherwise rounds half away from zero (``trunc`` then compare the exact remainder with 0.5).

    >>> p = Program(("a",), 2, 1, np.float32([1.0]), np.float32([2.0]), np.int32([2]), (), (), 0, 1, 1)
    >>> quantize_samples(p, np.array([[1.25], [0.75], [np.nan], [1e9]])).ravel().tolist()
    [1, -1, 0, 32767]
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != program.n_channels:
        raise ConfigError(f"samples must have shape (rows, {program.n_channels}), got {x.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        t = (x.astype(np.float32) - program.sample_offset) * program.sample_mul
        nan = np.isnan(t)
        t = np.where(nan, np.float32(0.0), t)
        hi, lo = t >= np.float32(32767.0), t <= np.float32(-32768.0)
        t = np.where(hi | lo, np.float32(0.0), t)
        i = np.trunc(t)
        r = t - i  # exact: |t| < 2**15 leaves the fraction representable
        q = i.astype(np.int64) + (r >= np.float32(0.5)) - (r <= np.float32(-0.5))
    q = np.where(hi, 32767, np.where(lo, -32768, q))
    return q.astype(np.int16)


# -- kernels ---------------------------------------------------------------------------------------
Kernel = Callable[[list[np.ndarray], Op], np.ndarray]


@dataclass(frozen=True)
class KernelSpec:
    """A kernel's numpy implementation and its contract (input/output dtypes, constants)."""

    fn: Kernel
    src_dtypes: tuple[str, ...]
    dst_dtype: str
    consts: Mapping[str, str]
    doc: str
    #: Raises ConfigError when an op's attributes or constant shapes would take the C kernel, which has no
    #: checks in its loops, out of its arrays or its documented ranges (e.g. a tampered model file).
    check: Callable[[Op, Program], None] | None = None


def _bands(x: np.ndarray, level: int) -> np.ndarray:
    """sum over blocks of 2**level rows of (sum of first half - sum of second half)**2; x (N, W, C) int64."""
    n, w, c = x.shape
    half = 2 ** (level - 1)
    blocks = x.reshape(n, w // (2 * half), 2, half, c).sum(axis=3)
    d = blocks[:, :, 0] - blocks[:, :, 1]
    return (d * d).sum(axis=1)


def features_s16(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    """Integer window features ``(N, C * F)`` int64, channel-major like :func:`tinywarden.features.extract`.

    Over one channel's window ``q[0..W-1]`` (int16, W <= 4096, so every sum below fits int64):
    ``S1 = sum q``, ``S2 = sum q**2``, ``V = W*S2 - S1**2``, ``T = S1 + W*z0`` (``z0`` = the channel's
    ``sample_zero``, so ``T`` is the sum of the real-valued levels, saturated to +-(2**31 - 1)).

    ==============  ==================================================  ==========================
    feature         integer value f                                     real feature ~ a * f + b
    ==============  ==================================================  ==========================
    mean            S1                                                  a = s/W, b = offset
    std             isqrt(V)                                            a = s/W
    min, max        min q, max q                                        a = s, b = offset
    rms             isqrt(V + T**2)                                     a = s/W
    band<l>         sum over blocks of 2**l of (first-half sum          a = s**2 / (2**l * W)
                    minus second-half sum)**2
    crossings       #t with (W*q[t] > S1) != (W*q[t-1] > S1)            a = 1/(W-1)
    diff_abs_mean   sum |q[t] - q[t-1]|                                 a = s/(W-1)
    diff_abs_max    max |q[t] - q[t-1]|                                 a = s
    last            q[W-1]                                              a = s, b = offset
    ==============  ==================================================  ==========================

    ``s = 1/sample_mul`` and ``offset = sample_zero/sample_mul`` of the channel.
    """
    x = srcs[0].astype(np.int64)  # (N, W, C)
    n, w, c = x.shape
    z0 = op.consts["z0"].astype(np.int64)
    s1 = x.sum(axis=1)
    s2 = (x * x).sum(axis=1)
    v = w * s2 - s1 * s1
    dx = np.abs(np.diff(x, axis=1))
    out = []
    for code in op.consts["codes"].tolist():
        name = _CODE_NAMES[code]
        if name == "mean":
            f = s1
        elif name == "std":
            f = isqrt_u64(v)
        elif name == "min":
            f = x.min(axis=1)
        elif name == "max":
            f = x.max(axis=1)
        elif name == "rms":
            t = np.clip(s1 + w * z0[None, :], -INT32_MAX, INT32_MAX)
            f = isqrt_u64(v + t * t)
        elif name.startswith("band"):
            f = _bands(x, int(name[4:]))
        elif name == "crossings":
            above = w * x > s1[:, None, :]
            f = (above[:, 1:] != above[:, :-1]).sum(axis=1).astype(np.int64)
        elif name == "diff_abs_mean":
            f = dx.sum(axis=1)
        elif name == "diff_abs_max":
            f = dx.max(axis=1)
        else:  # last
            f = x[:, -1]
        out.append(f)
    return np.stack(out, axis=2).reshape(n, -1)  # (N, C, F) -> channel-major


def _requantize_s64(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    x = srcs[0].astype(np.int64)
    c = op.consts
    v = saturate((x >> c["pre_shift"].astype(np.int64)) - c["offset"], "int32")
    q = requantize(v, c["multiplier"], c["shift"]) + int(op.attrs["zero_point"])
    return np.clip(q, op.attrs["act_min"], op.attrs["act_max"])


def _requantize_s16_s8(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    x = srcs[0].astype(np.int64)  # (N, W, C)
    c = op.consts
    v = x - c["offset"].astype(np.int64)
    q = requantize(v, c["multiplier"], c["shift"]) + int(op.attrs["zero_point"])
    return np.clip(q, op.attrs["act_min"], op.attrs["act_max"])


def _fully_connected_s8(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    x = srcs[0].astype(np.int64) + int(op.attrs["input_offset"])
    c = op.consts
    acc = x @ c["weights"].astype(np.int64).T + c["bias"].astype(np.int64)
    q = requantize(acc, c["multiplier"], c["shift"]) + int(op.attrs["output_offset"])
    return np.clip(q, op.attrs["act_min"], op.attrs["act_max"])


def _pca_residual(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    """Energy of the centred int16 input outside the span of the int8 principal axes, floored at 0.

    ``r_j = requantize(sum_i w_ji q_i)`` is the input's coordinate along axis ``j`` in input steps. For
    orthonormal axes the error of projecting onto them is ``|q|**2 - |r|**2`` (no decoder, no second copy
    of the weights); the int8 axes are only nearly orthonormal, so the energy inside their span is
    ``r^T (I + D) r`` with ``D = (W W^T)^-1 - I`` stored as an int8 upper triangle scaled by
    ``2**gram_shift`` (without it, large ``k`` loses ranking quality to the weights' rounding).
    """
    q = srcs[0].astype(np.int64)
    c = op.consts
    r = np.clip(requantize(q @ c["weights"].astype(np.int64).T, c["multiplier"], c["shift"]),
                -PCA_R_LIMIT, PCA_R_LIMIT)
    k = r.shape[1]
    gram = np.zeros((k, k), dtype=np.int64)
    gram[np.triu_indices(k)] = c["gram"]
    t = gram.diagonal() * r + 2 * (r @ np.triu(gram, 1).T)
    cross = _round_shift((t * r).sum(axis=1), int(op.attrs["gram_shift"]))
    return np.maximum((q * q).sum(axis=1) - (r * r).sum(axis=1) - cross, 0)


def _convolve_1d_s8(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    x = srcs[0].astype(np.int64) + int(op.attrs["input_offset"])  # (N, L, Cin)
    c, a = op.consts, op.attrs
    w = c["weights"].astype(np.int64)  # (Cout, Cin, K)
    cout, cin, k = w.shape
    if a["upsample"] > 1:
        x = np.repeat(x, a["upsample"], axis=1)
    pad = a["pad"]
    # zero padding in the offset domain is real zero, as TFLite's padding with the input zero point
    xp = np.pad(x, ((0, 0), (pad, pad), (0, 0)))
    l_out = (x.shape[1] + 2 * pad - k) // a["stride"] + 1
    idx = np.arange(l_out)[:, None] * a["stride"] + np.arange(k)[None, :]  # (L_out, K)
    cols = xp[:, idx, :]  # (N, L_out, K, Cin)
    acc = np.einsum("nlkc,ock->nlo", cols, w) + c["bias"].astype(np.int64)
    q = requantize(acc, c["multiplier"], c["shift"]) + int(a["output_offset"])
    return np.clip(q, a["act_min"], a["act_max"])


def _sum_sq_diff(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    n = len(srcs[0])
    d = srcs[0].reshape(n, -1).astype(np.int64) - srcs[1].reshape(n, -1).astype(np.int64)
    return (d * d).sum(axis=1)


def _sum_sq(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    x = srcs[0].astype(np.int64)
    return (x * x).sum(axis=1)


def _max_abs(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    return np.abs(srcs[0].astype(np.int64)).max(axis=1)


def _min_sq_dist(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    x = srcs[0].astype(np.int64)  # (N, D)
    cen = op.consts["centroids"].astype(np.int64)  # (K, D)
    best = np.full(len(x), np.iinfo(np.int64).max)
    for c in cen:  # one centroid at a time keeps memory at (N, D)
        best = np.minimum(best, ((x - c) ** 2).sum(axis=1))
    return best


#: Largest ``k`` of ``knn_dist_s16`` (the C kernel keeps the k nearest in a fixed stack array).
KNN_MAX_K = 64


def _knn_dist(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    """Sum of ``isqrt`` of the ``k`` smallest squared distances to the prototypes (k clamped to
    [1, min(n_prototypes, KNN_MAX_K)], as the C kernel does)."""
    x = srcs[0].astype(np.int64)  # (N, D)
    protos = op.consts["prototypes"].astype(np.int64)  # (P, D)
    k = max(1, min(int(op.attrs["k"]), len(protos), KNN_MAX_K))
    d2 = np.stack([((x - p) ** 2).sum(axis=1) for p in protos], axis=1)  # (N, P), one prototype at a time
    return isqrt_u64(np.sort(d2, axis=1)[:, :k]).sum(axis=1)


def _bounds_violation(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    """Largest per-channel violation of the window (N, W, C): value range and step limit, each rescaled."""
    x = srcs[0].astype(np.int64)
    c = op.consts
    over = np.maximum(x.max(axis=1) - c["hi"], c["lo"] - x.min(axis=1))
    fast = np.abs(np.diff(x, axis=1)).max(axis=1) - c["rate"]
    value = requantize(over, c["value_multiplier"], c["value_shift"])
    step = requantize(fast, c["rate_multiplier"], c["rate_shift"])
    return np.maximum(value, step).max(axis=1)


def _iforest_path(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    """Sum over the packed trees of ``32767 - leaf value`` (see :mod:`tinywarden.detectors.iforest`):
    a short path, i.e. an easily isolated input, gives a large total."""
    x = srcs[0].astype(np.int64)  # (N, D), Q7.8 scaled features
    c = op.consts
    feature, left = c["feature"].astype(np.intp), c["left"].astype(np.intp)
    threshold = c["threshold"].astype(np.int64)
    rows = np.arange(len(x))
    total = np.zeros(len(x), dtype=np.int64)
    for start in c["tree_start"].astype(np.intp):
        node = np.full(len(x), start, dtype=np.intp)
        while True:  # children follow their parent (breadth-first), so every row reaches a leaf
            inner = left[node] != 0
            if not inner.any():
                break
            idx = node[inner]
            node[inner] = start + left[idx] + (x[rows[inner], feature[idx]] > threshold[idx])
        total += 32767 - threshold[node]
    return total


#: Largest per-channel mean robust z-score of ``ar_residual_s16`` (its square, summed over up to 2**14
#: channels, stays within int64).
AR_Z_MAX = 2**24


def _ar_residual(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    """Per channel, the mean absolute AR forecast miss over the last ``horizon`` steps of the window
    (N, W, C), requantized to a z-score; then the max (``aggregate`` 0) or sum of squares (1) over channels."""
    x = srcs[0].astype(np.int64)
    a, c = op.attrs, op.consts
    order, horizon, n_ch = int(a["order"]), int(a["horizon"]), x.shape[2]
    coef = c["coef"].astype(np.int64).reshape(n_ch, order)
    t0 = x.shape[1] - horizon
    acc = x[:, t0:, :] * (1 << int(a["frac_bits"])) - c["bias"].astype(np.int64)
    for i in range(order):
        acc -= x[:, t0 - i - 1 : x.shape[1] - i - 1, :] * coef[:, i]
    total = np.abs(acc).sum(axis=1)  # (N, C)
    z = np.minimum(requantize(total >> c["pre_shift"].astype(np.int64), c["multiplier"], c["shift"]), AR_Z_MAX)
    return z.max(axis=1) if int(a["aggregate"]) == 0 else (z * z).sum(axis=1)


def _rbf_kernel_sum(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    """``(sum_j alpha_j (T[0] - k_j)) >> 15 + max(0, min_j u_j - tail_from)``: the RBF kernel
    ``k_j = 2**-u_j`` is read from the Q15 table ``T`` of ``2**(-f / 2**frac_bits)``, ``u_j`` is the
    requantized squared distance to support vector ``j``. From ``u = tail_from`` on every ``k`` is 0 and
    the first term is at its top, so the second one keeps ranking windows by their nearest support vector
    (as the float score still does, with kernel values far below Q15)."""
    x = srcs[0].astype(np.int64)  # (N, D)
    c = op.consts
    table = c["exp2"].astype(np.int64)
    bits = int(op.attrs["frac_bits"])
    total = np.zeros(len(x), dtype=np.int64)
    nearest = np.full(len(x), INT32_MAX, dtype=np.int64)
    for v, a in zip(c["support_vectors"].astype(np.int64), c["alpha"].astype(np.int64), strict=True):
        d2 = ((x - v) ** 2).sum(axis=1)
        u = requantize(d2 >> int(c["pre_shift"][0]), c["multiplier"][0], c["shift"][0])  # >= 0
        whole = u >> bits
        k = np.where(whole < 32, table[u & ((1 << bits) - 1)] >> np.minimum(whole, 31), 0)
        total += a * (table[0] - k)
        nearest = np.minimum(nearest, u)
    return (total >> 15) + np.maximum(0, nearest - int(op.attrs["tail_from"]))


#: Largest GRU hidden size (the C kernel keeps the int16 state on its stack) and the clamp of its Q12
#: pre-activations (+-256: far beyond where tanh and the sigmoid saturate, and r * gate stays in int64).
GRU_MAX_HIDDEN = 32
GRU_PREACT_MAX = 2**20


def _round_shift(x: np.ndarray, s: int) -> np.ndarray:
    """``x / 2**s`` rounded half away from zero, without right-shifting a negative number (as the C)."""
    half = np.int64(1 << (s - 1))
    return np.where(x >= 0, (x + half) >> s, -((-x + half) >> s))


def _tanh_lookup(table: np.ndarray, p: np.ndarray, bits: int) -> np.ndarray:
    """Linear interpolation in the 257-entry Q15 table at ``p >= 0`` (``2**bits`` units between entries)."""
    i = np.minimum(p >> bits, 256)
    f = p & ((1 << bits) - 1)
    lo, hi = table[i], table[np.minimum(i + 1, 256)]
    return lo + (((hi - lo) * f + (1 << (bits - 1))) >> bits)  # the table rises, so hi - lo >= 0


def _gru(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    """GRU over the int8 window (N, W, C) from a zero int16 Q15 state; int8 read-out of every step in
    the input's quantization (forecast: out[0] = x[0], out[t + 1] from the state after step t)."""
    x = srcs[0].astype(np.int64)
    a, c = op.attrs, op.consts
    xin = x + int(a["input_offset"])
    hid, forecast = int(a["hidden"]), int(a["forecast"])
    table = c["tanh"].astype(np.int64)
    w_ih, w_hh, w_out = (c[k].astype(np.int64) for k in ("w_ih", "w_hh", "w_out"))
    n, w, ch = x.shape
    h = np.zeros((n, hid), dtype=np.int64)
    out = np.empty((n, w, ch), dtype=np.int64)
    if forecast:
        out[:, 0] = x[:, 0]

    def tanh_q15(v: np.ndarray) -> np.ndarray:
        return _tanh_lookup(table, np.clip(v + 32768, 0, 65536), 8)

    def sigmoid_q15(v: np.ndarray) -> np.ndarray:  # (1 + tanh(v / 2)) / 2
        return (32768 + _tanh_lookup(table, np.clip(v + 65536, 0, 131072), 9)) >> 1

    for t in range(w - forecast):
        gi = np.clip(requantize(xin[:, t] @ w_ih.T + c["b_ih"], c["ih_multiplier"], c["ih_shift"]),
                     -GRU_PREACT_MAX, GRU_PREACT_MAX)
        gh = np.clip(requantize(h @ w_hh.T + c["b_hh"], c["hh_multiplier"], c["hh_shift"]),
                     -GRU_PREACT_MAX, GRU_PREACT_MAX)
        r = sigmoid_q15(gi[:, :hid] + gh[:, :hid])
        z = sigmoid_q15(gi[:, hid : 2 * hid] + gh[:, hid : 2 * hid])
        cand = tanh_q15(gi[:, 2 * hid :] + _round_shift(r * gh[:, 2 * hid :], 15))
        h = cand + _round_shift(z * (h - cand), 15)
        y = requantize(h @ w_out.T + c["b_out"], c["out_multiplier"], c["out_shift"]) + int(a["output_offset"])
        out[:, t + forecast] = np.clip(y, -128, 127)
    return out


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ConfigError(what)


def _shape(op: Op, name: str) -> tuple[int, ...]:
    return tuple(np.asarray(op.consts[name]).shape)


def _attr(op: Op, name: str, lo: int, hi: int) -> int:
    v = op.attrs.get(name)
    _require(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and lo <= int(v) <= hi,
             f"attribute {name!r} must be an integer in [{lo}, {hi}], got {v!r}")
    return int(v)  # type: ignore[arg-type]


def _check_knn(op: Op, p: Program) -> None:
    _attr(op, "shift", 0, 62)
    _attr(op, "k", 1, INT32_MAX)  # clamped to the prototypes and KNN_MAX_K by both kernels
    n = p.tensor(op.src[0]).size
    _require(len(_shape(op, "prototypes")) == 2 and _shape(op, "prototypes")[0] >= 1
             and _shape(op, "prototypes")[1] == n, f"prototypes must be (n_prototypes, {n})")


def _check_bounds(op: Op, p: Program) -> None:
    _attr(op, "shift", 0, 62)
    _require(op.src == ("window",), "it reads the window")
    bad = [c for c in op.consts if _shape(op, c) != (p.n_channels,)]
    _require(not bad, f"constant(s) {', '.join(bad)} must have one entry per channel ({p.n_channels})")


def _check_iforest(op: Op, p: Program) -> None:
    _attr(op, "shift", 0, 62)
    c = op.consts
    n_nodes, n_in = len(c["left"]), p.tensor(op.src[0]).size
    _require(_shape(op, "feature") == _shape(op, "threshold") == _shape(op, "left") == (n_nodes,),
             "feature, threshold and left must be 1-D of one length")
    starts = np.asarray(c["tree_start"]).astype(np.int64)
    _require(starts.ndim == 1 and 1 <= len(starts) <= 256 and starts[0] == 0 and bool(np.all(np.diff(starts) > 0))
             and int(starts[-1]) < n_nodes, "tree_start must rise from 0 and stay inside the nodes (<= 256 trees)")
    ends = np.append(starts[1:], n_nodes)
    for t, (lo, hi) in enumerate(zip(starts, ends, strict=True)):
        left = np.asarray(c["left"][lo:hi]).astype(np.int64)
        inner = np.flatnonzero(left)
        # the C walk has no checks: every child must follow its parent inside the tree, every feature exist
        _require(not len(inner) or not ((left[inner] <= inner).any() or (left[inner] + 1 >= hi - lo).any()
                                        or (np.asarray(c["feature"][lo:hi])[inner] >= n_in).any()),
                 f"isolation forest tree {t} is malformed (a child before its parent, outside the tree, or a "
                 f"feature index >= {n_in}); fit the detector again")


def _check_ar(op: Op, p: Program) -> None:
    _attr(op, "shift", 0, 62)
    _require(op.src == ("window",), "it reads the window")
    order = _attr(op, "order", 1, 16)
    _attr(op, "horizon", 1, p.window - order)
    _attr(op, "frac_bits", 0, 20)
    _attr(op, "aggregate", 0, 1)
    ch = p.n_channels
    _require(_shape(op, "coef") == (ch * order,), f"coef must hold {ch} x {order} coefficients")
    bad = [n for n in ("bias", "pre_shift", "multiplier", "shift") if _shape(op, n) != (ch,)]
    _require(not bad, f"constant(s) {', '.join(bad)} must have one entry per channel ({ch})")
    pre = np.asarray(op.consts["pre_shift"])
    _require(bool(np.all((pre >= 0) & (pre <= 62))), "pre_shift must be in [0, 62]")


def _check_rbf(op: Op, p: Program) -> None:
    _attr(op, "shift", 0, 62)
    bits = _attr(op, "frac_bits", 1, 12)
    _attr(op, "tail_from", 0, INT32_MAX)
    n = p.tensor(op.src[0]).size
    sv = _shape(op, "support_vectors")
    _require(len(sv) == 2 and sv[0] >= 1 and sv[1] == n, f"support_vectors must be (n_sv, {n})")
    _require(_shape(op, "alpha") == (sv[0],) and bool(np.all(np.asarray(op.consts["alpha"]) >= 0)),
             "alpha must hold one non-negative weight per support vector")
    _require(_shape(op, "exp2") == (2**bits,) and bool(np.all(np.asarray(op.consts["exp2"]) >= 0)),
             f"exp2 must hold 2**frac_bits = {2**bits} non-negative entries")
    _require(all(_shape(op, k) == (1,) for k in ("pre_shift", "multiplier", "shift"))
             and 0 <= int(op.consts["pre_shift"][0]) <= 62, "pre_shift, multiplier, shift must be one value each")


def _check_pca(op: Op, p: Program) -> None:
    n_in = int(np.prod(p.tensor(op.src[0]).shape))
    k = _shape(op, "weights")[0]
    _require(_shape(op, "weights") == (k, n_in) and 1 <= k <= PCA_MAX_AXES,
             f"weights must be (k <= {PCA_MAX_AXES}, {n_in})")
    _require(_shape(op, "multiplier") == (k,) and _shape(op, "shift") == (k,), "one multiplier and shift per axis")
    _require(_shape(op, "gram") == (k * (k + 1) // 2,), "gram must be the k x k upper triangle")
    _require(n_in <= PCA_MAX_INPUTS, f"{n_in} inputs: at most {PCA_MAX_INPUTS} keep the int32 accumulator exact")
    _attr(op, "gram_shift", 1, 40)


def _check_gru(op: Op, p: Program) -> None:
    hid = _attr(op, "hidden", 1, GRU_MAX_HIDDEN)
    _attr(op, "forecast", 0, 1)
    _attr(op, "input_offset", -255, 255)
    _attr(op, "output_offset", -128, 127)
    src = p.tensor(op.src[0]).shape
    _require(len(src) == 2 and src[0] >= 2 and p.tensor(op.dst).shape == src, "input and recon must be (window, C)")
    ch = src[1]
    want = {"w_ih": (3 * hid, ch), "w_hh": (3 * hid, hid), "w_out": (ch, hid), "tanh": (257,),
            **{f"{g}_{k}": (3 * hid,) for g in ("ih", "hh") for k in ("multiplier", "shift")},
            "b_ih": (3 * hid,), "b_hh": (3 * hid,), "b_out": (ch,), "out_multiplier": (ch,), "out_shift": (ch,)}
    bad = [k for k, s in want.items() if _shape(op, k) != s]
    _require(not bad, f"constant(s) {', '.join(bad)} do not match hidden={hid}, channels={ch}")
    _require(bool(np.all(np.diff(np.asarray(op.consts["tanh"]).astype(np.int64)) >= 0)),
             "the tanh table must not fall (the interpolation assumes it)")


def score_total(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    """The int64 total a score kernel computes before its right shift (used to choose that shift)."""
    return _SCORE_TOTALS[op.kind](srcs, op)


def _score(total_fn: Kernel) -> Kernel:
    def kernel(srcs: list[np.ndarray], op: Op) -> np.ndarray:
        return saturate(total_fn(srcs, op) >> int(op.attrs["shift"]), "int32")[:, None]

    return kernel


_SCORE_TOTALS: dict[str, Kernel] = {
    "sum_sq_diff_s8": _sum_sq_diff, "sum_sq_s16": _sum_sq,
    "max_abs_s16": _max_abs, "min_sq_dist_s16": _min_sq_dist,
    "knn_dist_s16": _knn_dist, "bounds_violation_s16": _bounds_violation, "iforest_path_s16": _iforest_path,
    "ar_residual_s16": _ar_residual, "rbf_kernel_sum_s16": _rbf_kernel_sum, "pca_residual_s16": _pca_residual,
}


# Shifts are in [-31, 30] (see quantize_multiplier): stored as int8, which saves 3 bytes per channel of flash.
# pre_shift is in [0, 62] and the offset is subtracted after it (the quantizer raises pre_shift until the
# offset fits int32): 5 bytes per feature less than int32/int64.
_REQ = {"pre_shift": "int8", "offset": "int32", "multiplier": "int32", "shift": "int8"}
_LAYER = {"weights": "int8", "bias": "int32", "multiplier": "int32", "shift": "int8"}

#: Every kernel a program may use, by name; the C templates in ``codegen/templates/kernels`` mirror them.
KERNELS: dict[str, KernelSpec] = {
    "features_s16": KernelSpec(features_s16, ("int16",), "int64", {"codes": "int32", "z0": "int32"},
                               "integer window features, see features_s16"),
    "requantize_s64_s8": KernelSpec(_requantize_s64, ("int64",), "int8", _REQ,
                                    "q = clamp(zp + requantize(sat32((f >> pre_shift) - offset)))"),
    "requantize_s64_s16": KernelSpec(_requantize_s64, ("int64",), "int16", _REQ,
                                     "as requantize_s64_s8 with an int16 result"),
    "requantize_s16_s8": KernelSpec(_requantize_s16_s8, ("int16",), "int8",
                                    {"offset": "int32", "multiplier": "int32", "shift": "int8"},
                                    "per-channel window rescaling: clamp(zp + requantize(q - offset[c]))"),
    "fully_connected_s8": KernelSpec(_fully_connected_s8, ("int8",), "int8", _LAYER,
                                     "CMSIS-NN fully connected, per-channel weights"),
    "convolve_1d_s8": KernelSpec(_convolve_1d_s8, ("int8",), "int8", _LAYER,
                                 "1-D convolution (optional nearest x2 upsampling first), per-channel"),
    "sum_sq_diff_s8": KernelSpec(_score(_sum_sq_diff), ("int8", "int8"), "int32", {},
                                 "score = sat32(sum (a - b)**2 >> shift)"),
    "sum_sq_s16": KernelSpec(_score(_sum_sq), ("int16",), "int32", {}, "score = sat32(sum q**2 >> shift)"),
    "max_abs_s16": KernelSpec(_score(_max_abs), ("int16",), "int32", {}, "score = sat32(max |q| >> shift)"),
    "min_sq_dist_s16": KernelSpec(_score(_min_sq_dist), ("int16",), "int32", {"centroids": "int16"},
                                  "score = sat32(min_j sum (q - c_j)**2 >> shift)"),
    "knn_dist_s16": KernelSpec(_score(_knn_dist), ("int16",), "int32", {"prototypes": "int16"},
                               "score = sat32(sum over the k nearest p_j of isqrt(sum (q - p_j)**2) >> shift)",
                               check=_check_knn),
    "bounds_violation_s16": KernelSpec(
        _score(_bounds_violation), ("int16",), "int32",
        {"lo": "int32", "hi": "int32", "rate": "int32", "value_multiplier": "int32", "value_shift": "int8",
         "rate_multiplier": "int32", "rate_shift": "int8"},
        "score = max over channels of requantize(max(max q - hi, lo - min q)) and "
        "requantize(max |q[t] - q[t-1]| - rate), floor-shifted right by shift (it may be negative)",
        check=_check_bounds),
    "iforest_path_s16": KernelSpec(
        _score(_iforest_path), ("int16",), "int32",
        {"feature": "uint8", "threshold": "int16", "left": "uint8", "tree_start": "uint16"},
        "score = sat32(sum over trees of (32767 - Q8.8 leaf path length) >> shift), packed isolation trees",
        check=_check_iforest),
    "ar_residual_s16": KernelSpec(
        _score(_ar_residual), ("int16",), "int32",
        {"coef": "int32", "bias": "int64", "pre_shift": "int32", "multiplier": "int32", "shift": "int8"},
        "per channel z = min(requantize(sum_t |q[t] 2^F - sum_i coef_i q[t-i] - bias| >> pre_shift), 2^24); "
        "score = sat32((max_c z or sum_c z^2) >> shift)", check=_check_ar),
    "rbf_kernel_sum_s16": KernelSpec(
        _score(_rbf_kernel_sum), ("int16",), "int32",
        {"support_vectors": "int16", "alpha": "int16", "exp2": "int16", "pre_shift": "int32",
         "multiplier": "int32", "shift": "int8"},
        "one-class SVM: score = sat32(((sum_j alpha_j (T[0] - 2**-u_j from table T)) >> 15 "
        "+ max(0, min_j u_j - tail_from)) >> shift), u_j = requantize(|q - sv_j|**2 >> pre_shift)",
        check=_check_rbf),
    "pca_residual_s16": KernelSpec(
        _score(_pca_residual), ("int16",), "int32",
        {"weights": "int8", "multiplier": "int32", "shift": "int8", "gram": "int8"},
        "PCA: r_j = clamp(requantize(sum_i w_ji q_i), +-2^20); score = sat32(max(0, sum q^2 - sum r_j^2 "
        "- round(r^T D r / 2^gram_shift)) >> shift), D the int8 upper triangle 'gram'",
        check=_check_pca),
    "gru_s8": KernelSpec(
        _gru, ("int8",), "int8",
        {**{f"{g}{k}": dt for g in ("ih_", "hh_", "out_") for k, dt in (("multiplier", "int32"), ("shift", "int8"))},
         "w_ih": "int8", "b_ih": "int32", "w_hh": "int8", "b_hh": "int32", "w_out": "int8", "b_out": "int32",
         "tanh": "int16"},
        "GRU (PyTorch gate order r|z|n): int8 input, int16 Q15 state, Q12 pre-activations, tanh/sigmoid "
        "by interpolation in a Q15 table, int8 read-out per step", check=_check_gru),
}


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


class Int8Stream:
    """Firmware-style interpreter: push one sample, get ``(score, anomaly)`` when a window completes.

    It mirrors the C ``tw_push`` step by step (ring buffer, then the ops on the one window); the batch
    :func:`run_int8` must give the same numbers.
    """

    def __init__(self, program: Program) -> None:
        self.program = program
        self.ring = np.zeros((program.window, program.n_channels), dtype=np.int16)
        self.persistence = Persistence(program.k, program.n)
        self.reset()

    def reset(self) -> None:
        """Forget every sample and flag (``tw_init``)."""
        self.head, self.filled, self.phase = 0, 0, 0
        self.persistence.reset()

    def push(self, sample: np.ndarray) -> tuple[int, int] | None:
        s = np.asarray(sample)
        q = s if s.dtype == np.int16 else quantize_samples(self.program, s.reshape(1, -1))[0]
        p = self.program
        self.ring[self.head] = q
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
        score = int(run_windows(p, win)[0])
        return score, int(self.persistence.push(score > p.threshold))


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
        )
        program.validate()
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{source}: malformed int8 program ({type(exc).__name__}: {exc})") from None
    except ConfigError as exc:
        raise ModelFileError(f"{source}: invalid int8 program: {exc}") from None
    return program
