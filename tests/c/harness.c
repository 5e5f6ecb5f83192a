/*
 * Test harness for a generated tinywarden C module: streams samples from a binary file through
 * tw_push (float32 rows, mode "f") or tw_push_q (int16 rows, mode "q") and prints one line per
 * completed window: "<row index> <score> <flag> <anomaly> <Q15 confidence>". Also prints "q <row> <int16...>" for
 * every row with mode "Q" (float rows, only tw_quantize_sample) or "I<frac bits>" (int32 rows, only
 * tw_quantize_fixed), streams int32 rows through tw_push_fixed with mode "i<frac bits>", and checks the
 * NULL-argument and frac_bits contracts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tinywarden_model.h"

int main(int argc, char **argv)
{
    static tw_state_t st;
    tw_result_t r;
    FILE *fh;
    long row = 0;
    const char *mode;
    float xf[TW_N_CHANNELS];
    int16_t xq[TW_N_CHANNELS];
    int32_t xi[TW_N_CHANNELS];
    int32_t frac = 0;
    int c;

    if (argc != 3) {
        fprintf(stderr, "usage: %s FILE f|q|Q\n", argv[0]);
        return 2;
    }
    mode = argv[2];
    if (mode[0] == 'i' || mode[0] == 'I') {
        frac = (int32_t)strtol(mode + 1, NULL, 10);
    }
    fh = fopen(argv[1], "rb");
    if (fh == NULL) {
        perror(argv[1]);
        return 2;
    }
    tw_init(&st);
    if (tw_push(NULL, xf, &r) != TW_EINVAL || tw_push(&st, NULL, &r) != TW_EINVAL ||
        tw_push_q(&st, xq, NULL) != TW_EINVAL || tw_push_fixed(&st, NULL, 0, &r) != TW_EINVAL ||
        tw_quantize_fixed(xi, -1, xq) != TW_EINVAL || tw_quantize_fixed(xi, TW_MAX_FRAC_BITS + 1, xq) != TW_EINVAL ||
        st.filled != 0 || tw_confidence(NULL) != 0u || tw_confidence(&st) != 0u) {
        fprintf(stderr, "NULL-argument contract broken\n");
        return 3;
    }
    for (;;) {
        int got;
        if (strcmp(mode, "q") == 0) {
            if (fread(xq, sizeof(int16_t), TW_N_CHANNELS, fh) != TW_N_CHANNELS) {
                break;
            }
            got = tw_push_q(&st, xq, &r);
        } else if (mode[0] == 'i' || mode[0] == 'I') {
            if (fread(xi, sizeof(int32_t), TW_N_CHANNELS, fh) != TW_N_CHANNELS) {
                break;
            }
            if (mode[0] == 'I') {
                if (tw_quantize_fixed(xi, frac, xq) != 0) {
                    return 4;
                }
                printf("q %ld", row);
                for (c = 0; c < TW_N_CHANNELS; c++) {
                    printf(" %d", (int)xq[c]);
                }
                printf("\n");
                got = 0;
            } else {
                got = tw_push_fixed(&st, xi, frac, &r);
            }
        } else {
            if (fread(xf, sizeof(float), TW_N_CHANNELS, fh) != TW_N_CHANNELS) {
                break;
            }
            if (strcmp(mode, "Q") == 0) {
                tw_quantize_sample(xf, xq);
                printf("q %ld", row);
                for (c = 0; c < TW_N_CHANNELS; c++) {
                    printf(" %d", (int)xq[c]);
                }
                printf("\n");
                got = 0;
            } else {
                got = tw_push(&st, xf, &r);
            }
        }
        if (got == 1) {
            printf("%ld %ld %d %d %u\n", row, (long)r.score, (int)r.flag, (int)r.anomaly,
                   (unsigned)tw_confidence(&st));
        }
        row++;
    }
    fclose(fh);
    fprintf(stderr, "state %lu bytes, const %lu bytes\n", (unsigned long)TW_STATE_BYTES,
            (unsigned long)TW_CONST_BYTES);
    return 0;
}
