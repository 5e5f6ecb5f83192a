/* Feeds the compiled-in sample stream (tw_stream.h) through tw_push and prints one line per window:
 *
 *     w <index of the sample that closed the window> <score> <anomaly> [<Q15 confidence>]
 *     end <number of windows>
 *
 * (the confidence where the generated header has tw_result_t.confidence: TW_HAS_LIKELIHOOD defined).
 *
 * The same file builds for the emulated Cortex-M4 (output through semihosting) and, with -DTW_HOST, for
 * the build machine (stdout), so both runs of one stream can be compared line by line.
 *
 * tw_mark_begin()/tw_mark_end() bracket every tw_push call. They do nothing, but they are real calls
 * with symbol names, so an instruction trace (QEMU -d exec) can attribute each executed instruction to
 * the push it belongs to. On the host build, `harness <repeats>` also times the pushes and prints
 *     host_ns_per_window <nanoseconds>
 */
#include <stdint.h>

#include "tinywarden_model.h"
#include "tw_stream.h"

#if TW_STREAM_CHANNELS != TW_N_CHANNELS
#error "tw_stream.h holds a different number of channels than the model's TW_N_CHANNELS"
#endif

#include "harness_io.h"

/* Static, not on the stack: the state may be larger than a small target's default stack. */
static tw_state_t tw_harness_state;

static void tw_line(const char *tag, const int32_t *fields, int n_fields)
{
    char num[12];
    tw_out(tag);
    for (int i = 0; i < n_fields; i++) {
        tw_out(" ");
        tw_out(tw_itoa(fields[i], num));
    }
    tw_out("\n");
}

/* One pass over the stream; prints the decisions when `print` is set. Returns the window count. */
static int32_t tw_run_stream(int print)
{
    tw_result_t res;
    int32_t windows = 0;
    tw_init(&tw_harness_state);
    for (int32_t i = 0; i < TW_STREAM_LEN; i++) {
        tw_mark_begin();
        int ready = tw_push(&tw_harness_state, tw_stream[i], &res);
        tw_mark_end();
        if (ready) {
            windows++;
            if (print) {
#if defined(TW_HAS_LIKELIHOOD)
                int32_t fields[4] = {i, res.score, (int32_t)res.anomaly, (int32_t)res.confidence};
                tw_line("w", fields, 4);
#else /* a module without tw_result_t.confidence */
                int32_t fields[3] = {i, res.score, (int32_t)res.anomaly};
                tw_line("w", fields, 3);
#endif
            }
        }
    }
    return windows;
}

#ifdef TW_HOST
int main(int argc, char **argv)
{
    int32_t windows = tw_run_stream(1);
    tw_line("end", &windows, 1);
    long repeats = argc > 1 ? strtol(argv[1], NULL, 10) : 0;
    if (repeats > 0 && windows > 0) {
        struct timespec t0, t1;
        volatile int32_t sink = 0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (long r = 0; r < repeats; r++) {
            sink += tw_run_stream(0);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
        printf("host_ns_per_window %.1f\n", ns / ((double)repeats * (double)windows));
    }
    return 0;
}
#else
int main(void)
{
    int32_t windows = tw_run_stream(1);
    tw_line("end", &windows, 1);
    return 0;
}
#endif
