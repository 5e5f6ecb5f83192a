"""Post-training quantization of a fitted :class:`~tinywarden.pipeline.Pipeline` into an integer
:class:`~tinywarden.program.Program` (TFLite Micro's *prepare* step: every float becomes an integer
constant here, so the device's *eval* is integer only).

Calibration uses exactly the normal windows :meth:`Pipeline.split_inputs` gives: ranges (sample
quantization, activations) come from the *fit* part, and the integer threshold is recalibrated on the
*held-out* part at the pipeline's target FPR, by running the integer program itself.

This module does what every family shares: the int16 samples (per channel, centred on the middle of the
fit range with ``headroom`` times that half-range, and at least ``SIGMA_SPAN`` standard deviations, on each
side, so values far outside normal still resolve before saturating), the integer features
(:mod:`tinywarden.kernels.features_s16`, related to the float ones by the scaling rules of
:data:`tinywarden.features.FEATURE_TABLE`), the score's right shift and the threshold. The model itself is
lowered by its family (``Detector.lower``, in the family's module; shared helpers in
:mod:`tinywarden.detectors.lowering`).

Integer scores are monotone in the float scores up to rounding, so ranking quality (ROC AUC) carries over.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinywarden import __version__
from tinywarden.arith import INT16_MAX, INT32_MAX, round_half_away
from tinywarden.calibrate import threshold_at_fpr
from tinywarden.detectors.lowering import LoweringContext
from tinywarden.errors import ConfigError, DataError, ModelFileError
from tinywarden.features import FEATURE_TABLE, MIN_CROSSINGS_BLOCK, batch_windows, block_size, window_end_rows
from tinywarden.kernels import KERNELS, Op, TensorSpec, score_total
from tinywarden.kernels.adapt_q import lower_adaptation
from tinywarden.kernels.features_s16 import MAX_WINDOW
from tinywarden.kernels.likelihood_q import lower_likelihood, with_value_record
from tinywarden.likelihood import MIN_FIT_SCORES, AnomalyLikelihood
from tinywarden.pipeline import Pipeline, Scored, normal_window_mask
from tinywarden.program import (
    INT8_HEADER_KEY,
    MAX_SAMPLE_ZERO,
    Program,
    from_model_file,
    quantize_samples,
    run_int8,
    run_windows,
    to_model_file,
)
from tinywarden.telemetry.series import Series

#: How far beyond the normal samples' half-range each channel's int16 range reaches.
SAMPLE_HEADROOM = 4.0
#: ... and at least this many of the channel's normal standard deviations either side of its centre.
SIGMA_SPAN = 1000.0
#: Normal scores stay this many times below the int32 limit after the score's right shift.
SCORE_HEADROOM = 256


def normal_windows(pipeline: Pipeline, series: Series) -> tuple[np.ndarray, np.ndarray]:
    """Raw float windows ``(n, window, channels)`` of the normal windows: ``(fit part, held-out part)``.

    The same windows, in the same order and split, as :meth:`Pipeline.split_inputs`.
    """
    values = pipeline.select_channels(series)
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
    zero_bound = min((INT32_MAX - w * 32768) // w, MAX_SAMPLE_ZERO)
    # a channel nearly constant while learning may move far in the field: its range also reaches
    # SIGMA_SPAN standard deviations (still resolving 1/32 of one), so it does not saturate at once
    sigma = rows.std(axis=0)
    sigma = np.where(sigma > 0, sigma, 1e-3 * np.abs(rows).mean(axis=0))
    span = np.maximum.reduce([half * headroom, sigma * SIGMA_SPAN, np.abs(center) * INT16_MAX / zero_bound,
                              1e-6 * np.maximum(1.0, np.abs(center))])
    # INT16_MAX / span, not rounded down to a power of two (whose one bit of resolution cost int8 window AUC on the
    # simulator, up to 0.008, through crossings on coarse channels): the device multiplies (TW_SAMPLE_POW2 0)
    mul = (INT16_MAX / span).astype(np.float32)
    zero = np.clip(round_half_away(center * mul.astype(np.float64)), -zero_bound, zero_bound).astype(np.int32)
    offset = (zero / mul.astype(np.float64)).astype(np.float32)
    return offset, mul, zero, 1.0 / mul.astype(np.float64)


def feature_affine(pipeline: Pipeline, scale: np.ndarray, zero: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` per feature column with ``float feature ~= a * integer feature + b``, by each feature's
    scaling rule in :data:`tinywarden.features.FEATURE_TABLE`."""
    w = pipeline.window
    a, b = [], []
    for c in range(len(scale)):
        s, off = scale[c], zero[c] * scale[c]
        for f in pipeline.features:
            fa, fb = FEATURE_TABLE[f].scaling(s, off, w)
            a.append(fa), b.append(fb)
    return np.array(a), np.array(b)


def _with_score_shift(program: Program, fit_windows_q: np.ndarray) -> Program:
    """Choose the score op's right shift so normal totals sit SCORE_HEADROOM below the int32 limit."""
    env: dict[str, np.ndarray] = {"window": fit_windows_q}
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
    if not headroom >= 1.0:
        raise ConfigError(f"headroom must be >= 1, got {headroom}")
    fit_w, cal_w = normal_windows(pipeline, train_series)
    offset, mul, zero, s = _sample_quantization(pipeline, fit_w, headroom)
    c = len(pipeline.channels_)
    base = Program(tuple(pipeline.channels_), pipeline.window, pipeline.stride, offset, mul, zero, (), (), 0,
                   pipeline.k, pipeline.n)
    def q(windows: np.ndarray) -> np.ndarray:
        n, w, _ = windows.shape
        return quantize_samples(base, windows.reshape(-1, c)).reshape(n, w, c)

    fit_q, cal_q = q(fit_w), q(cal_w)
    fit_inputs, _ = pipeline.split_inputs(train_series)
    fit_scaled = pipeline.scale_inputs(fit_inputs)
    tensors: list[TensorSpec] = []
    ops: list[Op] = []
    affine = win_scale = None
    if pipeline.input_kind == "features":
        codes = np.array([FEATURE_TABLE[f].code for f in pipeline.features], dtype=np.int32)
        tensors.append(TensorSpec("features", "int64", (c * len(pipeline.features),)))
        level = pipeline.crossings_level
        block = pipeline.crossings_block or pipeline.window
        g = block_size(pipeline.window, pipeline.stride)
        if level is None and block == pipeline.window and "crossings" in pipeline.features \
                and MIN_CROSSINGS_BLOCK <= g < pipeline.window:
            # crossings of the window's mean on int8 residuals of the samples (the C keeps them in place of the
            # int16 ring; see features_s16.ring_residuals)
            ops.append(Op("features_s16", ("window",), "features",
                          {"window": pipeline.window, "block": block, "ring_block": g},
                          {"codes": codes, "z0": zero.astype(np.int32)}))
        elif level is None:  # crossings of each block's own mean
            ops.append(Op("features_s16", ("window",), "features", {"window": pipeline.window, "block": block},
                          {"codes": codes, "z0": zero.astype(np.int32)}))
        else:  # crossings of the trained mean, quantized as a sample: q > level exactly when q > q(level)
            ops.append(Op("features_s16", ("window",), "features", {"window": pipeline.window},
                          {"codes": codes, "z0": zero.astype(np.int32),
                           "level": quantize_samples(base, np.asarray(level)[None, :])[0].astype(np.int32)}))
        affine = feature_affine(pipeline, s, zero)
    else:
        win_scale = (s, zero.astype(np.float64))
    low = pipeline.detector.lower(LoweringContext(fit_scaled, np.asarray(pipeline.offset_),
                                                  np.asarray(pipeline.scale_), affine, win_scale))
    m_tensors = [*low.tensors, TensorSpec("score", "int32", (1,))]
    m_ops, info = low.ops, dict(low.info)
    info.update({"detector": pipeline.detector.name, "generator": f"tinywarden {__version__}",
                 "features": list(pipeline.features) if pipeline.input_kind == "features" else [],
                 **({"crossings_level": pipeline.crossings_level.tolist()}
                    if pipeline.input_kind == "features" and pipeline.crossings_level is not None else {}),
                 "float_threshold": float(pipeline.threshold_), "float_bytes": int(pipeline.model_bytes_),
                 "target_fpr": pipeline.target_fpr})
    prog = Program(base.channels, base.window, base.stride, offset, mul, zero, tuple(tensors + m_tensors),
                   tuple(ops + m_ops), 0, pipeline.k, pipeline.n, info).validate()
    prog = _with_score_shift(prog, fit_q)
    cal_scores = run_windows(prog, cal_q)
    # a tail fit can extrapolate past what an int32 score holds: then only a saturated score is over it
    threshold = min(int(threshold_at_fpr(cal_scores.astype(np.float64), pipeline.target_fpr)), INT32_MAX - 1)
    info = {**prog.info, "calibration_fpr": float(np.mean(cal_scores > threshold))}
    lik = _likelihood_step(pipeline, cal_scores, prog)
    keep = pipeline.detector.keeps_trained_scaler()  # its baseline adapts the likelihood only
    adapt = None if lik is None or keep else lower_adaptation(
        prog.ops, np.asarray(pipeline.offset_), np.asarray(pipeline.scale_), affine,
        getattr(pipeline, "train_summary_", {}).get("period_s"))
    return Program(prog.channels, prog.window, prog.stride, prog.sample_offset, prog.sample_mul, prog.sample_zero,
                   prog.tensors, prog.ops, threshold, prog.k, prog.n, info, lik, adapt).validate()


def _likelihood_step(pipeline: Pipeline, cal_scores: np.ndarray, program: Program) -> Op | None:
    """The integer likelihood, fitted (with the float one's parameters) on the int32 calibration scores in time
    order, as the float one is on the float calibration scores; None when the pipeline has no likelihood. With the
    float one's value record, the same tolerance over its training range quantized as the device quantizes samples
    (monotone, so every training sample's int16 lies in the range)."""
    lik = getattr(pipeline, "likelihood_", None)
    if lik is None or len(cal_scores) < MIN_FIT_SCORES:
        return None
    op = lower_likelihood(AnomalyLikelihood(**lik.get_params()).fit(cal_scores.astype(np.float64)))
    rec = getattr(lik, "values_", None)
    if rec is None:
        return op
    q = quantize_samples(program, np.vstack((rec.lo_, rec.hi_)))
    return with_value_record(op, rec.tolerance, q[0], q[1])


# -- model files and scoring ---------------------------------------------------------------------


def int8_sections(pipeline: Pipeline, train_series: Series) -> tuple[dict[str, Any], dict[str, np.ndarray], str]:
    """``(extra header, extra arrays, note)`` storing the int8 program in a model file via ``save_pipeline``.

    When the pipeline cannot be quantized (a feature without an integer definition, a window longer than
    the integer path supports) the sections are empty and ``note`` says why; the float model still works.
    """
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
    header = getattr(pipeline, "header_", {})
    if INT8_HEADER_KEY not in header:
        raise ModelFileError(f"{source}: the model file holds no int8 program (train it again with this "
                             "tinywarden, which stores one for every detector whose features support it)")
    return from_model_file(header[INT8_HEADER_KEY], getattr(pipeline, "extra_arrays_", {}), source)


def score_int8(pipeline: Pipeline, program: Program, series: Series) -> Scored:
    """Per-window integer results of ``program`` over ``series``, as a :class:`~tinywarden.pipeline.Scored`.

    ``scores`` are the int32 scores the C module returns; ``alarms`` its ``anomaly`` decisions.
    """
    values = pipeline.select_channels(series)
    ends = window_end_rows(len(values), program.window, program.stride)
    if len(ends) == 0:
        raise DataError(f"{series.source}: {len(series)} rows are fewer than one window of {program.window}")
    scores, alarms = run_int8(program, values)
    flags = (scores > program.threshold).astype(np.uint8)
    return Scored(ends, series.timestamps[ends], scores, flags, alarms, float(program.threshold))
