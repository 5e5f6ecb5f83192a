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
crossings       #t with (q[t] > L) != (q[t-1] > L) over the window, by the op's definition: a trained level
                (const ``level``: L = level); the window's mean on int8 residuals (attribute ``ring_block``
                = R: with F the first sample of q[t]'s block of R rows and k its shift, the smallest that
                fits every (q - F) >> k of the block in int8, (q[t] - F) >> k > (floor(S1 / W) - F) >> k
                in place of q[t] > floor(S1 / W), see :func:`ring_residuals`); else per block of B rows
                (attribute ``block``, default W), (B*q[t] > S1b) inside each block, S1b the block's sum
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
samples). The samples wait for their fold in a buffer of one group (:func:`group_rows`: 8 rows, the Haar
pyramid's, on the default features), whose fold continues its block's running aggregates, so the module
keeps no raw sample ring when the features allow it. The integers are the ones defined above, so the numpy
reference stays the whole-window computation. Crossings of a trained level are folded like the rest;
crossings of the window's mean, whose level is known only when the window ends, are counted then on the int8
residuals the module keeps of the window (one byte a sample instead of the ring's two); crossings of block
means are counted from the group's buffered samples. Only a Haar band coarser than a block, or the window's
mean over blocks too short for residuals (g < 16), still reads a raw int16 sample ring.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from string import Template

import numpy as np

from tinywarden.arith import isqrt_u64
from tinywarden.errors import ConfigError
from tinywarden.features import FEATURE_TABLE, block_size
from tinywarden.kernels.base import (
    C_IF_THUMB1,
    FeatureSink,
    KernelSpec,
    Op,
    ProgramView,
    StateField,
    StreamC,
    const_shape,
    int_attr,
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
    block: int
    #: (C,) the level crossings counts the crossings of, or None: each block's own mean
    level: np.ndarray | None
    #: rows of the blocks whose first sample the int8 residuals crossings of the window's mean are counted on
    #: are taken from (see :func:`ring_residuals`); 0: on the samples
    ring_block: int = 0


def _bands(x: np.ndarray, level: int) -> np.ndarray:
    """sum over blocks of 2**level rows of (sum of first half - sum of second half)**2; x (N, W, C) int64."""
    n, w, c = x.shape
    half = 2 ** (level - 1)
    blocks = x.reshape(n, w // (2 * half), 2, half, c).sum(axis=3)
    d = blocks[:, :, 0] - blocks[:, :, 1]
    return (d * d).sum(axis=1)


def _rms(q: _Window) -> np.ndarray:
    t = q.s1 + q.x.shape[1] * q.z0[None, :]  # |t| <= 2 * MAX_WINDOW * 2**15: see C_RMS
    return isqrt_u64(q.v + t * t)


def _crossings(q: _Window) -> np.ndarray:
    n, w, c = q.x.shape
    if q.level is not None:  # q > level exactly when level - q < 0
        above = q.x > q.level[None, None, :]
        return (above[:, 1:] != above[:, :-1]).sum(axis=1).astype(np.int64)
    if q.ring_block:  # the window's mean, on the int8 residuals the C keeps of the window
        r, first, shift = ring_residuals(q.x, q.ring_block)
        level = np.floor_divide(q.s1, w)[:, None, None, :]
        above = r > ((level - first) >> shift)  # (N, blocks, rows, C)
        above = above.reshape(n, w, c)
        return (above[:, 1:] != above[:, :-1]).sum(axis=1).astype(np.int64)
    b = q.x.reshape(n, w // q.block, q.block, c)
    above = q.block * b > b.sum(axis=2, keepdims=True)
    return (above[:, :, 1:] != above[:, :, :-1]).sum(axis=(1, 2)).astype(np.int64)


def ring_residuals(x: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(r, first, shift)``: the int8 residuals ``r = (q - first) >> shift`` of windows ``x`` (N, W, C) in block
    floating point, ``first`` the first sample of each block of ``rows`` rows (N, W / rows, 1, C), ``shift`` the
    block's shift (N, W / rows, 1, C): the smallest ``s >= 0`` with every ``(q - first) >> s`` of the block within
    int8 (``>>`` the floor shift), ``r`` (N, W / rows, rows, C). Crossings of the window's mean ``L`` count
    ``r > (L - first) >> shift``: exactly ``q > L`` in a block whose samples lie within int8 of its first
    (``shift`` 0: almost every block of normal data), and in a block that swings further the crossings of the
    samples on its coarser steps of ``2**shift`` (``q > L`` unless ``q`` and ``L`` share a step) instead of none
    (saturated residuals lost every crossing of a level beyond them). The C keeps one byte a sample instead of
    the raw ring's two, and a shift a block and channel. (One shift a channel, fixed from the training windows,
    cost up to 0.036 int8 ROC AUC on the simulator: its coarser steps blur the crossings of quiet channels in
    every block; a block's own shift is 0 unless that block swings beyond int8.)"""
    n, w, c = x.shape
    b = x.reshape(n, w // rows, rows, c)
    first = b[:, :, :1, :]
    d = b - first
    hi = d.max(axis=2, keepdims=True)  # >= 0
    lo = -d.min(axis=2, keepdims=True) - 1  # >= -1: d >> s >= -128 exactly when lo < 2**(s + 7)
    shift = np.zeros_like(first)
    for s in range(1, 17):  # |d| < 2**16: shift <= 9
        shift += ((hi >> (s - 1)) > 127) | ((lo >> (s - 1)) > 127)
    return d >> shift, first, shift


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
    level = op.consts.get("level")
    q = _Window(x, op.consts["z0"].astype(np.int64), s1, w * s2 - s1 * s1, np.abs(np.diff(x, axis=1)),
                crossings_rows(op, w), None if level is None else level.astype(np.int64),
                int(op.attrs.get("ring_block", 0)))
    out = [_BY_CODE[code](q) for code in op.consts["codes"].tolist()]
    return np.stack(out, axis=2).reshape(n, -1)  # (N, C, F) -> channel-major


def crossings_rows(op: Op, window: int) -> int:
    """Rows per block ``crossings`` counts in (attribute ``block``; a program without it: the whole window)."""
    return int(op.attrs.get("block", window))


def _check(op: Op, p: ProgramView) -> None:
    codes = np.asarray(op.consts["codes"])
    require(op.src == ("window",), "it reads the window")
    require(codes.ndim == 1 and len(codes) >= 1 and all(int(c) in _BY_CODE for c in codes),
            f"codes must be feature codes ({', '.join(f'{f.code} {n}' for n, f in FEATURE_TABLE.items())})")
    require(const_shape(op, "z0") == (p.n_channels,), f"z0 must have one entry per channel ({p.n_channels})")
    require(p.tensor(op.dst).size == p.n_channels * len(codes), "features must hold channels x codes values")
    require(p.window <= MAX_WINDOW, f"window {p.window} is beyond {MAX_WINDOW}")
    if "level" in op.consts:
        level = np.asarray(op.consts["level"])
        require("block" not in op.attrs, "crossings count the crossings of the level or of block means, not both")
        require(level.shape == (p.n_channels,) and bool(np.all(np.abs(level) <= 2**15)),
                f"level must hold one int16 value per channel ({p.n_channels})")
    if "ring_block" in op.attrs:
        require(crossings_rows(op, p.window) == p.window and "level" not in op.consts,
                "int8 residuals serve the crossings of the window's mean only")
        require(int(op.attrs.get("ring_block", 0)) == block_size(p.window, p.stride),
                f"ring_block must be the aggregate block, gcd(window, stride) = {block_size(p.window, p.stride)}")
    if "block" in op.attrs:
        b = int_attr(op, "block", 1, p.window)
        require(p.window % b == 0, f"the crossings block {b} must divide the window {p.window}")


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

#: The macro a group's fold calls per channel with the block's running extremes (``mn``, ``mx``) when the module
#: defines it (``EXTREMES_HOOK(s, c, x0, mn, mx)``, ``x0`` the group's first sample of channel ``c``).
EXTREMES_HOOK = "TW_BLOCK_EXTREMES_HOOK"

C_STREAM = Template(r"""$pre
/* Fold the group of TW_GROUP samples that has just completed (rows x[0], x[TW_N_CHANNELS], ... of each
 * channel) into its block's aggregates, blocks[bhead] (a block's first group starts them); every sample is
 * read once here. */
static void tw_features_group(tw_state_t *s, const int16_t *x)
{
    int32_t c;
    tw_block_t *blk;
$start    blk = s->blocks[s->bhead];
    for (c = 0; c < TW_N_CHANNELS; c++) {
        const int16_t *x0 = x + c;
        const int16_t *p = x0;
        tw_block_t *a = &blk[c];
        int32_t t;
$locals$stats$hook$store$bands    }
}

$advance/* Keep one quantized sample; fold its group when the group is complete. */
static void tw_features_push(tw_state_t *s, const int16_t q[TW_N_CHANNELS])
{
$push}
$ring_helpers
$finish""")

#: The fold of channel ``c``'s TW_BLOCKS blocks, oldest first, that :data:`C_FINISH_ALL` and
#: :data:`C_FINISH_CHANNEL` share (substituted first: it holds their ``$combine`` placeholders).
C_COMBINE_BLOCKS = r"""        int32_t b = (s->bhead + 1u == TW_BLOCKS) ? 0 : (int32_t)s->bhead + 1;
        int32_t k;
        const tw_block_t *a = &s->blocks[b][c];
$combine_init        for (k = 1; k < TW_BLOCKS; k++) {
            b = (b + 1 == TW_BLOCKS) ? 0 : b + 1;
            a = &s->blocks[b][c];
$combine        }
"""

#: The window's features of every channel (into the int64 scratch, or through the sink).
C_FINISH_ALL = r"""
/* The window's features, channel-major, from its TW_BLOCKS blocks (oldest after s->bhead, newest at it):
 * $names$sink_doc. */
static void tw_features_finish(const tw_state_t *s, $out_params)
{
    int32_t c;
$sink_init    for (c = 0; c < TW_N_CHANNELS; c++) {
$sink_local$combine_blocks$outputs$sink_step    }
}
"""

#: One channel's window features (:attr:`~tinywarden.kernels.base.FeatureSink.channel`): the same combination and
#: outputs as :data:`C_FINISH_ALL`'s loop body, for channel ``c`` alone, into ``f``; its reader calls it for each
#: channel whenever it needs the values, so the int64 features take no state.
C_FINISH_CHANNEL = r"""
/* Channel c's features of the window, from its TW_BLOCKS blocks (oldest after s->bhead, newest at it), into f:
 * $names$sink_doc. Out of line: its reader calls it in two places. */
TW_NO_INLINE void tw_features_finish(const tw_state_t *s, int32_t c, int64_t *f)
{
    {
$combine_blocks$outputs    }
}
"""

#: A block of one group: the fold starts the block it writes (the oldest block's slot, whose last window has
#: been combined). A block of several groups: its first group starts it, the next ones continue its sums.
C_START_ONE = "    s->bhead = (uint16_t)((s->bhead + 1u == TW_BLOCKS) ? 0u : s->bhead + 1u);\n"
C_START_GROUPS = r"""    int32_t start = (s->gpos == 0u);
$row0    if (start != 0) {
        s->bhead = (uint16_t)((s->bhead + 1u == TW_BLOCKS) ? 0u : s->bhead + 1u);
    }
    s->gpos = (uint16_t)((s->gpos + 1u == TW_GROUPS) ? 0u : s->gpos + 1u);
"""

#: Where the samples of the current group wait: the module's ring (rows [head - TW_GROUP, head) once a group
#: is complete: groups are aligned to the ring because TW_GROUP divides TW_WINDOW) ...
C_PUSH_RING = r"""    (void)q;
    if (s->head % TW_GROUP == 0u) {
        tw_features_group(s, &s->ring[((s->head == 0u) ? TW_WINDOW : (int32_t)s->head) - TW_GROUP][0]);
    }
"""
#: ... or, when nothing else needs the ring, a buffer of one group (the row copied in a loop,
#: 20 B less Cortex-M4 flash than a line a channel), then C_ADVANCE_GROUP; the float entry point converts its samples
#: straight into the row.
C_PUSH_GROUP = r"""    int16_t *row = s->fbuf[s->bpos];
    int32_t c;
    for (c = 0; c < TW_N_CHANNELS; c++) { /* a loop: less flash than a copy a channel (tw_push converts in place) */
        row[c] = q[c];
    }
    tw_features_advance(s);
"""
C_ADVANCE_GROUP = r"""/* The sample is in fbuf[bpos]: fold the group when it is complete. */
static void tw_features_advance(tw_state_t *s)
{
    s->bpos = (uint16_t)((s->bpos + 1u == TW_GROUP) ? 0u : s->bpos + 1u);
    if (s->bpos == 0u) {
        tw_features_group(s, &s->fbuf[0][0]);
    }
}

"""

#: One Haar band of one channel over the group: sum over groups of 2^level samples of (first half sum -
#: second half sum)^2, added to $init.
C_BAND_BLOCK = Template(r"""        {
            int64_t e = $init;
            p = x0;
            for (t = 0; t < TW_GROUP; t += $group) {
                int32_t d = 0;
                int32_t i;
                for (i = 0; i < $half; i++, p += TW_N_CHANNELS) {
                    d += p[0] - p[$half * TW_N_CHANNELS];
                }
                p += $half * TW_N_CHANNELS;
                e += (int64_t)d * d;
            }
            a->band$level = e;
        }
""")

#: Bands up to this level are computed together, straight-line over groups of 2^level samples (a Haar pyramid);
#: a finer group would grow the code more than it saves.
MAX_PYRAMID_LEVEL = 3
#: Samples a fold reads at once when the features need no more (a Haar band or a crossings block may need
#: more): the samples wait in a buffer of this many rows, and each fold reads and writes its block's
#: aggregates once for them.
GROUP_ROWS = 8
#: Samples per pass of a group's statistics loop. One: on the default pipeline two a pass (the loop's count and
#: branch halved) spilled registers on Cortex-M4, 74 B more flash and 378 more instructions a window.
UNROLL = 1


def haar_pyramid(levels: list[int], with_sum: bool = False, init: Mapping[int, str] | None = None,
                 with_sq: bool = False) -> str:
    """C of the Haar bands ``levels`` (each <= :data:`MAX_PYRAMID_LEVEL`) of one channel over the group, in one
    pass over groups of ``2**max(levels)`` samples: level-l sums of adjacent pairs of level-(l - 1) sums,
    their differences squared into ``a->band<l>`` (the same energies as :data:`C_BAND_BLOCK`'s, summed in
    another order: exact integers), each added to ``init[l]`` (default 0). ``with_sum``: the groups' top sums
    also add up to ``s1``, the block's sum (so the statistics pass need not). ``with_sq`` (``levels`` all of
    1..top): the sum of squares ``s2`` from the same sums, as the Haar transform keeps the energy: over a group
    of 2**top samples with sum S, 2**top * sum v**2 = S**2 + sum over l of 2**(top - l) * (level-l energy)."""
    top = max(levels)
    group = 1 << top
    init = init or {}
    if with_sq and sorted(levels) != list(range(1, top + 1)):
        raise ValueError(f"the sum of squares needs every level 1..{top}, got {levels}")
    decl = [f"int32_t a{lv}_{k};" for lv in range(top) for k in range(group >> lv)] + ["int32_t st;"]
    body = [f"a0_{i} = p[{i} * TW_N_CHANNELS];" for i in range(group)]
    for lv in range(1, top + 1):
        for k in range(group >> lv):
            lo, hi = f"a{lv - 1}_{2 * k}", f"a{lv - 1}_{2 * k + 1}"
            if lv in levels:
                body.append(f"e{lv} += (int64_t)({lo} - {hi}) * ({lo} - {hi});")
            if lv < top:
                body.append(f"a{lv}_{k} = {lo} + {hi};")
            else:
                body += [f"st = {lo} + {hi};", *(["s1 += st;"] if with_sum else []),
                         *(["sq += (int64_t)st * st;"] if with_sq else [])]
    if not (with_sum or with_sq):
        decl, body = decl[:-1], [line for line in body if not line.startswith("st = ")]
    # Thumb-1: the same pyramid rolled, the first level from the samples' pairs, the next ones from a small array
    # of the pairs' sums summed pairwise in place, level by level (every level's energy kept, the unread ones unused)
    rolled = [f"int64_t eb[{top}] = {{{', '.join('0' * top)}}};",
              f"for (t = 0; t < TW_GROUP; t += {group}, p += {group} * TW_N_CHANNELS) {{",
              f"    int32_t v[{group // 2}];", "    int32_t n;", "    int32_t j;", "    int64_t *e;",
              f"    for (j = 0; j < {group // 2}; j++) {{", "        int32_t a0 = p[2 * j * TW_N_CHANNELS];",
              "        int32_t a1 = p[(2 * j + 1) * TW_N_CHANNELS];", "        int32_t d = a0 - a1;",
              "        eb[0] += (int64_t)d * d;", "        v[j] = a0 + a1;", "    }",
              f"    for (n = {group // 2}, e = eb + 1; n > 1; n >>= 1, e++) {{",
              "        for (j = 0; j < n; j += 2) {", "            int32_t d = v[j] - v[j + 1];",
              "            *e += (int64_t)d * d;", "            v[j >> 1] = v[j] + v[j + 1];", "        }", "    }",
              *(["    s1 += v[0];"] if with_sum else []), *(["    sq += (int64_t)v[0] * v[0];"] if with_sq else []),
              "}", *(f"e{lv} = eb[{lv - 1}];" for lv in levels)]
    energy = " + ".join([f"(e{lv} << {top - lv})" if lv < top else f"e{lv}" for lv in levels])
    lines = ["        {", *(f"            int64_t e{lv} = 0;" for lv in levels),
             *(["            int64_t sq = 0;"] if with_sq else []), "            p = x0;",
             C_IF_THUMB1, "            {", *(f"                {b}" for b in rolled), "            }", "#else",
             f"            for (t = 0; t < TW_GROUP; t += {group}, p += {group} * TW_N_CHANNELS) {{",
             *(f"                {b}" for b in decl + body), "            }", "#endif",
             *([f"            s2 += (sq + {energy}) >> {top};"] if with_sq else []),
             *(f"            e{lv} += {init[lv]};" for lv in levels if init.get(lv, "0") != "0"),
             *(f"            a->band{lv} = e{lv};" for lv in levels), "        }"]
    return "\n".join(lines) + "\n"


#: Crossings of one channel inside the group, per sub-block of TW_CROSSINGS_BLOCK samples against the sub-block's
#: own mean: q > floor(S1b / B) exactly when B*q > S1b (q an integer), i.e. when the sign bit of floor(S1b / B) - q
#: is set. $level_sum gives sb, the sub-block's sum (s1 when the sub-block is the block); n adds to $init.
C_CROSS_BLOCK = Template(r"""        {
            int32_t n = $init;
            int32_t k;
            p = x0;
            for (k = 0; k < TW_GROUP; k += TW_CROSSINGS_BLOCK) {
$level_sum                int32_t level = (sb >= 0) ? sb / TW_CROSSINGS_BLOCK
                                          : -((-sb + TW_CROSSINGS_BLOCK - 1) / TW_CROSSINGS_BLOCK);
                uint32_t prev = (uint32_t)(level - *p) >> 31;
                for (t = 1; t < TW_CROSSINGS_BLOCK; t++) {
                    uint32_t above;
                    p += TW_N_CHANNELS;
                    above = (uint32_t)(level - *p) >> 31;
                    n += (int32_t)(above ^ prev);
                    prev = above;
                }
                p += TW_N_CHANNELS;
            }
            a->cross = (int16_t)n;
        }
""")
C_CROSS_SUM_ONE = "                int32_t sb = s1;\n"
C_CROSS_SUM_LOOP = r"""                int32_t sb = 0;
                const int16_t *r = p;
                for (t = 0; t < TW_CROSSINGS_BLOCK; t++, r += TW_N_CHANNELS) {
                    sb += *r;
                }
"""

#: what each aggregate needs: (C type of the block member, C type of its running value, the running value
#: at a block's start (v the block's first sample), its update with the sample v (and d = |v - previous|,
#: ab = whether v is above the channel's crossings level))
_AGG = {
    "s1": ("int32_t", "int32_t", "0", "s1 += v;"),
    "s2": ("int64_t", "int64_t", "0", "s2 += (int64_t)v * v;"),
    "mn": ("int16_t", "int32_t", "x0[0]", "mn = (v < mn) ? v : mn;"),
    "mx": ("int16_t", "int32_t", "x0[0]", "mx = (v > mx) ? v : mx;"),
    "first": ("int16_t", "", "", ""),
    "dsum": ("int32_t", "int32_t", "0", "dsum += d;"),
    "dmax": ("uint16_t", "int32_t", "0", "dmax = (d > dmax) ? d : dmax;"),  # |step| <= 2^16 - 1
    "last": ("int16_t", "", "", ""),
    "cross": ("int16_t", "int32_t", "0", "cross += (int32_t)(ab ^ pa);"),
}
#: the aggregates a feature reads (crossings: of the trained level; of block means they read s1 and cross)
_NEEDS = {"mean": ("s1",), "std": ("s1", "s2"), "rms": ("s1", "s2"), "min": ("mn",), "max": ("mx",),
          "last": ("last",), "crossings": ("cross", "first", "last"), "diff_abs_mean": ("dsum", "first", "last"),
          "diff_abs_max": ("dmax", "first", "last")}
_SIZE = {"int64_t": 8, "int32_t": 4, "uint32_t": 4, "int16_t": 2, "uint16_t": 2, "uint8_t": 1}

#: A block's non-negative wide sums (s2, the band energies) below 2**SPLIT_BITS are kept in SPLIT_BITS / 8
#: bytes, a uint32 low word and a uint8 high byte, instead of an int64: s2 <= g * 2**30 (|q| <= 2**15) and
#: band l <= (g / 2**l) * (2**(l - 1) * (2**16 - 1))**2 < g * 2**(30 + l) for a block of g samples.
SPLIT_BITS = 40


def wide_bound(name: str, g: int) -> int:
    """Upper bound (exclusive) of the wide block sum ``name`` (``s2`` or ``band<l>``) over ``g`` samples."""
    return g << 30 if name == "s2" else g << (30 + int(name[4:]))


def _put_bands(code: str, levels: list[int], put: Callable[[str, str], str]) -> str:
    """``code`` (a band pass) with each store of a band energy into the block written by ``put``."""
    for lv in levels:
        code = code.replace(f"a->band{lv} = e{lv};", put(f"band{lv}", f"e{lv}"))
        code = code.replace(f"a->band{lv} = e;", put(f"band{lv}", "e"))
    return code


#: The rare path of a fold whose block's extremes lie beyond int8 of its first sample (see ring_residuals).
C_CRING_SHIFT = r"""
/* Block floating point for the crossings residuals (tinywarden.kernels.features_s16.ring_residuals), called by a
 * group's fold when its block's extremes mn, mx lie beyond int8 of the block's first sample ref, with their
 * reach d = max(mx - ref, ref - 1 - mn) > INT8_MAX: the smallest shift sh >= a->sh with d >> sh <= INT8_MAX
 * (exactly (mx - ref) >> sh <= INT8_MAX and (mn - ref) >> sh >= INT8_MIN); the block's earlier residuals
 * (r[0, row0), at a->sh) shifted on to it (floor shifts compose), this group's recomputed from its samples x0. */
static void tw_cring_shift(tw_block_t *a, int8_t *r, const int16_t *x0, int32_t row0, int32_t ref, int32_t d)
{
    int32_t old = (int32_t)a->sh;
    int32_t sh = old;
    int32_t t;
    while ((d >> sh) > INT8_MAX) {
        sh++;
    }
    for (t = 0; t < row0; t++) {
        r[t] = (int8_t)(r[t] >> (sh - old));
    }
    for (t = 0; t < TW_GROUP; t++) {
        r[row0 + t] = (int8_t)((x0[t * TW_N_CHANNELS] - ref) >> sh);
    }
    a->sh = (uint8_t)sh;
}
"""
C_CROSSINGS_S8 = r"""
/* Crossings of the window's mean by channel c (tinywarden.kernels.features_s16.ring_residuals), counted on the int8
 * residuals cring keeps of the window (each block's samples less its first sample, shifted right by the block's
 * sh): #t with r[t] > lb changing, lb = (L - first) >> sh, L = floor(S1 / W); the crossings of the samples
 * themselves in every block of shift 0 (its samples within int8 of its first). Range: |S1| <= TW_MAX_WINDOW * 2^15. */
static int64_t tw_crossings_s8(const tw_state_t *s, int32_t c, int32_t s1)
{
    int32_t level = (s1 >= 0) ? s1 / TW_WINDOW : -((-s1 + TW_WINDOW - 1) / TW_WINDOW);
    int32_t b = (s->bhead + 1u == TW_BLOCKS) ? 0 : (int32_t)s->bhead + 1;
    int32_t i;
    int32_t t;
#if defined(__ARM_FEATURE_SIMD32) && defined(__GNUC__) && TW_BLOCK % 4 == 0
    /* four residuals a word (ACLE __ssub8, __sel, __usada8): SSUB8 sets GE[j] where lb >= r[j] (not above), SEL
     * turns them into a byte mask, a crossing is a mask byte differing from the one before it (the previous word's
     * last for the first) and USADA8 adds up the differing bytes, 255 each */
    uint32_t acc = 0u;
    uint32_t pm = (s->cring[c][b][0] > ((level - s->blocks[b][c].first) >> s->blocks[b][c].sh)) ? 0u : 0xFF000000u;
    for (i = 0; i < TW_BLOCKS; i++) {
        int32_t lb = (level - s->blocks[b][c].first) >> s->blocks[b][c].sh;
        /* lb beyond int8: no residual is above it (lb > 127: the mask of lb = 127), or every one is (keep 0) */
        uint32_t lbx4 = (uint32_t)(uint8_t)(int8_t)((lb > INT8_MAX) ? INT8_MAX : ((lb < INT8_MIN) ? INT8_MIN : lb))
                        * 0x01010101u;
        uint32_t keep = (lb < INT8_MIN) ? 0u : 0xFFFFFFFFu;
        const int8_t *x = s->cring[c][b];
        for (t = 0; t < TW_BLOCK; t += 4) {
            uint32_t w;
            uint32_t m;
            __builtin_memcpy(&w, x + t, sizeof w);
            (void)__builtin_arm_ssub8(lbx4, w);
            m = __builtin_arm_sel(keep, 0u);
            acc = __builtin_arm_usada8(m ^ ((m << 8) | (pm >> 24)), 0u, acc);
            pm = m;
        }
        b = (b + 1 == TW_BLOCKS) ? 0 : b + 1;
    }
    return (int64_t)(acc / 255u);
#else
    int32_t n = 0;
    int32_t prev = 0;
    for (i = 0; i < TW_BLOCKS; i++) {
        int32_t lb = (level - s->blocks[b][c].first) >> s->blocks[b][c].sh;
        const int8_t *x = s->cring[c][b];
        if (i == 0) { /* the first residual's side: no crossing before it */
            prev = lb - x[0];
        }
#if defined(__ARM_ARCH_ISA_THUMB)
        for (t = 0; t < TW_BLOCK; t++) {
            int32_t a = lb - x[t]; /* r > lb exactly when a < 0: a crossing is a sign change */
            n += (int32_t)((uint32_t)(a ^ prev) >> 31);
            prev = a;
        }
#else
        /* a host: each step from its own two residuals, nothing carried from one step to the next, so that a
         * vectorizing compiler (the native library's -O3) takes many at once; the same count */
        n += (int32_t)((uint32_t)((lb - x[0]) ^ prev) >> 31);
        for (t = 1; t < TW_BLOCK; t++) {
            n += (int32_t)((uint32_t)((lb - x[t]) ^ (lb - x[t - 1])) >> 31);
        }
        prev = lb - x[TW_BLOCK - 1];
#endif
        b = (b + 1 == TW_BLOCKS) ? 0 : b + 1;
    }
    return n;
#endif
}
"""




def _level_crossings(op: Op) -> bool:
    """Whether ``op``'s crossings (if it has them) count the crossings of a trained level (const ``level``)."""
    return "level" in op.consts


def needs_ring(op: Op, p: ProgramView) -> bool:
    """Whether the streaming form of ``op`` reads the raw window: crossings of block means in blocks that do not
    divide an aggregate block (the window's mean), or a Haar band coarser than a block. Crossings of a trained
    level, and every other feature, are folded as the samples arrive."""
    names = _names(op)
    g = block_size(p.window, p.stride)
    return (("crossings" in names and not _level_crossings(op) and "ring_block" not in op.attrs
             and g % crossings_rows(op, p.window) != 0)
            or any(g % (1 << int(n[4:])) for n in names if n.startswith("band")))


def group_rows(op: Op, p: ProgramView, ring: bool) -> int:
    """Samples each fold reads (``TW_GROUP``): a divisor of the aggregate block ``g`` that holds every Haar band
    group and crossings block folded from the samples, and :data:`GROUP_ROWS` when they fit in it; with the
    raw ring kept (the samples are there anyway), the whole block."""
    g = block_size(p.window, p.stride)
    if ring:
        return g
    names = _names(op)
    need = [1 << int(n[4:]) for n in names if n.startswith("band")]
    if "crossings" in names and not _level_crossings(op) and "ring_block" not in op.attrs:
        need.append(crossings_rows(op, p.window))
    return math.lcm(*need, math.gcd(g, GROUP_ROWS))


def _names(op: Op) -> list[str]:
    by_code = {f.code: name for name, f in FEATURE_TABLE.items()}
    return [by_code[code] for code in op.consts["codes"].tolist()]


def stream_c(op: Op, p: ProgramView, prefix: str, ring: bool, sink: FeatureSink | None = None) -> StreamC:
    """The streaming C of ``op`` for program ``p``: only the aggregates its features need, straight-line
    (the feature set is fixed when the C is generated: no run-time dispatch over feature codes). ``ring``:
    the module keeps the raw sample ring (a block's samples are read from it); else the samples wait in a
    buffer of one group (:func:`group_rows`) and are folded into their block's running aggregates.
    ``sink`` (:class:`~tinywarden.kernels.base.FeatureSink`): each channel's features are requantized into the
    model's input as soon as they are combined, through that op's own kernel, so the int64 features need no
    state; with the sink's ``consume``, the requantized values go straight on to the op that reads them, and the
    input needs none either."""
    names = _names(op)
    g = block_size(p.window, p.stride)
    gr = group_rows(op, p, ring)
    partial = gr < g  # a block of several groups: its aggregates run on from one fold to the next
    row0 = "row0" if partial else "0"  # the group's first row in its block
    cb = crossings_rows(op, p.window)
    level_cross = "crossings" in names and _level_crossings(op)
    ring_cross = "crossings" in names and "ring_block" in op.attrs  # on int8 residuals, at the window's end
    block_cross = "crossings" in names and not level_cross and not ring_cross and g % cb == 0
    if "crossings" in names and not level_cross and not ring_cross and not block_cross and cb != p.window:
        raise ConfigError(f"crossings in blocks of {cb} rows need blocks that divide gcd(window, stride) = {g}, "
                          f"or the whole window ({p.window})")
    bands = [int(n[4:]) for n in names if n.startswith("band")]
    block_bands = [lv for lv in bands if g % (1 << lv) == 0]
    ring_bands = [lv for lv in bands if g % (1 << lv) != 0]
    needs = {a for n in names if not (n == "crossings" and not level_cross) for a in _NEEDS.get(n, ())}
    needs |= {"s1"} if "crossings" in names and not level_cross else set()
    needs |= {"cross"} if block_cross else set()
    # the residuals' reference, and the block's extremes that tell when its residuals need a shift
    needs |= {"first", "mn", "mx"} if ring_cross else set()
    diffs = bool({"dsum", "dmax"} & needs)
    carried = diffs or level_cross  # the previous sample's step or side
    needs |= {"last"} if carried and partial else set()  # the step into a group from its block's previous one
    aggs = [a for a in _AGG if a in needs]
    wide = [a for a in aggs if a == "s2"] + [f"band{lv}" for lv in block_bands]
    split = {n for n in wide if wide_bound(n, g) <= 1 << SPLIT_BITS}
    lvl = f"{prefix}_level"

    def get(n: str) -> str:  # a wide sum read back from the block as int64
        return f"(int64_t)(((uint64_t)a->{n}_hi << 32) | a->{n}_lo)" if n in split else f"a->{n}"

    def put(n: str, v: str) -> str:
        return f"a->{n}_lo = (uint32_t){v}; a->{n}_hi = (uint8_t)((uint64_t){v} >> 32);" if n in split \
            else f"a->{n} = {v};"

    def running(n: str, start: str) -> str:  # a running value at the fold's start: its block's, or the start's
        return f"(start != 0) ? {start} : {get(n)}" if partial else start

    # with the raw ring kept (one group a block), a block's first and last samples are read from it (blocks are
    # aligned to its rows)
    ring_edges = ring and not ring_cross
    in_ring = {"first", "last"} if ring_edges else set()
    members = ([(_AGG[a][0], a) for a in aggs if a not in split and a not in in_ring]
               + [("int64_t", n) for n in wide if n.startswith("band") and n not in split]
               + [m for n in wide if n in split for m in (("uint32_t", f"{n}_lo"), ("uint8_t", f"{n}_hi"))]
               + ([("uint8_t", "sh")] if ring_cross else []))  # the block's residuals' shift
    members.sort(key=lambda m: -_SIZE[m[0]])
    size = sum(_SIZE[t] for t, _ in members)
    align = max((_SIZE[t] for t, _ in members), default=2)
    pad = -size % max(align, 4) if members else 4
    lines = [f"    {t} {n};" for t, n in members] + ([f"    uint8_t pad[{pad}];"] if pad else [])
    block_bytes = size + pad
    typedefs = ("/* One block's aggregates of one channel (tinywarden.kernels.features_s16): s1 sum, s2 sum of "
                "squares,\n * mn/mx extremes, first/last sample, dsum/dmax sum and max of |step| inside the block, "
                "cross crossings\n * (of the trained level, or of the sub-blocks' means) inside the block, band<l>"
                " Haar band energy of level l, sh the shift\n * of the block's crossings residuals; every member is "
                "exact for TW_BLOCK <= TW_MAX_WINDOW. */\n"
                "typedef struct {\n" + "\n".join(lines) + "\n} tw_block_t;\n")
    pyramid = [lv for lv in block_bands if lv <= MAX_PYRAMID_LEVEL]
    pyramid_sum = bool(pyramid) and "s1" in aggs  # the block's sum from the pyramid's top sums
    # and its sum of squares from the pyramid's energies, when it computes every level
    pyramid_sq = bool(pyramid) and "s2" in aggs and sorted(pyramid) == list(range(1, max(pyramid) + 1))
    folded = [a for a in aggs if _AGG[a][1] and not (a == "cross" and block_cross)]
    # the running values: (C type, name, value at a block's start, the block's so far)
    run = ([(_AGG[a][1], a, _AGG[a][2], get(a)) for a in folded]
           + ([("int32_t", "prev", "x0[0]", "a->last")] if carried else [])
           + ([("int32_t", "ref", "x0[0]", "a->first")] if ring_cross else []))
    if partial:  # one branch on the block's start for all of them
        locals_ = ([f"{t} {n};" for t, n, _, _ in run]
                   + (["if (start != 0) {", *(f"    {n} = {v};" for _, n, v, _ in run), "} else {",
                       *(f"    {n} = {v};" for _, n, _, v in run), "}"] if run else []))
    else:
        locals_ = [f"{t} {n} = {v};" for t, n, v, _ in run]
    if level_cross:
        locals_ += [f"int32_t lv = {lvl}[c];", "uint32_t pa = (uint32_t)(lv - prev) >> 31;"]
    if ring_cross:
        locals_ += [f"int8_t *rp = &s->cring[c][s->bhead][{row0}];"]

    update = ((["int32_t d = v - prev;"] if diffs else [])
              + (["uint32_t ab = (uint32_t)(lv - v) >> 31;"] if level_cross else [])
              + (["d = (d < 0) ? -d : d;"] if diffs else [])
              + [_AGG[a][3] for a in folded if not (a == "s1" and pyramid_sum) and not (a == "s2" and pyramid_sq)]
              + (["prev = v;"] if carried else []) + (["pa = ab;"] if level_cross else [])
              # the residual's low byte: exact while the block stays within int8 of its first sample, else the
              # group's residuals are recomputed (tw_cring_shift)
              + (["*rp++ = (int8_t)(uint8_t)(v - ref);"] if ring_cross else []))
    if not update:
        update = ["(void)v;"]
    unroll = UNROLL if gr % UNROLL == 0 else 1  # UNROLL samples a pass

    def stats_loop(k: int) -> list[str]:
        body = [line for j in range(k)
                for line in ["{", f"    int32_t v = p[{j} * TW_N_CHANNELS];", *(f"    {u}" for u in update), "}"]]
        return [f"for (t = 0; t < TW_GROUP; t += {k}, p += {k} * TW_N_CHANNELS) {{", *(f"    {b}" for b in body),
                "}"]

    # on a Thumb-1 core one sample a pass (flash first); the same sums
    stats = stats_loop(1) if unroll == 1 else [C_IF_THUMB1, *stats_loop(1), "#else", *stats_loop(unroll), "#endif"]
    # the block's extremes so far, this group's samples included, for a later step that checks each sample against
    # a per-channel range (the likelihood's value record: StreamC.extremes_hook)
    hook = ([f"#if defined({EXTREMES_HOOK})", f"{EXTREMES_HOOK}(s, c, x0, mn, mx);", "#endif"]
            if {"mn", "mx"} <= set(folded) else [])
    store = [put(a, a) if a in split else f"a->{a} = ({_AGG[a][0]}){a};" for a in folded
             if not (a == "s1" and pyramid_sum) and not (a == "s2" and pyramid_sq)]
    cross_code = C_CROSS_BLOCK.substitute(level_sum=C_CROSS_SUM_ONE if cb == gr == g else C_CROSS_SUM_LOOP,
                                          init=running("cross", "0")) if block_cross else ""
    if "first" in aggs and not ring_edges:
        first = "a->first = x0[0];" + ("\na->sh = 0u;" if ring_cross else "")
        store.append(f"if (start != 0) {{\n    {first.replace(chr(10), chr(10) + '    ')}\n}}" if partial else first)
    if ring_cross:  # rare: the block swings beyond int8 of its first sample (or has already): shift its residuals
        store += ["{", "    int32_t d = (ref - 1 - mn > mx - ref) ? ref - 1 - mn : mx - ref; /* the block's reach */",
                  "    if (d > INT8_MAX) {",
                  f"        tw_cring_shift(a, s->cring[c][s->bhead], x0, {row0}, ref, d);", "    }", "}"]
    if "last" in aggs and not ring_edges:
        store.append("a->last = x0[(TW_GROUP - 1) * TW_N_CHANNELS];")
    if not store and not block_bands and not block_cross:
        store = ["(void)a;"]
    band_code = ([haar_pyramid(pyramid, pyramid_sum, {lv: running(f"band{lv}", "0") for lv in pyramid}, pyramid_sq)
                  + ("        a->s1 = s1;\n" if pyramid_sum else "")
                  + (f"        {put('s2', 's2')}\n" if pyramid_sq else "")] if pyramid else []) + [
        C_BAND_BLOCK.substitute(group=1 << lv, half=1 << (lv - 1), level=lv, init=running(f"band{lv}", "0"))
        for lv in block_bands if lv > MAX_PYRAMID_LEVEL]
    band_code = [_put_bands(code, block_bands, put) for code in band_code]
    first_of, last_of = (("s->ring[r][c]", "s->ring[r + TW_BLOCK - 1][c]") if ring_edges
                         else ("a->first", "a->last"))
    # the window's sum fits int32 (|s1| <= TW_MAX_WINDOW * 2^15): 32-bit adds, one 32 x 32 -> 64-bit square
    cinit = ["int32_t s1 = a->s1;" if "s1" in aggs else "", f"int64_t s2 = {get('s2')};" if "s2" in aggs else "",
             "int32_t mn = a->mn;" if "mn" in aggs else "", "int32_t mx = a->mx;" if "mx" in aggs else "",
             "int32_t dsum = a->dsum;" if "dsum" in aggs else "", "int32_t dmax = a->dmax;" if "dmax" in aggs else "",
             *(["int32_t r = (int32_t)s->head; /* the block's first ring row */"] if ring_edges and "last" in aggs
               else []),
             f"int32_t last = {last_of};" if "last" in aggs else "",
             "int32_t cross = a->cross;" if "cross" in aggs else "",
             f"int32_t lv = {lvl}[c];" if level_cross else "",
             *(f"int64_t band{lv} = {get(f'band{lv}')};" for lv in block_bands)]
    comb = ["s1 += a->s1;" if "s1" in aggs else "", f"s2 += {get('s2')};" if "s2" in aggs else "",
            "mn = (a->mn < mn) ? a->mn : mn;" if "mn" in aggs else "",
            "mx = (a->mx > mx) ? a->mx : mx;" if "mx" in aggs else "",
            "cross += a->cross;" if "cross" in aggs else "",
            *(f"band{lv} += {get(f'band{lv}')};" for lv in block_bands)]
    if ring_edges and "last" in aggs:
        comb.append("r = (r + TW_BLOCK == TW_WINDOW) ? 0 : r + TW_BLOCK;")
    if level_cross:  # the step from the previous block's last sample into this block's first
        comb.append(f"cross += (int32_t)((((uint32_t)(lv - {first_of})) ^ ((uint32_t)(lv - last))) >> 31);")
    if diffs:
        comb += ["{", f"    int32_t d = {first_of} - last;", "    d = (d < 0) ? -d : d;"]
        comb += ["    dsum += d + a->dsum;"] if "dsum" in aggs else []
        comb += ["    d = (a->dmax > d) ? a->dmax : d;", "    dmax = (d > dmax) ? d : dmax;"] if "dmax" in aggs else []
        comb += ["}"]
    if "last" in aggs:
        comb.append(f"last = {last_of};")
    if not any(comb):
        comb = ["(void)a;"]
    z0 = f"{prefix}_z0"
    expr = {
        "mean": "s1",
        "std": "(int64_t)tw_isqrt_u64((uint64_t)((int64_t)TW_WINDOW * s2 - (int64_t)s1 * s1))",
        "min": "mn", "max": "mx", "last": "last",
        "rms": f"tw_rms_s16((int64_t)TW_WINDOW * s2 - (int64_t)s1 * s1, s1 + (int32_t)TW_WINDOW * {z0}[c])",
        "crossings": "cross" if level_cross or block_cross else
        "tw_crossings_s8(s, c, s1)" if ring_cross else "tw_crossings_s16(s, c, s1)",
        "diff_abs_mean": "dsum", "diff_abs_max": "dmax",
        **{f"band{lv}": f"band{lv}" for lv in block_bands},
        **{f"band{lv}": f"tw_band_energy_s16(s, c, {lv})" for lv in ring_bands},
    }
    f = len(names)
    channel = sink is not None and sink.channel
    if channel:
        outputs = [f"f[{j}] = {expr[n]};" for j, n in enumerate(names)]
        subs = {"sink_doc": " (computed again each time it is read: the baseline adaptation reads them twice a "
                            "window, tinywarden.kernels.adapt_q)"}
    elif sink is None:
        outputs = [f"out[c * {f} + {j}] = {expr[n]};" for j, n in enumerate(names)]
        subs = {"out_params": "int64_t *out", "sink_doc": "", "sink_init": "", "sink_local": "", "sink_step": ""}
    else:
        outputs = [f"f[{j}] = {expr[n]};" for j, n in enumerate(names)]
        to = "v" if sink.consume else f"out + c * {f}"
        subs = {"out_params": sink.consume_params if sink.consume else f"{sink.ctype} *out",
                "sink_doc": f",\n * requantized to the model's input by {sink.params}" + (
                    ", each channel's values handed on as they are (the input is never stored)" if sink.consume
                    else ""),
                "sink_init": f"    tw_feature_requant_params_t q = {sink.params};\n",
                "sink_local": f"        int64_t f[{f}];\n"
                + (f"        {sink.ctype} v[{f}];\n" if sink.consume else ""),
                "sink_step": "".join(f"        {x}\n" for x in (
                    f"tw_requantize_s64_{sink.suffix}(&q, f, {f}, {to});",
                    f"TW_REQUANT_STEP(q, {f});", *([sink.consume] if sink.consume else [])))}
    ring_helpers = []
    if "rms" in names:
        ring_helpers.append(C_RMS.strip("\n"))
    if ring_bands:
        ring_helpers.append(C_BAND_FROM_RING.strip("\n"))
    if "crossings" in names and not (level_cross or block_cross or ring_cross):
        ring_helpers.append(C_CROSSINGS.strip("\n"))
    if ring_cross:
        ring_helpers.append(C_CROSSINGS_S8.strip("\n"))

    def block(xs: list[str], indent: int) -> str:
        return "".join("".join((x if x.startswith("#") else " " * indent + x) + "\n" for x in line.split("\n"))
                       for line in xs if line)

    finish_template = (C_FINISH_CHANNEL if channel else C_FINISH_ALL).replace("$combine_blocks", C_COMBINE_BLOCKS)
    body = C_STREAM.substitute(
        pre=C_CRING_SHIFT.rstrip("\n") if ring_cross else "",
        start=Template(C_START_GROUPS).substitute(
            row0="    int32_t row0 = (int32_t)s->gpos * TW_GROUP;\n" if ring_cross else "") if partial else C_START_ONE,
        locals=block(locals_, 8), stats=block(stats, 8), hook=block(hook, 8), store=block(store, 8),
        bands="".join(band_code) + cross_code,  # the pyramid first: it may sum s1, which crossings read
        advance="" if ring else C_ADVANCE_GROUP,
        push=C_PUSH_RING if ring else C_PUSH_GROUP,
        ring_helpers="\n" + "\n\n".join(ring_helpers) + "\n" if ring_helpers else "",
        finish=Template(finish_template).substitute(
            names=", ".join(names), combine_init=block(cinit, 8), combine=block(comb, 12), outputs=block(outputs, 8),
            **subs).lstrip("\n"))
    n_blocks = p.window // g
    fields = [StateField("tw_block_t", "blocks", (n_blocks, p.n_channels), block_bytes * n_blocks * p.n_channels,
                         align), StateField("uint16_t", "bhead", (), 2, 2)]
    if partial:
        fields.append(StateField("uint16_t", "gpos", (), 2, 2))
    if ring_cross:
        fields.append(StateField("int8_t", "cring", (p.n_channels, n_blocks, g), n_blocks * g * p.n_channels, 1))
    if not ring:
        fields += [StateField("int16_t", "fbuf", (gr, p.n_channels), 2 * gr * p.n_channels, 2),
                   StateField("uint16_t", "bpos", (), 2, 2)]
    doc = ("blocks[bhead] holds the aggregates of the newest block, the TW_BLOCKS - 1 before it (circularly) the "
           "older blocks of the window" + (" (the newest is complete when gpos == 0, else its first gpos groups)"
                                           if partial else "") + "; " + (
               "the current group's samples wait in the ring" if ring else
               "fbuf[0, bpos) holds the current group's samples") + (
               "; cring[c][b] holds channel c's int8 sample residuals of block b (the newest block's first "
               "TW_GROUP * gpos rows while gpos != 0)" if ring_cross else ""))
    return StreamC(typedefs, tuple(fields), "tw_features_push", body, "tw_features_finish(s, s->t_${dst});",
                   ("isqrt",) if {"std", "rms"} & set(names) else (),
                   {"TW_BLOCK": g, "TW_BLOCKS": n_blocks, "TW_GROUP": gr, "TW_MAX_WINDOW": MAX_WINDOW,
                    **({"TW_GROUPS": g // gr} if partial else {}),
                    **({"TW_CROSSINGS_BLOCK": cb} if block_cross else {})}, doc, bool(hook),
                   *(("", "") if ring else ("s->fbuf[s->bpos]", "tw_features_advance")), "tw_features_finish")


C_RMS = r"""
/* isqrt(v2 + T^2), T = S1 + W * z0. Range: W <= TW_MAX_WINDOW and int16 samples and z0, so |T| <= 2 * W * 2^15
 * (int32) and v2 + T^2 <= W^2 * 2^30 + 4 * W^2 * 2^30 < 2^60, tw_isqrt_u64's range. */
static int64_t tw_rms_s16(int64_t v2, int32_t t)
{
    return (int64_t)tw_isqrt_u64((uint64_t)v2 + (uint64_t)((int64_t)t * t));
}
"""

C_CROSSINGS = r"""
/* Crossings among the n rows of x (a channel's samples, TW_N_CHANNELS apart) continuing the run whose last
 * sample gave *prev: with t = level - q, q is above the level exactly when t < 0, so a crossing is a sign
 * change of t, the top bit of t ^ (previous t); four rows a pass (one on a Thumb-1 core, flash first). Range:
 * |level - q| < 2^31. */
static int32_t tw_crossings_run(const int16_t *x, int32_t n, int32_t level, int32_t *prev)
{
    int32_t p = *prev;
    uint32_t k = 0u;
    const int16_t *end = x + (n & ~3) * TW_N_CHANNELS;
#if defined(__ARM_ARCH_ISA_THUMB) && __ARM_ARCH_ISA_THUMB == 1
    /* every row in the one-a-pass loop below */
#else
    while (x != end) {
        int32_t a = level - x[0];
        int32_t b = level - x[TW_N_CHANNELS];
        int32_t d = level - x[2 * TW_N_CHANNELS];
        int32_t e = level - x[3 * TW_N_CHANNELS];
        k += (uint32_t)(a ^ p) >> 31;
        k += (uint32_t)(a ^ b) >> 31;
        k += (uint32_t)(b ^ d) >> 31;
        k += (uint32_t)(d ^ e) >> 31;
        p = e;
        x += 4 * TW_N_CHANNELS;
    }
#endif
    end += (n & 3) * TW_N_CHANNELS;
    while (x != end) {
        int32_t a = level - x[0];
        k += (uint32_t)(a ^ p) >> 31;
        p = a;
        x += TW_N_CHANNELS;
    }
    *prev = p;
    return (int32_t)k;
}

/* Crossings of the window's mean by channel ch, read from the ring (rows [head, TW_WINDOW) then [0, head)):
 * #t with (W*q[t] > S1) != (W*q[t-1] > S1); for an integer q, W*q > S1 exactly when q > floor(S1 / W).
 * Range: |S1| <= TW_MAX_WINDOW * 2^15 < 2^31. */
static int64_t tw_crossings_s16(const tw_state_t *s, int32_t ch, int32_t s1)
{
    int32_t level = (s1 >= 0) ? s1 / TW_WINDOW : -((-s1 + TW_WINDOW - 1) / TW_WINDOW);
    int32_t head = (int32_t)s->head;
    int32_t prev = level - s->ring[head][ch];
    int32_t n = tw_crossings_run((head + 1 < TW_WINDOW) ? &s->ring[head + 1][ch] : &s->ring[0][ch],
                                 TW_WINDOW - 1 - head, level, &prev);
    return n + tw_crossings_run(&s->ring[0][ch], head, level, &prev);
}
"""


#: The generic template is only the call: the C of this kernel is generated for its feature set by
#: :func:`stream_c` (the C emitter always uses the streaming form, as the kernel always reads the window).
C_TEMPLATE = r"""
//@call: tw_features_finish(s, s->t_${dst});
"""
register_kernel(KernelSpec(
    "features_s16", features_s16, ("int16",), "int64", {"codes": "int32", "z0": "int32"},
    "integer window features, see features_s16", C_TEMPLATE, check=_check, stream=stream_c,
    stream_ring=needs_ring,
    limits={"TW_MAX_WINDOW": MAX_WINDOW,
            **{f"TW_FEATURE_{name.upper()}": f.code for name, f in FEATURE_TABLE.items()}}))
