"""The calibrated anomaly likelihood (:mod:`tinywarden.likelihood`) in integer arithmetic, after the score.

Unlike the window kernels of :data:`tinywarden.kernels.KERNELS` this step has state that lives from one
window to the next (the short-term ring and the running mean and variance), so it is not an ordinary op: a
:class:`~tinywarden.program.Program` holds it as its optional ``likelihood`` :class:`Op` (kind
:data:`KIND`, source ``"score"``, destination ``"confidence"``), the quantizer builds it from the int32
calibration scores (:func:`lower_likelihood`), :func:`confidence_q` is the Python integer reference and
:mod:`tinywarden.codegen.c` prints :data:`C_TEMPLATE` into ``tw_push_q``. Per window, with the int32
``score``:

1. ``x = ((max(score, lo) - lo) << k) + spread`` (uint64; ``spread = round(spread_f * 2**k)``, ``k`` chosen so
   the float spread keeps >= 10 bits) and ``y = log2(x)`` in Q16: the position ``b`` of the top bit, then
   the next 6 bits index :data:`LOG2_TABLE` (``log2(1 + i/64)`` in Q15, 65 entries) and the next 16 bits
   interpolate linearly (error < 5e-5). ``log2`` instead of ``ln`` and the ``k`` offset only scale and
   shift ``y``, which the fitted mean and variance absorb.
2. the short-term level ``sum / count`` of the last ``short`` values of ``y`` (Q16, non-negative);
3. ``d = level * 2**16 - mean`` (mean in Q32), ``d16 = d >> 16``; ``std = isqrt(var)`` (var in Q32, std
   in Q16, ``>= 1``);
4. ``u = clamp(d16, -4 std, (n - 1)/8 std - 4 std) + 4 std`` and ``zq = ((u >> sh) << 12) / (std >> sh)``
   (``sh`` the fewest bits that bring ``std`` below ``2**14``: a 32-bit division), the table position in
   1/512 steps: ``confidence = T[i] + ((T[i+1] - T[i]) * f >> 9)`` with ``i = zq >> 9``,
   ``f = zq & 511``; ``T`` (``conf_table``, uint16 Q15, non-decreasing) holds ``clip(-log10 Q(z) /
   decades, 0, 1)`` at ``z = -4 + i/8``, so the last entry is 32768 (confidence 1) once ``z >= z_max``;
5. the rate shift is ``rate_shift``, plus ``slow_shift`` when ``gate >= 0`` and ``d16 * 2**12 > gate *
   std`` (z above the gate, gate in Q12); ``mean += d >> rs``; ``v = var + (d16**2 >> rs)``, ``v -= v >>
   rs``, ``var = max(v, var_floor)``;
6. new record (only when the op has ``record``, the tolerance in Q16): with ``rec_lo < rec_hi`` (int32 state,
   starting from the calibration scores' range), a score above ``rec_hi + ((rec_hi - rec_lo) * record >> 16)``
   reports :data:`CONF_ONE`; then ``rec_lo = min(rec_lo, score)``, ``rec_hi = max(rec_hi, score)``;
7. hold-off (only when the op has a ``holdoff`` attribute above 0; the C is compiled in only then): the
   reported confidence is 0 while ``hold > 0`` (``hold`` counts down by one per window) and a confidence of at
   least :data:`HOLDOFF_Q` (0.5) sets ``hold = holdoff``;
8. value record (only when the op has ``vrecord``, the tolerance in Q16, and the int16 per-channel training
   range ``value_lo`` / ``value_hi``, the float record's range through the program's sample quantization): on
   every pushed sample (``tw_push_q``, before the window check) and every channel ``c``, with ``lo = vlo[c] <
   hi = vhi[c]`` (int16 state) and ``m = (hi - lo) * vrecord >> 16``, a sample ``q > hi + m`` or ``q < lo - m``
   latches ``vnew``; then ``vlo[c] = min(lo, q)``, ``vhi[c] = max(hi, q)``. The window's step reports
   :data:`CONF_ONE` when ``vnew`` is set and clears it (before the hold-off, as the record rule). The samples are
   the int16 the device holds: a NaN sample (0 after quantization) is checked as 0, unlike the float record,
   which skips it. The C reaches the same flags and range on groups of samples: through the block extremes the
   features keep (:data:`C_VALUE_GROUP`), else, when the module keeps the raw ring (the raw-window families),
   on each completed group of ``gcd(window, stride)`` ring rows (:data:`C_VALUE_ROWS`); every push only when
   neither is there.

Every quantity is an integer; C and Python agree bit for bit (signed right shifts floor, divisions are of
non-negative numbers). The confidence is Q15 (:data:`CONF_ONE` = 1.0).

>>> from tinywarden.likelihood import AnomalyLikelihood
>>> rng = np.random.default_rng(0)
>>> train = np.round(rng.gamma(2.0, size=500) * 1000).astype(np.int32)
>>> op = lower_likelihood(AnomalyLikelihood().fit(train))
>>> c = confidence_q(op, np.r_[train[:300], np.full(10, 40000, dtype=np.int32)])
>>> bool(c[:300].max() < CONF_ONE // 2 < c[-1])
True
>>> vop = with_value_record(op, 0.05, np.array([0], np.int16), np.array([1000], np.int16))
>>> value_hits_q(vop, np.array([[1040], [1100], [1150], [-60]], np.int16), np.array([0, 1, 2, 3])).tolist()
[False, True, False, True]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from string import Template
from typing import Any

import numpy as np

from tinywarden.kernels.base import Op, const_shape, int_attr, require
from tinywarden.likelihood import HOLDOFF_LEVEL, MAX_HOLDOFF, MAX_RECORD, AnomalyLikelihood, confidence_of_z

KIND = "likelihood_q"
#: The confidence of 1.0 in the Q15 output.
CONF_ONE = 1 << 15
#: log2 table: 2**LOG_TABLE_BITS intervals of the mantissa.
LOG_TABLE_BITS = 6
#: ``log2(1 + i/64)`` in Q15, i = 0..64 (the last entry is 1.0 = 32768).
LOG2_TABLE = np.array([round(math.log2(1 + i / 64) * 32768) for i in range(65)], dtype=np.uint16)
#: The confidence table starts at z = Z_MIN and steps by 2**-Z_STEP_BITS.
Z_MIN = -4
Z_STEP_BITS = 3
#: Interpolation positions between two knots of the confidence table.
Z_FRAC_BITS = 9
#: ``std`` is shifted below ``2**DIV_BITS`` before the division (so ``u << 12`` stays below ``2**31``).
DIV_BITS = 14
#: ``spread * 2**k`` keeps at least this many bits.
SPREAD_BITS = 10
MAX_SHORT = 256
MAX_CONF_TABLE = 256
MAX_MEAN = 2**40
MAX_VAR = 2**46
MAX_GATE = 2**24
#: Fraction bits of the record tolerance.
RECORD_BITS = 16
#: The Q15 confidence that starts a hold-off (:data:`tinywarden.likelihood.HOLDOFF_LEVEL`).
HOLDOFF_Q = round(HOLDOFF_LEVEL * CONF_ONE)
#: ``TW_*`` names of the limits, for the generated C.
LIMITS = {"TW_LIK_CONF_ONE": CONF_ONE, "TW_LIK_HOLDOFF_Q": HOLDOFF_Q}


# -- fitting (the quantizer's side) ----------------------------------------------------------------
def conf_table(decades: float) -> np.ndarray:
    """uint16 Q15 confidences at ``z = Z_MIN + i / 2**Z_STEP_BITS`` up to the first knot where it is 1."""
    zs = [float(Z_MIN)]
    while confidence_of_z(zs[-1], decades) < 1.0 and len(zs) < MAX_CONF_TABLE:
        zs.append(Z_MIN + len(zs) / 2**Z_STEP_BITS)
    return np.round(confidence_of_z(np.array(zs), decades) * CONF_ONE).astype(np.uint16)


def lower_likelihood(lik: AnomalyLikelihood) -> Op:
    """The integer likelihood step of a likelihood fitted on the program's int32 calibration scores."""
    st = lik.state()
    spread = st["spread"]
    k = int(min(max(SPREAD_BITS - math.floor(math.log2(spread)), 0), 30))
    spread_q = max(1, min(round(spread * 2**k), 2**32))
    lo = int(max(min(math.floor(st["lo"]), 2**31 - 1), -(2**31)))
    to_log2 = 1.0 / math.log(2.0)
    mean = (st["mean"] * to_log2 + k) * 2**32
    std_floor = max(1, round(st["std_floor"] * to_log2 * 2**16))
    var_floor = std_floor * std_floor
    var = max(round(st["var"] * to_log2**2 * 2**32), var_floor)
    gate = -1 if lik.gate is None else min(round(lik.gate * 2**12), MAX_GATE)
    attrs = {"short": lik.short, "lo": lo, "k": k, "spread": int(spread_q),
             "mean": int(min(max(round(mean), 0), MAX_MEAN)), "var": int(min(var, MAX_VAR)),
             "var_floor": int(min(var_floor, MAX_VAR)), "rate_shift": lik.rate_shift, "slow_shift": lik.slow_shift,
             "gate": int(gate)}
    if lik.record is not None:  # absent when off (a model written before the rule has none)
        attrs["record"] = round(lik.record * 2**RECORD_BITS)
        attrs["rec_lo"] = lo
        attrs["rec_hi"] = int(max(min(math.ceil(st["hi"]), 2**31 - 1), lo))
    if lik.holdoff:  # absent when off, so the programs (and model ids) of likelihoods without one are unchanged
        attrs["holdoff"] = int(lik.holdoff)
    return Op(KIND, ("score",), "confidence", attrs, {"conf_table": conf_table(lik.decades)})


def with_value_record(op: Op, tolerance: float, value_lo: np.ndarray, value_hi: np.ndarray) -> Op:
    """``op`` with the value record (step 8): ``tolerance`` a fraction of the range, ``value_lo`` / ``value_hi`` the
    int16 training range per channel (the program's quantization of the float record's range)."""
    lo, hi = np.asarray(value_lo, dtype=np.int16).ravel(), np.asarray(value_hi, dtype=np.int16).ravel()
    attrs = {**op.attrs, "vrecord": round(tolerance * 2**RECORD_BITS)}
    return Op(op.kind, op.src, op.dst, attrs, {**op.consts, "value_lo": lo, "value_hi": hi})


def without_value_record(op: Op) -> Op:
    """``op`` without step 8 (attribute and range constants): what the value record adds is measured against it."""
    attrs = {k: v for k, v in op.attrs.items() if k != "vrecord"}
    consts = {k: v for k, v in op.consts.items() if k not in ("value_lo", "value_hi")}
    return Op(op.kind, op.src, op.dst, attrs, consts)


def check_likelihood(op: Op) -> None:
    """ConfigError when a (possibly tampered) likelihood step would leave the documented integer ranges."""
    require(op.kind == KIND and op.src == ("score",) and op.dst == "confidence",
            f"the likelihood step must be {KIND}: score -> confidence")
    int_attr(op, "short", 1, MAX_SHORT)
    int_attr(op, "lo", -(2**31), 2**31 - 1)
    int_attr(op, "k", 0, 30)
    int_attr(op, "spread", 1, 2**32)
    int_attr(op, "mean", 0, MAX_MEAN)
    floor = int_attr(op, "var_floor", 1, MAX_VAR)
    int_attr(op, "var", floor, MAX_VAR)
    int_attr(op, "rate_shift", 0, 20)
    int_attr(op, "slow_shift", 0, 20)
    int_attr(op, "gate", -1, MAX_GATE)
    if "holdoff" in op.attrs:
        int_attr(op, "holdoff", 0, MAX_HOLDOFF)
    if "record" in op.attrs:
        int_attr(op, "record", 0, int(MAX_RECORD) << RECORD_BITS)
        rec_lo = int_attr(op, "rec_lo", -(2**31), 2**31 - 1)
        int_attr(op, "rec_hi", rec_lo, 2**31 - 1)
    if "vrecord" in op.attrs:
        int_attr(op, "vrecord", 0, int(MAX_RECORD) << RECORD_BITS)
        lo, hi = (np.asarray(op.consts.get(k)) for k in ("value_lo", "value_hi"))
        require(lo.dtype == np.int16 and hi.dtype == np.int16 and lo.ndim == 1 and lo.shape == hi.shape
                and lo.size >= 1 and bool((lo <= hi).all()),
                "value_lo / value_hi must be int16 per-channel ranges of equal length with value_lo <= value_hi")
    t = np.asarray(op.consts.get("conf_table"))
    require(t.dtype == np.uint16 and t.ndim == 1 and 2 <= t.size <= MAX_CONF_TABLE,
            f"conf_table must be uint16 with 2 to {MAX_CONF_TABLE} entries")
    require(bool(np.all(np.diff(t.astype(np.int64)) >= 0)) and int(t.max()) <= CONF_ONE,
            f"conf_table must be non-decreasing within [0, {CONF_ONE}]")
    require(const_shape(op, "conf_table") == (t.size,), "conf_table must be one-dimensional")


# -- the Python integer reference ------------------------------------------------------------------
def log2_q16(x: np.ndarray) -> np.ndarray:
    """``log2(x)`` in Q16 of int64 ``x`` in ``[1, 2**63)``, exactly as the C ``tw_log2_q16``."""
    x = np.asarray(x, dtype=np.int64)
    b = np.zeros(x.shape, dtype=np.int64)
    t = x.copy()
    for sh in (32, 16, 8, 4, 2, 1):
        m = t >= (np.int64(1) << sh)
        b += sh * m
        t = np.where(m, t >> sh, t)
    n = np.where(b <= 31, x << np.clip(31 - b, 0, 31), x >> np.clip(b - 31, 0, 62))  # in [2**31, 2**32)
    f = n - (1 << 31)
    idx = f >> (31 - LOG_TABLE_BITS)
    r = (f >> (15 - LOG_TABLE_BITS)) & 0xFFFF
    tab = LOG2_TABLE.astype(np.int64)
    frac = tab[idx] + (((tab[idx + 1] - tab[idx]) * r) >> 16)
    return (b << 16) + (frac << 1)


def log_level_q16(op: Op, scores: np.ndarray) -> np.ndarray:
    """Step 1 of the module docstring for every int32 score: ``y`` in Q16."""
    a = op.attrs
    s = np.asarray(scores).astype(np.int64)
    d = np.maximum(s, int(a["lo"])) - int(a["lo"])
    return log2_q16((d << int(a["k"])) + int(a["spread"]))


def value_rows_q(op: Op, lo: np.ndarray, hi: np.ndarray, rows: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 8 over int16 ``rows`` (``(n, channels)``, in time order) from the int16 range ``lo``, ``hi``: ``(per-row
    record flags, lo after, hi after)``, each sample against the range the samples before it left (as the C's
    ``tw_value_record_q``, one sample at a time)."""
    q = np.asarray(rows).astype(np.int64).reshape(-1, len(lo))
    up = np.maximum.accumulate(np.vstack((np.asarray(hi, dtype=np.int64), q)), axis=0)
    down = np.minimum.accumulate(np.vstack((np.asarray(lo, dtype=np.int64), q)), axis=0)
    h, lw = up[:-1], down[:-1]
    m = ((h - lw) * int(op.attrs["vrecord"])) >> RECORD_BITS
    beyond = (lw < h) & ((q > h + m) | (q < lw - m))
    return beyond.any(axis=1), down[-1], up[-1]


def value_hits_q(op: Op, samples: np.ndarray, end_rows: np.ndarray) -> np.ndarray:
    """Per window (ending at ``end_rows`` of the int16 ``samples`` pushed from ``tw_init``): whether a sample it
    adds (after the previous window's end; the first window: from row 0) sets a value record (step 8)."""
    lo, hi = (np.asarray(op.consts[k], dtype=np.int64) for k in ("value_lo", "value_hi"))
    ends = np.asarray(end_rows, dtype=np.int64)
    if len(ends) == 0:
        return np.zeros(0, dtype=bool)
    flags = value_rows_q(op, lo, hi, np.asarray(samples)[: int(ends[-1]) + 1])[0]
    count = np.concatenate(([0], np.cumsum(flags)))
    starts = np.r_[0, ends[:-1] + 1]
    return np.asarray(count[ends + 1] - count[starts] > 0)


class LikelihoodQStream:
    """The integer likelihood's state and one step (``tw_init`` then one ``tw_push_q`` window at a time)."""

    def __init__(self, op: Op) -> None:
        check_likelihood(op)
        self.op = op
        a: Mapping[str, Any] = op.attrs
        self.short, self.rate_shift, self.slow_shift = int(a["short"]), int(a["rate_shift"]), int(a["slow_shift"])
        self.gate, self.var_floor = int(a["gate"]), int(a["var_floor"])
        self.holdoff = int(a.get("holdoff", 0))
        self.record = int(a.get("record", -1))
        self.values = "vrecord" in a
        self.table = [int(v) for v in op.consts["conf_table"]]
        self.reset()

    def reset(self) -> None:
        self.ring = [0] * self.short
        self.pos = self.count = self.sum = 0
        self.mean, self.var = int(self.op.attrs["mean"]), int(self.op.attrs["var"])
        self.hold = 0
        self.rec_lo, self.rec_hi = int(self.op.attrs.get("rec_lo", 0)), int(self.op.attrs.get("rec_hi", 0))
        self.vlo = [int(v) for v in self.op.consts.get("value_lo", ())]
        self.vhi = [int(v) for v in self.op.consts.get("value_hi", ())]
        self.vnew = 0

    def observe_q(self, rows: np.ndarray) -> None:
        """Step 8 for int16 samples as they are pushed (one row or ``(n, channels)``): grows the range and latches
        ``vnew`` when one sets a record (nothing without a value record)."""
        if not self.values:
            return
        flags, lo, hi = value_rows_q(self.op, np.array(self.vlo), np.array(self.vhi), np.asarray(rows))
        self.vlo, self.vhi = [int(v) for v in lo], [int(v) for v in hi]
        self.vnew = int(self.vnew or bool(flags.any()))

    def step_log(self, y: int, score: int = 0) -> int:
        """Push one ``y`` (Q16, from :func:`log_level_q16`) of the int32 ``score``; the Q15 confidence."""
        record = False
        if self.record >= 0:
            lo, hi = self.rec_lo, self.rec_hi
            record = lo < hi and score > hi + (((hi - lo) * self.record) >> RECORD_BITS)
            self.rec_lo, self.rec_hi = min(lo, score), max(hi, score)
        self.sum += y - self.ring[self.pos]
        self.ring[self.pos] = y
        self.pos = self.pos + 1 if self.pos + 1 < self.short else 0
        self.count = min(self.count + 1, self.short)
        level = self.sum // self.count
        d = (level << 16) - self.mean
        d16 = d >> 16
        std = math.isqrt(self.var)
        n = len(self.table)
        u = min(max(d16, Z_MIN * std), ((n - 1) * std >> Z_STEP_BITS) + Z_MIN * std) - Z_MIN * std
        sh = max(0, std.bit_length() - DIV_BITS)  # u >> sh < 2**19: the division fits 32 bits
        zq = ((u >> sh) << (Z_STEP_BITS + Z_FRAC_BITS)) // (std >> sh)
        i, f = zq >> Z_FRAC_BITS, zq & ((1 << Z_FRAC_BITS) - 1)
        conf = self.table[n - 1] if i >= n - 1 else \
            self.table[i] + (((self.table[i + 1] - self.table[i]) * f) >> Z_FRAC_BITS)
        rs = self.rate_shift + (self.slow_shift if self.gate >= 0 and (d16 << 12) > self.gate * std else 0)
        self.mean += d >> rs
        v = self.var + ((d16 * d16) >> rs)
        v -= v >> rs
        self.var = max(v, self.var_floor)
        if record or self.vnew:
            conf = CONF_ONE
        self.vnew = 0
        if self.holdoff == 0:
            return conf
        out = conf if self.hold == 0 else 0
        self.hold = max(self.hold - 1, 0)
        if conf >= HOLDOFF_Q:
            self.hold = self.holdoff
        return out

    def push(self, score: int) -> int:
        return self.step_log(int(log_level_q16(self.op, np.array([score]))[0]), int(score))


def confidence_q(op: Op, scores: np.ndarray, value_hits: np.ndarray | None = None) -> np.ndarray:
    """uint16 Q15 confidences of an int32 window-score stream from the fitted state (the C, window by window);
    ``value_hits`` (:func:`value_hits_q`) says which windows' samples set a value record (none when None)."""
    stream = LikelihoodQStream(op)
    s = np.asarray(scores).astype(np.int64)
    hits = np.zeros(len(s), dtype=bool) if value_hits is None or not stream.values else np.asarray(value_hits)
    out = []
    for y, v, hit in zip(log_level_q16(op, s), s, hits, strict=True):
        stream.vnew = int(hit)
        out.append(stream.step_log(int(y), int(v)))
    return np.array(out, dtype=np.uint16)


def z_max(op: Op) -> float:
    """The ``z`` at which the table reaches its last entry (for documentation and reports)."""
    return Z_MIN + (len(op.consts["conf_table"]) - 1) / 2**Z_STEP_BITS


__all__ = ["C_TEMPLATE", "CONF_ONE", "C_VALUE_GROUP", "C_VALUE_GROUP_DECL", "C_VALUE_ROWS", "C_VALUE_ROWS_CALL",
           "C_VALUE_SAMPLE", "C_VALUE_TEMPLATE",
           "HOLDOFF_Q", "KIND", "LIMITS", "LOG2_TABLE",
           "LikelihoodQStream", "check_likelihood", "conf_table", "confidence_q", "log2_q16", "log_level_q16",
           "lower_likelihood", "value_hits_q", "value_rows_c", "value_rows_q", "with_value_record",
           "without_value_record",
           "z_max"]

# -- C ---------------------------------------------------------------------------------------------
#: Printed by :mod:`tinywarden.codegen.c` when the program has a likelihood step; ``${...}`` are the op's
#: attributes as C literals, ``tw_confidence_table`` its conf_table and ``tw_log2_table`` LOG2_TABLE.
C_TEMPLATE = r"""
/* log2(x) in Q16 for x in [1, 2^63) (tinywarden.kernels.likelihood_q.log2_q16): b = position of the top
 * bit, the next 6 bits of the mantissa index tw_log2_table (log2(1 + i/64), Q15), the next 16 interpolate.
 * In 32-bit words: w is the word that holds the top bit, z its leading zeros (CLZ where the core has it, else
 * counted bit by bit), then the 32 bits from the top bit down. Range: x >= 1; result in [0, 63 * 2^16). */
static int32_t tw_log2_q16(uint64_t x)
{
    uint32_t hi = (uint32_t)(x >> 32);
    uint32_t lo = (uint32_t)x;
    uint32_t w = (hi != 0u) ? hi : lo; /* != 0 */
    int32_t z = 0;
    uint32_t f;
    uint32_t idx;
    uint32_t r;
    int32_t t0;
    int32_t frac;
#if defined(__GNUC__) && !(defined(__ARM_ARCH_ISA_THUMB) && __ARM_ARCH_ISA_THUMB == 1)
    z = __builtin_clz(w);
    w <<= z;
#else
    while (w < UINT32_C(0x80000000)) { /* once a window: the shortest code */
        w <<= 1;
        z++;
    }
#endif
    if (hi != 0u && z != 0) {
        w |= lo >> (32 - z);
    }
    f = w - UINT32_C(0x80000000);
    idx = f >> 25;
    r = (f >> 9) & 0xFFFFu;
    t0 = (int32_t)tw_log2_table[idx];
    frac = t0 + (int32_t)((((uint32_t)tw_log2_table[idx + 1u] - (uint32_t)t0) * r) >> 16);
    return ((((hi != 0u) ? 63 : 31) - z) << 16) + (frac << 1);
}

/* floor(sqrt(v)). Range: v < 2^60 (the variance is at most 2^48). tw_isqrt_u64's when the module has it: the
 * same root, one copy of the code. */
static uint32_t tw_isqrt64(uint64_t v)
{
#if defined(TW_HAVE_ISQRT_U64)
    return (uint32_t)tw_isqrt_u64(v);
#else
    uint64_t r = 0u;
    uint64_t bit = UINT64_C(1) << 62;
    while (bit > v) {
        bit >>= 2;
    }
    while (bit != 0u) {
        if (v >= r + bit) {
            v -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
        bit >>= 2;
    }
    return (uint32_t)r;
#endif
}

/* The calibrated likelihood of this window's score (tinywarden.kernels.likelihood_q, steps 1-5): updates
 * s->lik_* and returns the confidence in Q15 (TW_LIK_CONF_ONE = 1.0). Range: any score; the state holds
 * lik_mean in [0, 2^40], lik_var in [TW_LIK_VAR_FLOOR, 2^48], 1 <= lik_count <= TW_LIK_SHORT after a window.
 * Hence (the level is below 63 * 2^16) |d| <= 2^40, |d16| <= 2^24, std <= 2^24 and u <= 2^29: those are int32;
 * the running mean and variance and the products that reach them are int64. */
static uint16_t tw_likelihood_q(tw_state_t *s, int32_t score)
{
    int64_t d;
    int64_t v;
    int32_t d16;
    int32_t std;
    int32_t u;
    int32_t hi;
    uint32_t zq;
    int32_t sh = 0;
    uint32_t i;
    uint32_t f;
    int32_t rs = TW_LIK_RATE_SHIFT;
    int32_t y;
    int32_t level;
    uint16_t conf;
    uint32_t above = (score > TW_LIK_LO) ? (uint32_t)score - (uint32_t)TW_LIK_LO : 0u; /* max(score, lo) - lo */
#if TW_LIK_RECORD >= 0
    int record = s->lik_rec_lo < s->lik_rec_hi &&
                 (int64_t)score > (int64_t)s->lik_rec_hi +
                                      ((((int64_t)s->lik_rec_hi - s->lik_rec_lo) * TW_LIK_RECORD) >> 16);
    if (score < s->lik_rec_lo) {
        s->lik_rec_lo = score;
    }
    if (score > s->lik_rec_hi) {
        s->lik_rec_hi = score;
    }
#endif
    y = tw_log2_q16(((uint64_t)above << TW_LIK_K) + (uint64_t)TW_LIK_SPREAD);
    s->lik_sum += y - s->lik_y[s->lik_pos];
    s->lik_y[s->lik_pos] = y;
    s->lik_pos = (uint8_t)((s->lik_pos + 1u < TW_LIK_SHORT) ? s->lik_pos + 1u : 0u); /* < TW_LIK_SHORT <= 256 */
    s->lik_count = (uint16_t)((s->lik_count < TW_LIK_SHORT) ? s->lik_count + 1u : TW_LIK_SHORT);
    level = s->lik_sum / (int32_t)s->lik_count;
    d = ((int64_t)level << 16) - s->lik_mean;
    d16 = (int32_t)(d >> 16);
    std = (int32_t)tw_isqrt64((uint64_t)s->lik_var);
    hi = (int32_t)(((uint32_t)(TW_LIK_TABLE_N - 1) * (uint32_t)std) >> 3) - 4 * std;
    u = ((d16 < -4 * std) ? -4 * std : ((d16 > hi) ? hi : d16)) + 4 * std;
    while ((std >> sh) >= ((int32_t)1 << 14)) {
        sh++;
    }
    zq = ((uint32_t)(u >> sh) << 12) / (uint32_t)(std >> sh); /* u >> sh < 2^19: 32-bit division */
    i = zq >> 9;
    f = zq & 511u;
    if (i >= (uint32_t)(TW_LIK_TABLE_N - 1)) {
        conf = tw_confidence_table[TW_LIK_TABLE_N - 1];
    } else {
        conf = (uint16_t)(tw_confidence_table[i] +
                          ((((uint32_t)tw_confidence_table[i + 1u] - tw_confidence_table[i]) * f) >> 9));
    }
#if TW_LIK_GATE >= 0
    if ((int64_t)d16 * 4096 > (int64_t)TW_LIK_GATE * std) {
        rs += TW_LIK_SLOW_SHIFT;
    }
#endif
    s->lik_mean += d >> rs;
    v = s->lik_var + (((int64_t)d16 * d16) >> rs);
    v -= v >> rs;
    s->lik_var = (v > TW_LIK_VAR_FLOOR) ? v : TW_LIK_VAR_FLOOR;
#if TW_LIK_RECORD >= 0
    if (record) {
        conf = TW_LIK_CONF_ONE;
    }
#endif
#if TW_LIK_VRECORD >= 0
    if (s->lik_vnew != 0u) {
        conf = TW_LIK_CONF_ONE;
    }
    s->lik_vnew = 0u;
#endif
#if TW_LIK_HOLDOFF > 0
    {
        uint16_t out = (s->lik_hold == 0u) ? conf : 0u;
        if (s->lik_hold > 0u) {
            s->lik_hold--;
        }
        if (conf >= TW_LIK_HOLDOFF_Q) {
            s->lik_hold = TW_LIK_HOLDOFF;
        }
        return out;
    }
#else
    return conf;
#endif
}
"""

#: Printed after the likelihood when the op has the value record (step 8): called by ``tw_push_q`` on every sample.
C_VALUE_TEMPLATE = r"""
/* The value record (tinywarden.kernels.likelihood_q, step 8): a sample beyond its channel's seen range
 * [lik_vlo, lik_vhi] by more than TW_LIK_VRECORD / 2^16 of it latches lik_vnew (the next window reports
 * TW_LIK_CONF_ONE); the range grows to hold every sample. A sample inside the range (nearly all) costs two
 * compares: the margin m = (hi - lo) * TW_LIK_VRECORD >> 16 >= 0 is computed only outside it.
 * Range: any sample; lik_vlo[c] <= lik_vhi[c]. */
static int32_t tw_value_margin(int32_t lo, int32_t hi)
{
#if TW_LIK_VRECORD < 65536
    return (int32_t)(((uint32_t)(hi - lo) * (uint32_t)TW_LIK_VRECORD) >> 16); /* both < 2^16: no 64-bit product */
#else
    return (int32_t)(((int64_t)(hi - lo) * TW_LIK_VRECORD) >> 16); /* (hi - lo) < 2^16, TW_LIK_VRECORD <= 2^20 */
#endif
}

static void tw_value_record_one(tw_state_t *s, int32_t c, int32_t q)
{
    int32_t lo = s->lik_vlo[c];
    int32_t hi = s->lik_vhi[c];
    /* a range of one value latches nothing: a margin of 2^16 - 1 puts the bounds beyond every int16 */
    int32_t m = (lo < hi) ? tw_value_margin(lo, hi) : 65535;
    if (q > hi) {
        if (q > hi + m) {
            s->lik_vnew = 1u;
        }
        s->lik_vhi[c] = (int16_t)q;
    } else if (q < lo) {
        if (q < lo - m) {
            s->lik_vnew = 1u;
        }
        s->lik_vlo[c] = (int16_t)q;
    }
}
"""

#: The value record on every pushed sample (a module that keeps neither block extremes nor the raw ring).
C_VALUE_SAMPLE = r"""
static void tw_value_record_q(tw_state_t *s, const int16_t sample[TW_N_CHANNELS])
{
    int32_t c;
    for (c = 0; c < TW_N_CHANNELS; c++) {
        tw_value_record_one(s, c, sample[c]);
    }
}
"""

#: The value record on each completed group of ``TW_VALUE_ROWS`` rows of the raw sample ring (a module that keeps
#: the ring but no block extremes: the raw-window families), called by ``tw_push_q`` when the ring's head reaches a
#: multiple of it (:data:`C_VALUE_ROWS_CALL`): rows are aligned to the ring because ``TW_VALUE_ROWS`` divides
#: ``TW_WINDOW`` and the stride, so every window's last push completes a group and the window reads the record of
#: all its samples. The group is first checked whole against the ranges (on a core with the SIMD32 extension two
#: channels a word, :func:`value_rows_c`); only when a sample lies outside its channel's range is that channel's
#: group checked sample by sample, from the first sample outside it, in order through ``tw_value_record_one``,
#: exactly as on every push (the samples before it leave the range as it was).
C_VALUE_ROWS = Template(r"""
/* The value record of the TW_VALUE_ROWS rows of the ring that have just completed (x[t * TW_N_CHANNELS + c]).
 * Range: lik_vlo[c] <= lik_vhi[c]; with span = hi - lo in [0, 2^16), q lies within [lo, hi] exactly when
 * (q - lo) mod 2^16 <= span (below lo the difference wraps above 2^15 + hi - lo, beyond every span). Out of line
 * where the compiler allows: inlined, its registers cost the window's path through tw_push_q some 750 instructions
 * a window on a Cortex-M4. */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void tw_value_record_rows(tw_state_t *s, const int16_t *x)
{
    int32_t c;
#if defined(__ARM_FEATURE_SIMD32) && defined(__GNUC__) && !defined(__ARM_BIG_ENDIAN)
    /* two channels a word (ACLE __usub16, __sel): USUB16 gives each lane's (q - lo) mod 2^16, a second USUB16 sets
     * the lane's GE bits where span - that >= 0, and SEL keeps ok's lanes there and clears the others, so ok keeps
     * all its bits while every sample lies within its channel's range; the lows and spans of channels 2j and 2j + 1
     * packed in lo$$j and span$$j ($rows_per_pass a pass) */
    const int16_t *p;
    uint32_t ok = 0xFFFFFFFFu;
$packs    for (p = x; p != x + TW_VALUE_ROWS * TW_N_CHANNELS; p += $rows_per_pass * TW_N_CHANNELS) {
        uint32_t w;
$words    }
    if (ok == 0xFFFFFFFFu) {
        return;
    }
#endif
    for (c = 0; c < TW_N_CHANNELS; c++) {
        const int16_t *q = x + c;
        const int16_t *end = q + TW_VALUE_ROWS * TW_N_CHANNELS;
        int32_t lo = s->lik_vlo[c];
        uint32_t span = (uint32_t)(s->lik_vhi[c] - lo);
        while (q != end && (uint32_t)(q[0] - lo) <= span) {
            q += TW_N_CHANNELS;
        }
        for (; q != end; q += TW_N_CHANNELS) {
            tw_value_record_one(s, c, q[0]);
        }
    }
}
""")


def value_rows_c(n_channels: int, rows: int) -> str:
    """:data:`C_VALUE_ROWS` for ``n_channels`` channels and groups of ``rows`` rows: the SIMD32 check straight-line
    over the words of a row (two rows a pass when ``rows`` is even; the last channel of an odd count alone in its
    word, beside a lane whose range is all of int16)."""
    packs, words = [], []
    for j in range(0, n_channels, 2):
        k = j // 2
        pair = j + 1 < n_channels

        def half(c: int, pair: bool = pair, j: int = j) -> tuple[str, str]:
            if c > j and not pair:
                return "0u", "0xFFFFu"
            return (f"(uint32_t)(uint16_t)s->lik_vlo[{c}]",
                    f"(uint32_t)(uint16_t)(s->lik_vhi[{c}] - s->lik_vlo[{c}])")

        (lo0, sp0), (lo1, sp1) = half(j), half(j + 1)
        packs += [f"    uint32_t lo{k} = {lo0} | ({lo1} << 16);\n", f"    uint32_t span{k} = {sp0} | ({sp1} << 16);\n"]
    per_pass = 2 if rows % 2 == 0 else 1
    for r in range(per_pass):
        for j in range(0, n_channels, 2):
            k, at = j // 2, f"{r} * TW_N_CHANNELS + {j}" if r else f"{j}"
            load = (f"        __builtin_memcpy(&w, p + {at}, sizeof w);\n" if j + 1 < n_channels
                    else f"        w = (uint32_t)(uint16_t)p[{at}];\n")
            words += [load, f"        (void)__builtin_arm_usub16(span{k}, __builtin_arm_usub16(w, lo{k}));\n"
                            "        ok = __builtin_arm_sel(ok, 0u);\n"]
    return C_VALUE_ROWS.substitute(packs="".join(packs), words="".join(words), rows_per_pass=per_pass)


C_VALUE_ROWS_CALL = ("    if (s->head % TW_VALUE_ROWS == 0u) {\n"
                     "        tw_value_record_rows(s, &s->ring[((s->head == 0u) ? TW_WINDOW : (int32_t)s->head) - "
                     "TW_VALUE_ROWS][0]);\n    }")

#: The value record on a completed group of samples, called by the features' fold with each channel's block
#: extremes (:data:`tinywarden.kernels.features_s16.EXTREMES_HOOK`): the range only grows, so extremes inside it
#: mean every sample of the group is, and nothing changes; else the group's samples of that channel are checked one
#: by one in order, exactly as on every push. ``C_VALUE_GROUP_DECL`` (``$hook`` the macro's name) precedes the
#: features' code.
C_VALUE_GROUP_DECL = Template(r"""
/* the value record's check of a completed group (its definition is with the likelihood) */
TW_NO_INLINE void tw_value_record_group(tw_state_t *s, int32_t c, const int16_t *x0);
#define $hook(s, c, x0, mn, mx) \
    do { \
        if ((mn) < (s)->lik_vlo[(c)] || (mx) > (s)->lik_vhi[(c)]) { \
            tw_value_record_group((s), (c), (x0)); \
        } \
    } while (0)
""")
C_VALUE_GROUP = r"""
/* Channel c's TW_GROUP samples of the group that has just completed (x0[t * TW_N_CHANNELS]), in order: called only
 * when the block's extremes leave the channel's range (out of line: 16 B less Cortex-M4 flash). */
TW_NO_INLINE void tw_value_record_group(tw_state_t *s, int32_t c, const int16_t *x0)
{
    int32_t t;
    for (t = 0; t < TW_GROUP; t++) {
        tw_value_record_one(s, c, x0[t * TW_N_CHANNELS]);
    }
}
"""
