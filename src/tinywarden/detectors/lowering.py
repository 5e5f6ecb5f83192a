"""What a family's int8 lowering receives and returns, and the quantization helpers lowerings share.

A detector family lowers its fitted model to integer ops in its own module (``Detector.lower``);
:func:`tinywarden.quantize.quantize_pipeline` gives it a :class:`LoweringContext` (the pipeline's scaling
and how the model input is reached from the int16 samples), puts the feature ops in front of its ops,
chooses the score shift and calibrates the integer threshold.

Choices shared by the families, each for a reason:

* weights: int8 per output channel, symmetric (:func:`int8_rows`); layers as CMSIS-NN's, int32 bias
  (:func:`quantize_layer`);
* features -> model input: one requantization per feature (:func:`requantize_features`), folding the
  pipeline's scaler in; ``f`` is first shifted right so one unit is at most a quarter of an output step;
* distance models: inputs and reference points on one symmetric int16 scale (:func:`distance_input`),
  ``Z_HEADROOM`` beyond the largest normal value, because a z-score of 50 must stay larger than one of 10.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinywarden.arith import (
    INT8_MAX,
    INT8_MIN,
    INT16_MAX,
    INT16_MIN,
    INT32_MAX,
    QParams,
    choose_qparams,
    quantize_multiplier,
    round_half_away,
)
from tinywarden.errors import ConfigError
from tinywarden.kernels import Op, TensorSpec

#: How far beyond the largest normal value the int16 z-scores / distance inputs reach.
Z_HEADROOM = 16.0
#: Where a feature's requantization offset needs more than 16 bits (its mean far from zero for its spread), the
#: feature is shifted further right until every offset fits int16, if one unit of the shifted value then stays
#: within this many output steps: the module's offsets take 2 bytes a feature instead of 4 (132 B of flash on the
#: default 66 inputs, which put the adapting default module over 8 KB on Cortex-M0+ on some devices' data).
NARROW_UNIT_STEPS = 1.0
#: How far beyond the normal model inputs (and reconstructions) the autoencoders' int8 input reaches.
INPUT_HEADROOM = 2.0
#: The most inputs one output of an int8 layer (:func:`quantize_layer`) sums: each product of an int8 weight and an
#: input less its zero point is at most 127 * 255, and their sum stays below 2**30, so with a bias of at most 2**30
#: the C kernels' int32 accumulator never overflows.
MAX_FAN_IN = (2**30 - 1) // (255 * INT8_MAX)


@dataclass(frozen=True)
class LoweringContext:
    """What a lowering knows of the pipeline: the scaled fit inputs and how the int16 samples reach them.

    ``mu``/``sigma`` are the pipeline's scaling (model input = (raw - mu) / sigma). For a feature model,
    ``affine = (a, b)`` gives each raw feature as ``a * f + b`` of the integer feature ``f`` (tensor
    ``"features"``); for a window model, ``win_scale = (s, z)`` gives each channel's raw value as
    ``s * (q + z)`` of the int16 sample ``q`` (tensor ``"window"``).
    """

    fit_scaled: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    affine: tuple[np.ndarray, np.ndarray] | None = None
    win_scale: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def n_inputs(self) -> int:
        return int(np.prod(self.fit_scaled.shape[1:]))

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        """``(a, b)`` of the integer features; a ConfigError for a window model."""
        if self.affine is None:
            raise ConfigError("this lowering needs window features, but the pipeline feeds the raw window")
        return self.affine

    def window(self) -> tuple[np.ndarray, np.ndarray]:
        """``(s, z)`` per channel of the int16 window; a ConfigError for a feature model."""
        if self.win_scale is None:
            raise ConfigError("this lowering needs the raw window, but the pipeline feeds features")
        return self.win_scale

    def feature_input(self, out: QParams, kind: str, mu: np.ndarray | None = None,
                      sigma: np.ndarray | None = None) -> Op:
        """The op mapping the integer features to ``out``-quantized ``(raw - mu) / sigma`` (the pipeline's
        own scaling unless ``mu``/``sigma`` fold more in)."""
        return requantize_features(*self.features(), self.mu if mu is None else mu,
                                   self.sigma if sigma is None else sigma, out, kind)

    def window_input(self, q_in: QParams) -> Op:
        """The op rescaling the int16 window per channel to the int8 model input ``q_in``."""
        s_c, z_c = self.window()
        ms = [quantize_multiplier(float(r)) for r in s_c / (self.sigma * q_in.scale)]
        return Op("requantize_s16_s8", ("window",), "input",
                  {"zero_point": q_in.zero_point, "act_min": INT8_MIN, "act_max": INT8_MAX},
                  {"offset": np.clip(round_half_away(self.mu / s_c - z_c), -(2**31), INT32_MAX).astype(np.int32),
                   "multiplier": np.array([m for m, _ in ms], dtype=np.int32),
                   "shift": np.array([sh for _, sh in ms], dtype=np.int8)})


@dataclass
class Lowered:
    """A family's part of the program: tensors and ops from the model input to the int32 ``"score"``
    tensor (which the quantizer declares), and real scales for reports (``score_unit``, ``input_scale`` ...)."""

    tensors: list[TensorSpec] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def requantize_features(a: np.ndarray, b: np.ndarray, mu: np.ndarray, sigma: np.ndarray, out: QParams,
                        kind: str) -> Op:
    """An op mapping integer features ``f`` to ``out``-quantized ``((a f + b) - mu) / sigma``.

    ``f`` is first shifted right by ``pre_shift`` so that one unit of the shifted value is at most a
    quarter of an output step (keeping the int32 difference in range with no visible precision loss); where
    that leaves an offset beyond int16, further while one unit stays within :data:`NARROW_UNIT_STEPS` output
    steps, if every offset then fits int16 (the C then stores them in 16 bits).
    """
    real = a / (sigma * out.scale)
    pre = np.maximum(0, np.floor(np.log2(0.25 / real))).astype(np.int64)
    pre = np.minimum(pre, 62)

    def offsets(pre: np.ndarray) -> np.ndarray:  # floor-shifting drops half a unit on average: put it back
        return round_half_away((mu - b) / a / 2.0**pre - np.where(pre > 0, 0.5, 0.0))

    # The offset is stored as int32: where it does not fit (a feature far from zero relative to its
    # spread), shift the feature further right instead; one unit then grows past a quarter step only there.
    while True:
        offset = offsets(pre)
        big = (np.abs(offset) > INT32_MAX) & (pre < 62)
        if not big.any():
            break
        pre = np.where(big, pre + 1, pre)
    narrow, narrowed = pre, offset
    while True:
        wide = np.abs(narrowed) > INT16_MAX
        step = wide & (narrow < 62) & (real * 2.0 ** (narrow + 1) <= NARROW_UNIT_STEPS)
        if not step.any():
            break
        narrow = np.where(step, narrow + 1, narrow)
        narrowed = offsets(narrow)
    if not wide.any():
        pre, offset = narrow, narrowed
    mult_shift = [quantize_multiplier(float(r * 2.0**p)) for r, p in zip(real, pre, strict=True)]
    return Op(kind, ("features",), "input", {"zero_point": out.zero_point, "act_min": out.qmin, "act_max": out.qmax},
              {"pre_shift": pre.astype(np.int8), "offset": np.clip(offset, -INT32_MAX, INT32_MAX).astype(np.int32),
               "multiplier": np.array([m for m, _ in mult_shift], dtype=np.int32),
               "shift": np.array([s for _, s in mult_shift], dtype=np.int8)})


def int8_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 quantization of a 2-D weight matrix: ``(int8 values as float, scale per row)``.

    ``w ~= values * scale[:, None]``, each row's largest magnitude at 127; an all-zero row gets scale 1.
    """
    scale = np.abs(w).max(axis=1) / INT8_MAX
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip(round_half_away(w / scale[:, None]), -INT8_MAX, INT8_MAX), scale


def quantize_layer(kind: str, src: str, dst: str, weight: np.ndarray, bias: np.ndarray, q_in: QParams,
                   q_out: QParams, relu: bool, attrs: dict[str, Any] | None = None) -> Op:
    """A fully connected or 1-D conv layer: per-output-channel symmetric int8 weights, int32 bias."""
    flat = weight.reshape(weight.shape[0], -1)
    if flat.shape[1] > MAX_FAN_IN:
        raise ConfigError(f"layer fan-in {flat.shape[1]} is too large for int32 accumulation (max {MAX_FAN_IN})")
    wq_flat, w_scale = int8_rows(flat)
    wq = wq_flat.reshape(weight.shape)
    # |bias| <= 2**30 plus the fan-in bound above keep the C kernels' int32 accumulator from overflowing
    bq = np.clip(round_half_away(bias / (q_in.scale * w_scale)), -(2**30), 2**30)
    mult_shift = [quantize_multiplier(float(q_in.scale * s / q_out.scale)) for s in w_scale]
    act_min = max(q_out.zero_point, INT8_MIN) if relu else INT8_MIN
    return Op(kind, (src,), dst,
              {"input_offset": -q_in.zero_point, "output_offset": q_out.zero_point, "act_min": act_min,
               "act_max": INT8_MAX, **(attrs or {})},
              {"weights": wq.astype(np.int8), "bias": bq.astype(np.int32),
               "multiplier": np.array([m for m, _ in mult_shift], dtype=np.int32),
               "shift": np.array([s for _, s in mult_shift], dtype=np.int8)})


def act_qparams(a: np.ndarray) -> QParams:
    """Asymmetric int8 quantization of activations from their observed range."""
    return choose_qparams(float(a.min()), float(a.max()), "int8")


def autoencoder_input(ctx: LoweringContext, recon: np.ndarray) -> QParams:
    """The int8 input (and output) quantization of a reconstruction model: ``INPUT_HEADROOM`` beyond the
    normal inputs and their reconstructions, so the score is simply ``sum (q_out - q_in)**2``."""
    both = np.concatenate([ctx.fit_scaled.ravel(), recon.ravel()])
    return choose_qparams(float(both.min()) * INPUT_HEADROOM, float(both.max()) * INPUT_HEADROOM, "int8")


def distance_input(ctx: LoweringContext, refs: np.ndarray, low: Lowered) -> tuple[QParams, np.ndarray]:
    """The int16 input of a distance detector (k-means, prototypes, support vectors) and its references.

    Inputs and references share one symmetric int16 scale, since a distance mixes every feature; appends the
    input tensor and its feature requantization op to ``low``, returns ``(qparams, references as int16)``.
    """
    top = max(float(np.abs(ctx.fit_scaled).max()), float(np.abs(refs).max())) * Z_HEADROOM
    q_x = choose_qparams(-top, top, "int16", symmetric=True)
    low.tensors.append(TensorSpec("input", "int16", (ctx.n_inputs,)))
    low.ops.append(ctx.feature_input(q_x, "requantize_s64_s16"))
    return q_x, np.clip(round_half_away(refs / q_x.scale), INT16_MIN, INT16_MAX).astype(np.int16)
