"""Integer paths of the newer detector families: kernel relations the parametrised bit-exact C and
int8-vs-float tests (tests/test_codegen_c.py, tests/test_quantize_ptq.py) do not already pin down."""

import copy
import dataclasses
import shutil

import numpy as np
import pytest

from int8_fixtures import INT8_FAMILIES, camera, fitted, shared_entity
from tinywarden.arith import isqrt_u64
from tinywarden.codegen.c import emit_c
from tinywarden.program import KERNELS, Op, from_model_file, quantize_samples, to_model_file

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="no host gcc to compile the generated C")


def model_input(prog, n_windows=40):
    """The int16 model input tensor of the first windows of the camera series (all ops but the score)."""
    s, _ = camera()
    w, c = prog.window, prog.n_channels
    env = {"window": quantize_samples(prog, s.values[: n_windows * w]).reshape(n_windows, w, c)}
    for op in prog.ops[:-1]:
        env[op.dst] = KERNELS[op.kind].fn([env[x] for x in op.src], op)
    return env[prog.ops[-1].src[0]]


def with_last_op(prog, **attrs):
    last = prog.ops[-1]
    op = Op(last.kind, last.src, last.dst, {**last.attrs, **attrs}, last.consts)
    return dataclasses.replace(prog, ops=(*prog.ops[:-1], op))


# -- knn -------------------------------------------------------------------------------------------
def test_knn_with_k1_is_the_root_of_the_nearest_squared_distance():
    _, prog = fitted("knn")
    x = model_input(prog)
    last = prog.ops[-1]
    knn1 = KERNELS["knn_dist_s16"].fn([x], Op("knn_dist_s16", last.src, last.dst, {"k": 1, "shift": 0}, last.consts))
    nearest = KERNELS["min_sq_dist_s16"].fn(
        [x], Op("min_sq_dist_s16", last.src, last.dst, {"shift": 0}, {"centroids": last.consts["prototypes"]}))
    assert np.array_equal(knn1[:, 0], isqrt_u64(nearest[:, 0]))
    # more neighbours never lower the sum of distances
    k3 = KERNELS["knn_dist_s16"].fn([x], Op("knn_dist_s16", last.src, last.dst, {"k": 3, "shift": 0}, last.consts))
    assert (k3[:, 0] >= knn1[:, 0]).all() and (k3[:, 0] > knn1[:, 0]).any()


@needs_gcc
def test_knn_k_beyond_the_prototypes_is_clamped_alike_in_c(tmp_path):
    from test_codegen_c import assert_bit_exact, build

    _, prog = fitted("knn")
    n_protos = len(prog.ops[-1].consts["prototypes"])
    big = with_last_op(prog, k=1000)
    x = model_input(prog)
    assert np.array_equal(KERNELS["knn_dist_s16"].fn([x], big.ops[-1]),
                          KERNELS["knn_dist_s16"].fn([x], with_last_op(prog, k=n_protos).ops[-1]))
    s, _ = camera()
    assert_bit_exact(big, build(big, tmp_path), s.values[:6000], tmp_path)


# -- bounds ----------------------------------------------------------------------------------------
def test_bounds_integer_violation_tracks_the_float_one():
    pipe, prog = fitted("bounds")
    s, _ = camera()
    w = prog.window
    raw = s.values[: 150 * w].reshape(150, w, -1)
    q = quantize_samples(prog, raw.reshape(-1, prog.n_channels)).reshape(raw.shape)
    got = KERNELS["bounds_violation_s16"].fn([q], prog.ops[-1])[:, 0] * prog.info["score_unit"]
    want = pipe.detector.score_samples(pipe.scale_inputs(raw))
    c = prog.ops[-1].consts
    # one int16 step of a sample and half a step of rounding on each bound, relative to the smallest
    # width or step limit, plus one unit of the integer violation
    tol = 2.0 / min(float((c["hi"] - c["lo"]).min()), float(c["rate"].min())) + prog.info["score_unit"]
    assert np.abs(got - want).max() <= tol
    assert (want < -tol).any() and (want > tol).any()  # both inside and beyond the bounds


@needs_gcc
def test_bounds_negative_scores_shift_by_floor_alike_in_c(tmp_path):
    from test_codegen_c import assert_bit_exact, build

    _, prog = fitted("bounds")
    shifted = with_last_op(prog, shift=3)
    s, _ = camera()
    values = s.values[:8000]
    from tinywarden.program import run_int8

    scores, _ = run_int8(shifted, values)
    assert (scores < 0).any() and (scores % 2 == 1).any()  # odd negatives: floor and truncation differ
    assert_bit_exact(shifted, build(shifted, tmp_path), values, tmp_path)


# -- iforest ---------------------------------------------------------------------------------------
def test_iforest_kernel_walks_the_detectors_own_trees():
    from tinywarden.detectors.iforest import quantize_features

    pipe, prog = fitted("iforest")
    s, _ = camera()
    _, feats = pipe._raw_inputs(s.values[:20000])
    scaled = pipe.scale_inputs(feats)
    got = KERNELS["iforest_path_s16"].fn([quantize_features(scaled)], prog.ops[-1])[:, 0]
    n_trees = len(pipe.detector.tree_start_)
    assert np.array_equal(got, n_trees * 32767 - pipe.detector.path_length_sum(scaled))
    # the stored trees are the packed model itself: 4 bytes a node and 2 a tree, nothing widened
    tree_bytes = sum(a.nbytes for a in prog.ops[-1].consts.values())
    assert tree_bytes == pipe.detector.packed_bytes_


def test_iforest_of_a_few_channels_keeps_uint8_feature_indices():
    pipe, prog = fitted("iforest")
    last = prog.ops[-1]
    assert last.kind == "iforest_path_s16" and last.consts["feature"].dtype == np.uint8
    assert pipe.detector.packed_bytes_ == 4 * len(last.consts["feature"]) + 2 * len(last.consts["tree_start"])
    assert "const uint8_t *feature" in emit_c(prog)["tinywarden_model.c"]


@needs_gcc
def test_iforest_beyond_256_inputs_indexes_them_in_uint16_bit_exact_in_c(tmp_path):
    """SMD's 38 channels x 11 features (418 inputs): the fit used to refuse them (uint8 indices)."""
    from test_codegen_c import assert_bit_exact, build

    prog, values = shared_entity("smd", "iforest")
    last = prog.ops[-1]
    n_in = prog.tensor(last.src[0]).size
    assert n_in > 256 and last.kind == "iforest_path_wide_s16" and last.consts["feature"].dtype == np.uint16
    inner = last.consts["left"] != 0
    assert int(last.consts["feature"][inner].max()) > 255  # the trees do test inputs beyond uint8's reach
    assert "const uint16_t *feature" in emit_c(prog)["tinywarden_model.c"]
    header, arrays = to_model_file(prog)  # the model file keeps the kind and the uint16 indices
    back = from_model_file(header, arrays)
    assert back.ops[-1].consts["feature"].dtype == np.uint16 and back.model_id == prog.model_id
    assert_bit_exact(prog, build(prog, tmp_path, ("-Wconversion", "-Wmissing-prototypes")), values, tmp_path)


def test_iforest_malformed_trees_are_refused_before_the_c_walk():
    from tinywarden.errors import ConfigError
    from tinywarden.quantize import quantize_pipeline

    pipe, _ = fitted("iforest")
    _, train = camera()
    det = pipe.detector
    saved = det.left_.copy()
    inner = int(np.flatnonzero(saved[1 : det.tree_start_[1]])[0]) + 1  # an internal node below the root
    try:
        det.left_[inner] = inner  # a node that is its own child would loop forever in the C walk
        with pytest.raises(ConfigError, match="tree 0 is malformed"):
            quantize_pipeline(pipe, train)
    finally:
        det.left_[:] = saved


# -- ar --------------------------------------------------------------------------------------------
def test_ar_integer_z_tracks_the_float_score():
    pipe, prog = fitted("ar")
    s, _ = camera()
    w = prog.window
    raw = s.values[: 150 * w].reshape(150, w, -1)
    q = quantize_samples(prog, raw.reshape(-1, prog.n_channels)).reshape(raw.shape)
    got = KERNELS["ar_residual_s16"].fn([q], prog.ops[-1])[:, 0] * prog.info["z_scale"]
    want = pipe.detector.score_samples(pipe.scale_inputs(raw))
    # int16 samples resolve a fraction of each channel's residual MAD; the bias and coefficients are Q20
    assert np.all(np.abs(got - want) <= 0.02 * want + 0.05), np.abs(got - want).max()


@needs_gcc
def test_ar_rms_with_a_short_horizon_is_bit_exact_in_c(tmp_path):
    from test_codegen_c import assert_bit_exact, build
    from tinywarden.detectors import make_detector
    from tinywarden.pipeline import Pipeline
    from tinywarden.quantize import quantize_pipeline

    s, train = camera()
    pipe = Pipeline(make_detector("ar", order=5, horizon=24, aggregate="rms"), window=64, stride=16).fit(train)
    prog = quantize_pipeline(pipe, train)
    assert prog.ops[-1].attrs["aggregate"] == 1 and prog.ops[-1].attrs["horizon"] == 24
    from tinywarden.program import run_int8

    scores, _ = run_int8(prog, s.values)
    test = np.arange(len(scores)) * 16 + 63 >= len(train)
    ranks_f = pipe.score(s).scores[test]
    # sum of squared z is monotone in the float rms, up to rounding: the two rankings nearly agree
    assert np.corrcoef(np.argsort(np.argsort(ranks_f)), np.argsort(np.argsort(scores[test])))[0, 1] > 0.99
    assert_bit_exact(prog, build(prog, tmp_path), s.values[:12000], tmp_path)


# -- gaussian --------------------------------------------------------------------------------------
def test_gaussian_default_program_costs_about_what_pca_costs():
    # one whitening matrix of k rows, as PCA's k axes: the full covariance (64 rows of 66 features and their
    # 64 x 64 correction) took four times PCA's constants on the camera
    g_pipe, gaussian = fitted("gaussian")
    _, pca = fitted("pca")
    assert g_pipe.detector.n_components is not None
    assert gaussian.const_bytes <= 1.5 * pca.const_bytes, (gaussian.const_bytes, pca.const_bytes)
    assert gaussian.ops[-1].kind == pca.ops[-1].kind == "pca_residual_s16"


# -- ocsvm -----------------------------------------------------------------------------------------
def ranks(v):
    return np.argsort(np.argsort(v, kind="stable"), kind="stable")


def test_ocsvm_integer_score_ranks_windows_as_the_float_one():
    pipe, prog = fitted("ocsvm")
    s, _ = camera()
    x = model_input(prog, n_windows=150)
    got = KERNELS["rbf_kernel_sum_s16"].fn([x], prog.ops[-1])[:, 0]
    _, feats = pipe._raw_inputs(s.values[: 150 * prog.window])
    want = pipe.detector.score_samples(pipe.scale_inputs(feats))[:: prog.window // prog.stride]
    assert len(want) == len(got)
    # 0.993 with saturated crossings residuals, 0.989 in block floating point (a block that swings beyond int8 of its
    # first sample counts its crossings on coarser steps, the float counts them exactly); the simulator's int8 window
    # ROC AUC of ocsvm is 0.953 and 0.954 (benchmarks/results/mcu.md), so the bound is 0.985
    assert np.corrcoef(ranks(got), ranks(want))[0, 1] > 0.985
    # a window on a support vector adds nothing for it; the table's first entry is 2**0 in Q15
    # the int8 support vectors are in steps of 2**sv_shift input steps
    sv = prog.ops[-1].consts["support_vectors"].astype(np.int16) << prog.ops[-1].attrs["sv_shift"]
    on = KERNELS["rbf_kernel_sum_s16"].fn([sv[:1]], prog.ops[-1])[0, 0]
    far = KERNELS["rbf_kernel_sum_s16"].fn([np.full_like(sv[:1], 32767)], prog.ops[-1])[0, 0]
    farther = KERNELS["rbf_kernel_sum_s16"].fn([np.full_like(sv[:1], -32768)], prog.ops[-1])[0, 0]
    assert prog.ops[-1].consts["exp2"][0] == 32767 and on < far < farther
    # beyond every kernel's last Q15 step the nearest support vector still ranks the windows
    top = (int(prog.ops[-1].consts["alpha"].astype(np.int64).sum()) * 32767 >> 15) >> prog.ops[-1].attrs["shift"]
    assert far > top


def test_ocsvm_support_vectors_are_int8_within_half_a_step_of_the_float_ones():
    from tinywarden.detectors.ocsvm import int8_support_vectors

    pipe, prog = fitted("ocsvm")
    op = prog.ops[-1]
    sv, shift = op.consts["support_vectors"], int(op.attrs["sv_shift"])
    assert sv.dtype == np.int8 and np.abs(sv.astype(np.int64)).max() <= 127
    # the smallest shift that fits: one less would overflow int8
    steps = pipe.detector.support_vectors_ / prog.info["input_scale"]
    assert shift == 0 or np.abs(steps).max() / 2.0 ** (shift - 1) > 127.5
    assert np.abs(sv * 2.0**shift - steps).max() <= 2.0 ** (shift - 1) + 1e-9
    # the shift is chosen from the vectors alone
    again, again_shift = int8_support_vectors(steps)
    assert np.array_equal(again, sv) and again_shift == shift
    # a shift out of the kernel's range is refused before any C is printed
    from tinywarden.errors import ConfigError
    from tinywarden.kernels.rbf_kernel_sum_s16 import RBF_MAX_SV_SHIFT

    with pytest.raises(ConfigError, match="sv_shift"):
        with_last_op(prog, sv_shift=RBF_MAX_SV_SHIFT + 1).validate()


def test_ocsvm_rff_is_refused_with_the_reason():
    from tinywarden.detectors import make_detector
    from tinywarden.errors import ConfigError
    from tinywarden.pipeline import Pipeline
    from tinywarden.quantize import quantize_pipeline

    _, train = camera()
    pipe = Pipeline(make_detector("ocsvm", kernel="rff", n_components=8), window=64, stride=32).fit(train)
    with pytest.raises(ConfigError, match="kernel='rbf'"):
        quantize_pipeline(pipe, train)


# -- gru_ae ----------------------------------------------------------------------------------------
def test_gru_integer_forecast_is_within_one_int8_step_of_the_float_module():
    import torch

    pipe, prog = fitted("gru_ae")
    s, _ = camera()
    w = prog.window
    raw = s.values[: 100 * w].reshape(100, w, -1)
    q = quantize_samples(prog, raw.reshape(-1, prog.n_channels)).reshape(raw.shape)
    x8 = KERNELS["requantize_s16_s8"].fn([q], prog.ops[0])
    recon = KERNELS["gru_s8"].fn([x8], prog.ops[1])
    scale, zp = prog.info["input_scale"], prog.info["input_zero_point"]
    with torch.no_grad():
        inputs = torch.from_numpy(pipe.scale_inputs(raw).astype(np.float32))
        want = pipe.detector.torch_module()(inputs).double().numpy()
    err = np.abs((recon - zp) * scale - want) / scale
    # Q12 gates, Q15 state and the interpolated tanh table add well under the int8 output's rounding
    assert err.max() <= 1.0 and err.mean() <= 0.35, (err.max(), err.mean())
    assert np.array_equal(recon[:, 0], x8[:, 0])  # forecast mode: nothing predicts the first row


@needs_gcc
def test_gru_reconstruct_mode_under_sanitizers_with_hostile_samples(tmp_path):
    from test_codegen_c import assert_bit_exact, build
    from tinywarden.detectors import make_detector
    from tinywarden.pipeline import Pipeline
    from tinywarden.quantize import quantize_pipeline

    s, train = camera()
    det = make_detector("gru_ae", hidden=5, mode="reconstruct", epochs=2, max_steps=60)
    pipe = Pipeline(det, window=32, stride=16).fit(train)
    prog = quantize_pipeline(pipe, train)
    assert prog.ops[1].attrs["forecast"] == 0
    values = s.values[:5000].copy()
    rng = np.random.default_rng(3)
    idx = rng.integers(0, len(values), 150)
    values[idx, rng.integers(0, values.shape[1], 150)] = rng.choice([np.nan, np.inf, -np.inf, 1e30, -1e30], 150)
    exe = build(prog, tmp_path, ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"])
    assert_bit_exact(prog, exe, values, tmp_path)


def test_gru_too_wide_for_the_c_stack_is_refused():
    from tinywarden.detectors import LoweringContext
    from tinywarden.errors import ConfigError

    pipe, _ = fitted("gru_ae")
    big = copy.copy(pipe.detector)  # a shallow copy with a wider recurrent matrix; the fixture stays intact
    big.w_hh_ = np.zeros((3 * 40, 40))
    with pytest.raises(ConfigError, match="hidden <= 32"):
        big.lower(LoweringContext(np.zeros((2, 128, 6)), np.zeros(6), np.ones(6), None, (np.ones(6), np.zeros(6))))


# -- every family ---------------------------------------------------------------------------------
@pytest.mark.parametrize("detector", INT8_FAMILIES)
def test_model_file_round_trip_keeps_the_program(detector, tmp_path):
    from tinywarden.modelfile import load_pipeline, save_pipeline
    from tinywarden.program import run_int8
    from tinywarden.quantize import int8_sections, load_program

    pipe, prog = fitted(detector)
    s, train = camera()
    extra, arrays, note = int8_sections(pipe, train)
    assert prog.model_id in note
    save_pipeline(pipe, tmp_path / "m.twb", extra=extra, extra_arrays=arrays)
    back = load_program(load_pipeline(tmp_path / "m.twb"))
    assert back.model_id == prog.model_id
    assert np.array_equal(run_int8(back, s.values[:4000])[0], run_int8(prog, s.values[:4000])[0])


def _tamper_attr(name, value):
    def tamper(header, arrays):
        header["ops"][-1 if name != "hidden" else 1]["attrs"][name] = value
    return tamper


def _tamper_const(op_index, name, fn):
    def tamper(header, arrays):
        i = op_index % len(header["ops"])
        arrays[f"int8/op{i}/{name}"] = fn(arrays[f"int8/op{i}/{name}"])
    return tamper


@pytest.mark.parametrize(("detector", "tamper", "message"), [
    ("knn", _tamper_const(-1, "prototypes", lambda a: a[:, :-1]), "prototypes must be"),
    ("bounds", _tamper_const(-1, "lo", lambda a: a[:-1]), "one entry per channel"),
    ("bounds", _tamper_attr("shift", 64), "'shift' must be"),
    ("iforest", _tamper_const(-1, "left", lambda a: np.where(np.arange(len(a)) == 1, 1, a).astype(np.uint8)),
     "malformed"),
    ("iforest", _tamper_const(-1, "tree_start", lambda a: a[::-1].copy()), "tree_start must rise"),
    ("ar", _tamper_attr("horizon", 10_000), "'horizon' must be"),
    ("ocsvm", _tamper_const(-1, "exp2", lambda a: a[:-1]), "exp2 must hold"),
    ("gru_ae", _tamper_attr("hidden", 40), "'hidden' must be"),
    ("gru_ae", _tamper_const(1, "tanh", lambda a: a[::-1].copy()), "must not fall"),
])
def test_tampered_programs_are_refused_before_any_c_is_printed(detector, tamper, message):
    """The C kernels have no checks in their loops: a model file whose constants or attributes would take
    them out of their arrays must fail to load, naming the op and the reason."""
    from tinywarden.errors import ModelFileError
    from tinywarden.program import from_model_file, to_model_file

    _, prog = fitted(detector)
    header, arrays = to_model_file(prog)
    if detector == "iforest" and "left" in message:
        assert prog.ops[-1].consts["left"][1] != 0  # node 1 is internal: pointing it at itself loops
    header = copy.deepcopy(header)
    arrays = dict(arrays)
    tamper(header, arrays)
    with pytest.raises(ModelFileError, match=message):
        from_model_file(header, arrays, "m.twb")


@pytest.mark.parametrize("detector", INT8_FAMILIES)
def test_every_program_constant_cut_by_one_or_with_a_stray_shift_is_refused(detector):
    """The stored program's constants are as untrusted as the float state: each one cut by one element along its
    last axis (the kernels' loops would read past it, or numpy would broadcast it) and each requantization shift
    outside [-31, 30] (undefined in the C ``tw_requantize``) must fail to load, naming the op."""
    from tinywarden.errors import ModelFileError
    from tinywarden.program import from_model_file, to_model_file

    _, prog = fitted(detector)
    header, arrays = to_model_file(prog)
    shifts = [n for n in arrays if n.rsplit("/", 1)[-1] in ("shift", "ih_shift", "hh_shift", "out_shift",
                                                            "value_shift", "rate_shift")]
    assert shifts
    for name in arrays:
        if not name.startswith("int8/op") or arrays[name].shape[-1] < 1:
            continue
        cut = {**arrays, name: arrays[name][..., :-1]}
        with pytest.raises(ModelFileError, match=r"^m\.twb: invalid int8 program: program op \d+"):
            from_model_file(header, cut, "m.twb")
    for name in shifts:
        for stray in (-32, 31):
            bad = arrays[name].copy()
            bad.flat[0] = stray
            with pytest.raises(ModelFileError, match="must lie in"):
                from_model_file(header, {**arrays, name: bad}, "m.twb")


# -- ensemble --------------------------------------------------------------------------------------
def far_from_normal():
    """An ensemble fitted on eight channels of noise, and a stream whose channels all step through offsets of 0 to
    24 standard deviations, 20 windows each: from normal to hundreds of times the threshold, short of the int16
    samples' own saturation."""
    from tinywarden.detectors import make_detector
    from tinywarden.pipeline import Pipeline
    from tinywarden.quantize import quantize_pipeline
    from tinywarden.telemetry.series import Series

    rng = np.random.default_rng(3)
    train = Series(np.arange(4000.0), rng.normal(size=(4000, 8)), tuple(f"c{i}" for i in range(8)))
    pipe = Pipeline(make_detector("ensemble", members="pca(n_components=2)+kmeans(n_clusters=3)"), window=16,
                    stride=16, features=("mean", "std", "max")).fit(train)
    offsets = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0])
    values = rng.normal(size=(len(offsets) * 20 * 16, 8)) + np.repeat(offsets, 20 * 16)[:, None]
    return pipe, quantize_pipeline(pipe, train), Series(np.arange(float(len(values))), values, train.channels)


def test_ensemble_int8_score_keeps_ranking_windows_far_outside_normal():
    # the members' score shift kept only their largest normal totals 16 times below the int32 limit: a member
    # with large integer totals saturated a few hundred calibration quantiles out and every farther window fused
    # to one value (here from 12 standard deviations on; SMD machine-3-4, whose test split lies far outside its
    # training range: float ROC AUC 0.974, int8 0.556)
    from tinywarden.program import run_int8

    pipe, prog, stream = far_from_normal()
    got, _ = run_int8(prog, stream.values)
    want = pipe.score(stream).scores
    assert want[-20:].min() > 300 * pipe.threshold_  # the last step is far outside normal
    block_got = np.median(got.reshape(-1, 20), axis=1)
    block_want = np.median(want.reshape(-1, 20), axis=1)
    assert (np.diff(block_want) > 0).all()
    assert (np.diff(block_got) > 0).all(), block_got
    assert got.max() < np.iinfo(np.int32).max
    # int8 and float rank all windows alike, not only the blocks
    assert np.corrcoef(ranks(got), ranks(want))[0, 1] > 0.99


@needs_gcc
def test_ensemble_far_outside_normal_is_bit_exact_in_c(tmp_path):
    from test_codegen_c import assert_bit_exact, build

    _, prog, stream = far_from_normal()
    assert_bit_exact(prog, build(prog, tmp_path), stream.values, tmp_path)
