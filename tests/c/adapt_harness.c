/*
 * Test harness for a generated module that adapts its baseline: streams float32 rows from a file through
 * tw_push and prints one line per completed window: "<row> <score> <anomaly> <Q15 confidence> <flagged>
 * <drift Q12> <adapted windows> <flags> <settling> <elevated>" (the last two 0 without the settling rule). With a
 * third argument R, calls tw_rebaseline before row R.
 */
#include <stdio.h>
#include <stdlib.h>

#include "tinywarden_model.h"

int main(int argc, char **argv)
{
    static tw_state_t st;
    tw_result_t r;
    FILE *fh;
    long row = 0;
    long rebase = -1;
    float xf[TW_N_CHANNELS];

    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s FILE [REBASELINE_ROW]\n", argv[0]);
        return 2;
    }
    if (argc == 3) {
        rebase = strtol(argv[2], NULL, 10);
    }
    fh = fopen(argv[1], "rb");
    if (fh == NULL) {
        perror(argv[1]);
        return 2;
    }
    tw_init(&st);
    if (tw_baseline_flagged(NULL) != 0u || tw_baseline_drift(NULL) != 0 || tw_baseline_adapted(&st) != 0u ||
        tw_baseline_flags(NULL) != 0u) {
        fprintf(stderr, "NULL-argument contract broken\n");
        return 3;
    }
    tw_rebaseline(NULL);
    while (fread(xf, sizeof(float), TW_N_CHANNELS, fh) == TW_N_CHANNELS) {
        if (row == rebase) {
            tw_rebaseline(&st);
        }
        if (tw_push(&st, xf, &r) == 1) {
            unsigned settling = 0u;
            unsigned elevated = 0u;
#if defined(TW_HAS_SETTLING)
            settling = st.ad.settling;
            elevated = st.ad.elevated;
#endif
            printf("%ld %ld %d %u %u %ld %lu %lu %u %u\n", row, (long)r.score, (int)r.anomaly, (unsigned)r.confidence,
                   (unsigned)tw_baseline_flagged(&st), (long)tw_baseline_drift(&st),
                   (unsigned long)tw_baseline_adapted(&st), (unsigned long)tw_baseline_flags(&st), settling, elevated);
        }
        row++;
    }
    fclose(fh);
    return 0;
}
