/*
 * Test harness for the response state machine of a generated tinywarden C module.
 *
 * Mode "i": reads records (int32 kind, uint32 now_s, int32 score) and feeds each one: scores, faults
 *   (as a TW_SCORE_FAULT window) and ticks through tw_respond, the other kinds through tw_respond_input.
 * Mode "s": reads records (uint32 now_s, TW_N_CHANNELS float32) and runs the device loop: tw_respond_push,
 *   then tw_respond with the completed window or NULL; prints "w <row> <score>" per window.
 * Both print "e <record> <time> <tier> <action_tier> <action> <kind> <reason>" per event and one final
 * state line "s <field...>" in tinywarden.respond.machine.MachineState's field order.
 * Mode "r": reads records (a packed tw_response_t, field by field in declaration order, then int32 kind,
 *   uint32 now_s, int32 score), sets the state to it and makes that one call; prints "r <record> <rc>" and, when
 *   the call was accepted, its events and the state after it. A refused call must leave the state untouched.
 * Mode "n" prints the generated name tables; mode "c" checks the argument contract.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tinywarden_model.h"

static int fail(const char *what)
{
    fprintf(stderr, "contract broken: %s\n", what);
    return 3;
}

static void print_events(long rec, const tw_action_event_t *ev, int n)
{
    int i;
    for (i = 0; i < n; i++) {
        printf("e %ld %lld %d %d %d %d %d\n", rec, (long long)ev[i].time_s, (int)ev[i].tier, (int)ev[i].action_tier,
               (int)ev[i].action, (int)ev[i].kind, (int)ev[i].reason);
    }
}

static void print_state(const tw_response_t *r)
{
    int t;
    printf("s %d %d %lld %lld %lld %lld %lld %lld", (int)r->started, (int)r->tier, (long long)r->entered_at,
           (long long)r->last_time, (long long)r->skew, (long long)r->last_input, (long long)r->last_feed,
           (long long)r->last_anomalous);
    for (t = 0; t <= TW_N_TIERS; t++) {
        printf(" %lu", (unsigned long)r->history[t]);
    }
    for (t = 0; t <= TW_N_TIERS; t++) {
        printf(" %lld", (long long)r->deadline[t]);
    }
    printf(" %d %lu %d\n", (int)r->fault, (unsigned long)r->fault_streak, (int)r->pinned);
}

/* One call of mode "i"/"r": scores, faults and ticks through tw_respond, the other kinds through tw_respond_input. */
static int feed(tw_response_t *r, int32_t kind, uint32_t now, int32_t score, tw_action_event_t *ev)
{
    tw_result_t w;
    w.score = kind == TW_INPUT_FAULT ? TW_SCORE_FAULT : score;
    w.flag = w.anomaly = 0u;
    w.confidence = 0u;
    if (kind == TW_INPUT_SCORE || kind == TW_INPUT_FAULT) {
        return tw_respond(r, now, &w, ev, TW_RESPOND_MAX_EVENTS);
    }
    if (kind == TW_INPUT_TICK) {
        return tw_respond(r, now, NULL, ev, TW_RESPOND_MAX_EVENTS);
    }
    return tw_respond_input(r, now, kind, score, ev, TW_RESPOND_MAX_EVENTS);
}

#define READ(field) (fread(&(field), sizeof(field), 1, fh) == 1)

/* Mode "r": arbitrary states, one call each. */
static int random_states(FILE *fh)
{
    static tw_response_t r, copy;
    tw_action_event_t ev[TW_RESPOND_MAX_EVENTS];
    long rec;
    for (rec = 0;; rec++) {
        int32_t kind, score;
        uint32_t now;
        int n;
        memset(&r, 0xA5, sizeof(r)); /* padding too: a refused call must leave every byte as it was */
        if (!(READ(r.entered_at) && READ(r.last_time) && READ(r.skew) && READ(r.last_input) && READ(r.last_feed) &&
              READ(r.last_anomalous) && READ(r.deadline) && READ(r.history) && READ(r.fault_streak) &&
              READ(r.clean_samples) && READ(r.started) && READ(r.tier) && READ(r.fault) && READ(r.pinned) &&
              READ(kind) && READ(now) && READ(score))) {
            return 0;
        }
        memcpy(&copy, &r, sizeof(r));
        n = feed(&r, kind, now, score, ev);
        printf("r %ld %d\n", rec, n);
        if (n < 0) {
            if (n != TW_EINVAL || memcmp(&r, &copy, sizeof(r)) != 0) {
                return fail("a refused state is left untouched");
            }
            continue;
        }
        if (n > TW_RESPOND_MAX_EVENTS) {
            return fail("event count within 0..TW_RESPOND_MAX_EVENTS");
        }
        print_events(rec, ev, n);
        print_state(&r);
    }
}

static int check_contract(void)
{
    static tw_state_t st;
    static tw_response_t r, copy;
    tw_action_event_t ev[TW_RESPOND_MAX_EVENTS];
    tw_result_t res;
    float x[TW_N_CHANNELS];
    int c;
    for (c = 0; c < TW_N_CHANNELS; c++) {
        x[c] = 0.0f;
    }
    tw_init(&st);
    tw_respond_init(&r);
    if (tw_respond_input(&r, 5u, TW_INPUT_SCORE, TW_THRESHOLD, ev, TW_RESPOND_MAX_EVENTS) != 0) {
        return fail("a first normal score gives no event");
    }
    copy = r;
    if (tw_respond(NULL, 1u, NULL, ev, TW_RESPOND_MAX_EVENTS) != TW_EINVAL ||
        tw_respond(&r, 1u, NULL, NULL, TW_RESPOND_MAX_EVENTS) != TW_EINVAL ||
        tw_respond(&r, 1u, NULL, ev, TW_RESPOND_MAX_EVENTS - 1) != TW_EINVAL ||
        tw_respond_input(&r, 1u, TW_N_INPUTS, 0, ev, TW_RESPOND_MAX_EVENTS) != TW_EINVAL ||
        tw_respond_input(&r, 1u, -1, 0, ev, TW_RESPOND_MAX_EVENTS) != TW_EINVAL) {
        return fail("bad arguments return TW_EINVAL");
    }
    if (memcmp(&r, &copy, sizeof(r)) != 0) {
        return fail("a refused call changes nothing");
    }
    r.tier = TW_N_TIERS + 1;
    if (tw_respond(&r, 1u, NULL, ev, TW_RESPOND_MAX_EVENTS) != TW_EINVAL) {
        return fail("a corrupt state is refused");
    }
    r = copy;
    if (tw_respond_push(NULL, &st, x, &res) != TW_EINVAL || tw_respond_push(&r, NULL, x, &res) != TW_EINVAL ||
        tw_respond_push(&r, &st, NULL, &res) != TW_EINVAL || tw_respond_push(&r, &st, x, NULL) != TW_EINVAL ||
        st.filled != 0 || r.clean_samples != 0) {
        return fail("tw_respond_push NULL arguments");
    }
    r.clean_samples = (uint16_t)(TW_WINDOW + 1);
    if (tw_respond_push(&r, &st, x, &res) != TW_EINVAL || st.filled != 0 ||
        tw_respond(&r, 1u, NULL, ev, TW_RESPOND_MAX_EVENTS) != TW_EINVAL) {
        return fail("clean_samples > TW_WINDOW is a corrupt state");
    }
    r = copy;
    tw_respond_init(NULL);
    printf("ok %lu\n", (unsigned long)TW_RESPONSE_BYTES);
    return 0;
}

int main(int argc, char **argv)
{
    static tw_state_t st;
    static tw_response_t resp;
    tw_action_event_t ev[TW_RESPOND_MAX_EVENTS];
    FILE *fh;
    long rec = 0;
    int i;

    if (argc == 2 && strcmp(argv[1], "c") == 0) {
        return check_contract();
    }
    if (argc == 2 && strcmp(argv[1], "n") == 0) {
        for (i = 0; i < TW_N_ACTIONS; i++) {
            printf("action %s\n", tw_action_names[i]);
        }
        for (i = 0; i < TW_N_REASONS; i++) {
            printf("reason %s\n", tw_reason_names[i]);
        }
        for (i = 0; i <= TW_N_TIERS; i++) {
            printf("tier %s\n", tw_tier_names[i]);
        }
        return 0;
    }
    if (argc == 3 && strcmp(argv[2], "r") == 0) {
        fh = fopen(argv[1], "rb");
        if (fh == NULL) {
            perror(argv[1]);
            return 2;
        }
        i = random_states(fh);
        fclose(fh);
        return i;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: %s FILE i|s|r  or  %s c|n\n", argv[0], argv[0]);
        return 2;
    }
    fh = fopen(argv[1], "rb");
    if (fh == NULL) {
        perror(argv[1]);
        return 2;
    }
    tw_init(&st);
    tw_respond_init(&resp);
    for (;; rec++) {
        int n;
        if (strcmp(argv[2], "i") == 0) {
            int32_t in[3];
            if (fread(in, sizeof(int32_t), 3, fh) != 3) {
                break;
            }
            n = feed(&resp, in[0], (uint32_t)in[1], in[2], ev);
        } else {
            uint32_t now;
            float x[TW_N_CHANNELS];
            tw_result_t w;
            int got;
            if (fread(&now, sizeof(now), 1, fh) != 1 || fread(x, sizeof(float), TW_N_CHANNELS, fh) != TW_N_CHANNELS) {
                break;
            }
            got = tw_respond_push(&resp, &st, x, &w);
            if (got == 1) {
                printf("w %ld %ld\n", rec, (long)w.score);
            }
            n = tw_respond(&resp, now, got == 1 ? &w : NULL, ev, TW_RESPOND_MAX_EVENTS);
        }
        if (n < 0 || n > TW_RESPOND_MAX_EVENTS) {
            fclose(fh);
            return fail("event count within 0..TW_RESPOND_MAX_EVENTS");
        }
        print_events(rec, ev, n);
    }
    fclose(fh);
    print_state(&resp);
    return 0;
}
