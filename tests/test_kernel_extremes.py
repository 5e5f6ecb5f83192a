"""The kernels at the extremes of what their own argument checks accept: a program whose constants are valid but
extreme (a hand-made or hostile model file: shifts and multipliers at the ends of their ranges, weights, offsets and
biases at their dtype's limits) must still run bit-exact with the Python reference in the generated C, with no
undefined behaviour (ASan/UBSan), on ordinary and on saturated samples. A value the program's validation rejects is
out of scope: the C never meets it."""

import dataclasses
import shutil
import subprocess

import numpy as np
import pytest

from int8_fixtures import camera, fitted
from test_codegen_c import assert_bit_exact, build
from tinywarden.arith import INT32_MAX, INT32_MIN
from tinywarden.errors import ConfigError
from tinywarden.program import MAX_WINDOW, Program

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="no host gcc to compile the generated C")
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]


def inputs() -> tuple[np.ndarray, np.ndarray]:
    """1,500 ordinary rows of the simulated camera, and a copy whose rows 512-703 swing between +-1e30 and whose rows
    832-1023 and 1216-1407 hold +1e30 and -1e30: windows (128 rows, stride 64) at the int16 limits, steps of 65535."""
    values = camera()[0].values[6000:7500]
    sat = values.copy()
    sat[512:704:2], sat[513:704:2] = 1e30, -1e30
    sat[832:1024], sat[1216:1408] = 1e30, -1e30
    return values, sat


def cycled(a: np.ndarray, values: list[int]) -> np.ndarray:
    """An array of ``a``'s shape and dtype holding ``values`` over and over."""
    return np.resize(np.array(values, dtype=np.int64), a.size).reshape(a.shape).astype(a.dtype)


def with_op(prog: Program, i: int, consts: dict | None = None, **attrs: object) -> Program:
    """``prog`` with some constants and attributes of its op ``i`` replaced (not validated)."""
    op = prog.ops[i]
    new = dataclasses.replace(op, consts={**op.consts, **(consts or {})}, attrs={**op.attrs, **attrs})
    return dataclasses.replace(prog, ops=(*prog.ops[:i], new, *prog.ops[i + 1:]))


def accepted(prog: Program) -> bool:
    """Whether the program's validation (every kernel's argument check) accepts ``prog``."""
    try:
        prog.validate()
    except ConfigError:
        return False
    return True


def assert_c_matches(prog: Program, tmp, label: str, samples: tuple[np.ndarray, ...] | None = None) -> None:
    """``prog``'s C, built with ASan/UBSan, returns the Python reference's results on each of ``samples`` (by default
    :func:`inputs`)."""
    out = tmp / label.replace(" ", "_").replace("=", "")
    out.mkdir()
    exe = build(prog, out, SANITIZE)
    for name, values in zip(("ordinary", "saturated", "third"), samples or inputs(), strict=False):
        try:
            assert_bit_exact(prog, exe, values, out)
        except subprocess.CalledProcessError as exc:
            raise AssertionError(f"{label}, {name} samples: the C failed: {exc.stderr[-600:]}") from None
        except AssertionError as exc:
            raise AssertionError(f"{label}, {name} samples: C and Python disagree {exc}") from None


def assert_rejected_or_matching(cases: list[tuple[str, Program]], tmp, want_accepted: int = 1,
                                samples: tuple[np.ndarray, ...] | None = None) -> None:
    """Every case the validation accepts runs bit-exact in C (:func:`assert_c_matches`); at least ``want_accepted``
    are accepted (so the test compares real outputs)."""
    n = 0
    for label, prog in cases:
        if accepted(prog):
            n += 1
            assert_c_matches(prog, tmp, label, samples)
    assert n >= want_accepted, f"only {n} of {len(cases)} extreme programs are valid"


def test_requantization_of_a_saturated_value_with_a_negative_multiplier_is_rejected_or_alike_in_c(tmp_path):
    # tw_requantize32 (the features' requantization, a fully connected layer) leaves out tw_doubling_high_mult's one
    # saturating case, INT32_MIN * INT32_MIN, as its range is multiplier >= 0; the checks took any int32 multiplier.
    # A value saturated to INT32_MIN (or shifted left to it) times a multiplier of INT32_MIN wrapped to INT32_MIN in
    # the C where the Python reference saturates to INT32_MAX: the lowest output for the highest.
    _, dense = fitted("dense_ae")
    dense = dataclasses.replace(dense, adaptation=None)  # the adaptation bounds the features' offsets further
    rq, fc = dense.ops[1].consts, dense.ops[2].consts
    _, knn = fitted("knn")
    knn = dataclasses.replace(knn, adaptation=None)
    cases = []
    for m in (INT32_MIN, 0, INT32_MAX):
        cases += [
            (f"features m={m}", with_op(dense, 1, {"offset": cycled(rq["offset"], [INT32_MAX, INT32_MIN]),
                                                   "multiplier": cycled(rq["multiplier"], [m]),
                                                   "shift": cycled(rq["shift"], [1, 0, 30, -31])})),
            (f"features s16 m={m}", with_op(knn, 1, {"offset": cycled(knn.ops[1].consts["offset"], [INT32_MAX]),
                                                     "multiplier": cycled(knn.ops[1].consts["multiplier"], [m]),
                                                     "shift": cycled(knn.ops[1].consts["shift"], [1])})),
            # a bias of -2^30 takes the accumulator to -2^30, shifted left by one to INT32_MIN
            (f"fc m={m}", with_op(dense, 2, {"bias": np.full_like(fc["bias"], -(2**30) - 2**20),
                                             "multiplier": cycled(fc["multiplier"], [m]),
                                             "shift": cycled(fc["shift"], [1])})),
        ]
    assert_rejected_or_matching(cases, tmp_path, want_accepted=6)


def test_rbf_kernel_with_a_negative_multiplier_is_rejected_or_alike_in_c(tmp_path):
    # The one-class SVM's requantized squared distance u is taken as >= 0: 2^-u is read from the table as
    # pow2[u & mask] >> (u >> frac_bits). A negative multiplier (int32, accepted by the check) made u negative and
    # both kernels shift right by a negative amount: undefined behaviour in the C, numpy's own in Python.
    _, prog = fitted("ocsvm")
    c = prog.ops[2].consts
    cases = [(f"rbf m={m} shift={s}", with_op(prog, 2, {"multiplier": np.full_like(c["multiplier"], m),
                                                         "shift": np.full_like(c["shift"], s)}))
             for m, s in ((INT32_MIN, 0), (-1, 30), (0, 0), (INT32_MAX, 30), (INT32_MAX, -31))]
    assert_rejected_or_matching(cases, tmp_path, want_accepted=3)


@pytest.mark.parametrize("aggregate", [0, 1])
def test_ar_residual_with_a_negative_multiplier_is_rejected_or_alike_in_c(aggregate, tmp_path):
    # A channel's z-score is min(requantize(sum |e| >> pre_shift), 2^24) in the Python reference, clamped to
    # [0, 2^24] in the C: equal for the multipliers >= 0 the quantizer makes, not for a negative one (any int32 passed
    # the check). The C took 0 for the Python's negative z; summing z^2 of z near INT32_MIN overflows int64.
    _, prog = fitted("ar")
    c = prog.ops[0].consts
    cases = [(f"ar m={m} shift={s}", with_op(prog, 0, {"multiplier": np.full_like(c["multiplier"], m),
                                                        "shift": np.full_like(c["shift"], s),
                                                        "pre_shift": np.zeros_like(c["pre_shift"])},
                                             aggregate=aggregate))
             for m, s in ((INT32_MIN, 30), (-1, 0), (0, 0), (INT32_MAX, 30), (INT32_MAX, -31))]
    assert_rejected_or_matching(cases, tmp_path, want_accepted=3)


def test_ar_residual_bias_is_bounded_so_its_sums_stay_within_int64(tmp_path):
    # The bias (int64, any value passed the check) is subtracted from q * 2^frac_bits and |e| summed over the horizon:
    # a bias near the int64 limits overflowed the C's int64 (undefined behaviour, UBSan) and wrapped in numpy. At the
    # bound both sides agree even in the worst case of the sums: the longest window and horizon, order 16,
    # coefficients at INT32_MIN and every sample at an int16 limit (|e| = 2^51 + 2^35 a step, 4080 steps).
    _, prog = fitted("ar")
    c = prog.ops[0].consts
    cases = [(f"ar bias {lo} {hi}", with_op(prog, 0, {"bias": cycled(c["bias"], [lo, hi])}))
             for lo, hi in ((-(2**63), 2**63 - 1), (-(2**62), 2**62), (-(2**50) - 1, 2**50 + 1), (-(2**50), 2**50))]
    assert_rejected_or_matching(cases, tmp_path)
    order = 16
    wide = dataclasses.replace(prog, window=MAX_WINDOW)
    worst = with_op(wide, 0, {"coef": np.full(prog.n_channels * order, INT32_MIN, dtype=np.int32),
                              "bias": cycled(c["bias"], [2**50, -(2**50)])},
                    order=order, horizon=MAX_WINDOW - order, aggregate=1)
    low, high = (np.full((MAX_WINDOW + 2 * prog.stride, prog.n_channels), v) for v in (-1e30, 1e30))
    assert_rejected_or_matching([("ar worst case", worst)], tmp_path, samples=(low, high))


def test_convolution_with_a_bias_at_the_int32_limits_is_alike_in_c(tmp_path):
    # A layer's bias is any int32 (the check's range, and CMSIS-NN's): the Python reference sums bias and products in
    # int64 and requantizes the sum saturated, the C summed them in int32 and overflowed (undefined behaviour, UBSan)
    # as soon as a product pushed a bias near INT32_MAX or INT32_MIN past it.
    _, prog = fitted("conv_ae")
    cases = []
    for i, op in enumerate(prog.ops):
        if op.kind == "convolve_1d_s8":
            c = op.consts
            cases += [(f"conv{i} bias max", with_op(prog, i, {"bias": np.full_like(c["bias"], INT32_MAX),
                                                               "weights": cycled(c["weights"], [127, -128, 127])},
                                                     input_offset=255)),
                      (f"conv{i} bias min", with_op(prog, i, {"bias": np.full_like(c["bias"], INT32_MIN),
                                                               "weights": cycled(c["weights"], [-128, 127, -128])},
                                                     input_offset=-255, output_offset=127))]
    assert_rejected_or_matching(cases, tmp_path, want_accepted=len(cases))
