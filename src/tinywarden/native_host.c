/*
 * native_host.c -- host-only wrapper of a generated tinywarden C module (tinywarden.native).
 *
 * Compiled into the same shared library as the generated tinywarden_model.c, on the host only: nothing
 * here reaches a microcontroller build. It adds what a Python caller loading the library through ctypes
 * needs besides the public tw_ API: the module's shape as numbers, a batch loop (one call over a whole
 * array of raw float samples, so the per-sample cost is the C's and not the foreign-function call's),
 * a push that returns the result as plain integers, the baseline adaptation's status, the carry-over
 * of the likelihood and adaptation state from one state to another (an agent's hot swap to a bundle with
 * the same model file), and that same state as a blob of bytes an agent keeps across a restart.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tinywarden_model.h"

/* Bumped when a function below changes its signature (tinywarden.native checks it after loading). */
#define TWH_ABI 3

#ifndef TW_HAS_ADAPTATION
#define TW_HAS_ADAPTATION 0
#endif

int32_t twh_abi(void);
size_t twh_state_size(void);
void twh_info(int64_t out[8]);
long twh_batch(tw_state_t *s, const float *samples, long rows, int32_t *scores, uint8_t *flags,
               uint8_t *anomalies, uint16_t *confidences, long capacity);
int twh_push(tw_state_t *s, const float sample[TW_N_CHANNELS], int32_t out[4]);
void twh_adaptation(const tw_state_t *s, int64_t out[7]);
void twh_rebaseline(tw_state_t *s);
void twh_carry(tw_state_t *dst, const tw_state_t *src);
long twh_features(const tw_state_t *s, int64_t *out, long capacity);
long twh_state_export(const tw_state_t *s, uint8_t *out, long capacity);
int twh_state_import(tw_state_t *s, const uint8_t *in, long length);

int32_t twh_abi(void)
{
    return TWH_ABI;
}

/* sizeof(tw_state_t): the bytes a Python caller allocates for one state. */
size_t twh_state_size(void)
{
    return sizeof(tw_state_t);
}

/* channels, window, stride, k, n, threshold, has likelihood, has adaptation */
void twh_info(int64_t out[8])
{
    out[0] = TW_N_CHANNELS;
    out[1] = TW_WINDOW;
    out[2] = TW_STRIDE;
    out[3] = TW_PERSIST_K;
    out[4] = TW_PERSIST_N;
    out[5] = TW_THRESHOLD;
    out[6] = TW_HAS_LIKELIHOOD;
    out[7] = TW_HAS_ADAPTATION;
}

/* Push rows samples (row-major, TW_N_CHANNELS floats each) through tw_push and write each completed window's
 * result; returns the number of windows, at most capacity (the rest are computed but not written), or
 * TW_EINVAL for a NULL argument. */
long twh_batch(tw_state_t *s, const float *samples, long rows, int32_t *scores, uint8_t *flags,
               uint8_t *anomalies, uint16_t *confidences, long capacity)
{
    tw_result_t r;
    long i;
    long n = 0;
    if (s == NULL || samples == NULL || scores == NULL || flags == NULL || anomalies == NULL ||
        confidences == NULL) {
        return TW_EINVAL;
    }
    for (i = 0; i < rows; i++) {
        if (tw_push(s, samples + (size_t)i * TW_N_CHANNELS, &r) == 1 && n < capacity) {
            scores[n] = r.score;
            flags[n] = r.flag;
            anomalies[n] = r.anomaly;
            confidences[n] = r.confidence;
            n++;
        }
    }
    return n;
}

/* tw_push with the result as {score, flag, anomaly, confidence}. */
int twh_push(tw_state_t *s, const float sample[TW_N_CHANNELS], int32_t out[4])
{
    tw_result_t r;
    int got;
    if (out == NULL) {
        return TW_EINVAL;
    }
    got = tw_push(s, sample, &r);
    if (got == 1) {
        out[0] = r.score;
        out[1] = r.flag;
        out[2] = r.anomaly;
        out[3] = r.confidence;
    }
    return got;
}

/* adapted windows, flags raised, flagged, drift (Q12), the likelihood's running mean (Q32), the smallest gain
 * (Q15; 2^15 = the reference scale, also without a learned scale), settling (0/1). TWH_AD_SCALE and TWH_AD_SETTLE
 * are defined by tinywarden.native when the policy's rule has those members (tinywarden.kernels.adapt_q). */
void twh_adaptation(const tw_state_t *s, int64_t out[7])
{
    memset(out, 0, 7 * sizeof(int64_t));
    out[5] = 32768;
#if TW_HAS_LIKELIHOOD
    out[4] = s->lik_mean;
#endif
#if TW_HAS_ADAPTATION
    out[0] = tw_baseline_adapted(s);
    out[1] = tw_baseline_flags(s);
    out[2] = tw_baseline_flagged(s);
    out[3] = tw_baseline_drift(s);
#if defined(TWH_AD_SCALE)
    {
        size_t i;
        for (i = 0; i < sizeof(s->ad.in) / sizeof(s->ad.in[0]); i++) {
            out[5] = (s->ad.in[i].g < out[5]) ? s->ad.in[i].g : out[5];
        }
    }
#endif
#if defined(TWH_AD_SETTLE)
    out[6] = s->ad.settling;
#endif
#endif
}

/* The operator's re-baseline: tw_rebaseline with adaptation, else the likelihood's running distribution back
 * to the fitted one (as tinywarden.program.Int8Stream.rebaseline). */
void twh_rebaseline(tw_state_t *s)
{
#if TW_HAS_ADAPTATION
    tw_rebaseline(s);
#elif TW_HAS_LIKELIHOOD
    tw_state_t fresh;
    tw_init(&fresh);
    s->lik_mean = fresh.lik_mean;
    s->lik_var = fresh.lik_var;
#else
    (void)s;
#endif
}

/* dst takes src's likelihood and adaptation state and keeps its own samples, windows and decisions (an agent's
 * hot swap to a bundle with the same model file). TWH_LIK_HOLD, TWH_LIK_RECORD and TWH_LIK_VALUES are defined by
 * tinywarden.native when the likelihood step has the hold-off, the record rule or the value record (their members
 * exist only then). */
void twh_carry(tw_state_t *dst, const tw_state_t *src)
{
    if (dst == NULL || src == NULL) {
        return;
    }
#if TW_HAS_LIKELIHOOD
    dst->lik_mean = src->lik_mean;
    dst->lik_var = src->lik_var;
    dst->lik_sum = src->lik_sum;
    memcpy(dst->lik_y, src->lik_y, sizeof(dst->lik_y));
    dst->lik_pos = src->lik_pos;
    dst->lik_count = src->lik_count;
    dst->confidence = src->confidence;
#if defined(TWH_LIK_HOLD)
    dst->lik_hold = src->lik_hold;
#endif
#if defined(TWH_LIK_RECORD)
    dst->lik_rec_lo = src->lik_rec_lo;
    dst->lik_rec_hi = src->lik_rec_hi;
#endif
#if defined(TWH_LIK_VALUES)
    memcpy(dst->lik_vlo, src->lik_vlo, sizeof(dst->lik_vlo));
    memcpy(dst->lik_vhi, src->lik_vhi, sizeof(dst->lik_vhi));
    dst->lik_vnew = src->lik_vnew;
#endif
#endif
#if TW_HAS_ADAPTATION
    dst->ad = src->ad; /* the whole integer state: means, scales, the settling shadow and count, the drift */
#endif
}

/* The integer window features of the last completed window (for an incident's summary), when the module keeps
 * them to the end of the window: tinywarden.native defines TWH_FEATURES as the state member that holds them and
 * TWH_N_FEATURES as their count. Returns that count (at most capacity values written; out may be NULL to ask
 * the count), 0 without them. */
long twh_features(const tw_state_t *s, int64_t *out, long capacity)
{
#if defined(TWH_FEATURES) && defined(TWH_N_FEATURES)
    long i;
    if (s == NULL) {
        return 0;
    }
    for (i = 0; out != NULL && i < TWH_N_FEATURES && i < capacity; i++) {
        out[i] = (int64_t)s->TWH_FEATURES[i];
    }
    return TWH_N_FEATURES;
#else
    (void)s;
    (void)out;
    (void)capacity;
    return 0;
#endif
}

/* The state an agent keeps across a restart (tinywarden.agent.adaptstate): a whole tw_state_t, TW_STATE_BYTES bytes
 * (its members have no implicit padding), that is a fresh state (tw_init) holding s's likelihood and adaptation
 * state: exactly what twh_carry carries, so a member added there is kept here too; the samples in flight, the
 * k-of-n history and the scratch are a fresh state's. Returns TW_STATE_BYTES, or TW_EINVAL for a NULL argument
 * or capacity < TW_STATE_BYTES (nothing written). */
long twh_state_export(const tw_state_t *s, uint8_t *out, long capacity)
{
    tw_state_t blob;
    if (s == NULL || out == NULL || capacity < (long)sizeof(blob)) {
        return TW_EINVAL;
    }
    memset(&blob, 0, sizeof(blob));
    tw_init(&blob);
    twh_carry(&blob, s);
    memcpy(out, &blob, sizeof(blob));
    return (long)sizeof(blob);
}

/* s takes the likelihood and adaptation state of a blob twh_state_export wrote (of this same module: the caller
 * checks that, and the blob's authenticity), keeping its own samples, windows and decisions. Returns 0, or
 * TW_EINVAL for a NULL argument or length != TW_STATE_BYTES (s untouched). */
int twh_state_import(tw_state_t *s, const uint8_t *in, long length)
{
    tw_state_t blob;
    if (s == NULL || in == NULL || length != (long)sizeof(blob)) {
        return TW_EINVAL;
    }
    memcpy(&blob, in, sizeof(blob));
    twh_carry(s, &blob);
    return 0;
}
