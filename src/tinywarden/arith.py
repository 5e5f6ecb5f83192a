"""The integer scheme of the on-device path: TFLite / CMSIS-NN int8 arithmetic, written once in numpy.

* weights: int8, symmetric, one scale per output channel (zero point 0);
* activations: int8 (or int16), asymmetric, ``real = scale * (q - zero_point)``;
* bias: int32 with scale ``input_scale * weight_scale``;
* requantization: a real multiplier ``0 < m`` becomes a Q31 ``multiplier`` and a power-of-two ``shift``
  (:func:`quantize_multiplier`, TFLite's ``QuantizeMultiplier``); an int32 accumulator is rescaled by
  :func:`requantize`, i.e. a saturating rounding doubling high multiply
  (:func:`saturating_rounding_doubling_high_mul`, gemmlowp's ``SaturatingRoundingDoublingHighMul`` /
  CMSIS-NN's ``arm_nn_doubling_high_mult``) followed by a rounding right shift
  (:func:`rounding_divide_by_pot`, ``RoundingDivideByPOT`` / ``arm_nn_divide_by_power_of_two``).

Every function takes and returns numpy integer arrays (or Python ints) and computes in int64 so that no
intermediate overflows; the generated C computes the same values with the same operations
(``tw_doubling_high_mult``, ``tw_divide_by_power_of_two``, ``tw_requantize`` in the C templates).

>>> m, s = quantize_multiplier(0.25)
>>> int(requantize(1000, m, s))
250
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tinywarden.errors import ConfigError

INT8_MIN, INT8_MAX = -128, 127
INT16_MIN, INT16_MAX = -32768, 32767
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

DTYPE_RANGE: dict[str, tuple[int, int]] = {
    "int8": (INT8_MIN, INT8_MAX),
    "int16": (INT16_MIN, INT16_MAX),
    "int32": (INT32_MIN, INT32_MAX),
    "int64": (INT64_MIN, INT64_MAX),
}

MIN_SCALE = 1e-30

IntLike = int | np.integer | np.ndarray


@dataclass(frozen=True)
class QParams:
    """Affine quantization of one tensor: ``real = scale * (q - zero_point)``, ``q`` in ``dtype``'s range."""

    scale: float
    zero_point: int
    dtype: str = "int8"

    @property
    def qmin(self) -> int:
        return DTYPE_RANGE[self.dtype][0]

    @property
    def qmax(self) -> int:
        return DTYPE_RANGE[self.dtype][1]

    def quantize(self, real: np.ndarray | float) -> np.ndarray:
        """Round half away from zero to the nearest level, then saturate to the dtype's range."""
        q = round_half_away(np.asarray(real, dtype=np.float64) / self.scale) + self.zero_point
        return np.clip(q, self.qmin, self.qmax).astype(np.int64)

    def dequantize(self, q: np.ndarray | int) -> np.ndarray:
        return self.scale * (np.asarray(q, dtype=np.float64) - self.zero_point)


def round_half_away(x: np.ndarray | float) -> np.ndarray:
    """Round to the nearest integer, ties away from zero (C's ``round``, TFLite's ``TfLiteRound``),
    saturating at +-2**62 so that huge or infinite values never wrap around in int64."""
    a = np.clip(np.asarray(x, dtype=np.float64), -(2.0**62), 2.0**62)
    return (np.sign(a) * np.floor(np.abs(a) + 0.5)).astype(np.int64)


def choose_qparams(lo: float, hi: float, dtype: str = "int8", symmetric: bool = False) -> QParams:
    """QParams covering ``[lo, hi]`` (always widened to include 0, as TFLite does).

    Symmetric: zero point 0 and ``scale = max(|lo|, |hi|) / qmax``. Asymmetric: the full range maps to
    ``[qmin, qmax]`` with the zero point rounded and clamped so that real 0 is exactly representable.

    >>> q = choose_qparams(-1.0, 3.0)
    >>> round(q.scale, 6), q.zero_point
    (0.015686, -64)
    """
    if dtype not in ("int8", "int16"):
        raise ConfigError(f"activation dtype must be int8 or int16, got {dtype!r}")
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ConfigError(f"cannot choose a quantization range for [{lo}, {hi}]")
    qmin, qmax = DTYPE_RANGE[dtype]
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    # a range too small to divide by (all zeros, denormals) quantizes everything to the zero point
    if symmetric:
        scale = max(abs(lo), abs(hi)) / qmax
        return QParams(scale if scale > MIN_SCALE else 1.0, 0, dtype)
    scale = (hi - lo) / (qmax - qmin)
    if scale <= MIN_SCALE:
        return QParams(1.0, 0, dtype)
    zp = int(np.clip(round_half_away(qmin - lo / scale), qmin, qmax))
    return QParams(scale, zp, dtype)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Q31 ``multiplier`` and ``shift`` (positive = left) with ``real ~= multiplier * 2**(shift - 31)``.

    TFLite's ``QuantizeMultiplier``: ``frexp`` splits ``real`` into a mantissa in [0.5, 1) and an
    exponent; the mantissa is rounded to Q31. Multipliers below ``2**-31`` become 0; the shift is
    capped at 30 (``real`` below ``2**30``).

    >>> quantize_multiplier(0.5)
    (1073741824, 0)
    >>> quantize_multiplier(3.0)
    (1610612736, 2)
    """
    if not math.isfinite(real) or real < 0:
        raise ConfigError(f"a requantization multiplier must be finite and >= 0, got {real}")
    if real == 0.0:
        return 0, 0
    mant, shift = math.frexp(real)
    q = int(round_half_away(mant * (1 << 31)))
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return INT32_MAX, 30
    return q, shift


def multiplier_to_real(multiplier: int, shift: int) -> float:
    """The real number a ``(multiplier, shift)`` pair stands for."""
    return multiplier * 2.0 ** (shift - 31)


def _i64(x: IntLike) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def _trunc_div_pow2(x: np.ndarray, e: int) -> np.ndarray:
    """Division by ``2**e`` truncating towards zero, as C's ``/`` on int64."""
    return np.where(x >= 0, x >> e, -((-x) >> e))


def saturating_rounding_doubling_high_mul(a: IntLike, b: IntLike) -> np.ndarray:
    """``a * b / 2**31`` rounded to nearest, ties up (towards +inf), for int32 ``a``, ``b``: gemmlowp's /
    CMSIS-NN's doubling high multiply.

    The nudge is ``2**30`` for a non-negative product and ``1 - 2**30`` for a negative one, then the sum
    is divided by ``2**31`` truncating towards zero (so ``-0.5`` becomes 0 and ``0.5`` becomes 1); the
    one overflowing case ``INT32_MIN * INT32_MIN`` saturates to ``INT32_MAX``.

    >>> int(saturating_rounding_doubling_high_mul(-2**31, -2**31))
    2147483647
    """
    a64, b64 = _i64(a), _i64(b)
    ab = a64 * b64
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    out = _trunc_div_pow2(ab + nudge, 31)
    return np.where((a64 == INT32_MIN) & (b64 == INT32_MIN), np.int64(INT32_MAX), out)


def rounding_divide_by_pot(x: IntLike, exponent: IntLike) -> np.ndarray:
    """``x / 2**exponent`` rounded to nearest, ties away from zero (``exponent`` in [0, 31]).

    >>> rounding_divide_by_pot(np.array([5, -5, 6, -6]), 2).tolist()
    [1, -1, 2, -2]
    """
    x64, e = _i64(x), _i64(exponent)
    mask = (np.int64(1) << e) - 1
    remainder = x64 & mask
    result = x64 >> e
    threshold = (mask >> 1) + (result < 0)
    return result + (remainder > threshold)


def requantize(x: IntLike, multiplier: IntLike, shift: IntLike) -> np.ndarray:
    """``x * multiplier * 2**(shift - 31)`` rounded: CMSIS-NN's ``arm_nn_requantize``.

    For a left shift, ``x`` is first saturated to the range where ``x * 2**shift`` fits int32 (CMSIS-NN
    leaves that overflow undefined); the result is then at least ``2**30`` in magnitude, so any
    saturation to int8/int16 that follows gives the same value it would with unbounded integers.
    """
    x64, m, s = _i64(x), _i64(multiplier), _i64(shift)
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    lo, hi = np.int64(INT32_MIN) >> left, np.int64(INT32_MAX) >> left
    xs = np.clip(np.clip(x64, INT32_MIN, INT32_MAX), lo, hi) << left
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(xs, m), right)


def saturate(x: IntLike, dtype: str) -> np.ndarray:
    """Clamp to the range of ``dtype`` (``int8`` ... ``int64``)."""
    lo, hi = DTYPE_RANGE[dtype]
    return np.clip(_i64(x), lo, hi)


#: ``tw_isqrt_u64``'s range is ``[0, ISQRT_LIMIT)``: its root (< 2^30) and remainder fit 32-bit words. Every
#: caller stays below it (the features' std and rms < 2^57, knn's squared distances: n * 2^32 with n < 2^28).
ISQRT_LIMIT = 1 << 60


def isqrt_u64(x: IntLike) -> np.ndarray:
    """Floor of the square root of int64 values in ``[0, ISQRT_LIMIT)`` (the C code's ``tw_isqrt_u64``)."""
    flat = _i64(x).ravel()
    if (flat < 0).any() or (flat >= ISQRT_LIMIT).any():
        raise ValueError("isqrt_u64 of a value outside [0, 2^60)")
    out = np.fromiter((math.isqrt(int(v)) for v in flat), dtype=np.int64, count=flat.size)
    return out.reshape(np.shape(x))


def round_shift(x: IntLike, s: int) -> np.ndarray:
    """``x / 2**s`` rounded half away from zero, without right-shifting a negative number (``s >= 1``), as
    the C ``tw_round_shift64``."""
    x64 = _i64(x)
    half = np.int64(1 << (s - 1))
    return np.where(x64 >= 0, (x64 + half) >> s, -((-x64 + half) >> s))


def score_from_total(total: IntLike, shift: int) -> np.ndarray:
    """A score kernel's int32 result from its non-negative int64 total: ``sat32(total >> shift)``."""
    return saturate(_i64(total) >> int(shift), "int32")


# -- the same arithmetic in C: helper functions a kernel template names on its ``//@requires:`` line --------
#: The helpers each helper calls (emitted with it, before it).
C_HELPER_DEPS: dict[str, tuple[str, ...]] = {"arith": ("dhm", "rounding"), "requant32": ("rounding",)}
#: helper name -> C text, in the order they must appear (a helper may use an earlier one)
C_HELPERS: dict[str, str] = {
    "params": r"""
/* Kernel parameter structs, as CMSIS-NN's arm_nn_types.h: one named struct per concern, the values of each
 * call in static const instances named for the tensor the kernel writes. Offsets and activation bounds are
 * int16 (their ranges: offsets within [-255, 255], bounds within the int8 or int16 output), half CMSIS-NN's
 * int32 flash. */
typedef struct {
    int16_t min;
    int16_t max;
} tw_activation_t;

/* Offsets of a per-channel int8 layer's input and output (input_offset = -input zero point). */
typedef struct {
    int16_t input_offset;
    int16_t output_offset;
    tw_activation_t activation;
} tw_fc_params_t;

/* As tw_fc_params_t, with the 1-D convolution's stride, zero padding and nearest-neighbour upsampling. */
typedef struct {
    int16_t input_offset;
    int16_t output_offset;
    int32_t stride;
    int32_t padding;
    int32_t upsample;
    tw_activation_t activation;
} tw_conv_params_t;

/* Per-output-channel requantization: Q31 multiplier and power-of-two shift. */
typedef struct {
    const int32_t *multiplier;
    const int8_t *shift;
} tw_per_channel_quant_params_t;

/* Requantization of int64 window features to the model's input, per feature: pre-shift, offset, Q31
 * multiplier and shift; then the input's zero point and range. With TW_REQUANT_PACKED
 * (tinywarden.kernels.requantize_s64.packs_words) two tables a feature: requant[i], the multiplier's low
 * TW_MULT_BITS bits (2^TW_MULT_BITS implied) and above them the shift less shift_base; offsets[i], the offset times
 * 2^TW_PRE_SHIFT_BITS plus the pre-shift. Else a feature's pre-shift and shift share one entry of shifts,
 * (pre_shift << TW_SHIFT_BITS) | (shift + 2^(TW_SHIFT_BITS - 1)) (tinywarden.kernels.requantize_s64.SHIFT_BITS;
 * tw_shifts_t: uint8_t when TW_SHIFT_BITS bits each fit a byte), and tw_offset_t is the narrowest of int16_t and
 * int32_t that holds the module's offsets. Read by TW_PRE_SHIFT, TW_OFFSET, TW_MULTIPLIER and TW_SHIFT; a kernel
 * walking the features steps the tables by TW_REQUANT_STEP. */
typedef struct {
#if TW_REQUANT_PACKED
    const uint32_t *requant;
    const int16_t *offsets;
    int32_t shift_base;
#else
    const tw_shifts_t *shifts;
    const tw_offset_t *offset;
    const int32_t *multiplier;
#endif
    int32_t zero_point;
    tw_activation_t activation;
} tw_feature_requant_params_t;
#if TW_REQUANT_PACKED
#define TW_PRE_SHIFT(p, i) ((int32_t)(p)->offsets[(i)] & (((int32_t)1 << TW_PRE_SHIFT_BITS) - 1))
#define TW_OFFSET(p, i) ((int32_t)(p)->offsets[(i)] >> TW_PRE_SHIFT_BITS)
#define TW_MULTIPLIER(p, i) \
    ((int32_t)(((p)->requant[(i)] & (((uint32_t)1 << TW_MULT_BITS) - 1u)) | ((uint32_t)1 << TW_MULT_BITS)))
#define TW_SHIFT(p, i) ((p)->shift_base + (int32_t)((p)->requant[(i)] >> TW_MULT_BITS))
#define TW_REQUANT_STEP(q, n) ((q).requant += (n), (q).offsets += (n))
#else
#define TW_PRE_SHIFT(p, i) ((int32_t)((uint32_t)(p)->shifts[(i)] >> TW_SHIFT_BITS))
#define TW_OFFSET(p, i) ((int32_t)(p)->offset[(i)])
#define TW_MULTIPLIER(p, i) ((p)->multiplier[(i)])
#define TW_SHIFT(p, i) \
    ((int32_t)((uint32_t)(p)->shifts[(i)] & ((1u << TW_SHIFT_BITS) - 1u)) - ((int32_t)1 << (TW_SHIFT_BITS - 1)))
#define TW_REQUANT_STEP(q, n) ((q).shifts += (n), (q).offset += (n), (q).multiplier += (n))
#endif

/* A tensor's shape: n batches of h x w x c (time-major 1-D data: h = 1, w = length, c = channels); tw_dim_t: the
 * narrowest of int16_t and int32_t that holds the module's shapes. */
typedef struct {
    tw_dim_t n;
    tw_dim_t h;
    tw_dim_t w;
    tw_dim_t c;
} tw_dims_t;

/* A per-channel int8 fully connected layer: its parameter structs, weights and kernel sums in one constant, so
 * that a call passes one pointer for them (on Cortex-M the five pointers set up at each call cost more flash than
 * the constant's two more words). With TW_FC_PACKED (tinywarden.kernels.fully_connected_s8.MULT_BITS) a channel's
 * multiplier and shift share requant[o]: multiplier = 2^TW_MULT_BITS + its low TW_MULT_BITS bits, shift =
 * shift_base + the bits above. */
typedef struct {
    tw_fc_params_t fc_params;
#if TW_FC_PACKED
    const uint32_t *requant;
    int32_t shift_base;
#else
    tw_per_channel_quant_params_t quant_params;
#endif
    tw_dims_t filter_dims;
    const int8_t *weights;
    const int32_t *kernel_sum;
} tw_fc_layer_t;
""",
    "dhm": r"""
/* round(a * b / 2^31), the nudge depending on the product's sign, truncating division; only
 * INT32_MIN * INT32_MIN overflows and saturates. CMSIS-NN arm_nn_doubling_high_mult. Computed as
 * floor((a * b + 2^30) / 2^31), the same value: for a * b < 0 the truncated (a * b + 1 - 2^30) / 2^31 is the
 * ceiling, floor((a * b + 1 - 2^30 + 2^31 - 1) / 2^31); an arithmetic shift, no 64-bit division.
 * Range: a, b any int32. */
static int32_t tw_doubling_high_mult(int32_t a, int32_t b)
{
    int64_t ab = (int64_t)a * (int64_t)b;
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    return (int32_t)((ab + ((int64_t)1 << 30)) >> 31);
}
""",
    "rounding": r"""
/* x / 2^exponent rounded to nearest, ties away from zero. CMSIS-NN arm_nn_divide_by_power_of_two.
 * Range: exponent in [0, 31]. */
static int32_t tw_divide_by_power_of_two(int32_t x, int32_t exponent)
{
    int32_t mask = (int32_t)(((uint32_t)1 << exponent) - 1u);
    int32_t remainder = x & mask;
    int32_t result = x >> exponent;
    int32_t threshold = (mask >> 1) + ((result < 0) ? 1 : 0);
    return (remainder > threshold) ? result + 1 : result;
}

""",
    "arith": r"""
/* x * multiplier * 2^(shift - 31), rounded. CMSIS-NN arm_nn_requantize, except that x is first
 * saturated so that x * 2^shift fits int32 (a larger x saturates any int8/int16 result anyway).
 * Range: multiplier in [0, INT32_MAX], shift in [-31, 30], x any int64. */
static int32_t tw_requantize(int64_t x, int32_t multiplier, int32_t shift)
{
    int32_t left = (shift > 0) ? shift : 0;
    int32_t right = (shift > 0) ? 0 : -shift;
    int64_t lo = (int64_t)INT32_MIN >> left;
    int64_t hi = (int64_t)INT32_MAX >> left;
    if (x < lo) {
        x = lo;
    } else if (x > hi) {
        x = hi;
    }
    return tw_divide_by_power_of_two(tw_doubling_high_mult((int32_t)(x * ((int64_t)1 << left)), multiplier), right);
}
""",
    "clamp64": r"""
static int64_t tw_clamp64(int64_t x, int64_t lo, int64_t hi)
{
    return (x < lo) ? lo : ((x > hi) ? hi : x);
}
""",
    "requant32": r"""
/* tw_requantize for an int32 x (the same value, with 32-bit compares): x saturated so that x * 2^shift fits
 * int32 (INT32_MIN >> shift is -(INT32_MAX >> shift) - 1), then the doubling high multiply and the rounding
 * shift (by 0 for a left shift: the value unchanged). The multiply is tw_doubling_high_mult's without its one
 * saturating case, INT32_MIN * INT32_MIN, which a multiplier >= 0 never meets: the same value.
 * Range: multiplier in [0, INT32_MAX], shift in [-31, 30], x any int32. */
static int32_t tw_requantize32(int32_t x, int32_t multiplier, int32_t shift)
{
    if (shift > 0) {
        int32_t hi = INT32_MAX >> shift;
        x = (x > hi) ? hi : ((x < -hi - 1) ? -hi - 1 : x);
        x = (int32_t)((uint32_t)x << shift);
    }
    return tw_divide_by_power_of_two((int32_t)(((int64_t)x * multiplier + ((int64_t)1 << 30)) >> 31),
                                     (shift > 0) ? 0 : -shift);
}

/* clamp(r + offset, lo, hi) without forming r + offset when it would leave int32.
 * Range: r any int32; offset, lo <= hi within int16. */
static int32_t tw_offset_clamp(int32_t r, int32_t offset, int32_t lo, int32_t hi)
{
    return (r > hi - offset) ? hi : ((r < lo - offset) ? lo : r + offset);
}
""",
    "isqrt": r"""
/* floor(sqrt(x)), bit by bit, exact for x < 2^60 (tinywarden.arith.ISQRT_LIMIT: every caller's range): the root
 * (< 2^30) and the remainder (<= 2 root) fit 32 bits, x's bit pairs are taken from the top of two words, its
 * leading zero pairs skipped 16 and 8 at a time. TW_HAVE_ISQRT_U64 tells later kernels it is there. */
#define TW_HAVE_ISQRT_U64 1
static uint64_t tw_isqrt_u64(uint64_t x)
{
    uint32_t hi = (uint32_t)(x >> 32);
    uint32_t lo = (uint32_t)x;
    uint32_t r = 0u;
    uint32_t rem = 0u;
    int32_t n = 32; /* bit pairs of x left */
    if (hi == 0u) {
        hi = lo;
        lo = 0u;
        n = 16;
    }
    if ((hi >> 16) == 0u) {
        hi = (hi << 16) | (lo >> 16);
        lo <<= 16;
        n -= 8;
    }
    if ((hi >> 24) == 0u) {
        hi = (hi << 8) | (lo >> 24);
        lo <<= 8;
        n -= 4;
    }
    for (; n > 0; n--) {
        uint32_t t = (r << 2) | 1u; /* (2 r + 1)^2 - (2 r)^2: the next root bit's test */
        rem = (rem << 2) | (hi >> 30);
        hi = (hi << 2) | (lo >> 30);
        lo <<= 2;
        r <<= 1;
        if (rem >= t) {
            rem -= t;
            r |= 1u;
        }
    }
    return r;
}
""",
    "score": r"""
/* A score from a non-negative int64 total: total >> shift, saturated to INT32_MAX. */
static int32_t tw_score_from_total(int64_t total, int32_t shift)
{
    total >>= shift;
    return (total > INT32_MAX) ? INT32_MAX : (int32_t)total;
}
""",
    "round64": r"""
/* x / 2^s rounded half away from zero, without right-shifting a negative number. Range: s in [1, 62]. */
static int64_t tw_round_shift64(int64_t x, int32_t s)
{
    int64_t half = (int64_t)1 << (s - 1);
    return (x >= 0) ? ((x + half) >> s) : -((-x + half) >> s);
}
""",
}
