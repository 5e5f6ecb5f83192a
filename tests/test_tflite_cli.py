"""`tinywarden export --target tflite|onnx` end to end: the files a trained model file exports run in
TFLite Micro and onnxruntime with the stored int8 program's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import make_series
from inprocess import cli
from test_tflite import lsb, program_tensors, run_tflm
from tinywarden.codegen.tflite import dense_int8
from tinywarden.modelfile import load_pipeline
from tinywarden.program import quantize_samples
from tinywarden.quantize import load_program
from tinywarden.telemetry import write_csv

ort = pytest.importorskip("onnxruntime")



def train(tmp_path: Path, model: str, *params: str) -> Path:
    write_csv(make_series(n=5000, channels=6, seed=21), tmp_path / "tel.csv")
    out = tmp_path / f"{model}.twb"
    args = [arg for p in params for arg in ("--param", p)]
    rc, _, err = cli("train", str(tmp_path / "tel.csv"), "--out", str(out), "--model", model,
                     "--window", "64", "--stride", "32", *args)
    assert rc == 0, err
    return out


def test_export_tflite_and_onnx_from_a_model_file(tmp_path: Path) -> None:
    twb = train(tmp_path, "dense_ae", "epochs=3")
    rc, out, err = cli("export", str(twb), "--target", "tflite", "--out", str(tmp_path / "tfl"))
    assert rc == 0, err
    assert "tinywarden_model.tflite" in out.replace("\n", "")
    rc, _, err = cli("export", str(twb), "--target", "onnx", "--out", str(tmp_path / "onnx"))
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["tinywarden_float.onnx",
                                                                    "tinywarden_int8_qdq.onnx"]

    pipe = load_pipeline(str(twb))
    program = load_program(pipe)
    x = make_series(n=600, channels=6, seed=22).values
    q = quantize_samples(program, x)
    windows = np.stack([q[s : s + 64] for s in range(0, len(q) - 63, 16)])
    env = program_tensors(program, windows)
    data = (tmp_path / "tfl" / "tinywarden_model.tflite").read_bytes()
    assert lsb(run_tflm(data, env["input"].astype(np.int8)), env["recon"]) <= 1

    model = dense_int8(program)
    real = np.float32(model.scales[0]) * (env["input"].astype(np.float32) - np.float32(model.input_zero_point))
    sess = ort.InferenceSession(str(tmp_path / "onnx" / "tinywarden_int8_qdq.onnx"),
                                providers=["CPUExecutionProvider"])
    assert lsb(sess.run(["output_int8"], {"input": real})[0], env["recon"]) <= 1


def test_export_of_a_detector_without_an_autoencoder_is_one_line_error(
    tmp_path: Path
) -> None:
    twb = train(tmp_path, "ewma")
    rc, _, err = cli("export", str(twb), "--target", "tflite", "--out", str(tmp_path / "tfl"))
    assert rc == 2
    flat = err.replace("\n", "")
    assert "only the dense autoencoder" in flat and twb.name in flat
    assert not (tmp_path / "tfl" / "tinywarden_model.tflite").exists()


def test_the_default_familys_model_exports_its_float_onnx_and_says_why_there_is_no_qdq(tmp_path: Path) -> None:
    # `--target onnx` refused every model but the dense autoencoder's, the default family's (gaussian) included
    from tinywarden.detectors import DEFAULT_FAMILY
    from tinywarden.features import batch_features

    twb = train(tmp_path, DEFAULT_FAMILY)
    rc, out, err = cli("export", str(twb), "--target", "onnx", "--out", str(tmp_path / "onnx"))
    assert rc == 0, err
    assert [p.name for p in (tmp_path / "onnx").iterdir()] == ["tinywarden_float.onnx"]
    assert "no QDQ int8 model" in out.replace("\n", " ") and "--target c" in out
    pipe = load_pipeline(str(twb))
    series = make_series(n=5000, channels=6, seed=21)
    _, feats = batch_features(series.values, pipe.window, pipe.stride, pipe.features)
    sess = ort.InferenceSession(str(tmp_path / "onnx" / "tinywarden_float.onnx"), providers=["CPUExecutionProvider"])
    (score,) = sess.run(["score"], {"features": feats.astype(np.float32)})
    want = pipe.detector.score_samples(pipe.scale_inputs(feats))
    np.testing.assert_allclose(score, want, rtol=2e-3, atol=1e-3 * float(np.median(want)))
    twb = train(tmp_path, "iforest")
    rc, _, err = cli("export", str(twb), "--target", "onnx", "--out", str(tmp_path / "iforest"))
    assert rc == 2 and "has no float ONNX graph" in err.replace("\n", "") and twb.name in err.replace("\n", "")
    assert not (tmp_path / "iforest").exists()


def test_export_replaces_a_symlink_in_the_output_folder_instead_of_writing_through_it(tmp_path: Path) -> None:
    # export wrote its files with open(): a symlink planted at an output name (a shared folder, export run as root)
    # had the model written into the file it points at
    twb = train(tmp_path, "dense_ae", "epochs=3")
    victim = tmp_path / "victim"
    for target, name in (("c", "tinywarden_model.h"), ("tflite", "tinywarden_model.tflite"),
                         ("onnx", "tinywarden_float.onnx")):
        victim.write_text("precious\n")
        out = tmp_path / target
        out.mkdir()
        (out / name).symlink_to(victim)
        rc, _, err = cli("export", str(twb), "--target", target, "--out", str(out))
        assert rc == 0, err
        assert victim.read_text() == "precious\n", target
        assert not (out / name).is_symlink() and (out / name).stat().st_size > len("precious\n"), target
        assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [], target  # no temporary left
