"""``--target onnx``: a feature pipeline's float model as ONNX and, for the dense autoencoder, its int8 program as a
QDQ ONNX model.

* ``tinywarden_float.onnx`` is the fitted float pipeline's model part: input ``features`` (the raw
  window feature vector, channel-major as :func:`tinywarden.features.extract` orders it), the
  pipeline's scaling, then the family's own score as its module writes it
  (:meth:`~tinywarden.detectors.base.Detector.score_graph`: the Gaussian's Mahalanobis distance, PCA's residual,
  the distance families', EWMA's z-scores, the one-class SVM's kernel sum, the dense autoencoder's reconstruction
  error, an ensemble's calibrated mean; :func:`graph_families` lists them), output ``score`` (the detector's own
  score; the autoencoder also outputs ``reconstruction`` in the scaled domain). Window families and the isolation
  forest have none.
* ``tinywarden_int8_qdq.onnx`` is the int8 program's autoencoder in the standard QuantizeLinear /
  DequantizeLinear form that ONNX Runtime and vendor NPUs quantize from: int8 weights with one scale
  per output channel, int32 biases, the program's activation scales and zero points. Input ``input``
  is the autoencoder input in its real units, output ``output_int8`` its int8 output (and ``output``
  the same dequantized). Scales follow the same rules as the TFLite export
  (:mod:`tinywarden.codegen.tflite`). Other families' int8 programs run int16 kernels with no QDQ form: their
  device path is the generated C.

Both are plain ``onnx`` protobufs built with ``onnx.helper`` (opset 13, the first with per-axis QDQ).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tinywarden.codegen import write_export
from tinywarden.codegen.tflite import DenseInt8, ExportError, dense_int8, is_dense_autoencoder
from tinywarden.program import Program

OPSET = 13
FLOAT_FILE = "tinywarden_float.onnx"
QDQ_FILE = "tinywarden_int8_qdq.onnx"


def _onnx() -> Any:
    import onnx

    return onnx


class _Graph:
    """:class:`~tinywarden.detectors.base.ScoreGraph` over ``onnx.helper``: the nodes, constants and extra outputs
    a family's :meth:`~tinywarden.detectors.base.Detector.score_graph` adds."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.extra: list[tuple[str, int]] = []

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        v = np.asarray(value)
        self.inits.append(numpy_helper.from_array(v if v.dtype == np.int64 else v.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: Sequence[str], output: str, more: Sequence[str] = (), **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, list(inputs), [output, *more], **attrs))
        return output

    def output(self, name: str, width: int) -> None:
        self.extra.append((name, width))


def float_model(pipeline: Any) -> Any:
    """ONNX ``ModelProto`` of a fitted feature pipeline's model part: input ``features`` (the raw window feature
    vectors), the pipeline's scaling, then the family's own score (:meth:`Detector.score_graph`), output ``score``
    (and what the family adds, e.g. the autoencoder's ``reconstruction``)."""
    onnx = _onnx()
    from onnx import TensorProto, helper

    det = pipeline.detector
    g = _Graph()
    scaled = g.node("Div", [g.node("Sub", ["features", g.const("offset", np.ravel(pipeline.offset_))], "centred"),
                            g.const("scale", np.ravel(pipeline.scale_))], "scaled")
    score = det.score_graph(g, scaled) if det.input_kind == "features" else None
    if score is None:
        raise ExportError(f"{det.name!r} has no float ONNX graph; families that export: {', '.join(graph_families())}")
    d = int(np.size(pipeline.offset_))
    graph = helper.make_graph(
        g.nodes, f"tinywarden_{det.name}_float",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", d])],
        [helper.make_tensor_value_info(score, TensorProto.FLOAT, ["n"]),
         *(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", w]) for name, w in g.extra)],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="tinywarden")
    onnx.checker.check_model(model, full_check=True)
    return model


def graph_families() -> list[str]:
    """The feature families whose float model exports to ONNX (:meth:`Detector.has_score_graph`)."""
    from tinywarden.detectors import REGISTRY

    return [n for n, c in REGISTRY.items() if c.input_kind == "features" and c.has_score_graph()]


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
    """Write, given the fitted float ``pipeline``, ``tinywarden_float.onnx`` and, when ``program`` is the dense
    autoencoder's, ``tinywarden_int8_qdq.onnx`` into ``out_dir``; returns the written paths. The int8 program of
    another family runs as the generated C (``--target c``): its int16 kernels have no QDQ form."""
    out_dir = Path(out_dir)
    models = [(FLOAT_FILE, float_model(pipeline))] if pipeline is not None else []
    if is_dense_autoencoder(program) or not models:  # a dense program that cannot be written is an error too
        models.append((QDQ_FILE, qdq_model(dense_int8(program))))
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_export(out_dir / name, proto.SerializeToString()) for name, proto in models]


def export_onnx_target(pipeline: Any, out_dir: Path, source: str = "<model>") -> list[Path]:
    """The ``onnx`` target of ``tinywarden export``: the float model and the QDQ int8 model of a loaded
    model file (its fitted pipeline and its stored int8 program)."""
    from tinywarden.quantize import load_program

    try:
        return export_onnx(load_program(pipeline, source), out_dir, pipeline=pipeline)
    except ExportError as exc:
        raise ExportError(f"{source}: {exc}") from None
