"""``--target tflite``: the int8 dense autoencoder of a program as a fully-integer ``.tflite`` flatbuffer.

The file holds exactly the integer model tinywarden's own C runs: int8 input and output tensors, one
``FULLY_CONNECTED`` operator per layer with int8 weights quantized per output channel (zero point 0),
int32 biases and the program's activation zero points and ReLU clamps. Feature extraction and the
score are not TFLite operators; a firmware team feeds the model the int8 feature vector its own code
computes and compares the output with the input.

No converter is involved on purpose: TensorFlow's converter re-derives quantization from a float model
and representative data, which could not reproduce the program's constants. The flatbuffer is written
through the schema module that the ``tflite-micro`` package ships (``schema_py_generated``, the object
API generated from TFLite's ``schema.fbs``).

Scales: TFLite recomputes each layer's Q31 multiplier from the float32 scales stored in the file
(``input_scale * weight_scale[c] / output_scale``), so the scales written here are chosen for the
multiplier to come back as the program's own: activation scales are the program's real ones when its
``info`` records them, and each weight scale is solved from the program's multiplier. Rounding the
scales to float32 can move a multiplier by a few parts in 2**24, which changes an output by at most
1 LSB in rare ties; the tests hold TFLite Micro and LiteRT to that bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinywarden.arith import multiplier_to_real
from tinywarden.codegen import write_export
from tinywarden.errors import ConfigError, TinywardenError
from tinywarden.program import Op, Program

INT8_MIN, INT8_MAX = -128, 127
FC_OPERATOR_VERSION = 4  # the FULLY_CONNECTED version that introduced int8 tensors


class ExportError(TinywardenError):
    """A program that cannot be written in an interchange format (unsupported kernel or layout)."""


@dataclass(frozen=True)
class DenseLayer:
    """One int8 fully connected layer as CMSIS-NN/TFLite compute it.

    ``out[o] = clamp(output_zp + requantize(sum_i (x[i] - input_zp) * weights[o, i] + bias[o],
    multiplier[o], shift[o]), act_min, act_max)``.
    """

    weights: np.ndarray  # int8 (out, in)
    bias: np.ndarray  # int32 (out,)
    multiplier: np.ndarray  # int32 (out,), Q31
    shift: np.ndarray  # int32 (out,), positive = left
    input_zero_point: int
    output_zero_point: int
    act_min: int
    act_max: int

    @property
    def real_multiplier(self) -> np.ndarray:
        """``input_scale * weight_scale[o] / output_scale`` that the (multiplier, shift) pairs encode."""
        return np.array([multiplier_to_real(int(m), int(s)) for m, s in zip(self.multiplier, self.shift,
                                                                           strict=True)])

    @property
    def relu(self) -> bool:
        """True when the clamp is TFLite's fused RELU (lower bound at the output zero point)."""
        return self.act_min == self.output_zero_point and self.act_min > INT8_MIN


@dataclass(frozen=True)
class DenseInt8:
    """The int8 dense autoencoder of a program: its layers and the real scale of every activation.

    ``scales[0]`` is the input's scale, ``scales[i + 1]`` layer ``i``'s output scale.
    """

    layers: tuple[DenseLayer, ...]
    scales: tuple[float, ...]
    model_id: str = ""

    @property
    def n_inputs(self) -> int:
        return int(self.layers[0].weights.shape[1])

    @property
    def input_zero_point(self) -> int:
        return self.layers[0].input_zero_point

    @property
    def output_zero_point(self) -> int:
        return self.layers[-1].output_zero_point

    def weight_scales(self, i: int) -> np.ndarray:
        """Per-output-channel weight scales of layer ``i`` that reproduce its multipliers exactly in
        float64 (``scales[i] * w / scales[i + 1] == real_multiplier``)."""
        return self.layers[i].real_multiplier * self.scales[i + 1] / self.scales[i]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Reference forward pass on int8 inputs ``(n, n_inputs)``, through the program's own kernel."""
        from tinywarden.program import KERNELS

        h = np.asarray(x, dtype=np.int64)
        for layer in self.layers:
            h = KERNELS["fully_connected_s8"].fn([h], _as_op(layer))
        return h.astype(np.int8)


def _as_op(layer: DenseLayer) -> Op:
    return Op("fully_connected_s8", ("x",), "y",
              {"input_offset": -layer.input_zero_point, "output_offset": layer.output_zero_point,
               "act_min": layer.act_min, "act_max": layer.act_max},
              {"weights": layer.weights, "bias": layer.bias, "multiplier": layer.multiplier,
               "shift": layer.shift})


def _layer_from_op(op: Op, where: str) -> DenseLayer:
    a, c = op.attrs, op.consts
    w = np.asarray(c["weights"], dtype=np.int8)
    layer = DenseLayer(w, np.asarray(c["bias"], dtype=np.int32), np.asarray(c["multiplier"], dtype=np.int32),
                       np.asarray(c["shift"], dtype=np.int32), -int(a["input_offset"]), int(a["output_offset"]),
                       int(a["act_min"]), int(a["act_max"]))
    if layer.act_max != INT8_MAX or layer.act_min not in (INT8_MIN, layer.output_zero_point):
        raise ExportError(f"{where}: clamp [{layer.act_min}, {layer.act_max}] is neither none nor ReLU at the "
                          f"output zero point {layer.output_zero_point}; TFLite cannot express it")
    if w.ndim != 2 or any(len(v) != w.shape[0] for v in (layer.bias, layer.multiplier, layer.shift)):
        raise ExportError(f"{where}: weights {w.shape} do not match bias/multiplier/shift lengths")
    return layer


def _recorded_scales(info: Mapping[str, Any], n: int) -> tuple[float, ...] | None:
    """Activation scales the quantizer recorded in ``program.info`` (``dense_scales``), if any."""
    raw = info.get("dense_scales")
    if raw is None:
        return None
    scales = tuple(float(s) for s in raw)
    if len(scales) != n or not all(np.isfinite(s) and s > 0 for s in scales):
        raise ExportError(f"program info dense_scales has {len(scales)} entries, expected {n} positive scales")
    return scales


def is_dense_autoencoder(program: Program) -> bool:
    """Does ``program`` run fully connected layers scored by ``sum_sq_diff_s8`` (a dense autoencoder's shape)?"""
    return (any(op.kind == "fully_connected_s8" for op in program.ops) and bool(program.ops)
            and program.ops[-1].kind == "sum_sq_diff_s8")


def dense_int8(program: Program) -> DenseInt8:
    """The chain of ``fully_connected_s8`` ops of a dense-autoencoder program.

    The program must score with ``sum_sq_diff_s8`` between the first layer's input and the last layer's
    output, i.e. be a dense autoencoder; anything else raises :class:`ExportError`.
    """
    fc = [(i, op) for i, op in enumerate(program.ops) if op.kind == "fully_connected_s8"]
    if not is_dense_autoencoder(program):
        kinds = ", ".join(op.kind for op in program.ops) or "no ops"
        raise ExportError(f"only the dense autoencoder (dense_ae) has a fully-integer TFLite (or QDQ ONNX) form; this "
                          f"program runs {kinds}: its int8 program exports as C (--target c), its float model to "
                          "ONNX (--target onnx)")
    score = program.ops[-1]
    chain = [fc[0][1]]
    for _, op in fc[1:]:
        if op.src != (chain[-1].dst,):
            raise ExportError(f"fully connected op reading {op.src} does not follow {chain[-1].dst!r}")
        chain.append(op)
    if set(score.src) != {chain[0].src[0], chain[-1].dst}:
        raise ExportError(f"the score compares {score.src}, not the autoencoder's input and output")
    layers = tuple(_layer_from_op(op, f"layer {k} (op {i})") for k, (i, op) in enumerate(fc))
    for k in range(1, len(layers)):
        if layers[k].input_zero_point != layers[k - 1].output_zero_point:
            raise ExportError(f"layer {k} input zero point {layers[k].input_zero_point} differs from layer "
                              f"{k - 1}'s output zero point {layers[k - 1].output_zero_point}")
    if layers[0].weights.shape[1] != layers[-1].weights.shape[0]:
        raise ExportError(f"autoencoder maps {layers[0].weights.shape[1]} inputs to "
                          f"{layers[-1].weights.shape[0]} outputs")
    scales = _recorded_scales(program.info, len(layers) + 1)
    if scales is None:
        # Any consistent set of scales reproduces the integer model, because each weight scale is solved
        # from its multiplier. The input's (= output's) real scale is recorded, so inputs and outputs keep
        # their meaning; hidden activations without a recorded scale get 1.0.
        s_in = float(program.info.get("input_scale", 1.0))
        scales = (s_in, *([1.0] * (len(layers) - 1)), s_in)
    return DenseInt8(layers, scales, program.model_id)


def _schema() -> Any:
    try:
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema
    except ImportError as exc:
        raise ConfigError("TFLite export needs the tflite-micro package (pip install tflite-micro), which "
                          "ships TFLite's flatbuffer schema") from exc
    return schema


def to_tflite_bytes(model: DenseInt8) -> bytes:
    """Serialise ``model`` as a TFLite flatbuffer (file identifier ``TFL3``)."""
    import flatbuffers

    s = _schema()
    buffers = [s.BufferT()]  # buffer 0 is the conventional empty buffer of every non-constant tensor
    tensors: list[Any] = []

    def quant(scale: np.ndarray | list[float], zero: np.ndarray | list[int], dim: int = 0) -> Any:
        q = s.QuantizationParametersT()
        q.scale = [float(np.float32(v)) for v in np.atleast_1d(scale)]
        q.zeroPoint = [int(v) for v in np.atleast_1d(zero)]
        q.quantizedDimension = dim
        return q

    def tensor(name: str, shape: tuple[int, ...], ttype: int, q: Any, data: np.ndarray | None = None) -> int:
        t = s.TensorT()
        t.name, t.shape, t.type, t.quantization = name, list(shape), ttype, q
        t.buffer = 0
        if data is not None:
            b = s.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            buffers.append(b)
            t.buffer = len(buffers) - 1
        tensors.append(t)
        return len(tensors) - 1

    x = tensor("input", (1, model.n_inputs), s.TensorType.INT8, quant(model.scales[0], model.input_zero_point))
    operators = []
    for i, layer in enumerate(model.layers):
        n_out = layer.weights.shape[0]
        w_scale = model.weight_scales(i)
        w = tensor(f"dense_{i}/weights", layer.weights.shape, s.TensorType.INT8,
                   quant(w_scale, np.zeros(n_out, dtype=np.int64)), layer.weights.astype("<i1"))
        b = tensor(f"dense_{i}/bias", (n_out,), s.TensorType.INT32,
                   quant(model.scales[i] * w_scale, np.zeros(n_out, dtype=np.int64)), layer.bias.astype("<i4"))
        name = "output" if i == len(model.layers) - 1 else f"dense_{i}/out"
        y = tensor(name, (1, n_out), s.TensorType.INT8, quant(model.scales[i + 1], layer.output_zero_point))
        opt = s.FullyConnectedOptionsT()
        opt.fusedActivationFunction = s.ActivationFunctionType.RELU if layer.relu else \
            s.ActivationFunctionType.NONE
        opt.weightsFormat = s.FullyConnectedOptionsWeightsFormat.DEFAULT
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 0, [x, w, b], [y]
        op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.FullyConnectedOptions, opt
        operators.append(op)
        x = y
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.FULLY_CONNECTED
    code.version = FC_OPERATOR_VERSION
    sub = s.SubGraphT()
    sub.tensors, sub.operators, sub.inputs, sub.outputs, sub.name = tensors, operators, [0], [x], "main"
    m = s.ModelT()
    m.version, m.operatorCodes, m.subgraphs, m.buffers = 3, [code], [sub], buffers
    m.description = f"tinywarden int8 dense autoencoder {model.model_id}".strip()
    builder = flatbuffers.Builder(4096)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def export_tflite(program: Program, path: Path) -> Path:
    """Write the program's int8 dense autoencoder to ``path`` (a ``.tflite`` file); returns the path."""
    path = Path(path)
    data = to_tflite_bytes(dense_int8(program))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_export(path, data)


def export_tflite_target(pipeline: Any, out_dir: Path, source: str = "<model>") -> list[Path]:
    """The ``tflite`` target of ``tinywarden export``: ``out_dir/tinywarden_model.tflite`` from the int8
    program stored in the loaded model file."""
    from tinywarden.quantize import load_program

    try:
        return [export_tflite(load_program(pipeline, source), Path(out_dir) / "tinywarden_model.tflite")]
    except ExportError as exc:
        raise ExportError(f"{source}: {exc}") from None
