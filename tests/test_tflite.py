"""TFLite export: the int8 autoencoder runs in TensorFlow Lite Micro's and LiteRT's own interpreters
with outputs within 1 LSB of tinywarden's int8 reference (the program's ``fully_connected_s8`` kernel)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import make_series
from tinywarden.arith import quantize_multiplier
from tinywarden.codegen.tflite import DenseInt8, DenseLayer, ExportError, dense_int8, export_tflite, to_tflite_bytes
from tinywarden.detectors import DenseAutoencoder, EWMAZScore
from tinywarden.pipeline import Pipeline
from tinywarden.program import KERNELS, Program, quantize_samples
from tinywarden.quantize.ptq import quantize_pipeline

tflm_runtime = pytest.importorskip("tflite_micro", reason="tflite-micro not installed (pip install tflite-micro)")
litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert not installed")
schema = pytest.importorskip("tflite_micro.tensorflow.lite.micro.python.schema_py_generated")


def random_dense(seed: int = 0, sizes: tuple[int, ...] = (30, 12, 4, 12, 30)) -> DenseInt8:
    """A random int8 autoencoder built the way the quantizer builds layers (ReLU hidden, linear out)."""
    rng = np.random.default_rng(seed)
    scales, layers, zp_in = [0.05], [], -3
    for i in range(len(sizes) - 1):
        relu = i < len(sizes) - 2
        zp_out = -128 if relu else -3
        s_out = scales[0] if not relu else 0.1 * (i + 1)
        w_scale = rng.uniform(0.002, 0.01, size=sizes[i + 1])
        ms = [quantize_multiplier(scales[-1] * v / s_out) for v in w_scale]
        layers.append(DenseLayer(
            rng.integers(-127, 128, size=(sizes[i + 1], sizes[i])).astype(np.int8),
            rng.integers(-3000, 3000, size=sizes[i + 1]).astype(np.int32),
            np.array([m for m, _ in ms], np.int32), np.array([s for _, s in ms], np.int32),
            zp_in, zp_out, zp_out if relu else -128, 127))
        scales.append(s_out)
        zp_in = zp_out
    return DenseInt8(tuple(layers), tuple(scales), f"random{seed}")


def run_tflm(data: bytes, x: np.ndarray) -> np.ndarray:
    interp = tflm_runtime.runtime.Interpreter.from_bytes(data)
    out = []
    for row in x:  # TFLite Micro tensors have the fixed batch of 1 the model declares
        interp.set_input(row[None].astype(np.int8), 0)
        interp.invoke()
        out.append(interp.get_output(0)[0].copy())
    return np.array(out)


def run_litert(data: bytes, x: np.ndarray, xnnpack: bool = False) -> np.ndarray:
    """LiteRT's own integer kernels, or (``xnnpack``) its default CPU delegate, which requantizes in float."""
    resolver = litert.OpResolverType.AUTO if xnnpack else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = litert.Interpreter(model_content=data, experimental_op_resolver_type=resolver)
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x.astype(np.int8))
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


def lsb(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


def program_tensors(program: Program, windows_q: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of the program's reference interpreter for a batch of int16 windows."""
    env = {"window": windows_q}
    for op in program.ops:
        env[op.dst] = KERNELS[op.kind].fn([env[s] for s in op.src], op)
    return env


@pytest.fixture(scope="module")
def dense_program() -> tuple[Program, np.ndarray]:
    """A dense-autoencoder program of a trained pipeline, and int16 windows of a fresh stream."""
    series = make_series(n=5000, channels=6, seed=3)
    pipe = Pipeline(DenseAutoencoder(hidden=(12, 4), epochs=5), window=64, stride=32).fit(series)
    program = quantize_pipeline(pipe, series)
    test = make_series(n=2000, channels=6, seed=4).values
    test[1200:1400, 2] += 8.0  # an anomaly, so inputs reach the edges of the int8 range too
    q = quantize_samples(program, test)
    starts = np.arange(0, len(q) - program.window + 1, 8)
    return program, np.stack([q[s : s + program.window] for s in starts])


def test_random_network_matches_in_tflm_and_litert() -> None:
    model = random_dense(0)
    data = to_tflite_bytes(model)
    x = np.random.default_rng(1).integers(-128, 128, size=(300, model.n_inputs)).astype(np.int8)
    ref = model.run(x)
    assert lsb(run_tflm(data, x), ref) <= 1
    assert lsb(run_litert(data, x), ref) <= 1
    # XNNPACK rounds each layer's float requantization its own way: within 1 LSB per layer (its
    # differences then propagate, so end to end it is not held to 1 LSB).
    h = x
    for i, layer in enumerate(model.layers):
        sub = DenseInt8((layer,), model.scales[i : i + 2])
        out = sub.run(h)
        assert lsb(run_litert(to_tflite_bytes(sub), h, xnnpack=True), out) <= 1
        h = out
    # Not vacuous: a different network gives different outputs.
    assert lsb(run_tflm(to_tflite_bytes(random_dense(2)), x[:20]), ref[:20]) > 1


def test_file_is_fully_integer_with_the_program_constants() -> None:
    model = random_dense(5)
    m = schema.ModelT.InitFromPackedBuf(to_tflite_bytes(model), 0)
    sub = m.subgraphs[0]
    inp, out = sub.tensors[sub.inputs[0]], sub.tensors[sub.outputs[0]]
    assert inp.type == out.type == schema.TensorType.INT8
    assert {t.type for t in sub.tensors} <= {schema.TensorType.INT8, schema.TensorType.INT32}
    assert [m.operatorCodes[op.opcodeIndex].builtinCode for op in sub.operators] == \
        [schema.BuiltinOperator.FULLY_CONNECTED] * len(model.layers)
    assert inp.quantization.zeroPoint == [model.input_zero_point]
    for op, layer in zip(sub.operators, model.layers, strict=True):
        w, b = sub.tensors[op.inputs[1]], sub.tensors[op.inputs[2]]
        assert np.array_equal(np.frombuffer(bytes(m.buffers[w.buffer].data), np.int8).reshape(w.shape),
                              layer.weights)
        assert np.array_equal(np.frombuffer(bytes(m.buffers[b.buffer].data), "<i4"), layer.bias)
        assert len(w.quantization.scale) == layer.weights.shape[0]  # per output channel
        relu = op.builtinOptions.fusedActivationFunction == schema.ActivationFunctionType.RELU
        assert relu == layer.relu


def test_trained_autoencoder_matches_reference(dense_program: tuple[Program, np.ndarray], tmp_path: Path) -> None:
    program, windows = dense_program
    env = program_tensors(program, windows)
    model = dense_int8(program)
    # The layers extracted for export compute exactly the program's reconstruction.
    assert np.array_equal(model.run(env["input"]), env["recon"])
    path = export_tflite(program, tmp_path / "model.tflite")
    data = path.read_bytes()
    assert data[4:8] == b"TFL3"
    x = env["input"].astype(np.int8)
    assert lsb(run_tflm(data, x), env["recon"]) <= 1
    assert lsb(run_litert(data, x), env["recon"]) <= 1
    assert lsb(run_litert(data, x, xnnpack=True), env["recon"]) <= 1
    assert len(np.unique(env["recon"])) > 8  # outputs vary, so agreement is not about a constant


def test_non_autoencoder_program_is_refused() -> None:
    series = make_series(n=3000, channels=2)
    program = quantize_pipeline(Pipeline(EWMAZScore(), window=32, stride=16).fit(series), series)
    with pytest.raises(ExportError, match="only the dense autoencoder"):
        dense_int8(program)


def test_clamp_tflite_cannot_express_is_refused(dense_program: tuple[Program, np.ndarray]) -> None:
    program, _ = dense_program
    ops = list(program.ops)
    i = next(k for k, op in enumerate(ops) if op.kind == "fully_connected_s8")
    ops[i] = type(ops[i])(ops[i].kind, ops[i].src, ops[i].dst, {**ops[i].attrs, "act_max": 100}, ops[i].consts)
    bad = Program(program.channels, program.window, program.stride, program.sample_offset, program.sample_mul,
                  program.sample_zero, program.tensors, tuple(ops), program.threshold, program.k, program.n,
                  program.info)
    with pytest.raises(ExportError, match="neither none nor ReLU"):
        dense_int8(bad)
