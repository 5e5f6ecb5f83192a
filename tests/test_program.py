"""The integer program: sample quantization spec, stream == batch, integer features vs float ones,
model-file round trip, validation errors."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from int8_fixtures import camera, fitted
from tinywarden.arith import quantize_multiplier
from tinywarden.errors import ConfigError, ModelFileError
from tinywarden.features import extract
from tinywarden.program import (
    Int8Stream,
    Program,
    from_model_file,
    quantize_samples,
    run_int8,
    run_windows,
    to_model_file,
)
from tinywarden.quantize.ptq import feature_affine


def one_channel(offset: float, mul: float) -> Program:
    return Program(("a",), 2, 1, np.float32([offset]), np.float32([mul]), np.int32([0]), (), (), 0, 1, 1)


def test_sample_quantization_ties_saturation_nan():
    p = one_channel(0.0, 1.0)
    x = np.array([[0.5], [-0.5], [1.5], [-1.5], [0.49999997], [2.5], [32766.5], [32767.0], [1e30], [-32768.4],
                  [-1e30], [np.inf], [-np.inf], [np.nan]])
    assert quantize_samples(p, x).ravel().tolist() == [1, -1, 2, -2, 0, 3, 32767, 32767, 32767, -32768, -32768,
                                                        32767, -32768, 0]


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=50),
       st.integers(-(2**24), 2**24), st.floats(0.0009765625, 1048576.0, width=32))
@settings(max_examples=200, deadline=None)
def test_sample_quantization_matches_exact_rational_definition(xs, zero, mul):
    """Against the documented definition in exact rationals: sat16(round(x * multiplier * 2**(shift - 31))
    - zero), ties away from zero, NaN -> 0."""
    p = Program(("a",), 2, 1, np.float32([zero / mul]), np.float32([mul]), np.int32([zero]), (), (), 0, 1, 1)
    m, sh = quantize_multiplier(float(np.float32(mul)))
    got = quantize_samples(p, np.array(xs, dtype=np.float64)[:, None]).ravel().tolist()
    for x, q in zip(xs, got, strict=True):
        if math.isnan(x):
            want = 0
        elif math.isinf(x):
            want = 32767 if x > 0 else -32768
        else:
            t = abs(Fraction(float(np.float32(x)))) * m * Fraction(2) ** (sh - 31)
            y = math.floor(t + Fraction(1, 2))
            want = min(max((y if x > 0 else -y) - zero, -32768), 32767)
        assert q == want


def test_integer_features_track_float_features():
    pipe, prog = fitted("ewma")
    s, _ = camera()
    q = quantize_samples(prog, s.values[: 128 * 20]).reshape(20, 128, -1)
    from tinywarden.program import KERNELS

    f_int = KERNELS["features_s16"].fn([q], prog.ops[0])
    a, b = feature_affine(pipe, 1.0 / prog.sample_mul.astype(np.float64), prog.sample_zero)
    approx = a * f_int + b
    exact = extract(s.values[: 128 * 20].reshape(20, 128, -1), pipe.features, pipe.crossings_block,
                    pipe.crossings_level)
    # relative to each feature's normal spread (the pipeline's scaler): typically under 1% of a standard
    # deviation; at worst half an int16 step (<= 1/64 of the channel's standard deviation) on a feature
    # whose spread is several times narrower than its channel's (the window minimum of a count: 0.12); crossings are
    # counted on quantized samples, and a sample within one int16 step of its block's mean may count as a
    # crossing or not: they track the float count where the window spans enough int16 steps (a camera channel
    # trained on a wide span moves by 3 steps in some windows: its crossings there are quantization noise)
    err = np.abs(approx - exact) / pipe.scale_
    cross = np.array([f == "crossings" for f in pipe.features] * prog.n_channels)
    assert np.median(err) < 1e-2 and err[:, ~cross].max() < 0.15
    resolved = (q.max(axis=1) - q.min(axis=1)) >= 32  # (windows, channels)
    assert resolved.mean() > 0.5
    assert np.abs(approx - exact)[:, cross][resolved].max() <= 0.15  # 0.12 seen: 15 of 127 steps, 64-row blocks


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 5000), st.integers(200, 900))
def test_stream_equals_batch(start, length):
    _, prog = fitted("dense_ae")
    s, _ = camera()
    x = s.values[start : start + length]
    scores, alarms = run_int8(prog, x)
    stream = Int8Stream(prog)
    got = [r for r in (stream.push(row) for row in x) if r is not None]
    assert [g[0] for g in got] == scores.tolist()
    assert [g[1] for g in got] == alarms.tolist()


def test_int16_input_skips_quantization():
    _, prog = fitted("kmeans")
    s, _ = camera()
    x = s.values[:2000]
    assert np.array_equal(run_int8(prog, x)[0], run_int8(prog, quantize_samples(prog, x))[0])


def test_model_file_round_trip_and_model_id():
    _, prog = fitted("conv_ae")
    header, arrays = to_model_file(prog)
    back = from_model_file(header, arrays)
    assert back.model_id == prog.model_id == header["model_id"]
    s, _ = camera()
    assert np.array_equal(run_int8(back, s.values[:3000])[0], run_int8(prog, s.values[:3000])[0])
    arrays2 = dict(arrays)
    arrays2["int8/op1/weights"] = arrays2["int8/op1/weights"].astype(np.int32)
    with pytest.raises(ModelFileError, match="weights"):
        from_model_file(header, arrays2)
    with pytest.raises(ModelFileError, match="malformed"):
        from_model_file({**header, "ops": [{"kind": "fully_connected_s8"}]}, arrays)
    with pytest.raises(ModelFileError, match="version"):
        from_model_file({**header, "version": 99}, arrays)


def test_run_windows_rejects_wrong_shape():
    _, prog = fitted("ewma")
    with pytest.raises(ConfigError, match="int16"):
        run_windows(prog, np.zeros((2, prog.window, prog.n_channels), dtype=np.float32))
    with pytest.raises(ConfigError, match="samples"):
        run_int8(prog, np.zeros((300, prog.n_channels + 1)))


def test_feature_requantization_written_wide_by_older_files_still_loads():
    """Files from before the narrowing stored pre_shift as int32 and offset as int64: same arithmetic."""
    _, prog = fitted("kmeans")
    header, arrays = to_model_file(prog)
    i = next(j for j, op in enumerate(prog.ops) if op.kind.startswith("requantize_s64_"))
    old = dict(arrays)
    old[f"int8/op{i}/pre_shift"] = arrays[f"int8/op{i}/pre_shift"].astype(np.int32)
    old[f"int8/op{i}/offset"] = arrays[f"int8/op{i}/offset"].astype(np.int64)
    back = from_model_file(header, old)
    assert back.ops[i].consts["offset"].dtype == np.int32 and back.model_id == prog.model_id
    too_big = dict(old)
    too_big[f"int8/op{i}/offset"] = old[f"int8/op{i}/offset"] + 2**40
    with pytest.raises(ModelFileError, match="offset does not fit int32"):
        from_model_file(header, too_big)


def test_window_mean_crossings_on_int8_residuals_equal_the_samples_unless_a_block_swings_beyond_int8():
    # issue 16: the C keeps one int8 residual a sample (the sample less its block's first, shifted right by the
    # block's shift) in place of the int16 ring, and counts the crossings of the window's mean on them: the same
    # count as on the samples in every block within int8 of its first sample, and on coarser steps beyond
    from tinywarden.features import FEATURE_TABLE
    from tinywarden.kernels import Op
    from tinywarden.kernels.features_s16 import features_s16, ring_residuals

    code = np.array([FEATURE_TABLE["crossings"].code], dtype=np.int32)
    exact = Op("features_s16", ("window",), "features", {"window": 64, "block": 64},
               {"codes": code, "z0": np.zeros(2, dtype=np.int32)})
    resid = Op("features_s16", ("window",), "features", {"window": 64, "block": 64, "ring_block": 16},
               {"codes": code, "z0": np.zeros(2, dtype=np.int32)})
    rng = np.random.default_rng(3)
    x = rng.integers(-60, 61, (200, 64, 2)) + rng.integers(-3000, 3000, (200, 1, 2))  # swings within int8
    np.testing.assert_array_equal(features_s16([x], resid), features_s16([x], exact))
    assert not ring_residuals(x, 16)[2].any()  # every shift 0
    # a block that starts 300 steps below the rest: saturated residuals (127) lost its crossings of the level
    # (~295 above its first sample), 63 - 16 of 63; shifted by 2 (305 >> 2 = 76) they keep every one
    w = np.zeros((1, 64, 2), dtype=np.int64)
    w[0, :, 0] = 300 + np.tile([-5, 5], 32)
    w[0, 0, 0] = 0
    r, _, shift = ring_residuals(w, 16)
    assert shift[0, :, 0, 0].tolist() == [2, 0, 0, 0] and r[0, 0, :3, 0].tolist() == [0, 76, 73]
    got, want = features_s16([w], resid)[0, 0], features_s16([w], exact)[0, 0]
    assert want == 63 and got == 63
    # a quiet channel bursting 1,000 to 1,200 steps above a block's first sample (asd omi-2's anomaly): its
    # level (1,081) lies beyond int8 too, so saturated residuals counted none of the block's 14 crossings (1 of
    # 15 in all: the step into the next block); shifted by 4 (1,200 >> 4 = 75, the level's 67) every one
    w = np.zeros((1, 64, 2), dtype=np.int64)
    w[0, 1:16, 0] = np.tile([1000, 1200], 8)[:15]
    w[0, 16:, 0] = 1100
    level = int(w[0, :, 0].sum()) // 64
    assert level == 1081 and features_s16([w], exact)[0, 0] == 15
    assert ring_residuals(w, 16)[2][0, :, 0, 0].tolist() == [4, 0, 0, 0]
    assert features_s16([w], resid)[0, 0] == 15


def test_std_and_rms_of_the_largest_window_at_int16_extremes_stay_in_the_square_roots_range():
    # tw_isqrt_u64 is exact on [0, 2^60) and tw_rms_s16 squares T = S1 + W * z0 in int32: at MAX_WINDOW with every
    # sample and the zero point at int16's ends, T reaches 2^28 and V + T^2 stays below 2^57; the reference refuses a
    # value beyond the range, so an overflow here would raise
    from tinywarden.features import FEATURE_TABLE
    from tinywarden.kernels import Op
    from tinywarden.kernels.features_s16 import MAX_WINDOW, features_s16

    codes = np.array([FEATURE_TABLE["std"].code, FEATURE_TABLE["rms"].code], dtype=np.int32)
    op = Op("features_s16", ("window",), "features", {"window": MAX_WINDOW, "block": MAX_WINDOW},
            {"codes": codes, "z0": np.array([-32768, 32767], dtype=np.int32)})
    x = np.empty((2, MAX_WINDOW, 2), dtype=np.int64)
    x[0] = -32768  # constant: V = 0, |T| = 2 * W * 2^15 on channel 0
    x[1] = np.tile([-32768, 32767], MAX_WINDOW // 2)[:, None]  # alternating ends: V about W^2 * 2^30 = 2^54
    f = features_s16([x], op).reshape(2, 2, 2)  # (window, channel, feature)
    t = x.sum(axis=1) + MAX_WINDOW * np.array([-32768, 32767])
    v = MAX_WINDOW * (x * x).sum(axis=1) - x.sum(axis=1) ** 2
    assert abs(int(t[0, 0])) == 2 * MAX_WINDOW * 2**15 and int(v[1, 0]) > 2**53
    assert [[[math.isqrt(int(v[n, c])), math.isqrt(int(v[n, c]) + int(t[n, c]) ** 2)] for c in range(2)]
            for n in range(2)] == f.tolist()


def test_feature_offsets_beyond_int16_are_narrowed_by_shifting_only_within_one_output_step():
    # an adapting default module was 8,270 B on Cortex-M0+ (over 8 KB) on data whose one feature mean was 54,840
    # integer units from zero: that offset alone made the whole offset table int32 (132 B more)
    from tinywarden.arith import INT16_MAX, choose_qparams
    from tinywarden.detectors.lowering import NARROW_UNIT_STEPS, requantize_features
    from tinywarden.kernels import KERNELS

    out = choose_qparams(-16.0, 16.0, "int16", symmetric=True)  # whitened inputs, 16 sd of headroom
    a, b = np.ones(3), np.zeros(3)
    mu = np.array([54840.0, 100.0, -40000.0])
    sigma = 1.0 / (0.275 * out.scale) * np.ones(3)  # one integer unit is 0.275 output steps
    op = requantize_features(a, b, mu, sigma, out, "requantize_s64_s16")
    off, pre = op.consts["offset"], op.consts["pre_shift"]
    assert np.abs(off).max() <= INT16_MAX and pre.tolist() == [1, 0, 1]  # only the far features move
    assert (a / (sigma * out.scale) * 2.0 ** pre.astype(float) <= NARROW_UNIT_STEPS).all()
    # the requantized features still track the float ((f - mu) / sigma) within one output step and a half
    f = (mu[None, :] + np.arange(-400, 401, 7)[:, None]).astype(np.int64)
    q = KERNELS[op.kind].fn([f], op).astype(float)
    assert np.abs(q * out.scale - (f - mu) / sigma).max() <= 1.5 * out.scale
    # where shifting within one step cannot make every offset fit, nothing moves past the int32 rule (which
    # shifts the third feature once, to fit int32)
    tight = requantize_features(a, b, np.array([54840.0, 100.0, 4e9]), sigma, out, "requantize_s64_s16")
    assert tight.consts["pre_shift"].tolist() == [0, 0, 1] and np.abs(tight.consts["offset"]).max() > INT16_MAX
