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

On the device (:func:`stream_c`) the window is never re-read: the stream is cut into blocks of
``g = gcd(window, stride)`` samples (every window is a whole number of them), each sample is folded once
into its block's per-channel running sums, sums of squares, extremes, first/last sample, absolute-step sums
and maxima and Haar band energies (a band of level ``l`` with ``2**l`` dividing ``g``), and a window's
features combine its ``window / g`` blocks (steps across block boundaries from the blocks' first and last
samples). The integers are the ones defined above, so the numpy reference stays the whole-window
computation. Only ``crossings`` (of the window's own mean, known only once the window is complete) and a
band coarser than a block still read the raw sample ring.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from string import Template

import numpy as np

from tinywarden.arith import INT32_MAX, isqrt_u64
from tinywarden.features import FEATURE_TABLE
from tinywarden.kernels.base import (
    KernelSpec,
    Op,
    ProgramView,
    StateField,
    StreamC,
    const_shape,
    register_kernel,
    require,
)

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


#: C of one band's ring pass (a band coarser than a block), used by the streaming form only then.
C_BAND_FROM_RING = r"""
/* energy of Haar band `level` of one channel read from the ring: sum over blocks of 2^level rows of
 * (sum of the first half - sum of the second half)^2. Range: TW_WINDOW divisible by 2^level. */
static int64_t tw_band_energy_s16(const tw_state_t *s, int32_t ch, int32_t level)
{
    int32_t half = (int32_t)1 << (level - 1);
    int32_t r = (int32_t)s->head;
    int32_t t;
    int64_t e = 0;
    for (t = 0; t < TW_WINDOW; t += 2 * half) {
        int64_t d = 0;
        int32_t j;
        for (j = 0; j < 2 * half; j++) {
            int64_t v = s->ring[r][ch];
            d += (j < half) ? v : -v;
            r = (r + 1 == TW_WINDOW) ? 0 : r + 1;
        }
        e += d * d;
    }
    return e;
}
"""

C_STREAM = Template(r"""
/* Fold one quantized sample into the current block's aggregates (block s->bhead, position s->bpos). */
static void tw_features_fold(tw_state_t *s, const int16_t q[TW_N_CHANNELS])
{
    int32_t c;
    int32_t j = (int32_t)s->bpos;
    if (j == 0) {
        s->bhead = (uint16_t)((s->bhead + 1u == TW_BLOCKS) ? 0u : s->bhead + 1u);
    }
    for (c = 0; c < TW_N_CHANNELS; c++) {
        tw_block_t *a = &s->blocks[s->bhead][c];
        int32_t v = q[c];
$locals        if (j == 0) {
$init        } else {
$update        }
$always    }
    s->bpos = (uint16_t)((j + 1 == TW_BLOCK) ? 0 : j + 1);
}
$ring_helpers
/* The window's features, channel-major, from its TW_BLOCKS blocks (oldest after s->bhead, newest at it):
 * $names. */
static void tw_features_finish(const tw_state_t *s, int64_t *out)
{
    int32_t c;
    for (c = 0; c < TW_N_CHANNELS; c++) {
        int32_t b = (s->bhead + 1u == TW_BLOCKS) ? 0 : (int32_t)s->bhead + 1;
        int32_t k;
        const tw_block_t *a = &s->blocks[b][c];
$combine_init        for (k = 1; k < TW_BLOCKS; k++) {
            b = (b + 1 == TW_BLOCKS) ? 0 : b + 1;
            a = &s->blocks[b][c];
$combine        }
$outputs    }
}
""")

#: what each aggregate needs: (C type of the block member, init at a block's first sample, update after it)
_AGG = {
    "s1": ("int32_t", "a->s1 = v;", "a->s1 += v;"),
    "s2": ("int64_t", "a->s2 = (int64_t)v * v;", "a->s2 += (int64_t)v * v;"),
    "mn": ("int16_t", "a->mn = (int16_t)v;", "a->mn = (int16_t)((v < a->mn) ? v : a->mn);"),
    "mx": ("int16_t", "a->mx = (int16_t)v;", "a->mx = (int16_t)((v > a->mx) ? v : a->mx);"),
    "first": ("int16_t", "a->first = (int16_t)v;", ""),
    "dsum": ("int32_t", "a->dsum = 0;", "a->dsum += d;"),
    "dmax": ("int32_t", "a->dmax = 0;", "a->dmax = (d > a->dmax) ? d : a->dmax;"),
    "last": ("int16_t", "", ""),
}
#: the aggregates a feature reads
_NEEDS = {"mean": ("s1",), "std": ("s1", "s2"), "rms": ("s1", "s2"), "min": ("mn",), "max": ("mx",),
          "last": ("last",), "crossings": ("s1",), "diff_abs_mean": ("dsum", "first", "last"),
          "diff_abs_max": ("dmax", "first", "last")}
_SIZE = {"int64_t": 8, "int32_t": 4, "int16_t": 2}


def block_size(window: int, stride: int) -> int:
    """Samples per aggregate block: every window (and every stride) is a whole number of blocks."""
    return math.gcd(window, stride)


def stream_c(op: Op, p: ProgramView, prefix: str) -> StreamC:
    """The streaming C of ``op`` for program ``p``: only the aggregates its features need, straight-line
    (the feature set is fixed when the C is generated: no run-time dispatch over feature codes)."""
    names = [name for code in op.consts["codes"].tolist() for name, f in FEATURE_TABLE.items() if f.code == code]
    g = block_size(p.window, p.stride)
    bands = [int(n[4:]) for n in names if n.startswith("band")]
    block_bands = [lv for lv in bands if g % (1 << lv) == 0]
    ring_bands = [lv for lv in bands if g % (1 << lv) != 0]
    needs_ring = "crossings" in names or bool(ring_bands)
    aggs = [a for a in _AGG if any(a in _NEEDS.get(n, ()) for n in names)]
    diffs = "dsum" in aggs or "dmax" in aggs
    members = [(_AGG[a][0], a) for a in aggs] + [("int64_t", f"band{lv}") for lv in block_bands]
    members.sort(key=lambda m: -_SIZE[m[0]])
    size = sum(_SIZE[t] for t, _ in members)
    align = max((_SIZE[t] for t, _ in members), default=2)
    pad = -size % max(align, 4) if members else 4
    lines = [f"    {t} {n};" for t, n in members] + ([f"    uint8_t pad[{pad}];"] if pad else [])
    block_bytes = size + pad
    typedefs = ("/* One block's aggregates of one channel (tinywarden.kernels.features_s16): s1 sum, s2 sum of "
                "squares,\n * mn/mx extremes, first/last sample, dsum/dmax sum and max of |step| inside the block, "
                "band<l>\n * Haar band energy of level l; every member is exact for TW_BLOCK <= TW_MAX_WINDOW. */\n"
                "typedef struct {\n" + "\n".join(lines) + "\n} tw_block_t;\n")
    locals_ = (("        int32_t d = v - a->last;\n" if diffs else "")
               + ("        int32_t acc;\n" if block_bands else ""))
    init = [_AGG[a][1] for a in aggs if _AGG[a][1]] + [f"a->band{lv} = 0;" for lv in block_bands]
    update = ([] if not diffs else ["d = (d < 0) ? -d : d;"]) + [_AGG[a][2] for a in aggs if _AGG[a][2]]
    always = (["a->last = (int16_t)v;"] if "last" in aggs else [])
    for k, lv in enumerate(block_bands):
        half, mask = 1 << (lv - 1), (1 << lv) - 1
        always += [f"acc = s->band_acc[{k}][c] + (((j & {half}) != 0) ? -v : v);",
                   f"if ((j & {mask}) == {mask}) {{",
                   f"    a->band{lv} += (int64_t)acc * acc;",
                   "    acc = 0;",
                   "}",
                   f"s->band_acc[{k}][c] = acc;"]
    cinit = ["int64_t s1 = a->s1;" if "s1" in aggs else "", "int64_t s2 = a->s2;" if "s2" in aggs else "",
             "int32_t mn = a->mn;" if "mn" in aggs else "", "int32_t mx = a->mx;" if "mx" in aggs else "",
             "int32_t dsum = a->dsum;" if "dsum" in aggs else "", "int32_t dmax = a->dmax;" if "dmax" in aggs else "",
             "int32_t last = a->last;" if "last" in aggs else "",
             *(f"int64_t band{lv} = a->band{lv};" for lv in block_bands)]
    comb = ["s1 += a->s1;" if "s1" in aggs else "", "s2 += a->s2;" if "s2" in aggs else "",
            "mn = (a->mn < mn) ? a->mn : mn;" if "mn" in aggs else "",
            "mx = (a->mx > mx) ? a->mx : mx;" if "mx" in aggs else "",
            *(f"band{lv} += a->band{lv};" for lv in block_bands)]
    if diffs:
        comb += ["{", "    int32_t d = a->first - last;", "    d = (d < 0) ? -d : d;"]
        comb += ["    dsum += d + a->dsum;"] if "dsum" in aggs else []
        comb += ["    d = (a->dmax > d) ? a->dmax : d;", "    dmax = (d > dmax) ? d : dmax;"] if "dmax" in aggs else []
        comb += ["}"]
    if "last" in aggs:
        comb.append("last = a->last;")
    z0 = f"{prefix}_z0"
    expr = {
        "mean": "s1",
        "std": "(int64_t)tw_isqrt_u64((uint64_t)((int64_t)TW_WINDOW * s2 - s1 * s1))",
        "min": "mn", "max": "mx", "last": "last",
        "rms": (f"(int64_t)tw_isqrt_u64((uint64_t)((int64_t)TW_WINDOW * s2 - s1 * s1) + "
                f"(uint64_t)(tw_clamp_i31(s1 + (int64_t)TW_WINDOW * {z0}[c]) * "
                f"tw_clamp_i31(s1 + (int64_t)TW_WINDOW * {z0}[c])))"),
        "crossings": "tw_crossings_s16(s, c, (int32_t)s1)",
        "diff_abs_mean": "dsum", "diff_abs_max": "dmax",
        **{f"band{lv}": f"band{lv}" for lv in block_bands},
        **{f"band{lv}": f"tw_band_energy_s16(s, c, {lv})" for lv in ring_bands},
    }
    f = len(names)
    outputs = [f"out[c * {f} + {j}] = {expr[n]};" for j, n in enumerate(names)]
    ring_helpers = []
    if ring_bands:
        ring_helpers.append(C_BAND_FROM_RING.strip("\n"))
    if "crossings" in names:
        ring_helpers.append(C_CROSSINGS.strip("\n"))
    if "rms" in names:
        ring_helpers.insert(0, C_CLAMP_I31.strip("\n"))

    def block(xs: list[str], indent: int) -> str:
        return "".join(" " * indent + x + "\n" for x in xs if x)

    body = C_STREAM.substitute(
        locals=locals_, init=block(init, 12), update=block(update, 12), always=block(always, 8),
        ring_helpers="\n" + "\n\n".join(ring_helpers) + "\n" if ring_helpers else "",
        names=", ".join(names), combine_init=block(cinit, 8), combine=block(comb, 12), outputs=block(outputs, 8))
    fields = [StateField("tw_block_t", "blocks", (p.window // g, p.n_channels), block_bytes * p.window // g
                         * p.n_channels, align)]
    if block_bands:
        fields.append(StateField("int32_t", "band_acc", (len(block_bands), p.n_channels),
                                 4 * len(block_bands) * p.n_channels, 4))
    fields += [StateField("uint16_t", "bpos", (), 2, 2), StateField("uint16_t", "bhead", (), 2, 2)]
    doc = ("blocks[bhead] is the block being filled (bpos samples of TW_BLOCK so far), the TW_BLOCKS - 1 before it "
           "(circularly) the complete blocks of the window; band_acc holds each block band's running "
           "half-difference of the current 2^l group")
    return StreamC(typedefs, tuple(fields), "tw_features_fold", body, "tw_features_finish(s, s->t_${dst});",
                   needs_ring, ("isqrt",) if {"std", "rms"} & set(names) else (),
                   {"TW_BLOCK": g, "TW_BLOCKS": p.window // g, "TW_MAX_WINDOW": MAX_WINDOW}, doc)


C_CLAMP_I31 = r"""
/* Saturate to +-(2^31 - 1), so that its square fits int64. */
static int64_t tw_clamp_i31(int64_t x)
{
    return (x > INT32_MAX) ? INT32_MAX : ((x < -INT32_MAX) ? -INT32_MAX : x);
}
"""

C_CROSSINGS = r"""
/* Crossings of the window's mean by channel ch, read from the ring: #t with (W*q[t] > S1) !=
 * (W*q[t-1] > S1). Range: |W * q|, |S1| <= TW_MAX_WINDOW * 2^15 < 2^31. */
static int64_t tw_crossings_s16(const tw_state_t *s, int32_t ch, int32_t s1)
{
    int32_t r = (int32_t)s->head;
    int32_t t;
    int32_t above_prev = (TW_WINDOW * (int32_t)s->ring[r][ch] > s1) ? 1 : 0;
    int64_t n = 0;
    for (t = 1; t < TW_WINDOW; t++) {
        int32_t above;
        r = (r + 1 == TW_WINDOW) ? 0 : r + 1;
        above = (TW_WINDOW * (int32_t)s->ring[r][ch] > s1) ? 1 : 0;
        n += (above != above_prev) ? 1 : 0;
        above_prev = above;
    }
    return n;
}
"""


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
    "integer window features, see features_s16", C_TEMPLATE, check=_check, stream=stream_c,
    limits={"TW_MAX_WINDOW": MAX_WINDOW,
            **{f"TW_FEATURE_{name.upper()}": f.code for name, f in FEATURE_TABLE.items()}}))
