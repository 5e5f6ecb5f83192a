"""``--target onnx``: the dense autoencoder as a float ONNX model and as a QDQ int8 ONNX model.

* ``tinywarden_float.onnx`` is the fitted float pipeline's model part: input ``features`` (the raw
  window feature vector, channel-major as :func:`tinywarden.features.extract` orders it), the
  pipeline's scaling, the autoencoder (``Gemm`` + ``Relu``), outputs ``reconstruction`` (in the scaled
  domain) and ``score`` (mean squared error, the detector's own score).
* ``tinywarden_int8_qdq.onnx`` is the int8 program's autoencoder in the standard QuantizeLinear /
  DequantizeLinear form that ONNX Runtime and vendor NPUs quantize from: int8 weights with one scale
  per output channel, int32 biases, the program's activation scales and zero points. Input ``input``
  is the autoencoder input in its real units, output ``output_int8`` its int8 output (and ``output``
  the same dequantized). Scales follow the same rules as the TFLite export
  (:mod:`tinywarden.codegen.tflite`).

Both are plain ``onnx`` protobufs built with ``onnx.helper`` (opset 13, the first with per-axis QDQ).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tinywarden.codegen.tflite import DenseInt8, ExportError, dense_int8
from tinywarden.program import Program

OPSET = 13
FLOAT_FILE = "tinywarden_float.onnx"
QDQ_FILE = "tinywarden_int8_qdq.onnx"


def _onnx() -> Any:
    import onnx

    return onnx


def float_model(pipeline: Any) -> Any:
    """ONNX ``ModelProto`` of a fitted pipeline whose detector is the dense autoencoder."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    det = pipeline.detector
    if getattr(det, "name", "") != "dense_ae":
        raise ExportError(f"only the dense autoencoder (dense_ae) exports to ONNX, not {det.name!r}")
    layers = det.layers()
    d = layers[0][0].shape[1]
    inits = [numpy_helper.from_array(np.asarray(pipeline.offset_, np.float32), "offset"),
             numpy_helper.from_array(np.asarray(pipeline.scale_, np.float32), "scale")]
    nodes = [helper.make_node("Sub", ["features", "offset"], ["centred"]),
             helper.make_node("Div", ["centred", "scale"], ["scaled"])]
    x = "scaled"
    for i, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(np.asarray(w, np.float32), f"dense_{i}/weights"),
                  numpy_helper.from_array(np.asarray(b, np.float32), f"dense_{i}/bias")]
        last = i == len(layers) - 1
        y = "reconstruction" if last else f"dense_{i}/linear"
        nodes.append(helper.make_node("Gemm", [x, f"dense_{i}/weights", f"dense_{i}/bias"], [y], transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [y], [f"dense_{i}/out"]))
            y = f"dense_{i}/out"
        x = y
    nodes += [helper.make_node("Sub", ["reconstruction", "scaled"], ["error"]),
              helper.make_node("Mul", ["error", "error"], ["squared"]),
              helper.make_node("ReduceMean", ["squared"], ["score"], axes=[1], keepdims=0)]
    graph = helper.make_graph(
        nodes, "tinywarden_dense_ae_float",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", d])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"]),
         helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT, ["n", d])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="tinywarden")
    onnx.checker.check_model(model, full_check=True)
    return model


def qdq_model(model: DenseInt8) -> Any:
    """ONNX ``ModelProto`` of the int8 autoencoder in QuantizeLinear/DequantizeLinear form."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: np.ndarray) -> Any:
        return numpy_helper.from_array(np.asarray(value), name)

    inits = [const("input/scale", np.float32(model.scales[0])),
             const("input/zero_point", np.int8(model.input_zero_point))]
    nodes = [helper.make_node("QuantizeLinear", ["input", "input/scale", "input/zero_point"], ["input_q"]),
             helper.make_node("DequantizeLinear", ["input_q", "input/scale", "input/zero_point"], ["x0"])]
    x = "x0"
    for i, layer in enumerate(model.layers):
        p = f"dense_{i}"
        n_out = layer.weights.shape[0]
        w_scale = model.weight_scales(i)
        last = i == len(model.layers) - 1
        inits += [const(f"{p}/weights_q", layer.weights.astype(np.int8)),
                  const(f"{p}/weights_scale", w_scale.astype(np.float32)),
                  const(f"{p}/weights_zero_point", np.zeros(n_out, np.int8)),
                  const(f"{p}/bias_q", layer.bias.astype(np.int32)),
                  const(f"{p}/bias_scale", (model.scales[i] * w_scale).astype(np.float32)),
                  const(f"{p}/bias_zero_point", np.zeros(n_out, np.int32)),
                  const(f"{p}/out_scale", np.float32(model.scales[i + 1])),
                  const(f"{p}/out_zero_point", np.int8(layer.output_zero_point))]
        out_q = "output_int8" if last else f"{p}/out_q"
        out_f = "output" if last else f"{p}/out"
        nodes += [
            helper.make_node("DequantizeLinear", [f"{p}/weights_q", f"{p}/weights_scale", f"{p}/weights_zero_point"],
                             [f"{p}/weights"], axis=0),
            helper.make_node("DequantizeLinear", [f"{p}/bias_q", f"{p}/bias_scale", f"{p}/bias_zero_point"],
                             [f"{p}/bias"], axis=0),
            helper.make_node("Gemm", [x, f"{p}/weights", f"{p}/bias"], [f"{p}/linear"], transB=1),
        ]
        pre_q = f"{p}/linear"
        if layer.relu:
            nodes.append(helper.make_node("Relu", [pre_q], [f"{p}/relu"]))
            pre_q = f"{p}/relu"
        nodes += [helper.make_node("QuantizeLinear", [pre_q, f"{p}/out_scale", f"{p}/out_zero_point"], [out_q]),
                  helper.make_node("DequantizeLinear", [out_q, f"{p}/out_scale", f"{p}/out_zero_point"], [out_f])]
        x = out_f
    d_in, d_out = model.n_inputs, int(model.layers[-1].weights.shape[0])
    graph = helper.make_graph(
        nodes, "tinywarden_dense_ae_int8_qdq",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", d_in])],
        [helper.make_tensor_value_info("output_int8", TensorProto.INT8, ["n", d_out]),
         helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", d_out])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tinywarden",
                              doc_string=f"tinywarden int8 dense autoencoder {model.model_id}".strip())
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(program: Program, out_dir: Path, pipeline: Any | None = None) -> list[Path]:
    """Write ``tinywarden_int8_qdq.onnx`` (from ``program``) and, given the fitted float ``pipeline``,
    ``tinywarden_float.onnx`` into ``out_dir``; returns the written paths."""
    onnx = _onnx()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = [(QDQ_FILE, qdq_model(dense_int8(program)))]
    if pipeline is not None:
        models.insert(0, (FLOAT_FILE, float_model(pipeline)))
    paths = []
    for name, proto in models:
        onnx.save(proto, out_dir / name)
        paths.append(out_dir / name)
    return paths


def export_onnx_target(pipeline: Any, out_dir: Path, source: str = "<model>") -> list[Path]:
    """The ``onnx`` target of ``tinywarden export``: the float model and the QDQ int8 model of a loaded
    model file (its fitted pipeline and its stored int8 program)."""
    from tinywarden.quantize import load_program

    try:
        return export_onnx(load_program(pipeline, source), out_dir, pipeline=pipeline)
    except ExportError as exc:
        raise ExportError(f"{source}: {exc}") from None
