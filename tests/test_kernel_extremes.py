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

from int8_fixtures import INT8_FAMILIES, camera, fitted
from test_codegen_c import assert_bit_exact, build
from tinywarden.arith import INT32_MAX, INT32_MIN
from tinywarden.errors import ConfigError
from tinywarden.kernels import KERNELS, Op
from tinywarden.kernels.ar_residual_s16 import AR_BIAS_MAX
from tinywarden.kernels.gru_s8 import GRU_MAX_BIAS, GRU_MAX_MULTIPLIER
from tinywarden.kernels.rbf_kernel_sum_s16 import RBF_MAX_SV_SHIFT
from tinywarden.program import MAX_WINDOW, Program, run_int8

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
    for m in (INT32_MIN, INT32_MAX):
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
    assert_rejected_or_matching(cases, tmp_path, want_accepted=3)


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


def test_an_rbf_table_whose_first_entry_is_not_its_largest_is_rejected_as_it_made_scores_negative():
    # The table's entries only had to be non-negative: with pow2[0] below another entry, pow2[0] - k went negative near
    # a support vector and so did the score (Python and C alike), where every score kernel promises >= 0 (the
    # tw_result_t contract, the ensemble's fusion, tw_score_from_total's saturation, which clips only the top).
    _, prog = fitted("ocsvm")
    i = len(prog.ops) - 1
    op = prog.ops[i]
    table = op.consts["exp2"].copy()
    table[0] = 0
    bad = with_op(prog, i, {"exp2": table})
    sv = op.consts["support_vectors"][:1].astype(np.int16) << op.attrs["sv_shift"]
    assert KERNELS["rbf_kernel_sum_s16"].fn([sv], bad.ops[i])[0, 0] < 0  # what the old check let through
    with pytest.raises(ConfigError, match="the first the largest"):
        bad.validate()
    assert accepted(prog)


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
             for m, s in ((INT32_MIN, 30), (-1, 0), (0, 0), (INT32_MAX, 30))]
    assert_rejected_or_matching(cases, tmp_path, want_accepted=2)


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



def test_ar_residual_holds_its_channel_bound_so_the_sum_of_squares_stays_within_int64():
    # the C states n_ch <= 2^14 (each z^2 <= 2^48, their sum within int64) and the check never held it: a wider
    # program validated and would have overflowed the int64 sum in C (undefined behaviour)
    from types import SimpleNamespace

    prog = family_program("ar")
    (op,) = [o for o in prog.ops if o.kind == "ar_residual_s16"]
    order = int(op.attrs["order"])

    def widened(ch: int) -> tuple[Op, SimpleNamespace]:
        per = {"coef": ch * order, "bias": ch, "pre_shift": ch, "multiplier": ch, "shift": ch}
        consts = {k: np.resize(np.asarray(v), per[k]) for k, v in op.consts.items()}
        view = SimpleNamespace(window=prog.window, stride=prog.stride, n_channels=ch, tensor=prog.tensor)
        return dataclasses.replace(op, consts=consts), view

    check = KERNELS["ar_residual_s16"].check
    assert check is not None
    check(*widened(2**14))
    with pytest.raises(ConfigError, match=r"at most 16384 channels"):
        check(*widened(2**14 + 1))

def test_a_convolution_bias_that_could_overflow_the_int32_sum_is_rejected_and_the_largest_accepted_is_alike_in_c(
        tmp_path):
    # A layer's bias took any int32: the Python reference sums bias and products in int64 and requantizes the sum
    # saturated, the C sums them in int32 (as CMSIS-NN) and overflowed (undefined behaviour, UBSan) as soon as a
    # product pushed a bias near INT32_MAX or INT32_MIN past it. The check now keeps every partial sum within int32.
    _, prog = fitted("conv_ae")
    high, low, at_max, at_min = prog, prog, prog, prog
    for i, op in enumerate(prog.ops):
        if op.kind == "convolve_1d_s8":  # every layer at once: each one's sums overflowed whatever its inputs
            c = op.consts
            up, down = cycled(c["weights"], [127, -128, 127]), cycled(c["weights"], [-128, 127, -128])
            room = INT32_MAX - (128 + 255) * max(int(np.abs(w.astype(np.int64)).sum(axis=(1, 2)).max())
                                                 for w in (up, down))
            high = with_op(high, i, {"bias": np.full_like(c["bias"], INT32_MAX), "weights": up}, input_offset=255)
            low = with_op(low, i, {"bias": np.full_like(c["bias"], INT32_MIN), "weights": down},
                          input_offset=-255, output_offset=127)
            at_max = with_op(at_max, i, {"bias": np.full_like(c["bias"], room), "weights": up}, input_offset=255)
            at_min = with_op(at_min, i, {"bias": np.full_like(c["bias"], -room), "weights": down},
                             input_offset=-255, output_offset=127)
    for hostile in (high, low):
        with pytest.raises(ConfigError, match="may overflow the int32 sum"):
            hostile.validate()
    assert_rejected_or_matching([("conv bias at its bound", at_max), ("conv bias at minus it", at_min)], tmp_path,
                                want_accepted=2)


def test_a_fully_connected_bias_the_generator_cannot_emit_is_refused_by_the_validation(tmp_path):
    # The layer's kernel sum (bias + input_offset * sum w, which the C's int32 accumulator starts from) was bounded only
    # when the C was generated: a program with a bias near INT32_MAX validated, ran in the Python reference, and then
    # `export` refused it. The validation now holds the same bound, so what validates is what the generator emits.
    from tinywarden.codegen.c import write_c

    _, dense = fitted("dense_ae")
    i = next(j for j, op in enumerate(dense.ops) if op.kind == "fully_connected_s8")
    c = dense.ops[i].consts
    hostile = with_op(dense, i, {"bias": np.full_like(c["bias"], INT32_MAX)})
    with pytest.raises(ConfigError, match="may overflow the int32 accumulator"):
        hostile.validate()
    with pytest.raises(ConfigError, match="may overflow"):
        write_c(hostile, tmp_path / "hostile")
    assert not list(tmp_path.glob("hostile/*.c"))
    w = c["weights"].astype(np.int64)
    offset_sums = int(dense.ops[i].attrs["input_offset"]) * w.sum(axis=1)
    room = int((INT32_MAX - 128 * np.abs(w).sum(axis=1) - offset_sums).min())  # the largest bias every output takes
    at_bound = with_op(dense, i, {"bias": np.full_like(c["bias"], room)})
    assert accepted(at_bound) and not accepted(with_op(dense, i, {"bias": np.full_like(c["bias"], room + 1)}))
    assert_c_matches(at_bound, tmp_path, "fc bias at its bound")


# -- the sweep: every family's kernels at the ends of their checks' ranges ----------------------------------------
def mixed(a: np.ndarray, values: list[int]) -> np.ndarray:
    """``a`` with its odd rows (entries, for a 1-D array) holding ``values`` over and over: extremes beside fitted
    values, so that the outputs the fitted rows make still vary."""
    out = np.array(a, copy=True)
    out[1::2] = cycled(out[1::2], values)
    return out


#: A kernel's constants and attributes at the extremes its check accepts, for two variants of a program: ``side`` 0
#: leaves the features' requantization as fitted and mixes extremes with fitted values (the score still varies with
#: the window), side 1 saturates (the features' requantization too): the limits themselves. None: the op as fitted.
Extremes = tuple[dict, dict] | None


def _extremes(op: Op, side: int) -> Extremes:  # noqa: C901 (one case a kernel)
    c, lo, full = op.consts, side == 0, np.full_like
    if op.kind.startswith("requantize_s64_"):
        return None if lo else ({"offset": mixed(c["offset"], [INT32_MIN, 0, INT32_MAX]),
                                 "multiplier": mixed(c["multiplier"], [INT32_MAX, 0, 1 << 30, INT32_MAX]),
                                 "shift": mixed(c["shift"], [30, -31, 0, 1, 30]),
                                 "pre_shift": mixed(c["pre_shift"], [0, 62, 0, 0])},
                                {"zero_point": op.attrs["act_max"]})
    if op.kind == "requantize_s16_s8":
        return ({"offset": mixed(c["offset"], [INT32_MIN, INT32_MAX, 0] if lo else [0, 1 - 2**15]),
                 "multiplier": mixed(c["multiplier"], [INT32_MAX, 0] if lo else [INT32_MAX]),
                 "shift": mixed(c["shift"], [-31, 30] if lo else [-31, 0, 30])}, {"zero_point": 0 if lo else -128})
    if op.kind in ("fully_connected_s8", "convolve_1d_s8"):
        # a layer's bias leaves room for its int32 sums (a fully connected layer's: its kernel-sum check; a
        # convolution's: its check, the largest it accepts beside the extreme weights and input offset)
        pick = mixed if lo else cycled
        weights = pick(c["weights"], [127, -128])
        if op.kind == "convolve_1d_s8":
            room = INT32_MAX - (128 + 255) * int(np.abs(weights.astype(np.int64)).sum(axis=(1, 2)).max())
            bias = [room, -room]
        else:
            bias = [2**30, -(2**30)]
        return ({"weights": weights, "bias": pick(c["bias"], bias),
                 "multiplier": pick(c["multiplier"], [INT32_MAX, 0, 1 << 30]),
                 "shift": pick(c["shift"], [-31, 30, 1] if lo else [-31, 0, 30])},
                {"input_offset": 255 if lo else -255, "output_offset": int(op.attrs["output_offset"]) if lo else 127})
    if op.kind == "gru_s8":
        ms = ("ih_multiplier", "hh_multiplier", "out_multiplier")
        if lo:
            return ({**{k: mixed(c[k], [GRU_MAX_MULTIPLIER, 0]) for k in ms},
                     **{k: mixed(c[k], [GRU_MAX_BIAS, -GRU_MAX_BIAS]) for k in ("b_ih", "b_hh", "b_out")},
                     **{k: mixed(c[k], [-128, 127]) for k in ("w_ih", "w_hh", "w_out")}},
                    {"input_offset": 255})
        step = np.array([-(2**15)] * 128 + [2**15 - 1] * 129, dtype=np.int16)  # the steepest table that does not fall
        return ({**{k: full(c[k], GRU_MAX_MULTIPLIER) for k in ms},
                 **{k: cycled(c[k], [-GRU_MAX_BIAS, GRU_MAX_BIAS]) for k in ("b_ih", "b_hh", "b_out")},
                 **{k: cycled(c[k], [-128, 127, -128]) for k in ("w_ih", "w_hh", "w_out")}, "tanh": step},
                {"gate_shift": 1, "out_shift": 62, "input_offset": -255, "output_offset": -128})
    if op.kind in ("sum_sq_s16", "max_abs_s16", "sum_sq_diff_s8"):  # sum_sq_s16 (ewma): the score's largest shift
        return {}, {"shift": 62 if op.kind == "sum_sq_s16" and not lo else 0}
    if op.kind == "min_sq_dist_s16":
        return {"centroids": mixed(c["centroids"], [-(2**15), 2**15 - 1])}, {"shift": 0}
    if op.kind == "knn_dist_s16":
        return ({"prototypes": mixed(c["prototypes"], [-(2**15), 2**15 - 1, 0])},
                {"k": INT32_MAX if lo else 1, "shift": 0})
    if op.kind.startswith("iforest_path"):
        leaf = c["left"] == 0
        th = np.where(leaf, mixed(c["threshold"], [-(2**15), 2**15 - 1]) if lo else -(2**15),
                      mixed(c["threshold"], [-(2**15), 2**15 - 1, 0]))
        return {"threshold": th.astype(np.int16)}, {"shift": 0}
    if op.kind == "rbf_kernel_sum_s16":
        if lo:  # the largest weights, a table falling from 2^0 to 0 at once (the check takes it): the largest totals
            return ({"alpha": full(c["alpha"], 2**15 - 1), "exp2": np.array([2**15 - 1, 0], dtype=np.int16)},
                    {"frac_bits": 1, "tail_from": 0, "shift": 0})
        return ({"support_vectors": cycled(c["support_vectors"], [-128, 127]),
                 "exp2": np.full(2**12, 2**15 - 1, dtype=np.int16), "multiplier": full(c["multiplier"], INT32_MAX),
                 "shift": full(c["shift"], 30), "pre_shift": full(c["pre_shift"], 0)},
                {"sv_shift": RBF_MAX_SV_SHIFT, "frac_bits": 12, "tail_from": INT32_MAX, "shift": 0})
    if op.kind == "ar_residual_s16":
        ch, window = len(c["bias"]), int(op.attrs["order"]) + int(op.attrs["horizon"])
        if lo:  # the longest forecast over the longest horizon and the largest misses, scaled down into range
            return ({"coef": cycled(np.zeros(16 * ch, dtype=np.int32), [INT32_MIN, INT32_MAX, 0]),
                     "bias": cycled(c["bias"], [AR_BIAS_MAX, -AR_BIAS_MAX]),
                     "multiplier": full(c["multiplier"], INT32_MAX), "shift": full(c["shift"], -8),
                     "pre_shift": full(c["pre_shift"], 30)},
                    {"order": 16, "horizon": window - 16, "frac_bits": 20, "aggregate": 0, "shift": 0})
        return ({"coef": cycled(c["coef"], [INT32_MAX, 0, INT32_MIN]), "bias": cycled(c["bias"], [-AR_BIAS_MAX]),
                 "multiplier": cycled(c["multiplier"], [0, INT32_MAX]), "shift": cycled(c["shift"], [30, -31]),
                 "pre_shift": cycled(c["pre_shift"], [0, 62])},
                {"frac_bits": 0, "horizon": 1, "aggregate": 1, "shift": 0})
    if op.kind == "bounds_violation_s16":
        if lo:  # bounds at the int32 limits: the value term saturates low, the step term varies
            return ({"lo": full(c["lo"], INT32_MIN), "hi": full(c["hi"], INT32_MAX), "rate": cycled(c["rate"], [0]),
                     "value_multiplier": cycled(c["value_multiplier"], [INT32_MAX, 0]),
                     "value_shift": cycled(c["value_shift"], [30, -31, 0]),
                     "rate_multiplier": full(c["rate_multiplier"], INT32_MAX),
                     "rate_shift": cycled(c["rate_shift"], [0, -31])}, {"shift": 0})
        ext = [INT32_MIN, INT32_MAX, 0]
        return ({"lo": cycled(c["lo"], ext), "hi": cycled(c["hi"], ext[::-1]), "rate": cycled(c["rate"], ext),
                 **{k: cycled(c[k], [INT32_MIN, INT32_MAX]) for k in ("value_multiplier", "rate_multiplier")},
                 **{k: cycled(c[k], [30, -31]) for k in ("value_shift", "rate_shift")}}, {"shift": 62})  # floor shift
    if op.kind.startswith("fuse"):
        return ({"multiplier": cycled(c["multiplier"], [INT32_MAX]), "shift": cycled(c["shift"], [0, -31])}
                if lo else {"multiplier": cycled(c["multiplier"], [INT32_MAX]), "shift": cycled(c["shift"], [30])},
                {"shift": 0})
    return None  # pca_residual_s16 (its own test in test_codegen_c.py), features_s16: not swept here


def family_program(family: str) -> Program:
    """The family's fitted program, without its adaptation (which bounds the features' offsets further); ``max_abs``:
    ewma's with the max_abs_s16 score in place of sum_sq_s16 (no family scores with it)."""
    _, prog = fitted("ewma" if family == "max_abs" else family)
    if family == "max_abs":
        assert prog.ops[-1].kind == "sum_sq_s16"
        prog = dataclasses.replace(prog, ops=(*prog.ops[:-1], dataclasses.replace(prog.ops[-1], kind="max_abs_s16")))
    return dataclasses.replace(prog, adaptation=None)


def sweep_variants(family: str) -> list[tuple[str, Program]]:
    """The family's program with every op :func:`_extremes` knows at side 0's extremes, and at side 1's."""
    prog, cases = family_program(family), []
    for side in (0, 1):
        variant, touched = prog, []
        for i, op in enumerate(prog.ops):
            ext = _extremes(op, side)
            if ext is not None:
                variant = with_op(variant, i, ext[0], **ext[1])
                touched.append(op.kind)
        if touched:
            cases.append((f"{family} side {side} {'+'.join(touched)}", variant))
    return cases


@pytest.mark.parametrize("family", [*INT8_FAMILIES, "max_abs"])
def test_every_kernel_at_the_extremes_its_check_accepts_stays_bit_exact_in_c(family, tmp_path):
    cases = sweep_variants(family)
    assert len(cases) == (1 if family in ("pca", "gaussian") else 2)  # pca: the features' requantization alone
    # side 0's scores vary with the window: the comparison can tell a wrong value from the right one
    for label, prog in cases:
        if " side 0 " in label:
            assert len(np.unique(np.concatenate([run_int8(prog, v)[0] for v in inputs()]))) > 2, label
    assert_rejected_or_matching(cases, tmp_path, want_accepted=len(cases))  # every variant is valid
