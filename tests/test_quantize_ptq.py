"""Post-training quantization: int8 keeps detection quality, the integer threshold is calibrated, and the
CLI stores, scores and exports the int8 program."""

import csv

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from inprocess import run_tinywarden as cli
from int8_fixtures import INT8_FAMILIES, TRAIN_DAYS, camera, fitted
from tinywarden.detectors import make_detector
from tinywarden.errors import ConfigError, ModelFileError
from tinywarden.modelfile import load_pipeline, save_pipeline
from tinywarden.pipeline import Pipeline
from tinywarden.program import run_int8
from tinywarden.quantize import compare_int8, int8_sections, load_program, quantize_pipeline
from tinywarden.quantize.ptq import normal_windows
from tinywarden.target import missing_tools, module_size


def held_out_auc(pipe, prog):
    s, train = camera()
    sc = pipe.score(s)
    qs, _ = run_int8(prog, s.values)
    c = np.concatenate(([0], np.cumsum(s.labels.astype(np.int64))))
    lab = (c[sc.end_rows + 1] - c[sc.end_rows + 1 - pipe.window]) > 0
    test = sc.end_rows >= len(train)
    return roc_auc_score(lab[test], sc.scores[test]), roc_auc_score(lab[test], qs[test])


@pytest.mark.parametrize("detector", INT8_FAMILIES)
def test_int8_auc_within_001_of_float(detector):
    pipe, prog = fitted(detector)
    auc_f, auc_q = held_out_auc(pipe, prog)
    assert auc_f > 0.6  # the comparison means something: the float model detects the attacks
    assert abs(auc_q - auc_f) <= 0.01, (auc_f, auc_q)


@pytest.mark.parametrize("detector", ["dense_ae", "kmeans"])
def test_integer_threshold_calibrated_on_held_out_windows(detector):
    pipe, prog = fitted(detector)
    _, train = camera()
    from tinywarden.program import quantize_samples, run_windows

    _, cal = normal_windows(pipe, train)
    n, w, ch = cal.shape
    scores = run_windows(prog, quantize_samples(prog, cal.reshape(-1, ch)).reshape(n, w, ch))
    assert np.mean(scores > prog.threshold) <= pipe.target_fpr
    assert np.mean(scores >= prog.threshold) > 0  # the threshold is one of the held-out scores, not above all


def test_a_threshold_past_the_int32_scores_is_kept_where_a_saturated_score_still_crosses_it(monkeypatch):
    # a tail fit may extrapolate past 2**31 - 1; the program's threshold is an int32 the C compares scores with
    from tinywarden.arith import INT32_MAX
    from tinywarden.codegen.c import emit_c
    from tinywarden.quantize import ptq

    pipe, _ = fitted("kmeans")
    _, train = camera()
    monkeypatch.setattr(ptq, "threshold_at_fpr", lambda *_a: 1e12)
    prog = quantize_pipeline(pipe, train)
    assert prog.threshold == INT32_MAX - 1
    assert str(INT32_MAX - 1) in str(emit_c(prog))


def test_int8_is_smaller_for_the_autoencoder():
    pipe, prog = fitted("dense_ae")
    weights = sum(op.consts["weights"].nbytes for op in prog.ops if "weights" in op.consts)
    float_weights = 4 * sum(w.size for w, _ in pipe.detector.layers())
    assert weights * 4 == float_weights
    assert prog.const_bytes < pipe.model_bytes_


def test_unsupported_pipelines_are_refused_clearly():
    _, train = camera()
    p = Pipeline(make_detector("ewma"), window=32, stride=16, features=("mean", "last")).fit(train)
    assert quantize_pipeline(p, train).ops[0].kind == "features_s16"  # "last" has an integer definition
    big = Pipeline(make_detector("ewma"), window=8192, stride=4096, features=("mean",))
    big.channels_, big.threshold_ = p.channels_, 0.0
    with pytest.raises(ConfigError, match="4096"):
        quantize_pipeline(big, train)
    extra, arrays, note = int8_sections(big, train)
    assert extra == {} and arrays == {} and "4096" in note


def test_model_file_round_trip_and_missing_program(tmp_path):
    pipe, prog = fitted("ewma")
    _, train = camera()
    extra, arrays, _ = int8_sections(pipe, train)
    save_pipeline(pipe, tmp_path / "m.twb", extra=extra, extra_arrays=arrays)
    loaded = load_program(load_pipeline(tmp_path / "m.twb"))
    assert loaded.model_id == prog.model_id
    save_pipeline(pipe, tmp_path / "plain.twb")
    with pytest.raises(ModelFileError, match="no int8 program"):
        load_program(load_pipeline(tmp_path / "plain.twb"), "plain.twb")


def test_compare_int8_report():
    pipe, prog = fitted("kmeans")
    s, train = camera()
    rep = compare_int8(pipe, s, prog, skip_rows=len(train))
    assert abs(rep["int8_roc_auc"] - rep["float_roc_auc"]) <= 0.01
    assert rep["int8_bytes"] > 0 and 0.0 <= rep["int8_detection_rate"] <= 1.0



@pytest.fixture(scope="module")
def cli_trained(tmp_path_factory):
    """A folder with the camera's telemetry (tel.csv), a kmeans model trained on it by the CLI (m.twb), and the
    train command's stdout (train.out)."""
    from tinywarden.telemetry import write_csv

    d = tmp_path_factory.mktemp("cli-kmeans")
    s, _ = camera()
    write_csv(s.slice(0, int(len(s) * 0.8)), d / "tel.csv")
    r = cli("train", str(d / "tel.csv"), "--out", str(d / "m.twb"), "--model", "kmeans",
            "--train-fraction", str(TRAIN_DAYS / 2.4), "--param", "n_init=1")
    assert r.returncode == 0, r.stderr
    (d / "train.out").write_text(r.stdout)
    return d


def test_cli_train_score_int8_export(cli_trained, tmp_path):
    for name in ("tel.csv", "m.twb"):
        (tmp_path / name).write_bytes((cli_trained / name).read_bytes())
    assert "int8 program" in (cli_trained / "train.out").read_text()
    r = cli("score", str(tmp_path / "m.twb"), str(tmp_path / "tel.csv"), "--int8", "--out", str(tmp_path / "s.csv"))
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    prog = load_program(load_pipeline(tmp_path / "m.twb"))
    from tinywarden.telemetry import read_series

    scores, alarms = run_int8(prog, read_series(tmp_path / "tel.csv").values)
    assert [int(r["score"]) for r in rows] == scores.tolist()
    assert [int(r["anomaly"]) for r in rows] == alarms.tolist()
    r = cli("export", str(tmp_path / "m.twb"), "--target", "c", "--out", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "c" / "tinywarden_model.h").exists() and (tmp_path / "c" / "tinywarden_model.c").exists()
    r = cli("export", str(tmp_path / "m.twb"), "--target", "vhdl", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "unknown export target 'vhdl'" in r.stderr
    r = cli("quantize-report", str(tmp_path / "m.twb"), str(tmp_path / "tel.csv"))
    assert r.returncode == 0 and "ROC AUC" in r.stdout, r.stderr


def test_pca_scores_its_residual_without_a_decoder():
    """PCA runs as |q|^2 - |W q|^2 on a centred int16 input: one int8 matrix, ranks like the float score."""
    pipe, prog = fitted("pca")
    kinds = [op.kind for op in prog.ops]
    assert kinds[-1] == "pca_residual_s16" and "fully_connected_s8" not in kinds
    weights = prog.ops[-1].consts["weights"]
    assert weights.shape == pipe.detector.components_.shape
    s, _ = camera()
    x = s.values[: 20_000]
    ints, _ = run_int8(prog, x)
    floats = pipe.score(s.slice(0, 20_000)).scores
    # the integer score is the float one in other units: the ranks agree (Spearman), and exactly where
    # it matters, on the windows the float model finds most anomalous
    order = np.corrcoef(np.argsort(np.argsort(ints)), np.argsort(np.argsort(floats)))[0, 1]
    top = floats >= np.quantile(floats, 0.95)
    assert order > 0.98 and ints[top].min() > np.median(ints)


def test_pca_with_too_many_features_for_the_accumulator_is_refused():
    from tinywarden.kernels.pca_residual_s16 import PCA_MAX_INPUTS
    from tinywarden.telemetry.series import Series

    rng = np.random.default_rng(0)
    n_ch = PCA_MAX_INPUTS // 2 + 1
    s = Series(np.arange(400.0), rng.normal(size=(400, n_ch)), tuple(f"c{i}" for i in range(n_ch)))
    pipe = Pipeline(make_detector("pca", n_components=2), 8, 8, ("mean", "std")).fit(s)
    with pytest.raises(ConfigError, match=f"at most 64 components and {PCA_MAX_INPUTS} features"):
        quantize_pipeline(pipe, s)


def test_each_family_declares_the_inputs_its_int8_kernels_take():
    # what train, tune and fleet refuse a wider input by, before fitting (Detector.max_inputs): the kernels' own bounds
    from tinywarden.arith import choose_qparams
    from tinywarden.detectors import REGISTRY
    from tinywarden.detectors.lowering import MAX_FAN_IN, quantize_layer
    from tinywarden.kernels.gru_s8 import GRU_MAX_CHANNELS
    from tinywarden.kernels.pca_residual_s16 import PCA_MAX_INPUTS

    assert REGISTRY["pca"].max_inputs({}) == REGISTRY["gaussian"].max_inputs({}) == PCA_MAX_INPUTS
    assert REGISTRY["ensemble"].max_inputs({"members": "kmeans()+gaussian()"}) == PCA_MAX_INPUTS
    assert REGISTRY["ensemble"].max_inputs({"members": "kmeans()+ewma()"}) is None
    assert REGISTRY["gru_ae"].max_inputs({}) == GRU_MAX_CHANNELS
    assert REGISTRY["conv_ae"].max_inputs({"kernel_size": 3}) == MAX_FAN_IN // 3
    # a dense autoencoder's first layer takes every feature: exactly MAX_FAN_IN of them fit its int32 accumulator
    assert REGISTRY["dense_ae"].max_inputs({}) == MAX_FAN_IN
    q = choose_qparams(-1.0, 1.0, "int8")
    quantize_layer("fully_connected_s8", "input", "h0", np.ones((1, MAX_FAN_IN)), np.zeros(1), q, q, False)
    with pytest.raises(ConfigError, match=f"fan-in {MAX_FAN_IN + 1} is too large .* [(]max {MAX_FAN_IN}[)]"):
        quantize_layer("fully_connected_s8", "input", "h0", np.ones((1, MAX_FAN_IN + 1)), np.zeros(1), q, q, False)


@pytest.mark.skipif(bool(missing_tools(("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm"))),
                    reason="needs the ARM toolchain to size the module")
def test_export_c_sizes_the_module_and_writes_nothing_over_a_budget(tmp_path):
    # `export --target c` wrote any module silently: a 9-channel device's adapting module was 8.4 KB of flash and
    # 5.1 KB of RAM with nothing saying it was over the 8 KB / 4 KB the tune command had been given
    pipe, _ = fitted("gaussian")
    _, train = camera()
    extra, arrays, _ = int8_sections(pipe, train)
    save_pipeline(pipe, tmp_path / "m.twb", extra=extra, extra_arrays=arrays)
    r = cli("export", str(tmp_path / "m.twb"), "--out", str(tmp_path / "c"), "--flash", "8KB", "--ram", "4KB")
    assert r.returncode == 0, r.stderr
    size = module_size(tmp_path / "c")
    assert f"{size.flash:,} B flash, {size.ram_with_state:,} B RAM" in r.stdout
    over = str(size.flash - 1)
    r = cli("export", str(tmp_path / "m.twb"), "--out", str(tmp_path / "c2"), "--flash", over)
    assert r.returncode == 2 and f"flash {size.flash:,} B > {size.flash - 1:,} B" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "c2").exists()
    r = cli("export", str(tmp_path / "m.twb"), "--out", str(tmp_path / "c3"), "--ram", "1KB", "--core", "cortex-m0plus")
    assert r.returncode == 2 and "over the budget on cortex-m0plus" in r.stderr and "RAM" in r.stderr
    r = cli("export", str(tmp_path / "m.twb"), "--target", "onnx", "--out", str(tmp_path / "o"), "--flash", "8KB")
    assert r.returncode == 2 and "only --target c is sized" in r.stderr
    (tmp_path / "file").write_text("")
    r = cli("export", str(tmp_path / "m.twb"), "--out", str(tmp_path / "file"))
    assert r.returncode == 2 and "is not a directory" in r.stderr


@pytest.mark.parametrize("label", ["0", "1"])
def test_quantize_report_on_one_class_says_what_is_undefined_not_nan(cli_trained, tmp_path, label):
    # labels all normal (no detection rate, no ROC AUC) or all anomalous (no FPR, no ROC AUC): the table printed
    # "nan", "nan%" and "+nan" where evaluate prints "-"
    rows = list(csv.reader((cli_trained / "tel.csv").open()))
    col = rows[0].index("label")
    with (tmp_path / "one.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([rows[0], *([*r[:col], label, *r[col + 1:]] for r in rows[1:])])
    r = cli("quantize-report", str(cli_trained / "m.twb"), str(tmp_path / "one.csv"))
    assert r.returncode == 0, r.stderr
    assert "nan" not in r.stdout.lower(), r.stdout
    roc = next(line for line in r.stdout.splitlines() if "ROC AUC" in line)
    assert roc.count(" - ") >= 2 or roc.rstrip("│ ").endswith("-"), roc
