"""ONNX export: the float model against the pipeline's own scores, the QDQ int8 model against the int8
reference, both run by onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import make_series
from test_tflite import dense_program, lsb, program_tensors, random_dense  # noqa: F401  (fixture)
from tinywarden.codegen.onnx import FLOAT_FILE, QDQ_FILE, export_onnx, float_model, graph_families, qdq_model
from tinywarden.codegen.tflite import DenseInt8, ExportError, dense_int8
from tinywarden.detectors import DenseAutoencoder, make_detector
from tinywarden.features import batch_features
from tinywarden.pipeline import Pipeline
from tinywarden.program import Program
from tinywarden.quantize.ptq import quantize_pipeline

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")


def session(proto: object) -> object:
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]


def as_real(model: DenseInt8, q: np.ndarray) -> np.ndarray:
    """The float input a QDQ model expects for int8 autoencoder inputs ``q``."""
    return (np.float32(model.scales[0]) * (q.astype(np.float32) - np.float32(model.input_zero_point)))


def test_float_model_gives_the_pipeline_scores(tmp_path: Path) -> None:
    series = make_series(n=4000, channels=4, seed=1)
    pipe = Pipeline(DenseAutoencoder(hidden=(8, 3), epochs=5), window=64, stride=32).fit(series)
    _, feats = batch_features(series.values, 64, 32, pipe.features)
    score, recon = session(float_model(pipe)).run(["score", "reconstruction"],  # type: ignore[attr-defined]
                                                  {"features": feats.astype(np.float32)})
    want = pipe.detector.score_samples(pipe.scale_inputs(feats))
    np.testing.assert_allclose(score, want, rtol=1e-4, atol=1e-6)
    assert recon.shape == feats.shape
    assert np.ptp(score) > 0


@pytest.mark.parametrize("family, params", [*((f, {}) for f in graph_families()), ("ocsvm", {"kernel": "rff"}),
                                            ("ocsvm", {"kernel": "rbf"}), ("ewma", {"aggregate": "max"}),
                                            ("ewma", {"aggregate": "rms"}),
                                            ("ensemble", {"members": "kmeans(n_clusters=4)+kmeans(n_clusters=8)"})])
def test_float_model_of_every_feature_family_with_a_graph_gives_its_scores(family: str, params: dict) -> None:
    # only the dense autoencoder exported: the default family (gaussian) and the others were refused
    series = make_series(n=4000, channels=4, seed=2)
    pipe = Pipeline(make_detector(family, **params), window=64, stride=16).fit(series)
    _, feats = batch_features(series.values, 64, 16, pipe.features)
    feats = np.vstack([feats, feats[:8] * 3.0 + 1.0])  # and rows far from normal
    (score,) = session(float_model(pipe)).run(["score"], {"features": feats.astype(np.float32)})  # type: ignore[attr-defined]
    want = pipe.detector.score_samples(pipe.scale_inputs(feats))
    np.testing.assert_allclose(score, want, rtol=2e-3, atol=1e-4 * float(np.ptp(want)))
    assert np.ptp(score) > 0 and float(np.corrcoef(score, want)[0, 1]) > 0.9999


def test_families_with_a_float_graph_are_listed_and_the_rest_refused() -> None:
    assert {"gaussian", "pca", "kmeans", "dense_ae"} <= set(graph_families())
    series = make_series(n=3000, channels=2)
    pipe = Pipeline(make_detector("iforest"), window=32, stride=16).fit(series)
    with pytest.raises(ExportError, match="'iforest' has no float ONNX graph; families that export: .*gaussian"):
        float_model(pipe)


def test_a_gaussian_model_exports_its_float_model_alone(tmp_path: Path) -> None:
    series = make_series(n=3000, channels=3, seed=4)
    pipe = Pipeline(make_detector("gaussian"), window=64, stride=32).fit(series)
    program = quantize_pipeline(pipe, series)
    assert [p.name for p in export_onnx(program, tmp_path / "out", pipeline=pipe)] == [FLOAT_FILE]
    with pytest.raises(ExportError, match="dense autoencoder"):
        export_onnx(program, tmp_path / "none")  # no pipeline and no QDQ form: nothing to write
    assert not (tmp_path / "none").exists()


def test_qdq_layers_match_reference_within_one_lsb() -> None:
    model = random_dense(0)
    x = np.random.default_rng(1).integers(-128, 128, size=(400, model.n_inputs)).astype(np.int8)
    h = x
    # Per layer: onnxruntime's float Gemm + QuantizeLinear (round half to even) against the Q31
    # integer kernel, fed the same int8 input.
    for i, layer in enumerate(model.layers):
        sub = DenseInt8((layer,), model.scales[i : i + 2])
        want = sub.run(h)
        got = session(qdq_model(sub)).run(["output_int8"], {"input": as_real(sub, h)})[0]  # type: ignore[attr-defined]
        assert got.dtype == np.int8
        assert lsb(got, want) <= 1
        assert np.mean(got == want) > 0.95
        h = want


def test_qdq_trained_autoencoder(dense_program: tuple[Program, np.ndarray], tmp_path: Path) -> None:  # noqa: F811
    program, windows = dense_program
    env = program_tensors(program, windows)
    paths = export_onnx(program, tmp_path)
    assert [p.name for p in paths] == [QDQ_FILE]
    model = dense_int8(program)
    sess = ort.InferenceSession(str(paths[0]), providers=["CPUExecutionProvider"])
    q, real = sess.run(["output_int8", "output"], {"input": as_real(model, env["input"])})
    assert lsb(q, env["recon"]) <= 1
    np.testing.assert_allclose(real, model.scales[-1] * (q.astype(np.float64) - model.output_zero_point),
                               rtol=1e-6, atol=1e-6)


def test_export_writes_both_models(dense_program: tuple[Program, np.ndarray], tmp_path: Path) -> None:  # noqa: F811
    import onnx

    program, _ = dense_program
    series = make_series(n=3000, channels=6, seed=3)
    pipe = Pipeline(DenseAutoencoder(hidden=(12, 4), epochs=2), window=64, stride=32).fit(series)
    paths = export_onnx(program, tmp_path / "out", pipeline=pipe)
    assert [p.name for p in paths] == [FLOAT_FILE, QDQ_FILE]
    for p in paths:
        onnx.checker.check_model(onnx.load(p), full_check=True)
    ops = {n.op_type for n in onnx.load(paths[1]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Gemm"} <= ops
