/* Inference-only harness for peer models (e.g. emlearn): runs tw_infer() on every compiled-in input
 * vector (tw_inputs.h) and prints each output vector as the bit patterns of its floats:
 *
 *     y <index> <bits of out[0]> <bits of out[1]> ...
 *     end <number of inputs>
 *
 * The adapter source supplies TW_INFER_IN, TW_INFER_OUT (in tw_infer.h) and tw_infer(). As in
 * harness.c, tw_mark_begin()/tw_mark_end() bracket each call for instruction counting, and the host
 * build (-DTW_HOST) takes a repeat count and prints host_ns_per_window (here: per inference). */
#include <stdint.h>
#include <string.h>

#include "tw_infer.h"
#include "tw_inputs.h"

#if TW_INPUTS_WIDTH != TW_INFER_IN
#error "tw_inputs.h holds vectors of a different length than the model's TW_INFER_IN"
#endif

#include "harness_io.h"

static float tw_result[TW_INFER_OUT];

static void tw_run_inputs(int print)
{
    char num[12];
    for (int32_t i = 0; i < TW_INPUTS_LEN; i++) {
        tw_mark_begin();
        tw_infer(tw_inputs[i], tw_result);
        tw_mark_end();
        if (print) {
            tw_out("y ");
            tw_out(tw_itoa(i, num));
            for (int j = 0; j < TW_INFER_OUT; j++) {
                int32_t bits;
                memcpy(&bits, &tw_result[j], sizeof bits);
                tw_out(" ");
                tw_out(tw_itoa(bits, num));
            }
            tw_out("\n");
        }
    }
}

static void tw_run_and_report(void)
{
    char num[12];
    tw_run_inputs(1);
    tw_out("end ");
    tw_out(tw_itoa(TW_INPUTS_LEN, num));
    tw_out("\n");
}

#ifdef TW_HOST
int main(int argc, char **argv)
{
    tw_run_and_report();
    long repeats = argc > 1 ? strtol(argv[1], NULL, 10) : 0;
    if (repeats > 0) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (long r = 0; r < repeats; r++) {
            tw_run_inputs(0);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
        printf("host_ns_per_window %.1f\n", ns / ((double)repeats * (double)TW_INPUTS_LEN));
    }
    return 0;
}
#else
int main(void)
{
    tw_run_and_report();
    return 0;
}
#endif
