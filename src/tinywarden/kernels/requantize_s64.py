"""Requantization of int64 window features into the model's int8 or int16 input."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from tinywarden.arith import requantize, saturate
from tinywarden.kernels.base import (
    KernelSpec,
    Op,
    ProgramView,
    activation,
    per_output,
    register_kernel,
    require,
)
from tinywarden.kernels.fully_connected_s8 import MULT_BITS

# Shifts are in [-31, 30] (see quantize_multiplier): stored as int8, which saves 3 bytes per channel of flash.
# pre_shift is in [0, 62] and the offset is subtracted after it (the quantizer raises pre_shift until the
# offset fits int32): 5 bytes per feature less than int32/int64.
_REQ = {"pre_shift": "int8", "offset": "int32", "multiplier": "int32", "shift": "int8"}


#: The C module keeps a feature's pre-shift and shift in one table entry, ``(pre_shift << bits) | (shift +
#: 2^(bits - 1))`` (``tw_shifts_t``, read by ``TW_PRE_SHIFT`` and ``TW_SHIFT``): ``SHIFT_BITS[0]`` bits each, one byte,
#: when every pre-shift of the module is below 2^bits and every shift within [-2^(bits - 1), 2^(bits - 1)); else
#: ``SHIFT_BITS[1]`` bits each (pre_shift in [0, 62], shift in [-31, 30]: 16 bits). One byte a feature less than two
#: int8 tables when they fit.
SHIFT_BITS = (4, 6)


def shift_bits(ops: Iterable[Op]) -> int:
    """The bits of each half of the packed shift entries (:data:`SHIFT_BITS`) that hold every one of ``ops``'s
    (the module's ``requantize_s64_*`` ops) pre-shifts and shifts."""
    narrow = SHIFT_BITS[0]
    for op in ops:
        pre, sh = np.asarray(op.consts["pre_shift"]), np.asarray(op.consts["shift"])
        if pre.size and (int(pre.max()) >= 1 << narrow or int(sh.min()) < -(1 << (narrow - 1))
                         or int(sh.max()) >= 1 << (narrow - 1)):
            return SHIFT_BITS[1]
    return narrow


def packed_shifts(op: Op, bits: int) -> np.ndarray:
    """``op``'s pre-shifts and shifts in one table, ``(pre_shift << bits) | (shift + 2^(bits - 1))``: uint8 for
    ``bits = SHIFT_BITS[0]``, else uint16."""
    pre = np.asarray(op.consts["pre_shift"], dtype=np.int64)
    sh = np.asarray(op.consts["shift"], dtype=np.int64) + (1 << (bits - 1))
    if pre.size and (int(pre.min()) < 0 or int(pre.max()) >= 1 << bits or int(sh.min()) < 0
                     or int(sh.max()) >= 1 << bits):
        raise ValueError(f"requantization {op.dst}: its shifts do not fit {bits} bits each")
    return ((pre << bits) | sh).astype(np.uint8 if bits == SHIFT_BITS[0] else np.uint16)


#: ... or, when every feature requantization of the module packs (:func:`packs_words`), two tables a feature
#: (``TW_REQUANT_PACKED``): its multiplier and shift in one uint32 as a fully connected layer's
#: (:data:`~tinywarden.kernels.fully_connected_s8.MULT_BITS`), and its offset and pre-shift in one int16,
#: ``offset * 2^PRE_SHIFT_BITS + pre_shift``. 6 bytes a feature instead of 7.
PRE_SHIFT_BITS = 4


def packs_words(op: Op) -> bool:
    """Whether ``op``'s tables fit the two-word form: multipliers in [2^MULT_BITS, 2^31), shifts spanning at most
    2^(32 - MULT_BITS) values, pre-shifts below 2^PRE_SHIFT_BITS and offsets within int16 after them."""
    m = np.asarray(op.consts["multiplier"], dtype=np.int64)
    sh = np.asarray(op.consts["shift"], dtype=np.int64)
    pre = np.asarray(op.consts["pre_shift"], dtype=np.int64)
    off = np.asarray(op.consts["offset"], dtype=np.int64)
    lim = 1 << (15 - PRE_SHIFT_BITS)
    return bool(m.size == 0 or (int(m.min()) >= 1 << MULT_BITS and int(m.max()) < 1 << 31
                                and int(sh.max()) - int(sh.min()) < 1 << (32 - MULT_BITS)
                                and int(pre.max()) < 1 << PRE_SHIFT_BITS and -lim <= int(off.min())
                                and int(off.max()) < lim))


def packed_words(op: Op) -> tuple[np.ndarray, np.ndarray, int]:
    """``op``'s tables in the two-word form: ``(multiplier - 2^MULT_BITS) | ((shift - base) << MULT_BITS)`` (uint32),
    ``offset * 2^PRE_SHIFT_BITS + pre_shift`` (int16), and ``base`` (the smallest shift); :func:`packs_words` must
    hold."""
    if not packs_words(op):
        raise ValueError(f"requantization {op.dst}: its tables do not fit the two-word form")
    m = np.asarray(op.consts["multiplier"], dtype=np.int64)
    sh = np.asarray(op.consts["shift"], dtype=np.int64)
    base = int(sh.min()) if sh.size else 0
    words = ((m - (1 << MULT_BITS)) | ((sh - base) << MULT_BITS)).astype(np.uint32)
    offsets = (np.asarray(op.consts["offset"], dtype=np.int64) * (1 << PRE_SHIFT_BITS)
               + np.asarray(op.consts["pre_shift"], dtype=np.int64)).astype(np.int16)
    return words, offsets, base


def _requantize_s64(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    x = srcs[0].astype(np.int64)
    c = op.consts
    v = saturate((x >> c["pre_shift"].astype(np.int64)) - c["offset"], "int32")
    q = requantize(v, c["multiplier"], c["shift"]) + int(op.attrs["zero_point"])
    return np.clip(q, op.attrs["act_min"], op.attrs["act_max"])


def _check_requantize(op: Op, p: ProgramView) -> None:
    n = p.tensor(op.dst).size
    require(p.tensor(op.src[0]).size == n, f"input and output must both hold {n} values")
    per_output(op, n, tuple(_REQ))
    pre = op.consts["pre_shift"]
    require(not pre.size or (int(pre.min()) >= 0 and int(pre.max()) <= 62), "pre_shift must lie in [0, 62]")
    activation(op, p.tensor(op.dst).dtype, "zero_point")


C_TEMPLATE = r"""
//@params: static const tw_feature_requant_params_t tw_${dst}_requant_params = {${rq_tables}, ${zero_point},
//@params: {${act_min}, ${act_max}}};
//@call: tw_requantize_s64_${suffix}(&tw_${dst}_requant_params, s->t_${src0}, ${dst_size}, s->t_${dst});
//@requires: params requant32
/* Integer features to the model's input: out[i] = clamp(zero_point + requantize(sat32((in[i] >> pre_shift[i])
 * - offset[i]), multiplier[i], shift[i]), activation). Range: pre_shift in [0, 62], int32 offset,
 * activation.min <= activation.max within ${ctype}. */
static void tw_requantize_s64_${suffix}(const tw_feature_requant_params_t *params, const int64_t *in, int32_t n,
                                  ${ctype} *out)
{
    int32_t i;
    for (i = 0; i < n; i++) {
        int64_t v = (in[i] >> TW_PRE_SHIFT(params, i)) - TW_OFFSET(params, i);
        int32_t lo = (int32_t)v;
        /* sat32(v) from v's two words: v fits int32 when its high word is its low word's sign */
        int32_t v32 = ((int32_t)(v >> 32) == (lo >> 31)) ? lo : ((v < 0) ? INT32_MIN : INT32_MAX);
        out[i] = (${ctype})tw_offset_clamp(tw_requantize32(v32, TW_MULTIPLIER(params, i), TW_SHIFT(params, i)),
                                         params->zero_point, params->activation.min, params->activation.max);
    }
}
"""

for _suffix, _ctype in (("s8", "int8"), ("s16", "int16")):
    register_kernel(KernelSpec(
        f"requantize_s64_{_suffix}", _requantize_s64, ("int64",), _ctype, _REQ,
        "q = clamp(zp + requantize(sat32((f >> pre_shift) - offset)))" if _suffix == "s8"
        else "as requantize_s64_s8 with an int16 result",
        C_TEMPLATE, c_subs={"suffix": _suffix, "ctype": f"{_ctype}_t"}, check=_check_requantize))
