"""Generated C compiled with the host gcc must return exactly the Python int8 reference's scores and
decisions (tw_push with floats, tw_push_q with int16), for all four detectors, on simulated and real data."""

import dataclasses
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from int8_fixtures import INT8_FAMILIES, camera, fitted, shared_entity
from tinywarden.calibrate import MAX_PERSIST_N
from tinywarden.codegen.c import emit_c, scratch_homes, write_c
from tinywarden.detectors import make_detector
from tinywarden.errors import ConfigError
from tinywarden.features import MIN_CROSSINGS_BLOCK
from tinywarden.pipeline import Pipeline
from tinywarden.program import MAX_WINDOW, quantize_fixed, quantize_samples, run_confidence, run_int8
from tinywarden.quantize import quantize_pipeline
from tinywarden.target import missing_tools, run_on_qemu

HARNESS = Path(__file__).parent / "c" / "harness.c"
FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="no host gcc to compile the generated C")


def build(program, tmp: Path, extra_flags=()) -> Path:
    write_c(program, tmp)
    exe = tmp / "harness"
    subprocess.run(["gcc", *FLAGS, *extra_flags, "-I", str(tmp), str(tmp / "tinywarden_model.c"), str(HARNESS),
                    "-o", str(exe)], check=True, capture_output=True, text=True)
    return exe


def run(exe: Path, samples: np.ndarray, mode: str, tmp: Path) -> np.ndarray:
    path = tmp / f"in_{mode}.bin"
    samples.tofile(path)
    out = subprocess.run([str(exe), str(path), mode], check=True, capture_output=True, text=True).stdout
    return np.array([[int(v) for v in line.split()] for line in out.splitlines()], dtype=np.int64).reshape(-1, 5)


def assert_bit_exact(program, exe, values, tmp):
    scores, alarms = run_int8(program, values)
    assert len(scores) > 0
    for mode, data in (("f", values.astype(np.float32)), ("q", quantize_samples(program, values))):
        rows = run(exe, data, mode, tmp)
        ends = program.window - 1 + program.stride * np.arange(len(scores))
        assert rows[:, 0].tolist() == ends.tolist()
        assert rows[:, 1].tolist() == scores.tolist()
        assert rows[:, 2].tolist() == (scores > program.threshold).astype(int).tolist()
        assert rows[:, 3].tolist() == alarms.tolist()
        conf = run_confidence(program, scores, values)
        assert rows[:, 4].tolist() == (conf.tolist() if conf is not None else [0] * len(scores))


@pytest.mark.parametrize("detector", INT8_FAMILIES)
def test_c_matches_python_on_simulated_camera(detector, tmp_path):
    _, prog = fitted(detector)
    s, _ = camera()
    values = s.values[:20000]  # 20k samples x 6 channels, ~310 windows with attacks in them
    exe = build(prog, tmp_path)
    assert_bit_exact(prog, exe, values, tmp_path)
    assert run_int8(prog, values)[1].any()  # the attacks raise alarms: the comparison covers both decisions


def test_c_under_sanitizers_with_hostile_samples(tmp_path):
    _, prog = fitted("dense_ae")
    s, _ = camera()
    values = s.values[:6000].copy()
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(values), 200)
    values[idx, rng.integers(0, values.shape[1], 200)] = rng.choice([np.nan, np.inf, -np.inf, 1e30, -1e30], 200)
    exe = build(prog, tmp_path, ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"])
    assert_bit_exact(prog, exe, values, tmp_path)


def quantized_lines(exe, data, mode, tmp):
    path = tmp / "q.bin"
    data.tofile(path)
    out = subprocess.run([str(exe), str(path), mode], check=True, capture_output=True, text=True).stdout
    return np.array([[int(v) for v in line.split()[2:]] for line in out.splitlines() if line.startswith("q ")])


@pytest.mark.parametrize("pow2", [True, False])
def test_c_sample_quantization_matches_python(pow2, tmp_path):
    _, prog = fitted("ewma")
    # a program whose sample scales are all powers of two converts with a shift in C; others take the product
    if pow2:
        prog = dataclasses.replace(prog, sample_mul=np.exp2(np.floor(np.log2(prog.sample_mul))).astype(np.float32))
    assert f"#define TW_SAMPLE_POW2 {int(pow2)}" in emit_c(prog)["tinywarden_model.c"]
    rng = np.random.default_rng(1)
    zero, mul = prog.sample_zero.astype(np.float64), prog.sample_mul.astype(np.float64)
    # values landing exactly on and next to .5 ties, at and beyond saturation, non-finite, denormal, -0
    k = rng.integers(-40000, 40000, (3000, prog.n_channels)) + rng.choice([0.5, -0.5, 0.4999, 0.0], (3000, 1))
    x = ((k + zero) / mul).astype(np.float32)
    x[::97, 0] = np.nan
    x[::89, 1] = np.inf
    x[::83, 2] = -np.inf
    x[::79, 3] = np.float32(1e-45)
    x[::73, 4] = -0.0
    x[::71, 5] = np.float32(3e38)
    exe = build(prog, tmp_path)
    want = quantize_samples(prog, x.astype(np.float64))
    assert np.array_equal(quantized_lines(exe, x, "Q", tmp_path), want)
    raw = rng.integers(-(2**31), 2**31, (500, prog.n_channels)).astype(np.int32)
    raw[::7] = (raw[::7] >> rng.integers(0, 31, (1, prog.n_channels))).astype(np.int32)
    for frac in (0, 5, 17, 31):  # every shift distance, both directions
        assert np.array_equal(quantized_lines(exe, raw, f"I{frac}", tmp_path), quantize_fixed(prog, raw, frac))
    # the integer definition stays within one step of the real value (q + zero) / mul, away from saturation
    real = x.astype(np.float64) * mul - zero
    inside = np.isfinite(real) & (np.abs(real) < 32000)
    assert np.abs(want[inside] - real[inside]).max() <= 0.5 + 1e-6


def test_c_fixed_point_samples_match_python_and_the_float_path(tmp_path):
    _, prog = fitted("dense_ae")
    s, _ = camera()
    values = s.values[:6000]
    exe = build(prog, tmp_path)
    for frac in (0, 8, 31):
        raw = np.clip(np.round(values * 2.0**frac), -(2**31), 2**31 - 1).astype(np.int32)
        raw[::101, 0] = np.iinfo(np.int32).min
        want = quantize_fixed(prog, raw, frac)
        assert np.array_equal(quantized_lines(exe, raw, f"I{frac}", tmp_path), want)
        scores, alarms = run_int8(prog, want)
        rows = run(exe, raw, f"i{frac}", tmp_path)
        assert rows[:, 1].tolist() == scores.tolist() and rows[:, 3].tolist() == alarms.tolist()
    # a reading that is exactly representable both ways quantizes alike through either entry point
    exact = np.round(values * 256).astype(np.int32)
    assert np.array_equal(quantize_fixed(prog, exact, 8), quantize_samples(prog, exact / 256.0))


def test_fixed_point_arguments_are_checked():
    _, prog = fitted("ewma")
    with pytest.raises(ConfigError, match="frac_bits"):
        quantize_fixed(prog, np.zeros((2, prog.n_channels), dtype=np.int32), 32)
    with pytest.raises(ConfigError, match="int32"):
        quantize_fixed(prog, np.zeros((2, prog.n_channels)), 0)


@pytest.mark.parametrize("which", ["smd", "nab"])
def test_c_matches_python_on_shared_data(which, tmp_path):
    prog, values = shared_entity(which, "dense_ae", epochs=3, max_steps=150)
    assert_bit_exact(prog, build(prog, tmp_path), values, tmp_path)


def test_generated_c_is_self_contained_and_stamped():
    _, prog = fitted("conv_ae")
    files = emit_c(prog)
    src, hdr = files["tinywarden_model.c"], files["tinywarden_model.h"]
    includes = {line.split()[1] for line in (src + hdr).splitlines() if line.startswith("#include")}
    assert includes == {"<stdint.h>", "<stddef.h>", '"tinywarden_model.h"'}
    assert "malloc" not in src
    # the one float is the union through which tw_float_to_q (and, on Thumb-1, tw_quantize_sample's loop of
    # tw_bits_to_q) reads a sample's bits (one call per channel, straight-line in tw_quantize_sample): no float
    # arithmetic
    code = [line.split("/*")[0].strip() for line in src.splitlines() if not line.lstrip().startswith("*")]
    assert {line for line in code if "float" in line} == {
        "float f;", "TW_FORCE_INLINE int16_t tw_float_to_q(int32_t c, float f)",
        "void tw_quantize_sample(const float sample[TW_N_CHANNELS], int16_t q[TW_N_CHANNELS])",
        "int tw_push(tw_state_t *s, const float sample[TW_N_CHANNELS], tw_result_t *out)",
        *(f"q[{c}] = tw_float_to_q({c}, sample[{c}]);" for c in range(prog.n_channels))}
    assert prog.model_id in hdr and prog.model_id in src and "TW_STATE_BYTES" in hdr
    assert "tw_convolve_1d_s8(" in src and "tw_fully_connected_s8(" not in src  # only the kernels it uses


ALL_FEATURES = ("mean", "std", "min", "max", "last", "rms", "band1", "band2", "band3", "crossings",
                "diff_abs_mean", "diff_abs_max")


BLOCK_LAYOUTS = [  # cross_block None: crossings of the window's mean; "trained": of the trained mean (no samples)
    (32, 12, ALL_FEATURES, None),  # blocks of 4: band3 and crossings (of the window's mean) from the ring
    (32, 12, ALL_FEATURES, "trained"),  # blocks of 4: band3 alone from the ring
    (24, 3, ALL_FEATURES, None),  # blocks of 3: every band and crossings from the ring
    (16, 16, ALL_FEATURES, "trained"),  # one block per window, of two groups of 8 samples: no ring
    (48, 24, ALL_FEATURES[:8] + ALL_FEATURES[9:], "trained"),  # blocks of 3 groups of 8: no ring, no band3
    (30, 15, ("mean", "min", "crossings", "diff_abs_mean", "last"), "trained"),  # groups of one sample
    (64, 32, ALL_FEATURES, 16),  # crossings in two sub-blocks of each block: groups of 16, no ring
    (64, 32, ALL_FEATURES, 32),  # crossings of each block's mean: one group a block, no ring
    (64, 32, ALL_FEATURES, 64),  # crossings of the window's mean, on the int8 residuals of blocks of 32
    (128, 64, ("mean", "std", "band1", "crossings", "diff_abs_max"), None),  # the default layout, fewer features
    (64, 16, ("min", "max", "last", "band1", "band2", "diff_abs_max"), None),  # no ring at all
]


def block_layout(window, stride, features, cross_block):
    """An ewma pipeline on the camera's first days with this block layout, its int8 program and held-out rows
    with NaN and saturating samples."""
    s, _ = camera()
    trained = cross_block == "trained"
    pipe = Pipeline(make_detector("ewma"), window=window, stride=stride, features=features,
                    crossings_block=None if trained else cross_block, crossings_trained=trained).fit(s.slice(0, 6000))
    prog = quantize_pipeline(pipe, s.slice(0, 6000))
    values = s.values[6000:9000].copy()
    values[100:130, 2] = np.nan  # saturating and NaN samples flow through the aggregates alike
    values[400:420, 3] = 1e30
    return pipe, prog, values


@pytest.mark.parametrize(("window", "stride", "features", "cross_block"), BLOCK_LAYOUTS)
def test_streamed_features_are_bit_exact_for_any_block_layout(window, stride, features, cross_block, tmp_path):
    pipe, prog, values = block_layout(window, stride, features, cross_block)
    src = emit_c(prog)["tinywarden_model.c"]
    block = math.gcd(window, stride)
    coarse = [f for f in features if f.startswith("band") and block % 2 ** int(f[4:])]
    # crossings of the window's mean over blocks of 16 rows or more are counted on int8 residuals (cring), not
    # on the int16 ring
    residuals = "crossings" in features and pipe.crossings_block == window and MIN_CROSSINGS_BLOCK <= block < window
    ring_crossings = ("crossings" in features and pipe.crossings_block is not None
                      and block % pipe.crossings_block != 0 and not residuals)
    assert (re.search(r"\bring\[", src) is not None) == (ring_crossings or bool(coarse))
    assert ("cring[" in src) == residuals
    assert "codes" not in src and "TW_FEATURE_" not in src  # the feature set is compiled in, not dispatched
    assert_bit_exact(prog, build(prog, tmp_path, ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]),
                     values, tmp_path)


@pytest.mark.skipif(bool(missing_tools()), reason="no cross toolchain or QEMU")
@pytest.mark.parametrize(("window", "stride", "features", "cross_block"), BLOCK_LAYOUTS)
def test_thumb1_rolled_loops_are_bit_exact_on_m0plus(window, stride, features, cross_block, tmp_path):
    # On a Thumb-1 core the module takes its rolled loops (block statistics one sample a pass, the Haar pyramid
    # level by level, crossings one row a pass, the fully connected layer one product a pass) and the sample
    # conversion without its inlined fast path, which no host build compiles: the M0+ build, run on the M4
    # board, must print the Python int8 reference's decisions for every block layout
    _, prog, values = block_layout(window, stride, features, cross_block)
    write_c(prog, tmp_path)
    scores, alarms = run_int8(prog, values)
    m0 = run_on_qemu(tmp_path, values, target="cortex-m0plus", timeout=120)
    assert m0.decisions.score.tolist() == scores.tolist()
    assert m0.decisions.anomaly.tolist() == alarms.tolist()


def test_tables_are_named_for_what_they_hold_and_limits_come_from_python():
    _, prog = fitted("dense_ae")
    files = emit_c(prog)
    src, hdr = files["tinywarden_model.c"], files["tinywarden_model.h"]
    assert "tw_op" not in src
    for layer in ("h0", "h1", "h2", "recon"):
        assert f"static const int8_t tw_{layer}_weights[" in src
        # CMSIS-NN style: the layer's offsets, activation and requantization as named parameter structs, held
        # with its shape and tables in one named layer constant (one pointer a call)
        assert f"static const tw_fc_layer_t tw_{layer}_layer = {{" in src
        assert f"tw_fully_connected_s8(&tw_{layer}_layer, " in src
    assert "tw_fc_params_t fc_params;" in src and "tw_per_channel_quant_params_t quant_params;" in src  # unpacked
    assert f"#define TW_MAX_WINDOW {MAX_WINDOW}" in src and f"#define TW_MAX_PERSIST_N {MAX_PERSIST_N}" in src
    # no bare copy of a Python limit in the module template: each is a named #define
    tmpl = (Path(emit_c.__code__.co_filename).parent / "templates" / "tinywarden_model.c.tmpl").read_text()
    assert not re.search(r"\b(4096|64|32)\b", tmpl.replace("uint64_t", "").replace("int64_t", "")
                         .replace("int32_t", "").replace("UINT64_C", "").replace("INT64_C", ""))
    assert re.search(r"#define TW_STATE_BYTES \d+\n", hdr) and "size_t tw_scratch_bytes(void);" in hdr


def test_state_bytes_is_checked_by_a_static_assertion(tmp_path):
    _, prog = fitted("ewma")
    files = emit_c(prog)
    hdr = re.sub(r"#define TW_STATE_BYTES (\d+)", lambda m: f"#define TW_STATE_BYTES {int(m.group(1)) + 8}",
                 files["tinywarden_model.h"])
    (tmp_path / "tinywarden_model.h").write_text(hdr)
    (tmp_path / "tinywarden_model.c").write_text(files["tinywarden_model.c"])
    res = subprocess.run(["gcc", *FLAGS, "-c", str(tmp_path / "tinywarden_model.c"), "-o", str(tmp_path / "m.o")],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "tw_state_bytes_check" in res.stderr


def test_fully_connected_kernel_sums_are_folded_when_the_c_is_generated():
    # CMSIS-NN's kernel sum: the C loop multiplies the raw int8 inputs, the input offset is in the table
    from tinywarden.kernels.fully_connected_s8 import kernel_sum

    _, prog = fitted("dense_ae")
    src = emit_c(prog)["tinywarden_model.c"]
    layers = [op for op in prog.ops if op.kind == "fully_connected_s8"]
    assert layers and "input_offset);" not in src
    x = np.random.default_rng(0).integers(-128, 128, (50, prog.tensor(layers[0].src[0]).size))
    for op in layers:
        assert f"tw_{op.dst}_kernel_sum" in src and f"tw_{op.dst}_bias" not in src
        w = op.consts["weights"].astype(np.int64)
        xs = x[:, : w.shape[1]]
        folded = xs @ w.T + kernel_sum(op)["kernel_sum"].astype(np.int64)
        assert np.array_equal(folded, (xs + op.attrs["input_offset"]) @ w.T + op.consts["bias"].astype(np.int64))
    big = layers[0]
    edited = dataclasses.replace(big, consts={**big.consts, "bias": np.full_like(big.consts["bias"], 2**31 - 1)})
    with pytest.raises(ConfigError, match="may overflow the int32 accumulator"):  # the program's validation
        emit_c(dataclasses.replace(prog, ops=tuple(edited if op is big else op for op in prog.ops)))
    with pytest.raises(ConfigError, match="may overflow int32"):  # the generator's own guard, for an unvalidated op
        kernel_sum(edited)


def test_scratch_tensors_share_members_once_no_later_op_reads_them(tmp_path):
    # conv_ae: h0 is last read by the h1 layer, h1 by the h2 layer; h2 and recon move into their members (the
    # member grows to the larger tensor), the input (read by the score) and the score keep their own
    _, prog = fitted("conv_ae")
    home = scratch_homes(prog)
    assert home["h2"] == "h0" and home["recon"] == "h1" and home["input"] == "input" and home["score"] == "score"
    # a tensor read after the window (the baseline adaptation's input) keeps its member: nothing moves into it
    kept = scratch_homes(prog, keep=["h0"])
    assert kept["h0"] == "h0" and "h0" not in {kept[t] for t in kept if t != "h0"} and kept["recon"] == "h1"
    hdr = emit_c(prog)["tinywarden_model.h"]
    assert "t_h2[" not in hdr and "t_recon[" not in hdr
    assert re.search(rf"int8_t t_h1\[{prog.tensor('recon').size}\];", hdr)
    scratch = int(re.search(r"#define TW_SCRATCH_BYTES (\d+)", hdr).group(1))
    assert scratch < sum(t.size * np.dtype(t.dtype).itemsize for t in prog.tensors)
    assert_bit_exact(prog, build(prog, tmp_path, ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]),
                     camera()[0].values[6000:7000], tmp_path)


def test_window_features_are_requantized_as_combined_unless_the_adaptation_reads_them(tmp_path):
    # issue 16: the int64 window features took 8 B per feature of state (528 B on the default pipeline) only to
    # be requantized once; the stream kernel now requantizes each channel's features as it combines them
    from tinywarden.adapt import Adaptation
    from tinywarden.codegen.c import fused_requant

    _, prog = fitted("dense_ae")
    assert fused_requant(prog) == {0} and prog.ops[1].kind == "requantize_s64_s8"
    hdr = emit_c(prog)["tinywarden_model.h"]
    assert "t_features[" not in hdr and "int64_t t_" not in hdr
    # the baseline adaptation reads the features twice a window (its forward, its update after the likelihood): it
    # computes them a channel at a time each time (issue 14: 792 B of int64 scratch on a 9-channel default), and only
    # keep_features (the host library's incident summary) keeps them in the state
    adapting = emit_c(prog, adaptation=Adaptation())
    assert "t_features[" not in adapting["tinywarden_model.h"]
    assert "tw_features_finish(s, *c, f);" in adapting["tinywarden_model.c"]
    kept = emit_c(prog, adaptation=Adaptation(), keep_features=True)["tinywarden_model.h"]
    assert re.search(rf"int64_t t_features\[{prog.tensor('features').size}\];", kept)
    state = [int(re.search(r"#define TW_STATE_BYTES (\d+)", h).group(1))
             for h in (hdr, adapting["tinywarden_model.h"], kept)]
    assert state[1] + 8 * prog.tensor("features").size <= state[2] and state[0] < state[1]
    assert_bit_exact(prog, build(prog, tmp_path, ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]),
                     camera()[0].values[6000:7500], tmp_path)


@pytest.mark.parametrize("detector", ["gaussian", "pca"])
def test_a_projected_input_goes_from_the_feature_stream_into_the_projections_unstored(detector, tmp_path):
    # the default family's module was 24 B over issue 16's 1,536 B of RAM: its int16 input (132 B) was stored
    # only to be read by the projections; the stream now hands each channel's requantized features straight on
    from tinywarden.codegen.c import fused_requant, projected_in_stream

    _, prog = fitted(detector)
    assert prog.ops[2].kind == "pca_residual_s16" and projected_in_stream(prog, fused_requant(prog)) == {0}
    files = {keep: emit_c(prog, keep_features=keep) for keep in (False, True)}
    hdr, src = files[False]["tinywarden_model.h"], files[False]["tinywarden_model.c"]
    assert "t_input[" not in hdr and "#define TW_PCA_IN_STREAM 1" in src and "tw_pca_residual_s16(s->" not in src
    # with the features kept (the host library's form) the input is stored and read by the whole-input kernel
    kept_hdr, kept_src = files[True]["tinywarden_model.h"], files[True]["tinywarden_model.c"]
    assert re.search(rf"int16_t t_input\[{prog.tensor('input').size}\];", kept_hdr)
    assert "#define TW_PCA_IN_STREAM 0" in kept_src and "tw_pca_residual_s16(s->t_input" in kept_src
    state = [int(re.search(r"#define TW_STATE_BYTES (\d+)", h).group(1)) for h in (hdr, kept_hdr)]
    assert state[0] + 2 * prog.tensor("input").size <= state[1]
    values = camera()[0].values[6000:7500]
    sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    assert_bit_exact(prog, build(prog, tmp_path / "projected", sanitize), values, tmp_path)
    kept = tmp_path / "kept"
    kept.mkdir()
    for name, text in files[True].items():
        (kept / name).write_text(text)
    exe = kept / "harness"
    subprocess.run(["gcc", *FLAGS, *sanitize, "-I", str(kept), str(kept / "tinywarden_model.c"), str(HARNESS),
                    "-o", str(exe)], check=True, capture_output=True, text=True)
    assert_bit_exact(prog, exe, values, tmp_path)


def test_window_256_with_default_features_fits_4_kb_and_stays_bit_exact(tmp_path):
    # issue 16: window 256 (default stride 64, default features, crossings of the window's mean: on int8
    # residuals of the samples since, 1,536 B instead of the raw ring's 3,072) fits 4 KB of state: 4,616 B before
    # the blocks kept their wide sums in 5 bytes and the reconstruction went straight into its score
    s, train = camera()
    pipe = Pipeline(make_detector("dense_ae", epochs=2), window=256).fit(train)
    prog = quantize_pipeline(pipe, train)
    assert (pipe.window, pipe.stride) == (256, 64)
    hdr = emit_c(prog)["tinywarden_model.h"]
    assert int(re.search(r"#define TW_STATE_BYTES (\d+)", hdr).group(1)) <= 4096
    last = len(prog.ops) - 2
    assert f"t_{prog.ops[last].dst}[" not in hdr  # the reconstruction is never stored

    from tinywarden.codegen.c import scored_as_computed

    assert scored_as_computed(prog) == {last} and prog.ops[-1].kind == "sum_sq_diff_s8"
    assert_bit_exact(prog, build(prog, tmp_path, ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]),
                     s.values[6000:9000], tmp_path)


def test_c_integer_square_root_is_exact_over_its_range(tmp_path):
    # tw_isqrt_u64 (std and rms of every window, knn's distances) takes 32-bit steps over its whole range [0, 2^60),
    # skipping leading zero words and bytes: it must equal floor(sqrt(x)) at every skip's edges, at perfect squares
    # and their neighbours, up to the range's end
    import math

    from tinywarden.arith import C_HELPERS, ISQRT_LIMIT

    xs = sorted({v for e in range(61) for b in (1 << e, math.isqrt(1 << e) ** 2) for v in (b - 1, b, b + 1)
                 if 0 <= v < ISQRT_LIMIT} | {ISQRT_LIMIT - 1, ((1 << 30) - 1) ** 2, ((1 << 30) - 1) ** 2 - 1,
                                             123456789012345})
    src = tmp_path / "isqrt.c"
    src.write_text("#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n" + C_HELPERS["isqrt"]
                   + "int main(int argc, char **argv)\n{\n    int i;\n    for (i = 1; i < argc; i++) {\n"
                   "        printf(\"%llu\\n\", (unsigned long long)tw_isqrt_u64(strtoull(argv[i], NULL, 10)));\n"
                   "    }\n    return 0;\n}\n")
    exe = tmp_path / "isqrt"
    subprocess.run(["gcc", *FLAGS, "-fsanitize=undefined", "-fno-sanitize-recover=all", str(src), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe), *map(str, xs)], check=True, capture_output=True, text=True).stdout.split()
    assert [int(v) for v in out] == [math.isqrt(x) for x in xs]


def test_default_pipeline_counting_crossings_of_the_trained_mean_keeps_no_samples(tmp_path):
    # issue 16: with crossings of the trained mean every default feature is folded as the samples arrive: no raw
    # ring (1,536 B on the default pipeline), only a group of 8 samples waiting for the Haar pyramid; the state
    # is within 1,536 B and the C still equals the Python reference, sample for sample
    s, train = camera()
    pipe = Pipeline(make_detector("dense_ae", epochs=2), crossings_trained=True).fit(train)
    prog = quantize_pipeline(pipe, train)
    src, hdr = (emit_c(prog)[k] for k in ("tinywarden_model.c", "tinywarden_model.h"))
    assert "ring[" not in src and "int16_t fbuf[8][6];" in hdr
    assert int(re.search(r"#define TW_STATE_BYTES (\d+)", hdr).group(1)) <= 1536
    assert_bit_exact(prog, build(prog, tmp_path, ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]),
                     s.values[6000:9000], tmp_path)


def test_tables_are_narrowed_only_where_the_values_fit_and_both_forms_are_bit_exact(tmp_path):
    """The generator stores a feature requantization's tables as two words a feature (TW_REQUANT_PACKED), else its
    offsets (tw_offset_t) as int16 and each feature's pre-shift and shift in one byte (tw_shifts_t), the indexed-only
    tables and the shapes as int16, the persistence history as a uint32 and the
    persistence rule as a table of bits when they fit; a program whose offsets, shifts or persistence do not fit gets
    the wide forms, and both run bit-exact with the Python reference (tw_push and tw_push_q)."""
    _, prog = fitted("ewma")
    s, _ = camera()
    values = s.values[:4000]
    narrow = emit_c(prog)["tinywarden_model.c"]
    assert "typedef int16_t tw_offset_t;" in narrow and "typedef int16_t tw_dim_t;" in narrow
    assert "static const int16_t tw_sample_zero[" in narrow
    assert "uint32_t history;" in emit_c(prog)["tinywarden_model.h"]
    assert "typedef uint8_t tw_shifts_t;" in narrow and "#define TW_SHIFT_BITS 4\n" in narrow
    # ewma's offsets leave 12 bits and its shifts span more than 4 values: not two words a feature (dense_ae's are,
    # test_fc_multiplier_and_shift_share_a_word...)
    assert "#define TW_REQUANT_PACKED 0\n" in narrow
    assert "TW_PERSIST_TABLE" in narrow and "tw_popcount" not in narrow
    i = next(j for j, op in enumerate(prog.ops) if op.kind.startswith("requantize_s64_"))
    rq = prog.ops[i]
    offsets = np.asarray(rq.consts["offset"]).astype(np.int32).copy()
    offsets[0] = 40000  # beyond int16: every offset of the module is int32 then
    pre = np.asarray(rq.consts["pre_shift"]).copy()
    shift = np.asarray(rq.consts["shift"]).copy()
    pre[1], shift[2] = 40, -20  # beyond 4 bits each: 16-bit shift entries, 6 bits each
    wide_rq = dataclasses.replace(rq, consts={**rq.consts, "offset": offsets, "pre_shift": pre, "shift": shift})
    wide = dataclasses.replace(prog, ops=(*prog.ops[:i], wide_rq, *prog.ops[i + 1:]), n=40, k=2).validate()
    files = emit_c(wide)
    assert "typedef int32_t tw_offset_t;" in files["tinywarden_model.c"]
    assert "uint64_t history;" in files["tinywarden_model.h"]
    assert "typedef uint16_t tw_shifts_t;" in files["tinywarden_model.c"]
    assert "#define TW_REQUANT_PACKED 0\n" in files["tinywarden_model.c"]
    assert "#define TW_SHIFT_BITS 6\n" in files["tinywarden_model.c"] and "tw_popcount" in files["tinywarden_model.c"]
    for p, sub in ((prog, "narrow"), (wide, "wide")):
        (tmp_path / sub).mkdir()
        assert_bit_exact(p, build(p, tmp_path / sub), values, tmp_path / sub)


def test_fc_multiplier_and_shift_share_a_word_only_when_they_fit_and_both_forms_are_bit_exact(tmp_path):
    """A fully connected layer's per-channel multiplier (in [2^30, 2^31)) and shift (at most 4 values a layer) are one
    uint32 (TW_FC_PACKED), as are the features' requantization's (TW_REQUANT_PACKED, with the offset and pre-shift in
    one int16); a zero multiplier or a wider spread of shifts in any layer gives the separate tables, and both run
    bit-exact with the Python reference."""
    from tinywarden.kernels.fully_connected_s8 import MULT_BITS, packed_requant, packs_requant

    _, prog = fitted("dense_ae")
    s, _ = camera()
    values = s.values[:4000]
    packed = emit_c(prog)["tinywarden_model.c"]
    assert "#define TW_FC_PACKED 1\n" in packed and f"#define TW_MULT_BITS {MULT_BITS}\n" in packed
    assert "static const uint32_t tw_h0_requant[" in packed and "tw_h0_multiplier" not in packed
    # the features' requantization too: multipliers in [2^30, 2^31), shifts within 4 values, pre-shifts below 16,
    # offsets within 12 bits: two words a feature (the unpacked form: the narrowed test's ewma)
    assert "#define TW_REQUANT_PACKED 1\n" in packed and "static const int16_t tw_input_offsets[" in packed
    assert "tw_input_multiplier" not in packed
    i = next(j for j, op in enumerate(prog.ops) if op.kind == "fully_connected_s8")
    fc = prog.ops[i]
    words, base = packed_requant(fc)
    m, sh = np.asarray(fc.consts["multiplier"]), np.asarray(fc.consts["shift"])
    assert ((words & ((1 << MULT_BITS) - 1)) + (1 << MULT_BITS)).tolist() == m.tolist()
    assert ((words >> MULT_BITS).astype(np.int64) + base).tolist() == sh.tolist()
    for edit in ("zero", "spread"):
        m2, sh2 = m.copy(), sh.copy()
        if edit == "zero":
            m2[0], sh2[0] = 0, 0  # quantize_multiplier's form of a multiplier below 2^-31
        else:
            sh2[0] = int(sh.min()) - 4
        op = dataclasses.replace(fc, consts={**fc.consts, "multiplier": m2, "shift": sh2})
        assert not packs_requant(op)
        wide = dataclasses.replace(prog, ops=(*prog.ops[:i], op, *prog.ops[i + 1:])).validate()
        src = emit_c(wide)["tinywarden_model.c"]
        assert "#define TW_FC_PACKED 0\n" in src and "tw_h0_requant" not in src
        (tmp_path / edit).mkdir()
        assert_bit_exact(wide, build(wide, tmp_path / edit), values, tmp_path / edit)
    (tmp_path / "packed").mkdir()
    assert_bit_exact(prog, build(prog, tmp_path / "packed"), values, tmp_path / "packed")


def test_crossings_residuals_of_a_block_swinging_beyond_int8_are_shifted_alike_in_c(tmp_path, monkeypatch):
    # issue 16: a quiet channel that bursts 8 to 12 of its deviations (about 256 to 384 int16 steps) above a block's
    # first sample, its window's mean beyond int8 too: saturated residuals (sat8(q - first), the old definition)
    # lost that block's crossings; the block's shift keeps them. The host C (-Werror), the Cortex-M4 build (SIMD32
    # crossings) and the M0+ build (Thumb-1) must take the rare path of the fold (tw_cring_shift) exactly as the
    # Python reference does
    from tinywarden.kernels import features_s16 as fs

    pipe, prog, values = block_layout(128, 64, ("mean", "std", "band1", "crossings", "diff_abs_max"), None)
    mu, sd = np.nanmean(values[:, 1]), np.nanstd(values[:, 1])
    values[1000:1100, 1] = mu + sd * np.where(np.arange(100) % 2 == 0, 8.0, 12.0)
    scores, _ = run_int8(prog, values)
    q = quantize_samples(prog, values)
    wins = np.lib.stride_tricks.sliding_window_view(q, 128, axis=0)[::64].transpose(0, 2, 1).astype(np.int64)
    assert fs.ring_residuals(wins, 64)[2].max() >= 1  # some block is shifted

    def saturated(x, rows):  # the old definition: int8 residuals clipped, never shifted
        n, w, c = x.shape
        b = x.reshape(n, w // rows, rows, c)
        return np.clip(b - b[:, :, :1, :], -128, 127), b[:, :, :1, :], np.zeros_like(b[:, :, :1, :])

    with monkeypatch.context() as m:
        m.setattr(fs, "ring_residuals", saturated)
        old, _ = run_int8(prog, values)
    assert old.tolist() != scores.tolist()  # the shift changes these scores: the comparisons below can tell
    assert_bit_exact(prog, build(prog, tmp_path), values, tmp_path)
    if not missing_tools():
        for target in ("cortex-m4", "cortex-m0plus"):
            got = run_on_qemu(tmp_path, values, target=target, timeout=120).decisions
            assert got.score.tolist() == scores.tolist(), target


@pytest.mark.parametrize("keep_features", [False, True])
def test_pca_projections_beyond_their_limit_are_clamped_alike_in_c(keep_features, tmp_path):
    # The Python reference clamps each projection at +-PCA_R_LIMIT (2^20); the C did not. A program whose axes' shifts
    # are valid but large (a hand-made or hostile model file) took r_j to 2^31: the two disagreed and the C's
    # int64 sums of r_j^2 overflowed. Both forms of the kernel (projected in the stream, and whole-input) run.
    _, prog = fitted("gaussian")
    op = prog.ops[2]
    assert op.kind == "pca_residual_s16"
    big = dataclasses.replace(op, consts={**op.consts, "shift": np.full_like(op.consts["shift"], 20)})
    prog = dataclasses.replace(prog, ops=[*prog.ops[:2], big, *prog.ops[3:]])
    values = camera()[0].values[6000:7500]
    out = tmp_path / "c"
    out.mkdir()
    for name, text in emit_c(prog, keep_features=keep_features).items():
        (out / name).write_text(text)
    exe = out / "harness"
    subprocess.run(["gcc", *FLAGS, "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-I", str(out),
                    str(out / "tinywarden_model.c"), str(HARNESS), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    assert_bit_exact(prog, exe, values, tmp_path)


HOSTILE_NAMES = [
    "cpu */ int tw_injected(void) { return 42; } /* x",  # closes the header's comment, then code
    "cpu *\\\n/ int tw_injected(void) { return 42; } /* x",  # the same through a backslash-newline splice
    "cpu\n#define tw_push tw_injected_push\n",  # a directive of its own line (the comment spans it: no effect)
    "/* nested",  # -Wcomment under -Werror: a module that no longer builds
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=["close", "splice", "directive", "nested"])
def test_names_from_the_model_file_stay_inside_their_c_comment(name, tmp_path):
    """A channel, feature or detector name is the model file's text (a channel name is a CSV header): it was
    pasted into the header's comment as it was, so ``*/`` closed it and whatever followed became C in every
    build, the gateway's own native runtime included (it compiles the signed model's C and loads it into the
    agent). Now each is written so that it cannot leave the comment."""
    _, prog = fitted("gaussian")
    hostile = dataclasses.replace(prog, channels=(name, *prog.channels[1:]),
                                  info={**prog.info, "detector": name, "features": [*prog.info["features"], name]})
    files = emit_c(hostile)
    for text in files.values():
        code = re.sub(r"/\*.*?\*/", " ", text.replace("\\\n", ""), flags=re.S)
        assert "tw_injected" not in code and "/*" not in code and "*/" not in code
    write_c(hostile, tmp_path)
    obj = tmp_path / "m.o"
    subprocess.run(["gcc", *FLAGS, "-c", str(tmp_path / "tinywarden_model.c"), "-o", str(obj)], check=True,
                   capture_output=True, text=True)
    symbols = subprocess.run(["nm", str(obj)], check=True, capture_output=True, text=True).stdout
    assert "tw_injected" not in symbols and " T tw_push" in symbols
