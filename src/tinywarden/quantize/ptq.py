"""Post-training quantization of a fitted :class:`~tinywarden.pipeline.Pipeline` into an integer
:class:`~tinywarden.program.Program` (TFLite Micro's *prepare* step: every float becomes an integer
constant here, so the device's *eval* is integer only).

Calibration uses exactly the normal windows :meth:`Pipeline.split_inputs` gives: ranges (sample
quantization, activations) come from the *fit* part, and the integer threshold is recalibrated on the
*held-out* part at the pipeline's target FPR, by running the integer program itself.

Choices, each for a reason:

* samples: per channel, ``int16`` centred on the middle of the fit range with ``headroom`` times that
  half-range (and at least ``SIGMA_SPAN`` standard deviations) on each side, so values far outside
  normal still resolve before saturating;
* features -> model input: one requantization per feature (:func:`tinywarden.program.features_s16`
  gives each integer feature as ``a * f + b`` of the float one), folding the pipeline's scaler in;
* autoencoders: int8 per-channel symmetric weights, int8 asymmetric activations from the fit
  activations' min/max, int32 bias; the output layer is quantized with the *input's* parameters so the
  score is simply ``sum (q_out - q_in)**2``;
* EWMA and k-means: int16 z-scores / scaled features (a distance needs one common scale), because a
  z-score of 50 must stay larger than one of 10, which int8 with normal-range resolution cannot do.
* knn and one-class SVM (RBF): as k-means, int16 features and prototypes / support vectors on one
  scale; the SVM's ``exp(-gamma d2)`` is ``2**-u`` from a 256-entry Q15 table (RFF would need cosines);
* isolation forest: features requantized straight into the trees' own Q7.8 scale, so the device walks
  the very trees the float model walks;
* bounds and AR residuals: they run on the int16 window itself, their learned levels mapped into the
  sample domain (bounds as int32 levels, AR as Q20 coefficients with one int64 bias per channel);
* GRU: int8 weights, Q12 gate pre-activations, int16 Q15 state, tanh/sigmoid from one Q15 table.

Integer scores are monotone in the float scores up to rounding, so ranking quality (ROC AUC) carries over.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinywarden import __version__
from tinywarden.calibrate import threshold_at_fpr
from tinywarden.detectors import ConvAutoencoder, DenseAutoencoder, EWMAZScore, KMeansDistance
from tinywarden.detectors.ar import MAD_TO_STD, ARResidual
from tinywarden.detectors.bounds import BoundsDetector
from tinywarden.detectors.gru import GRUAutoencoder
from tinywarden.detectors.iforest import FRAC_BITS as IFOREST_FRAC_BITS
from tinywarden.detectors.iforest import TrimmedIsolationForest
from tinywarden.detectors.ocsvm import BudgetOneClassSVM
from tinywarden.detectors.pca import PCAReconstruction
from tinywarden.detectors.prototypes import PrototypeKNN
from tinywarden.errors import ConfigError
from tinywarden.features import batch_windows, window_end_rows
from tinywarden.pipeline import Pipeline, normal_window_mask
from tinywarden.program import (
    FEATURE_CODES,
    MAX_WINDOW,
    PCA_MAX_AXES,
    PCA_MAX_INPUTS,
    Op,
    Program,
    TensorSpec,
    run_windows,
    score_total,
)
from tinywarden.quantize.scheme import (
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
from tinywarden.telemetry.series import Series

#: How far beyond the normal samples' half-range each channel's int16 range reaches.
SAMPLE_HEADROOM = 4.0
#: ... and at least this many of the channel's normal standard deviations either side of its centre.
SIGMA_SPAN = 1000.0
#: How far beyond the largest normal value the int16 z-scores of EWMA / k-means reach.
Z_HEADROOM = 16.0
#: How far beyond the normal model inputs (and reconstructions) the autoencoders' int8 input reaches.
INPUT_HEADROOM = 2.0
#: Normal scores stay this many times below the int32 limit after the score's right shift.
SCORE_HEADROOM = 256
#: Fractional bits of the bounds detector's integer violation (1.0 = one width of the learned range).
BOUNDS_FRAC_BITS = 12
#: Fractional bits of the AR coefficients (|coefficient| < 2**11 in int32) and of its z-scores.
AR_FRAC_BITS = 20
AR_Z_BITS = 12
#: The one-class SVM's RBF kernel 2**-u reads a table of 2**RBF_FRAC_BITS int16 Q15 entries (512 B at 8).
RBF_FRAC_BITS = 8


def normal_windows(pipeline: Pipeline, series: Series) -> tuple[np.ndarray, np.ndarray]:
    """Raw float windows ``(n, window, channels)`` of the normal windows: ``(fit part, held-out part)``.

    The same windows, in the same order and split, as :meth:`Pipeline.split_inputs`.
    """
    values = pipeline._select(series)
    ends = window_end_rows(len(values), pipeline.window, pipeline.stride)
    keep = normal_window_mask(series.labels, ends, pipeline.window)
    wins = np.concatenate(list(batch_windows(values, pipeline.window, pipeline.stride)), axis=0)[keep]
    fit_idx, cal_idx = pipeline.split_index(len(wins), series)
    return wins[fit_idx], wins[cal_idx]


def _sample_quantization(pipeline: Pipeline, fit_windows: np.ndarray, headroom: float
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per channel ``(offset float32, mul float32, zero int32, scale float64)`` of the int16 samples."""
    rows = fit_windows.reshape(-1, fit_windows.shape[2])
    lo, hi = rows.min(axis=0), rows.max(axis=0)
    center, half = (lo + hi) / 2.0, (hi - lo) / 2.0
    w = pipeline.window
    # rms needs |S1 + W*zero| < 2**31 (program.features_s16): bound the zero, i.e. widen the scale
    zero_bound = (INT32_MAX - w * 32768) // w
    # a channel nearly constant while learning may move far in the field: its range also reaches
    # SIGMA_SPAN standard deviations (still resolving 1/32 of one), so it does not saturate at once
    sigma = rows.std(axis=0)
    sigma = np.where(sigma > 0, sigma, 1e-3 * np.abs(rows).mean(axis=0))
    span = np.maximum.reduce([half * headroom, sigma * SIGMA_SPAN, np.abs(center) * INT16_MAX / zero_bound,
                              1e-6 * np.maximum(1.0, np.abs(center))])
    mul = (INT16_MAX / span).astype(np.float32)
    zero = np.clip(round_half_away(center * mul.astype(np.float64)), -zero_bound, zero_bound).astype(np.int32)
    offset = (zero / mul.astype(np.float64)).astype(np.float32)
    return offset, mul, zero, 1.0 / mul.astype(np.float64)


def feature_affine(pipeline: Pipeline, scale: np.ndarray, zero: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` per feature column with ``float feature ~= a * integer feature + b`` (see features_s16)."""
    w = pipeline.window
    a, b = [], []
    for c in range(len(scale)):
        s, off = scale[c], zero[c] * scale[c]
        for f in pipeline.features:
            if f == "mean":
                a.append(s / w), b.append(off)
            elif f in ("min", "max", "last"):
                a.append(s), b.append(off)
            elif f in ("std", "rms"):
                a.append(s / w), b.append(0.0)
            elif f.startswith("band"):
                a.append(s * s / (2 ** int(f[4:]) * w)), b.append(0.0)
            elif f == "crossings":
                a.append(1.0 / (w - 1)), b.append(0.0)
            elif f == "diff_abs_mean":
                a.append(s / (w - 1)), b.append(0.0)
            else:
                a.append(s), b.append(0.0)
    return np.array(a), np.array(b)


def requantize_features(a: np.ndarray, b: np.ndarray, mu: np.ndarray, sigma: np.ndarray, out: QParams,
                        kind: str) -> Op:
    """An op mapping integer features ``f`` to ``out``-quantized ``((a f + b) - mu) / sigma``.

    ``f`` is first shifted right by ``pre_shift`` so that one unit of the shifted value is at most a
    quarter of an output step (keeping the int32 difference in range with no visible precision loss).
    """
    real = a / (sigma * out.scale)
    pre = np.maximum(0, np.floor(np.log2(0.25 / real))).astype(np.int64)
    pre = np.minimum(pre, 62)
    # The offset is stored as int32: where it does not fit (a feature far from zero relative to its
    # spread), shift the feature further right instead; one unit then grows past a quarter step only there.
    while True:
        # floor-shifting drops half a unit on average: put it back in the offset
        offset = round_half_away((mu - b) / a / 2.0**pre - np.where(pre > 0, 0.5, 0.0))
        big = (np.abs(offset) > INT32_MAX) & (pre < 62)
        if not big.any():
            break
        pre = np.where(big, pre + 1, pre)
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
    if flat.shape[1] * 255 * 127 >= 2**30:
        raise ConfigError(f"layer fan-in {flat.shape[1]} is too large for int32 accumulation (max 33000)")
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


def _dense_layers(det: DenseAutoencoder) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[bool]]:
    """``(layers, relu after each)`` of a fully connected autoencoder."""
    layers = det.layers()
    return layers, [i < len(layers) - 1 for i in range(len(layers))]


def _dense_activations(det: DenseAutoencoder, x: np.ndarray) -> list[np.ndarray]:
    outs, h = [], x
    layers, relus = _dense_layers(det)
    for (w, b), relu in zip(layers, relus, strict=True):
        h = h @ w.T + b
        if relu:
            h = np.maximum(h, 0.0)
        outs.append(h)
    return outs


def _conv_activations(det: ConvAutoencoder, x: np.ndarray) -> list[np.ndarray]:
    import torch

    if getattr(det, "_module", None) is None:
        det._restore()
    m = det._module
    outs = []
    with torch.no_grad():
        h = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).transpose(1, 2)
        for conv in m.enc:
            h = torch.relu(conv(h))
            outs.append(h.transpose(1, 2).double().numpy())
        for i, conv in enumerate(m.dec):
            h = conv(torch.repeat_interleave(h, 2, dim=2))
            if i < len(m.dec) - 1:
                h = torch.relu(h)
            outs.append(h.transpose(1, 2).double().numpy())
    return outs


def _act_qparams(a: np.ndarray) -> QParams:
    return choose_qparams(float(a.min()), float(a.max()), "int8")


def _gru_ops(det: GRUAutoencoder, fit_scaled: np.ndarray, mu: np.ndarray, sigma: np.ndarray,
             win_scale: tuple[np.ndarray, np.ndarray]) -> tuple[list[TensorSpec], list[Op], dict[str, Any]]:
    """The GRU on the int8-rescaled window: gates in Q12, state in Q15, read-out in the input's
    quantization (as the autoencoders' output layer), so the score is ``sum (q_out - q_in)**2``."""
    import torch

    from tinywarden.detectors._torch import single_thread
    from tinywarden.program import GRU_MAX_HIDDEN

    hidden = det.w_hh_.shape[1]
    if hidden > GRU_MAX_HIDDEN:
        raise ConfigError(f"the int8 GRU supports hidden <= {GRU_MAX_HIDDEN} (its state is on the C stack), "
                          f"got {hidden}")
    if getattr(det, "_module", None) is None:
        det._restore()
    sample = fit_scaled[np.linspace(0, len(fit_scaled) - 1, min(len(fit_scaled), 512)).astype(np.int64)]
    with single_thread(), torch.no_grad():
        recon = det._module(torch.from_numpy(np.ascontiguousarray(sample, dtype=np.float32))).double().numpy()
    both = np.concatenate([fit_scaled.ravel(), recon.ravel()])
    q_in = choose_qparams(float(both.min()) * INPUT_HEADROOM, float(both.max()) * INPUT_HEADROOM, "int8")
    s_c, z_c = win_scale
    ms = [quantize_multiplier(float(r)) for r in s_c / (sigma * q_in.scale)]
    window_op = Op("requantize_s16_s8", ("window",), "input",
                   {"zero_point": q_in.zero_point, "act_min": INT8_MIN, "act_max": INT8_MAX},
                   {"offset": np.clip(round_half_away(mu / s_c - z_c), -(2**31), INT32_MAX).astype(np.int32),
                    "multiplier": np.array([m for m, _ in ms], dtype=np.int32),
                    "shift": np.array([sh for _, sh in ms], dtype=np.int8)})
    q12, q15 = QParams(2.0**-12, 0, "int32"), QParams(2.0**-15, 0, "int16")
    consts: dict[str, np.ndarray] = {}
    for name, (w, b), q_src, q_dst in (("ih", (det.w_ih_, det.b_ih_), q_in, q12),
                                       ("hh", (det.w_hh_, det.b_hh_), q15, q12),
                                       ("out", (det.w_out_, det.b_out_), q15, q_in)):
        layer = quantize_layer("fully_connected_s8", "input", "recon", w, b, q_src, q_dst, False).consts
        consts.update({f"w_{name}": layer["weights"], f"b_{name}": layer["bias"],
                       f"{name}_multiplier": layer["multiplier"], f"{name}_shift": layer["shift"]})
    grid = -8.0 + np.arange(257) / 16.0  # tanh at steps of 1/16 over [-8, 8], Q15
    consts["tanh"] = round_half_away(32767.0 * np.tanh(grid)).astype(np.int16)
    shape = tuple(fit_scaled.shape[1:])
    tensors = [TensorSpec("input", "int8", shape), TensorSpec("recon", "int8", shape)]
    ops = [window_op,
           Op("gru_s8", ("input",), "recon",
              {"hidden": hidden, "forecast": int(det.mode == "forecast"), "input_offset": -q_in.zero_point,
               "output_offset": q_in.zero_point}, consts),
           Op("sum_sq_diff_s8", ("recon", "input"), "score", {"shift": 0})]
    info = {"score_unit": q_in.scale**2 / int(np.prod(shape)), "input_scale": q_in.scale,
            "input_zero_point": q_in.zero_point}
    return tensors, ops, info


def _distance_input(fit_scaled: np.ndarray, refs: np.ndarray, affine: tuple[np.ndarray, np.ndarray],
                    mu: np.ndarray, sigma: np.ndarray, tensors: list[TensorSpec], ops: list[Op],
                    ) -> tuple[QParams, np.ndarray]:
    """The int16 input of a distance detector (k-means, prototypes) and its reference points.

    Inputs and references share one symmetric int16 scale, since a distance mixes every feature; appends the
    input tensor and its feature requantization op, returns ``(qparams, references as int16)``.
    """
    top = max(float(np.abs(fit_scaled).max()), float(np.abs(refs).max())) * Z_HEADROOM
    q_x = choose_qparams(-top, top, "int16", symmetric=True)
    tensors.append(TensorSpec("input", "int16", (int(np.prod(fit_scaled.shape[1:])),)))
    ops.append(requantize_features(*affine, mu, sigma, q_x, "requantize_s64_s16"))
    return q_x, np.clip(round_half_away(refs / q_x.scale), INT16_MIN, INT16_MAX).astype(np.int16)


def _model_ops(pipeline: Pipeline, fit_scaled: np.ndarray, mu: np.ndarray, sigma: np.ndarray,
               affine: tuple[np.ndarray, np.ndarray] | None, win_scale: tuple[np.ndarray, np.ndarray] | None,
               ) -> tuple[list[TensorSpec], list[Op], dict[str, Any]]:
    """Tensors and ops from the model input to the score tensor, and real scales for reports."""
    det = pipeline.detector
    n_in = int(np.prod(fit_scaled.shape[1:]))
    tensors: list[TensorSpec] = []
    ops: list[Op] = []
    info: dict[str, Any] = {}
    if isinstance(det, PCAReconstruction):
        assert affine is not None
        if n_in > PCA_MAX_INPUTS or len(det.components_) > PCA_MAX_AXES:
            raise ConfigError(f"PCA with {len(det.components_)} components on {n_in} features: the int8 path "
                              f"takes at most {PCA_MAX_AXES} components and {PCA_MAX_INPUTS} features (use fewer "
                              "components, features per channel or channels)")
        # The PCA mean folds into the feature requantization, so the int16 input is already centred.
        centred = fit_scaled - det.mean_
        top = float(np.abs(centred).max()) * Z_HEADROOM
        q_x = choose_qparams(-top, top, "int16", symmetric=True)
        tensors.append(TensorSpec("input", "int16", (n_in,)))
        ops.append(requantize_features(*affine, mu + sigma * det.mean_, sigma, q_x, "requantize_s64_s16"))
        # k = 0 keeps no axis: one all-zero row gives the same score (the whole energy) without a
        # zero-length C array.
        wq, w_scale = int8_rows(det.components_ if len(det.components_) else np.zeros((1, n_in)))
        mult_shift = [quantize_multiplier(float(sc)) for sc in w_scale]
        # The rounded axes are not exactly orthonormal: D = (W W^T)^-1 - I restores the projection onto
        # their span (an int8 upper triangle, scaled by a power of two).
        dq = wq * w_scale[:, None]
        gram = np.linalg.pinv(dq @ dq.T) - np.eye(len(dq))
        upper = gram[np.triu_indices(len(dq))]
        g_top = float(np.abs(upper).max())
        gram_shift = int(np.clip(np.floor(np.log2(INT8_MAX / g_top)) if g_top > 0 else 40, 1, 40))
        ops.append(Op("pca_residual_s16", ("input",), "score", {"shift": 0, "gram_shift": gram_shift},
                      {"weights": wq.astype(np.int8),
                       "multiplier": np.array([m for m, _ in mult_shift], dtype=np.int32),
                       "shift": np.array([sh for _, sh in mult_shift], dtype=np.int8),
                       "gram": np.clip(round_half_away(upper * 2.0**gram_shift), -INT8_MAX, INT8_MAX).astype(np.int8)}))
        info["score_unit"] = q_x.scale**2 / n_in  # the float score is the mean squared error
        info["input_scale"] = q_x.scale
    elif isinstance(det, (DenseAutoencoder, ConvAutoencoder)):
        conv = isinstance(det, ConvAutoencoder)
        acts = _conv_activations(det, fit_scaled) if conv else _dense_activations(det, fit_scaled)
        both = np.concatenate([fit_scaled.ravel(), acts[-1].ravel()])
        q_in = choose_qparams(float(both.min()) * INPUT_HEADROOM, float(both.max()) * INPUT_HEADROOM, "int8")
        in_shape = tuple(fit_scaled.shape[1:])
        tensors.append(TensorSpec("input", "int8", in_shape))
        if conv:
            assert win_scale is not None
            s_c, z_c = win_scale
            real = s_c / (sigma * q_in.scale)
            ms = [quantize_multiplier(float(r)) for r in real]
            ops.append(Op("requantize_s16_s8", ("window",), "input",
                          {"zero_point": q_in.zero_point, "act_min": INT8_MIN, "act_max": INT8_MAX},
                          {"offset": np.clip(round_half_away(mu / s_c - z_c), -(2**31), INT32_MAX).astype(np.int32),
                           "multiplier": np.array([m for m, _ in ms], dtype=np.int32),
                           "shift": np.array([s for _, s in ms], dtype=np.int8)}))
        else:
            assert affine is not None
            ops.append(requantize_features(*affine, mu, sigma, q_in, "requantize_s64_s8"))
        layers, relus = (det.layers(), []) if conv else _dense_layers(det)
        prev, q_prev = "input", q_in
        n_enc = len(layers) // 2
        for i, (w, b) in enumerate(layers):
            last = i == len(layers) - 1
            q_out = q_in if last else _act_qparams(acts[i])
            name = "recon" if last else f"h{i}"
            tensors.append(TensorSpec(name, "int8", tuple(acts[i].shape[1:])))
            if conv:
                attrs = {"stride": 2 if i < n_enc else 1, "pad": w.shape[2] // 2, "upsample": 1 if i < n_enc else 2}
                ops.append(quantize_layer("convolve_1d_s8", prev, name, w, b, q_prev, q_out, not last, attrs))
            else:
                ops.append(quantize_layer("fully_connected_s8", prev, name, w, b, q_prev, q_out, relus[i]))
            prev, q_prev = name, q_out
        ops.append(Op("sum_sq_diff_s8", ("recon", "input"), "score", {"shift": 0}))
        info["score_unit"] = q_in.scale**2 / n_in  # one integer unit of score in float-score units
        info["input_scale"], info["input_zero_point"] = q_in.scale, q_in.zero_point
    elif isinstance(det, EWMAZScore):
        assert affine is not None
        sd = np.maximum(np.sqrt(det.var_), det.min_std)
        z = (fit_scaled - det.mean_) / sd
        q_z = choose_qparams(-float(np.abs(z).max()) * Z_HEADROOM, float(np.abs(z).max()) * Z_HEADROOM, "int16",
                             symmetric=True)
        tensors.append(TensorSpec("input", "int16", (n_in,)))
        ops.append(requantize_features(*affine, mu + sigma * det.mean_, sigma * sd, q_z, "requantize_s64_s16"))
        kind = "max_abs_s16" if det.aggregate == "max" else "sum_sq_s16"
        ops.append(Op(kind, ("input",), "score", {"shift": 0}))
        info["input_scale"] = q_z.scale
    elif isinstance(det, KMeansDistance):
        assert affine is not None
        q_x, cq = _distance_input(fit_scaled, det.centroids_, affine, mu, sigma, tensors, ops)
        ops.append(Op("min_sq_dist_s16", ("input",), "score", {"shift": 0}, {"centroids": cq}))
        info["input_scale"] = q_x.scale
    elif isinstance(det, PrototypeKNN):
        assert affine is not None
        q_x, pq = _distance_input(fit_scaled, det.prototypes_, affine, mu, sigma, tensors, ops)
        ops.append(Op("knn_dist_s16", ("input",), "score", {"k": min(det.k, len(pq)), "shift": 0},
                      {"prototypes": pq}))
        info["input_scale"] = q_x.scale
    elif isinstance(det, BoundsDetector):
        # the rules apply to the int16 samples themselves: map the learned bounds into that domain
        assert win_scale is not None
        s_c, z_c = win_scale
        per_q = sigma / s_c  # int16 steps per scaled unit, per channel

        def to_q(v: np.ndarray) -> np.ndarray:
            q = round_half_away((v * sigma + mu) / s_c - z_c)
            return np.clip(q, -(2**30), 2**30).astype(np.int32)

        # below one int16 step the samples cannot resolve a bound anyway; the floor keeps multipliers < 2**30
        width = np.maximum((det.hi_ - det.lo_) * per_q, 1.0)
        rate = det.rate_ * per_q
        unit = float(2**BOUNDS_FRAC_BITS)
        vm = [quantize_multiplier(unit / w) for w in width]
        rm = [quantize_multiplier(unit / r) for r in np.maximum(rate, 1.0)]
        ops.append(Op("bounds_violation_s16", ("window",), "score", {"shift": 0}, {
            "lo": to_q(det.lo_), "hi": to_q(det.hi_),
            "rate": np.clip(round_half_away(rate), 0, 2**30).astype(np.int32),
            "value_multiplier": np.array([m for m, _ in vm], dtype=np.int32),
            "value_shift": np.array([sh for _, sh in vm], dtype=np.int8),
            "rate_multiplier": np.array([m for m, _ in rm], dtype=np.int32),
            "rate_shift": np.array([sh for _, sh in rm], dtype=np.int8)}))
        info["score_unit"] = 1.0 / unit
    elif isinstance(det, TrimmedIsolationForest):
        # the trees already compare int16 Q7.8 scaled features: requantize straight into that scale
        assert affine is not None
        tensors.append(TensorSpec("input", "int16", (n_in,)))
        q_f = QParams(1.0 / (1 << IFOREST_FRAC_BITS), 0, "int16")
        ops.append(requantize_features(*affine, mu, sigma, q_f, "requantize_s64_s16"))
        ops.append(Op("iforest_path_s16", ("input",), "score", {"shift": 0},
                      {"feature": det.feature_.astype(np.uint8), "threshold": det.threshold_.astype(np.int16),
                       "left": det.left_.astype(np.uint8), "tree_start": det.tree_start_.astype(np.uint16)}))
        info["input_scale"] = q_f.scale
    elif isinstance(det, ARResidual):
        # the forecast runs on the int16 samples: fold the pipeline's scaling, the intercept and the
        # residual median into one bias per channel, and MAD and horizon into one requantization
        assert win_scale is not None
        s_c, z_c = win_scale
        w, order = fit_scaled.shape[1], det.coef_.shape[1]
        horizon = det.horizon if det.horizon is not None else w - order
        if order > 16 or np.abs(det.coef_).max() * 2**AR_FRAC_BITS >= INT32_MAX:
            raise ConfigError(f"AR order {order} or a coefficient ({np.abs(det.coef_).max():.4g}) is beyond the "
                              f"int8 path (order <= 16, |coefficient| < {INT32_MAX / 2**AR_FRAC_BITS:.0f})")
        per_q = sigma / s_c
        level = mu / s_c - z_c  # the pipeline's offset in int16 steps
        bias = level * (1.0 - det.coef_.sum(axis=1)) + (det.intercept_ + det.median_) * per_q
        real = 2.0**AR_Z_BITS / (2.0**AR_FRAC_BITS * per_q * MAD_TO_STD * det.mad_ * horizon)
        pre = np.minimum(np.maximum(0, np.floor(np.log2(0.25 / real))), 62).astype(np.int64)
        ms = [quantize_multiplier(float(r * 2.0**p)) for r, p in zip(real, pre, strict=True)]
        ops.append(Op("ar_residual_s16", ("window",), "score",
                      {"order": order, "horizon": horizon, "frac_bits": AR_FRAC_BITS,
                       "aggregate": 0 if det.aggregate == "max" else 1, "shift": 0},
                      {"coef": round_half_away(det.coef_ * 2**AR_FRAC_BITS).astype(np.int32).ravel(),
                       "bias": round_half_away(bias * 2**AR_FRAC_BITS).astype(np.int64),
                       "pre_shift": pre.astype(np.int32),
                       "multiplier": np.array([m for m, _ in ms], dtype=np.int32),
                       "shift": np.array([sh for _, sh in ms], dtype=np.int8)}))
        info["z_scale"] = 2.0**-AR_Z_BITS  # one unit of a channel's integer z-score
    elif isinstance(det, BudgetOneClassSVM):
        if det.kernel != "rbf":
            raise ConfigError("the int8 path of ocsvm needs kernel='rbf' (support vectors and an exp2 table); "
                              "kernel='rff' would need a cosine per random feature: train with kernel='rbf'")
        # as k-means: one common int16 scale for inputs and support vectors
        assert affine is not None
        sv, alpha = det.support_vectors_, det.dual_coef_
        top = max(float(np.abs(fit_scaled).max()), float(np.abs(sv).max())) * Z_HEADROOM
        q_x = choose_qparams(-top, top, "int16", symmetric=True)
        tensors.append(TensorSpec("input", "int16", (n_in,)))
        ops.append(requantize_features(*affine, mu, sigma, q_x, "requantize_s64_s16"))
        # exp(-gamma d2) = 2**-u with u = gamma log2(e) d2, in Q RBF_FRAC_BITS
        real = float(det.gamma_[0]) * q_x.scale**2 * math.log2(math.e) * 2.0**RBF_FRAC_BITS
        pre = int(min(max(0, math.floor(math.log2(0.25 / real))), 62))
        mult, sh = quantize_multiplier(real * 2.0**pre)
        steps = np.arange(2**RBF_FRAC_BITS) / 2.0**RBF_FRAC_BITS
        table = np.minimum(round_half_away(32768.0 * 2.0**-steps), INT16_MAX).astype(np.int16)
        top_alpha = float(alpha.max()) if alpha.max() > 0 else 1.0
        # a Q15 table entry shifted right by 15 or more is 0: from there on, rank by the nearest distance
        attrs = {"frac_bits": RBF_FRAC_BITS, "tail_from": 15 << RBF_FRAC_BITS, "shift": 0}
        ops.append(Op("rbf_kernel_sum_s16", ("input",), "score", attrs, {
            "support_vectors": np.clip(round_half_away(sv / q_x.scale), INT16_MIN, INT16_MAX).astype(np.int16),
            "alpha": np.clip(round_half_away(alpha / top_alpha * INT16_MAX), 0, INT16_MAX).astype(np.int16),
            "exp2": table, "pre_shift": np.array([pre], dtype=np.int32),
            "multiplier": np.array([mult], dtype=np.int32), "shift": np.array([sh], dtype=np.int8)}))
        info["input_scale"] = q_x.scale
    elif isinstance(det, GRUAutoencoder):
        assert win_scale is not None
        tensors, ops, info = _gru_ops(det, fit_scaled, mu, sigma, win_scale)
    else:
        raise ConfigError(f"detector {det.name!r} has no int8 path "
                          "(supported: dense_ae, conv_ae, pca, ewma, kmeans, knn, bounds, iforest, ar, ocsvm, gru_ae)")
    tensors.append(TensorSpec("score", "int32", (1,)))
    return tensors, ops, info


def _with_score_shift(program: Program, fit_windows_q: np.ndarray) -> Program:
    """Choose the score op's right shift so normal totals sit SCORE_HEADROOM below the int32 limit."""
    env: dict[str, np.ndarray] = {"window": fit_windows_q}
    from tinywarden.program import KERNELS

    for op in program.ops[:-1]:
        env[op.dst] = KERNELS[op.kind].fn([env[s] for s in op.src], op)
    last = program.ops[-1]
    top = int(score_total([env[s] for s in last.src], last).max())
    shift = max(0, math.ceil(math.log2(max(top, 1) * SCORE_HEADROOM / INT32_MAX)))
    new_last = Op(last.kind, last.src, last.dst, {**last.attrs, "shift": shift}, last.consts)
    ops = (*program.ops[:-1], new_last)
    info = dict(program.info)
    if "score_unit" in info:
        info["score_unit"] *= 2.0**shift
    return Program(program.channels, program.window, program.stride, program.sample_offset, program.sample_mul,
                   program.sample_zero, program.tensors, ops, program.threshold, program.k, program.n, info)


def quantize_pipeline(pipeline: Pipeline, train_series: Series, headroom: float = SAMPLE_HEADROOM) -> Program:
    """The integer program of a fitted pipeline, calibrated on ``train_series`` (the series it was fitted on).

    >>> from tinywarden.detectors import EWMAZScore
    >>> rng = np.random.default_rng(0)
    >>> s = Series(np.arange(3000.0), rng.normal(size=(3000, 2)), ("a", "b"))
    >>> prog = quantize_pipeline(Pipeline(EWMAZScore(), window=32, stride=16).fit(s), s)
    >>> prog.window, [op.kind for op in prog.ops]
    (32, ['features_s16', 'requantize_s64_s16', 'sum_sq_s16'])
    """
    pipeline._check_fitted()
    if pipeline.window > MAX_WINDOW:
        raise ConfigError(f"the int8 path supports windows up to {MAX_WINDOW} samples, got {pipeline.window}")
    unsupported = sorted(set(pipeline.features) - set(FEATURE_CODES)) if pipeline.input_kind == "features" else []
    if unsupported:
        raise ConfigError(f"feature(s) {', '.join(unsupported)} have no integer definition in the int8 path")
    if not headroom >= 1.0:
        raise ConfigError(f"headroom must be >= 1, got {headroom}")
    fit_w, cal_w = normal_windows(pipeline, train_series)
    offset, mul, zero, s = _sample_quantization(pipeline, fit_w, headroom)
    c = len(pipeline.channels_)
    base = Program(tuple(pipeline.channels_), pipeline.window, pipeline.stride, offset, mul, zero, (), (), 0,
                   pipeline.k, pipeline.n)
    from tinywarden.program import quantize_samples

    def q(windows: np.ndarray) -> np.ndarray:
        n, w, _ = windows.shape
        return quantize_samples(base, windows.reshape(-1, c)).reshape(n, w, c)

    fit_q, cal_q = q(fit_w), q(cal_w)
    fit_inputs, _ = pipeline.split_inputs(train_series)
    fit_scaled = pipeline._scale(fit_inputs)
    tensors: list[TensorSpec] = []
    ops: list[Op] = []
    affine = win_scale = None
    if pipeline.input_kind == "features":
        codes = np.array([FEATURE_CODES[f] for f in pipeline.features], dtype=np.int32)
        tensors.append(TensorSpec("features", "int64", (c * len(pipeline.features),)))
        ops.append(Op("features_s16", ("window",), "features", {"window": pipeline.window},
                      {"codes": codes, "z0": zero.astype(np.int32)}))
        affine = feature_affine(pipeline, s, zero)
    else:
        win_scale = (s, zero.astype(np.float64))
    m_tensors, m_ops, info = _model_ops(pipeline, fit_scaled, np.asarray(pipeline.offset_),
                                        np.asarray(pipeline.scale_), affine, win_scale)
    info.update({"detector": pipeline.detector.name, "generator": f"tinywarden {__version__}",
                 "features": list(pipeline.features) if pipeline.input_kind == "features" else [],
                 "float_threshold": float(pipeline.threshold_), "float_bytes": int(pipeline.model_bytes_),
                 "target_fpr": pipeline.target_fpr})
    prog = Program(base.channels, base.window, base.stride, offset, mul, zero, tuple(tensors + m_tensors),
                   tuple(ops + m_ops), 0, pipeline.k, pipeline.n, info).validate()
    prog = _with_score_shift(prog, fit_q)
    cal_scores = run_windows(prog, cal_q)
    threshold = int(threshold_at_fpr(cal_scores.astype(np.float64), pipeline.target_fpr))
    info = {**prog.info, "calibration_fpr": float(np.mean(cal_scores > threshold))}
    return Program(prog.channels, prog.window, prog.stride, prog.sample_offset, prog.sample_mul, prog.sample_zero,
                   prog.tensors, prog.ops, threshold, prog.k, prog.n, info).validate()


# -- model files and scoring ---------------------------------------------------------------------
INT8_HEADER_KEY = "int8"


def int8_sections(pipeline: Pipeline, train_series: Series) -> tuple[dict[str, Any], dict[str, np.ndarray], str]:
    """``(extra header, extra arrays, note)`` storing the int8 program in a model file via ``save_pipeline``.

    When the pipeline cannot be quantized (a feature without an integer definition, a window longer than
    the integer path supports) the sections are empty and ``note`` says why; the float model still works.
    """
    from tinywarden.program import to_model_file

    try:
        program = quantize_pipeline(pipeline, train_series)
    except ConfigError as exc:
        return {}, {}, f"no int8 program stored: {exc}"
    header, arrays = to_model_file(program)
    return {INT8_HEADER_KEY: header}, arrays, (
        f"int8 program {header['model_id']} stored: {program.const_bytes} B of constants, "
        f"integer threshold {program.threshold}"
    )


def load_program(pipeline: Pipeline, source: str = "<model>") -> Program:
    """The int8 program stored in a loaded model file (see :func:`int8_sections`)."""
    from tinywarden.errors import ModelFileError
    from tinywarden.program import from_model_file

    header = getattr(pipeline, "header_", {})
    if INT8_HEADER_KEY not in header:
        raise ModelFileError(f"{source}: the model file holds no int8 program (train it again with this "
                             "tinywarden, which stores one for every detector whose features support it)")
    return from_model_file(header[INT8_HEADER_KEY], getattr(pipeline, "extra_arrays_", {}), source)


def score_int8(pipeline: Pipeline, program: Program, series: Series) -> Any:
    """Per-window integer results of ``program`` over ``series``, as a :class:`~tinywarden.pipeline.Scored`.

    ``scores`` are the int32 scores the C module returns; ``alarms`` its ``anomaly`` decisions.
    """
    from tinywarden.errors import DataError
    from tinywarden.pipeline import Scored
    from tinywarden.program import run_int8

    values = pipeline._select(series)
    ends = window_end_rows(len(values), program.window, program.stride)
    if len(ends) == 0:
        raise DataError(f"{series.source}: {len(series)} rows are fewer than one window of {program.window}")
    scores, alarms = run_int8(program, values)
    flags = (scores > program.threshold).astype(np.uint8)
    return Scored(ends, series.timestamps[ends], scores, flags, alarms, float(program.threshold))
