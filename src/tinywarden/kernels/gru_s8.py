"""GRU over the int8 window: Q12 pre-activations, int16 Q15 state, table tanh/sigmoid.

Each gate row's pre-activation is its int32 weighted sum (bias included) times one int32 multiplier, rounded
right by one shift for the whole op: a multiply and a shift where a CMSIS-NN requantization (doubling high
multiply, saturation, rounding divide) costs some forty instructions on a Cortex-M4. The reset and update
gates add their input and recurrent products before that one rounding, so each takes one rounding, not two.
"""

from __future__ import annotations

import numpy as np

from tinywarden.kernels.base import (
    KernelSpec,
    Op,
    ProgramView,
    const_shape,
    int_attr,
    register_kernel,
    require,
)

#: Largest GRU hidden size (the C kernel keeps the int16 state on its stack) and the clamp of its Q12
#: pre-activations (+-256: far beyond where tanh and the sigmoid saturate, and r * gate stays in int64).
GRU_MAX_HIDDEN = 32


GRU_PREACT_MAX = 2**20

#: The kernel's weighted sums are int32: an int8 weight times an input plus its offset (|x + offset| <= 383) over
#: at most GRU_MAX_CHANNELS inputs, or times an int16 state (|h| <= 2**15) over at most GRU_MAX_SUM_TERMS units,
#: stays within GRU_MAX_SUM, and with a bias of at most GRU_MAX_BIAS within int32.
GRU_MAX_SUM = 2**30
GRU_MAX_BIAS = 2**30 - 1
GRU_MAX_CHANNELS = GRU_MAX_SUM // (128 * 383)
GRU_MAX_SUM_TERMS = GRU_MAX_SUM // (128 * 2**15)
#: Gate and read-out multipliers are below 2**30: the sum of two (int32 sum x multiplier) products plus the
#: rounding term stays within int64.
GRU_MAX_MULTIPLIER = 2**30 - 1


def _tanh_lookup(table: np.ndarray, p: np.ndarray, bits: int) -> np.ndarray:
    """Linear interpolation in the 257-entry Q15 table at ``p >= 0`` (``2**bits`` units between entries)."""
    i = np.minimum(p >> bits, 256)
    f = p & ((1 << bits) - 1)
    lo, hi = table[i], table[np.minimum(i + 1, 256)]
    return lo + (((hi - lo) * f + (1 << (bits - 1))) >> bits)  # the table rises, so hi - lo >= 0


def _scale_round(prod: np.ndarray, shift: int) -> np.ndarray:
    """``floor(prod / 2**shift + 1/2)``: the C kernel's ``(prod + 2^(shift - 1)) >> shift`` on int64."""
    return (prod + (1 << (shift - 1))) >> shift


def _gru(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    """GRU over the int8 window (N, W, C) from a zero int16 Q15 state; int8 read-out of every step in
    the input's quantization (forecast: out[0] = x[0], out[t + 1] from the state after step t)."""
    x = srcs[0].astype(np.int64)
    a, c = op.attrs, op.consts
    xin = x + int(a["input_offset"])
    hid, forecast = int(a["hidden"]), int(a["forecast"])
    gate_shift, out_shift = int(a["gate_shift"]), int(a["out_shift"])
    table = c["tanh"].astype(np.int64)
    w_ih, w_hh, w_out, b_ih, b_hh, b_out, m_ih, m_hh, m_out = (
        c[k].astype(np.int64) for k in ("w_ih", "w_hh", "w_out", "b_ih", "b_hh", "b_out", "ih_multiplier",
                                        "hh_multiplier", "out_multiplier"))
    n, w, ch = x.shape
    h = np.zeros((n, hid), dtype=np.int64)
    out = np.empty((n, w, ch), dtype=np.int64)
    if forecast:
        out[:, 0] = x[:, 0]

    def tanh_q15(v: np.ndarray) -> np.ndarray:
        return _tanh_lookup(table, np.clip(v + 32768, 0, 65536), 8)

    def sigmoid_q15(v: np.ndarray) -> np.ndarray:  # (1 + tanh(v / 2)) / 2
        return (32768 + _tanh_lookup(table, np.clip(v + 65536, 0, 131072), 9)) >> 1

    def preact(prod: np.ndarray) -> np.ndarray:
        return np.clip(_scale_round(prod, gate_shift), -GRU_PREACT_MAX, GRU_PREACT_MAX)

    two = 2 * hid
    for t in range(w - forecast):
        si = (xin[:, t] @ w_ih.T + b_ih) * m_ih  # (N, 3H) products, each < 2**61
        sh = (h @ w_hh.T + b_hh) * m_hh
        rz = sigmoid_q15(preact(si[:, :two] + sh[:, :two]))
        r, z = rz[:, :hid], rz[:, hid:]
        cand = tanh_q15(preact(si[:, two:]) + ((r * preact(sh[:, two:]) + (1 << 14)) >> 15))
        h = cand + ((z * (h - cand) + (1 << 14)) >> 15)
        y = _scale_round((h @ w_out.T + b_out) * m_out, out_shift) + int(a["output_offset"])
        out[:, t + forecast] = np.clip(y, -128, 127)
    return out


def _check_gru(op: Op, p: ProgramView) -> None:
    hid = int_attr(op, "hidden", 1, GRU_MAX_HIDDEN)
    int_attr(op, "forecast", 0, 1)
    int_attr(op, "input_offset", -255, 255)
    int_attr(op, "output_offset", -128, 127)
    int_attr(op, "gate_shift", 1, 62)
    int_attr(op, "out_shift", 1, 62)
    src = p.tensor(op.src[0]).shape
    require(len(src) == 2 and src[0] >= 2 and p.tensor(op.dst).shape == src, "input and recon must be (window, C)")
    ch = src[1]
    require(ch <= GRU_MAX_CHANNELS, f"at most {GRU_MAX_CHANNELS} channels (the C kernel's int32 sums)")
    want = {"w_ih": (3 * hid, ch), "w_hh": (3 * hid, hid), "w_out": (ch, hid), "tanh": (257,),
            "ih_multiplier": (3 * hid,), "hh_multiplier": (3 * hid,), "out_multiplier": (ch,),
            "b_ih": (3 * hid,), "b_hh": (3 * hid,), "b_out": (ch,)}
    bad = [k for k, s in want.items() if const_shape(op, k) != s]
    require(not bad, f"constant(s) {', '.join(bad)} do not match hidden={hid}, channels={ch}")
    for k in ("ih_multiplier", "hh_multiplier", "out_multiplier"):
        m = np.asarray(op.consts[k]).astype(np.int64)
        require(bool(np.all((m >= 0) & (m <= GRU_MAX_MULTIPLIER))), f"{k} must be in [0, {GRU_MAX_MULTIPLIER}]")
    for k in ("b_ih", "b_hh", "b_out"):
        require(bool(np.all(np.abs(np.asarray(op.consts[k]).astype(np.int64)) <= GRU_MAX_BIAS)),
                f"{k} must be within +-{GRU_MAX_BIAS} (the int32 sums)")
    require(bool(np.all(np.diff(np.asarray(op.consts["tanh"]).astype(np.int64)) >= 0)),
             "the tanh table must not fall (the interpolation assumes it)")


C_TEMPLATE = r"""
//@call: tw_gru_s8(s->t_${src0}, ${src0_shape0}, ${src0_shape1}, ${hidden}, ${input_offset}, ${output_offset},
//@+ ${forecast}, ${gate_shift}, ${out_shift}, ${c_w_ih}, ${c_b_ih}, ${c_ih_multiplier}, ${c_w_hh}, ${c_b_hh},
//@+ ${c_hh_multiplier}, ${c_w_out}, ${c_b_out}, ${c_out_multiplier}, ${c_tanh}, s->t_${dst});
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

/* A Q12 pre-activation from a sum of (int32 weighted sum x multiplier) products: (prod + 2^(shift - 1)) >> shift,
 * clamped to +-TW_GRU_PREACT_MAX. Range: |prod| < 2^62, shift in [1, 62]. */
static int32_t tw_gru_preact(int64_t prod, int32_t shift)
{
    int64_t v = (prod + ((int64_t)1 << (shift - 1))) >> shift;
    return (int32_t)((v > TW_GRU_PREACT_MAX) ? TW_GRU_PREACT_MAX : ((v < -TW_GRU_PREACT_MAX) ? -TW_GRU_PREACT_MAX : v));
}

/* GRU over the int8 window x (w x n_ch, oldest row first), PyTorch's gate order r|z|n, from a zero int16
 * Q15 state h:
 *   r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z), n = tanh(gi_n + r * gh_n), h = n + z * (h - n)
 * with gi = (W_ih (x + input_offset) + b_ih) * ih_multiplier and gh = (W_hh h + b_hh) * hh_multiplier rounded
 * right by gate_shift to Q12 (r and z: the two products summed, then one rounding). Every step's state is read
 * out to int8 in the input's quantization: out = clamp(output_offset + ((W_out h + b_out) * out_multiplier
 * rounded right by out_shift)). forecast != 0: out[0] = x[0] and out[t + 1] comes from the state after step t.
 * The weighted sums with their bias are int32: |w| <= 128 times |x + input_offset| <= 383 over at most
 * TW_GRU_MAX_CHANNELS inputs, or times |h| <= 2^15 over at most TW_GRU_MAX_SUM_TERMS units, stay within 2^30, a
 * bias within 2^30 - 1; a multiplier below 2^30 keeps every product below 2^61.
 * Range: hidden <= TW_GRU_MAX_HIDDEN (checked when the program is built), weights int8, shifts in [1, 62]. */
static void tw_gru_s8(const int8_t *x, int32_t w, int32_t n_ch, int32_t hidden, int32_t input_offset,
                      int32_t output_offset, int32_t forecast, int32_t gate_shift, int32_t out_shift,
                      const int8_t *w_ih, const int32_t *b_ih, const int32_t *ih_multiplier, const int8_t *w_hh,
                      const int32_t *b_hh, const int32_t *hh_multiplier, const int8_t *w_out, const int32_t *b_out,
                      const int32_t *out_multiplier, const int16_t *tanh_table, int8_t *out)
{
    int16_t h[TW_GRU_MAX_HIDDEN];
    int16_t h_new[TW_GRU_MAX_HIDDEN];
    int64_t out_round = (int64_t)1 << (out_shift - 1);
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
            /* the unit's three gate rows in one pass over the input and one over the state (each value read once) */
            const int8_t *wr = w_ih + k * n_ch;
            const int8_t *wz = wr + hidden * n_ch;
            const int8_t *wn = wz + hidden * n_ch;
            int32_t ir = b_ih[k];
            int32_t iz = b_ih[hidden + k];
            int32_t in = b_ih[2 * hidden + k];
            int32_t hr = b_hh[k];
            int32_t hz = b_hh[hidden + k];
            int32_t hn = b_hh[2 * hidden + k];
            int32_t j;
            int32_t r;
            int32_t z;
            int32_t cand;
            for (j = 0; j < n_ch; j++) {
                int32_t v = (int32_t)xt[j] + input_offset;
                ir += (int32_t)wr[j] * v;
                iz += (int32_t)wz[j] * v;
                in += (int32_t)wn[j] * v;
            }
            wr = w_hh + k * hidden;
            wz = wr + hidden * hidden;
            wn = wz + hidden * hidden;
            for (j = 0; j < hidden; j++) {
                int32_t v = h[j];
                hr += (int32_t)wr[j] * v;
                hz += (int32_t)wz[j] * v;
                hn += (int32_t)wn[j] * v;
            }
            r = tw_sigmoid_q15(tanh_table, tw_gru_preact((int64_t)ir * ih_multiplier[k]
                                                         + (int64_t)hr * hh_multiplier[k], gate_shift));
            z = tw_sigmoid_q15(tanh_table, tw_gru_preact((int64_t)iz * ih_multiplier[hidden + k]
                                                         + (int64_t)hz * hh_multiplier[hidden + k], gate_shift));
            cand = tw_gru_preact((int64_t)hn * hh_multiplier[2 * hidden + k], gate_shift);
            cand = tw_tanh_q15(tanh_table, tw_gru_preact((int64_t)in * ih_multiplier[2 * hidden + k], gate_shift)
                                           + (int32_t)(((int64_t)r * cand + ((int64_t)1 << 14)) >> 15));
            /* |z (h - cand)| < 2^15 * 2^16: int32 */
            h_new[k] = (int16_t)(cand + ((z * ((int32_t)h[k] - cand) + ((int32_t)1 << 14)) >> 15));
        }
        for (k = 0; k < hidden; k++) {
            h[k] = h_new[k];
        }
        for (c = 0; c < n_ch; c++) {
            const int8_t *wo = w_out + c * hidden;
            int32_t sum = b_out[c];
            int64_t q;
            for (k = 0; k < hidden; k++) {
                sum += (int32_t)wo[k] * h[k];
            }
            q = (((int64_t)sum * out_multiplier[c] + out_round) >> out_shift) + output_offset;
            o[c] = (int8_t)((q > 127) ? 127 : ((q < -128) ? -128 : q));
        }
    }
}
"""

register_kernel(KernelSpec(
    "gru_s8", _gru, ("int8",), "int8",
    {"w_ih": "int8", "b_ih": "int32", "ih_multiplier": "int32", "w_hh": "int8", "b_hh": "int32",
     "hh_multiplier": "int32", "w_out": "int8", "b_out": "int32", "out_multiplier": "int32", "tanh": "int16"},
    "GRU (PyTorch gate order r|z|n): int8 input, int16 Q15 state, Q12 pre-activations (sum x multiplier, one "
    "rounding shift per op), tanh/sigmoid by interpolation in a Q15 table, int8 read-out per step", C_TEMPLATE,
    limits={"TW_GRU_MAX_HIDDEN": GRU_MAX_HIDDEN, "TW_GRU_PREACT_MAX": GRU_PREACT_MAX,
            "TW_GRU_MAX_CHANNELS": GRU_MAX_CHANNELS, "TW_GRU_MAX_SUM_TERMS": GRU_MAX_SUM_TERMS},
    check=_check_gru))
