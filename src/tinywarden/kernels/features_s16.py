"""Integer window features: the on-device twin of :mod:`tinywarden.features`, one per feature code.

Over one channel's window ``q[0..W-1]`` (int16, W <= MAX_WINDOW, so every sum below fits int64):
``S1 = sum q``, ``S2 = sum q**2``, ``V = W*S2 - S1**2``, ``T = S1 + W*z0`` (``z0`` = the channel's
``sample_zero``, so ``T`` is the sum of the real-valued levels, saturated to +-(2**31 - 1)).

==============  ==================================================
feature         integer value f
==============  ==================================================
mean            S1
std             isqrt(V)
min, max        min q, max q
rms             isqrt(V + T**2)
band<l>         sum over blocks of 2**l of (first-half sum minus second-half sum)**2
crossings       #t with (W*q[t] > S1) != (W*q[t-1] > S1)
diff_abs_mean   sum |q[t] - q[t-1]|
diff_abs_max    max |q[t] - q[t-1]|
last            q[W-1]
==============  ==================================================

The float feature is ``~ a * f + b`` by the feature's scaling rule in
:data:`tinywarden.features.FEATURE_TABLE`, which also gives each feature its code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tinywarden.arith import INT32_MAX, isqrt_u64
from tinywarden.features import FEATURE_TABLE
from tinywarden.kernels.base import KernelSpec, Op, ProgramView, const_shape, register_kernel, require

#: Largest window the integer features are proven not to overflow for.
MAX_WINDOW = 4096


@dataclass(frozen=True)
class _Window:
    """One batch of windows (N, W, C) int64 and the sums every feature shares."""

    x: np.ndarray
    z0: np.ndarray
    s1: np.ndarray
    v: np.ndarray
    dx: np.ndarray


def _bands(x: np.ndarray, level: int) -> np.ndarray:
    """sum over blocks of 2**level rows of (sum of first half - sum of second half)**2; x (N, W, C) int64."""
    n, w, c = x.shape
    half = 2 ** (level - 1)
    blocks = x.reshape(n, w // (2 * half), 2, half, c).sum(axis=3)
    d = blocks[:, :, 0] - blocks[:, :, 1]
    return (d * d).sum(axis=1)


def _rms(q: _Window) -> np.ndarray:
    t = np.clip(q.s1 + q.x.shape[1] * q.z0[None, :], -INT32_MAX, INT32_MAX)
    return isqrt_u64(q.v + t * t)


def _crossings(q: _Window) -> np.ndarray:
    above = q.x.shape[1] * q.x > q.s1[:, None, :]
    return (above[:, 1:] != above[:, :-1]).sum(axis=1).astype(np.int64)


def _band(level: int) -> Callable[[_Window], np.ndarray]:
    return lambda q: _bands(q.x, level)


#: The integer definition of every feature of the table, by name.
INTEGER: dict[str, Callable[[_Window], np.ndarray]] = {
    "mean": lambda q: q.s1,
    "std": lambda q: isqrt_u64(q.v),
    "min": lambda q: q.x.min(axis=1),
    "max": lambda q: q.x.max(axis=1),
    "last": lambda q: q.x[:, -1],
    "rms": _rms,
    **{name: _band(int(name[4:])) for name in FEATURE_TABLE if name.startswith("band")},
    "crossings": _crossings,
    "diff_abs_mean": lambda q: q.dx.sum(axis=1),
    "diff_abs_max": lambda q: q.dx.max(axis=1),
}
if set(INTEGER) != set(FEATURE_TABLE):  # a feature without an integer definition must not go unnoticed
    raise ImportError(f"features_s16 lacks an integer definition of {sorted(set(FEATURE_TABLE) ^ set(INTEGER))}")
_BY_CODE = {f.code: INTEGER[name] for name, f in FEATURE_TABLE.items()}


def features_s16(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    """Integer window features ``(N, C * F)`` int64, channel-major like :func:`tinywarden.features.extract`."""
    x = srcs[0].astype(np.int64)  # (N, W, C)
    n, w, c = x.shape
    s1 = x.sum(axis=1)
    s2 = (x * x).sum(axis=1)
    q = _Window(x, op.consts["z0"].astype(np.int64), s1, w * s2 - s1 * s1, np.abs(np.diff(x, axis=1)))
    out = [_BY_CODE[code](q) for code in op.consts["codes"].tolist()]
    return np.stack(out, axis=2).reshape(n, -1)  # (N, C, F) -> channel-major


def _check(op: Op, p: ProgramView) -> None:
    codes = np.asarray(op.consts["codes"])
    require(op.src == ("window",), "it reads the window")
    require(codes.ndim == 1 and len(codes) >= 1 and all(int(c) in _BY_CODE for c in codes),
            f"codes must be feature codes ({', '.join(f'{f.code} {n}' for n, f in FEATURE_TABLE.items())})")
    require(const_shape(op, "z0") == (p.n_channels,), f"z0 must have one entry per channel ({p.n_channels})")
    require(p.tensor(op.dst).size == p.n_channels * len(codes), "features must hold channels x codes values")
    require(p.window <= MAX_WINDOW, f"window {p.window} is beyond {MAX_WINDOW}")


C_TEMPLATE = r"""
//@call: tw_features_s16(&s->ring[0][0], (int32_t)s->head, ${window}, ${n_channels}, ${codes_size}, ${c_codes},
//@+ ${c_z0}, s->t_${dst});
//@requires: isqrt
/* Saturate to +-(2^31 - 1), so that its square fits int64. */
static int64_t tw_clamp_i31(int64_t x)
{
    return (x > INT32_MAX) ? INT32_MAX : ((x < -INT32_MAX) ? -INT32_MAX : x);
}

/* energy of Haar band `level` of one channel: sum over blocks of 2^level rows of
 * (sum of the first half - sum of the second half)^2. Range: w divisible by 2^level, w <= TW_MAX_WINDOW. */
static int64_t tw_band_energy_s16(const int16_t *ring, int32_t head, int32_t w, int32_t n_ch, int32_t ch,
                                  int32_t level)
{
    int32_t half = (int32_t)1 << (level - 1);
    int32_t r = head;
    int32_t t;
    int64_t e = 0;
    for (t = 0; t < w; t += 2 * half) {
        int64_t d = 0;
        int32_t j;
        for (j = 0; j < 2 * half; j++) {
            int64_t v = ring[r * n_ch + ch];
            d += (j < half) ? v : -v;
            r = (r + 1 == w) ? 0 : r + 1;
        }
        e += d * d;
    }
    return e;
}

/* Integer window features, channel-major (all of channel 0, then channel 1 ...), one per code:
 * mean S1 | std isqrt(W*S2 - S1^2) | min | max | rms isqrt(W*S2 - S1^2 + T^2),
 * T = S1 + W*z0[ch] saturated to +-(2^31-1) | band1..band6 | crossings of the mean
 * (W*q > S1) | diff_abs_mean sum |q[t]-q[t-1]| | diff_abs_max max |q[t]-q[t-1]| | last (newest) q.
 * The window is read from the ring,
 * oldest row at `head`. Range: 2 <= w <= TW_MAX_WINDOW, so every sum fits int64. */
static void tw_features_s16(const int16_t *ring, int32_t head, int32_t w, int32_t n_ch, int32_t n_codes,
                            const int32_t *codes, const int32_t *z0, int64_t *out)
{
    int32_t ch;
    for (ch = 0; ch < n_ch; ch++) {
        int64_t s1 = 0;
        int64_t s2 = 0;
        int64_t dsum = 0;
        int64_t v2;
        int64_t tsum;
        int32_t mn = INT16_MAX;
        int32_t mx = INT16_MIN;
        int32_t dmax = 0;
        int32_t prev = 0;
        int32_t r = head;
        int32_t t;
        int32_t j;
        for (t = 0; t < w; t++) {
            int32_t v = ring[r * n_ch + ch];
            r = (r + 1 == w) ? 0 : r + 1;
            s1 += v;
            s2 += (int64_t)v * v;
            mn = (v < mn) ? v : mn;
            mx = (v > mx) ? v : mx;
            if (t > 0) {
                int32_t d = (v > prev) ? v - prev : prev - v;
                dsum += d;
                dmax = (d > dmax) ? d : dmax;
            }
            prev = v;
        }
        v2 = (int64_t)w * s2 - s1 * s1;
        for (j = 0; j < n_codes; j++) {
            int64_t f = 0;
            int32_t code = codes[j];
            if (code == TW_FEATURE_MEAN) {
                f = s1;
            } else if (code == TW_FEATURE_STD) {
                f = (int64_t)tw_isqrt_u64((uint64_t)v2);
            } else if (code == TW_FEATURE_MIN) {
                f = mn;
            } else if (code == TW_FEATURE_MAX) {
                f = mx;
            } else if (code == TW_FEATURE_RMS) {
                tsum = tw_clamp_i31(s1 + (int64_t)w * z0[ch]);
                f = (int64_t)tw_isqrt_u64((uint64_t)v2 + (uint64_t)(tsum * tsum));
            } else if (code >= TW_FEATURE_BAND1 && code <= TW_FEATURE_BAND6) {
                f = tw_band_energy_s16(ring, head, w, n_ch, ch, code - TW_FEATURE_BAND1 + 1);
            } else if (code == TW_FEATURE_CROSSINGS) {
                int32_t above_prev = 0;
                r = head;
                for (t = 0; t < w; t++) {
                    int32_t above = ((int64_t)w * ring[r * n_ch + ch] > s1) ? 1 : 0;
                    r = (r + 1 == w) ? 0 : r + 1;
                    if (t > 0 && above != above_prev) {
                        f++;
                    }
                    above_prev = above;
                }
            } else if (code == TW_FEATURE_DIFF_ABS_MEAN) {
                f = dsum;
            } else if (code == TW_FEATURE_DIFF_ABS_MAX) {
                f = dmax;
            } else {
                f = prev;
            }
            out[ch * n_codes + j] = f;
        }
    }
}
"""
register_kernel(KernelSpec(
    "features_s16", features_s16, ("int16",), "int64", {"codes": "int32", "z0": "int32"},
    "integer window features, see features_s16", C_TEMPLATE, check=_check,
    limits={"TW_MAX_WINDOW": MAX_WINDOW,
            **{f"TW_FEATURE_{name.upper()}": f.code for name, f in FEATURE_TABLE.items()}}))
