"""Requantization of int64 window features into the model's int8 or int16 input."""

from __future__ import annotations

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

# Shifts are in [-31, 30] (see quantize_multiplier): stored as int8, which saves 3 bytes per channel of flash.
# pre_shift is in [0, 62] and the offset is subtracted after it (the quantizer raises pre_shift until the
# offset fits int32): 5 bytes per feature less than int32/int64.
_REQ = {"pre_shift": "int8", "offset": "int32", "multiplier": "int32", "shift": "int8"}


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
//@params: static const tw_feature_requant_params_t tw_${dst}_requant_params = {${c_pre_shift}, ${c_offset},
//@params: ${c_multiplier}, ${c_shift}, ${zero_point}, {${act_min}, ${act_max}}};
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
        int64_t v = (in[i] >> params->pre_shift[i]) - params->offset[i];
        int32_t v32 = (v < INT32_MIN) ? INT32_MIN : ((v > INT32_MAX) ? INT32_MAX : (int32_t)v);
        out[i] = (${ctype})tw_offset_clamp(tw_requantize32(v32, params->multiplier[i], params->shift[i]),
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
