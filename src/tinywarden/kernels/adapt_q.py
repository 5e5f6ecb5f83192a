"""Baseline adaptation in integers: :class:`tinywarden.adapt.BaselineAdapter`'s rule on the device.

The float adapter moves the pipeline's scaler (per-input mean and variance) by ``2**-rate_shift`` of the way
from every window whose confidence is below ``below_confidence``, against the frozen training scaler, and
flags a drift of the adapted means (in training standard deviations) or of the likelihood's running mean
beyond ``max_drift``. In the int8 program the scaler is folded into the requantization of the integer
features to the model input (``requantize_s64_s8`` / ``requantize_s64_s16``: ``q = requantize((f >> pre) -
offset, multiplier, shift)``), so the adaptation acts there. Per input ``i``, with ``v = f >> pre`` (the
op's input unit) and state ``mu`` (int32, the adapted mean's distance from the reference in ``2**-F`` input
units), ``var`` (int32, the adapted variance in reference variances, Q16) and ``g`` (uint16, the gain
``1 / max(sqrt(var), 0.5)``, Q15):

*forward* (every window, in place of the op): ``offset_a = sat32(offset + (mu >> F) + (fold * (s - 2**15) >>
15))`` with ``s = max(var * g >> 16, 2**14)`` (``fold`` is the detector's own offset folded into the op,
e.g. an EWMA mean; zero for most families), ``multiplier_a = multiplier * g >> 15`` (or ``>> 16`` with the
shift raised by one when that passes ``INT32_MAX``), then the op's arithmetic with them. In the reference
state (``mu = 0``, ``var = 2**20``, ``g = 2**15``) this is the op, bit for bit.

*update* (after the likelihood step, when ``confidence < below``): ``x = clamp(v - (offset - fold), +-X)``,
``d = (x << F) - mu``, ``mu += d >> rate_shift``; the deviation in reference standard deviations
``z = clamp(requantize(requantize(d, multiplier, shift - F + E), zmul, zshift), +-2**19)`` (Q12: the first
step is the op's own scaling, to the model input's unit with ``E`` more bits, the second the reference
deviation of that unit); ``var += (z*z >> 8 - var) >> rate_shift`` (at least 1, at most ``INT32_MAX``); a
Newton step ``g = g * (3 * 2**15 - t) >> 16`` with ``t = var * g * g >> 31`` (``g`` halved first while
``t > 2**16``) keeps ``g`` at ``1 / sqrt(var)`` (it starts from the last window's), clamped to [1, 65535]
(the scale floor of half the reference). The drift (Q12 standard deviations) is the largest
``min(requantize(|y|, zmul, zshift), 2**19 - 1)`` with ``y`` the first step of ``mu`` (with one ``zmul``
for all inputs, that of the largest ``|y|``: requantization is monotone).

*flag* (every window): raised when the drift exceeds ``max_drift`` or the likelihood's running mean is
more than ``max_drift`` fitted standard deviations from its fitted value, lowered again once both are
below half of it (:data:`tinywarden.adapt.REARM_FRACTION`).

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
from dataclasses import dataclass

import numpy as np

from tinywarden.arith import INT32_MAX, quantize_multiplier, requantize
from tinywarden.kernels.base import REQUANT_SHIFT_MAX, REQUANT_SHIFT_MIN, Op, int_attr, require

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
#: Newton steps per adapted window: the gain starts from the last window's, so one keeps it converged.
NEWTON_STEPS = 1
#: The largest ``max_drift`` that can still raise a flag (the drift is clamped with ``z``).
MAX_DRIFT_Q12 = Z_MAX


@dataclass(frozen=True)
class AdaptParams:
    """The policy's ``[adaptation]`` numbers as the integer step uses them (see :func:`adapt_params`)."""

    rate_shift: int
    below_q15: int  # adapt when the Q15 confidence < below_q15 (exactly conf/32768 < below_confidence)
    drift_q12: int  # flag when the drift (Q12) > drift_q12
    rearm_q12: int  # ... and lower the flag once it is < rearm_q12 (and the likelihood's below its rearm)
    lik_limit: int  # flag when |lik_mean - fitted mean| (Q32) > lik_limit
    lik_rearm: int


def adapt_params(likelihood: Op, rate_shift: int, below_confidence: float, max_drift: float,
                 rearm_fraction: float = 0.5) -> AdaptParams:
    """Integer thresholds of a float adaptation policy for a program whose likelihood step is ``likelihood``.

    >>> from tinywarden.likelihood import AnomalyLikelihood
    >>> from tinywarden.kernels.likelihood_q import lower_likelihood
    >>> lik = lower_likelihood(AnomalyLikelihood().fit(np.arange(1.0, 300.0)))
    >>> p = adapt_params(lik, 8, 0.2, 3.0)
    >>> p.below_q15, p.drift_q12, p.rearm_q12
    (6554, 12288, 6144)
    """
    require(0 <= int(rate_shift) <= 20, f"adaptation rate_shift must be in [0, 20], got {rate_shift}")
    require(math.isfinite(below_confidence) and math.isfinite(max_drift) and max_drift >= 0,
            "adaptation below_confidence and max_drift must be finite, max_drift >= 0")
    below = int(min(max(math.ceil(below_confidence * G_ONE), 0), G_ONE + 1))
    drift = int(min(round(max_drift * 4096), MAX_DRIFT_Q12))
    rearm = int(min(round(rearm_fraction * max_drift * 4096), MAX_DRIFT_Q12))
    std0 = math.isqrt(int(likelihood.attrs["var"]))  # Q16
    lik_limit = (round(max_drift * 4096) * std0 << 16) >> 12
    lik_rearm = (round(rearm_fraction * max_drift * 4096) * std0 << 16) >> 12
    cap = 2**62
    return AdaptParams(int(rate_shift), below, drift, rearm, min(lik_limit, cap), min(lik_rearm, cap))


# -- lowering (the quantizer's side) ---------------------------------------------------------------
def lower_adaptation(ops: tuple[Op, ...], mu: np.ndarray, sigma: np.ndarray,
                     affine: tuple[np.ndarray, np.ndarray] | None) -> Op | None:
    """The adaptation step of a program whose ops are ``ops``, for the pipeline scaler ``(mu, sigma)`` and
    the integer features' ``affine`` (``raw feature = a * f + b``); None when no op can be adapted."""
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
    frac = min(MAX_FRAC, 30 - math.ceil(math.log2(SPAN_SD * float(sd_v.max()) + 1)))
    m_real = c["multiplier"].astype(np.float64) * 2.0 ** (c["shift"].astype(np.float64) - 31)
    zreal = 2.0 ** (Z_BITS - E_BITS) / (m_real * sd_v)
    # equal up to the multipliers' rounding: one value for all (the common case, 5 bytes of flash)
    zreal = np.float32(zreal).astype(np.float64)
    shifts = c["shift"].astype(np.int64) - frac + E_BITS
    if frac < 0 or shifts.min() < REQUANT_SHIFT_MIN or shifts.max() > REQUANT_SHIFT_MAX \
            or np.abs(fold).max() > INT32_MAX or not (zreal > 0).all():
        return None
    if np.all(zreal == zreal[0]):
        zreal = zreal[:1]
    pairs = [quantize_multiplier(float(r)) for r in zreal]
    consts = {"zmul": np.array([m for m, _ in pairs], dtype=np.int32),
              "zshift": np.array([s for _, s in pairs], dtype=np.int8)}
    if np.any(fold != 0):
        consts["fold"] = fold.astype(np.int32)
    return Op(KIND, ops[j].src, ops[j].dst, {"op": j, "frac": int(frac)}, consts)


def check_adaptation(op: Op, ops: tuple[Op, ...]) -> None:
    """ConfigError when a (possibly tampered) adaptation step does not fit the op it adapts."""
    require(op.kind == KIND, f"the adaptation step must be {KIND}")
    j = int_attr(op, "op", 0, len(ops) - 1)
    target = ops[j]
    require(target.kind in ADAPTABLE and target.src == op.src and target.dst == op.dst,
            f"the adaptation must adapt a {' or '.join(ADAPTABLE)} op, not op {j} ({target.kind})")
    frac = int_attr(op, "frac", 0, MAX_FRAC)
    n = int(np.asarray(target.consts["offset"]).size)
    zm, zs = np.asarray(op.consts.get("zmul")), np.asarray(op.consts.get("zshift"))
    require(zm.dtype == np.int32 and zs.dtype == np.int8 and zm.shape == zs.shape and zm.size in (1, n),
            f"zmul (int32) and zshift (int8) must hold 1 or {n} values")
    require(int(zm.min()) >= 0 and int(zs.min()) >= REQUANT_SHIFT_MIN and int(zs.max()) <= REQUANT_SHIFT_MAX,
            f"zmul must be >= 0 and zshift in [{REQUANT_SHIFT_MIN}, {REQUANT_SHIFT_MAX}]")
    shifts = target.consts["shift"].astype(np.int64) - frac + E_BITS
    require(int(shifts.min()) >= REQUANT_SHIFT_MIN and int(shifts.max()) <= REQUANT_SHIFT_MAX,
            "frac takes the deviation's shift out of the requantization range")
    fold = op.consts.get("fold")
    require(fold is None or (np.asarray(fold).dtype == np.int32 and np.asarray(fold).shape == (n,)),
            f"fold must be int32 with {n} values")
    require(set(op.consts) <= {"zmul", "zshift", "fold"}, "unknown adaptation constant")


# -- the Python integer reference ------------------------------------------------------------------
class AdaptQState:
    """The adapted state of one device (``tw_init``, then :meth:`forward` and :meth:`observe` per window)."""

    def __init__(self, op: Op, target: Op, params: AdaptParams) -> None:
        self.op, self.target, self.params = op, target, params
        c = target.consts
        self.pre = c["pre_shift"].astype(np.int64)
        self.offset = c["offset"].astype(np.int64)
        self.mult = c["multiplier"].astype(np.int64)
        self.shift = c["shift"].astype(np.int64)
        n = self.offset.size
        self.fold = np.asarray(op.consts.get("fold", np.zeros(n, dtype=np.int32))).astype(np.int64)
        self.zmul = np.broadcast_to(op.consts["zmul"].astype(np.int64), (n,))
        self.zshift = np.broadcast_to(op.consts["zshift"].astype(np.int64), (n,))
        self.frac = int(op.attrs["frac"])
        self.xmax = (1 << (31 - self.frac)) - 1
        self.reset()

    def reset(self) -> None:
        """Back to the reference (``tw_init``; ``tw_rebaseline`` also clears the flag but keeps the counts)."""
        n = self.offset.size
        self.mu = np.zeros(n, dtype=np.int64)
        self.var = np.full(n, VAR_ONE, dtype=np.int64)
        self.g = np.full(n, G_ONE, dtype=np.int64)
        self.drift = 0
        self.flagged = False
        self.flags = 0
        self.adapted = 0
        self.held = 0  # windows that did not teach (Python only: the status file's count)

    def rebaseline(self) -> None:
        counts = self.flags, self.adapted, self.held
        self.reset()
        self.flags, self.adapted, self.held = counts

    def adapted_params(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(offset, multiplier, shift)`` of the op in the current state."""
        s = np.maximum((self.var * self.g) >> VAR_BITS, G_ONE // 2)
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

    def z_of(self, d: np.ndarray) -> np.ndarray:
        """Deviations ``d`` (``2**-F`` input units, per input) in Q12 reference standard deviations, clamped."""
        y = requantize(d, self.mult, self.shift - self.frac + E_BITS)
        return np.clip(requantize(y, self.zmul, self.zshift), -Z_MAX, Z_MAX)

    def drift_of(self, mu: np.ndarray) -> int:
        """The largest ``|mu|`` in Q12 reference standard deviations (module docstring)."""
        y = np.abs(requantize(mu, self.mult, self.shift - self.frac + E_BITS))
        return int(np.minimum(requantize(y, self.zmul, self.zshift), Z_MAX).max())

    def observe(self, features: np.ndarray, confidence: int, lik_mean: int, lik_mean0: int) -> tuple[bool, bool]:
        """One window's int64 features and Q15 confidence (the likelihood's running mean after it, and its
        fitted one); ``(adapted, new flag)``."""
        p = self.params
        adapt = confidence < p.below_q15
        if adapt:
            v = np.asarray(features, dtype=np.int64).reshape(-1) >> self.pre
            x = np.clip(v - (self.offset - self.fold), -self.xmax, self.xmax)
            d = (x << self.frac) - self.mu
            self.mu = self.mu + (d >> p.rate_shift)
            z = self.z_of(d)
            spread = (z * z) >> (2 * Z_BITS - VAR_BITS)  # < 2**30: |z| <= Z_MAX
            self.var = np.clip(self.var + ((spread - self.var) >> p.rate_shift), 1, INT32_MAX)
            self.g = newton_gain(self.var, self.g)
            self.drift = self.drift_of(self.mu)
            self.adapted += 1
        else:
            self.held += 1
        dev = abs(int(lik_mean) - int(lik_mean0))
        new = False
        if not self.flagged and (self.drift > p.drift_q12 or dev > p.lik_limit):
            self.flagged = new = True
            self.flags += 1
        elif self.flagged and self.drift < p.rearm_q12 and dev < p.lik_rearm:
            self.flagged = False
        return bool(adapt), new


def newton_gain(var: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``g`` moved towards ``2**15 / sqrt(var / 2**20)`` (module docstring), clamped to [1, G_MAX]."""
    g = np.asarray(g, dtype=np.int64).copy()
    var = np.asarray(var, dtype=np.int64)

    def t_of(g: np.ndarray) -> np.ndarray:
        return (((var * g) >> 15) * g) >> VAR_BITS

    t = t_of(g)
    while (high := (t > 2 * G_ONE) & (g > 1)).any():
        g = np.where(high, g >> 1, g)
        t = t_of(g)
    for k in range(NEWTON_STEPS):
        if k:
            t = t_of(g)
        g = np.clip((g * (3 * G_ONE - np.minimum(t, 2 * G_ONE))) >> 16, 1, G_MAX)
    return g


__all__ = ["ADAPTABLE", "C_TEMPLATE", "KIND", "AdaptParams", "AdaptQState", "adapt_params", "check_adaptation",
           "lower_adaptation", "newton_gain"]

# -- C ---------------------------------------------------------------------------------------------
#: Printed by :mod:`tinywarden.codegen.c` when the module adapts its baseline. ``${suffix}``/``${ctype}`` are
#: the adapted op's (``tw_requantize_s64_${suffix}`` is that op's own kernel, called once per input with the
#: adapted constants), ``${params}`` its parameter struct, ``${zi}`` ``i`` or ``0`` (one z multiplier for all
#: inputs), ``${fold}`` the fold term of input ``i``; the TW_AD_* limits come from the step and the policy.
C_TEMPLATE = r"""
/* The adapted offset, multiplier and shift of input i (tinywarden.kernels.adapt_q, forward). In the reference
 * state (ad_mu 0, ad_var TW_AD_VAR_ONE, ad_g TW_AD_G_ONE) they are the op's own. */
static void tw_adapt_params(const tw_state_t *s, int32_t i, int32_t *offset, int32_t *multiplier, int8_t *shift)
{
    int64_t sc = ((int64_t)s->ad_var[i] * s->ad_g[i]) >> TW_AD_VAR_BITS;
    int64_t off;
    int64_t m = ((int64_t)${params}.multiplier[i] * s->ad_g[i]) >> 15;
    int32_t sh = ${params}.shift[i];
    sc = (sc > TW_AD_G_ONE / 2) ? sc : TW_AD_G_ONE / 2;
    off = (int64_t)${params}.offset[i] + (s->ad_mu[i] >> TW_AD_FRAC) + ((${fold} * (sc - TW_AD_G_ONE)) >> 15);
    if (m > INT32_MAX) {
        m = ((int64_t)${params}.multiplier[i] * s->ad_g[i]) >> 16;
        sh++;
        if (sh > 30) {
            m = INT32_MAX;
            sh = 30;
        }
    }
    *offset = (int32_t)tw_clamp64(off, INT32_MIN, INT32_MAX);
    *multiplier = (int32_t)m;
    *shift = (int8_t)sh;
}

/* The op the adaptation takes the place of, with the adapted constants: its own kernel, one input at a time. */
static void tw_adapt_forward(const tw_state_t *s, const int64_t *in, ${ctype} *out)
{
    int32_t i;
    for (i = 0; i < TW_AD_N; i++) {
        tw_feature_requant_params_t p = ${params};
        int32_t offset;
        int32_t multiplier;
        int8_t shift;
        tw_adapt_params(s, i, &offset, &multiplier, &shift);
        p.pre_shift = &${params}.pre_shift[i];
        p.offset = &offset;
        p.multiplier = &multiplier;
        p.shift = &shift;
        tw_requantize_s64_${suffix}(&p, &in[i], 1, &out[i]);
    }
}

/* A deviation d of input i (2^-TW_AD_FRAC input units) in reference standard deviations, Q12, clamped. */
static int32_t tw_adapt_z(int64_t d, int32_t i)
{
    int32_t y = tw_requantize(d, ${params}.multiplier[i], ${params}.shift[i] - TW_AD_FRAC + TW_AD_E);
    int64_t z = tw_requantize((int64_t)y, tw_adapt_zmul[${zi}], tw_adapt_zshift[${zi}]);
    return (int32_t)tw_clamp64(z, -TW_AD_Z_MAX, TW_AD_Z_MAX);
}

/* min(requantize(y, zmul, zshift), TW_AD_Z_MAX) of input i's |first step| y >= 0: its distance in Q12. */
static int32_t tw_adapt_zabs(int64_t y, int32_t i)
{
    int32_t z = tw_requantize(y, tw_adapt_zmul[${zi}], tw_adapt_zshift[${zi}]);
    (void)i;
    return (z < TW_AD_Z_MAX) ? z : TW_AD_Z_MAX;
}

/* g * g * var >> 31: 1.0 (TW_AD_G_ONE) when g is 1 / sqrt(var). Range: var in [1, INT32_MAX], g in [1, 65535]. */
static int64_t tw_adapt_t(int32_t var, int64_t g)
{
    return ((((int64_t)var * g) >> 15) * g) >> TW_AD_VAR_BITS;
}

/* Newton steps of g towards 1 / sqrt(var) (Q15, var Q16), clamped to [1, TW_AD_G_MAX]. */
static uint16_t tw_adapt_gain(int32_t var, uint16_t g0)
{
    int64_t g = g0;
    int64_t t = tw_adapt_t(var, g);
    int32_t k;
    while (t > 2 * TW_AD_G_ONE && g > 1) {
        g >>= 1;
        t = tw_adapt_t(var, g);
    }
    for (k = 0; k < TW_AD_NEWTON; k++) {
        if (k > 0) {
            t = tw_adapt_t(var, g);
        }
        g = (g * (3 * TW_AD_G_ONE - ((t < 2 * TW_AD_G_ONE) ? t : 2 * TW_AD_G_ONE))) >> 16;
        g = tw_clamp64(g, 1, TW_AD_G_MAX);
    }
    return (uint16_t)g;
}

/* After the likelihood step: adapt from this window's features when its confidence is below TW_AD_BELOW, then
 * raise or lower the drift flag (tinywarden.kernels.adapt_q, update and flag). */
static void tw_adapt_observe(tw_state_t *s)
{
    int32_t i;
    int64_t dev = s->lik_mean - TW_LIK_MEAN0;
    if (s->confidence < TW_AD_BELOW) {
        int32_t drift = 0;
#if TW_AD_ZMUL_N == 1
        int64_t ymax = 0;
#endif
        for (i = 0; i < TW_AD_N; i++) {
            int64_t ref = (int64_t)${params}.offset[i] - ${fold};
            int64_t x = tw_clamp64((s->t_${src}[i] >> ${params}.pre_shift[i]) - ref, -TW_AD_X_MAX, TW_AD_X_MAX);
            int64_t d = x * ((int64_t)1 << TW_AD_FRAC) - s->ad_mu[i];
            int64_t z;
            int64_t spread;
            int64_t y;
            s->ad_mu[i] = (int32_t)(s->ad_mu[i] + (d >> TW_AD_RATE_SHIFT));
            z = tw_adapt_z(d, i);
            spread = (z * z) >> (2 * TW_AD_Z_BITS - TW_AD_VAR_BITS); /* < 2^30: |z| <= TW_AD_Z_MAX */
            s->ad_var[i] = (int32_t)tw_clamp64(s->ad_var[i] + ((spread - s->ad_var[i]) >> TW_AD_RATE_SHIFT), 1,
                                               INT32_MAX);
            s->ad_g[i] = tw_adapt_gain(s->ad_var[i], s->ad_g[i]);
            y = tw_requantize((int64_t)s->ad_mu[i], ${params}.multiplier[i],
                              ${params}.shift[i] - TW_AD_FRAC + TW_AD_E);
            y = (y < 0) ? -y : y;
#if TW_AD_ZMUL_N == 1
            ymax = (y > ymax) ? y : ymax;
#else
            z = tw_adapt_zabs(y, i);
            drift = (z > drift) ? (int32_t)z : drift;
#endif
        }
#if TW_AD_ZMUL_N == 1
        drift = tw_adapt_zabs(ymax, 0);
#endif
        s->ad_drift = drift;
        s->ad_adapted++;
    }
    dev = (dev < 0) ? -dev : dev;
    if (s->ad_flagged == 0u && (s->ad_drift > TW_AD_DRIFT || dev > TW_AD_LIK_LIMIT)) {
        s->ad_flagged = 1u;
        s->ad_flags++;
    } else if (s->ad_flagged != 0u && s->ad_drift < TW_AD_REARM && dev < TW_AD_LIK_REARM) {
        s->ad_flagged = 0u;
    }
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
        s->ad_mu[i] = 0;
        s->ad_var[i] = TW_AD_VAR_ONE;
        s->ad_g[i] = TW_AD_G_ONE;
    }
    s->ad_drift = 0;
    s->ad_flagged = 0u;
}

uint8_t tw_baseline_flagged(const tw_state_t *s)
{
    return (s == NULL) ? 0u : s->ad_flagged;
}

int32_t tw_baseline_drift(const tw_state_t *s)
{
    return (s == NULL) ? 0 : s->ad_drift;
}

uint32_t tw_baseline_adapted(const tw_state_t *s)
{
    return (s == NULL) ? 0u : s->ad_adapted;
}

uint32_t tw_baseline_flags(const tw_state_t *s)
{
    return (s == NULL) ? 0u : s->ad_flags;
}
"""

#: Appended to the header when the module adapts its baseline.
C_HEADER = r"""
#ifndef TINYWARDEN_ADAPT_H
#define TINYWARDEN_ADAPT_H
#ifdef __cplusplus
extern "C" {
#endif
/*
 * Baseline adaptation (tinywarden.kernels.adapt_q; policy [adaptation]: rate_shift ${rate_shift}, below_confidence
 * ${below}, max_drift ${max_drift}): every window whose confidence is below TW_AD_BELOW (Q15) moves the
 * feature scaling's per-input mean and variance by 2^-TW_AD_RATE_SHIFT of the way towards it, against the
 * trained reference compiled in here; the drift flag rises when the adapted means move more than TW_AD_DRIFT
 * (Q12 reference standard deviations) or the likelihood's running mean more than its own limit, and falls
 * once both are back under half. Bit-exact with tinywarden.program.Int8Stream(program, adaptation).
 */
#define TW_HAS_ADAPTATION 1
/* 1 while the adapted baseline is flagged as drifted from the reference (a slow ramp, or a change to approve). */
uint8_t tw_baseline_flagged(const tw_state_t *s);
/* The adapted means' largest distance from the reference, in Q12 reference standard deviations. */
int32_t tw_baseline_drift(const tw_state_t *s);
/* Windows that taught the baseline, and flags raised, since tw_init (both wrap at 2^32). */
uint32_t tw_baseline_adapted(const tw_state_t *s);
uint32_t tw_baseline_flags(const tw_state_t *s);
/* Operator re-baseline: the adapted scaling and the likelihood's running distribution back to the reference,
 * the flag cleared (the counts are kept). Call it only on an operator's authenticated command. */
void tw_rebaseline(tw_state_t *s);
#ifdef __cplusplus
}
#endif
#endif /* TINYWARDEN_ADAPT_H */
"""
