/*
 * libFuzzer harness for a generated tinywarden C module (built with -fsanitize=fuzzer,address,undefined).
 *
 * Compile with one of:
 *   -DTW_FUZZ_PUSH     records (uint8 ctrl, uint32 now_s, TW_N_CHANNELS float32 as raw bits): every sample
 *                      goes through tw_push, tw_push_q (after tw_quantize_sample) and tw_respond_push, and
 *                      each completed window through tw_respond. Raw bits reach NaN, infinities, denormals
 *                      and extremes; ctrl also forces one channel to such a value.
 *   -DTW_FUZZ_RESPOND  records (uint8 kind, uint32 now_s, int32 score, uint8 buf): kinds 0x80..0x82 call
 *                      tw_respond (no window / a window with that score / a larger buffer), the others
 *                      tw_respond_input with (int8)kind, so unknown kinds too; buf >= 0x80 passes a
 *                      buffer of (buf & 0x7f) events, refused when shorter than TW_RESPOND_MAX_EVENTS.
 *   -DTW_FUZZ_STATE    as TW_FUZZ_RESPOND, but the response state starts as the input's first
 *                      sizeof(tw_response_t) bytes: a corrupt state must be refused with TW_EINVAL.
 *                      With -DTW_FUZZ_MEMORY_ONLY too, only the sanitizers judge (no event/state checks):
 *                      what a corrupt state does to memory when it is not refused.
 * Besides the sanitizers, the oracle checks the documented contracts and aborts when one is broken:
 * return values, event fields within their ranges, event times never decreasing, TW_EINVAL changing
 * nothing, and tw_push agreeing with tw_push_q.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tinywarden_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                              \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "contract broken: %s (line %d)\n", #cond, __LINE__);  \
            abort();                                                               \
        }                                                                          \
    } while (0)

static size_t take(const uint8_t **data, size_t *size, void *out, size_t n)
{
    size_t k = *size < n ? *size : n;
    memset(out, 0, n);
    memcpy(out, *data, k);
    *data += k;
    *size -= k;
    return k;
}

static int64_t last_event_time;

static void check_events(int n, const tw_action_event_t *ev, int max_events)
{
    int i;
    REQUIRE(n >= 0 && n <= TW_RESPOND_MAX_EVENTS && n <= max_events);
    for (i = 0; i < n; i++) {
        REQUIRE(ev[i].tier <= TW_N_TIERS);
        REQUIRE(ev[i].action_tier <= TW_N_TIERS);
        REQUIRE(ev[i].action >= -1 && ev[i].action < TW_N_ACTIONS);
        REQUIRE(ev[i].kind <= TW_EVENT_REVERT);
        REQUIRE(ev[i].reason < TW_N_REASONS);
        REQUIRE((ev[i].action == -1) == (ev[i].kind == TW_EVENT_NOTE));
        REQUIRE(ev[i].time_s >= last_event_time);
        last_event_time = ev[i].time_s;
    }
}

#if defined(TW_FUZZ_PUSH)

static const float SPECIAL[8] = {0.0f, -0.0f, 1e-45f, 3.4028235e38f, -3.4028235e38f, 0.0f, 0.0f, 0.0f};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static tw_state_t a, b, c;
    static tw_response_t r;
    tw_action_event_t ev[TW_RESPOND_MAX_EVENTS];
    tw_result_t ra, rb, rc;
    float x[TW_N_CHANNELS];
    int16_t q[TW_N_CHANNELS];
    tw_init(&a);
    tw_init(&b);
    tw_init(&c);
    tw_respond_init(&r);
    last_event_time = INT64_MIN;
    while (size > 0) {
        uint8_t ctrl;
        uint32_t now;
        int ga, gb, gc, n;
        take(&data, &size, &ctrl, 1);
        take(&data, &size, &now, sizeof now);
        take(&data, &size, x, sizeof x);
        if (ctrl & 0x80) {
            int ch = (ctrl >> 3) % TW_N_CHANNELS;
            switch (ctrl & 7) {
            case 5: x[ch] = NAN; break;
            case 6: x[ch] = INFINITY; break;
            case 7: x[ch] = -INFINITY; break;
            default: x[ch] = SPECIAL[ctrl & 7]; break;
            }
        }
        ga = tw_push(&a, x, &ra);
        tw_quantize_sample(x, q);
        gb = tw_push_q(&b, q, &rb);
        gc = tw_respond_push(&r, &c, x, &rc);
        REQUIRE(ga == 0 || ga == 1);
        REQUIRE(ga == gb && ga == gc);
        if (ga == 1) {
            REQUIRE(ra.score >= 0 && ra.flag <= 1 && ra.anomaly <= 1);
            REQUIRE(ra.flag == (ra.score > TW_THRESHOLD));
            REQUIRE(ra.score == rb.score && ra.flag == rb.flag && ra.anomaly == rb.anomaly);
            REQUIRE(rc.score == TW_SCORE_FAULT || rc.score == ra.score);
        }
        n = tw_respond(&r, now, gc == 1 ? &rc : NULL, ev, TW_RESPOND_MAX_EVENTS);
        REQUIRE(n != TW_EINVAL); /* a valid state, a full buffer: nothing to refuse, whatever the clock */
        check_events(n, ev, TW_RESPOND_MAX_EVENTS);
    }
    REQUIRE(tw_push(NULL, x, &ra) == TW_EINVAL && tw_push(&a, NULL, &ra) == TW_EINVAL);
    return 0;
}

#else /* TW_FUZZ_RESPOND or TW_FUZZ_STATE */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static tw_response_t r, before;
    tw_action_event_t ev[TW_RESPOND_MAX_EVENTS + 2];
    tw_respond_init(&r);
#if defined(TW_FUZZ_STATE)
    take(&data, &size, &r, sizeof r);
#endif
    last_event_time = INT64_MIN;
    while (size > 0) {
        uint8_t kind, buf;
        uint32_t now;
        int32_t score;
        int n, valid_kind, max_events, enough;
        take(&data, &size, &kind, 1);
        take(&data, &size, &now, sizeof now);
        take(&data, &size, &score, sizeof score);
        take(&data, &size, &buf, 1);
        max_events = buf & 0x80 ? buf & 0x7f : TW_RESPOND_MAX_EVENTS;
        if (max_events > TW_RESPOND_MAX_EVENTS + 1) {
            max_events = TW_RESPOND_MAX_EVENTS + 1;
        }
        enough = max_events >= TW_RESPOND_MAX_EVENTS;
        memcpy(&before, &r, sizeof r);
        if (kind >= 0x80 && kind < 0x80 + 3) {
            tw_result_t w;
            w.score = score;
            w.flag = (uint8_t)(score > TW_THRESHOLD);
            w.anomaly = 0;
            w.confidence = (uint16_t)score; /* any Q15-or-beyond value: the bars compare it as it comes */
            n = tw_respond(&r, now, kind == 0x80 ? NULL : &w, ev, kind == 0x82 && enough ? max_events + 1 : max_events);
            valid_kind = 1;
        } else {
            n = tw_respond_input(&r, now, (int)(int8_t)kind, score, ev, max_events);
            valid_kind = (int)(int8_t)kind >= 0 && (int)(int8_t)kind < TW_N_INPUTS;
        }
        if (!valid_kind || !enough) {
            REQUIRE(n == TW_EINVAL);
        }
        if (n == TW_EINVAL) {
            REQUIRE(memcmp(&before, &r, sizeof r) == 0);
            continue;
        }
#if !defined(TW_FUZZ_MEMORY_ONLY)
        check_events(n, ev, TW_RESPOND_MAX_EVENTS + 2);
        REQUIRE(r.tier <= TW_N_TIERS);
        REQUIRE(r.tier != 0 || r.pinned == 0);
#endif
    }
    REQUIRE(tw_respond(NULL, 0, NULL, ev, TW_RESPOND_MAX_EVENTS) == TW_EINVAL);
    REQUIRE(tw_respond(&r, 0, NULL, NULL, TW_RESPOND_MAX_EVENTS) == TW_EINVAL);
    return 0;
}

#endif
