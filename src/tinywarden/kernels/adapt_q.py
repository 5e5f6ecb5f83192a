"""Baseline adaptation in integers: :class:`tinywarden.adapt.BaselineAdapter`'s rule on the device.

The float adapter moves the pipeline's scaler by ``2**-rate_shift`` of the way from every window that is
clearly normal (confidence below ``below_confidence`` and, with ``below_threshold``, score at most the
threshold), offsets only unless ``adapt_scale``; a shift that keeps windows over the threshold for
``settle_s`` is adopted when steady (a shadow mean and spread that follow every window, the spread within
:data:`tinywarden.adapt.SETTLE_SPREAD` reference variances) and followed from every window at
``2**-settle_rate_shift`` until it has settled; the drift of the adapted means (in training standard
deviations) or of the likelihood's running mean beyond ``max_drift`` flags. In the int8 program the scaler is
folded into the requantization of the integer features to the model input (``requantize_s64_s8`` /
``requantize_s64_s16``: ``q = requantize(sat32((f >> pre) - offset), multiplier, shift)``), so the adaptation
acts there. Per input ``i``, with ``v = f >> pre`` (the op's input unit) and state ``mu`` (the adapted mean's
distance from the reference in ``2**-F`` input units, less than ``2**MEAN_BITS``: a signed 24-bit field on the
device; ``F`` is each input's own, the ``fracs`` table, when their ranges differ), ``sd`` (uint16, the adapted
scale in Q12 reference standard deviations, at most 16: its variance ``var = sd * sd >> 8`` in Q16 reference
variances, its gain ``g = min(2**27 // sd, gmax)`` in Q15, neither stored: :data:`SD_BITS`), and with the settling
rule the shadow's ``smu`` (as ``mu``) and ``svar`` (uint16, Q8, at most 256 reference variances), and a leaky count
``elevated`` (13 bytes per input with the default rule's watch: ``tw_adapt_input_t``):

*forward* (every window, in place of the op): ``offset_a = offset + (mu >> F)`` (plus ``fold * (s - 2**15) >>
15`` with ``s = max(sd << 3, floor)``, saturated: ``fold`` is a detector offset folded into the op;
zero for the families here), ``multiplier_a = multiplier * g >> 15`` (with ``adapt_scale``, ``>> 16`` and the
shift raised by one when that passes ``INT32_MAX``), then the op's arithmetic with them. In the reference state
(``mu = 0``, ``sd = 2**12``: ``var = 2**16``, ``g = 2**15``) this is the op, bit for bit.

*update* (after the likelihood step): ``over = score > threshold``; a window *teaches* when its Q15 confidence
is below ``below`` and, with the gate, not ``over``. ``x = clamp(v - (offset - fold), +-X)`` (``X = 2**(MEAN_BITS-F)
- 1``: every mean fits 24 bits, every difference an int32), ``xf = x << F``. One step at ``2**-r`` (``tw_adapt_ewm``):
``d = xf - mu``, ``mu += d >> r``; the deviation in reference standard deviations ``z = clamp(requantize(
requantize(d, multiplier, shift - F + E), zmul, zshift), +-2**19)`` (Q12: the first step is the op's own
scaling, to the model input's unit with ``E`` more bits, the second the reference deviation of that unit);
``var += (spread - var) >> r`` (at least 1; stored as ``sd = min(isqrt(var << 8), 2**16 - 1)``) with
``spread = z*z >> 8`` (learning the scale) or ``2**16``
(offsets only: a scale learned while settling relaxes back to the reference). With the settling rule, every
window: the shadow takes that step at ``2**-shadow_shift`` (:func:`tinywarden.adaptation.shadow_shift`: a memory
of at most a quarter of ``settle_s``; its ``svar`` stored rounded to Q8), ``elevated`` counts up when ``over`` (to
``settle_n``, the windows in ``settle_s``: :func:`tinywarden.adapt.windows_in`) and down otherwise; when it reaches
``settle_n`` and every ``svar`` before this window's step was at most ``SETTLE_SPREAD_Q8`` (the C keeps that as
``wide``, set by the window before), the adapter *settles*: ``mu = smu``, ``var = max(svar << 8, 2**16)``
(stored as ``sd``),
and until the count is back at 0 every window teaches at ``settle_shift``, learning the scale. A teaching
window then takes the step at ``rate_shift`` (``settle_shift`` while settling). The gain ``g = 2**27 // sd``
(``1 / sqrt(var)``) is clamped to [1, 65535] with ``adapt_scale`` outside settling (the scale floor of half the
reference) and to [1, 2**15] otherwise (never sharper than the reference). The drift (Q12 standard deviations) is
the largest
``min(requantize(|y|, zmul, zshift), 2**19 - 1)`` with ``y`` the first step of ``mu`` (with one ``zmul`` for all
inputs, that of the largest ``|y|``: requantization is monotone).

*flag* (every window): raised when the drift exceeds ``max_drift`` or the likelihood's running mean is
more than ``max_drift`` fitted standard deviations from its fitted value, or (the slow-drift watch,
:mod:`tinywarden.level_watch`) the drift ``level`` of its own mean ``wmu`` (as ``mu``: every window whose
score is at most the threshold moves it by ``round_shift(xf - wmu, settle_shift)``), computed as that of
``mu`` every window, exceeds ``watch_drift``, or (``watch_distance``, for a ``pca_residual_s16`` score right after
the adapted op: :func:`distance_score_op`) that score of ``wmu`` as a model input (``round_shift`` of its first
step by ``E``, plus the op's zero point, clamped to its range) exceeds ``watch_distance`` times the threshold;
lowered again once each is below half of its limit (:data:`tinywarden.adapt.REARM_FRACTION`).

Where the float and the integer rule part: an input more than ``X`` input units (at least 128 reference
standard deviations) from the reference is clamped there, ``z`` at 128 standard deviations and the shadow's
variance at 256 reference variances, where the float follows any outlier; without the sample period in the
model file (written before it was kept) the settling rule is off on the device.

The step needs the program's likelihood (a window without a confidence teaches nothing). Families that
read the raw window (GRU, convolutional autoencoder) or fold the scaler into their own kernel (bounds, AR)
have no adaptable op: :func:`lower_adaptation` returns None for them and the device keeps its trained
baseline (the agent's float path still adapts them).

Every quantity is an integer; Python and C agree bit for bit (right shifts of negative numbers floor).

>>> from tinywarden.detectors import EWMAZScore
>>> from tinywarden.pipeline import Pipeline
>>> from tinywarden.quantize import quantize_pipeline
>>> from tinywarden.telemetry.series import Series
>>> rng = np.random.default_rng(0)
>>> s = Series(np.arange(3000.0), rng.normal(size=(3000, 1)), ("a",))
>>> prog = quantize_pipeline(Pipeline(EWMAZScore(), window=32, stride=16).fit(s), s)
>>> prog.adaptation.kind, prog.adaptation.attrs["op"]
('adapt_q', 1)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinywarden.adaptation import SETTLE_SPREAD, shadow_shift
from tinywarden.arith import INT32_MAX, INT32_MIN, quantize_multiplier, requantize
from tinywarden.kernels.base import KERNELS, REQUANT_SHIFT_MAX, REQUANT_SHIFT_MIN, Op, int_attr, require

KIND = "adapt_q"
#: Kinds of op the adaptation can take the place of (the features' requantization to the model input).
ADAPTABLE = ("requantize_s64_s8", "requantize_s64_s16")
#: ``g`` and ``s`` are Q15; ``var`` is Q16 (1.0 = the reference variance: up to 32768, so the largest ``z*z``
#: fits unsaturated); ``z`` is Q12.
G_ONE = 1 << 15
VAR_BITS = 16
VAR_ONE = 1 << VAR_BITS
Z_BITS = 12
#: ``g`` is at most this (just under 2: the adapted scale stays above half the reference, as the float).
G_MAX = 65535
#: |z| is clamped here (128 reference standard deviations, Q12).
Z_MAX = (1 << 19) - 1
#: Extra bits of the deviation in the model input's unit, before the second requantization.
E_BITS = 8
#: An input's distance from the reference is clamped to this many reference standard deviations.
SPAN_SD = 128
MAX_FRAC = 16
#: Every mean (``mu``, ``smu``, ``wmu``) and clamped input is less than ``2**MEAN_BITS`` in magnitude: each input's
#: fractional bits are as many as its +-128 sd span leaves in ``MEAN_BITS`` bits (at least ``2**-15`` reference sd
#: per unit where the span sets them), so that the device stores a mean in the top 24 bits of a word whose low byte
#: holds another field (``tw_adapt_input_t``); a difference of two means, or of a mean and an input, fits an int32.
MEAN_BITS = 23
#: The adapted scale is kept as a standard deviation ``sd`` (Q12 reference standard deviations, uint16: at most 16,
#: i.e. 256 reference variances, as the shadow's variance): ``var = sd * sd >> 8`` is its variance (Q16) for a
#: step, ``sd = min(isqrt(var << 8), SD_MAX)`` (floored) stores the step's result (a step that leaves the variance
#: where it was leaves ``sd`` too: the round trip alone would floor it a unit lower), ``g = 2**27 // sd`` its gain
#: (:func:`gain_of`). Floored, a variance steps down to the reference exactly; a rising one moves only by whole
#: ``sd`` steps, ``(2 * sd + 1) / 256`` Q16 units (0.05 % of the variance): a step at ``2**-r`` towards a spread
#: less than ``2**r`` such units above it is lost (at ``2**-7``, 6 % of the variance at the reference scale).
SD_BITS = 12
SD_ONE = 1 << SD_BITS
SD_MAX = 65535
#: The largest ``max_drift`` that can still raise a flag (the drift is clamped with ``z``).
MAX_DRIFT_Q12 = Z_MAX
#: The adapted op's offsets must be smaller than this, so that with the adapted mean (``|mu >> F| < 2**30``)
#: the adapted offset fits int32.
OFFSET_LIMIT = 1 << 30
#: The settling count is a uint32: ``settle_s`` may be at most this many windows.
SETTLE_N_MAX = INT32_MAX
#: The shadow variance is stored in a uint16, Q8 (its Q16 value ``>> SVAR_DROP``, at most ``SVAR_MAX``: 256
#: reference variances, 16 standard deviations; half the RAM of an int32). It only matters at the settling jump,
#: where the adopted variance is at least 1 reference variance. Each stored step is rounded to nearest (floored,
#: the estimate would sit up to half a reference variance low).
SVAR_DROP = 8
SVAR_MAX = 65535
#: The shadow's spread (Q8, as ``svar``) under which a sustained shift is steady enough to adopt
#: (:data:`tinywarden.adapt.SETTLE_SPREAD` reference variances).
SETTLE_SPREAD_Q8 = round(SETTLE_SPREAD * (VAR_ONE >> SVAR_DROP))
#: Low bits of every ``zmul`` the lowering writes that are zero (:func:`zmul_pair`): the C stores the others alone.
ZMUL_DROP = 16
#: The training sample period is stored in the step in microseconds (``settle_s`` becomes windows from it).
PERIOD_US_MAX = 1 << 40


@dataclass(frozen=True)
class AdaptParams:
    """The policy's ``[adaptation]`` as the integer step uses it (see :func:`adapt_params`)."""

    rate_shift: int
    below_q15: int  # adapt when the Q15 confidence < below_q15 (exactly conf/32768 < below_confidence)
    drift_q12: int  # flag when the drift (Q12) > drift_q12
    rearm_q12: int  # ... and lower the flag once it is < rearm_q12 (and the likelihood's below its rearm)
    lik_limit: int  # flag when |lik_mean - fitted mean| (Q32) > lik_limit
    lik_rearm: int
    #: the program's integer threshold: a window whose score is over it is *over* (the gate, the settling count)
    threshold: int = INT32_MAX
    #: the slow path also asks score <= threshold (``below_threshold``)
    gate: bool = False
    #: the slow path learns the scale too (``adapt_scale``); False: offsets only
    adapt_scale: bool = True
    #: windows over the threshold (a leaky count) after which the baseline settles on the new level; 0: never
    settle_n: int = 0
    settle_shift: int = 7
    #: the slow-drift watch (:mod:`tinywarden.level_watch`): flag when the drift (Q12) of its level ``wmu`` (a step
    #: at ``settle_shift`` from every window at most the threshold) > watch_q12, lower the flag only once it is <
    #: watch_rearm_q12 too; 0: off
    watch_q12: int = 0
    watch_rearm_q12: int = 0
    #: the watch's second limit (``watch_distance``): flag when the score of its level (the adapted op's output for
    #: ``wmu``, scored by the ``pca_residual_s16`` op after it) > distance_bound, lower the flag only once it is <
    #: distance_rearm too; 0: off
    distance_bound: int = 0
    distance_rearm: int = 0

    @property
    def shadow_shift(self) -> int:
        """The shadow's step, ``2**-shadow_shift`` (:func:`tinywarden.adaptation.shadow_shift`)."""
        return shadow_shift(self.settle_n, self.settle_shift)

    @property
    def scaled(self) -> bool:
        """Whether the adapted scale (``var``, ``g``) is state at all: only offsets move without it."""
        return self.adapt_scale or self.settle_n > 0


def adapt_params(likelihood: Op, rate_shift: int, below_confidence: float, max_drift: float,
                 rearm_fraction: float = 0.5, *, threshold: int = INT32_MAX, gate: bool = False,
                 adapt_scale: bool = True, settle_n: int = 0, settle_shift: int = 7,
                 watch_drift: float = 0.0, watch_distance: float = 0.0) -> AdaptParams:
    """Integer thresholds of a float adaptation policy for a program whose likelihood step is ``likelihood``
    (the keyword arguments, as they default, are the first version's rule: no threshold gate, offsets and
    scales, no settling, no slow-drift watch). ``watch_distance`` (a fraction of ``threshold``; 0: off) is for a
    program whose adapted op feeds a ``pca_residual_s16`` score (:func:`distance_score_op`), with the watch on.

    >>> from tinywarden.likelihood import AnomalyLikelihood
    >>> from tinywarden.kernels.likelihood_q import lower_likelihood
    >>> lik = lower_likelihood(AnomalyLikelihood().fit(np.arange(1.0, 300.0)))
    >>> p = adapt_params(lik, 8, 0.2, 3.0)
    >>> p.below_q15, p.drift_q12, p.rearm_q12, p.scaled
    (6554, 12288, 6144, True)
    """
    require(1 <= int(rate_shift) <= 20, f"adaptation rate_shift must be in [1, 20], got {rate_shift}")
    require(1 <= int(settle_shift) <= 20, f"adaptation settle_rate_shift must be in [1, 20], got {settle_shift}")
    require(0 <= int(settle_n) <= SETTLE_N_MAX,
            f"adaptation settle_s is {settle_n} windows; at most {SETTLE_N_MAX} fit the device's count")
    require(math.isfinite(below_confidence) and math.isfinite(max_drift) and max_drift >= 0,
            "adaptation below_confidence and max_drift must be finite, max_drift >= 0")
    require(math.isfinite(watch_drift) and watch_drift >= 0, "adaptation watch_drift must be finite and >= 0")
    require(math.isfinite(watch_distance) and watch_distance >= 0, "adaptation watch_distance must be finite and >= 0")
    below = int(min(max(math.ceil(below_confidence * G_ONE), 0), G_ONE + 1))
    drift = int(min(round(max_drift * 4096), MAX_DRIFT_Q12))
    rearm = int(min(round(rearm_fraction * max_drift * 4096), MAX_DRIFT_Q12))
    std0 = math.isqrt(int(likelihood.attrs["var"]))  # Q16
    lik_limit = (round(max_drift * 4096) * std0 << 16) >> 12
    lik_rearm = (round(rearm_fraction * max_drift * 4096) * std0 << 16) >> 12
    cap = 2**62
    watch = watch_rearm = 0
    if watch_drift > 0:
        watch = int(min(max(round(watch_drift * 4096), 1), MAX_DRIFT_Q12))
        watch_rearm = int(min(round(rearm_fraction * watch_drift * 4096), MAX_DRIFT_Q12))
    bound = bound_rearm = 0
    if watch > 0 and watch_distance > 0 and 0 < threshold < INT32_MAX:
        # score > watch_distance * threshold, score < rearm_fraction * that: exactly, for an integer score
        bound = min(max(math.floor(watch_distance * threshold), 1), INT32_MAX - 1)
        bound_rearm = min(math.ceil(rearm_fraction * watch_distance * threshold), bound)
    return AdaptParams(int(rate_shift), below, drift, rearm, min(lik_limit, cap), min(lik_rearm, cap),
                       int(threshold), bool(gate), bool(adapt_scale), int(settle_n), int(settle_shift), watch,
                       watch_rearm, bound, bound_rearm)


def distance_score_op(ops: tuple[Op, ...], adapted: int) -> Op | None:
    """The ``pca_residual_s16`` score that reads the adapted op's output (op ``adapted``) alone, whose score of a
    displacement of the baseline is the watch's distance (PCA, Gaussian); None for any other family."""
    if adapted + 1 >= len(ops):
        return None
    target, nxt = ops[adapted], ops[adapted + 1]
    readers = sum(target.dst in op.src for op in ops)
    return nxt if nxt.kind == "pca_residual_s16" and nxt.src == (target.dst,) and readers == 1 else None


# -- lowering (the quantizer's side) ---------------------------------------------------------------
def lower_adaptation(ops: tuple[Op, ...], mu: np.ndarray, sigma: np.ndarray,
                     affine: tuple[np.ndarray, np.ndarray] | None, period_s: float | None = None) -> Op | None:
    """The adaptation step of a program whose ops are ``ops``, for the pipeline scaler ``(mu, sigma)`` and
    the integer features' ``affine`` (``raw feature = a * f + b``); None when no op can be adapted.
    ``period_s``, the training sample period, is kept (in microseconds) to count ``settle_s`` in windows;
    without it the settling rule is off."""
    idx = [j for j, op in enumerate(ops) if op.kind in ADAPTABLE and op.src == ("features",)]
    if affine is None or not idx:
        return None
    j = idx[0]
    c = ops[j].consts
    a, b = (np.asarray(v, dtype=np.float64) for v in affine)
    pre = c["pre_shift"].astype(np.int64)
    unit = a * 2.0**pre  # one input unit in raw feature units
    ref = np.round((np.asarray(mu) - b) / unit - np.where(pre > 0, 0.5, 0.0))
    fold = c["offset"].astype(np.int64) - ref.astype(np.int64)
    sd_v = np.asarray(sigma) / unit  # the reference standard deviation in input units
    if not (np.isfinite(sd_v).all() and (sd_v > 0).all() and np.isfinite(ref).all()):
        return None
    # each input's fractional bits: as many as its +-128 sd span leaves in MEAN_BITS bits (one input of a wide range
    # must not take them from the others: a mean step of 2**-rate_shift needs them)
    # (an input whose +-128 sd span needs more than MEAN_BITS input units keeps no fractional bits: it is clamped at
    # 2**MEAN_BITS - 1 input units, fewer than 128 of its sd)
    fracs = np.clip(MEAN_BITS - np.ceil(np.log2(SPAN_SD * sd_v + 1)), 0, MAX_FRAC).astype(np.int64)
    frac = int(fracs.min())
    m_real = c["multiplier"].astype(np.float64) * 2.0 ** (c["shift"].astype(np.float64) - 31)
    zreal = 2.0 ** (Z_BITS - E_BITS) / (m_real * sd_v)
    # equal up to the multipliers' rounding: one value for all (the common case, 5 bytes of flash)
    zreal = np.float32(zreal).astype(np.float64)
    shifts = c["shift"].astype(np.int64) - fracs + E_BITS
    if frac < 0 or shifts.min() < REQUANT_SHIFT_MIN or shifts.max() > REQUANT_SHIFT_MAX \
            or np.abs(fold).max() > INT32_MAX or not (zreal > 0).all() \
            or max(np.abs(c["offset"].astype(np.int64)).max(), np.abs(c["offset"] - fold).max()) >= OFFSET_LIMIT:
        return None
    if np.all(zreal == zreal[0]):
        zreal = zreal[:1]
    pairs = [zmul_pair(float(r)) for r in zreal]
    consts = {"zmul": np.array([m for m, _ in pairs], dtype=np.int32),
              "zshift": np.array([s for _, s in pairs], dtype=np.int8)}
    if np.any(fold != 0):
        consts["fold"] = fold.astype(np.int32)
    if np.any(fracs != frac):
        consts["fracs"] = fracs.astype(np.int8)
    attrs = {"op": j, "frac": frac, "mean_bits": MEAN_BITS}
    if period_s is not None and math.isfinite(period_s) and 0 < period_s * 1e6 <= PERIOD_US_MAX:
        attrs["period_us"] = max(1, round(period_s * 1e6))
    return Op(KIND, ops[j].src, ops[j].dst, attrs, consts)


def zmul_pair(real: float) -> tuple[int, int]:
    """``(zmul, zshift)`` of a reference-deviation scale ``real``: :func:`tinywarden.arith.quantize_multiplier`'s
    pair with the multiplier rounded (half away from zero) to a multiple of ``2**ZMUL_DROP``, so that the device
    stores each input's ``zmul`` in 16 bits (``tw_adapt_zmul`` as ``int16_t``, read shifted back up; half the flash
    of an int32 table: 198 B for 99 inputs). The Python reference reads the same int32 values: the relative error
    of the scale, at most ``2**-15``, moves a reading of 128 reference sd by under 0.004 sd.

    >>> zmul_pair(0.7), zmul_pair(0.9999999)
    ((1503264768, 0), (1073741824, 1))
    """
    m, sh = quantize_multiplier(real)
    if m == 0:
        return 0, 0
    top = (m + (1 << (ZMUL_DROP - 1))) >> ZMUL_DROP
    if top >= 1 << (31 - ZMUL_DROP):  # rounded up to 2**31: 2**30 at the next shift
        top, sh = top >> 1, sh + 1
    if sh > REQUANT_SHIFT_MAX:
        return ((1 << (31 - ZMUL_DROP)) - 1) << ZMUL_DROP, REQUANT_SHIFT_MAX
    return top << ZMUL_DROP, sh


def check_adaptation(op: Op, ops: tuple[Op, ...]) -> None:
    """ConfigError when a (possibly tampered) adaptation step does not fit the op it adapts."""
    require(op.kind == KIND, f"the adaptation step must be {KIND}")
    j = int_attr(op, "op", 0, len(ops) - 1)
    target = ops[j]
    require(target.kind in ADAPTABLE and target.src == op.src and target.dst == op.dst,
            f"the adaptation must adapt a {' or '.join(ADAPTABLE)} op, not op {j} ({target.kind})")
    frac = int_attr(op, "frac", 0, MAX_FRAC)
    # a step lowered before the means took 24 bits chose its fractional bits for 30: read with MEAN_BITS its inputs
    # would clamp far inside their +-128 sd span, so it is refused rather than run another rule
    require(op.attrs.get("mean_bits") == MEAN_BITS,
            f"the adaptation step was lowered for {op.attrs.get('mean_bits', 30)}-bit means, this version keeps "
            f"{MEAN_BITS}-bit ones: quantize the pipeline again")
    if "period_us" in op.attrs:
        int_attr(op, "period_us", 1, PERIOD_US_MAX)
    n = int(np.asarray(target.consts["offset"]).size)
    zm, zs = np.asarray(op.consts.get("zmul")), np.asarray(op.consts.get("zshift"))
    require(zm.dtype == np.int32 and zs.dtype == np.int8 and zm.shape == zs.shape and zm.size in (1, n),
            f"zmul (int32) and zshift (int8) must hold 1 or {n} values")
    require(int(zm.min()) >= 0 and int(zs.min()) >= REQUANT_SHIFT_MIN and int(zs.max()) <= REQUANT_SHIFT_MAX,
            f"zmul must be >= 0 and zshift in [{REQUANT_SHIFT_MIN}, {REQUANT_SHIFT_MAX}]")
    fracs = op.consts.get("fracs")
    require(fracs is None or (np.asarray(fracs).dtype == np.int8 and np.asarray(fracs).shape == (n,)
                              and int(np.asarray(fracs).min()) >= frac and int(np.asarray(fracs).max()) <= MAX_FRAC),
            f"fracs must be int8 with {n} values in [frac, {MAX_FRAC}]")
    shifts = target.consts["shift"].astype(np.int64) - (frac if fracs is None else np.asarray(fracs, np.int64)) + E_BITS
    require(int(shifts.min()) >= REQUANT_SHIFT_MIN and int(shifts.max()) <= REQUANT_SHIFT_MAX,
            "frac takes the deviation's shift out of the requantization range")
    fold = op.consts.get("fold")
    require(fold is None or (np.asarray(fold).dtype == np.int32 and np.asarray(fold).shape == (n,)),
            f"fold must be int32 with {n} values")
    offset = target.consts["offset"].astype(np.int64)
    ref = offset - (0 if fold is None else np.asarray(fold).astype(np.int64))
    require(int(max(np.abs(offset).max(), np.abs(ref).max())) < OFFSET_LIMIT,
            "the adapted op's offsets (and offsets less fold) must be within +-2^30 (adapted, they fit int32)")
    require(set(op.consts) <= {"zmul", "zshift", "fold", "fracs"}, "unknown adaptation constant")


# -- the Python integer reference ------------------------------------------------------------------
class AdaptQState:
    """The adapted state of one device (``tw_init``, then :meth:`forward` and :meth:`observe` per window)."""

    def __init__(self, op: Op, target: Op, params: AdaptParams, score: Op | None = None) -> None:
        self.op, self.target, self.params = op, target, params
        #: the score that measures the watch's distance (:func:`distance_score_op`); needed when the params ask for it
        self.score = score
        require(not params.distance_bound or score is not None,
                "adaptation watch_distance needs the program's pca_residual_s16 score after the adapted op")
        c = target.consts
        self.pre = c["pre_shift"].astype(np.int64)
        self.offset = c["offset"].astype(np.int64)
        self.mult = c["multiplier"].astype(np.int64)
        self.shift = c["shift"].astype(np.int64)
        n = self.offset.size
        self.fold = np.asarray(op.consts.get("fold", np.zeros(n, dtype=np.int32))).astype(np.int64)
        self.zmul = np.broadcast_to(op.consts["zmul"].astype(np.int64), (n,))
        self.zshift = np.broadcast_to(op.consts["zshift"].astype(np.int64), (n,))
        #: each input's fractional bits (one value for all unless the step holds ``fracs``)
        self.frac = np.asarray(op.consts.get("fracs", np.full(n, int(op.attrs["frac"])))).astype(np.int64)
        self.xmax = x_max(self.frac)
        self.reset()

    def reset(self) -> None:
        """Back to the reference (``tw_init``; ``tw_rebaseline`` also clears the flag but keeps the counts)."""
        n = self.offset.size
        self.mu = np.zeros(n, dtype=np.int64)
        self.sd = np.full(n, SD_ONE, dtype=np.int64)  # the adapted scale (module docstring: var, g from it)
        # the shadow: the mean and spread as every window would have taught them at settle_shift (settling rule)
        self.smu = np.zeros(n, dtype=np.int64)
        self.svar = np.full(n, VAR_ONE >> SVAR_DROP, dtype=np.int64)
        self.wmu = np.zeros(n, dtype=np.int64)  # the slow-drift watch's level, as mu
        self.elevated = 0  # leaky count of windows over the threshold, in [0, settle_n]
        self.settling = False
        self.drift = 0
        self.level = 0  # the slow-drift watch's reading of the shadow (Q12), recomputed every window
        self.distance = 0  # ... and its score of that level (the watch's distance), recomputed every window
        self.flagged = False
        self.flags = 0
        self.adapted = 0
        self.held = 0  # windows that did not teach (Python only: the status file's count)
        self.settled = 0  # windows that taught while settling (Python only)

    @property
    def var(self) -> np.ndarray:
        """The adapted variance (Q16 reference variances) of every input: ``sd * sd >> 8``."""
        return var_of(self.sd)

    @property
    def g(self) -> np.ndarray:
        """The gain ``~ 2**15 / (sd / 2**12)`` of every input (Q15): a function of ``sd`` and the rule alone, computed
        where it is read (the device keeps no gain: :func:`gain_of`), clamped to ``[1, 2**15]`` while settling or
        without ``adapt_scale`` (never sharper than the reference), to ``[1, G_MAX]`` otherwise."""
        return gain_of(self.sd, G_ONE if (self.settling or not self.params.adapt_scale) else G_MAX)

    def rebaseline(self) -> None:
        counts = self.flags, self.adapted, self.held, self.settled
        self.reset()
        self.flags, self.adapted, self.held, self.settled = counts

    def snapshot(self) -> dict[str, Any]:
        """The adapted state as JSON-able integers (:meth:`restore` takes it back)."""
        return {**{k: getattr(self, k).tolist() for k in _ARRAYS},
                **{k: int(getattr(self, k)) for k in _COUNTS}, "settling": bool(self.settling),
                "flagged": bool(self.flagged)}

    def restore(self, doc: Mapping[str, Any]) -> None:
        """Take back a :meth:`snapshot`; ConfigError (and nothing changed) when any value is missing, of the wrong
        type or outside what this step can reach (a corrupted or foreign state is never half-adopted)."""
        p, n = self.params, self.offset.size
        top = self.xmax << self.frac  # every mean stays within the clamped inputs
        limits = {"mu": (-top, top), "smu": (-top, top), "sd": (16, SD_MAX), "svar": (0, SVAR_MAX),
                  "wmu": (-top, top)}
        got: dict[str, Any] = {}
        for k in _ARRAYS:
            v = doc.get(k)
            require(isinstance(v, list) and len(v) == n and all(type(e) is int for e in v),
                    f"adapted state: {k} must be {n} integers")
            a = np.array(v, dtype=np.int64)
            lo, hi = limits[k]
            require(bool((a >= lo).all() and (a <= hi).all()), f"adapted state: {k} outside the range the step reaches")
            got[k] = a
        for k in _COUNTS:
            v = doc.get(k)
            require(type(v) is int and v >= 0, f"adapted state: {k} must be an integer >= 0")
            got[k] = v
        for k in ("settling", "flagged"):
            require(type(doc.get(k)) is bool, f"adapted state: {k} must be true or false")
            got[k] = doc[k]
        require(got["drift"] <= Z_MAX and got["elevated"] <= p.settle_n
                and (got["elevated"] > 0 or not got["settling"]),
                "adapted state: drift, elevated or settling out of range")
        if not p.scaled:
            require(bool((got["sd"] == SD_ONE).all()),
                    "adapted state: a learned scale under an offsets-only rule")
        if not p.settle_n:
            require(bool((got["smu"] == 0).all() and (got["svar"] == VAR_ONE >> SVAR_DROP).all()),
                    "adapted state: a shadow without the settling rule")
        if not p.watch_q12:
            require(bool((got["wmu"] == 0).all()), "adapted state: a watched level without the slow-drift watch")
        for k, v in got.items():
            setattr(self, k, v)

    def adapted_params(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(offset, multiplier, shift)`` of the op in the current state."""
        floor = G_ONE if self.settling else G_ONE // 2
        s = np.maximum(self.sd << (15 - SD_BITS), floor)
        off = self.offset + (self.mu >> self.frac) + ((self.fold * (s - G_ONE)) >> 15)
        off = np.clip(off, -(2**31), INT32_MAX)
        m = (self.mult * self.g) >> 15
        big = m > INT32_MAX
        m = np.where(big, (self.mult * self.g) >> 16, m)
        sh = np.where(big, self.shift + 1, self.shift)
        over = sh > REQUANT_SHIFT_MAX
        return off, np.where(over, INT32_MAX, m), np.where(over, REQUANT_SHIFT_MAX, sh)

    def forward(self, kernel: Op) -> Op:
        """The adapted op to run in place of ``kernel`` (same kind, the adapted constants)."""
        off, m, sh = self.adapted_params()
        consts = {**kernel.consts, "offset": off.astype(np.int32), "multiplier": m.astype(np.int32),
                  "shift": sh.astype(np.int8)}
        return Op(kernel.kind, kernel.src, kernel.dst, kernel.attrs, consts)

    def in_steps(self, d: np.ndarray) -> np.ndarray:
        """Deviations ``d`` (``2**-F`` input units, per input) in the model input's steps, ``2**E_BITS`` finer: the
        first step of every reading of a deviation (``tw_adapt_e``)."""
        return requantize(d, self.mult, self.shift - self.frac + E_BITS)

    def z_of(self, d: np.ndarray) -> np.ndarray:
        """Deviations ``d`` (``2**-F`` input units, per input) in Q12 reference standard deviations, clamped."""
        y = self.in_steps(d)
        return np.clip(requantize(y, self.zmul, self.zshift), -Z_MAX, Z_MAX)

    def drift_of(self, mu: np.ndarray) -> int:
        """The largest ``|mu|`` in Q12 reference standard deviations (module docstring)."""
        y = np.abs(self.in_steps(mu))
        return int(np.minimum(requantize(y, self.zmul, self.zshift), Z_MAX).max())

    def distance_of(self, level: np.ndarray) -> int:
        """The score op's score of a displacement ``level`` (``2**-F`` input units, per input) of the baseline: the
        adapted op's output for it at the reference multipliers (from the watch's finer reading of it, rounded),
        then the score (the C's ``tw_adapt_observe``)."""
        t = self.target
        v = np.clip(round_shift(self.in_steps(level), E_BITS) + int(t.attrs["zero_point"]), int(t.attrs["act_min"]),
                    int(t.attrs["act_max"]))
        assert self.score is not None  # the constructor's check
        return int(KERNELS[self.score.kind].fn([v[None, :]], self.score)[0, 0])

    def ewm(self, xf: np.ndarray, mu: np.ndarray, var: np.ndarray, shift: int,
            full: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """One step at ``2**-shift`` of a mean ``mu`` towards the window's inputs ``xf`` (``2**-F`` input units from
        the reference mean) and of a variance ``var`` (Q16 reference variances, >= 1) towards the window's spread
        around ``mu`` (``full``) or the reference variance (offsets only): ``tw_adapt_ewm``."""
        d = xf - mu
        spread: np.ndarray | int = VAR_ONE
        if full:
            z = self.z_of(d)
            spread = (z * z) >> (2 * Z_BITS - VAR_BITS)  # < 2**30: |z| <= Z_MAX
        return mu + round_shift(d, shift), np.maximum(var + ((spread - var) >> shift), 1)

    def observe(self, features: np.ndarray, confidence: int, lik_mean: int, lik_mean0: int,
                score: int = INT32_MIN) -> tuple[bool, bool]:
        """One window's int64 features, Q15 confidence and int32 score (the likelihood's running mean after it,
        and its fitted one); ``(adapted, new flag)``. The rule of :class:`tinywarden.adapt.BaselineAdapter`
        (module docstring)."""
        p = self.params
        over = int(score) > p.threshold
        teach = confidence < p.below_q15 and not (p.gate and over)
        v = np.asarray(features, dtype=np.int64).reshape(-1) >> self.pre
        xf = np.clip(v - (self.offset - self.fold), -self.xmax, self.xmax) << self.frac
        rate = p.rate_shift
        if p.settle_n:
            steady = bool((self.svar <= SETTLE_SPREAD_Q8).all())  # the shadow's spread before this window
            self.smu, sv = self.ewm(xf, self.smu, self.svar << SVAR_DROP, p.shadow_shift)
            self.svar = np.minimum((sv + (1 << (SVAR_DROP - 1))) >> SVAR_DROP, SVAR_MAX)  # rounded: unbiased steps
            self.elevated = min(self.elevated + 1, p.settle_n) if over else max(self.elevated - 1, 0)
            if self.elevated >= p.settle_n and not self.settling and steady:  # a steady lasting shift: adopt it
                self.settling = True
                self.mu = self.smu.copy()
                self.sd = sd_of(np.maximum(self.svar << SVAR_DROP, VAR_ONE))
            elif self.elevated == 0:
                self.settling = False
            if self.settling:  # follow it at the settling rate, the scale at least the reference one
                teach, rate = True, p.settle_shift
        if p.watch_q12:  # the slow-drift watch: the day-long level of the windows under the threshold
            if not over:
                self.wmu = self.wmu + round_shift(xf - self.wmu, p.settle_shift)
            self.level = self.drift_of(self.wmu)
            if p.distance_bound:
                self.distance = self.distance_of(self.wmu)
        if teach:
            if p.scaled:  # without adapt_scale, a scale learned while settling relaxes back to the reference
                var0 = self.var
                self.mu, var = self.ewm(xf, self.mu, var0, rate, self.settling or p.adapt_scale)
                self.sd = np.where(var == var0, self.sd, sd_of(var))  # a variance that did not move keeps its sd
            else:
                self.mu = self.mu + round_shift(xf - self.mu, rate)
            self.drift = self.drift_of(self.mu)
            self.adapted += 1
            self.settled += self.settling
        else:
            self.held += 1
        dev = abs(int(lik_mean) - int(lik_mean0))
        new = False
        watch = p.watch_q12 > 0 and self.level > p.watch_q12
        distance = p.distance_bound > 0 and self.distance > p.distance_bound
        if not self.flagged and (self.drift > p.drift_q12 or dev > p.lik_limit or watch or distance):
            self.flagged = new = True
            self.flags += 1
        elif self.flagged and self.drift < p.rearm_q12 and dev < p.lik_rearm and (
                not p.watch_q12 or self.level < p.watch_rearm_q12) and (
                not p.distance_bound or self.distance < p.distance_rearm):
            self.flagged = False
        return bool(teach), new


_ARRAYS = ("mu", "sd", "smu", "svar", "wmu")
_COUNTS = ("elevated", "drift", "flags", "adapted", "held", "settled")


def round_shift(d: np.ndarray, shift: int) -> np.ndarray:
    """``d / 2**shift`` rounded half up (``shift >= 1``), as ``((d >> (shift - 1)) + 1) >> 1`` (no overflow): the
    means' steps (a floored step would pull a mean with few fractional bits down by up to one step).

    >>> round_shift(np.array([-3, -2, -1, 1, 2, 3]), 1).tolist()
    [-1, -1, 0, 1, 1, 2]
    """
    return ((d >> (shift - 1)) + 1) >> 1


def x_max(frac: Any) -> Any:
    """An input's distance from the reference mean is clamped to this many input units, so that it and every
    mean (``2**-frac`` units) fit ``MEAN_BITS + 1`` bits (a signed 24-bit field) and their difference an int32."""
    return (np.int64(1) << (MEAN_BITS - np.asarray(frac, dtype=np.int64))) - 1


def var_of(sd: np.ndarray) -> np.ndarray:
    """The variance (Q16 reference variances) of adapted scales ``sd`` (Q12 reference standard deviations)."""
    sd = np.asarray(sd, dtype=np.int64)
    return (sd * sd) >> (2 * SD_BITS - VAR_BITS)


def sd_of(var: np.ndarray) -> np.ndarray:
    """The stored scale of variances ``var`` (Q16, >= 1): ``min(isqrt(var << 8), SD_MAX)``, floored
    (``tw_adapt_sd_of``).

    >>> sd_of(np.array([1 << 16, (1 << 16) + 32, (1 << 16) + 33, 4 << 16, 1, 1 << 30])).tolist()
    [4096, 4096, 4097, 8192, 16, 65535]
    """
    v = np.asarray(var, dtype=np.int64) << (2 * SD_BITS - VAR_BITS)  # < 2**39: exact in float64 and its root
    r = np.floor(np.sqrt(v.astype(np.float64))).astype(np.int64)
    r = np.where(r * r > v, r - 1, r)
    r = np.where((r + 1) * (r + 1) <= v, r + 1, r)
    return np.minimum(r, SD_MAX)


def gain_of(sd: np.ndarray, gmax: int = G_MAX) -> np.ndarray:
    """The gain (Q15) of adapted scales ``sd`` (Q12, >= 16): ``2**27 // sd`` clamped to ``[1, gmax]``
    (``tw_adapt_gain``); ``2**15`` exactly at the reference scale.

    >>> gain_of(np.array([4096, 8192, 2048, 4097, 16])).tolist()
    [32768, 16384, 65535, 32760, 65535]
    """
    return np.clip((1 << (15 + SD_BITS)) // np.asarray(sd, dtype=np.int64), 1, gmax)


__all__ = ["ADAPTABLE", "C_TEMPLATE", "KIND", "AdaptParams", "AdaptQState", "adapt_params", "c_blocks", "c_features",
           "check_adaptation", "distance_score_op", "gain_of", "lower_adaptation", "round_shift", "sd_of", "var_of",
           "x_max", "zmul_pair"]

# -- C ---------------------------------------------------------------------------------------------
#: Printed by :mod:`tinywarden.codegen.c` when the module adapts its baseline, through :func:`c_blocks`: a
#: ``//@if NAME`` ... ``//@endif`` block (``//@if !NAME``: its negation; not nested) is kept only when the policy
#: needs it (:func:`c_features`), so a module carries the code of its own rule alone. ``${params}`` is the
#: adapted op's parameter struct (its kernel is not called: ``tw_adapt_forward`` is that kernel with the adapted
#: constants), ``${ctype}`` its output type, ``${src}`` its input tensor, ``${zi}`` ``i`` or ``0`` (one z
#: multiplier for all inputs); the TW_AD_* limits come from the step and the policy.
C_TEMPLATE = r"""
/* Kept out of line where the compiler allows (CMSIS's __NO_INLINE): a helper called from two places whose
 * inlining would cost flash. */
#if defined(__GNUC__)
#define TW_AD_NO_INLINE static __attribute__((noinline))
#else
#define TW_AD_NO_INLINE static
#endif

/* A mean sits in the top 24 bits of its word (|mean| < 2^TW_AD_MEAN_BITS), another field's byte in the low 8 (the
 * shadow variance's, tw_adapt_input_t): TW_AD_MEAN reads it (an arithmetic shift, as every shift of a negative value
 * here), tw_adapt_put writes it and keeps the low byte. */
#define TW_AD_MEAN(w) ((w) >> 8)
static void tw_adapt_put(int32_t *w, int32_t mean)
{
    *w = (int32_t)(((uint32_t)mean << 8) | ((uint32_t)*w & 0xffu));
}
//@if settle

/* The shadow's variance (Q8, <= TW_AD_SVAR_MAX): its low byte in the low byte of mu's word, its high byte in smu's. */
static uint32_t tw_adapt_svar(const tw_adapt_input_t *a)
{
    return ((uint32_t)a->mu & 0xffu) | (((uint32_t)a->smu & 0xffu) << 8);
}
static void tw_adapt_set_svar(tw_adapt_input_t *a, uint32_t v)
{
    a->mu = (int32_t)(((uint32_t)a->mu & ~0xffu) | (v & 0xffu));
    a->smu = (int32_t)(((uint32_t)a->smu & ~0xffu) | (v >> 8));
}
//@endif

/* A deviation d of input i (2^-frac input units) in the model input's steps, 2^TW_AD_E finer: the first step of
 * its reading in reference standard deviations (one place for the three readings: smaller code). */
TW_AD_NO_INLINE int32_t tw_adapt_e(int32_t d, int32_t i)
{
    const tw_feature_requant_params_t *p = &${params};
    return tw_requantize32(d, TW_MULTIPLIER(p, i), TW_SHIFT(p, i) - ${frac} + TW_AD_E);
}

/* sat32((f >> pre) - offset): an input's distance from an offset, in input units (the op's own first step).
 * Range: pre in [0, 62]. */
TW_AD_NO_INLINE int32_t tw_adapt_sub(int64_t f, int32_t pre, int32_t offset)
{
    int64_t v = (f >> pre) - offset;
    return (int32_t)((v < INT32_MIN) ? INT32_MIN : ((v > INT32_MAX) ? INT32_MAX : v));
}

//@if scale
/* The adapted scale sd (Q12 reference standard deviations, <= TW_AD_SD_MAX) as a variance (Q16), and a variance
 * (Q16, in [1, 2^30]) as the stored scale, floored (tinywarden.kernels.adapt_q.var_of, sd_of). */
#define TW_AD_VAR_OF(sd) ((int32_t)(((uint32_t)(sd) * (uint32_t)(sd)) >> (2 * TW_AD_SD_BITS - TW_AD_VAR_BITS)))
static uint32_t tw_adapt_sd_of(int32_t var)
{
    uint32_t r = tw_isqrt64((uint64_t)(uint32_t)var << (2 * TW_AD_SD_BITS - TW_AD_VAR_BITS));
    return (r < TW_AD_SD_MAX) ? r : TW_AD_SD_MAX;
}

/* The gain of a scale sd (>= 16): 2^27 / sd (Q15), at most gmax (tinywarden.kernels.adapt_q.gain_of); the state
 * keeps no gain. */
static int32_t tw_adapt_gain(uint32_t sd, int32_t gmax)
{
    int32_t g = (int32_t)(((uint32_t)1 << (15 + TW_AD_SD_BITS)) / sd);
    return (g < gmax) ? g : gmax;
}
//@endif
//@if sd_split

/* Input i's adapted scale: its low byte in the low byte of wmu's word, its high byte in sdh[i]. */
static uint32_t tw_adapt_sd(const tw_adapt_t *ad, int32_t i)
{
    return ((uint32_t)ad->in[i].wmu & 0xffu) | ((uint32_t)ad->sdh[i] << 8);
}
static void tw_adapt_set_sd(tw_adapt_t *ad, int32_t i, uint32_t v)
{
    ad->in[i].wmu = (int32_t)(((uint32_t)ad->in[i].wmu & ~0xffu) | (v & 0xffu));
    ad->sdh[i] = (uint8_t)(v >> 8);
}
//@endif
//@if sd_array

/* Input i's adapted scale. */
#define tw_adapt_sd(ad, i) ((uint32_t)(ad)->sd[(i)])
static void tw_adapt_set_sd(tw_adapt_t *ad, int32_t i, uint32_t v)
{
    ad->sd[i] = (uint16_t)v;
}
//@endif
//@if settle
/* The clamp of the gain: never sharper than the reference while settling or without adapt_scale. */
#define TW_AD_GMAX(s) ((((s)->ad.settling == 0u) && TW_AD_ADAPT_SCALE) ? TW_AD_G_MAX : TW_AD_G_ONE)
//@endif
//@if scale_only
#define TW_AD_GMAX(s) TW_AD_G_MAX
//@endif

/* The op the adaptation takes the place of (the features' requantization to the model input), with each
 * input's adapted offset and multiplier (tinywarden.kernels.adapt_q, forward); in the reference state they
 * are the op's own. */
//@if perchannel
/* The next input's int64 feature, a channel at a time: channel *c's features (tw_features_finish) are computed into
 * f when its first input is reached (*k == 0), so the window's features take no state (exactly the values the
 * features op gives: tinywarden.kernels.features_s16). */
TW_AD_NO_INLINE int64_t tw_adapt_next(const tw_state_t *s, int64_t *f, int32_t *k, int32_t *c)
{
    int32_t j = *k;
    if (j == 0) {
        tw_features_finish(s, *c, f);
        *c += 1;
    }
    *k = (j + 1 == TW_AD_PER_CHANNEL) ? 0 : j + 1;
    return f[j];
}

//@endif
//@if !perchannel
static void tw_adapt_forward(const tw_state_t *s, const int64_t *in, ${ctype} *out)
//@endif
//@if perchannel
static void tw_adapt_forward(const tw_state_t *s, ${ctype} *out)
//@endif
{
    const tw_feature_requant_params_t *p = &${params};
    int32_t i;
//@if perchannel
    int64_t f[TW_AD_PER_CHANNEL]; /* the current channel's features */
    int32_t k = 0;
    int32_t c = 0;
//@endif
    for (i = 0; i < TW_AD_N; i++) {
        const tw_adapt_input_t *a = &s->ad.in[i];
//@if perchannel
        int64_t fi = tw_adapt_next(s, f, &k, &c);
//@endif
        int32_t multiplier = TW_MULTIPLIER(p, i);
        int32_t shift = TW_SHIFT(p, i);
        int32_t offset = TW_OFFSET(p, i) + (TW_AD_MEAN(a->mu) >> ${frac}); /* both within +-2^30 */
//@if scale
        int64_t g = tw_adapt_gain(tw_adapt_sd(&s->ad, i), TW_AD_GMAX(s)); /* the gain of the adapted scale */
//@endif
//@if adapt_scale
        int64_t m = ((int64_t)multiplier * g) >> 15;
        if (m > INT32_MAX) {
            m = ((int64_t)multiplier * g) >> 16;
            shift++;
            if (shift > 30) {
                m = INT32_MAX;
                shift = 30;
            }
        }
//@endif
//@if fold
        {
            int64_t sc = (int64_t)tw_adapt_sd(&s->ad, i) << (15 - TW_AD_SD_BITS);
            int64_t lo = TW_AD_G_ONE / 2;
//@endif
//@if settle_fold
            lo = (s->ad.settling != 0u) ? TW_AD_G_ONE : lo;
//@endif
//@if fold
            sc = (sc > lo) ? sc : lo;
            sc = offset + (((int64_t)tw_adapt_fold[i] * (sc - TW_AD_G_ONE)) >> 15);
            offset = (int32_t)((sc < INT32_MIN) ? INT32_MIN : ((sc > INT32_MAX) ? INT32_MAX : sc));
        }
//@endif
//@if adapt_scale
        multiplier = (int32_t)m;
//@endif
//@if relax
        /* multiplier * g >> 15 in 32 bits: g <= TW_AD_G_ONE (offsets only: never sharper than the reference) */
        multiplier = (multiplier >> 15) * (int32_t)g + (((multiplier & 0x7fff) * (int32_t)g) >> 15);
//@endif
        out[i] = (${ctype})tw_offset_clamp(tw_requantize32(tw_adapt_sub(${fwd_feature}, TW_PRE_SHIFT(p, i), offset),
                                                         multiplier, shift),
                                         p->zero_point, p->activation.min, p->activation.max);
    }
}

//@if scale
/* A deviation d of input i (2^-TW_AD_FRAC input units) in reference standard deviations, Q12, clamped. */
static int32_t tw_adapt_z(int32_t d, int32_t i)
{
    int32_t y = tw_adapt_e(d, i);
    int32_t z = tw_requantize32(y, TW_AD_ZMUL(${zi}), TW_AD_ZSHIFT(${zi}));
    return (z < -TW_AD_Z_MAX) ? -TW_AD_Z_MAX : ((z > TW_AD_Z_MAX) ? TW_AD_Z_MAX : z);
}

/* One step at 2^-shift of input i's mean (2^-TW_AD_FRAC input units; TW_AD_MEAN of the word *mu) towards xf and of
 * its variance var (Q16 reference variances) towards the window's spread (full) or the reference (not full: offsets
 * only, a scale learned while settling relaxes back); returns the new variance (>= 1). The slow, the settling and
 * the shadow step alike. Range: |xf|, |mean| < 2^TW_AD_MEAN_BITS, var in [1, INT32_MAX]. */
static int32_t tw_adapt_ewm(int32_t xf, int32_t i, int32_t *mu, int32_t var, int32_t shift, uint8_t full)
{
    int32_t d = xf - TW_AD_MEAN(*mu);
    int32_t spread = TW_AD_VAR_ONE;
    if (full != 0u) {
        int32_t z = tw_adapt_z(d, i);
        spread = (int32_t)(((int64_t)z * z) >> (2 * TW_AD_Z_BITS - TW_AD_VAR_BITS)); /* < 2^30 */
    }
    tw_adapt_put(mu, TW_AD_MEAN(*mu) + (((d >> (shift - 1)) + 1) >> 1)); /* d / 2^shift rounded half up */
    var += (spread - var) >> shift;
    return (var > 1) ? var : 1;
}

/* The teaching step of input i's mean and adapted scale (a variance that did not move keeps its sd: the round trip
 * through TW_AD_VAR_OF alone would floor it a unit lower). */
static void tw_adapt_scale_step(tw_adapt_t *ad, int32_t i, int32_t xf, int32_t shift, uint8_t full)
{
    int32_t v = TW_AD_VAR_OF(tw_adapt_sd(ad, i));
    int32_t y = tw_adapt_ewm(xf, i, &ad->in[i].mu, v, shift, full);
    if (y != v) {
        tw_adapt_set_sd(ad, i, tw_adapt_sd_of(y));
    }
}

//@endif

/* After the likelihood step (tinywarden.kernels.adapt_q, update and flag): a window teaches the baseline when its
 * confidence is below TW_AD_BELOW (and, with the gate, its score at most TW_THRESHOLD); with the settling rule,
 * TW_AD_SETTLE_N windows over the threshold (a leaky count) adopt the shadow's level and teach from every window
 * at 2^-TW_AD_SETTLE_SHIFT until the count is empty again; then the drift flag. */
static void tw_adapt_observe(tw_state_t *s, int32_t score)
{
    const tw_feature_requant_params_t *p = &${params};
    tw_adapt_t *ad = &s->ad;
    int64_t dev = s->lik_mean - TW_LIK_MEAN0;
    int32_t i;
    int32_t n;
//@if perchannel
    int64_t f[TW_AD_PER_CHANNEL]; /* the current channel's features, computed again (tw_adapt_next) */
    int32_t k = 0;
    int32_t c = 0;
//@endif
    int32_t drift = 0;
//@if watch
    int32_t level = 0; /* the slow-drift watch: the shadow's largest distance from the reference */
//@endif
//@if distance
    int32_t dist; /* ... and that level's score: its distance from the reference in the score's own metric */
//@endif
    uint8_t teach = (uint8_t)(s->confidence < TW_AD_BELOW);
//@if settle
    uint8_t jump;
    uint8_t wide = 0u;
    uint32_t up = ad->elevated;
//@endif
    (void)score;
//@if gate
    teach = (uint8_t)(teach != 0u && score <= TW_THRESHOLD);
//@endif
    n = (teach != 0u) ? TW_AD_N : 0;
//@if settle
    if (score > TW_THRESHOLD) {
        up += (uint32_t)(up < TW_AD_SETTLE_N);
    } else {
        up -= (uint32_t)(up > 0u);
    }
    /* a lasting shift whose spread was steady in every input (wide: set by the window before): adopt its level */
    jump = (uint8_t)(up == TW_AD_SETTLE_N && ad->settling == 0u && ad->wide == 0u);
    if (jump != 0u) {
        ad->settling = 1u;
    } else if (up == 0u) {
        ad->settling = 0u;
    }
    ad->elevated = up;
    teach = (uint8_t)(teach | ad->settling); /* while settling every window teaches */
    n = TW_AD_N; /* the shadow learns from every window */
//@endif
//@if watch
    n = TW_AD_N; /* the watch's level, from every window under the threshold */
//@endif
    for (i = 0; i < n; i++) {
        tw_adapt_input_t *a = &ad->in[i];
//@if perchannel
        int64_t fi = tw_adapt_next(s, f, &k, &c); /* before any continue: k and c step with i */
//@endif
        int32_t x = tw_adapt_sub(${obs_feature}, TW_PRE_SHIFT(p, i), TW_OFFSET(p, i)${fold}); /* from the reference */
        int32_t xf = ((x < -${xmax}) ? -${xmax} : ((x > ${xmax}) ? ${xmax} : x)) * ((int32_t)1 << ${frac});
        int32_t y;
//@if settle
        y = (tw_adapt_ewm(xf, i, &a->smu, (int32_t)tw_adapt_svar(a) << TW_AD_SVAR_DROP, TW_AD_SHADOW_SHIFT, 1u) +
             (1 << (TW_AD_SVAR_DROP - 1))) >> TW_AD_SVAR_DROP; /* rounded: the stored steps are unbiased */
        y = (y < TW_AD_SVAR_MAX) ? y : TW_AD_SVAR_MAX;
        tw_adapt_set_svar(a, (uint32_t)y);
        wide |= (uint8_t)(y > TW_AD_SETTLE_SPREAD);
        if (jump != 0u) {
            y <<= TW_AD_SVAR_DROP;
            tw_adapt_put(&a->mu, TW_AD_MEAN(a->smu));
            tw_adapt_set_sd(ad, i, tw_adapt_sd_of((y > TW_AD_VAR_ONE) ? y : TW_AD_VAR_ONE));
        }
//@endif
//@if watch
        if (score <= TW_THRESHOLD) { /* the watch's level: every window under the threshold */
            y = xf - TW_AD_MEAN(a->wmu);
            tw_adapt_put(&a->wmu, TW_AD_MEAN(a->wmu) + (((y >> (TW_AD_WATCH_SHIFT - 1)) + 1) >> 1));
        }
        y = tw_adapt_e(TW_AD_MEAN(a->wmu), i);
//@endif
//@if distance
        /* the level as the model's input (y / 2^TW_AD_E rounded), in the input's place: the window's score has read
         * it already */
        s->t_${dst}[i] = (int16_t)tw_offset_clamp(((y >> (TW_AD_E - 1)) + 1) >> 1, p->zero_point, p->activation.min,
                                                  p->activation.max);
//@endif
//@if watch
        y = (y < 0) ? -y : y;
//@endif
//@if watch_zmuln
        y = tw_requantize32(y, TW_AD_ZMUL(i), TW_AD_ZSHIFT(i));
//@endif
//@if watch
        level = (y > level) ? y : level;
//@endif
//@if every
        if (teach == 0u) {
            continue;
        }
//@endif
//@if settle
        /* while settling: at 2^-TW_AD_SETTLE_SHIFT, learning the scale, never sharper than the reference (read from
         * the state, not kept in registers across the loop: smaller code) */
        tw_adapt_scale_step(ad, i, xf, (ad->settling != 0u) ? TW_AD_SETTLE_SHIFT : TW_AD_RATE_SHIFT,
                            (uint8_t)(ad->settling | TW_AD_ADAPT_SCALE));
//@endif
//@if scale_only
        tw_adapt_scale_step(ad, i, xf, TW_AD_RATE_SHIFT, 1u);
//@endif
//@if !scale
        y = xf - TW_AD_MEAN(a->mu);
        tw_adapt_put(&a->mu, TW_AD_MEAN(a->mu) + (((y >> (TW_AD_RATE_SHIFT - 1)) + 1) >> 1)); /* rounded half up */
//@endif
        y = tw_adapt_e(TW_AD_MEAN(a->mu), i);
        y = (y < 0) ? -y : y; /* > INT32_MIN: a requantization of a non-negative multiplier */
//@if zmul1
        drift = (y > drift) ? y : drift; /* the largest |y| (one z multiplier: requantization is monotone) */
//@endif
//@if !zmul1
        y = tw_requantize32(y, TW_AD_ZMUL(i), TW_AD_ZSHIFT(i));
        drift = (y > drift) ? y : drift;
//@endif
    }
//@if settle
    ad->wide = wide;
//@endif
    if (teach != 0u) {
//@if zmul1
        drift = tw_requantize32(drift, TW_AD_ZMUL(0), TW_AD_ZSHIFT(0));
//@endif
        ad->drift = (drift < TW_AD_Z_MAX) ? drift : TW_AD_Z_MAX;
        ad->adapted++;
    }
//@if watch_zmul1
    level = tw_requantize32(level, TW_AD_ZMUL(0), TW_AD_ZSHIFT(0));
//@endif
//@if watch
    level = (level < TW_AD_Z_MAX) ? level : TW_AD_Z_MAX;
//@endif
//@if distance
    tw_pca_residual_s16(s->t_${dst}, TW_AD_N, ${dk}, ${dweights}, ${dmultiplier}, ${dshift}, ${dgram}, ${dgram_shift},
                        ${dscore_shift}, &dist);
//@endif
    dev = (dev < 0) ? -dev : dev;
//@if !watch
    if (ad->flagged == 0u) {
        if (ad->drift > TW_AD_DRIFT || dev > TW_AD_LIK_LIMIT) {
            ad->flagged = 1u;
            ad->flags++;
        }
    } else if (ad->drift < TW_AD_REARM && dev < TW_AD_LIK_REARM) {
        ad->flagged = 0u;
    }
//@endif
//@if watch_only
    if (ad->flagged == 0u) {
        if (ad->drift > TW_AD_DRIFT || dev > TW_AD_LIK_LIMIT || level > TW_AD_WATCH) {
            ad->flagged = 1u;
            ad->flags++;
        }
    } else if (ad->drift < TW_AD_REARM && dev < TW_AD_LIK_REARM && level < TW_AD_WATCH_REARM) {
        ad->flagged = 0u;
    }
//@endif
//@if distance
    if (ad->flagged == 0u) {
        if (ad->drift > TW_AD_DRIFT || dev > TW_AD_LIK_LIMIT || level > TW_AD_WATCH || dist > TW_AD_DIST) {
            ad->flagged = 1u;
            ad->flags++;
        }
    } else if (ad->drift < TW_AD_REARM && dev < TW_AD_LIK_REARM && level < TW_AD_WATCH_REARM &&
               dist < TW_AD_DIST_REARM) {
        ad->flagged = 0u;
    }
//@endif
}

/* The adapted scaling and the likelihood's running distribution back to the reference, the flag cleared, the
 * counts kept (tw_init calls it after clearing the state). */
void tw_rebaseline(tw_state_t *s)
{
    int32_t i;
    if (s == NULL) {
        return;
    }
    s->lik_mean = TW_LIK_MEAN0;
    s->lik_var = TW_LIK_VAR0;
    for (i = 0; i < TW_AD_N; i++) {
        tw_adapt_input_t *a = &s->ad.in[i];
        a->mu = 0;
//@if settle
        a->smu = 0;
        tw_adapt_set_svar(a, TW_AD_VAR_ONE >> TW_AD_SVAR_DROP);
//@endif
//@if watch
        a->wmu = 0;
//@endif
//@if scale
        tw_adapt_set_sd(&s->ad, i, TW_AD_SD_ONE); /* after wmu: it may hold the low byte */
//@endif
    }
//@if settle
    s->ad.elevated = 0u;
    s->ad.settling = 0u;
    s->ad.wide = 0u;
//@endif
    s->ad.drift = 0;
    s->ad.flagged = 0u;
}
"""

#: The per-input adapted state (one struct per input: its members sit next to each other, so a small core reaches
#: them from one pointer), before ``tw_state_t`` in the header.
C_TYPEDEF = r"""/* The adapted state of one input (tinywarden.kernels.adapt_q). */
typedef struct {
    /* the adapted mean, 2^-TW_AD_FRAC input units from the reference, |mean| < 2^TW_AD_MEAN_BITS, in the top 24 bits
     * (TW_AD_MEAN); with the settling rule the low byte of the shadow's variance in the low 8 */
    int32_t mu;
//@if settle
    /* the shadow's mean (settling rule), as mu; the high byte of the shadow's variance (Q8, var >> TW_AD_SVAR_DROP,
     * <= TW_AD_SVAR_MAX) in the low 8 */
    int32_t smu;
//@endif
//@if watch
    int32_t wmu; /* the slow-drift watch's level (windows under the threshold), as mu; the low byte of the adapted
                  * scale (sdh) in the low 8 */
//@endif
} tw_adapt_input_t;

/* The adaptation's state (tinywarden.kernels.adapt_q). */
typedef struct {
    int32_t drift; /* Q12: the largest distance of in[].mu from the reference */
    uint32_t adapted; /* windows that taught the baseline (wraps) */
    uint32_t flags; /* drift flags raised (wraps) */
//@if settle
    uint32_t elevated; /* leaky count of windows over the threshold, in [0, TW_AD_SETTLE_N] */
    uint8_t settling; /* 0 or 1 */
    uint8_t wide; /* 1 when the shadow's spread is over TW_AD_SETTLE_SPREAD in some input (after the last window) */
//@endif
    uint8_t flagged; /* 0 or 1 */
    tw_adapt_input_t in[${n}]; /* per adapted input */
//@if sd_split
    /* the high byte of each input's adapted scale (Q12 reference standard deviations, <= TW_AD_SD_MAX; its variance
     * is TW_AD_VAR_OF, its gain tw_adapt_gain), whose low byte is in the low byte of in[i].wmu */
    uint8_t sdh[${n}];
//@endif
//@if sd_array
    uint16_t sd[${n}]; /* each input's adapted scale, Q12 reference standard deviations, <= TW_AD_SD_MAX */
//@endif
} tw_adapt_t;
"""

#: Appended to the header when the module adapts its baseline.
C_HEADER = r"""
#ifndef TINYWARDEN_ADAPT_H
#define TINYWARDEN_ADAPT_H
#ifdef __cplusplus
extern "C" {
#endif
/*
 * Baseline adaptation (tinywarden.kernels.adapt_q; policy [adaptation]: ${policy}): every window whose
 * confidence is below TW_AD_BELOW (Q15)${gate} moves the feature scaling's per-input ${what} by
 * 2^-TW_AD_RATE_SHIFT of the way towards it, against the trained reference compiled in here;${settle} the drift
 * flag rises when the adapted means move more than TW_AD_DRIFT (Q12 reference standard deviations) or the
 * likelihood's running mean more than its own limit${watch}, and falls once each is back under half. Bit-exact with
 * tinywarden.program.Int8Stream(program, adaptation).
 */
#define TW_HAS_ADAPTATION 1${settling}
/* Accessors (static inline: they cost flash only where called). 1 while the adapted baseline is flagged as
 * drifted from the reference (a slow ramp, or a change to approve). */
static inline uint8_t tw_baseline_flagged(const tw_state_t *s)
{
    return (s == NULL) ? 0u : s->ad.flagged;
}
/* The adapted means' largest distance from the reference, in Q12 reference standard deviations. */
static inline int32_t tw_baseline_drift(const tw_state_t *s)
{
    return (s == NULL) ? 0 : s->ad.drift;
}
/* Windows that taught the baseline, and flags raised, since tw_init (both wrap at 2^32). */
static inline uint32_t tw_baseline_adapted(const tw_state_t *s)
{
    return (s == NULL) ? 0u : s->ad.adapted;
}
static inline uint32_t tw_baseline_flags(const tw_state_t *s)
{
    return (s == NULL) ? 0u : s->ad.flags;
}
/* Operator re-baseline: the adapted scaling and the likelihood's running distribution back to the reference,
 * the flag cleared (the counts are kept). Call it only on an operator's authenticated command. */
void tw_rebaseline(tw_state_t *s);
#ifdef __cplusplus
}
#endif
#endif /* TINYWARDEN_ADAPT_H */
"""


def c_features(params: AdaptParams, op: Op) -> frozenset[str]:
    """The :data:`C_TEMPLATE` blocks a module with ``params`` and the step ``op`` needs."""
    on = set()
    if params.scaled:
        on.add("scale")
        on.add("adapt_scale" if params.adapt_scale else "relax")
        if "fold" in op.consts:
            on.add("fold")
    if params.scaled:
        on.add("sd_split" if params.watch_q12 else "sd_array")  # the adapted scale's 16 bits (tw_adapt_sd)
    if params.scaled and not params.settle_n:
        on.add("scale_only")  # the slow path learns the scale (adapt_scale), no settling rule
    if params.settle_n:
        on.add("settle")
        if "fold" in op.consts:
            on.add("settle_fold")
    if params.gate:
        on.add("gate")
    zmul1 = np.asarray(op.consts["zmul"]).size == 1
    if zmul1:
        on.add("zmul1")
    if params.settle_n:
        on.add("every")  # the loop visits every input each window: a window that does not teach skips the rest
    if params.watch_q12:
        on.update({"watch", "every", "watch_zmul1" if zmul1 else "watch_zmuln"})
        on.add("distance" if params.distance_bound else "watch_only")
    return frozenset(on)


def c_blocks(text: str, on: frozenset[str]) -> str:
    """``text`` with its ``//@if NAME`` (or ``!NAME``) ... ``//@endif`` blocks kept when ``NAME`` is in ``on``
    (is not, for ``!NAME``), dropped otherwise; the marker lines go.

    >>> c_blocks("a\\n//@if x\\nb\\n//@endif\\n//@if !x\\nc\\n//@endif\\n", frozenset({"x"}))
    'a\\nb\\n'
    """
    out: list[str] = []
    keep: bool | None = None
    for line in text.splitlines(keepends=True):
        s = line.strip()
        if s.startswith("//@if "):
            name = s.removeprefix("//@if ").strip()
            keep = (name[1:] not in on) if name.startswith("!") else (name in on)
        elif s == "//@endif":
            keep = None
        elif keep is not False:
            out.append(line)
    return "".join(out)
