"""GRU over the int8 window: Q12 pre-activations, int16 Q15 state, table tanh/sigmoid."""

from __future__ import annotations

import numpy as np

from tinywarden.arith import requantize, round_shift
from tinywarden.kernels.base import (
    KernelSpec,
    Op,
    ProgramView,
    const_shape,
    int_attr,
    register_kernel,
    requant_shifts,
    require,
)

#: Largest GRU hidden size (the C kernel keeps the int16 state on its stack) and the clamp of its Q12
#: pre-activations (+-256: far beyond where tanh and the sigmoid saturate, and r * gate stays in int64).
GRU_MAX_HIDDEN = 32


GRU_PREACT_MAX = 2**20

#: The kernel's weighted sums are int32: an int8 weight times an input plus its offset (|x + offset| <= 383) over
#: at most GRU_MAX_CHANNELS inputs, or times an int16 state (|h| <= 2**15) over at most GRU_MAX_SUM_TERMS units,
#: stays within GRU_MAX_SUM.
GRU_MAX_SUM = 2**31 - 1
GRU_MAX_CHANNELS = GRU_MAX_SUM // (128 * 383)
GRU_MAX_SUM_TERMS = GRU_MAX_SUM // (128 * 2**15)


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
        cand = tanh_q15(gi[:, 2 * hid :] + round_shift(r * gh[:, 2 * hid :], 15))
        h = cand + round_shift(z * (h - cand), 15)
        y = requantize(h @ w_out.T + c["b_out"], c["out_multiplier"], c["out_shift"]) + int(a["output_offset"])
        out[:, t + forecast] = np.clip(y, -128, 127)
    return out


def _check_gru(op: Op, p: ProgramView) -> None:
    hid = int_attr(op, "hidden", 1, GRU_MAX_HIDDEN)
    int_attr(op, "forecast", 0, 1)
    int_attr(op, "input_offset", -255, 255)
    int_attr(op, "output_offset", -128, 127)
    src = p.tensor(op.src[0]).shape
    require(len(src) == 2 and src[0] >= 2 and p.tensor(op.dst).shape == src, "input and recon must be (window, C)")
    ch = src[1]
    require(ch <= GRU_MAX_CHANNELS, f"at most {GRU_MAX_CHANNELS} channels (the C kernel's int32 sums)")
    want = {"w_ih": (3 * hid, ch), "w_hh": (3 * hid, hid), "w_out": (ch, hid), "tanh": (257,),
            **{f"{g}_{k}": (3 * hid,) for g in ("ih", "hh") for k in ("multiplier", "shift")},
            "b_ih": (3 * hid,), "b_hh": (3 * hid,), "b_out": (ch,), "out_multiplier": (ch,), "out_shift": (ch,)}
    bad = [k for k, s in want.items() if const_shape(op, k) != s]
    require(not bad, f"constant(s) {', '.join(bad)} do not match hidden={hid}, channels={ch}")
    requant_shifts(op, "ih_shift", "hh_shift", "out_shift")
    require(bool(np.all(np.diff(np.asarray(op.consts["tanh"]).astype(np.int64)) >= 0)),
             "the tanh table must not fall (the interpolation assumes it)")


C_TEMPLATE = r"""
//@call: tw_gru_s8(s->t_${src0}, ${src0_shape0}, ${src0_shape1}, ${hidden}, ${input_offset}, ${output_offset},
//@+ ${forecast}, ${c_w_ih}, ${c_b_ih}, ${c_ih_multiplier}, ${c_ih_shift}, ${c_w_hh}, ${c_b_hh},
//@+ ${c_hh_multiplier}, ${c_hh_shift}, ${c_w_out}, ${c_b_out}, ${c_out_multiplier}, ${c_out_shift}, ${c_tanh},
//@+ s->t_${dst});
//@requires: requant32 round64
#if TW_N_CHANNELS > TW_GRU_MAX_CHANNELS || TW_GRU_MAX_HIDDEN > TW_GRU_MAX_SUM_TERMS
#error "tinywarden_model: the GRU's 32-bit sums hold at most TW_GRU_MAX_CHANNELS inputs and TW_GRU_MAX_SUM_TERMS units"
#endif
/* Linear interpolation in the 257-entry rising Q15 table at p in [0, 2^(bits + 8)], 2^bits units between
 * entries; in int32: (table[i + 1] - table[i]) * f < 2^16 * 2^bits. Range: bits <= 9. */
static int32_t tw_tanh_lookup(const int16_t *table, int32_t p, int32_t bits)
{
    int32_t i = p >> bits;
    int32_t f = p & (((int32_t)1 << bits) - 1);
    if (i >= 256) {
        return table[256];
    }
    return table[i] + ((((int32_t)table[i + 1] - table[i]) * f + ((int32_t)1 << (bits - 1))) >> bits);
}

/* tanh and sigmoid of a Q12 pre-activation |v| <= 2^21, in Q15; sigmoid(v) = (1 + tanh(v / 2)) / 2. */
static int32_t tw_tanh_q15(const int16_t *table, int32_t v)
{
    v += 32768;
    return tw_tanh_lookup(table, (v < 0) ? 0 : ((v > 65536) ? 65536 : v), 8);
}

static int32_t tw_sigmoid_q15(const int16_t *table, int32_t v)
{
    v += 65536;
    return (32768 + tw_tanh_lookup(table, (v < 0) ? 0 : ((v > 131072) ? 131072 : v), 9)) >> 1;
}

/* One gate row's Q12 pre-activation from its int32 weighted sum: requantize(bias + sum),
 * clamped to +-TW_GRU_PREACT_MAX. bias + sum is formed in int64 and saturated to int32, which requantizes to
 * the same value as the int64 (tw_requantize saturates its input to the int32 range it shifts into). */
static int32_t tw_gru_preact(int32_t bias, int32_t sum, int32_t multiplier, int32_t shift)
{
    int64_t acc = (int64_t)bias + sum;
    int32_t v = tw_requantize32((acc > INT32_MAX) ? INT32_MAX : ((acc < INT32_MIN) ? INT32_MIN : (int32_t)acc),
                                multiplier, shift);
    return (v > TW_GRU_PREACT_MAX) ? TW_GRU_PREACT_MAX : ((v < -TW_GRU_PREACT_MAX) ? -TW_GRU_PREACT_MAX : v);
}

/* GRU over the int8 window x (w x n_ch, oldest row first), PyTorch's gate order r|z|n, from a zero int16
 * Q15 state h:
 *   r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z), n = tanh(gi_n + r * gh_n), h = n + z * (h - n)
 * with gi = W_ih (x + input_offset) + b_ih and gh = W_hh h + b_hh requantized per row to Q12. Every step's
 * state is read out to int8 in the input's quantization: out = clamp(output_offset + requantize(W_out h +
 * b_out)). forecast != 0: out[0] = x[0] and out[t + 1] comes from the state after step t.
 * The weighted sums are int32: |w| <= 128 times |x + input_offset| <= 383 over at most TW_GRU_MAX_CHANNELS
 * inputs, or times |h| <= 2^15 over at most TW_GRU_MAX_SUM_TERMS units, stay within INT32_MAX.
 * Range: hidden <= TW_GRU_MAX_HIDDEN (checked when the program is built), weights int8, int32 biases. */
static void tw_gru_s8(const int8_t *x, int32_t w, int32_t n_ch, int32_t hidden, int32_t input_offset,
                      int32_t output_offset, int32_t forecast, const int8_t *w_ih, const int32_t *b_ih,
                      const int32_t *ih_multiplier, const int8_t *ih_shift, const int8_t *w_hh, const int32_t *b_hh,
                      const int32_t *hh_multiplier, const int8_t *hh_shift, const int8_t *w_out,
                      const int32_t *b_out, const int32_t *out_multiplier, const int8_t *out_shift,
                      const int16_t *tanh_table, int8_t *out)
{
    int16_t h[TW_GRU_MAX_HIDDEN];
    int16_t h_new[TW_GRU_MAX_HIDDEN];
    int32_t t;
    int32_t k;
    int32_t c;
    for (k = 0; k < hidden; k++) {
        h[k] = 0;
    }
    if (forecast != 0) {
        for (c = 0; c < n_ch; c++) {
            out[c] = x[c];
        }
    }
    for (t = 0; t < w - ((forecast != 0) ? 1 : 0); t++) {
        const int8_t *xt = x + t * n_ch;
        int8_t *o = out + (t + ((forecast != 0) ? 1 : 0)) * n_ch;
        for (k = 0; k < hidden; k++) {
            int32_t g[6]; /* input part r, z, n, then recurrent part r, z, n */
            /* the unit's three gate rows in one pass over the input and one over the state (each value read once) */
            const int8_t *wr = w_ih + k * n_ch;
            const int8_t *wz = wr + hidden * n_ch;
            const int8_t *wn = wz + hidden * n_ch;
            int32_t sr = 0;
            int32_t sz = 0;
            int32_t sn = 0;
            int32_t j;
            int32_t r;
            int32_t z;
            int32_t cand;
            for (j = 0; j < n_ch; j++) {
                int32_t v = (int32_t)xt[j] + input_offset;
                sr += (int32_t)wr[j] * v;
                sz += (int32_t)wz[j] * v;
                sn += (int32_t)wn[j] * v;
            }
            g[0] = tw_gru_preact(b_ih[k], sr, ih_multiplier[k], ih_shift[k]);
            g[1] = tw_gru_preact(b_ih[hidden + k], sz, ih_multiplier[hidden + k], ih_shift[hidden + k]);
            g[2] = tw_gru_preact(b_ih[2 * hidden + k], sn, ih_multiplier[2 * hidden + k], ih_shift[2 * hidden + k]);
            wr = w_hh + k * hidden;
            wz = wr + hidden * hidden;
            wn = wz + hidden * hidden;
            sr = 0;
            sz = 0;
            sn = 0;
            for (j = 0; j < hidden; j++) {
                int32_t v = h[j];
                sr += (int32_t)wr[j] * v;
                sz += (int32_t)wz[j] * v;
                sn += (int32_t)wn[j] * v;
            }
            g[3] = tw_gru_preact(b_hh[k], sr, hh_multiplier[k], hh_shift[k]);
            g[4] = tw_gru_preact(b_hh[hidden + k], sz, hh_multiplier[hidden + k], hh_shift[hidden + k]);
            g[5] = tw_gru_preact(b_hh[2 * hidden + k], sn, hh_multiplier[2 * hidden + k], hh_shift[2 * hidden + k]);
            r = tw_sigmoid_q15(tanh_table, g[0] + g[3]);
            z = tw_sigmoid_q15(tanh_table, g[1] + g[4]);
            cand = tw_tanh_q15(tanh_table, g[2] + (int32_t)tw_round_shift64((int64_t)r * g[5], 15));
            h_new[k] = (int16_t)(cand + tw_round_shift64((int64_t)z * ((int32_t)h[k] - cand), 15));
        }
        for (k = 0; k < hidden; k++) {
            h[k] = h_new[k];
        }
        for (c = 0; c < n_ch; c++) {
            const int8_t *wo = w_out + c * hidden;
            int32_t sum = 0;
            int64_t acc;
            int32_t q;
            for (k = 0; k < hidden; k++) {
                sum += (int32_t)wo[k] * h[k];
            }
            acc = (int64_t)b_out[c] + sum;
            q = tw_requantize32((acc > INT32_MAX) ? INT32_MAX : ((acc < INT32_MIN) ? INT32_MIN : (int32_t)acc),
                                out_multiplier[c], out_shift[c]);
            o[c] = (int8_t)tw_offset_clamp(q, output_offset, -128, 127);
        }
    }
}
"""

register_kernel(KernelSpec(
    "gru_s8", _gru, ("int8",), "int8",
    {**{f"{g}{k}": dt for g in ("ih_", "hh_", "out_") for k, dt in (("multiplier", "int32"), ("shift", "int8"))},
     "w_ih": "int8", "b_ih": "int32", "w_hh": "int8", "b_hh": "int32", "w_out": "int8", "b_out": "int32",
     "tanh": "int16"},
    "GRU (PyTorch gate order r|z|n): int8 input, int16 Q15 state, Q12 pre-activations, tanh/sigmoid "
    "by interpolation in a Q15 table, int8 read-out per step", C_TEMPLATE,
    limits={"TW_GRU_MAX_HIDDEN": GRU_MAX_HIDDEN, "TW_GRU_PREACT_MAX": GRU_PREACT_MAX,
            "TW_GRU_MAX_CHANNELS": GRU_MAX_CHANNELS, "TW_GRU_MAX_SUM_TERMS": GRU_MAX_SUM_TERMS},
    check=_check_gru))
